"""``hub analyze similarity``: the command (science: :mod:`analyses.similarity`).

Three modes, chosen once: parallel texts (positional files and/or FLORES codes), ``--task
arithmetic|cogs`` (the task's parallel forms) and ``--modality image|audio`` (media vs caption
pairs, :mod:`analyses.media_runs`); an option of another mode is an error.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from analyses.similarity import ANALYSIS, Similarity, SimilarityOptions, apply_template
from hubclient.cli import options as opt
from hubclient.errors import HubError
from hubclient.inputs import tasks
from hubclient.inputs.parallel import read_languages
from hubclient.inputs.ranges import check_layers
from hubclient.runner import RunConfig, run_analysis
from hubclient.science import stats

__all__ = ["ANALYSIS", "command"]

PANEL = "Similarity"


def heatmap_layer_value(text: str | None) -> int | str | None:
    """``--heatmap-layer`` as stored in the options: an ``int`` for a plain index ``>= 0`` (as
    before), else the text (e.g. ``-1``), resolved against the model by the analysis.

    Raises:
        HubError: not a single layer index.
    """
    if text is None:
        return None
    check_layers(text, "--heatmap-layer")
    value = text.strip()
    if not value.lstrip("-").isdigit():
        raise HubError(f"--heatmap-layer takes one layer, got {text!r}; e.g. 6 or -1 (the last)")
    return int(value) if not value.startswith("-") else value


@opt.analysis_command
def command(
    inputs: Annotated[Optional[list[str]], typer.Argument(help=opt.LANGUAGES_HELP + " Two or more (none with --task; one pairs file with --modality).", show_default=False)] = None,
    flores_dir: opt.FloresDir = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Use only the first N sentences of every language.", rich_help_panel="Input")] = None,
    skip_empty: Annotated[bool, typer.Option("--skip-empty", help="Drop a line index that is empty in any language from all languages (keeps them aligned) instead of failing.", rich_help_panel="Input")] = False,
    template: Annotated[Optional[str], typer.Option(help="Text around each input, with a {text} placeholder, e.g. '{text} In other words,' (default: the input alone).", rich_help_panel="Input")] = None,
    pool: Annotated[str, typer.Option(help="last: the last token's hidden state (the paper); mean: the mean over the input's tokens, without BOS.", rich_help_panel=PANEL)] = "last",
    center: Annotated[bool, typer.Option("--center/--no-center", help="Subtract the layer's mean hidden state (over all inputs) before the cosine; off by default, as the paper.", rich_help_panel=PANEL)] = False,
    layers: Annotated[str, typer.Option(help="Layers: all, a list such as 0,4,8, a range such as 2-10, 0:8 or 0:8:2 (inclusive), -1 = the last (0 = embeddings). The forward pass stops after the last one.", rich_help_panel=PANEL)] = "all",
    anchor: Annotated[Optional[str], typer.Option(help="Compare this language with each other one only (default: all pairs).", rich_help_panel=PANEL)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap over sentence pairs.", rich_help_panel=PANEL)] = 0,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CI.", rich_help_panel=PANEL)] = stats.N_BOOTSTRAP,
    save_vectors: Annotated[bool, typer.Option("--save-vectors/--no-save-vectors", help="Keep vectors.parquet (pooled vector per input and layer) for later statistics in polars.", rich_help_panel="Output")] = True,
    save_matrix: Annotated[bool, typer.Option("--save-matrix", help="Also write matrix.parquet: the N×N cosines per layer and pair (for heatmaps).", rich_help_panel="Output")] = False,
    heatmap_layer: Annotated[Optional[str], typer.Option(help="Layer of the cosine heatmap, one of --layers; -1 = the last (default: the model's middle layer).", rich_help_panel="Output")] = None,
    task: tasks.Task = None,
    data_seed: tasks.DataSeed = 0,
    max_operand: tasks.MaxOperand = 9,
    operators: tasks.Operators = "+-*",
    cogs_dir: tasks.CogsDir = None,
    cogs_split: tasks.CogsSplit = "train",
    cogs_baseline: tasks.CogsBaseline = None,
    modality: Annotated[str, typer.Option(help="text: INPUTS are parallel texts; image or audio: INPUTS is one pairs file (.csv/.jsonl, columns media and caption) and each medium is compared with its caption (an image/audio model, e.g. llava-hf/llava-1.5-7b-hf). docs/modalities.md.", rich_help_panel="Media")] = "text",
    media_pool: Annotated[str, typer.Option(help="With --modality image|audio: mean over the medium's token positions, or its last one (--pool applies to the caption).", rich_help_panel="Media")] = "mean",
    media_template: Annotated[str, typer.Option(help="With --modality image|audio: the text around the medium; {media} marks where it goes, e.g. 'USER: {media}\\nASSISTANT:'.", rich_help_panel="Media")] = "{media}",
    resample: Annotated[bool, typer.Option("--resample/--no-resample", help="Audio at another sampling rate than the model's: resample it (scipy) or stop with an error.", rich_help_panel="Media")] = True,
    *,
    config: RunConfig,
) -> None:
    """Cross-lingual similarity of hidden states by layer (semantic hub paper, Fig. 3, Eq. 1).

    Each input runs once; for every layer and language pair the baseline-adjusted similarity
    (matching minus non-matching mean cosine) with a bootstrap 95% CI is computed from the
    stored per-input vectors. Writes similarity.parquet, vectors.parquet, (matrix.parquet),
    prompts.parquet, a manifest and plots.
    """
    check_layers(layers, "--layers")
    heatmap = heatmap_layer_value(heatmap_layer)
    task_given = {"--data-seed": data_seed != 0, "--max-operand": max_operand != 9, "--operators": operators != "+-*", "--cogs-split": cogs_split != "train", "--cogs-baseline": cogs_baseline is not None}
    media_given = {"--media-pool": media_pool != "mean", "--media-template": media_template != "{media}", "--no-resample": not resample}
    text_given = {"--flores-dir": flores_dir is not None, "--skip-empty": skip_empty}
    if modality != "text":  # media vs caption pairs: the same analysis, two "languages"
        from analyses import media_runs

        opt.reject(f"similarity --modality {modality} (it compares each medium with its caption)", {
            "--task": task is not None, "--anchor": anchor is not None, **text_given, **task_given,
        })
        options = SimilarityOptions(
            n=n, pool=pool, template=template, center=center, layers=layers, seed=seed, bootstrap=bootstrap, save_matrix=save_matrix, save_vectors=save_vectors,
            heatmap_layer=heatmap, modality=modality, media_pool=media_pool, media_template=media_template, resample=resample,
        )
        run, analysis = media_runs.run_similarity(media_runs.single_pairs_file(inputs, modality), options, n, config)
        _finish_command(run, analysis, save_vectors)
        return
    if task is not None:
        opt.reject(f"similarity --task {task} (it builds its own parallel inputs)", {
            " ".join(inputs or []) or "INPUTS": bool(inputs), **text_given, **media_given,
        })
        task_options = tasks.TaskOptions(task=task, n=n, data_seed=data_seed, max_operand=max_operand, operators=operators, cogs_dir=str(cogs_dir) if cogs_dir else None, cogs_split=cogs_split, cogs_baseline=cogs_baseline)
        corpus = tasks.similarity_corpus(task_options)
    else:
        opt.reject("similarity on parallel texts (task options need --task, media options --modality image|audio)", {**task_given, **media_given})
        if not inputs:
            raise HubError("give two or more parallel files or FLORES codes (or --task arithmetic|cogs)")
        corpus = read_languages(inputs, flores_dir, n=n, skip_empty=skip_empty)
    options = SimilarityOptions(
        languages=corpus.languages, sources=[str(p) for p in corpus.sources], n=n, skip_empty=skip_empty,
        pool=pool, template=template, center=center, layers=layers, anchor=anchor, seed=seed,
        bootstrap=bootstrap, save_matrix=save_matrix, save_vectors=save_vectors, heatmap_layer=heatmap,
    )
    texts, languages, sentences = corpus.flat()
    analysis = Similarity(options, languages, sentences)
    prompts = apply_template(template, texts)
    run = run_analysis(analysis, prompts, config, prompt_columns={"language": languages, "sentence": sentences})
    if task is not None:
        run.update_manifest(task=task_options.describe())
    _finish_command(run, analysis, save_vectors)


def _finish_command(run: Any, analysis: Similarity, save_vectors: bool) -> None:
    """The command's tail: where the run is, and its summary once it is complete
    (``--no-save-vectors`` is an analysis option: the runner drops vectors.parquet at the end,
    also when ``hub jobs collect`` finishes a detached run)."""
    opt.report(run, analysis.summary)
