"""The lens and the hidden states against plain transformers, on tiny models of every family."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from analyses.logit_lens import LensOptions, LogitLens
from hubclient.runner import RunConfig, run_analysis

from conftest import FAMILIES

PROMPTS = ["the cat sat on the mat", "paris", "a dog ran in the park and the cat sat on the mat"]


def _hf_forward(hub_model, text):
    ids = hub_model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return ids["input_ids"][0], hub_model.torch_model(**ids, output_hidden_states=True)


def _traced_hidden_states(hub_model, text):
    import nnsight

    ids = hub_model.tokenizer(text, return_tensors="pt")
    with hub_model.lm.trace(dict(ids)):
        states = nnsight.save([])
        for _, h in hub_model.hidden_states():
            states.append(h)
    return states


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_equal_transformers(tiny_hub_model, family):
    model = tiny_hub_model(family)
    _, out = _hf_forward(model, PROMPTS[2])
    ours = _traced_hidden_states(model, PROMPTS[2])
    hf = out.hidden_states
    assert len(ours) == len(hf) == model.n_layers + 1
    for layer in range(model.n_layers):
        torch.testing.assert_close(ours[layer], hf[layer], rtol=1e-5, atol=1e-5)
    # transformers' last entry has the final norm applied; ours is the block output before it.
    with torch.no_grad():
        normed = model.torch_model.get_submodule(model.arch.final_norm)(ours[-1])
    torch.testing.assert_close(normed, hf[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_last_layer_lens_equals_model_logits(tmp_path, tiny_hub_model, family):
    model = tiny_hub_model(family)
    k = 5
    run = run_analysis(
        LogitLens(LensOptions(positions="all", top_k=k, targets=["paris"])),
        PROMPTS,
        RunConfig(out=tmp_path, progress=False, batch_size=2),
        model=model,
    )
    table = run.table("logit_lens")
    targets = run.table("targets")
    paris = model.tokenizer("paris", add_special_tokens=False)["input_ids"][0]
    for p, text in enumerate(PROMPTS):
        ids, out = _hf_forward(model, text)
        logits = out.logits[0].float()
        probs = torch.softmax(logits, -1)
        for pos in range(len(ids)):
            rows = table.filter((pl.col("prompt") == p) & (pl.col("position") == pos) & (pl.col("layer") == model.n_layers)).sort("rank")
            top = torch.topk(logits[pos], k)
            assert rows["token_id"].to_list() == top.indices.tolist()
            np.testing.assert_allclose(rows["logit"].to_numpy(), top.values.numpy(), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(rows["probability"].to_numpy(), probs[pos, top.indices].numpy(), rtol=1e-4, atol=1e-6)
            entropy = -(probs[pos] * torch.log(probs[pos])).sum().item()
            assert rows["entropy"][0] == pytest.approx(entropy, rel=1e-4, abs=1e-5)
            assert rows["input_token"][0] == model.tokenizer.decode([int(ids[pos])])
            t = targets.filter((pl.col("prompt") == p) & (pl.col("position") == pos) & (pl.col("layer") == model.n_layers))
            assert t["probability"][0] == pytest.approx(probs[pos, paris].item(), rel=1e-4, abs=1e-7)
            assert t["rank"][0] == int((logits[pos] > logits[pos, paris]).sum()) + 1


def test_intermediate_layer_lens_equals_direct_computation(tmp_path, tiny_hub_model):
    """Layer l's lens = softmax(lm_head(final_norm(hidden_states[l]))) from plain transformers."""
    model = tiny_hub_model("llama")
    hf_model = model.torch_model
    run = run_analysis(LogitLens(LensOptions(top_k=3)), PROMPTS[:1], RunConfig(out=tmp_path, progress=False), model=model)
    table = run.table("logit_lens")
    _, out = _hf_forward(model, PROMPTS[0])
    for layer in range(model.n_layers):  # hidden_states[l] is pre-norm for l < L
        with torch.no_grad():
            logits = hf_model.lm_head(hf_model.model.norm(out.hidden_states[layer][0, -1]))
        rows = table.filter(pl.col("layer") == layer).sort("rank")
        assert rows["token_id"].to_list() == torch.topk(logits, 3).indices.tolist()
        np.testing.assert_allclose(rows["logit"].to_numpy(), torch.topk(logits, 3).values.numpy(), rtol=1e-4, atol=1e-4)


def test_no_final_norm_uses_raw_hidden_state(tmp_path, tiny_hub_model):
    model = tiny_hub_model("gpt2")
    hf_model = model.torch_model
    run = run_analysis(
        LogitLens(LensOptions(top_k=2, final_norm=False)), PROMPTS[:1], RunConfig(out=tmp_path, progress=False), model=model
    )
    _, out = _hf_forward(model, PROMPTS[0])
    with torch.no_grad():
        logits = hf_model.lm_head(out.hidden_states[1][0, -1])
    rows = run.table("logit_lens").filter(pl.col("layer") == 1).sort("rank")
    assert rows["token_id"].to_list() == torch.topk(logits, 2).indices.tolist()
    assert run.manifest["options"]["final_norm"] is False


