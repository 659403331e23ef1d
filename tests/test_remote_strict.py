"""The strict NDIF test server, and what a request may ship.

The strict server (``--strict``, the default of :class:`test_remote.ServerProcess`) executes
requests in a ``python -I -S`` process where hub is not importable, under NDIF's import
allow-list. What would make these tests fail: an execution process that can import
``hubclient`` (an editable-install finder or the checkout on ``sys.path``), an allow-list that
lets ``hashlib`` or hub modules through, a client that ships modules outside the allow-list,
results of vector-valued analyses not travelling in float16 (or not within float16 rounding of
the local float32 values), bf16 autocast not applied.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analyses.similarity import Similarity, SimilarityOptions
from hubclient.runner import RunConfig, run_analysis

sys.path.insert(0, str(Path(__file__).parent))
from test_remote import ROOT, ServerProcess, client_setup, remote_config  # noqa: E402
from test_similarity import corpus  # noqa: E402


@pytest.fixture(autouse=True)
def client(monkeypatch):
    client_setup(monkeypatch)


def test_execution_process_cannot_import_hub(server, tiny_dir):
    info = server.sandbox()[str(tiny_dir("llama"))]
    assert info["ready"] and info["importable"] == {"hubclient": False, "analyses": False}
    for entry in info["sys_path"]:
        # only a venv's site-packages may sit inside the checkout (CI's .venv); never the
        # checkout's own folders
        assert not str(Path(entry).resolve()).startswith(str(ROOT)) or Path(entry).name in ("site-packages", "dist-packages"), entry
        assert Path(entry).resolve() != ROOT.resolve()
        assert "__editable__" not in entry
    assert info["devices"] == ["cpu"]


def test_allow_lists_agree():
    """The client's copy of NDIF's allow-list (what it ships) and the worker's (what it admits
    while deserialising) are the same list."""
    from hubclient.exec.remote.shipping import NDIF_MODULES
    from hubclient.testing import strict_worker

    extra_exec_only = {("nnsight", True), ("nnsight.intervention.envoy", False), ("nnsight.intervention.tracing.globals", False)}
    assert set(strict_worker.DESERIALIZATION) - extra_exec_only == set(NDIF_MODULES)
    assert strict_worker.allowed("torch.nn.functional", strict_worker.EXECUTION)
    assert not strict_worker.allowed("nnsight.schema", strict_worker.EXECUTION)  # nnsight is strict during execution
    assert not strict_worker.allowed("hashlib", strict_worker.DESERIALIZATION)


def _trace_importing_hashlib(lm, backend):
    import nnsight

    with lm.trace("the cat sat", backend=backend):
        import hashlib  # noqa: F401  (refused on NDIF)

        out = nnsight.save(lm.lm_head.output[0, -1].sum())
    return out


def _trace_importing_hub(lm, backend):
    import nnsight

    with lm.trace("the cat sat", backend=backend):
        from hubclient.science.lens import unembed  # noqa: F401  (hub is not on the server)

        out = nnsight.save(lm.lm_head.output[0, -1].sum())
    return out


@pytest.mark.parametrize("body, module", [(_trace_importing_hashlib, "hashlib"), (_trace_importing_hub, "hubclient.science.lens")])
def test_unlisted_import_in_trace_is_refused_as_on_ndif(server, tiny_dir, body, module):
    from hubclient import remote

    model = remote.load_remote_model(str(tiny_dir("llama")))
    remote.configure(server.url)
    backend = remote.make_backend(remote.model_key(model), timeout=60, retries=0)
    with pytest.raises(Exception, match=f"Module {module} is not whitelisted"):
        body(model.lm, backend)


def test_shipped_modules_are_stand_ins_and_cached_functions_uncached():
    """Under ``ndif_pickling`` a function that names modules as globals deserialises under the
    worker's allow-list; the modules are stand-ins that say what is wrong when used."""
    import functools
    import hashlib
    import io

    import cloudpickle
    from nnsight.intervention.serialization import dumps

    from hubclient.exec.remote.shipping import NotOnServer, ndif_pickling
    from hubclient.science import stats
    from hubclient.testing import strict_worker

    @functools.lru_cache(maxsize=1)
    def cached(x):
        return x * 2

    def uses_modules():
        return hashlib, stats, cached

    import hubclient

    ours = [sys.modules[__name__]] + ([] if cloudpickle.cloudpickle._is_registered_pickle_by_value(hubclient) else [hubclient])
    for module in ours:  # as register_code does for a run
        cloudpickle.register_pickle_by_value(module)
    try:
        with ndif_pickling([__name__.split(".")[0], "hubclient"]):
            blob = dumps(uses_modules)
    finally:
        for module in ours:
            cloudpickle.unregister_pickle_by_value(module)
    with strict_worker.Guard(strict_worker.DESERIALIZATION):
        loaded = strict_worker._unpickler_class(strict_worker.DESERIALIZATION)(io.BytesIO(blob), {}).load()
    shipped_hashlib, shipped_stats, shipped_cached = loaded()
    assert isinstance(shipped_hashlib, NotOnServer) and isinstance(shipped_stats, NotOnServer)
    with pytest.raises(AttributeError, match="'hubclient.science.stats' is not shipped to the NDIF server"):
        _ = shipped_stats.bootstrap_ci
    assert shipped_cached(4) == 8


