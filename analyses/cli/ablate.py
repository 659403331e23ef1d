"""``hub intervene ablate``: the command (science: :mod:`analyses.ablate`).

Evaluated languages are named the way every multilingual command takes them: positional
files and/or FLORES codes (``--langs a,b`` is the old spelling). A file is read for its
language's held-out lines (its stem must be a language of the neurons run); a code is read
from ``--flores-dir`` / ``$HUB_FLORES_DIR`` when set, else from the neurons run's own file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from analyses.ablate import (
    ANALYSIS, MODES, PERPLEXITY, SELECTORS, Ablate, AblateOptions, _split, build_conditions, held_out, join_by_language, mc_texts,
    mean_activations, open_neurons_run,
)
from hubclient.cli import options as opt
from hubclient.errors import HubError
from hubclient.runner import RunConfig, run_analysis

__all__ = ["ANALYSIS", "command"]

PANEL = "Ablation"


@opt.analysis_command
def command(
    source: Annotated[Path, typer.Option("--from", help="A `hub analyze neurons` run folder (one model): its neuron lists, languages and sentence files.", rich_help_panel="Input", show_default=False)],
    inputs: Annotated[Optional[list[str]], typer.Argument(help=opt.LANGUAGES_HELP + " Languages of the neurons run to evaluate [default: all of them]; a file gives its language's held-out lines.", show_default=False)] = None,
    langs: Annotated[Optional[list[str]], typer.Option("--langs", help="Languages to evaluate as an option (comma-separated or repeated): the same as the arguments.", rich_help_panel="Input", show_default=False)] = None,
    ablate: Annotated[Optional[list[str]], typer.Option("--ablate", help="Languages whose neurons are ablated, one condition each [default: all of the neurons run].", rich_help_panel=PANEL, show_default=False)] = None,
    n: Annotated[Optional[int], typer.Option("--n", min=1, help="Held-out lines per evaluated language [default: windows: every line after --offset; sentences: 20].", rich_help_panel="Input", show_default=False)] = None,
    offset: Annotated[Optional[int], typer.Option("--offset", min=0, help="First held-out line (0-based) [default: the neurons run's --n, i.e. the lines right after those used to select neurons].", rich_help_panel="Input", show_default=False)] = None,
    flores_dir: opt.FloresDir = None,
    selector: Annotated[str, typer.Option(help="key: Zeng et al.'s key linguistic neurons; lape: Tang et al.'s LAPE neurons.", rich_help_panel=PANEL)] = "key",
    mode: Annotated[str, typer.Option(help="zero: set the neurons to 0; mean: to their token-mean activation in the neurons run.", rich_help_panel=PANEL)] = "zero",
    random: Annotated[bool, typer.Option("--random/--no-random", help="Also ablate as many random neurons per layer (control condition).", rich_help_panel=PANEL)] = True,
    seed: Annotated[int, typer.Option(help="Seed of the random neurons.", rich_help_panel=PANEL)] = 0,
    random_draws: Annotated[int, typer.Option("--random-draws", min=1, help="Random neuron sets per ablated language (seeds SEED..SEED+R-1), summarised with their spread in random_control.parquet.", rich_help_panel=PANEL)] = 1,
    perplexity: Annotated[str, typer.Option("--perplexity", help="windows: each language's held-out lines joined, tokenised once and cut into non-overlapping --window-token windows, the last partial one dropped (Zeng et al.'s code); sentences: every line alone.", rich_help_panel=PANEL)] = "windows",
    window: Annotated[int, typer.Option("--window", min=0, help="Window length in tokens for --perplexity windows [default: the model's context length, at most 2048 (the paper's BLOOM models); --window 4096 for Llama-2 as the released code].", rich_help_panel=PANEL, show_default=False)] = 0,
    mc: Annotated[Optional[Path], typer.Option("--mc", help="Zero-shot multiple choice (XStoryCloze-style JSON lines: language, context, endings, label), scored under every condition with its ablation applied; accuracy in multiple_choice.parquet.", rich_help_panel="Input", show_default=False)] = None,
    *,
    config: RunConfig,
) -> None:
    """Ablate language-specific neurons (from `hub analyze neurons`) and measure perplexity per language.

    Every held-out text (by default each language's held-out lines joined and cut into
    non-overlapping windows of the model's context length (at most 2048 by default), as Zeng et al.'s code; --perplexity
    sentences: each line alone) runs unablated, with each --ablate language's neurons set to zero
    (or their mean), and with as many random neurons; perplexity per language and its change
    go to perplexity.parquet, with a heatmap. The edits are nnsight edits (--remote works).
    """
    if selector not in SELECTORS:
        raise HubError(f"unknown --selector {selector!r}; choose one of {', '.join(SELECTORS)}")
    if mode not in MODES:
        raise HubError(f"unknown --mode {mode!r}; choose one of {', '.join(MODES)}")
    if perplexity not in PERPLEXITY:
        raise HubError(f"unknown --perplexity {perplexity!r}; choose one of {', '.join(PERPLEXITY)}")
    if window and perplexity != "windows":
        raise HubError("--window applies to --perplexity windows only")
    if n is None and perplexity == "sentences":
        n = 20
    names: list[str] = []
    files: dict[str, Path] = {}
    for given in inputs or []:
        path = Path(given)
        if path.is_file():
            name = path.name.split(".")[0] or path.name
            files[name] = path
            names.append(name)
        else:
            names.append(given)
    run = open_neurons_run(source)
    o = run.manifest["options"]
    available = list(o["languages"])
    eval_langs = _split([*names, *(langs or [])] or None, available, "--langs" if langs and not names else "language")
    ablate_langs = _split(ablate, available, "--ablate")
    if offset is None:
        if o.get("n") is None:
            raise HubError(f"the neurons run {source} used every line; pass --offset to choose held-out lines")
        offset = int(o["n"])
    elif o.get("n") is not None and offset < int(o["n"]):
        warnings.warn(f"--offset {offset} overlaps the {o['n']} sentences the neurons were selected on; the test is not held out")
    texts, languages, sentences, sources = held_out(run, eval_langs, n, offset, flores_dir, files)
    if n is None:
        n = languages.count(eval_langs[0])
    if perplexity == "windows":
        texts, languages = join_by_language(texts, languages)
        sentences = [-1] * len(texts)
    tasks, endings, answers = ["ppl"] * len(texts), [-1] * len(texts), {}
    if mc is not None:
        mc_t, mc_l, mc_i, mc_k, mc_e, answers = mc_texts(mc)
        texts, languages, sentences, tasks, endings = texts + mc_t, languages + mc_l, sentences + mc_i, tasks + mc_k, endings + mc_e
    options = AblateOptions(
        source=str(source), selector=selector, ablate=ablate_langs, languages=eval_langs, sources=sources, n=n, offset=offset,
        mode=mode, random=random, seed=seed, random_draws=random_draws, mc=str(mc) if mc is not None else "",
        perplexity=perplexity, window=window,
    )
    conditions = build_conditions(run, selector, ablate_langs, random, seed, random_draws)
    means = mean_activations(run) if mode == "mean" else None
    analysis = Ablate(options, conditions, languages, sentences, means=means, model_id=run.manifest["model"]["model_id"],
                      tasks=tasks, endings=endings, answers=answers)
    result = run_analysis(analysis, analysis.prompts(texts), config, prompt_columns=analysis.prompt_columns())
    opt.report(result, analysis.summary)
