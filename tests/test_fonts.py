"""PNG fonts: one ``warning:`` line per script no installed font covers, with its Debian package."""

from __future__ import annotations

import shutil

import altair as alt
import polars as pl
import pytest

from hubclient import plots
from hubclient.errors import HubError

SAMPLES = {
    "Han (Chinese characters)": ("巴黎", "fonts-noto-cjk"),
    "Japanese kana": ("ひらがな", "fonts-noto-cjk"),
    "Hangul": ("한국어", "fonts-noto-cjk"),
    "Thai": ("ภาษาไทย", "fonts-thai-tlwg"),
    "Devanagari": ("हिन्दी", "fonts-noto-core"),
    "Arabic": ("العربية", "fonts-noto-core"),
}


def chart(tokens: list[str]) -> alt.Chart:
    return alt.Chart(pl.DataFrame({"token": tokens, "layer": list(range(len(tokens)))})).mark_text().encode(text="token:N", y="layer:O")


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(plots, "_warned", set())
    monkeypatch.delenv(plots.FONT_DIR_ENV, raising=False)


@pytest.mark.parametrize("script", list(SAMPLES))
def test_missing_script_warns_once_with_package(script):
    text, package = SAMPLES[script]
    lines: list[str] = []
    first = plots.check_fonts(chart(["Paris", text]), covers=lambda char: False, warn=lines.append)
    assert len(first) == 1 and lines == first
    assert first[0].startswith(f"warning: no installed font covers {script}")
    assert f"install {package}" in first[0]
    assert plots.check_fonts(chart([text, text + text]), covers=lambda char: False, warn=lines.append) == []  # once per run
    assert len(lines) == 1


def test_covered_or_latin_text_is_silent():
    lines: list[str] = []
    assert plots.check_fonts(chart(["Paris", "巴黎", "Привет"]), covers=lambda char: True, warn=lines.append) == []
    assert plots.check_fonts(chart(["Paris", "café"]), covers=lambda char: False, warn=lines.append) == []
    assert lines == []


def test_several_scripts_one_line_each():
    lines: list[str] = []
    plots.check_fonts(chart(["巴黎", "ภาษาไทย", "हिन्दी", "Paris"]), covers=lambda char: char == "巴", warn=lines.append)
    assert len(lines) == 2
    assert any("Thai" in line and "fonts-thai-tlwg" in line for line in lines)
    assert any("Devanagari" in line and "fonts-noto-core" in line for line in lines)


def test_check_that_cannot_run_says_so():
    lines: list[str] = []
    plots.check_fonts(chart(["ภาษาไทย"]), covers=lambda char: None, warn=lines.append)
    assert len(lines) == 1 and "could not check fonts for Thai" in lines[0] and "fontconfig" in lines[0]


def test_font_dir_is_registered(tmp_path, monkeypatch):
    import vl_convert

    seen = []
    monkeypatch.setattr(vl_convert, "register_font_directory", seen.append)
    monkeypatch.setattr(plots, "_registered", set())
    monkeypatch.setenv(plots.FONT_DIR_ENV, str(tmp_path))
    assert plots.check_fonts(chart(["ภาษาไทย"]), covers=lambda char: False, warn=print) == []
    plots.check_fonts(chart(["x"]), covers=lambda char: False)
    assert seen == [str(tmp_path)]  # once
    monkeypatch.setattr(plots, "_registered", set())
    monkeypatch.setenv(plots.FONT_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(HubError, match="HUB_FONT_DIR"):
        plots.check_fonts(chart(["x"]))


@pytest.mark.skipif(shutil.which("fc-list") is None, reason="fontconfig's fc-list is not installed")
def test_real_fontconfig_check():
    assert plots.font_covers("A") is True  # any installed font covers Latin
    assert plots.font_covers("\U000F0000") is False  # a private-use plane code point no font has


def test_chart_titles_lose_local_paths_and_series_keep_their_colours(tmp_path):
    """Titles never show a local folder (Hugging Face ids stay); a language has one colour in
    every chart, whatever other series share it; each series also has its own dash."""
    import altair as alt
    import polars as pl

    from hubclient.plots import LANGUAGE_COLOURS, ci_lines, save_chart, short_path

    assert short_path("Logit lens · /tmp/pytest-7/tiny-llama0") == "Logit lens · tiny-llama0"
    assert short_path("Logit lens · google/gemma-3-270m") == "Logit lens · google/gemma-3-270m"
    frame = pl.DataFrame({"layer": [0, 1, 0, 1], "mean": [0.1, 0.2, 0.3, 0.4], "ci_low": [0.0] * 4, "ci_high": [0.5] * 4, "language": ["zho_Hans", "zho_Hans", "eng_Latn", "eng_Latn"]})
    chart = ci_lines(frame, color="language", title=f"t · {tmp_path}/models/tiny", y_title="p")
    spec = chart.to_dict()
    layers = spec["layer"]
    colour = layers[0]["encoding"]["color"]["scale"]
    assert dict(zip(colour["domain"], colour["range"])) == {"eng_Latn": LANGUAGE_COLOURS["eng_latn"], "zho_Hans": LANGUAGE_COLOURS["zho_hans"]}
    dash = layers[1]["encoding"]["strokeDash"]["scale"]["range"]
    assert dash[0] != dash[1]
    save_chart(chart, tmp_path / "c")
    assert chart.title == "t · tiny"
    alt.Chart(frame)  # altair still importable after the walk
