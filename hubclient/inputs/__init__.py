"""Inputs: prompts, parallel corpora (FLORES-200), media pairs, task data, dictionaries and
sentiment data, read and validated with clear errors. No model, no torch.

* :mod:`hubclient.inputs.prompts`: prompt files and ``--positions``;
* :mod:`hubclient.inputs.parallel`: parallel files and FLORES-200 codes;
* :mod:`hubclient.inputs.media`: (image/audio, caption) pairs;
* :mod:`hubclient.inputs.tasks`: arithmetic, COGS and MBPP;
* :mod:`hubclient.inputs.dictionary`: CC-CEDICT; :mod:`hubclient.inputs.sentiment`: sentiment data.
"""

from hubclient.inputs.prompts import TABLE_SUFFIXES, Positions, iter_jsonl, read_lines, read_prompts, split_lines, take_first

__all__ = ["TABLE_SUFFIXES", "Positions", "iter_jsonl", "read_lines", "read_prompts", "split_lines", "take_first"]
