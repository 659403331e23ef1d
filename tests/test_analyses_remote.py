"""``--remote`` gives the same tables as a local run for language-probs, translation-lens and
neurons (the NDIF test server in its own process, the tiny llama), and ``--remote --detach`` +
``hub jobs collect`` does for language-probs.

What would make these fail: an ``import`` of hub code inside a trace body (the server has no
hub), a tensor the trace brings in left on the client's device, rows that depend on something
the weightless client model computes differently (token ids re-read from the tokenizer), or
batches that ``hub jobs collect`` rebuilds differently from those submitted.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analyses.language_probs import LanguageProbs, LanguageProbsOptions
from analyses.neurons import NeuronOptions, Neurons
from analyses.translation_lens import TranslationLens, TranslationOptions
from hubclient.runner import RunConfig, run_analysis

sys.path.insert(0, str(Path(__file__).parent))
from test_language_probs import FREQS  # noqa: E402
from test_language_probs import TEXTS as LP_TEXTS  # noqa: E402
from test_neurons import LANGS, corpus  # noqa: E402
from test_remote import _hub, assert_key_absent, client_setup, remote_config  # noqa: E402
from test_translation_lens import TEXTS as TL_TEXTS  # noqa: E402
from test_translation_lens import _toy  # noqa: E402


@pytest.fixture(autouse=True)
def client(monkeypatch, server, tmp_path):
    client_setup(monkeypatch)
    monkeypatch.setenv("HUB_CACHE_DIR", str(tmp_path / "cache"))
    server.set_faults()
    yield
    server.set_faults()


def local_config(tiny_dir, tmp_path, **kwargs) -> RunConfig:
    base = dict(model=str(tiny_dir("llama")), out=tmp_path, name="local", batch_size=2, progress=False)
    base.update(kwargs)
    return RunConfig(**base)


def assert_same(there, here, tables) -> None:
    """Same rows, ids and texts; floats to 1e-5 relative (the server's kernels may sum in
    another order)."""
    for table in tables:
        ours, theirs = there.table(table), here.table(table)
        assert ours.height > 0, table
        assert_frame_equal(ours, theirs, check_exact=False, rel_tol=1e-5, abs_tol=1e-6)


def test_language_probs_remote_equals_local(tiny_dir, server, tmp_path):
    labels = ["en", "fr", "en"]

    def analysis():
        return LanguageProbs(LanguageProbsOptions(languages=["en", "fr"], input_languages=labels), frequencies=FREQS, cache=False)

    here = run_analysis(analysis(), LP_TEXTS, local_config(tiny_dir, tmp_path))
    there = run_analysis(analysis(), LP_TEXTS, remote_config(tiny_dir, server, tmp_path))
    assert there.manifest["remote"]["mode"] == "blocking"
    assert_same(there, here, ("language_probs", "language_probs_summary", "prompts"))
    # each (prompt, layer) row is a distribution over en, fr, unknown
    sums = there.table("language_probs").group_by("prompt", "layer").agg(pl.col("probability").sum())["probability"]
    assert ((sums - 1.0).abs() < 1e-5).all()
    assert_key_absent(there.path)


def test_translation_lens_remote_equals_local(tiny_dir, server, tmp_path):
    def analysis():
        return TranslationLens(TranslationOptions(directions=["en-fr"] * len(TL_TEXTS)), dictionaries=_toy())

    with pytest.warns(UserWarning, match="have no usable position"):
        here = run_analysis(analysis(), TL_TEXTS, local_config(tiny_dir, tmp_path))
    with pytest.warns(UserWarning, match="have no usable position"):
        there = run_analysis(analysis(), TL_TEXTS, remote_config(tiny_dir, server, tmp_path))
    assert_same(there, here, ("translation_lens", "translation_lens_summary", "prompts"))
    rows = there.table("translation_lens")
    assert set(rows["word"].to_list()) >= {"cat", "sat", "mat"}
    assert (rows["probability"] > 0).all()


def test_neurons_remote_equals_local(tiny_dir, server, tmp_path):
    texts, langs, sents = corpus()

    def analysis():
        return Neurons(NeuronOptions(languages=list(LANGS), z_threshold=1.0), langs, sents)

    columns = {"language": langs, "sentence": sents}
    here = run_analysis(analysis(), texts, local_config(tiny_dir, tmp_path, batch_size=3), prompt_columns=columns)
    there = run_analysis(analysis(), texts, remote_config(tiny_dir, server, tmp_path, batch_size=3), prompt_columns=columns)
    tables = sorted(path.stem for path in here.path.glob("*.parquet"))
    assert sorted(path.stem for path in there.path.glob("*.parquet")) == tables
    assert len(tables) >= 3, tables
    assert_same(there, here, tables)


def test_language_probs_detach_then_collect_equals_local(tiny_dir, server, tmp_path):
    server.set_faults(delay=0.5)
    model = str(tiny_dir("llama"))
    files = {}
    for lang, lines in (("en", ["the cat sat on the mat", "a dog ran in the park"]), ("fr", ["paris is the capital of france", "one two three"])):
        files[lang] = tmp_path / f"{lang}.txt"
        files[lang].write_text("\n".join(lines) + "\n")
    env = {"HUB_CACHE_DIR": str(tmp_path / "cache")}
    local = _hub(*_language_probs_cli_args(model, tmp_path, "local", files), env=env)
    assert local.returncode == 0, local.stderr
    submit = _hub(*_language_probs_cli_args(model, tmp_path, "det", files), "--remote", "--detach", env={**env, "NDIF_HOST": server.url})
    assert submit.returncode == 0, submit.stderr
    run_dir = tmp_path / "det"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "submitted" and manifest["remote"]["mode"] == "detached"
    assert not (run_dir / "language_probs.parquet").exists()
    deadline = time.time() + 60
    while not all(j["history"][-1] == "COMPLETED" for j in server.jobs().values() if not j["blocking"]):
        assert not any(j["history"][-1] == "ERROR" for j in server.jobs().values()), server.jobs()
        assert time.time() < deadline
        time.sleep(0.2)
    collect = _hub("jobs", "collect", str(run_dir), "--no-progress", env=env)
    assert collect.returncode == 0, collect.stdout + collect.stderr
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    for table in ("language_probs", "language_probs_summary", "prompts"):
        ours, theirs = pl.read_parquet(run_dir / f"{table}.parquet"), pl.read_parquet(tmp_path / "local" / f"{table}.parquet")
        assert ours.height > 0, table
        assert_frame_equal(ours, theirs, check_exact=False, rel_tol=1e-5, abs_tol=1e-6)
    assert_key_absent(run_dir, submit.stdout, submit.stderr, collect.stdout, collect.stderr)


def _language_probs_cli_args(model: str, out: Path, name: str, files: dict[str, Path]) -> list[str]:
    args = ["analyze", "language-probs", "--model", model, "--batch-size", "2", "--out", str(out), "--name", name, "--no-progress", "--matrix", "wordfreq"]
    for lang, path in files.items():
        args += ["--lang", f"{lang}={path}"]
    return args


def test_neurons_detach_submits_and_exits_0(tiny_dir, server, tmp_path):
    """`hub analyze neurons --remote --detach` ends after submission with exit 0 and says how to
    collect (its summary reads tables that do not exist yet: it must not be printed then)."""
    files = []
    for lang, lines in (("en", ["the cat sat on the mat", "a dog ran in the park", "one two three"]),
                        ("fr", ["paris is the capital of france", "one two three four", "the cat sat"])):
        path = tmp_path / f"{lang}.txt"
        path.write_text("\n".join(lines) + "\n")
        files.append(str(path))
    submit = _hub("analyze", "neurons", *files, "--model", str(tiny_dir("llama")), "--lape-corpus", "parallel", "--n", "3", "--z-threshold", "0.5",
                  "--out", str(tmp_path), "--name", "det", "--no-progress", "--remote", "--detach", env={"NDIF_HOST": server.url})
    assert submit.returncode == 0, submit.stderr
    assert "hub jobs collect" in submit.stdout
    assert json.loads((tmp_path / "det" / "manifest.json").read_text())["status"] == "submitted"
