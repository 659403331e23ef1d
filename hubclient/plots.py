"""Altair charts shared by analyses, saved as HTML and PNG (PNG through vl-convert)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubclient.fs import atomic_write


def save_chart(chart: Any, stem: Path) -> list[str]:
    """Save ``chart`` as ``<stem>.html`` and ``<stem>.png`` (2x scale), each atomically.

    Returns:
        the file names written, relative to the run folder (``plots/<name>.html`` …).
    """
    written = []
    for suffix, kwargs in ((".html", {}), (".png", {"scale_factor": 2})):
        path = stem.with_suffix(suffix)
        atomic_write(path, lambda tmp, s=suffix, kw=kwargs: chart.save(str(tmp), format=s[1:], **kw))
        written.append(f"{stem.parent.name}/{path.name}")
    return written


def lens_heatmap(frame: Any, x: str, x_title: str, title: str) -> Any:
    """The classic logit-lens picture: layer (y) × ``x``, top-1 token as text, colour = probability.

    Args:
        frame: polars rows with ``layer``, ``x``, ``token``, ``probability`` (top-1 only).
        x: column for the horizontal axis (an ordered label column).
    """
    import altair as alt

    n_x = frame[x].n_unique()
    n_layers = frame["layer"].n_unique()
    base = alt.Chart(frame).encode(
        x=alt.X(f"{x}:N", title=x_title, sort=None, axis=alt.Axis(labelAngle=-45, labelLimit=120)),
        y=alt.Y("layer:O", title="layer (0 = embeddings)", sort="descending"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("probability:Q", title="p(top-1)", scale=alt.Scale(scheme="blues", domain=[0, 1])),
        tooltip=["layer", x, "token", alt.Tooltip("probability:Q", format=".3f")],
    )
    text = base.mark_text(fontSize=9, limit=60).encode(
        text="token:N",
        color=alt.condition(alt.datum.probability > 0.5, alt.value("white"), alt.value("black")),
    )
    return (cells + text).properties(title=title, width=max(200, 46 * n_x), height=max(150, 16 * n_layers))


def by_layer(frame: Any, y: str, color: str, title: str, y_title: str, facet: str | None = None, columns: int = 3) -> Any:
    """Lines of ``y`` against layer, one per ``color`` value (optionally faceted).

    Args:
        frame: polars rows with ``layer``, ``y``, ``color`` (and ``facet``) columns.
    """
    import altair as alt

    chart = (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", title="layer (0 = embeddings)"),
            y=alt.Y(f"{y}:Q", title=y_title),
            color=alt.Color(f"{color}:N", title=color),
            tooltip=["layer", color, alt.Tooltip(f"{y}:Q", format=".4f")],
        )
        .properties(width=260, height=180)
    )
    if facet:
        return chart.facet(facet=alt.Facet(f"{facet}:N", title=None, header=alt.Header(labelLimit=300)), columns=columns).properties(title=title)
    return chart.properties(title=title)


def ci_lines(
    frame: Any,
    color: str,
    title: str,
    y_title: str,
    facet: str | None = None,
    subtitle: str = "",
    log_floor: float | None = None,
    y: str = "mean",
    width: int = 260,
    height: int = 180,
) -> Any:
    """The one per-layer CI chart: ``y`` by layer as lines (one per ``color`` value) over a
    shaded band from ``ci_low`` to ``ci_high`` (a 95% CI), optionally faceted.

    Args:
        frame: polars rows with ``layer``, ``y``, ``ci_low``, ``ci_high``, ``color`` (and
            ``facet``) columns; an ``n`` column, when present, is shown in the tooltip.
        color: column of the line colour.
        title / subtitle: chart heading (the subtitle under the title, when given).
        y_title: y axis title.
        facet: column to facet by (3 columns of panels), or ``None``.
        log_floor: ``None``: a linear y axis; else a log10 y axis starting at ``log_floor``,
            with ``y``/``ci_low``/``ci_high`` below it drawn at it (tooltips in 3 significant
            digits instead of 4 decimals).
        y: column of the line (``mean`` of :func:`analyses.language_probs.summarize`).
        width / height: size of the chart (of each panel when faceted).

    Returns:
        an altair chart (layered band + line, or a facet chart of them).
    """
    import altair as alt

    y_scale: Any = alt.Undefined
    number = ".4f"
    if log_floor is not None:
        import polars as pl

        frame = frame.with_columns(pl.col(y, "ci_low", "ci_high").clip(lower_bound=log_floor))
        y_scale = alt.Scale(type="log", domainMin=log_floor)
        number = ".3g"
    base = alt.Chart(frame).encode(
        x=alt.X("layer:Q", title="layer (0 = embeddings)"),
        color=alt.Color(f"{color}:N", title=color),
    )
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("ci_low:Q", title=y_title, scale=y_scale), y2="ci_high:Q")
    tooltip: list[Any] = ["layer", color, alt.Tooltip(f"{y}:Q", format=number), alt.Tooltip("ci_low:Q", format=number), alt.Tooltip("ci_high:Q", format=number)]
    if "n" in frame.columns:
        tooltip.append("n")
    line = base.mark_line(point=True).encode(y=alt.Y(f"{y}:Q", scale=y_scale), tooltip=tooltip)
    chart = (band + line).properties(width=width, height=height)
    heading = alt.TitleParams(title, subtitle=subtitle) if subtitle else title
    if facet:
        return chart.facet(facet=alt.Facet(f"{facet}:N", title=None), columns=3).properties(title=heading)
    return chart.properties(title=heading)
