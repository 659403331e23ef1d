"""Altair charts shared by analyses, saved as HTML and PNG (PNG through vl-convert)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from hubclient.fs import atomic_write


def save_chart(chart: Any, stem: Path) -> list[str]:
    """Save ``chart`` as ``<stem>.html`` and ``<stem>.png`` (2x scale), each atomically.

    Returns:
        the file names written, relative to the run folder (``plots/<name>.html`` …).
    """
    check_fonts(chart)
    strip_paths(chart)
    written = []
    for suffix, kwargs in ((".html", {}), (".png", {"scale_factor": 2})):
        path = stem.with_suffix(suffix)
        atomic_write(path, lambda tmp, s=suffix, kw=kwargs: chart.save(str(tmp), format=s[1:], **kw))
        written.append(f"{stem.parent.name}/{path.name}")
    return written


# --------------------------------------------------------------------------- titles, colours
_PATH: Any = None


def short_path(text: str) -> str:
    """``text`` with every absolute local path (``/home/u/models/tiny``, ``C:\\m\\x``, ``~/m``)
    replaced by its last component, so chart titles never show a local folder; Hugging Face ids
    (``google/gemma-3-270m``) stay as they are."""
    import re

    global _PATH
    if _PATH is None:
        _PATH = re.compile(r"(?:(?<![\w.])~|(?<![\w.])[A-Za-z]:|(?<![\w.]))((?:[/\\][^\s/\\·,;()'\"]+){2,})[/\\]?")
    return _PATH.sub(lambda m: re.split(r"[/\\]", m.group(1))[-1], text)


def strip_paths(chart: Any) -> Any:
    """Apply :func:`short_path` to every title and subtitle of ``chart`` and its sub-charts
    (layers, concatenations, facets), in place; returns ``chart``."""
    import altair as alt

    def fix(title: Any) -> Any:
        if isinstance(title, str):
            return short_path(title)
        if isinstance(title, list):
            return [fix(t) for t in title]
        if isinstance(title, alt.TitleParams):
            title.text = fix(title.text)
            if title.subtitle is not alt.Undefined:
                title.subtitle = fix(title.subtitle)
        return title

    seen: set[int] = set()

    def walk(obj: Any) -> None:
        if id(obj) in seen or not isinstance(obj, alt.SchemaBase):
            return
        seen.add(id(obj))
        title = getattr(obj, "title", alt.Undefined)
        if title is not alt.Undefined:
            obj.title = fix(title)
        for attr in ("layer", "vconcat", "hconcat", "concat"):
            subs = getattr(obj, attr, alt.Undefined)
            if isinstance(subs, list):
                for sub in subs:
                    walk(sub)
        spec = getattr(obj, "spec", alt.Undefined)
        if spec is not alt.Undefined:
            walk(spec)

    walk(chart)
    return chart


#: Colours of languages, the same in every figure (Tableau 10 and extensions). Keys are
#: lower-case FLORES codes, ISO 639-1 codes and English names.
LANGUAGE_COLOURS = {
    "eng_latn": "#4c78a8", "en": "#4c78a8", "english": "#4c78a8",
    "zho_hans": "#e45756", "zh": "#e45756", "chinese": "#e45756",
    "zho_hant": "#ff9da6", "zh-hant": "#ff9da6",
    "fra_latn": "#54a24b", "fr": "#54a24b", "french": "#54a24b",
    "spa_latn": "#f58518", "es": "#f58518", "spanish": "#f58518",
    "por_latn": "#eeca3b", "pt": "#eeca3b", "portuguese": "#eeca3b",
    "arb_arab": "#b279a2", "ar": "#b279a2", "arabic": "#b279a2",
    "vie_latn": "#72b7b2", "vi": "#72b7b2", "vietnamese": "#72b7b2",
    "hin_deva": "#9d755d", "hi": "#9d755d", "hindi": "#9d755d",
    "ind_latn": "#bab0ac", "id": "#bab0ac", "indonesian": "#bab0ac",
    "deu_latn": "#439894", "de": "#439894", "german": "#439894",
    "rus_cyrl": "#d67195", "ru": "#d67195", "russian": "#d67195",
    "jpn_jpan": "#79706e", "ja": "#79706e", "japanese": "#79706e",
    "kor_hang": "#83bcb6", "ko": "#83bcb6", "korean": "#83bcb6",
}
#: Colours of other series, assigned by a stable hash of the name (same name, same colour).
PALETTE = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac", "#1f77b4", "#8c564b")


def series_colour(name: str) -> str:
    """The colour of a series: :data:`LANGUAGE_COLOURS` for a language (code or name, also as
    the first word of a label such as ``"zho_Hans (input)"``), else a colour of
    :data:`PALETTE` chosen by a stable hash of ``name`` (CRC-32, not Python's salted hash)."""
    import zlib

    key = str(name).strip().lower()
    for candidate in (key, key.split(" ")[0], key.split("→")[0].strip(), key.split("->")[0].strip()):
        if candidate in LANGUAGE_COLOURS:
            return LANGUAGE_COLOURS[candidate]
    return PALETTE[zlib.crc32(key.encode()) % len(PALETTE)]


def series_scale(values: Any) -> Any:
    """An ``alt.Scale`` giving each value of ``values`` its :func:`series_colour`; two values
    that would share a colour (hash collisions, two languages of one family) get distinct ones
    from :data:`PALETTE` in sorted order, so a chart never draws two series alike."""
    import altair as alt

    domain = sorted({str(v) for v in values})
    colours: list[str] = []
    for value in domain:
        colour = series_colour(value)
        if colour in colours:
            spare = [c for c in PALETTE if c not in colours]
            colour = spare[0] if spare else colour
        colours.append(colour)
    return alt.Scale(domain=domain, range=colours)


def series_encodings(frame: Any, column: str) -> dict[str, Any]:
    """``color`` and ``strokeDash`` encodings of ``column`` (stable colours, and a dash pattern
    per series so the legend shows line-style swatches and series stay apart in grey print)."""
    import altair as alt

    values = frame[column].unique().to_list()
    scale = series_scale(values)
    dashes = [[1, 0], [6, 3], [2, 2], [8, 3, 2, 3], [4, 4], [10, 2]]
    return {
        "color": alt.Color(f"{column}:N", title=column, scale=scale),
        "strokeDash": alt.StrokeDash(f"{column}:N", title=column, scale=alt.Scale(domain=scale.domain, range=[dashes[i % len(dashes)] for i in range(len(scale.domain))])),
    }


def lens_heatmap(frame: Any, x: str, x_title: str, title: str) -> Any:
    """The classic logit-lens picture: layer (y) × ``x``, top-1 token as text, colour = probability.

    Args:
        frame: polars rows with ``layer``, ``x``, ``token``, ``probability`` (top-1 only).
        x: column for the horizontal axis (an ordered label column).
    """
    import altair as alt
    import polars as pl

    from hubclient.science.tokens import show_whitespace

    frame = frame.with_columns(pl.col("token").cast(pl.Utf8).map_elements(show_whitespace, return_dtype=pl.Utf8))
    if frame[x].dtype == pl.Utf8:
        frame = frame.with_columns(pl.col(x).map_elements(show_whitespace, return_dtype=pl.Utf8))
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
            **series_encodings(frame, color),
            tooltip=["layer", color, alt.Tooltip(f"{y}:Q", format=".4f")],
        )
        .properties(width=260, height=180)
    )
    if facet:
        return chart.facet(facet=alt.Facet(f"{facet}:N", title=None, header=alt.Header(labelLimit=300)), columns=columns).properties(title=title)
    return chart.properties(title=title)


