"""``hub analyze language-probs``: the command (science: :mod:`analyses.language_probs`).

Input languages are named the one way every multilingual command takes them: positional
files and/or FLORES codes (``--flores-dir`` / ``$HUB_FLORES_DIR``), plus the old spellings
``--flores CODE`` and ``--lang LANG=FILE``. The languages need not be parallel here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from analyses.language_probs import ANALYSIS, LanguageProbs, LanguageProbsOptions, parse_lang_file, take
from hubclient.cli import options as opt
from hubclient.errors import HubError
from hubclient.inputs.parallel import flores_codes, flores_folder, language_sources
from hubclient.inputs.prompts import read_prompts
from hubclient.runner import RunConfig, run_analysis

__all__ = ["ANALYSIS", "command", "collect_inputs"]


@opt.analysis_command
def command(
    inputs: Annotated[Optional[list[str]], typer.Argument(help=opt.LANGUAGES_HELP + " Texts of each language need not be parallel; files may be .jsonl/.csv/.parquet with --column.", show_default=False)] = None,
    flores: Annotated[Optional[list[str]], typer.Option("--flores", help="FLORES-200 code of an input language, e.g. eng_Latn (repeatable; the same as giving it as an argument).", rich_help_panel="Input")] = None,
    flores_dir: opt.FloresDir = None,
    lang: Annotated[Optional[list[str]], typer.Option("--lang", help="LANG=FILE: a prompt file (one text a line, or .jsonl/.csv/.parquet with --column) in language LANG (repeatable).", rich_help_panel="Input")] = None,
    column: opt.Column = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Use the first N texts of each input language (error when a language has fewer).", rich_help_panel="Input")] = None,
    languages: Annotated[Optional[str], typer.Option(help="Comma-separated wordfreq codes of the languages to measure (default: English plus the input languages).", rich_help_panel="Languages")] = None,
    final_norm_value: opt.FinalNorm = "on",
    no_final_norm: opt.NoFinalNorm = False,
    positions: Annotated[str, typer.Option(help="Positions averaged over: all (the paper), last (fast: one per text), or a list such as 1,-1; special tokens are left out.", rich_help_panel="Lens")] = "all",
    *,
    config: RunConfig,
) -> None:
    """Language probabilities per layer: the logit-lens distribution times a token-to-language matrix.

    M [vocab, languages+unknown] comes from wordfreq word frequencies (cached per tokenizer).
    Writes language_probs.parquet (per text, layer, language), language_probs_summary.parquet
    (mean and 95% CI per input language, layer, language) and the plot (Wu et al. 2024, Fig. 4).
    """
    final_norm = opt.final_norm_option(final_norm_value, no_final_norm)
    from hubclient.science.token_languages import resolve_language

    texts, labels = collect_inputs([*(flores or []), *(inputs or [])], flores_dir, lang, column, n)
    if languages:
        measured = []
        for code in languages.split(","):
            if code.strip():
                measured.append(resolve_language(code.strip()))
    else:
        measured = ["en"]
        for label in dict.fromkeys(labels):
            code = resolve_language(label)
            if code not in measured:
                measured.append(code)
    analysis = LanguageProbs(LanguageProbsOptions(languages=measured, input_languages=labels, final_norm=final_norm, positions=positions))
    opt.report(run_analysis(analysis, texts, config, prompt_columns={"input_language": labels}), analysis.summary)


def collect_inputs(inputs: list[str], flores_dir: Path | None, lang: list[str] | None, column: str | None, n: int | None) -> tuple[list[str], list[str]]:
    """Texts and their input-language labels.

    Args:
        inputs: files and/or FLORES codes (:func:`hubclient.inputs.parallel.language_sources`;
            a file's language is its stem, a code's the code).
        flores_dir: ``--flores-dir`` (``None``: ``$HUB_FLORES_DIR``).
        lang: ``LANG=FILE`` values of ``--lang``.
        column: column of .jsonl/.csv/.parquet files.
        n: first ``n`` texts of each language.

    Raises:
        HubError: no input, a FLORES code without a folder, a repeated language, or the errors
            of :func:`hubclient.inputs.parallel.flores_file` and :func:`hubclient.inputs.read_prompts`.
    """
    texts: list[str] = []
    labels: list[str] = []
    if not inputs and not lang:
        folder = flores_folder(flores_dir)
        if flores_dir is not None:
            available = ", ".join(flores_codes(folder)) if folder.is_dir() else "none (not a folder)"
            raise HubError(f"--flores-dir needs at least one FLORES code (as an argument or --flores CODE); available: {available}")
        raise HubError("no input: pass languages as files or FLORES codes (eng_Latn, with --flores-dir or $HUB_FLORES_DIR), or --lang LANG=FILE")
    for given, (label, path) in zip(inputs, language_sources(inputs, flores_dir)):
        is_file = Path(given).is_file()  # a FLORES code's file is plain text: --column is for the user's files
        part = take(read_prompts(file=path, column=column if is_file else None), n, str(path))
        texts.extend(part)
        labels.extend([label] * len(part))
    for value in lang or []:
        label, file = parse_lang_file(value)
        if label in labels:
            raise HubError(f"language {label!r} is given twice")
        part = take(read_prompts(file=file, column=column), n, str(file))
        texts.extend(part)
        labels.extend([label] * len(part))
    return texts, labels
