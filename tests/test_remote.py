"""Remote execution (``--remote``) against the project's NDIF-compatible test server.

The real nnsight client (its ``RemoteBackend``: websocket ``/subscribe``, ``POST /request``,
``/response/{id}`` polling, result download) talks to :mod:`hubclient.testing.server` on a free
127.0.0.1 port, in its strict mode (requests run in a process where hub cannot be imported,
under NDIF's import allow-list). Remote results are compared with a local run of the same
analysis on the same tiny model (bit for bit: same weights, same batches, same CPU kernels;
vector-valued results travel in float32 for that, ``remote_config``). Every test is bounded in
time (the client's ``timeout``, subprocess timeouts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from analyses.logit_lens import LensOptions, LogitLens
from hubclient import remote
from hubclient.errors import HubError
from hubclient.runner import RunConfig, run_analysis

ROOT = Path(__file__).resolve().parents[1]
HUB = str(Path(sys.executable).with_name("hub"))
KEY = "test-key-7f3a9c0e51"
PROMPTS = ["the cat sat on the mat", "paris", "a dog ran in the park and the cat sat", "one two three four"]


def lens() -> LogitLens:
    return LogitLens(LensOptions(positions="all", top_k=3, targets=["paris"]))


class ServerProcess:
    """``python -m hubclient.testing.server`` in its own process (as a user runs it): the
    client's and the server's unpickling of shipped code must not share one interpreter.

    ``strict`` (default): requests run in the server's execution process where hub cannot be
    imported, under NDIF's import allow-list (``--strict``); ``extra``: more server options
    (``--autocast-bf16``, ``--device-map …``)."""

    def __init__(self, models: list[str], key: str | None = KEY, timeout: float = 120, strict: bool = True, extra: tuple[str, ...] = ()):
        import time

        args = [sys.executable, "-m", "hubclient.testing.server", "--port", "0", "--strict" if strict else "--no-strict", *extra]
        for model in models:
            args += ["--model", model]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if key:
            args += ["--api-key-env", "NDIF_TEST_SERVER_KEY"]
            env["NDIF_TEST_SERVER_KEY"] = key
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        deadline = time.time() + timeout
        self.url = ""
        lines = []
        while not self.url:
            line = self.proc.stdout.readline()
            lines.append(line)
            if "NDIF test server on " in line:
                self.url = line.split("NDIF test server on ")[1].split()[0]
            elif not line and self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("test server did not start:\n" + "".join(lines))

    def set_faults(self, **faults) -> None:
        import httpx

        httpx.post(f"{self.url}/_faults", json=faults, timeout=10).raise_for_status()

    def jobs(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/_jobs", timeout=10).json()

    def sandbox(self) -> dict:
        """Per served model, what its strict execution process reported at start."""
        import httpx

        return httpx.get(f"{self.url}/_sandbox", timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def client_setup(monkeypatch) -> None:
    """The nnsight client configured as a user would be (key from NDIF_API_KEY), fast backoff."""
    import nnsight

    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", KEY)
    monkeypatch.setattr(nnsight.CONFIG.API, "HOST", nnsight.CONFIG.API.HOST)
    monkeypatch.setattr(remote.config, "BACKOFF", 0.05)
    monkeypatch.setattr(remote.config, "POLL_INTERVAL", 0.05)


@pytest.fixture(autouse=True)
def client(monkeypatch, server):
    """The nnsight client configured as a user would be (key from NDIF_API_KEY), fast backoff."""
    client_setup(monkeypatch)
    server.set_faults()
    yield
    server.set_faults()


@pytest.fixture(scope="module")
def local_run(tiny_dir, tmp_path_factory):
    """The same analysis run locally, for comparison."""
    out = tmp_path_factory.mktemp("local")
    return run_analysis(lens(), PROMPTS, RunConfig(model=str(tiny_dir("llama")), out=out, name="local", batch_size=2, progress=False))


def remote_config(tiny_dir, server, tmp_path, **kwargs) -> RunConfig:
    """A remote run's config; vector-valued results travel in float32 here (the tests compare
    them with local runs to 1e-5; the float16 default is tested with its own tolerance)."""
    base = dict(model=str(tiny_dir("llama")), out=tmp_path, name="remote", batch_size=2, progress=False,
                remote=True, ndif_host=server.url if server is not None else None, timeout=60, retries=3, transfer_dtype="float32")
    base.update(kwargs)
    return RunConfig(**base)


def assert_same_tables(run, local_run) -> None:
    for table in ("logit_lens", "targets", "prompts"):
        ours, theirs = run.table(table), local_run.table(table)
        assert ours.shape == theirs.shape
        assert ours.equals(theirs), table


def assert_key_absent(folder: Path, *texts: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    for text in texts:
        assert KEY not in text


# --------------------------------------------------------------------------- the remote path


LOCAL_SIMULATION = """
import sys, torch, nnsight
sys.path.insert(0, "tests")
from conftest import build_tiny
from hubclient import remote
from hubclient.models import wrap_model
from hubclient.runner import make_batches, tokenize
from analyses.logit_lens import LensOptions, LogitLens
model = wrap_model(*build_tiny("llama"), model_id="tiny")
prompts = %r
analysis = LogitLens(LensOptions(positions="all", top_k=3, targets=["paris"]))
tokens = tokenize(model, prompts)
analysis.prepare(model, prompts, tokens)
assert remote.register_code(analysis) == ["hubclient", "analyses"]
batch = make_batches(tokens, [analysis.positions(len(t), i) for i, t in enumerate(tokens)], 4, 0)[0]
results = []
for mode in (False, "local"):
    with model.lm.trace(batch.inputs, remote=mode) as tracer:
        saved = nnsight.save(analysis.trace(model, batch))
        tracer.stop()
    results.append(saved)
