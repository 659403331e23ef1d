"""``hub analyze neurons``: the command (science: :mod:`analyses.neurons`).

Languages are named the way every multilingual command takes them: positional files and/or
FLORES codes (``--flores-dir`` / ``$HUB_FLORES_DIR``); ``--langs a,b`` is the old spelling.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from analyses.neurons import ANALYSIS, DEFAULT_LANGS, NeuronOptions, Neurons, lape_corpus_lines, run_models, split_langs, summarize
from hubclient.errors import HubError
from hubclient.cli import options as opt
from hubclient.inputs.parallel import read_languages
from hubclient.runner import RunConfig, run_analysis

__all__ = ["ANALYSIS", "command"]

PANEL = "Neurons"


@opt.analysis_command(multi_model=True)
def command(
    inputs: Annotated[Optional[list[str]], typer.Argument(help=opt.LANGUAGES_HELP + " Default: the paper's ten, " + ",".join(DEFAULT_LANGS) + ".", show_default=False)] = None,
    flores_dir: opt.FloresDir = None,
    langs: Annotated[Optional[list[str]], typer.Option("--langs", help="Languages as an option (comma-separated or repeated): the same as the arguments.", rich_help_panel="Input", show_default=False)] = None,
    n: Annotated[int, typer.Option("--n", help="Use the first N sentences of every language.", rich_help_panel="Input")] = 100,
    skip_empty: Annotated[bool, typer.Option("--skip-empty", help="Drop a line index that is empty in any language from all languages instead of failing.", rich_help_panel="Input")] = False,
    z_threshold: Annotated[float, typer.Option(help="Key linguistic neuron when its co-activation z-score across languages exceeds this (Zeng et al.: 2; with K languages no z exceeds sqrt(K-1), so 2 needs 6+ languages).", rich_help_panel=PANEL)] = 2.0,
    lape_top: Annotated[float, typer.Option(help="LAPE: share of all neurons (all layers) with the lowest entropy to select (Tang et al.: 0.01).", rich_help_panel=PANEL)] = 0.01,
    lape_quantile: Annotated[float, typer.Option(help="LAPE: minimum activation probability, as this quantile of all probabilities (Tang et al.: 0.95).", rich_help_panel=PANEL)] = 0.95,
    sads: Annotated[str, typer.Option(help="Which SADS the tables and plots call SADS: intended (translations vs different-language different-sentence pairs; same-language pairs in neither term), hub (translations vs all different-sentence pairs) or released (the released code's stride-(S+1) blocks, which do not hold translations). All three are written.", rich_help_panel=PANEL)] = "intended",
    key_norm: Annotated[str, typer.Option(help="Key neurons: divide each sentence by the L2 norm of its all-layer vector (all, as released) or of the layer's vector (layer); 1e-5 is added after the division either way.", rich_help_panel=PANEL)] = "all",
    permutations: Annotated[int, typer.Option(min=0, help="Label permutations for the key-neuron null (languages shuffled across sentences): expected count and FDR per layer. 0: none.", rich_help_panel=PANEL)] = 20,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples of sentences for the LRDS/SADS confidence intervals. 0: none.", rich_help_panel=PANEL)] = 1000,
    confidence: Annotated[float, typer.Option(help="Level of the bootstrap intervals.", rich_help_panel=PANEL)] = 0.95,
    seed: Annotated[int, typer.Option(help="Seed of the permutations and the bootstrap.", rich_help_panel=PANEL)] = 0,
    lape_corpus: Annotated[str, typer.Option(help="LAPE counts activations over: all (every line of each language's file, plus its FLORES .dev file when present: dev+devtest; lines beyond the parallel set run as LAPE-only prompts) or parallel (the parallel sentences only).", rich_help_panel=PANEL)] = "all",
    float16: Annotated[bool, typer.Option("--float16/--float32", help="Store activations.parquet as float16 (half the size; statistics use float64 either way).", rich_help_panel="Output")] = False,
    *,
    config: RunConfig,
    models: list[str],
    revisions: list[str],
) -> None:
    """Language-specific MLP neurons and the lingua franca (Zeng et al. 2025; LAPE, Tang et al. 2024).

    Reads the MLP activation of every block for parallel sentences (mean over tokens), and
    computes per layer LRDS (same-language vs cross-language similarity) and SADS (same meaning
    vs different meaning), key linguistic neurons per language (z-score > threshold) and the
    LAPE selection. Writes activations.parquet, lrds_sads.parquet, key_neurons.parquet,
    lape_neurons.parquet, counts.parquet, neuron_stats.parquet, a manifest and plots. Repeat
    --model to compare models on one chart.
    """
    corpus = read_languages(split_langs([*(inputs or []), *(langs or [])]), flores_dir, n=n, skip_empty=skip_empty)
    options = NeuronOptions(
        languages=corpus.languages, sources=[str(p) for p in corpus.sources], n=n, skip_empty=skip_empty, float16=float16,
        z_threshold=z_threshold, lape_top=lape_top, lape_quantile=lape_quantile, sads=sads, key_norm=key_norm,
        permutations=permutations, bootstrap=bootstrap, confidence=confidence, seed=seed, lape_corpus=lape_corpus,
    )
    texts, languages, sentences = corpus.flat()
    if lape_corpus not in ("all", "parallel"):
        raise HubError(f"unknown --lape-corpus {lape_corpus!r}; choose all or parallel")
    if lape_corpus == "all":
        extra = 0
        for language, lines in zip(corpus.languages, lape_corpus_lines(options.sources, n)):
            for line in lines:
                extra += 1
                texts.append(line)
                languages.append(language)
                sentences.append(-extra)  # LAPE-only: counted, not stored as activations
    if len(models) > 1 or revisions:
        run = run_models(options, texts, languages, sentences, config, models, revisions=revisions or None)
    else:
        analysis = Neurons(options, languages, sentences)
        run = run_analysis(analysis, texts, config, prompt_columns={"language": languages, "sentence": sentences})
    opt.report(run, summarize)