# --------------------------------------------------------------------------- fonts of PNGs
#: Scripts whose characters may have no installed font: (name, code point ranges, Debian package).
SCRIPTS: tuple[tuple[str, tuple[tuple[int, int], ...], str], ...] = (
    ("Han (Chinese characters)", ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF)), "fonts-noto-cjk"),
    ("Japanese kana", ((0x3040, 0x30FF),), "fonts-noto-cjk"),
    ("Hangul", ((0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F)), "fonts-noto-cjk"),
    ("Thai", ((0x0E00, 0x0E7F),), "fonts-thai-tlwg"),
    ("Devanagari", ((0x0900, 0x097F),), "fonts-noto-core"),
    ("Bengali", ((0x0980, 0x09FF),), "fonts-noto-core"),
    ("Tamil", ((0x0B80, 0x0BFF),), "fonts-noto-core"),
    ("Arabic", ((0x0600, 0x06FF), (0x0750, 0x077F)), "fonts-noto-core"),
    ("Hebrew", ((0x0590, 0x05FF),), "fonts-noto-core"),
    ("Ethiopic", ((0x1200, 0x137F),), "fonts-noto-core"),
    ("Georgian", ((0x10A0, 0x10FF),), "fonts-noto-core"),
    ("Armenian", ((0x0530, 0x058F),), "fonts-noto-core"),
    ("Cyrillic", ((0x0400, 0x04FF),), "fonts-dejavu-core"),
    ("Greek", ((0x0370, 0x03FF),), "fonts-dejavu-core"),
)
#: Environment variable naming an extra font folder for the PNG renderer (vl-convert).
FONT_DIR_ENV = "HUB_FONT_DIR"
_warned: set[str] = set()
_registered: set[str] = set()


