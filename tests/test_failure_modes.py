"""Runs that fail cleanly: output folders, damaged parts, resume with other settings, run
states, a host that is not NDIF (issue "Nothing silently wrong").

Each test names the wrong behaviour it catches: a traceback instead of one line, a run folder
left behind after an error, a resumed table mixing two set-ups, a crashed run shown as running.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analyses.logit_lens import LensOptions, LogitLens
from hubclient.cli import app
from hubclient.errors import HubError
from hubclient.run.folder import RunDir, check_output, run_state
from hubclient.runner import RunConfig, run_analysis

sys.path.insert(0, str(Path(__file__).parent))
from test_resume_and_cache import CrashAfter  # noqa: E402  (the logit lens failing on its n-th batch)

PROMPTS = ["the cat sat on the mat", "paris", "one two three four", "a dog ran"]
runner = CliRunner()


def lens_cli(model: str, out: Path, *extra: str):
    return runner.invoke(app, ["analyze", "logit-lens", "--model", model, "-p", "the cat sat", "--out", str(out), "--no-progress", "--no-plots", *extra])


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "", " "])
def test_name_must_be_one_plain_folder_name(tmp_path, tiny_dir, name):
    result = lens_cli(str(tiny_dir("llama")), tmp_path / "out", "--name", name)
    assert result.exit_code == 2, result.output
    assert "--name" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out").exists()


def test_out_that_is_a_file_or_read_only_or_inside_a_run(tmp_path, tiny_dir):
    model = str(tiny_dir("llama"))
    afile = tmp_path / "file"
    afile.write_text("x")
    result = lens_cli(model, afile)
    assert result.exit_code == 2 and "is a file" in result.output
    run = lens_cli(model, tmp_path / "res", "--name", "r1")
    assert run.exit_code == 0, run.output
    nested = lens_cli(model, tmp_path / "res" / "r1")
    assert nested.exit_code == 2 and "inside the run folder" in nested.output
    assert [p.name for p in (tmp_path / "res" / "r1").iterdir() if p.is_dir()] == []
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = lens_cli(model, locked)
        assert result.exit_code == 2 and "not writable" in result.output


def test_output_errors_come_before_the_model_loads(tmp_path):
    """An existing --name is refused before the (slow) model load: the model here does not
    even exist, yet the message is about the run folder."""
    (tmp_path / "taken").mkdir()
    result = runner.invoke(app, ["analyze", "logit-lens", "--model", str(tmp_path / "no-such-model"), "-p", "x", "--out", str(tmp_path), "--name", "taken"])
    assert result.exit_code == 2 and "already exists" in result.output
    with pytest.raises(HubError, match="already exists"):
        check_output(tmp_path, "taken")


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_part_is_recomputed_on_resume(tmp_path, tiny_hub_model, damage):
    """A zero-byte or truncated part (a crash mid-write, a full disk) is detected and its batch
    runs again: the resumed tables equal an uninterrupted run's, the manifest ends complete."""
    model = tiny_hub_model("llama")
    options = LensOptions(positions="all", top_k=3)
    with pytest.raises(RuntimeError):
        run_analysis(CrashAfter(options, n=3), PROMPTS, RunConfig(out=tmp_path, name="c", batch_size=1, progress=False), model=model)
    part = RunDir(tmp_path / "c").part_path("logit_lens", 1)
    data = part.read_bytes()
    part.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    counting = CrashAfter(options, n=-1)
    with pytest.warns(UserWarning, match="damaged"):
        resumed = run_analysis(counting, PROMPTS, RunConfig(out=tmp_path, resume=tmp_path / "c", batch_size=1, progress=False), model=model)
    assert counting.calls == 3  # the damaged batch and the two never run
    fresh = run_analysis(LogitLens(options), PROMPTS, RunConfig(out=tmp_path, name="f", batch_size=1, progress=False), model=model)
    assert resumed.manifest["status"] == "complete"
    assert resumed.table("logit_lens").equals(fresh.table("logit_lens"))


def test_resume_with_another_dtype_is_refused(tmp_path, tiny_dir):
    """Resuming a float32 run in bfloat16 would mix both in one table under a float32 manifest."""
    model = str(tiny_dir("llama"))
    options = LensOptions(top_k=3)
    config = RunConfig(model=model, out=tmp_path, name="d", batch_size=1, progress=False, dtype="float32")
    with pytest.raises(RuntimeError):
        run_analysis(CrashAfter(options, n=2), PROMPTS, config)
    with pytest.raises(HubError, match="dtype 'float32'.*'bfloat16'.*--dtype"):
        run_analysis(LogitLens(options), PROMPTS, RunConfig(model=model, out=tmp_path, resume=tmp_path / "d", batch_size=1, progress=False, dtype="bfloat16"))


