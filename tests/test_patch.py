"""Activation patching (``hub intervene patch``) against plain transformers with forward hooks."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from analyses.patch import PatchOptions, run_patch
from hubclient.edits import patch_batch
from hubclient.errors import HubError
from hubclient.runner import RunConfig

SOURCE = "the capital of france is paris"
TARGET = "a dog ran in the park"
#: A source longer than the target (11 vs 7 tokens with BOS): a wrong alignment cannot hide.
LONG = "a dog ran in the park and the cat sat"
#: Submodules copied per site, written out here (not read from the project's architecture table).
SITE_MODULES = {"llama": {"attn": "self_attn", "mlp": "mlp.down_proj"}, "gemma3_text": {"attn": "self_attn", "mlp": "mlp.down_proj"}}


def _ids(model, text):
    return model.tokenizer(text)["input_ids"]


def _hf_patched_logprobs(model, source, target, layer, t, s):
    """Independent computation: run the source with hooks to grab block outputs, then the target
    with a hook that overwrites block ``layer``'s output (or block 1's input for layer 0) at t."""
    hf = model.torch_model
    blocks = hf.get_submodule(model.arch.layers)
    src = torch.tensor([source])
    grabbed = {}

    def grab_in(mod, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        grabbed[0] = hidden[0, s].clone()

    def grab_out(idx):
        def hook(mod, args, out):
            hidden = out[0] if isinstance(out, tuple) else out
            grabbed[idx] = hidden[0, s].clone()
        return hook

    handles = [blocks[0].register_forward_pre_hook(grab_in, with_kwargs=True)]
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_hook(grab_out(i + 1)))
    with torch.no_grad():
        hf(input_ids=src)
    for h in handles:
        h.remove()

    def put_in(mod, args, kwargs):
        if args:
            hidden = args[0].clone()
            hidden[0, t] = grabbed[0]
            return (hidden, *args[1:]), kwargs
        hidden = kwargs["hidden_states"].clone()
        hidden[0, t] = grabbed[0]
        return args, {**kwargs, "hidden_states": hidden}

    def put_out(mod, args, out):
        hidden = (out[0] if isinstance(out, tuple) else out).clone()
        hidden[0, t] = grabbed[layer]
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handle = blocks[0].register_forward_pre_hook(put_in, with_kwargs=True) if layer == 0 else blocks[layer - 1].register_forward_hook(put_out)
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor([target])).logits[0, -1].float()
    handle.remove()
    return torch.log_softmax(logits, -1)


def _hf_site_patched_logprobs(model, family, site, source, target, layer, t, s):
    """Independent computation for ``attn``/``mlp``: hooks on block ``layer``'s attention module
    or MLP down projection copy the source run's output at position ``s`` into the target run's
    output at ``t``."""
    hf = model.torch_model
    block = hf.get_submodule(model.arch.layers)[layer - 1]
    module = block.get_submodule(SITE_MODULES[family][site])
    grabbed = {}

    def grab(mod, args, out):
        hidden = out[0] if isinstance(out, tuple) else out
        grabbed["h"] = hidden[0, s].clone()

    def put(mod, args, out):
        hidden = (out[0] if isinstance(out, tuple) else out).clone()
        hidden[0, t] = grabbed["h"]
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handle = module.register_forward_hook(grab)
    with torch.no_grad():
        hf(input_ids=torch.tensor([source]))
    handle.remove()
    handle = module.register_forward_hook(put)
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor([target])).logits[0, -1].float()
    handle.remove()
    return torch.log_softmax(logits, -1)


def _hf_logprobs(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model.torch_model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text"])
def test_every_cell_matches_hooked_transformers(tmp_path, tiny_hub_model, family):
    model = tiny_hub_model(family)
    run = run_patch(
        PatchOptions([LONG], [SOURCE], layers="all", positions="all", align="end", tokens=["paris", "park"]),
        RunConfig(out=tmp_path, progress=False, batch_size=5),
        model=model,
    )
    table = run.table("patch")
    source, target = _ids(model, LONG), _ids(model, SOURCE)
    assert len(source) == len(target) + 4
    paris, park = model.tokenizer("paris park", add_special_tokens=False)["input_ids"]
    clean = _hf_logprobs(model, target)
    assert table.height == (model.n_layers + 1) * len(target)
    assert (table["alignment"] == "end").all()
    for row in table.iter_rows(named=True):
        s = row["position"] + 4  # --align end: the same distance from the end
        assert row["source_position"] == s
        assert row["source_token"] == LONG.split()[s - 1] and row["target_token"] == (["<bos>"] + SOURCE.split())[row["position"]]
        lp = _hf_patched_logprobs(model, source, target, row["layer"], row["position"], s)
        assert row["metric"] == pytest.approx((lp[paris] - lp[park]).item(), abs=2e-4)
        kl = (clean.exp() * (clean - lp)).sum().item()
        assert row["kl"] == pytest.approx(kl, abs=2e-4)
        assert row["top_token_id"] == int(lp.argmax())
    base = run.table("patch_baselines")
    src_lp = _hf_logprobs(model, source)
    assert (table["kl"] > 1e-4).any()
    assert base.filter(pl.col("run") == "source")["metric"][0] == pytest.approx((src_lp[paris] - src_lp[park]).item(), abs=2e-4)
    assert base.filter(pl.col("run") == "clean")["metric"][0] == pytest.approx((clean[paris] - clean[park]).item(), abs=2e-4)


@pytest.mark.parametrize("site", ["resid", "attn", "mlp"])
def test_patching_a_run_with_its_own_activations_changes_nothing(tmp_path, tiny_hub_model, site):
    model = tiny_hub_model("gemma3_text")
    run = run_patch(
        PatchOptions([TARGET], [TARGET], layers="all", positions="all", site=site, tokens=["park"]),
        RunConfig(out=tmp_path, progress=False, batch_size=8),
        model=model,
    )
    table = run.table("patch")
    clean = run.table("patch_baselines").filter(pl.col("run") == "clean")["metric"][0]
    assert table.height == model.n_layers * len(_ids(model, TARGET)) + (len(_ids(model, TARGET)) if site == "resid" else 0)
    np.testing.assert_allclose(table["metric"].to_numpy(), clean, rtol=1e-6)
    np.testing.assert_allclose(table["kl"].to_numpy(), 0.0, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt_neox"])
def test_patching_every_layer_at_the_last_position_gives_the_source_logits(tiny_hub_model, family):
    model = tiny_hub_model(family)
    source, target = _ids(model, SOURCE), _ids(model, TARGET)
    cell = []
    for layer in range(model.n_layers + 1):
        cell.append((layer, len(target) - 1, len(source) - 1))
    vocab = list(range(len(model.tokenizer)))
    result = patch_batch(model, source, target, [cell], "resid", vocab)
    expected = _hf_logprobs(model, source)[: len(vocab)]
    torch.testing.assert_close(result.token_logprobs[2], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(result.token_logprobs[0], expected, rtol=1e-4, atol=1e-4)
    assert result.kl[2].item() == pytest.approx(result.kl[0].item(), abs=1e-4)


def test_batch_size_does_not_change_numbers(tmp_path, tiny_hub_model):
    model = tiny_hub_model("qwen2")
    tables = []
    for bs in (1, 7):
        run = run_patch(PatchOptions([SOURCE], [TARGET], layers="1:3", positions="-1,-2", metric="kl"), RunConfig(out=tmp_path / str(bs), progress=False, batch_size=bs), model=model)
        tables.append(run.table("patch"))
    np.testing.assert_allclose(tables[0]["metric"].to_numpy(), tables[1]["metric"].to_numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (PatchOptions([SOURCE], [TARGET], layers="9"), "out of range"),
        (PatchOptions([SOURCE], [TARGET], layers="x"), "not an integer"),
        (PatchOptions([SOURCE], [TARGET], positions="40"), "out of range"),
        (PatchOptions([SOURCE], [TARGET], positions="0", align="start", metric="kl"), None),
        (PatchOptions(["paris"], [TARGET], positions="0,1,2", align="end"), "no source position"),
        (PatchOptions(["paris"], [TARGET]), "do not correspond by index"),
        (PatchOptions([LONG], [TARGET], align="middle"), "unknown --align"),
        (PatchOptions([LONG], [TARGET], maps=["3-5"]), "not SOURCE:TARGET"),
        (PatchOptions([LONG], [TARGET], maps=["40:1"]), "source position 40 is out of range"),
        (PatchOptions([LONG], [TARGET], maps=["1:7"]), "target position 7 is out of range"),
        (PatchOptions([LONG], [TARGET], maps=["1:2,3:2"]), "target position 2 twice"),
        (PatchOptions([LONG], [TARGET], maps=["1:2"], align="end"), "give one of them"),
        (PatchOptions([LONG], [TARGET], maps=["1:2"], positions="last"), "the map itself lists them"),
        (PatchOptions([LONG, LONG, LONG], [TARGET] * 3, maps=["1:2", "1:2"]), "one per pair"),
        (PatchOptions([LONG], [TARGET], align_words=["park"]), "not SOURCE_WORD=TARGET_WORD"),
        (PatchOptions([LONG], [TARGET], align_words=["zebra=park"]), "'zebra' does not occur in the source"),
        (PatchOptions([LONG], [TARGET], maps=["-1:-1"], metric="kl"), None),
        (PatchOptions([SOURCE, SOURCE], [TARGET]), "one --source per --target"),
        (PatchOptions([SOURCE], [TARGET], metric="logit-diff", tokens=["paris"]), "two --token"),
        (PatchOptions([SOURCE], [TARGET], metric="prob"), "needs a --token"),
        (PatchOptions([SOURCE], [TARGET], site="heads"), "unknown --site"),
        (PatchOptions([SOURCE], [" "]), "--target number 1 is empty"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, tiny_hub_model, options, message):
    model = tiny_hub_model("llama")
    config = RunConfig(out=tmp_path / "runs", progress=False)
    if message is None:  # the valid control case
        run_patch(options, config, model=model)
        return
    with pytest.raises(HubError, match=message):
        run_patch(options, config, model=model)
    assert not (tmp_path / "runs").exists()


def test_cli_writes_parquet_plots_and_manifest(tmp_path, tiny_dir):
    from typer.testing import CliRunner

    from hubclient.cli import app

    result = CliRunner().invoke(app, [
        "intervene", "patch", "--model", str(tiny_dir("llama")), "--source", SOURCE, "--target", TARGET,
        "--layer", "0:3", "--positions", "last", "--token", "paris", "--out", str(tmp_path), "--name", "p", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    run = tmp_path / "p"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["analysis"] == "patch" and manifest["metric"] == "prob"
    assert pl.read_parquet(run / "patch.parquet").height == 4
    assert (run / "plots" / "patch_heatmap.png").stat().st_size > 0
    cells = pl.read_parquet(run / "patch.parquet")
    best = cells.row(int(cells["normalized"].abs().arg_max()), named=True)
    assert "  pair 0 (prob: clean " in result.output
    assert f"largest effect {best['normalized']:.2f} at resid layer {best['layer']}, position {best['position']}" in result.output
    bad = CliRunner().invoke(app, ["intervene", "patch", "--model", str(tiny_dir("llama")), "--source", SOURCE, "--target", TARGET, "--layer", "12", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "error: --layer 12 is out of range" in bad.output


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
@pytest.mark.parametrize("site", ["attn", "mlp"])
def test_attn_and_mlp_cells_with_an_explicit_map_match_hooked_modules(tmp_path, tiny_hub_model, family, site):
    """Source ≠ target, 11 vs 7 tokens, an explicit map whose pairs are not at one offset: each
    cell equals copying the module's output in plain transformers; a cell patched from the
    neighbouring source position would differ, so the alignment is checked too."""
    model = tiny_hub_model(family)
    run = run_patch(
        PatchOptions([LONG], [TARGET], layers="all", site=site, tokens=["park", "dog"], maps=["9:2,6:5,-1:-1"]),
        RunConfig(out=tmp_path, progress=False, batch_size=4),
        model=model,
    )
    table = run.table("patch")
    source, target = _ids(model, LONG), _ids(model, TARGET)
    park, dog = model.tokenizer("park dog", add_special_tokens=False)["input_ids"]
    clean = _hf_logprobs(model, target)
    assert table.height == model.n_layers * 3 and (table["alignment"] == "map").all()
    pairs = set(zip(table["source_position"].to_list(), table["position"].to_list()))
    assert pairs == {(9, 2), (6, 5), (10, 6)}
    shifted_differs = 0
    for row in table.iter_rows(named=True):
        assert (row["source_token"], row["target_token"]) == (LONG.split()[row["source_position"] - 1], (["<bos>"] + TARGET.split())[row["position"]])
        lp = _hf_site_patched_logprobs(model, family, site, source, target, row["layer"], row["position"], row["source_position"])
        assert row["metric"] == pytest.approx((lp[park] - lp[dog]).item(), abs=2e-4)
        assert row["kl"] == pytest.approx((clean.exp() * (clean - lp)).sum().item(), abs=2e-4)
        assert row["top_token_id"] == int(lp.argmax())
        other = _hf_site_patched_logprobs(model, family, site, source, target, row["layer"], row["position"], row["source_position"] - 1)
        shifted_differs += abs((other[park] - other[dog]).item() - row["metric"]) > 1e-3
    assert (table["kl"] > 1e-4).any() and shifted_differs > 0


def test_word_alignment_patches_the_tokens_that_end_the_given_words(tmp_path, tiny_hub_model):
    """--align-word cat=cat park=mat: the first 'cat' of the source (position 9) goes into the
    target's 'cat' (2), 'park' (6) into 'mat' (6); checked against hooked transformers."""
    model = tiny_hub_model("llama")
    target_text = "the cat sat on the mat"
    run = run_patch(
        PatchOptions([LONG], [target_text], layers="0,2", tokens=["mat", "park"], align_words=["cat=cat", "park=mat"]),
        RunConfig(out=tmp_path, progress=False, batch_size=3),
        model=model,
    )
    table = run.table("patch").sort("position", "layer")
    assert table.select("layer", "position", "source_position", "source_token", "target_token").rows() == [
        (0, 2, 9, "cat", "cat"), (2, 2, 9, "cat", "cat"), (0, 6, 6, "park", "mat"), (2, 6, 6, "park", "mat"),
    ]
    assert (table["alignment"] == "words").all()
    source, target = _ids(model, LONG), _ids(model, target_text)
    mat, park = model.tokenizer("mat park", add_special_tokens=False)["input_ids"]
    for row in table.iter_rows(named=True):
        lp = _hf_patched_logprobs(model, source, target, row["layer"], row["position"], row["source_position"])
        assert row["metric"] == pytest.approx((lp[mat] - lp[park]).item(), abs=2e-4)


