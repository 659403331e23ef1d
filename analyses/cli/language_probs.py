"""``hub analyze language-probs``: the command (science: :mod:`analyses.language_probs`).

Input languages are named the one way every multilingual command takes them: positional
files and/or FLORES codes (``--flores-dir`` / ``$HUB_FLORES_DIR``), plus the old spellings
``--flores CODE`` and ``--lang LANG=FILE``. The languages need not be parallel here.
``--protocol wu2024`` is the semantic hub paper's Fig. 4 as its code computes it (A3 of
paper-protocols.md); ``--matrix`` chooses the token-to-language matrix; ``--lens
logit|tuned|patchscope`` the decoder of the layers (docs/lenses.md; with the tuned lens or the
patchscope the final norm is on at every layer, whatever the protocol).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from analyses.cli import lens_options as lo
from analyses.language_probs import ANALYSIS, MATRIX_SOURCES, PAPER_DOCS, LanguageProbs, LanguageProbsOptions, parse_lang_file, take
from hubclient.cli import options as opt
from hubclient.errors import HubError
from hubclient.inputs.parallel import flores_codes, flores_folder, language_sources
from hubclient.inputs.prompts import read_prompts
from hubclient.runner import RunConfig, run_analysis
from hubclient.science.lens import check_lens_choice

__all__ = ["ANALYSIS", "command", "collect_inputs"]

#: ``--final-norm`` without a default, so that ``--protocol`` can choose it.
FinalNormOrProtocol = Annotated[
    Optional[str],
    typer.Option(
        "--final-norm",
        help="Final norm in the lens: on, off, or last (only layer L: the semantic hub paper's code) [default: last with --protocol wu2024, else on].",
        rich_help_panel="Lens",
        show_default=False,
    ),
]


@opt.analysis_command
def command(
    inputs: Annotated[Optional[list[str]], typer.Argument(help=opt.LANGUAGES_HELP + " Texts of each language need not be parallel; files may be .jsonl/.csv/.parquet with --column.", show_default=False)] = None,
    flores: Annotated[Optional[list[str]], typer.Option("--flores", help="FLORES-200 code of an input language, e.g. eng_Latn (repeatable; the same as giving it as an argument).", rich_help_panel="Input")] = None,
    flores_dir: opt.FloresDir = None,
    lang: Annotated[Optional[list[str]], typer.Option("--lang", help="LANG=FILE: a prompt file (one text a line, or .jsonl/.csv/.parquet with --column) in language LANG (repeatable).", rich_help_panel="Input")] = None,
    column: opt.Column = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Use the first N texts of each input language (error when a language has fewer).", rich_help_panel="Input")] = None,
    protocol: Annotated[str, typer.Option(help="wu2024: the semantic hub paper's code (every position incl. BOS, lens truncated to tokenizer.vocab_size and renormalised, final norm only at layer L, pooled mean over positions); hub: BOS left out, mean over texts.", rich_help_panel="Languages")] = "hub",
    matrix: Annotated[str, typer.Option(help="Token-to-language matrix: flores (token counts of every FLORES-200 language in the FLORES folder; dev split if present, else devtest), folder:PATH (a folder of per-language text files), hf:NAME (a Hugging Face dataset, one config per --matrix-languages), or wordfreq (word-frequency lists, hub's older matrix).", rich_help_panel="Languages")] = "flores",
    matrix_languages: Annotated[Optional[str], typer.Option(help="hf:NAME only: comma-separated dataset configs, one per language (e.g. en,zh,fr for mC4).", rich_help_panel="Languages")] = None,
    matrix_docs: Annotated[int, typer.Option(help="hf:NAME only: documents per language (the paper: 100000).", rich_help_panel="Languages")] = PAPER_DOCS,
    matrix_column: Annotated[str, typer.Option(help="hf:NAME only: the text column.", rich_help_panel="Languages")] = "text",
    languages: Annotated[Optional[str], typer.Option(help="--matrix wordfreq only: comma-separated wordfreq codes of the languages to measure (default: English plus the input languages).", rich_help_panel="Languages")] = None,
    final_norm_value: FinalNormOrProtocol = None,
    no_final_norm: opt.NoFinalNorm = False,
    positions: Annotated[str, typer.Option(help="Positions averaged over: all (the paper), last (fast: one per text), or a list such as 1,-1; special tokens are left out under --protocol hub.", rich_help_panel="Lens")] = "all",
    lens: lo.Lens = "logit",
    tuned_lens: lo.TunedLens = None,
    patch_prompt: lo.PatchPrompt = lo.DEFAULT_PROMPT,
    patch_placeholder: lo.PatchPlaceholder = lo.DEFAULT_PLACEHOLDER,
    *,
    config: RunConfig,
) -> None:
    """Language probabilities per layer: the logit-lens distribution times a token-to-language matrix.

    M [vocab, languages] comes from token counts of FLORES-200 text by default (cached per
    tokenizer). Writes language_probs.parquet (per text, layer, language),
    language_probs_summary.parquet (mean and 95% CI per input language, layer, language) and
    the plot (Wu et al. 2024, Fig. 4). --lens tuned|patchscope replaces the logit lens'
    distribution by the tuned lens' or the patchscope's.
    """
    if protocol not in ("hub", "wu2024"):
        raise HubError(f"unknown --protocol {protocol!r}; use wu2024 (the paper's code) or hub")
    # --no-final-norm alone means off; the tuned lens and the patchscope decode through the norm
    default_norm = "on" if no_final_norm or protocol != "wu2024" or lens != "logit" else "last"
    final_norm = opt.final_norm_option(final_norm_value or default_norm, no_final_norm)
    check_lens_choice(lens, tuned_lens, final_norm, patch_prompt, patch_placeholder)
    if matrix not in MATRIX_SOURCES and not matrix.startswith(("folder:", "hf:")):
        raise HubError(f"unknown --matrix {matrix!r}; use flores, folder:PATH, hf:NAME or wordfreq")
    opt.reject(f"language-probs --matrix {matrix} (--languages chooses wordfreq lists)", {"--languages": matrix != "wordfreq" and bool(languages)})
    opt.reject(f"language-probs --matrix {matrix} (the --matrix-* options are for hf:NAME)", {"--matrix-languages": not matrix.startswith("hf:") and bool(matrix_languages)})
    from hubclient.science.token_languages import resolve_language

    texts, labels = collect_inputs([*(flores or []), *(inputs or [])], flores_dir, lang, column, n)
    measured: list[str] = []
    if matrix == "wordfreq":
        if languages:
            for code in languages.split(","):
                if code.strip():
                    measured.append(resolve_language(code.strip()))
        else:
            measured = ["en"]
            for label in dict.fromkeys(labels):
                code = resolve_language(label)
                if code not in measured:
                    measured.append(code)
    elif matrix == "flores":
        from analyses.language_probs import flores_matrix_folder

        flores_matrix_folder(flores_dir)  # fail before the model loads
    hf_languages = [c.strip() for c in (matrix_languages or "").split(",") if c.strip()]
    if matrix.startswith("hf:") and not hf_languages:
        raise HubError("--matrix hf:NAME needs --matrix-languages (the dataset configs, one per language)")
    analysis = LanguageProbs(LanguageProbsOptions(
        languages=measured, input_languages=labels, final_norm=final_norm, positions=positions, protocol=protocol,
        matrix=matrix, flores_dir=str(flores_dir) if flores_dir is not None else None,
        matrix_languages=hf_languages, matrix_docs=matrix_docs, matrix_column=matrix_column,
        lens=lens, tuned_lens=str(tuned_lens) if tuned_lens else None, patch_prompt=patch_prompt, patch_placeholder=patch_placeholder,
    ))
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