@pytest.mark.parametrize("family", ["llama", "gpt2", "bloom", "opt"])
def test_batched_equals_unbatched(tmp_path, tiny_hub_model, family):
    model = tiny_hub_model(family)
    options = LensOptions(positions="all", top_k=4, targets=["cat"])
    one = run_analysis(LogitLens(options), PROMPTS, RunConfig(out=tmp_path / "one", batch_size=1, progress=False), model=model)
    many = run_analysis(LogitLens(options), PROMPTS, RunConfig(out=tmp_path / "many", batch_size=3, progress=False), model=model)
    for table in ("logit_lens", "targets"):
        a, b = one.table(table), many.table(table)
        assert a.shape == b.shape
        exact = [c for c in a.columns if a[c].dtype not in (pl.Float32, pl.Float64)]
        assert a.select(exact).equals(b.select(exact))
        for column in set(a.columns) - set(exact):
            np.testing.assert_allclose(a[column].to_numpy(), b[column].to_numpy(), rtol=1e-4, atol=1e-5)


def test_bfloat16_lens_equals_direct_bfloat16_unembedding(tmp_path, tiny_hub_model):
    """--lens-dtype bfloat16: W_U · norm(h) in bf16 (fp32 accumulation), as computed by hand."""
    model = tiny_hub_model("llama")
    hf_model = model.torch_model
    run = run_analysis(LogitLens(LensOptions(top_k=3, lens_dtype="bfloat16")), PROMPTS[:1], RunConfig(out=tmp_path, progress=False), model=model)
    full = run_analysis(LogitLens(LensOptions(top_k=3)), PROMPTS[:1], RunConfig(out=tmp_path / "fp32", progress=False), model=model)
    assert run.manifest["options"]["lens_dtype"] == "bfloat16"
    _, out = _hf_forward(model, PROMPTS[0])
    for layer in range(model.n_layers):
        with torch.no_grad():
            h = hf_model.model.norm(out.hidden_states[layer][0, -1])
            logits = torch.nn.functional.linear(h.bfloat16(), hf_model.lm_head.weight.bfloat16()).float()
        rows = run.table("logit_lens").filter(pl.col("layer") == layer).sort("rank")
        np.testing.assert_allclose(rows["logit"].to_numpy(), torch.topk(logits, 3).values.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rows["probability"].to_numpy(), torch.softmax(logits, -1).topk(3).values.numpy(), rtol=1e-4, atol=1e-6)
    # and it is close to the float32 lens (bf16 precision), not equal to it
    a = run.table("logit_lens").sort("layer", "rank")["logit"].to_numpy()
    b = full.table("logit_lens").sort("layer", "rank")["logit"].to_numpy()
    np.testing.assert_allclose(a, b, rtol=0.05, atol=0.05)
    assert not np.array_equal(a, b)


def test_lens_dtype_errors(tmp_path):
    from conftest import build_tiny
    from hubclient.errors import HubError
    from hubclient.models import wrap_model

    hf_model, tokenizer = build_tiny("llama")
    model = wrap_model(hf_model, tokenizer, model_id="tiny-bias")
    with pytest.raises(HubError, match="not one of"):
        run_analysis(LogitLens(LensOptions(lens_dtype="int8")), PROMPTS[:1], RunConfig(out=tmp_path, progress=False), model=model)
    hf_model.lm_head.bias = torch.nn.Parameter(torch.zeros(hf_model.lm_head.out_features))
    with pytest.raises(HubError, match="without bias"):
        run_analysis(LogitLens(LensOptions(lens_dtype="bfloat16")), PROMPTS[:1], RunConfig(out=tmp_path, progress=False), model=model)
    assert not any(tmp_path.iterdir())  # refused before any run folder is written


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_paper_norm_mode_matches_transformers_hidden_states(tmp_path, tiny_hub_model, family):
    """``final_norm="last"`` is the semantic hub code's lens (``lib/logit_lens.py:46-66``):
    ``log_softmax(hidden_states[l] @ W_U.T)`` with transformers' ``hidden_states`` (raw below L,
    post-norm at L). Checked against transformers' own tuple, not our hidden states."""
    model = tiny_hub_model(family)
    if family not in FAMILIES:
        pytest.skip(f"{family} not among the tiny families")
    text = PROMPTS[2]
    ids, out = _hf_forward(model, text)
    paris = model.tokenizer("paris", add_special_tokens=False)["input_ids"][0]
    run = run_analysis(
        LogitLens(LensOptions(positions="all", top_k=3, targets=["paris"], final_norm="last")),
        [text],
        RunConfig(out=tmp_path, progress=False),
        model=model,
    )
    targets = run.table("targets")
    w_u = model.torch_model.get_output_embeddings().weight.detach()
    cap = model.logit_softcap
    for layer, hidden in enumerate(out.hidden_states):
        logits = hidden[0].float() @ w_u.T.float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        expected = torch.softmax(logits, -1)[:, paris].numpy()
        got = targets.filter(pl.col("layer") == layer).sort("position")["probability"].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    # and it differs from both other modes below L (random norm weights make the norm matter)
    other = run_analysis(
        LogitLens(LensOptions(positions="all", top_k=3, targets=["paris"], final_norm=False)),
        [text],
        RunConfig(out=tmp_path / "off", progress=False),
        model=model,
    ).table("targets")
    last = model.n_layers
    assert np.allclose(other.filter(pl.col("layer") < last)["probability"].to_numpy(), targets.filter(pl.col("layer") < last)["probability"].to_numpy())
    assert not np.allclose(other.filter(pl.col("layer") == last)["probability"].to_numpy(), targets.filter(pl.col("layer") == last)["probability"].to_numpy())
