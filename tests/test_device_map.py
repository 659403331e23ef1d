"""``--device-map``: a model spread over devices by accelerate gives the tables of a model on
one device (the trace code does per-layer work on each layer's device and moves results once
to a common device before stacking, as it must on NDIF, where deployments load with
``device_map="auto"``).

On a CPU machine every entry of the map is the CPU, which checks that the option is accepted
and plumbed through (``from_pretrained(device_map=…)``, no ``.to(device)`` afterwards) and that
results are unchanged. The split across ``cuda:0`` and the CPU needs a GPU (marked ``cuda``,
skipped without one). What would make these fail: stacking tensors of different devices
(RuntimeError on a split model), inputs sent to a device other than the embeddings', a map
that is parsed but not passed to transformers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from analyses.logit_lens import LensOptions, LogitLens
from analyses.neurons import NeuronOptions, Neurons
from analyses.similarity import Similarity, SimilarityOptions
from hubclient.cli import app
from hubclient.errors import HubError
from hubclient.models.loading import load_model, parse_device_map
from hubclient.runner import RunConfig, run_analysis

sys.path.insert(0, str(Path(__file__).parent))
from test_similarity import corpus  # noqa: E402

PROMPTS = ["the cat sat on the mat", "paris", "a dog ran in the park and the cat sat"]


def _layer_map(device_of_layer, first: str, last: str, n_layers: int = 3) -> dict:
    """A per-module device map of the tiny llama: embeddings on ``first``, block i on
    ``device_of_layer(i)``, final norm and lm_head on ``last``."""
    mapping = {"model.embed_tokens": first, "model.rotary_emb": first}
    for i in range(n_layers):
        mapping[f"model.layers.{i}"] = device_of_layer(i)
    mapping["model.norm"] = last
    mapping["lm_head"] = last
    return mapping


def _runs(folder: Path, tmp_path: Path, name: str, device_map, device: str = "cpu", tolerance: float = 0.0):
    texts, langs, sents = corpus()
    columns = {"language": langs, "sentence": sents}
    config = RunConfig(model=str(folder), out=tmp_path, name=f"{name}-lens", batch_size=2, progress=False, device=device, device_map=device_map)
    lens = run_analysis(LogitLens(LensOptions(positions="all", top_k=3, targets=["paris"])), PROMPTS, config)
    config = RunConfig(model=str(folder), out=tmp_path, name=f"{name}-sim", batch_size=4, progress=False, device=device, device_map=device_map)
    sim = run_analysis(Similarity(SimilarityOptions(languages=["en", "xx", "yy"]), langs, sents), texts, config, prompt_columns=columns)
    config = RunConfig(model=str(folder), out=tmp_path, name=f"{name}-neu", batch_size=4, progress=False, device=device, device_map=device_map)
    neu = run_analysis(Neurons(NeuronOptions(languages=["en", "xx", "yy"], z_threshold=1.0), langs, sents), texts, config, prompt_columns=columns)
    return {"logit_lens": lens, "similarity": sim, "activations": neu}


def _assert_same(ours, theirs, tolerance: float) -> None:
    for table, run in ours.items():
        if tolerance == 0:
            assert run.table(table).equals(theirs[table].table(table)), table
        else:
            assert_frame_equal(run.table(table), theirs[table].table(table), check_exact=False, rel_tol=tolerance, abs_tol=tolerance)


def test_parse_device_map():
    assert parse_device_map(None) is None
    assert parse_device_map("auto") == "auto" and parse_device_map("balanced") == "balanced"
    assert parse_device_map('{"": "cpu"}') == {"": "cpu"}
    with pytest.raises(HubError, match="not valid JSON"):
        parse_device_map("{nope")
    with pytest.raises(HubError, match="give auto, balanced"):
        parse_device_map("everywhere")


@pytest.mark.parametrize("device_map", [{"": "cpu"}, "per-layer"])
def test_device_map_on_cpu_gives_the_same_tables(tiny_dir, tmp_path, device_map, monkeypatch):
    import transformers

    folder = tiny_dir("llama")
    if device_map == "per-layer":
        device_map = _layer_map(lambda i: "cpu", "cpu", "cpu")
    seen = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):  # the map reaches transformers (accelerate sets hf_device_map only for 2+ devices)
        seen.append(kwargs.get("device_map"))
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    model = load_model(str(folder), device="cpu", device_map=device_map)
    assert seen == [device_map] and model.device == "cpu"
    monkeypatch.undo()
    _assert_same(_runs(folder, tmp_path, "mapped", device_map), _runs(folder, tmp_path, "plain", None), tolerance=0.0)


def test_cli_device_map_option(tiny_dir, tmp_path):
    args = ["analyze", "logit-lens", "-p", "the cat sat", "--model", str(tiny_dir("llama")), "--out", str(tmp_path), "--no-progress", "--no-plots", "--device", "cpu"]
    mapped = CliRunner().invoke(app, args + ["--name", "mapped", "--device-map", '{"": "cpu"}'])
    plain = CliRunner().invoke(app, args + ["--name", "plain"])
    assert mapped.exit_code == 0 and plain.exit_code == 0, mapped.output + plain.output
    import polars as pl

    assert pl.read_parquet(tmp_path / "mapped" / "logit_lens.parquet").equals(pl.read_parquet(tmp_path / "plain" / "logit_lens.parquet"))
    bad = CliRunner().invoke(app, args + ["--name", "bad", "--device-map", "everywhere"])
    assert bad.exit_code == 2 and "--device-map 'everywhere'" in bad.output
    remote = CliRunner().invoke(app, args + ["--name", "r", "--device-map", "auto", "--remote", "--ndif-host", "http://127.0.0.1:9"])
    assert remote.exit_code == 2 and "NDIF places its models" in remote.output
    assert not (tmp_path / "r").exists() and not (tmp_path / "bad").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU: splits the tiny model across cuda:0 and cpu")
def test_split_across_cuda_and_cpu_equals_one_device(tiny_dir, tmp_path):
    """Embeddings and block 0 on cuda:0, blocks 1-2 and the final norm on the CPU, lm_head
    back on cuda:0: lens, similarity and neuron tables equal the all-CPU run (to 1e-4: CUDA
    kernels sum in another order)."""
    folder = tiny_dir("llama")
    split = _layer_map(lambda i: 0 if i == 0 else "cpu", 0, "cpu")
    split["lm_head"] = 0
    model = load_model(str(folder), device="cpu", dtype="float32", device_map=split)
    devices = {str(p.device) for p in model.torch_model.parameters()}
    assert devices == {"cuda:0", "cpu"}, devices
    assert model.device == "cuda:0"
    ours = _runs(folder, tmp_path, "split", json.dumps(split), device="cpu")
    theirs = _runs(folder, tmp_path, "cpu", None, device="cpu")
    _assert_same(ours, theirs, tolerance=1e-4)