def test_prompts_of_equal_length_align_by_index_by_default(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    run = run_patch(PatchOptions([SOURCE], [TARGET], layers="1", metric="kl"), RunConfig(out=tmp_path, progress=False), model=model)
    table = run.table("patch")
    assert (table["source_position"] == table["position"]).all() and (table["alignment"] == "auto (same length)").all()
    assert table.height == len(_ids(model, TARGET))


def test_cli_map_with_negative_positions_and_summary_names_the_source_token(tmp_path, tiny_dir):
    from typer.testing import CliRunner

    from hubclient.cli import app

    args = ["intervene", "patch", "--model", str(tiny_dir("llama")), "--source", LONG, "--target", TARGET, "--layer", "1,2",
            "--map", "-1:-1", "--map", "2:2", "--token", "park", "--out", str(tmp_path), "--name", "m", "--no-progress"]
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 2 and "one per pair" in bad.output
    del args[12:14]  # the second --map
    assert args[10:12] == ["--map", "-1:-1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cells = pl.read_parquet(tmp_path / "m" / "patch.parquet")
    assert set(zip(cells["source_position"], cells["position"])) == {(10, 6)}
    assert "<- source position 10 'sat' (map)" in result.output
    unaligned = CliRunner().invoke(app, ["intervene", "patch", "--model", str(tiny_dir("llama")), "--source", LONG, "--target", TARGET,
                                         "--layer", "1", "--out", str(tmp_path), "--name", "u", "--no-progress"])
    assert unaligned.exit_code == 2 and "do not correspond by index" in unaligned.output