for key in results[0]:
    torch.testing.assert_close(results[0][key], results[1][key], rtol=0, atol=0)
print("same", sorted(results[0]))
"""


def test_local_simulation_ships_project_code():
    """nnsight's ``remote="local"`` serialises the trace as for NDIF and runs it with hubclient
    and analyses hidden: registering them (``nnsight.register``) is what makes it work. (In a
    subprocess: unpickling shipped classes in this process would rebind the live ones.)"""
    done = subprocess.run([sys.executable, "-c", LOCAL_SIMULATION % (PROMPTS,)], capture_output=True, text=True, timeout=180, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "same ['entropy', 'target_logits'" in done.stdout


def test_remote_equals_local_and_records_bytes(tiny_dir, server, tmp_path, local_run):
    run = run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path))
    assert_same_tables(run, local_run)
    manifest = run.manifest
    assert manifest["status"] == "complete"
    block = manifest["remote"]
    assert block["host"] == server.url and block["mode"] == "blocking" and block["api_key_set"]
    assert json.loads(block["model_key"].split(":", 1)[1])["repo_id"] == str(tiny_dir("llama"))
    assert len(block["requests"]) == 2
    for request in block["requests"]:
        assert request["state"] == "collected" and request["job_id"]
        assert 0 < request["bytes_sent"] < 200_000 and 0 < request["bytes_received"] < 20_000
    assert block["bytes_received"] == sum(r["bytes_received"] for r in block["requests"])
    # Job states reached the server in order, and the result came back inline.
    history = list(server.jobs().values())[-1]["history"]
    assert history[:3] == ["RECEIVED", "QUEUED", "RUNNING"] and history[-1] == "COMPLETED"
    assert_key_absent(run.path)


def test_model_built_without_weights(tiny_dir):
    model = remote.load_remote_model(str(tiny_dir("llama")))
    assert all(p.device.type == "meta" for p in model.torch_model.parameters())
    assert model.device == "cpu" and model.n_layers == 3


# --------------------------------------------------------------------------- detached, across processes


def _hub(*args: str, env: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "NDIF_API_KEY": KEY, **(env or {})}
    return subprocess.run([HUB, *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT)


def test_detach_status_collect_across_processes(tiny_dir, server, tmp_path, local_run):
    server.set_faults(delay=0.5)
    model = str(tiny_dir("llama"))
    args = ["analyze", "logit-lens", "--model", model, "--positions", "all", "--top-k", "3", "--target", "paris",
            "--batch-size", "2", "--out", str(tmp_path), "--name", "det", "--no-progress"]
    for p in PROMPTS:
        args += ["-p", p]
    submit = _hub(*args, "--remote", "--detach", env={"NDIF_HOST": server.url})
    assert submit.returncode == 0, submit.stderr
    run_dir = tmp_path / "det"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "submitted" and manifest["remote"]["mode"] == "detached"
    records = sorted((run_dir / "jobs").glob("batch-*.json"))
    assert len(records) == 2 and all(json.loads(r.read_text())["job_id"] for r in records)
    assert not (run_dir / "logit_lens.parquet").exists()

    status = _hub("jobs", "status", str(run_dir))
    assert status.returncode == 0, status.stderr
    assert any(s in status.stdout for s in ("QUEUED", "RUNNING", "COMPLETED"))

    import time

    deadline = time.time() + 60
    while not all(j["history"][-1] == "COMPLETED" for j in server.jobs().values() if not j["blocking"]):
        assert time.time() < deadline
        time.sleep(0.2)
    collect = _hub("jobs", "collect", str(run_dir), "--no-progress")
    assert collect.returncode == 0, collect.stdout + collect.stderr
    again = _hub("jobs", "collect", str(run_dir), "--no-progress")
    assert again.returncode == 0, again.stderr
    final = json.loads((run_dir / "manifest.json").read_text())
    assert final["status"] == "complete"
    for table in ("logit_lens", "targets", "prompts"):
        assert pl.read_parquet(run_dir / f"{table}.parquet").equals(local_run.table(table)), table
    assert_key_absent(run_dir, submit.stdout, submit.stderr, status.stdout, collect.stdout, collect.stderr)


# --------------------------------------------------------------------------- faults


def test_wrong_or_missing_key(tiny_dir, server, tmp_path, monkeypatch):
    import nnsight

    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", "not-the-key-123")
    with pytest.raises(HubError, match="refused the API key") as err:
        run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="wrong"))
    assert "not-the-key-123" not in str(err.value) and "NDIF_API_KEY" in str(err.value)
    # nothing ran: no run folder is kept and the message does not point at one
    assert not (tmp_path / "wrong").exists() and "--resume" not in str(err.value)
    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", None)
    with pytest.raises(HubError, match="refused the API key"):
        run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="wrong"))  # the same --name again


def test_model_not_served_names_the_served_ones(tiny_dir, server, tmp_path):
    with pytest.raises(HubError, match="not served") as err:
        run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, model=str(tiny_dir("gpt2"))))
    assert str(tiny_dir("llama")) in str(err.value)


def test_server_errors_are_retried_then_reported(tiny_dir, server, tmp_path, local_run):
    server.set_faults(http_500=2)
    run = run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="retried"))
    assert_same_tables(run, local_run)
    assert run.manifest["remote"]["requests"][0]["attempts"] == 3
    server.set_faults(http_500=10)
    with pytest.raises(HubError, match="answered 500"):
        run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="gave-up", retries=1))


def test_job_error_keeps_finished_chunks_and_resumes(tiny_dir, server, tmp_path, local_run):
    server.set_faults(error=1, after=1)
    config = remote_config(tiny_dir, server, tmp_path, name="err")
    with pytest.raises(HubError, match="failed on the server: RuntimeError: injected failure") as err:
        run_analysis(lens(), PROMPTS, config)
    assert "batch 1" in str(err.value) and "--resume" in str(err.value)
    run_dir = tmp_path / "err"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"
    assert (run_dir / ".parts" / "logit_lens" / "part-000000.parquet").is_file()
    first_job = json.loads((run_dir / "jobs" / "batch-000000.json").read_text())["job_id"]
    server.set_faults()
    n_jobs = len(server.jobs())
    run = run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name=None, resume=run_dir))
    assert_same_tables(run, local_run)
    assert len(server.jobs()) == n_jobs + 1  # only the failed chunk was sent again
    assert json.loads((run_dir / "jobs" / "batch-000000.json").read_text())["job_id"] == first_job


def test_dropped_websocket_is_followed_by_polling(tiny_dir, server, tmp_path, local_run):
    server.set_faults(drop=2)
    run = run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="drop"))
    assert_same_tables(run, local_run)
    assert all(r["attempts"] == 1 for r in run.manifest["remote"]["requests"])  # not resubmitted


def test_timeout_then_resume_collects_the_same_job(tiny_dir, server, tmp_path, local_run):
    server.set_faults(delay=2.0)
    with pytest.raises(HubError, match="no result after 1 s"):
        run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="slow", timeout=1))
    run_dir = tmp_path / "slow"
    record = json.loads((run_dir / "jobs" / "batch-000000.json").read_text())
    assert record["state"] == "timeout" and record["job_id"]
    n_jobs = len(server.jobs())
    server.set_faults()
    run = run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name=None, resume=run_dir))
    assert_same_tables(run, local_run)
    assert len(server.jobs()) == n_jobs + 1  # batch 0 was followed, only batch 1 was sent


def test_vanished_result_is_reported_and_resent_on_resume(tiny_dir, server, tmp_path, local_run):
    server.set_faults(vanish=1, after=1)
    with pytest.raises(HubError, match="no longer has the result"):
        run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="vanish"))
    run_dir = tmp_path / "vanish"
    assert (run_dir / ".parts" / "logit_lens" / "part-000000.parquet").is_file()
    server.set_faults()
    run = run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name=None, resume=run_dir))
    assert_same_tables(run, local_run)


def test_version_mismatch_is_explained(tiny_dir, server, tmp_path):
    server.set_faults(nnsight_version="0.0.1")
    with pytest.warns(UserWarning, match="differs from the server's 0.0.1"):
        with pytest.raises(HubError, match="version mismatch.*hub remote env"):
            run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="version"))


def test_interrupt_keeps_finished_chunks(tiny_dir, server, tmp_path, local_run, monkeypatch):
    calls = {"n": 0}
    from hubclient.exec.remote import executor

    real = executor.trace_batch

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(executor, "trace_batch", interrupted)
    with pytest.raises(HubError, match="interrupted"):
        run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="ctrlc"))
    monkeypatch.setattr(executor, "trace_batch", real)
    run_dir = tmp_path / "ctrlc"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"
    run = run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name=None, resume=run_dir))
    assert_same_tables(run, local_run)


def test_unreachable_host(tiny_dir, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HubError, match="cannot reach NDIF"):
        run_analysis(lens(), PROMPTS, RunConfig(model=str(tiny_dir("llama")), out=tmp_path, progress=False, remote=True, ndif_host=f"http://127.0.0.1:{port}"))


def test_detach_needs_remote(tiny_dir, tmp_path):
    with pytest.raises(HubError, match="--detach needs --remote"):
        run_analysis(lens(), PROMPTS, RunConfig(model=str(tiny_dir("llama")), out=tmp_path, progress=False, detach=True))


# --------------------------------------------------------------------------- hub remote …


def test_remote_status_and_env_commands(server, tiny_dir):
    from typer.testing import CliRunner

    from hubclient.cli import app

    runner = CliRunner()
    status = runner.invoke(app, ["remote", "status", "--ndif-host", server.url])
    assert status.exit_code == 0, status.output
    assert str(tiny_dir("llama")) in status.output and "RUNNING" in status.output
    env = runner.invoke(app, ["remote", "env", "--ndif-host", server.url])
    assert env.exit_code == 0, env.output
    assert "nnsight" in env.output and "torch" in env.output


# --------------------------------------------------------------------------- Gemma


def _similarity_cli(model, out, name, files, *extra):
    from typer.testing import CliRunner

    from hubclient.cli import app

    args = ["analyze", "similarity", *map(str, files), "--model", str(model), "--out", str(out), "--name", name,
            "--no-progress", "--no-plots", "--batch-size", "2", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out / name


def _parallel_files(folder, pairs):
    en, fr = folder / "en.txt", folder / "fr.txt"
    en.write_text("\n".join(a for a, _ in pairs) + "\n", encoding="utf-8")
    fr.write_text("\n".join(b for _, b in pairs) + "\n", encoding="utf-8")
    return [en, fr]


def test_similarity_remote_through_the_cli_equals_local(tiny_dir, server, tmp_path):
    """``hub analyze similarity --remote``: same vectors and statistics as the local run."""
    files = _parallel_files(tmp_path, [("the cat sat on the mat", "the cat sat"), ("a dog ran in the park", "the dog ran"), ("one two three", "four five six")])
    local = _similarity_cli(tiny_dir("llama"), tmp_path, "local", files)
    remote_run = _similarity_cli(tiny_dir("llama"), tmp_path, "remote", files, "--remote", "--ndif-host", server.url, "--transfer-dtype", "float32")
    for table in ("similarity", "vectors", "prompts"):
        assert pl.read_parquet(remote_run / f"{table}.parquet").equals(pl.read_parquet(local / f"{table}.parquet")), table
    block = json.loads((remote_run / "manifest.json").read_text())["remote"]
    assert len(block["requests"]) == 3 and all(r["state"] == "collected" for r in block["requests"])
    assert_key_absent(remote_run)


@pytest.mark.gemma
def test_gemma_logit_lens_remote_equals_local_and_moves_little(tmp_path):
    """``hub analyze logit-lens --remote --top-k 10`` on Gemma-3-270m: the same Parquet as a
    local run, and a few KB per prompt per layer at most (never vocab-wide tensors); and
    ``hub analyze similarity --remote`` gives the same vectors and statistics as locally."""
    texts = ["The capital of France is", "Der Hund läuft im Park"]
    options = LensOptions(top_k=10)
    srv = ServerProcess(["gemma-3-270m"], key=None, timeout=300)
    try:
        run = run_analysis(LogitLens(options), texts, RunConfig(out=tmp_path, name="remote", progress=False, remote=True, ndif_host=srv.url, timeout=300))
        files = _parallel_files(tmp_path, [("The cat sleeps on the mat.", "Le chat dort sur le tapis."), ("I like green tea.", "J'aime le thé vert.")])
        remote_sim = _similarity_cli("gemma-3-270m", tmp_path, "similarity-remote", files, "--remote", "--ndif-host", srv.url, "--transfer-dtype", "float32")
    finally:
        srv.stop()
    local_sim = _similarity_cli("gemma-3-270m", tmp_path, "similarity-local", files, "--device", "cpu", "--dtype", "float32")
    for table in ("similarity", "vectors"):
        assert pl.read_parquet(remote_sim / f"{table}.parquet").equals(pl.read_parquet(local_sim / f"{table}.parquet")), table
    local = run_analysis(LogitLens(options), texts, RunConfig(out=tmp_path, name="local", progress=False, device="cpu", dtype="float32"))
    assert run.table("logit_lens").equals(local.table("logit_lens"))
    block = run.manifest["remote"]
    per_prompt_layer = len(texts) * (run.manifest["model"]["n_layers"] + 1)
    assert block["bytes_received"] / per_prompt_layer < 2048
    assert block["bytes_sent"] / per_prompt_layer < 4096


def test_bfloat16_lens_remote_equals_local_and_ships_no_weights(tiny_dir, server, tmp_path):
    """--lens-dtype bfloat16 remotely: W_U is converted on the server (the client's cached bf16
    copy is local-only and never sent), with the same numbers as the local run."""
    def analysis():
        return LogitLens(LensOptions(positions="all", top_k=3, lens_dtype="bfloat16"))

    local = run_analysis(analysis(), PROMPTS, RunConfig(model=str(tiny_dir("llama")), out=tmp_path / "local", name="local", batch_size=2, progress=False))
    run = run_analysis(analysis(), PROMPTS, remote_config(tiny_dir, server, tmp_path / "remote"))
    assert run.table("logit_lens").equals(local.table("logit_lens"))
    for request in run.manifest["remote"]["requests"]:
        assert request["bytes_sent"] < 200_000


# --------------------------------------------------------------------------- issue "Nothing silently wrong"


def _interrupt_when_running(monkeypatch, batch_index: int):
    """Ctrl-C while batch ``batch_index``'s job is RUNNING on the server (after submission)."""
    from hubclient.exec.remote import executor

    real = executor.make_backend
    seen = {"n": 0}

    def make(key, **kwargs):
        on_status = kwargs.get("on_status")
        if kwargs.get("blocking", True) and on_status is not None:
            seen["n"] += 1
            if seen["n"] == batch_index + 1:
                def interrupting(state, description):
                    if state == "RUNNING":
                        raise KeyboardInterrupt
                    on_status(state, description)
                kwargs["on_status"] = interrupting
        return real(key, **kwargs)

    monkeypatch.setattr(executor, "make_backend", make)