def test_classes_and_functions_outside_the_allow_list_are_placeholders():
    """A shipped function naming ``Path`` and ``os.getcwd`` as globals, and a ``Path`` held as
    data, deserialise under NDIF's allow-list (they used to fail the whole request with ``Module
    pathlib is not whitelisted``: media-lens' pairs, steer's data folder); used on the server
    they raise clear errors. Allow-listed and cloudpickle-reduced objects stay real."""
    import io
    import os
    import types
    from pathlib import Path

    import cloudpickle
    import torch
    from nnsight.intervention.serialization import dumps

    from hubclient.exec.remote.shipping import FunctionNotOnServer, ValueNotOnServer, ndif_pickling
    from hubclient.testing import strict_worker

    data = {"file": Path("/tmp/x.txt"), "ns": types.SimpleNamespace(a=1), "t": torch.arange(3)}
    getcwd = os.getcwd  # a builtin function of posix, by reference

    def uses_globals():
        return Path, getcwd, data

    import hubclient

    ours = [sys.modules[__name__]] + ([] if cloudpickle.cloudpickle._is_registered_pickle_by_value(hubclient) else [hubclient])
    for module in ours:  # as register_code does for a run
        cloudpickle.register_pickle_by_value(module)
    try:
        with pytest.raises(Exception, match="Module (pathlib|posix) is not whitelisted"):  # without ndif_pickling: refused, as on NDIF
            with strict_worker.Guard(strict_worker.DESERIALIZATION):
                strict_worker._unpickler_class(strict_worker.DESERIALIZATION)(io.BytesIO(dumps(uses_globals)), {}).load()
        with ndif_pickling([__name__.split(".")[0], "hubclient"]):
            blob = dumps(uses_globals)
    finally:
        for module in ours:
            cloudpickle.unregister_pickle_by_value(module)
    with strict_worker.Guard(strict_worker.DESERIALIZATION):
        loaded = strict_worker._unpickler_class(strict_worker.DESERIALIZATION)(io.BytesIO(blob), {}).load()
    path_class, getcwd, shipped = loaded()
    assert issubclass(path_class, ValueNotOnServer) and isinstance(getcwd, FunctionNotOnServer)
    assert isinstance(shipped["file"], ValueNotOnServer)
    with pytest.raises(AttributeError, match="PosixPath value is not available on the NDIF server"):
        _ = shipped["file"].name
    with pytest.raises(RuntimeError, match=r"posix\.getcwd is not available on the NDIF server"):
        getcwd()
    assert shipped["ns"].a == 1 and torch.equal(shipped["t"], torch.arange(3))


