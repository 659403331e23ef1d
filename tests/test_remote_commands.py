"""Remote == local for the command variants that other remote tests do not reach (the audit
table of docs/remote.md, "What is tested remotely"): ``intervene patch --map`` and
``--align-word``, ``intervene steer --vector unembed`` (W_U rows read by a setup request),
``--task range-calls`` and ``--protocol wu2024``, and ``analyze task-lens``, against the strict
NDIF test server (tiny llama; hub not importable where requests run).

What would make these fail: an alignment computed on the server differently from here, an
unembedding vector read from the weightless client model (zeros or an error), the wu2024
preset's perplexity/relevance silently left empty with ``--remote`` (they are refused now),
a sampler or seed that does not travel.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analyses.patch import PatchOptions, run_patch
from analyses.steer import SteerOptions, run_steer
from hubclient.errors import HubError

sys.path.insert(0, str(Path(__file__).parent))
from conftest import SHARED_DATA  # noqa: E402
from test_intervene_remote import PROMPTS, assert_same, client, configs  # noqa: E402,F401  (client: fixture; server: conftest)
from test_remote import _hub  # noqa: E402

WORDS = ["--positive-words", "park,paris", "--negative-words", "ten,nine"]
FLOAT_TOL = dict(check_exact=False, rel_tol=1e-5, abs_tol=1e-6)


@pytest.mark.parametrize("alignment", [dict(maps=["2:3,-1:-1"]), dict(align_words=["capital=cat", "paris=mat"])])
def test_patch_with_map_or_align_word_remote_equals_local(tiny_dir, server, tmp_path, alignment):  # noqa: F811
    options = PatchOptions(sources=["the capital of france is paris"], targets=["the cat sat on the mat"], layers="1,3", site="resid",
                           tokens=["paris", "mat"], **alignment)
    local, far = configs(tiny_dir, server, tmp_path)
    here = run_patch(options, local)
    there = run_patch(options, far)
    assert_same(there, here, ("patch", "patch_tokens", "patch_baselines", "prompts"))
    cells = there.table("patch")
    assert cells.height == 2 * 2 and (cells["kl"] > 1e-6).any()  # 2 layers × 2 mapped positions, really patched
    assert there.manifest["remote"]["requests"]


def test_steer_unembedding_vector_remote_equals_local(tiny_dir, server, tmp_path):  # noqa: F811
    """``--vector unembed:cat,dog`` (A18-A20): W_U rows come from the server (the client model
    has no weights), the steered generations equal the local ones, and c=8 changes them."""
    options = SteerOptions(unembed=["cat,dog"], layers="2", coeffs="0,8", positions="last", max_new_tokens=4, seeds="0:1", top_p=0.7,
                           freq_penalty=1.0, positive_words=["park", "paris"], negative_words=["ten", "nine"], classifier="none")
    local, far = configs(tiny_dir, server, tmp_path)
    here = run_steer(options, PROMPTS, local)
    before = len(server.jobs())
    there = run_steer(options, PROMPTS, far)
    assert_same(there, here, ("generations", "seed_summary"))
    assert there.manifest["vector_rows"] == here.manifest["vector_rows"]
    side = there.table("side_by_side").filter(pl.col("coeff") == 8)
    assert (side["continuation"] != side["unsteered"]).any()
    # the setup request that read W_U, then the generation batches
    assert len(server.jobs()) > before + 1


def test_steer_range_calls_task_remote_equals_local(tiny_dir, server, tmp_path):  # noqa: F811
    mbpp = tmp_path / "mbpp.jsonl"
    mbpp.write_text("\n".join(json.dumps({"task_id": i, "code": code}) for i, code in enumerate(
        ["for i in range(n):\n    pass", "x = list(range(k))", "total = sum(range(m))"])) + "\n")
    args = ["intervene", "steer", "--task", "range-calls", "--mbpp", str(mbpp), "--vector", "unembed:cat,dog", "--layer", "2",
            "--coeff", "0,10", "--max-new-tokens", "3", "--seeds", "0", "--classifier", "none", *WORDS, "--model", str(tiny_dir("llama")),
            "--out", str(tmp_path), "--no-progress", "--no-plots", "--batch-size", "2"]
    local = _hub(*args, "--name", "local")
    assert local.returncode == 0, local.stderr
    remote = _hub(*args, "--name", "remote", "--remote", "--ndif-host", server.url, "--timeout", "60")
    assert remote.returncode == 0, remote.stderr
    for table in ("generations", "range_items"):
        assert_frame_equal(pl.read_parquet(tmp_path / "remote" / f"{table}.parquet"), pl.read_parquet(tmp_path / "local" / f"{table}.parquet"), **FLOAT_TOL)


@pytest.mark.skipif(not (SHARED_DATA / "sentiment").is_dir(), reason="sentiment data not found")
def test_steer_protocol_wu2024_remote(tiny_dir, server, tmp_path):  # noqa: F811
    """``--protocol wu2024`` (A16): its perplexity/relevance defaults need local weights, so a
    remote run is refused with the fix before anything is sent; with them off, remote == local."""
    args = ["intervene", "steer", "--protocol", "wu2024", "--sentiment-data", str(SHARED_DATA / "sentiment"), "--per-language", "1",
            "--seeds", "0:1", "--max-new-tokens", "3", "--classifier", "none", *WORDS, "--model", str(tiny_dir("llama")),
            "--out", str(tmp_path), "--no-progress", "--no-plots", "--batch-size", "4"]
    remote = ["--remote", "--ndif-host", server.url, "--timeout", "60"]
    before = len(server.jobs())
    refused = _hub(*args, "--name", "refused", *remote)
    assert refused.returncode == 2, refused.stderr
    assert "--perplexity self and --relevance self score continuations with the model's weights" in refused.stderr
    assert "add --perplexity none --relevance none" in refused.stderr
    assert len(server.jobs()) == before and not (tmp_path / "refused").exists()
    off = ["--perplexity", "none", "--relevance", "none"]
    local = _hub(*args, *off, "--name", "local")
    assert local.returncode == 0, local.stderr
    there = _hub(*args, *off, "--name", "remote", *remote)
    assert there.returncode == 0, there.stderr
    assert_frame_equal(pl.read_parquet(tmp_path / "remote" / "generations.parquet"), pl.read_parquet(tmp_path / "local" / "generations.parquet"), **FLOAT_TOL)
    # seed_summary's delta_* are differences of near-equal means (about 1e-5 here): their float32
    # rounding differs between processes in the last digit, so they are compared to 1e-5 absolute
    assert_frame_equal(pl.read_parquet(tmp_path / "remote" / "seed_summary.parquet"), pl.read_parquet(tmp_path / "local" / "seed_summary.parquet"),
                       check_exact=False, rel_tol=1e-5, abs_tol=1e-5)
    gen = pl.read_parquet(tmp_path / "remote" / "generations.parquet")
    assert set(gen["seed"].to_list()) == {0, 1} and gen.height > 4


def test_steer_perplexity_self_is_refused_remotely_from_python(tiny_dir, server, tmp_path):  # noqa: F811
    options = SteerOptions(positive=["the cat"], negative=["a dog"], layers="1", coeffs="4", max_new_tokens=2, classifier="none",
                           positive_words=["park", "paris"], negative_words=["ten", "nine"],
                           perplexity="none", relevance="self")
    _, far = configs(tiny_dir, server, tmp_path)
    with pytest.raises(HubError, match=r"^--relevance self score continuations .* add --perplexity none --relevance none"):
        run_steer(options, PROMPTS, far)
    assert not (tmp_path / "remote").exists()
