"""``hub analyze similarity``: the command (science: :mod:`analyses.similarity`).

Three modes, chosen once: parallel texts (positional files and/or FLORES codes), ``--task
arithmetic|cogs`` (the task's parallel forms) and ``--modality image|audio`` (media vs caption
pairs, :mod:`analyses.media_runs`); an option of another mode is an error.

``--protocol wu2024`` sets the conventions of the paper's released code (``paper-protocols.md``
§0, A1, A4, A9; :func:`protocol_settings`): layers 1..L with layer L after the final norm, the
last token, raw cosines; on texts the conditional suffix template ``wu2024`` (A1); with ``--task
arithmetic`` the paper's 1,123 expressions without ``=`` and the all-pairs baseline (A4).
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
#: ``--protocol`` values: ``hub`` (our defaults) and ``wu2024`` (the paper's released code).
PROTOCOLS = ("hub", "wu2024")


def protocol_settings(protocol: str, task: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """The option values ``--protocol`` sets, for the options not given explicitly.

    ``hub``: final norm off, Eq. 1 (``offdiag``), layers ``all`` (0..L), no template.
    ``wu2024`` (``paper-protocols.md`` §0, A1, A4, A9): layers ``1:-1`` (1..L; the scripts slice
    ``hidden_states[1:]``), ``final_norm="last"`` (``hidden_states[L]`` is post-norm), last-token
    pooling, raw cosines; texts: template ``wu2024`` (A1, ``multilingual/similarity.py:54-69``)
    and Eq. 1; ``--task arithmetic``: the paper's data (A4) and baseline ``all``
    (``arithmetic/similarity.py:100-109``); ``--task cogs``: Eq. 1 (A9 default mode).

    Args:
        protocol: ``hub`` or ``wu2024``.
        task: the ``--task`` or ``None``.
        given: option -> value as given (``None`` = not given) for ``final_norm``,
            ``baseline``, ``layers``, ``template``.

    Returns:
        ``{"final_norm", "baseline", "layers", "template"}``: each given value wins.

    Raises:
        HubError: an unknown protocol, or with ``wu2024`` an option that contradicts it
            (``--pool mean``, ``--center``, given as ``pool``/``center`` in ``given``).
    """
    if protocol not in PROTOCOLS:
        raise HubError(f"unknown --protocol {protocol!r}; choose hub (this tool's defaults) or wu2024 (the semantic hub paper's released code)")
    if protocol == "hub":
        defaults = {"final_norm": "off", "baseline": "offdiag", "layers": "all", "template": None}
    else:
        for option, value, paper in (("--pool", given.get("pool"), "last"), ("--center", given.get("center"), False)):
            if value is not None and value != paper:
                raise HubError(f"--protocol wu2024 uses {option} {paper if option == '--pool' else 'off'} (the paper's code); drop {option} or drop --protocol")
        defaults = {"final_norm": "last", "baseline": "all" if task == "arithmetic" else "offdiag", "layers": "1:-1", "template": "wu2024" if task is None else None}
    out = {}
    for key, value in defaults.items():
        out[key] = given.get(key) if given.get(key) is not None else value
    return out


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
    template: Annotated[Optional[str], typer.Option(help="Text around each input, with a {text} placeholder, e.g. '{text} In other words,' (default: the input alone); or wu2024: the paper's suffix, '这代表了' after a Chinese text ending in '。', 'This represents' after an English one ending in '.' or '.\"' (no space; nothing otherwise).", rich_help_panel="Input")] = None,
    protocol: Annotated[str, typer.Option(help="hub (this tool's defaults) or wu2024: the paper's released code (layers 1..L, layer L after the final norm; texts: --template wu2024; --task arithmetic: its 1,123 expressions without '=' and the all-pairs baseline). docs/reproduce.md.", rich_help_panel=PANEL)] = "hub",
    pool: Annotated[Optional[str], typer.Option(help="last: the last token's hidden state (the paper); mean: the mean over the input's tokens, without BOS.  [default: last]", rich_help_panel=PANEL, show_default=False)] = None,
    center: Annotated[Optional[bool], typer.Option("--center/--no-center", help="Subtract the layer's mean hidden state (over all inputs) before the cosine; off by default, as the paper.", rich_help_panel=PANEL, show_default=False)] = None,
    layers: Annotated[Optional[str], typer.Option(help="Layers: all, a list such as 0,4,8, a range such as 2-10, 0:8 or 0:8:2 (inclusive), -1 = the last (0 = embeddings). The forward pass stops after the last one.  [default: all; 1:-1 with --protocol wu2024]", rich_help_panel=PANEL, show_default=False)] = None,
    final_norm: Annotated[Optional[str], typer.Option("--final-norm", help="off: every layer raw (layer L = output of the last block); last: layer L after the model's final norm, as transformers' hidden_states[L] (the paper's code); on: every layer through the final norm.  [default: off; last with --protocol wu2024]", rich_help_panel=PANEL, show_default=False)] = None,
    baseline: Annotated[Optional[str], typer.Option(help="offdiag: Eq. 1, matching minus the mean of non-matching pairs; all: minus the mean of all N² pairs, diagonal included (the paper's arithmetic code).  [default: offdiag; all with --protocol wu2024 --task arithmetic]", rich_help_panel=PANEL, show_default=False)] = None,
    paired_baseline: Annotated[Optional[str], typer.Option("--paired-baseline", help="A third aligned input (e.g. logical forms with swapped names): each other pair (a, b) scores mean_i [cos(a_i, b_i) − cos(a_i, LANG_i)] (the paper's COGS baselines) instead of Eq. 1.", rich_help_panel=PANEL)] = None,
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
    media_pool: Annotated[str, typer.Option(help="With --modality image|audio: last: the paper's position (A11, its code's hidden_states[:, -1]): the medium's last token position (the last image patch of LLaVA with --media-template '{media}'), on Chameleon the sep token its processor appends after the prompt; final: the prompt's last position on any model; mean: the mean over the medium's token positions (ours). --pool applies to the caption.", rich_help_panel="Media")] = "last",
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
    settings = protocol_settings(protocol, task, {"final_norm": final_norm, "baseline": baseline, "layers": layers, "template": template, "pool": pool, "center": center})
    layers, template = settings["layers"], settings["template"]
    pool = pool or "last"
    center = bool(center)
    from hubclient.science.lens import norm_mode

    norm = norm_mode(settings["final_norm"])
    stats.check_baseline(settings["baseline"])
    paper = {"final_norm": norm, "baseline": settings["baseline"], "paired_baseline": paired_baseline, "protocol": protocol}
    check_layers(layers, "--layers")
    heatmap = heatmap_layer_value(heatmap_layer)
    task_given = {"--data-seed": data_seed != 0, "--max-operand": max_operand != 9, "--operators": operators != "+-*", "--cogs-split": cogs_split != "train", "--cogs-baseline": cogs_baseline is not None}
    media_given = {"--media-pool": media_pool != "last", "--media-template": media_template != "{media}", "--no-resample": not resample}
    text_given = {"--flores-dir": flores_dir is not None, "--skip-empty": skip_empty}
    if modality != "text":  # media vs caption pairs: the same analysis, two "languages"
        from analyses import media_runs

        opt.reject(f"similarity --modality {modality} (it compares each medium with its caption)", {
            "--task": task is not None, "--anchor": anchor is not None, "--paired-baseline": paired_baseline is not None,
            "--protocol": protocol != "hub", **text_given, **task_given,
        })
        options = SimilarityOptions(
            n=n, pool=pool, template=template, center=center, layers=layers, seed=seed, bootstrap=bootstrap, save_matrix=save_matrix, save_vectors=save_vectors,
            heatmap_layer=heatmap, modality=modality, media_pool=media_pool, media_template=media_template, resample=resample, **paper,
        )
        run, analysis = media_runs.run_similarity(media_runs.single_pairs_file(inputs, modality), options, n, config)
        _finish_command(run, analysis, save_vectors)
        return
    if task is not None:
        opt.reject(f"similarity --task {task} (it builds its own parallel inputs)", {
            " ".join(inputs or []) or "INPUTS": bool(inputs), **text_given, **media_given,
        })
        if protocol == "wu2024" and task == "arithmetic":
            opt.reject("similarity --protocol wu2024 --task arithmetic (the paper's operands: 1..99 with a single-digit second operand, results below 100)", {"--max-operand": max_operand != 9})
            if operators == "+-*":
                operators = "+*"
        task_options = tasks.TaskOptions(
            task=task, n=n, data_seed=data_seed, max_operand=max_operand, operators=operators, cogs_dir=str(cogs_dir) if cogs_dir else None, cogs_split=cogs_split, cogs_baseline=cogs_baseline,
            protocol=protocol if task == "arithmetic" else "hub",
        )
        if protocol == "wu2024" and task == "arithmetic":  # the paper's "Same result" / "Diff result" means
            from hubclient.inputs.tasks import arithmetic

            paper["groups"] = [item.result for item in arithmetic.sample_paper_items(arithmetic.paper_items(operators), n, data_seed)]
        corpus = tasks.similarity_corpus(task_options)
        if protocol == "wu2024" and task == "cogs" and paired_baseline is None and len(corpus.languages) == 3:
            # A9 (semantics/similarity.py:116-122): the third aligned form (the name-swapped
            # logical form) is the paired baseline of sentence vs logical form
            paper["paired_baseline"] = corpus.languages[2]
    else:
        opt.reject("similarity on parallel texts (task options need --task, media options --modality image|audio)", {**task_given, **media_given})
        if not inputs:
            raise HubError("give two or more parallel files or FLORES codes (or --task arithmetic|cogs)")
        corpus = read_languages(inputs, flores_dir, n=n, skip_empty=skip_empty)
    options = SimilarityOptions(
        languages=corpus.languages, sources=[str(p) for p in corpus.sources], n=n, skip_empty=skip_empty,
        pool=pool, template=template, center=center, layers=layers, anchor=anchor, seed=seed,
        bootstrap=bootstrap, save_matrix=save_matrix, save_vectors=save_vectors, heatmap_layer=heatmap, **paper,
    )
    texts, languages, sentences = corpus.flat()
    analysis = Similarity(options, languages, sentences)
    prompts = apply_template(template, texts, languages)
    run = run_analysis(analysis, prompts, config, prompt_columns={"language": languages, "sentence": sentences})
    if task is not None:
        run.update_manifest(task=task_options.describe())
    _finish_command(run, analysis, save_vectors)


def _finish_command(run: Any, analysis: Similarity, save_vectors: bool) -> None:
    """The command's tail: where the run is, and its summary once it is complete
    (``--no-save-vectors`` is an analysis option: the runner drops vectors.parquet at the end,
    also when ``hub jobs collect`` finishes a detached run)."""
    opt.report(run, analysis.summary)