def test_ctrl_c_keeps_the_running_jobs_id_and_resume_follows_it(tiny_dir, server, tmp_path, local_run, monkeypatch):
    """The job already on the server is followed on --resume, not sent a second time."""
    server.set_faults(delay=0.5)
    _interrupt_when_running(monkeypatch, 1)
    with pytest.raises(HubError, match="interrupted"):
        run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="cc"))
    record = json.loads((tmp_path / "cc" / "jobs" / "batch-000001.json").read_text())
    assert record["state"] == "submitted" and record["job_id"] and record["blocking"] is True
    monkeypatch.undo()
    client_setup(monkeypatch)
    n_jobs = len(server.jobs())
    run = run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name=None, resume=tmp_path / "cc"))
    assert_same_tables(run, local_run)
    assert len(server.jobs()) == n_jobs  # followed, not resent


def test_lost_blocking_job_is_sent_again_with_ndif_persistence(tiny_dir, server, tmp_path, local_run, monkeypatch):
    """On NDIF a blocking job cannot be followed (/response answers 500): after Ctrl-C the
    resumed run sends that batch once more instead of polling a dead id forever."""
    server.set_faults(delay=0.5, ndif_jobs=True)
    _interrupt_when_running(monkeypatch, 0)
    with pytest.raises(HubError, match="interrupted"):
        run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="lost", retries=1))
    monkeypatch.undo()
    client_setup(monkeypatch)
    server.set_faults(ndif_jobs=True)
    n_jobs = len(server.jobs())
    run = run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name=None, resume=tmp_path / "lost", retries=1))
    assert_same_tables(run, local_run)
    assert len(server.jobs()) == n_jobs + 2  # batch 0 again, then batch 1


