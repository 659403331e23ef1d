"""Formal semantics: COGS sentences and their logical forms (Kim & Linzen 2020; Wu et al. 2024 §4, Fig. 7).

COGS files are TSV: ``English sentence TAB logical form TAB generalization type`` (the third
column is optional here). The similarity task compares each sentence with its own logical form
(two aligned "languages" ``sentence`` and ``logical_form``; Eq. 1 with bootstrap CI), e.g.

    ``A rose was helped by a dog .`` vs
    ``rose ( x _ 1 ) AND help . theme ( x _ 3 , x _ 1 ) AND help . agent ( x _ 3 , x _ 6 ) AND dog ( x _ 6 )``

The first ``n`` lines of the split are used, in file order (COGS splits are already shuffled).
"""

from __future__ import annotations

from pathlib import Path

from hubclient.errors import HubError
from hubclient.inputs.prompts import read_lines
from hubclient.inputs.parallel import ParallelCorpus

LANGUAGES = ["sentence", "logical_form"]


def read_cogs(folder: Path, split: str = "test", n: int | None = None) -> ParallelCorpus:
    """Read ``<folder>/<split>.tsv`` as a two-"language" parallel corpus.

    Args:
        folder: the COGS folder (``train.tsv``, ``dev.tsv``, ``test.tsv``, ``gen.tsv``…); a
            ``.tsv`` file is accepted too (then ``split`` is ignored).
        split: file stem to read.
        n: first ``n`` lines (``None``: all).

    Returns:
        ``ParallelCorpus(languages=["sentence", "logical_form"], …)``; ``sentences`` are the
        0-based line indices.

    Raises:
        HubError: a missing folder or split (listing the splits present), a non-UTF-8 file, a
            line with fewer than 2 tab-separated fields or an empty sentence / logical form
            (with its line number), ``n < 2`` or more than the lines.
    """
    folder = Path(folder)
    if folder.is_file():
        path = folder
    else:
        if not folder.is_dir():
            raise HubError(f"--cogs-dir {str(folder)!r} is not a folder; pass the COGS folder holding {split}.tsv")
        path = folder / f"{split}.tsv"
        if not path.is_file():
            available = sorted(p.stem for p in folder.glob("*.tsv"))
            raise HubError(f"no COGS split {split!r}: {path} does not exist; available: {', '.join(available) or 'none'}")
    if n is not None and n < 2:
        raise HubError(f"--n must be at least 2 (the baseline needs non-matching pairs), got {n}")
    lines = read_lines(path, "COGS file")
    sentences, forms, index = [], [], []
    for number, line in enumerate(lines, start=1):
        if n is not None and len(index) == n:
            break
        fields = line.rstrip("\r").split("\t")
        if len(fields) < 2:
            raise HubError(f"{path} line {number}: expected 'sentence TAB logical form [TAB type]', found {len(fields)} field(s): {line[:60]!r}")
        sentence, form = fields[0].strip(), fields[1].strip()
        if not sentence or not form:
            column = "sentence" if not sentence else "logical form"
            raise HubError(f"{path} line {number}: the {column} is empty")
        sentences.append(sentence)
        forms.append(form)
        index.append(number - 1)
    if n is not None and len(index) < n:
        raise HubError(f"--n {n} is more than the {len(index)} lines of {path}; use --n {len(index)} or fewer")
    if len(index) < 2:
        raise HubError(f"{path} has {len(index)} line(s); Eq. 1 needs at least 2 pairs")
    return ParallelCorpus(languages=list(LANGUAGES), texts=[sentences, forms], sentences=index, sources=[path, path])