def _similarity(tiny_dir, tmp_path, name, **remote):
    texts, langs, sents = corpus()
    analysis = Similarity(SimilarityOptions(languages=["en", "xx", "yy"]), langs, sents)
    columns = {"language": langs, "sentence": sents}
    if remote:
        config = remote_config(tiny_dir, remote.pop("server"), tmp_path, name=name, batch_size=4, **remote)
    else:
        config = RunConfig(model=str(tiny_dir("llama")), out=tmp_path, name=name, batch_size=4, progress=False)
    return run_analysis(analysis, texts, config, prompt_columns=columns)


def test_text_similarity_remote_equals_local_and_float16_transfer(tiny_dir, server, tmp_path):
    """float32 transfer: the local tables (to 1e-5). The float16 default: vectors within float16
    rounding of the local float32 ones (relative 2^-11), similarities within 1e-3, and fewer
    bytes back."""
    here = _similarity(tiny_dir, tmp_path, "local")
    exact = _similarity(tiny_dir, tmp_path, "remote32", server=server)
    half = _similarity(tiny_dir, tmp_path, "remote16", server=server, transfer_dtype="float16")
    for table in ("similarity", "vectors", "prompts"):
        assert_frame_equal(exact.table(table), here.table(table), check_exact=False, rel_tol=1e-5, abs_tol=1e-6)
    ours = np.stack(half.table("vectors")["vector"].to_numpy())
    theirs = np.stack(here.table("vectors")["vector"].to_numpy())
    assert not np.array_equal(ours, theirs)  # it did travel in float16
    np.testing.assert_allclose(ours, theirs, rtol=2**-11, atol=1e-6)
    a, b = half.table("similarity"), here.table("similarity")
    assert a.select("layer", "pair").equals(b.select("layer", "pair"))
    assert (a["similarity"] - b["similarity"]).abs().max() < 1e-3
    got16 = half.manifest["remote"]["bytes_received"]
    got32 = exact.manifest["remote"]["bytes_received"]
    assert got16 < 0.75 * got32, (got16, got32)


def test_bf16_autocast_server_within_tolerance(tiny_dir, tmp_path):
    """A server executing under bf16 autocast, as NDIF does: similarities within 0.05 of the
    float32 local run (bf16 keeps 8 bits of mantissa; three tiny layers), and not identical."""
    srv = ServerProcess([str(tiny_dir("llama"))], extra=("--autocast-bf16",))
    try:
        assert srv.sandbox()[str(tiny_dir("llama"))]["autocast"] is True
        there = _similarity(tiny_dir, tmp_path, "bf16", server=srv)
    finally:
        srv.stop()
    here = _similarity(tiny_dir, tmp_path, "local")
    diff = (there.table("similarity")["similarity"] - here.table("similarity")["similarity"]).abs()
    assert diff.max() < 0.05 and diff.max() > 0
    assert there.table("similarity").height == here.table("similarity").height


def test_request_sizes_stay_small(tiny_dir, server, tmp_path):
    """Requests ship functions, not whole modules: a similarity request on the tiny model is
    well under 200 KB (whole hub modules with their sources used to ride along)."""
    run = _similarity(tiny_dir, tmp_path, "sizes", server=server)
    sizes = [r["bytes_sent"] for r in run.manifest["remote"]["requests"]]
    assert sizes and max(sizes) < 200_000, sizes
    assert pl.Series(sizes).min() > 1_000


