"""Media pairs, image/audio loading and the demo generator (hubclient.media): no model needed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hubclient import media
from hubclient.errors import HubError

soundfile = pytest.importorskip("soundfile", reason="the media extra (soundfile) is not installed")
Image = pytest.importorskip("PIL.Image", reason="the media extra (Pillow) is not installed")


def png(path, colour=(255, 0, 0)):
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def tone(path, rate, seconds=0.5, freq=440.0, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    soundfile.write(str(path), data, rate)
    return path


# --------------------------------------------------------------------------- pairs files


def test_read_pairs_csv_and_jsonl_resolve_relative_paths(tmp_path):
    (tmp_path / "img").mkdir()
    png(tmp_path / "img" / "a.png")
    absolute = png(tmp_path / "b.png")
    (tmp_path / "pairs.csv").write_text(f"media,caption\nimg/a.png,a red square\n{absolute}, a second one \n", encoding="utf-8")
    pairs = media.read_pairs(tmp_path / "pairs.csv")
    assert [p.media for p in pairs] == [(tmp_path / "img" / "a.png").resolve(), absolute.resolve()]
    assert [p.caption for p in pairs] == ["a red square", "a second one"]
    assert [p.line for p in pairs] == [2, 3]  # line 1 is the header

    lines = [json.dumps({"image": "img/a.png", "caption": "x"}), "", json.dumps({"image": str(absolute), "caption": "y"})]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    pairs = media.read_pairs(tmp_path / "pairs.jsonl", n=1)
    assert len(pairs) == 1 and pairs[0].caption == "x" and pairs[0].line == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ("media,caption\nmissing.png,a cat\n", "pairs.csv:2: media file"),
        ("media,caption\na.png,a cat\na.png,\n", "pairs.csv:3: empty 'caption'"),
        ("media,caption\n,a cat\n", "pairs.csv:2: empty 'media'"),
        ("file,text\na.png,a cat\n", "needs a media column"),
        ("media,caption\n", "has no pairs"),
    ],
)
def test_read_pairs_errors_name_file_and_line(tmp_path, content, message):
    png(tmp_path / "a.png")
    (tmp_path / "pairs.csv").write_text(content, encoding="utf-8")
    with pytest.raises(HubError, match=message.replace("(", r"\(")) as err:
        media.read_pairs(tmp_path / "pairs.csv")
    assert "pairs.csv" in str(err.value)


def test_read_pairs_bad_json_line_and_missing_file(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"media": "a.png", "caption": "x"}\n{not json\n', encoding="utf-8")
    with pytest.raises(HubError, match=r"p\.jsonl line 2: not valid JSON"):
        media.read_pairs(tmp_path / "p.jsonl")
    (tmp_path / "p.jsonl").write_text('{"media": "a.png", "caption": "x"}\n["a.png", "x"]\n', encoding="utf-8")
    with pytest.raises(HubError, match=r"p\.jsonl line 2: expected a JSON object, got list"):
        media.read_pairs(tmp_path / "p.jsonl")
    with pytest.raises(HubError, match="does not exist"):
        media.read_pairs(tmp_path / "nope.csv")
    (tmp_path / "p.txt").write_text("a.png\tx\n", encoding="utf-8")
    with pytest.raises(HubError, match=r"must be \.csv or \.jsonl"):
        media.read_pairs(tmp_path / "p.txt")


# --------------------------------------------------------------------------- images


def test_load_image_rgb_and_unreadable(tmp_path):
    Image.new("L", (5, 3), 128).save(tmp_path / "grey.png")
    img = media.load_image(tmp_path / "grey.png")
    assert img.mode == "RGB" and img.size == (5, 3)
    assert np.asarray(img)[0, 0].tolist() == [128, 128, 128]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really an image")
    with pytest.raises(HubError, match=r"pairs\.csv:4: .*broken\.png is not a readable image"):
        media.load_image(tmp_path / "broken.png", where="pairs.csv:4")
    with pytest.raises(HubError, match="does not exist"):
        media.load_image(tmp_path / "gone.png")


# --------------------------------------------------------------------------- audio


def test_load_audio_same_rate_is_the_file(tmp_path):
    path = tone(tmp_path / "a.wav", 16000)
    expected, _ = soundfile.read(str(path), dtype="float32")
    got = media.load_audio(path, 16000)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_load_audio_resamples_and_mixes_to_mono(tmp_path):
    path = tone(tmp_path / "a.wav", 8000, seconds=1.0, freq=440.0, channels=2)
    got = media.load_audio(path, 16000)
    assert got.shape == (16000,)
    # independent check: the spectrum's peak stays at 440 Hz at the new rate
    spectrum = np.abs(np.fft.rfft(got))
    freqs = np.fft.rfftfreq(got.size, d=1 / 16000)
    assert abs(freqs[spectrum.argmax()] - 440.0) <= 1.0
    assert abs(np.abs(got[2000:14000]).max() - 0.5) < 0.02  # amplitude kept (away from the edges)


def test_load_audio_wrong_rate_without_resampling_and_unreadable(tmp_path):
    path = tone(tmp_path / "a.wav", 22050)
    with pytest.raises(HubError, match=r"sampled at 22050 Hz but the model's feature extractor expects 16000 Hz"):
        media.load_audio(path, 16000, resample=False, where="pairs.csv:2")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(HubError, match="not a readable audio file"):
        media.load_audio(tmp_path / "bad.wav", 16000)


# --------------------------------------------------------------------------- demo


def test_demo_images(tmp_path):
    written = media.write_demo(tmp_path, ("image",), size=48)
    pairs = media.read_pairs(written["image"])
    assert len(pairs) == 10 + len(media.COLOURS) * len(media.SHAPES)
    captions = [p.caption for p in pairs]
    assert "the digit seven" in captions and "a red circle" in captions and "a blue triangle" in captions
    red = np.asarray(media.load_image(next(p.media for p in pairs if p.caption == "a red circle")))
    assert red.shape == (48, 48, 3)
    assert red[24, 24].tolist() == list(media.COLOURS["red"])  # the centre is the shape's colour
    assert red[0, 0].tolist() == [255, 255, 255]
    seven = np.asarray(media.load_image(next(p.media for p in pairs if p.caption == "the digit seven")))
    assert (seven < 100).any() and (seven == 255).any()  # black glyph on white


def test_demo_audio_without_espeak_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(media, "espeak_binary", lambda: None)
    with pytest.raises(HubError, match="espeak-ng, which is not installed"):
        media.write_demo(tmp_path, ("audio", "image"))
    assert not (tmp_path / "images.csv").exists()  # nothing half-written


@pytest.mark.skipif(media.espeak_binary() is None, reason="espeak-ng is not installed (Debian package espeak-ng)")
def test_demo_audio_with_espeak(tmp_path):
    pairs = media.read_pairs(media.write_demo(tmp_path, ("audio",))["audio"])
    assert [p.caption for p in pairs] == list(media.SPOKEN)
    assert media.load_audio(pairs[0].media, 16000).size > 1600


@pytest.mark.parametrize("modality", ["text", "video"])
def test_check_modality_names_the_media_choices(modality):
    assert media.check_modality("audio") == "audio"
    with pytest.raises(HubError, match=r"choose image or audio$") as err:
        media.check_modality(modality)
    assert repr(modality) in str(err.value) and "choose text" not in str(err.value)