def scripts_in(text: str) -> dict[str, str]:
    """The scripts of :data:`SCRIPTS` that occur in ``text``: ``{script name: first character}``."""
    found: dict[str, str] = {}
    for char in text:
        point = ord(char)
        if point < 0x0370:
            continue
        for name, ranges, _ in SCRIPTS:
            if name not in found and any(lo <= point <= hi for lo, hi in ranges):
                found[name] = char
    return found


def font_covers(char: str) -> bool | None:
    """Whether an installed font has a glyph for ``char``, asking fontconfig
    (``fc-list :charset=XXXX``); ``None`` when the check cannot run (no ``fc-list``)."""
    if shutil.which("fc-list") is None:
        return None
    try:
        result = subprocess.run(["fc-list", f":charset={ord(char):x}", "family"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(result.stdout.strip())


def register_font_dir() -> None:
    """Register ``$HUB_FONT_DIR`` (when set) with vl-convert, once per run, so PNGs can use
    fonts that are not installed system-wide.

    Raises:
        HubError: ``$HUB_FONT_DIR`` is set but is not a folder.
    """
    folder = os.environ.get(FONT_DIR_ENV, "").strip()
    if not folder or folder in _registered:
        return
    from hubclient.errors import HubError

    if not Path(folder).is_dir():
        raise HubError(f"{FONT_DIR_ENV}={folder!r} is not a folder; point it at a folder of .ttf/.otf fonts or unset it")
    import vl_convert

    vl_convert.register_font_directory(folder)
    _registered.add(folder)


def check_fonts(chart: Any, covers: Callable[[str], bool | None] | None = None, warn: Callable[[str], None] | None = None) -> list[str]:
    """Warn (once per run and script) when ``chart``'s PNG would contain characters no
    installed font covers, naming the script and the Debian package that provides a font.

    Registers ``$HUB_FONT_DIR`` first (:func:`register_font_dir`); when it is set, its fonts
    are assumed to cover what fontconfig does not know about, and no warning is printed.

    Args:
        chart: an altair chart (its data and labels are scanned).
        covers: the coverage check (default :func:`font_covers`; tests replace it).
        warn: where the ``warning: …`` lines go (default: stderr).

    Returns:
        the warning lines printed by this call.

    Raises:
        HubError: ``$HUB_FONT_DIR`` is set but is not a folder.
    """
    import json

    register_font_dir()
    if os.environ.get(FONT_DIR_ENV, "").strip():
        return []
    try:
        text = json.dumps(chart.to_dict(), ensure_ascii=False, default=str)
    except Exception:  # a chart that cannot be serialised fails later, in save(), with its own error
        return []
    covers = covers or font_covers
    say = warn or (lambda line: print(line, file=sys.stderr))
    lines = []
    for name, char in scripts_in(text).items():
        if name in _warned:
            continue
        covered = covers(char)
        if covered:
            continue
        _warned.add(name)
        package = next(pkg for script, _, pkg in SCRIPTS if script == name)
        if covered is None:
            line = f"warning: could not check fonts for {name} text in the PNG plots (no fc-list: install fontconfig); if it shows as boxes, install {package} or set {FONT_DIR_ENV}"
        else:
            line = f"warning: no installed font covers {name} (e.g. {char!r}): the PNG plots show boxes for it; install {package} (apt-get install {package}) or set {FONT_DIR_ENV} to a folder of fonts"
        say(line)
        lines.append(line)
    return lines


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
    lines = series_encodings(frame, color)
    base = alt.Chart(frame).encode(x=alt.X("layer:Q", title="layer (0 = embeddings)"), color=lines["color"])
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("ci_low:Q", title=y_title, scale=y_scale), y2="ci_high:Q")
    tooltip: list[Any] = ["layer", color, alt.Tooltip(f"{y}:Q", format=number), alt.Tooltip("ci_low:Q", format=number), alt.Tooltip("ci_high:Q", format=number)]
    if "n" in frame.columns:
        tooltip.append("n")
    line = base.mark_line(point=True).encode(y=alt.Y(f"{y}:Q", scale=y_scale), strokeDash=lines["strokeDash"], tooltip=tooltip)
    chart = (band + line).properties(width=width, height=height)
    heading = alt.TitleParams(title, subtitle=subtitle) if subtitle else title
    if facet:
        return chart.facet(facet=alt.Facet(f"{facet}:N", title=None), columns=3).properties(title=heading)
    return chart.properties(title=heading)