def test_dry_run_sizes_match_a_real_run(tiny_dir, server, tmp_path, capsys):
    """--dry-run on the tiny model: the request bytes it reports are the bytes a real run
    sends (same serialisation), and the expected result bytes are within the torch.save
    container (< 4 KB) below what comes back; nothing is sent and no run folder is made."""
    texts, langs, sents = corpus()
    jobs_before = len(server.jobs())
    config = remote_config(tiny_dir, server, tmp_path, name="dry", batch_size=4, transfer_dtype="float16", dry_run=True)
    with pytest.raises(SystemExit) as done:
        run_analysis(Similarity(SimilarityOptions(languages=["en", "xx", "yy"]), langs, sents), texts, config,
                     prompt_columns={"language": langs, "sentence": sents})
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "nothing was sent" in out and "vectors: [4, 4, 32] float16" in out
    assert len(server.jobs()) == jobs_before and not (tmp_path / "dry").exists()
    sent = int(out.split("request of batch 0")[1].split(": ")[1].split(" bytes")[0].replace(",", ""))
    expected = int(out.split("result of batch 0 (expected, raw tensors): ")[1].split(" bytes")[0].replace(",", ""))
    assert expected == 4 * 4 * 32 * 2
    real = _similarity(tiny_dir, tmp_path, "real", server=server, transfer_dtype="float16")
    first = real.manifest["remote"]["requests"][0]
    assert abs(first["bytes_sent"] - sent) < 200, (first["bytes_sent"], sent)
    assert expected <= first["bytes_received"] < expected + 4096


def test_dry_run_of_a_70b_config(tmp_path):
    """The Llama-3.1-70B config (meta weights, tiny tokenizer): the logit lens' expected result
    is [81 layers, rows, top-k] ids/logits/probs + entropy, and the command exits 0."""
    from typer.testing import CliRunner

    from hubclient.cli import app

    folder = Path(__file__).parent / "data" / "llama-3.1-70b"
    result = CliRunner().invoke(app, ["analyze", "logit-lens", "-p", "the cat sat on the mat", "-p", "paris", "--top-k", "10", "--model", str(folder),
                                      "--remote", "--dry-run", "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "top_ids: [81, 2, 10] int64" in result.output and "entropy: [81, 2] float32" in result.output
    expected = 81 * 2 * 10 * (8 + 4 + 4) + 81 * 2 * 4
    assert f"result of batch 0 (expected, raw tensors): {expected:,} bytes" in result.output
    assert not any(tmp_path.iterdir())
    local = CliRunner().invoke(app, ["analyze", "logit-lens", "-p", "x", "--model", str(folder), "--dry-run", "--out", str(tmp_path)])
    assert local.exit_code == 2 and "--dry-run sizes a remote run: add --remote" in local.output


def test_detached_float16_vectors_are_restored_at_collection(tiny_dir, server, tmp_path):
    """--detach + hub jobs collect with the float16 default: the collected vectors are float32
    within float16 rounding of the local ones (the job's result holds float16)."""
    import time

    from hubclient import remote

    here = _similarity(tiny_dir, tmp_path, "local")
    run = _similarity(tiny_dir, tmp_path, "detached", server=server, transfer_dtype="float16", detach=True)
    assert run.manifest["status"] == "submitted"
    deadline = time.time() + 120
    while True:
        run, pending = remote.collect(run.path, progress=False)
        if not pending:
            break
        assert time.time() < deadline, pending
        time.sleep(0.5)
    ours = np.stack(run.table("vectors")["vector"].to_numpy())
    theirs = np.stack(here.table("vectors")["vector"].to_numpy())
    assert run.table("vectors").schema["vector"] == here.table("vectors").schema["vector"]
    assert not np.array_equal(ours, theirs)
    np.testing.assert_allclose(ours, theirs, rtol=2**-11, atol=1e-6)


def test_local_only_attributes_are_not_shipped():
    """translation-lens' dictionaries (CC-CEDICT: MBs) serve prepare() only: the shipped copy
    has none, the analysis itself keeps them (hub jobs collect and rows still see them)."""
    from analyses.translation_lens import TranslationLens, TranslationOptions
    from hubclient.exec.trace import shippable
    from hubclient.inputs.dictionary import from_pairs

    dictionaries = {"en-fr": from_pairs("en", "fr", [("cat", "chat")])}
    analysis = TranslationLens(TranslationOptions(directions=["en-fr"]), dictionaries=dictionaries)
    slim = shippable(analysis)
    assert slim is not analysis and slim.dictionaries is None and slim.options is analysis.options
    assert analysis.dictionaries == dictionaries
    plain = Similarity(SimilarityOptions(languages=["en", "xx"]), ["en", "xx"], [0, 0])
    assert shippable(plain) is plain