def test_timeout_holds_from_the_first_byte(tiny_dir, tmp_path):
    """A host that accepts connections and never answers: --timeout 3 ends the run in seconds
    (not after a fixed 30 s read timeout), and no run folder is left."""
    import socket
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    host = f"http://127.0.0.1:{listener.getsockname()[1]}"
    start = time.time()
    try:
        with pytest.raises(HubError):
            run_analysis(lens(), PROMPTS, remote_config(tiny_dir, None, tmp_path, ndif_host=host, timeout=3, retries=1))
    finally:
        stop.set()
        for conn in held:
            conn.close()
        listener.close()
    assert time.time() - start < 15
    assert not (tmp_path / "remote").exists()


def test_python_version_mismatch_is_named_before_sending(tiny_dir, server, tmp_path):
    """NDIF refuses requests from another Python (HTTP 400): preflight says which Python to use,
    and the request path explains a 400 the same way."""
    server.set_faults(python_version="3.1")
    with pytest.raises(HubError, match=r"runs Python 3\.1 and refuses requests from Python 3\.\d+; run hub --remote from a Python 3\.1 environment"):
        run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="py"))
    assert not (tmp_path / "py").exists()
    from hubclient.exec.remote.backend import explain
    from nnsight.intervention.backends.remote import RemoteError

    err = RemoteError("Client python version 3.11 does not match server version: 3.12")
    err.status_code = 400
    assert "matching environment" in str(explain(err, "batch 0", "http://x"))


