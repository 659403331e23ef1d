"""``hub intervene patch|steer|arithmetic`` on NDIF: ``--remote`` and ``--detach`` give the same
Parquet as local runs (the NDIF test server in its own process, tiny models and Gemma-3-270m).

Interventions are analyses run by the same runner and executor as ``hub analyze …``: their
setup traces (steering vectors) and their batches (patched copies, generations with edits) are
requests to the server. What would make these tests fail: an edit applied only locally (the
remote run would equal the unsteered one), a sampling seed set outside the trace, batches
rebuilt differently by ``hub jobs collect`` than at submission, a vector computed on the
client's weightless model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest

from analyses.arithmetic_intervention import ArithmeticOptions, run_arithmetic
from analyses.patch import PatchOptions, run_patch
from analyses.steer import SteerOptions, run_steer
from hubclient import remote
from hubclient.runner import RunConfig

sys.path.insert(0, str(Path(__file__).parent))
from test_remote import ServerProcess, _hub, assert_key_absent, client_setup  # noqa: E402

PATCH = PatchOptions(sources=["the capital of france is paris"], targets=["the cat sat on the mat"], layers="1,3", positions="-2,-1",
                     site="attn", tokens=["paris", "mat"])
STEER_WORDS = dict(positive_words=["cat", "park"], negative_words=["dog", "mat"], classifier="none")
PROMPTS = ["the cat sat on the mat", "a dog ran in the park", "one two three"]


@pytest.fixture(autouse=True)
def client(monkeypatch, server):
    client_setup(monkeypatch)
    server.set_faults()
    yield


def configs(tiny_dir, server, tmp_path, batch_size=3):
    model = str(tiny_dir("llama"))
    local = RunConfig(model=model, out=tmp_path, name="local", batch_size=batch_size, progress=False)
    far = RunConfig(model=model, out=tmp_path, name="remote", batch_size=batch_size, progress=False, remote=True, ndif_host=server.url, timeout=60)
    return local, far


def assert_same(run, other, tables) -> None:
    """Same rows, same ids, texts and tokens; floats equal to 1e-5 relative (the server is
    another process whose kernels may sum in another order: a float32 log-softmax differs in
    the 7th digit at most)."""
    from polars.testing import assert_frame_equal

    for table in tables:
        ours, theirs = run.table(table), other.table(table)
        assert ours.height > 0, table
        assert_frame_equal(ours, theirs, check_exact=False, rel_tol=1e-5, abs_tol=1e-6)


def test_patch_remote_equals_local(tiny_dir, server, tmp_path):
    local, far = configs(tiny_dir, server, tmp_path)
    here = run_patch(PATCH, local)
    there = run_patch(PATCH, far)
    assert_same(there, here, ("patch", "patch_tokens", "patch_baselines", "prompts"))
    assert there.manifest["remote"]["mode"] == "blocking" and len(there.manifest["remote"]["requests"]) == 2
    # the patched cells really differ from the clean run (an edit lost on the way would not)
    assert (there.table("patch")["kl"] > 1e-6).any()
    assert_key_absent(there.path)


@pytest.mark.parametrize("positions, sample", [("first", True), ("all", False)])
def test_steer_remote_equals_local(tiny_dir, server, tmp_path, positions, sample):
    """Steering vectors computed on the server, edits applied there, sampling seeded in the
    trace: the same continuations and scores as here, and the steered rows differ from the
    unsteered ones."""
    options = SteerOptions(positive=["the cat"], negative=["a dog"], layers="1,2", coeffs="0,8", positions=positions,
                           max_new_tokens=4, sample=sample, seed=3, **STEER_WORDS)
    local, far = configs(tiny_dir, server, tmp_path)
    here = run_steer(options, PROMPTS, local)
    there = run_steer(options, PROMPTS, far)
    assert_same(there, here, ("generations", "side_by_side", "effects"))
    side = there.table("side_by_side").filter(pl.col("coeff") == 8)
    assert (side["delta_internal"].abs() > 1e-4).any()
    assert there.manifest["vector_rows"] == here.manifest["vector_rows"]


def test_arithmetic_remote_equals_local(tiny_dir, server, tmp_path):
    options = ArithmeticOptions(n=2, layers="1", strengths="0,4", max_new_tokens=2)
    local, far = configs(tiny_dir, server, tmp_path, batch_size=4)
    assert_same(run_arithmetic(options, far), run_arithmetic(options, local), ("answers", "accuracy"))


def _cli(kind: str, model: str, out: Path, name: str, *extra: str):
    if kind == "patch":
        args = ["intervene", "patch", "-s", PATCH.sources[0], "-t", PATCH.targets[0], "--layer", "1,3", "--positions", "-2,-1",
                "--site", "attn", "--token", "paris", "--token", "mat"]
    else:
        args = ["intervene", "steer", "--positive", "the cat", "--negative", "a dog", "--layer", "1,2", "--coeff", "0,8",
                "--max-new-tokens", "3", "--sample", "--seed", "5", "--positive-words", "cat,park", "--negative-words", "dog,mat",
                "--classifier", "none"]
        for p in PROMPTS:
            args += ["-p", p]
    return _hub(*args, "--model", model, "--batch-size", "2", "--out", str(out), "--name", name, "--no-progress", *extra)


@pytest.mark.parametrize("kind, tables", [("patch", ("patch", "patch_tokens", "patch_baselines")), ("steer", ("generations", "effects"))])
def test_detach_then_collect_equals_local(tiny_dir, server, tmp_path, kind, tables):
    """``--remote --detach`` submits every batch and exits; ``hub jobs collect`` (a new
    process, rebuilding the batches from the pickled intervention) writes the local run's
    tables. ``--no-plots`` given at submission holds at collection."""
    import time

    model = str(tiny_dir("llama"))
    local = _cli(kind, model, tmp_path, "local")
    assert local.returncode == 0, local.stderr
    submit = _cli(kind, model, tmp_path, "det", "--remote", "--detach", "--ndif-host", server.url, "--no-plots")
    assert submit.returncode == 0, submit.stderr
    run_dir = tmp_path / "det"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "submitted" and manifest["remote"]["mode"] == "detached"
    deadline = time.time() + 60
    while not all(j["history"][-1] in ("COMPLETED", "ERROR") for j in server.jobs().values() if not j["blocking"]):
        assert time.time() < deadline
        time.sleep(0.2)
    collect = _hub("jobs", "collect", str(run_dir), "--no-progress")
    assert collect.returncode == 0, collect.stdout + collect.stderr
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    assert not (run_dir / "plots").exists()
    from polars.testing import assert_frame_equal

    for table in tables:
        assert_frame_equal(pl.read_parquet(run_dir / f"{table}.parquet"), pl.read_parquet(tmp_path / "local" / f"{table}.parquet"),
                           check_exact=False, rel_tol=1e-5, abs_tol=1e-6)
    assert_key_absent(run_dir, submit.stdout, submit.stderr, collect.stdout, collect.stderr)


@pytest.mark.gemma
def test_gemma_patch_steer_arithmetic_remote_equal_local(tmp_path):
    """Gemma-3-270m served by the test server: patching (blocking and --detach + collect),
    steering and the arithmetic intervention give the local Parquet."""
    import time

    patch = PatchOptions(sources=["The capital of France is"], targets=["The capital of Italy is"], layers="4,9", positions="-1",
                         tokens=[" Paris", " Rome"])
    steer = SteerOptions(positive=["Love"], negative=["Hate"], layers="6", coeffs="4", max_new_tokens=3, classifier="none")
    arith = ArithmeticOptions(n=2, layers="8", strengths="0,4", max_new_tokens=2)
    srv = ServerProcess(["gemma-3-270m"], key=None, timeout=300)
    try:
        far = dict(out=tmp_path, progress=False, remote=True, ndif_host=srv.url, timeout=300, batch_size=4)
        patch_remote = run_patch(patch, RunConfig(name="patch-remote", **far))
        steer_remote = run_steer(steer, ["I think this film is"], RunConfig(name="steer-remote", **far))
        arith_remote = run_arithmetic(arith, RunConfig(name="arith-remote", **far))
        detached = run_patch(patch, RunConfig(name="patch-detached", detach=True, **far))
        assert detached.manifest["status"] == "submitted"
        deadline = time.time() + 300
        while True:  # hub jobs collect, as a user re-runs it until every chunk is in
            detached, pending = remote.collect(detached.path, progress=False)
            if not pending:
                break
            assert time.time() < deadline, pending
            time.sleep(1)
    finally:
        srv.stop()
    near = dict(out=tmp_path, progress=False, device="cpu", dtype="float32", batch_size=4)
    patch_local = run_patch(patch, RunConfig(name="patch-local", **near))
    assert_same(patch_remote, patch_local, ("patch", "patch_tokens", "patch_baselines"))
    assert_same(detached, patch_local, ("patch", "patch_tokens", "patch_baselines"))
    assert_same(steer_remote, run_steer(steer, ["I think this film is"], RunConfig(name="steer-local", **near)), ("generations",))
    assert_same(arith_remote, run_arithmetic(arith, RunConfig(name="arith-local", **near)), ("answers", "accuracy"))
