"""``--modality image|audio --remote`` through the project's NDIF test server (tiny models).

The media are read and preprocessed here (the processor runs on the client); the request
carries the processor's tensors, the server runs the same trace body, and only the reduced
tensors come back: the tables equal a local run's exactly.
"""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from hubclient import remote
from hubclient.cli import app

pytest.importorskip("soundfile", reason="the media extra (soundfile) is not installed")
pytest.importorskip("PIL.Image", reason="the media extra (Pillow) is not installed")

from media_tiny import save_media_model  # noqa: E402
from test_media_models import write_pairs  # noqa: E402
from test_remote import KEY, ServerProcess  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {family: save_media_model(family, tmp_path_factory.mktemp(f"remote-{family}")) for family in ("llava", "qwen2_audio")}


@pytest.fixture(scope="module")
def server(folders):
    srv = ServerProcess([str(folders["llava"]), str(folders["qwen2_audio"])])
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def client(monkeypatch):
    import nnsight

    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", KEY)
    monkeypatch.setattr(nnsight.CONFIG.API, "HOST", nnsight.CONFIG.API.HOST)
    monkeypatch.setattr(remote.config, "POLL_INTERVAL", 0.05)


def hub(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_image_similarity_remote_equals_local(tmp_path, folders, server):
    pairs = write_pairs(tmp_path, "image")
    common = ["--modality", "image", pairs, "--model", folders["llava"], "--out", tmp_path, "--no-progress", "--no-plots", "--batch-size", "2"]
    hub("analyze", "similarity", *common, "--name", "local")
    hub("analyze", "similarity", *common, "--name", "remote", "--remote", "--ndif-host", server.url, "--timeout", "120", "--transfer-dtype", "float32")
    for table in ("similarity", "vectors", "prompts"):
        assert pl.read_parquet(tmp_path / "remote" / f"{table}.parquet").equals(pl.read_parquet(tmp_path / "local" / f"{table}.parquet")), table
    block = json.loads((tmp_path / "remote" / "manifest.json").read_text())["remote"]
    assert all(r["state"] == "collected" for r in block["requests"])
    # pixel values go out; only pooled [layers, batch, d_model] vectors come back
    assert block["bytes_received"] < 4 * 6 * 4 * 32 * 4


def test_audio_lens_remote_equals_local(tmp_path, folders, server):
    pairs = write_pairs(tmp_path, "audio")
    common = ["--modality", "audio", "--prompts", pairs, "--model", folders["qwen2_audio"], "--out", tmp_path, "--no-progress", "--no-plots", "--top-k", "3"]
    hub("analyze", "logit-lens", *common, "--name", "local")
    hub("analyze", "logit-lens", *common, "--name", "remote", "--remote", "--ndif-host", server.url, "--timeout", "120")
    for table in ("logit_lens", "caption_words", "prompts"):
        assert pl.read_parquet(tmp_path / "remote" / f"{table}.parquet").equals(pl.read_parquet(tmp_path / "local" / f"{table}.parquet")), table


def test_audio_dry_run_sizes_the_request_when_the_scan_cannot_follow(tmp_path, folders, server):
    """``--remote --dry-run`` on Qwen2-Audio: its forward branches on tensor values, which the
    fake-tensor scan cannot follow; the command still prints the exact request size, says why
    the result is not estimated, exits 0, sends nothing and writes no run folder. The image
    model's dry run (the scan works) estimates its result."""
    jobs = len(server.jobs())
    pairs = write_pairs(tmp_path, "audio")
    out = tmp_path / "out"
    result = hub("analyze", "logit-lens", "--modality", "audio", "--prompts", pairs, "--model", folders["qwen2_audio"], "--out", out,
                 "--no-progress", "--remote", "--dry-run", "--ndif-host", server.url)
    assert "request of batch 0 (3 prompts" in result.output
    assert "result: not estimated (the fake-tensor scan of the qwen2_audio forward failed" in result.output
    (tmp_path / "img").mkdir()
    images = write_pairs(tmp_path / "img", "image")
    result = hub("analyze", "logit-lens", "--modality", "image", "--prompts", images, "--model", folders["llava"], "--out", out,
                 "--no-progress", "--remote", "--dry-run", "--ndif-host", server.url, "--top-k", "3")
    assert "result of batch 0 (expected, raw tensors)" in result.output and "word_probs" in result.output
    assert len(server.jobs()) == jobs and not out.exists()


def test_segmentation_media_lens_remote_equals_local(tmp_path, folders, server):
    """The paper's segmentation lens (A14; ``hub analyze media-lens``): the trace body runs on the
    server (plain torch), the per-category reductions here; the tables equal a local run's."""
    from test_media_protocols import hub as hub_media
    from test_media_protocols import write_segmentation

    _, pairs, _ = write_segmentation(tmp_path)
    common = ["analyze", "media-lens", "segmentation", pairs, "--model", folders["llava"], "--out", tmp_path, "--no-progress", "--no-plots", "--bootstrap", "20"]
    for name, extra in (("local", []), ("remote", ["--remote", "--ndif-host", server.url, "--timeout", "120"])):
        result = hub_media(*common, "--name", name, *extra)
        assert result.exit_code == 0, result.output
    for table in ("media_lens", "media_lens_summary", "prompts"):
        assert pl.read_parquet(tmp_path / "remote" / f"{table}.parquet").equals(pl.read_parquet(tmp_path / "local" / f"{table}.parquet")), table


@pytest.mark.parametrize("experiment", ["colour", "label-words"])
def test_colour_and_label_words_media_lens_remote_equal_local(tmp_path, folders, server, experiment):
    """The other media-lens experiments (A12 colour on the image model: the command writes its
    solid images; A15 label-words on the audio model: each clip's label vs a random disjoint
    label) through --remote give the local tables."""
    import numpy as np
    import soundfile

    from media_tiny import SAMPLING_RATE
    from test_media_protocols import hub as hub_media

    if experiment == "colour":
        inputs, folder = [], folders["llava"]
    else:
        rows = []
        for i, label in enumerate(["dog, cat", "car engine", "bird", "cat"]):
            t = np.arange(int(SAMPLING_RATE * (0.3 + 0.1 * i))) / SAMPLING_RATE
            soundfile.write(str(tmp_path / f"a{i}.wav"), 0.3 * np.sin(2 * np.pi * (220 + 90 * i) * t), SAMPLING_RATE)
            rows.append(f'a{i}.wav,"{label}"')
        (tmp_path / "audio.csv").write_text("media,caption\n" + "\n".join(rows) + "\n")
        inputs, folder = [tmp_path / "audio.csv"], folders["qwen2_audio"]
    common = ["analyze", "media-lens", experiment, *inputs, "--model", folder, "--out", tmp_path, "--no-progress", "--no-plots", "--bootstrap", "20"]
    for name, extra in (("local", []), ("remote", ["--remote", "--ndif-host", server.url, "--timeout", "120"])):
        result = hub_media(*common, "--name", name, *extra)
        assert result.exit_code == 0, result.output
    for table in ("media_lens", "media_lens_summary", "prompts"):
        assert pl.read_parquet(tmp_path / "remote" / f"{table}.parquet").equals(pl.read_parquet(tmp_path / "local" / f"{table}.parquet")), table
    assert json.loads((tmp_path / "remote" / "manifest.json").read_text())["remote"]["requests"]


@pytest.mark.parametrize("family", ["llava", "qwen2_audio"])
def test_media_patchscope_remote_equals_local(tmp_path, folders, server, family):
    """``logit-lens --modality image|audio --lens patchscope`` on the strict test server: the
    target-prompt copies (text rows, zero per-token rows, the media tensors once per medium) are
    built on the client, the patch runs in the server's trace; the tables equal a local run's.
    Fails if the patchscope's trace code needs hub on the server, or the copies differ."""
    modality = "audio" if family == "qwen2_audio" else "image"
    pairs = write_pairs(tmp_path, modality)
    common = [
        "--modality", modality, "--prompts", pairs, "--model", folders[family], "--out", tmp_path, "--no-progress", "--no-plots", "--top-k", "3",
        "--batch-size", "2", "--lens", "patchscope", "--patch-prompt", "cat cat dog dog the sat", "--patch-placeholder", "the",
    ]
    hub("analyze", "logit-lens", *common, "--name", "local")
    hub("analyze", "logit-lens", *common, "--name", "remote", "--remote", "--ndif-host", server.url, "--timeout", "120", "--transfer-dtype", "float32")
    for table in ("logit_lens", "caption_words", "prompts"):
        assert pl.read_parquet(tmp_path / "remote" / f"{table}.parquet").equals(pl.read_parquet(tmp_path / "local" / f"{table}.parquet")), table
    manifest = json.loads((tmp_path / "remote" / "manifest.json").read_text())
    assert manifest["options"]["lens"] == "patchscope" and manifest["lens"]["patch_placeholder_position"] == 5
    assert manifest["remote"]["requests"] and all(r["state"] == "collected" for r in manifest["remote"]["requests"])