def test_expired_result_url_is_lost_not_a_key_problem(tiny_dir, server, tmp_path, local_run):
    """A presigned result URL past its lifetime answers 403: collect calls the chunk lost (not
    "refused the API key"), prints the exact command that sends it again, and that command
    finishes the run with the local tables."""
    import time

    model = str(tiny_dir("llama"))
    server.set_faults(result_ttl=0.2)
    args = ["analyze", "logit-lens", "--model", model, "--positions", "all", "--top-k", "3", "--target", "paris",
            "--batch-size", "2", "--out", str(tmp_path), "--name", "exp", "--no-progress", "--remote", "--detach", "--ndif-host", server.url]
    for p in PROMPTS:
        args += ["-p", p]
    assert _hub(*args).returncode == 0
    deadline = time.time() + 60
    while not all(j["history"][-1] == "COMPLETED" for j in server.jobs().values() if not j["blocking"]):
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(0.5)
    collect = _hub("jobs", "collect", str(tmp_path / "exp"), "--no-progress")
    assert collect.returncode == 1
    assert "expired (403)" in collect.stderr and "refused the API key" not in collect.stderr
    resend = collect.stderr.split("sent again by:\n")[1].strip().splitlines()[0]
    assert resend.startswith("hub analyze logit-lens") and resend.endswith(f"--resume {tmp_path / 'exp'}") and "--name" not in resend
    server.set_faults()
    again = subprocess.run(resend.replace("hub ", HUB + " ", 1), shell=True, capture_output=True, text=True, timeout=180,
                           env={**os.environ, "HF_HUB_OFFLINE": "1", "NDIF_API_KEY": KEY}, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    final = _hub("jobs", "collect", str(tmp_path / "exp"), "--no-progress")
    assert final.returncode == 0, final.stderr
    for table in ("logit_lens", "targets"):
        assert pl.read_parquet(tmp_path / "exp" / f"{table}.parquet").equals(local_run.table(table)), table


def test_similarity_detach_exits_0_and_collect_keeps_the_submitted_options(tiny_dir, server, tmp_path):
    """`similarity --remote --detach` succeeds (exit 0, says how to collect; it used to read
    tables that do not exist yet and exit 2), and `hub jobs collect` honours --no-save-vectors
    and --no-plots given at submission (the manifest agrees with the files)."""
    import time

    files = _parallel_files(tmp_path, [("the cat sat on the mat", "the cat sat"), ("a dog ran in the park", "the dog ran"), ("one two three", "four five six")])
    run_dir = _similarity_cli(tiny_dir("llama"), tmp_path, "det", files, "--remote", "--detach", "--ndif-host", server.url, "--no-save-vectors")
    deadline = time.time() + 60
    while not all(j["history"][-1] == "COMPLETED" for j in server.jobs().values() if not j["blocking"]):
        assert time.time() < deadline
        time.sleep(0.2)
    collect = _hub("jobs", "collect", str(run_dir), "--no-progress")
    assert collect.returncode == 0, collect.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["plots"] == [] and not (run_dir / "plots").exists()
    assert not (run_dir / "vectors.parquet").exists() and "vectors" in manifest["dropped_tables"] and "vectors" not in manifest["rows"]
    assert (run_dir / "similarity.parquet").is_file()


def test_dropped_stream_of_a_blocking_job_on_ndif_is_lost_then_resent_on_resume(tiny_dir, server, tmp_path, local_run):
    """On NDIF a blocking job whose websocket drops cannot be followed (``/response/{id}``
    answers 500): hub says so (not "try again later" after pointless retries), never resends it
    by itself, and ``--resume`` sends only that chunk again."""
    server.set_faults(drop=1, ndif_jobs=True)
    n_jobs = len(server.jobs())
    with pytest.raises(HubError, match=r"batch 0 .*the server no longer has the result \(its websocket dropped while the job ran, "
                                       r"and the server keeps no record of blocking jobs \(/response answered 500\); use --detach for long jobs\)"):
        run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name="dropped", retries=1))
    assert len(server.jobs()) == n_jobs + 1  # sent once, not again
    records = [json.loads(p.read_text()) for p in (tmp_path / "dropped" / "jobs").glob("batch-*.json")]
    assert [r["state"] for r in records] == ["lost"]
    server.set_faults(ndif_jobs=True)
    run = run_analysis(lens(), PROMPTS, remote_config(tiny_dir, server, tmp_path, name=None, resume=tmp_path / "dropped", retries=1))
    assert_same_tables(run, local_run)
    assert len(server.jobs()) == n_jobs + 3  # batch 0 again, then batch 1