def test_killed_run_shows_as_interrupted(tmp_path, tiny_dir):
    """A run whose process was SIGKILLed never writes "interrupted" itself; `hub runs` tells
    it from a live run by its recorded pid."""
    script = (
        "import os, signal, sys\n"
        "from analyses.logit_lens import LensOptions, LogitLens\n"
        "from hubclient.runner import RunConfig, run_analysis\n"
        "class Kill(LogitLens):\n"
        "    def trace(self, model, batch):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        f"run_analysis(Kill(LensOptions()), ['a b'], RunConfig(model={str(tiny_dir('llama'))!r}, out={str(tmp_path)!r}, name='k', progress=False))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    manifest = json.loads((tmp_path / "k" / "manifest.json").read_text())
    assert manifest["status"] == "running" and run_state(manifest) == "interrupted"
    assert run_state({**manifest, "process": {"pid": os.getpid(), "host": manifest["process"]["host"]}}) == "running"
    listing = runner.invoke(app, ["runs", "--out", str(tmp_path)])
    assert "interrupted" in listing.output and "running" not in listing.output
    from hubclient.run.lifecycle import reopen_run

    reopened = reopen_run(RunDir(tmp_path / "k")).manifest  # --resume takes the run over
    assert reopened["process"]["pid"] == os.getpid() and run_state(reopened) == "running"


class _Html(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = b"<html><body>not found</body></html>"
        self.send_response(404)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_web_server_that_is_not_ndif_is_named_so_and_leaves_no_run(tmp_path, tiny_dir):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = lens_cli(str(tiny_dir("llama")), tmp_path, "--name", "r", "--remote", "--ndif-host", host)
    finally:
        server.shutdown()
    assert result.exit_code == 2, result.output
    assert f"{host} is not an NDIF server (HTTP 404 text/html from /status)" in result.output
    assert not (tmp_path / "r").exists()  # nothing ran: the same --name works next time


def test_model_folder_without_weights_is_one_line(tmp_path, tiny_dir):
    import shutil

    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(tiny_dir("llama") / "config.json", folder / "config.json")
    result = lens_cli(str(folder), tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "has config.json but no weights" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [(b"", "not a GGUF file"), (b"PK\x03\x04zipzipzip", "not a GGUF file"),
                                              (b"GGUF\x03\x00", "truncated"), (b"GGUF\x03\x00\x00\x00" + b"\x00" * 40, "truncated or not a GGUF")])
def test_bad_gguf_is_named_and_leaves_no_lock(tmp_path, monkeypatch, content, message):
    monkeypatch.setenv("HUB_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(content)
    result = lens_cli(str(gguf), tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in result.output and "unpack_from" not in result.output
    assert not list((tmp_path / "cache").glob("*.lock")) if (tmp_path / "cache").exists() else True


def test_unreachable_hub_fails_fast(tmp_path, monkeypatch):
    """A repo id that is not cached, with the Hub unreachable (no network here; an endpoint
    that refuses connections in any case): one line within seconds, naming HF_HUB_OFFLINE."""
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    start = time.time()
    result = lens_cli("hub-tests/no-such-model-4c1f", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "HF_HUB_OFFLINE=1" in result.output and time.time() - start < 15


def test_resume_alone_replays_the_recorded_command(tmp_path, tiny_dir):
    """`hub analyze logit-lens --resume RUN_DIR` with nothing else continues the run with the
    command line its manifest records (it used to fail: no prompts); the tables equal an
    uninterrupted run's."""
    model = str(tiny_dir("llama"))
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    args = ["hub", "analyze", "logit-lens", "--model", model, "--prompts", str(prompts), "--positions", "all", "--top-k", "3",
            "--batch-size", "1", "--out", str(tmp_path), "--name", "r", "--no-progress", "--no-plots"]
    script = (
        "import sys\n"
        "from analyses.logit_lens import LogitLens\n"
        "calls = {'n': 0}\n"
        "real = LogitLens.trace\n"
        "def trace(self, model, batch):\n"
        "    calls['n'] += 1\n"
        "    if calls['n'] == 3:\n"
        "        raise RuntimeError('simulated crash')\n"
        "    return real(self, model, batch)\n"
        "LogitLens.trace = trace\n"
        f"sys.argv = {args!r}\n"
        "from hubclient.cli import main\n"
        "main()\n"
    )
    crashed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr
    resumed = runner.invoke(app, ["analyze", "logit-lens", "--resume", str(tmp_path / "r"), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["status"] == "complete"
    fresh = runner.invoke(app, [*args[1:-6], "--out", str(tmp_path), "--name", "f", "--no-progress", "--no-plots"])
    assert fresh.exit_code == 0, fresh.output
    import polars as pl

    assert pl.read_parquet(tmp_path / "r" / "logit_lens.parquet").equals(pl.read_parquet(tmp_path / "f" / "logit_lens.parquet"))
    started_from_python = runner.invoke(app, ["analyze", "logit-lens", "--resume", str(tmp_path / "f")])
    assert started_from_python.exit_code == 2  # complete: nothing to resume (one line)
