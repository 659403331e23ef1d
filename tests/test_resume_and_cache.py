"""Interrupted runs resume to the same result; converted weights are cached safely."""

from __future__ import annotations

import json
import threading
import time

import pytest

from analyses.logit_lens import LensOptions, LogitLens
from hubclient import models
from hubclient.errors import HubError
from hubclient.runner import RunConfig, run_analysis
from hubclient.store import RunDir

PROMPTS = ["the cat sat on the mat", "paris", "one two three four", "a dog ran"]


class CrashAfter(LogitLens):
    """The logit lens, failing on its ``n``-th batch (a crash half-way through a run)."""

    def __init__(self, options, n):
        super().__init__(options)
        self.calls, self.n = 0, n

    def trace(self, model, batch):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("simulated crash")
        return super().trace(model, batch)


def test_resume_finishes_an_interrupted_run_with_identical_tables(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    options = LensOptions(positions="all", top_k=3)
    config = RunConfig(out=tmp_path, name="crashed", batch_size=1, progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_analysis(CrashAfter(options, n=3), PROMPTS, config, model=model)
    run = RunDir.open(tmp_path / "crashed")
    assert run.manifest["status"] == "failed"
    assert run.done_batches(["logit_lens"]) == {0, 1}
    assert not (run.path / "logit_lens.parquet").exists()  # no half-written result

    counting = CrashAfter(options, n=-1)
    resumed = run_analysis(counting, PROMPTS, RunConfig(out=tmp_path, resume=run.path, batch_size=1, progress=False), model=model)
    assert counting.calls == 2  # only the unfinished batches ran
    fresh = run_analysis(LogitLens(options), PROMPTS, RunConfig(out=tmp_path, name="fresh", batch_size=1, progress=False), model=model)
    assert resumed.manifest["status"] == "complete"
    assert resumed.table("logit_lens").equals(fresh.table("logit_lens"))


def test_resume_refuses_different_inputs(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    config = RunConfig(out=tmp_path, name="r", batch_size=1, progress=False)
    with pytest.raises(RuntimeError):
        run_analysis(CrashAfter(LensOptions(), n=2), PROMPTS, config, model=model)
    with pytest.raises(HubError, match="different prompts"):
        run_analysis(LogitLens(LensOptions()), PROMPTS[:2], RunConfig(out=tmp_path, resume=tmp_path / "r", batch_size=1), model=model)
    with pytest.raises(HubError, match="analysis options"):
        run_analysis(LogitLens(LensOptions(top_k=2)), PROMPTS, RunConfig(out=tmp_path, resume=tmp_path / "r", batch_size=1), model=model)


def _fake_dequantize(calls):
    def dequantize(gguf, out):
        calls.append(gguf)
        time.sleep(0.3)  # long enough for a second process to arrive while converting
        out.mkdir()
        (out / "config.json").write_text(json.dumps({"from": gguf.name}))
        (out / "model.safetensors").write_bytes(b"weights")

    return dequantize


def test_gguf_conversion_runs_once_under_concurrency_and_is_verified(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("HUB_CACHE_DIR", str(tmp_path / "cache"))
    calls: list = []
    monkeypatch.setattr(models.loading, "_dequantize_gguf", _fake_dequantize(calls))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake bytes")
    sha = hashlib.sha256(gguf.read_bytes()).hexdigest()

    results = []
    threads = [threading.Thread(target=lambda: results.append(models.convert_gguf(gguf, sha))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1
    folder = results[0]
    assert json.loads((folder / models.CHECKSUMS).read_text())["gguf_sha256"] == sha
    assert not list(folder.parent.glob(".convert-*"))  # temporary folders are gone

    (folder / "model.safetensors").write_bytes(b"corrupted")  # a damaged cache is rebuilt
    assert models.convert_gguf(gguf, sha) == folder
    assert len(calls) == 2 and (folder / "model.safetensors").read_bytes() == b"weights"

    with pytest.raises(HubError, match="corrupt"):
        models.convert_gguf(gguf, "0" * 64)


def test_atomic_write_gives_usual_permissions_and_leaves_no_temporary(tmp_path):
    import os

    from hubclient.store import atomic_write

    target = tmp_path / "x.txt"
    atomic_write(target, lambda tmp: tmp.write_text("done"))
    mask = os.umask(0)
    os.umask(mask)
    assert target.read_text() == "done"
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(ZeroDivisionError):
        atomic_write(target, lambda tmp: (tmp.write_text("half"), 1 / 0))
    assert target.read_text() == "done"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]
