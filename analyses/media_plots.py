"""Charts of a logit-lens run on image/audio pairs (``--modality image|audio``), from its
Parquet alone.

Its own module so that :mod:`analyses.logit_lens` (whose ``plots`` draws any logit-lens run)
and :mod:`analyses.media_runs` (which subclasses the lens) both import it, without importing
each other in a cycle.
"""

from __future__ import annotations

from typing import Any

#: Media positions shown in the lens heatmap (evenly spaced when there are more).
HEATMAP_POSITIONS = 32


def model_title(model_id: str) -> str:
    """The model as a chart title names it: a hub id as it is, a local folder by its last
    component only (no local paths in titles)."""
    from pathlib import PurePath

    if model_id.startswith(("/", ".", "~")) or "\\" in model_id:
        return PurePath(model_id).name or model_id
    return model_id


def media_lens_plots(run: Any) -> dict[str, Any]:
    """Charts of a media lens run, from its Parquet alone: the caption words' lens
    probability by layer (mean over media positions and words; and the best position), per
    pair for up to 12 pairs, else averaged; and the top-1 token heatmap (layer × media
    position) of the first pair."""
    import polars as pl

    from analyses.lenses import lens_words
    from hubclient.plots import by_layer, lens_heatmap

    manifest = run.manifest
    model_id = model_title(manifest["model"]["model_id"])
    norm = lens_words(manifest["options"], True)
    charts: dict[str, Any] = {}
    if (run.path / "caption_words.parquet").is_file():
        words = run.table("caption_words")
        if words.height:
            per_position = words.group_by("prompt", "layer", "position").agg(pl.col("probability").mean())
            stats = per_position.group_by("prompt", "layer").agg(
                pl.col("probability").mean().alias("mean over positions"), pl.col("probability").max().alias("best position")
            )
            long = stats.unpivot(index=["prompt", "layer"], variable_name="statistic", value_name="probability")
            if long["prompt"].n_unique() <= 12:
                captions = run.table("prompts").select("prompt", "caption")
                long = long.join(captions, on="prompt").with_columns(panel=pl.format("{}: {}", pl.col("prompt"), pl.col("caption")))
                charts["caption_probability"] = by_layer(
                    long.sort("prompt", "statistic", "layer"), "probability", "statistic",
                    f"Lens probability of caption words at the media positions ({norm}) · {model_id}", "lens probability", facet="panel",
                )
            else:
                mean = long.group_by("statistic", "layer").agg(pl.col("probability").mean()).sort("statistic", "layer")
                charts["caption_probability"] = by_layer(
                    mean, "probability", "statistic",
                    f"Lens probability of caption words, mean over {stats['prompt'].n_unique()} pairs ({norm}) · {model_id}", "lens probability",
                )
    top1 = run.table("logit_lens").filter((pl.col("rank") == 1) & (pl.col("prompt") == 0))
    if top1.height:
        positions = sorted(top1["position"].unique().to_list())
        if len(positions) > HEATMAP_POSITIONS:
            step = len(positions) / HEATMAP_POSITIONS
            positions = [positions[int(i * step)] for i in range(HEATMAP_POSITIONS)]
        frame = (
            top1.filter(pl.col("position").is_in(positions))
            .sort("position", "layer")
            .with_columns(column=pl.format("{}", pl.col("position")))
        )
        caption = run.table("prompts").filter(pl.col("prompt") == 0)["caption"][0]
        charts["lens_heatmap"] = lens_heatmap(
            frame, "column", "media position", f"Lens at the media positions of pair 0 ({caption!r}; {norm}) · {model_id}"
        )
    return charts


#: Line names of the paper's media lenses (``hub analyze media-lens``), per experiment:
#: (matching, baseline). Kept here, beside the chart, so that ``hub plot`` needs no analysis.
PROTOCOL_SETS = {
    "colour": ("the colour's name", "control word"),
    "caption-nouns": ("matching caption", "least-overlapping caption"),
    "segmentation": ("matching label", "random label"),
    "label-words": ("matching label", "random label"),
}
PROTOCOL_Y = {
    "colour": "% of image positions whose lens top-1 is the word",
    "caption-nouns": "Σ over nouns of mean P(noun), scaled",
    "segmentation": "mean over categories of geo-mean P(name)",
    "label-words": "geo-mean P(label word) over speech positions",
}


def protocol_lens_plot(run: Any) -> dict[str, Any]:
    """The paper's media lens by layer (``media_lens_summary.parquet``): matching vs baseline,
    each the mean over media with its 95% bootstrap CI band; the paired difference is in the
    table, not drawn."""
    import polars as pl

    from analyses.lenses import lens_words
    from hubclient.plots import ci_lines

    path = run.path / "media_lens_summary.parquet"
    if not path.is_file():
        return {}
    manifest = run.manifest
    options = manifest["options"]
    experiment = options.get("experiment", "")
    names = dict(zip(("matching", "baseline"), PROTOCOL_SETS.get(experiment, ("matching", "baseline"))))
    if experiment == "colour":
        names["baseline"] = f"control word {options.get('control', 'white')!r}"
    frame = (
        pl.read_parquet(path)
        .filter(pl.col("set") != "difference")
        .with_columns(pl.col("set").replace_strict(names, default=pl.col("set")).alias("target"))
        .sort("target", "layer")
    )
    n = int(frame["n"].max()) if frame.height else 0
    title = f"{experiment} lens at the media positions ({lens_words(options, True)}) · {model_title(manifest['model']['model_id'])}"
    chart = ci_lines(frame, "target", title, PROTOCOL_Y.get(experiment, "value"), subtitle=f"mean over {n} media, 95% bootstrap CI")
    return {"media_lens": chart}
