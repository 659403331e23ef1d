"""Tuned lens and patchscope lens (docs/lenses.md) against independent computations.

* the tuned lens with known ``A_l``, ``b_l`` against numpy (``h + h A^T + b``, RMSNorm, ``W_U``)
  on transformers' hidden states;
* the patchscope against a plain transformers forward of the target prompt with a torch hook
  that replaces the placeholder's hidden state;
* training lowers the held-out KL on a tiny model; snapshots resume to the same lens;
* the saved format is the tuned-lens package's (``config.json`` + ``params.pt``), both ways,
  with the package itself when it is installed.
"""

from __future__ import annotations

import json
import random

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from analyses.logit_lens import LensOptions, LogitLens
from hubclient.cli.commands import app
from hubclient.errors import HubError
from hubclient.runner import RunConfig, run_analysis
from hubclient.science import tuned_lens as tl
from hubclient.science.patchscope import target_tokens

from conftest import SENTENCES

PROMPTS = ["the cat sat on the mat", "one two three four", "a dog ran in the park"]


def _random_lens(model, seed=1, scale=0.2):
    torch.manual_seed(seed)
    d = int(model.describe()["d_model"])
    translators = tl.make_translators(d, model.n_layers)
    with torch.no_grad():
        for layer in translators:
            layer.weight.normal_(0, scale / d**0.5)
            layer.bias.normal_(0, scale)
    return translators


def _softmax(x):
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def test_tuned_lens_matches_numpy(tmp_path, tiny_hub_model):
    """Every layer's top-k and entropy equal numpy's ``softmax(W_U RMSNorm(h + h A^T + b))``;
    layer L is the model's own output (no translator there)."""
    model = tiny_hub_model("llama")
    translators = _random_lens(model)
    folder = tl.save_lens(tmp_path / "lens", translators, tl.model_config(model))
    k = 5
    run = run_analysis(
        LogitLens(LensOptions(positions="all", top_k=k, lens="tuned", tuned_lens=str(folder))),
        PROMPTS, RunConfig(out=tmp_path / "runs", progress=False, batch_size=2), model=model,
    )
    table = run.table("logit_lens")
    assert run.manifest["options"]["lens"] == "tuned"
    hf = model.torch_model
    w_u = hf.lm_head.weight.detach().numpy().astype(np.float64)
    g = hf.model.norm.weight.detach().numpy().astype(np.float64)
    eps = hf.config.rms_norm_eps
    checked = 0
    for p, text in enumerate(PROMPTS):
        ids = model.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            out = hf(**ids, output_hidden_states=True)
        for layer in range(model.n_layers + 1):
            if layer < model.n_layers:
                h = out.hidden_states[layer][0].numpy().astype(np.float64)
                a = translators[layer].weight.detach().numpy().astype(np.float64)
                b = translators[layer].bias.detach().numpy().astype(np.float64)
                h = h + h @ a.T + b
                normed = h / np.sqrt((h**2).mean(-1, keepdims=True) + eps) * g
                logits = normed @ w_u.T
            else:
                logits = out.logits[0].double().numpy()
            probs = _softmax(logits)
            for pos in range(ids["input_ids"].shape[1]):
                rows = table.filter((pl.col("prompt") == p) & (pl.col("position") == pos) & (pl.col("layer") == layer)).sort("rank")
                order = np.argsort(-logits[pos])[:k]
                assert rows["token_id"].to_list() == order.tolist()
                np.testing.assert_allclose(rows["probability"].to_numpy(), probs[pos, order], rtol=1e-4, atol=1e-6)
                entropy = -(probs[pos] * np.log(probs[pos])).sum()
                assert rows["entropy"][0] == pytest.approx(entropy, rel=1e-4, abs=1e-5)
                checked += 1
    assert checked == (model.n_layers + 1) * sum(len(model.tokenizer(t)["input_ids"]) for t in PROMPTS)


def test_tuned_lens_differs_from_logit_lens(tmp_path, tiny_hub_model):
    """A non-zero lens changes layers 0..L-1 and leaves layer L alone (guards against the lens
    being ignored)."""
    model = tiny_hub_model("llama")
    folder = tl.save_lens(tmp_path / "lens", _random_lens(model, scale=1.0), tl.model_config(model))
    config = RunConfig(out=tmp_path / "runs", progress=False)
    tuned = run_analysis(LogitLens(LensOptions(top_k=3, lens="tuned", tuned_lens=str(folder))), PROMPTS, config, model=model).table("logit_lens")
    logit = run_analysis(LogitLens(LensOptions(top_k=3)), PROMPTS, config, model=model).table("logit_lens")
    joined = tuned.join(logit, on=["prompt", "position", "layer", "rank"], suffix="_logit")
    last = joined.filter(pl.col("layer") == model.n_layers)
    np.testing.assert_allclose(last["probability"].to_numpy(), last["probability_logit"].to_numpy(), rtol=1e-5)
    lower = joined.filter(pl.col("layer") < model.n_layers)
    assert np.abs(lower["entropy"].to_numpy() - lower["entropy_logit"].to_numpy()).max() > 1e-2


def _hooked_patchscope(model, target_ids, placeholder, state, layer):
    """Next-token probabilities of the target prompt with ``state`` written over the
    placeholder's residual stream at ``layer`` (0 = input of block 0), by a torch hook."""
    from conftest import patched_next_token_probs

    hf = model.torch_model
    return patched_next_token_probs(hf, hf.model.layers, target_ids, placeholder, state, layer)


def _source_states(model, text):
    """Residual stream of every layer ``0..L`` (raw, the last before the final norm) ``[L+1, T, d]``
    of ``text`` (a string, tokenised with special tokens, or a list of token ids as given)."""
    hf = model.torch_model
    captured = {}
    inputs = model.tokenizer(text, return_tensors="pt") if isinstance(text, str) else {"input_ids": torch.tensor([text])}
    handle = hf.model.layers[-1].register_forward_hook(lambda m, a, o: captured.__setitem__("last", o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            out = hf(**inputs, output_hidden_states=True)
    finally:
        handle.remove()
    states = [h[0] for h in out.hidden_states[:-1]] + [captured["last"][0]]
    return torch.stack(states)


@pytest.mark.parametrize("prompt,placeholder", [("cat cat dog dog the sat", "the"), ("cat cat dog dog mat", "mat")])
def test_patchscope_matches_hooked_forward(tmp_path, tiny_hub_model, prompt, placeholder):
    """Every (prompt, position, layer) of the patchscope equals a separate forward of the target
    prompt with a hook replacing the placeholder's state (placeholder before the read position,
    and at it as in nnterp's default)."""
    model = tiny_hub_model("llama")
    target_ids, ph = target_tokens(model.tokenizer, prompt, placeholder)
    assert model.tokenizer.unk_token_id not in target_ids
    k = 4
    run = run_analysis(
        LogitLens(LensOptions(positions="all", top_k=k, targets=["paris", "cat"], lens="patchscope", patch_prompt=prompt, patch_placeholder=placeholder)),
        PROMPTS, RunConfig(out=tmp_path, progress=False, batch_size=2), model=model,
    )
    table = run.table("logit_lens")
    targets = run.table("targets")
    assert run.manifest["lens"]["patch_placeholder_position"] == ph
    paris = model.tokenizer("paris", add_special_tokens=False)["input_ids"][0]
    distinct = set()
    for p, text in enumerate(PROMPTS):
        states = _source_states(model, text)
        for layer in range(model.n_layers + 1):
            for pos in range(states.shape[1]):
                probs = _hooked_patchscope(model, target_ids, ph, states[layer, pos], layer)
                rows = table.filter((pl.col("prompt") == p) & (pl.col("position") == pos) & (pl.col("layer") == layer)).sort("rank")
                order = np.argsort(-probs)[:k]
                assert rows["token_id"].to_list() == order.tolist()
                np.testing.assert_allclose(rows["probability"].to_numpy(), probs[order], rtol=1e-4, atol=1e-6)
                t = targets.filter((pl.col("prompt") == p) & (pl.col("position") == pos) & (pl.col("layer") == layer) & (pl.col("target") == "paris"))
                assert t["probability"][0] == pytest.approx(probs[paris], rel=1e-4, abs=1e-7)
                distinct.add(round(float(probs[order[0]]), 5))
    assert len(distinct) > 3  # the patch matters: sources give different outputs


def test_patchscope_placeholder_errors(tiny_hub_model):
    model = tiny_hub_model("llama")
    with pytest.raises(HubError, match="does not occur"):
        target_tokens(model.tokenizer, "cat cat dog", "mat")
    with pytest.raises(HubError, match="final norm"):
        LogitLens(LensOptions(lens="patchscope", final_norm="last"))
    with pytest.raises(HubError, match="--tuned-lens PATH"):
        LogitLens(LensOptions(lens="tuned"))


def _chunks(model, n_lines, seed, length=12):
    rng = random.Random(seed)
    words = " ".join(SENTENCES).split()
    texts = [" ".join(rng.choice(words) for _ in range(10)) for _ in range(n_lines)]
    return tl.chunk_ids(model.tokenizer, texts, length)


def test_training_lowers_heldout_kl(tiny_hub_model):
    """From the identity (KL of the logit lens), 20 package-style SGD steps lower the held-out
    KL of every layer below L; the untrained lens equals the logit lens exactly."""
    model = tiny_hub_model("llama")
    train_chunks, test_chunks = _chunks(model, 200, 0), _chunks(model, 40, 1)
    translators = tl.make_translators(int(model.describe()["d_model"]), model.n_layers)
    before = tl.evaluate(model, translators, test_chunks)
    np.testing.assert_allclose(before["tuned"], before["logit"], rtol=1e-6)
    options = tl.TrainOptions(steps=20, tokens_per_step=48, max_length=12, batch_size=2, autocast="off")
    grads = [p.requires_grad for p in model.torch_model.parameters()]
    result = tl.train(model, translators, train_chunks, options)
    assert [p.requires_grad for p in model.torch_model.parameters()] == grads  # the model is left as it was
    assert result.steps_done == 20 and len(result.losses) == 20
    after = tl.evaluate(model, translators, test_chunks)
    assert (after["tuned"].mean(0) < 0.8 * before["logit"].mean(0)).all(), (after["tuned"].mean(0), before["logit"].mean(0))


def test_vocab_sample_variant_also_trains(tiny_hub_model):
    model = tiny_hub_model("llama")
    train_chunks, test_chunks = _chunks(model, 200, 0), _chunks(model, 40, 1)
    translators = tl.make_translators(int(model.describe()["d_model"]), model.n_layers)
    options = tl.TrainOptions(steps=20, tokens_per_step=48, max_length=12, batch_size=2, autocast="off", vocab_sample=20)
    tl.train(model, translators, train_chunks, options)
    after = tl.evaluate(model, translators, test_chunks)
    assert (after["tuned"].mean(0) < after["logit"].mean(0)).all()


def test_snapshot_resume_gives_the_same_lens(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    chunks = _chunks(model, 100, 0)
    d = int(model.describe()["d_model"])
    options = tl.TrainOptions(steps=6, tokens_per_step=24, max_length=12, autocast="off", checkpoint_every=2)
    straight = tl.make_translators(d, model.n_layers)
    tl.train(model, straight, chunks, options)
    calls = {"n": 0}

    def stop_after_three():
        calls["n"] += 1
        return calls["n"] >= 3

    first = tl.make_translators(d, model.n_layers)
    part = tl.train(model, first, chunks, options, checkpoint_dir=tmp_path, should_stop=stop_after_three)
    assert part.steps_done == 3 and tl.latest_snapshot(tmp_path).name == "snapshot_3.pth"
    resumed = tl.make_translators(d, model.n_layers)
    rest = tl.train(model, resumed, chunks, options, checkpoint_dir=tmp_path, resume=True)
    assert rest.resumed_from == 3 and rest.steps_done == 6
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    other = tl.TrainOptions(steps=6, tokens_per_step=24, max_length=12, autocast="off", checkpoint_every=2, seed=7)
    with pytest.raises(HubError, match="other options"):
        tl.train(model, tl.make_translators(d, model.n_layers), chunks, other, checkpoint_dir=tmp_path, resume=True)


def test_saved_format_is_the_packages(tmp_path, tiny_hub_model):
    """config.json has exactly TunedLensConfig's fields; params.pt is layer_translators'
    state_dict ("{l}.weight" [d, d], "{l}.bias" [d]); and a folder written as the package's
    TunedLens.save writes it (json.dump of the config with an unknown key, torch.save of a
    ModuleList state_dict) loads back to the same numbers."""
    model = tiny_hub_model("llama")
    d, n = int(model.describe()["d_model"]), model.n_layers
    translators = _random_lens(model)
    folder = tl.save_lens(tmp_path / "ours", translators, tl.model_config(model))
    config = json.loads((folder / "config.json").read_text())
    assert set(config) == {"base_model_name_or_path", "d_model", "num_hidden_layers", "bias", "base_model_revision", "unembed_hash", "lens_type"}
    assert config["lens_type"] == "linear_tuned_lens" and config["d_model"] == d and config["num_hidden_layers"] == n
    state = torch.load(folder / "params.pt", weights_only=True)
    expected = set()
    for i in range(n):
        expected |= {f"{i}.weight", f"{i}.bias"}
    assert set(state) == expected and tuple(state["0.weight"].shape) == (d, d)

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    modules = torch.nn.ModuleList([torch.nn.Linear(d, d) for _ in range(n)])
    torch.save(modules.state_dict(), theirs / "params.pt")
    with open(theirs / "config.json", "w") as f:
        json.dump({"base_model_name_or_path": "x", "d_model": d, "num_hidden_layers": n, "bias": True, "unembed_hash": None,
                   "lens_type": "linear_tuned_lens", "some_future_key": 1}, f)
    loaded, _ = tl.load_lens(theirs, model)
    for key, value in modules.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save(torch.nn.ModuleList([torch.nn.Linear(d + 1, d + 1) for _ in range(n)]).state_dict(), bad / "params.pt")
    (bad / "config.json").write_text(json.dumps({"base_model_name_or_path": "x", "d_model": d + 1, "num_hidden_layers": n}))
    with pytest.raises(HubError, match="d_model"):
        tl.load_lens(bad, model)


def test_round_trip_with_the_tuned_lens_package(tmp_path, tiny_hub_model):
    """Both ways with the package itself: its saved lens loads here with the same parameters and
    the same decoded distribution, and ours loads there."""
    tuned_lens = pytest.importorskip("tuned_lens", reason="the tuned-lens package is not installed (pip install tuned-lens)")
    model = tiny_hub_model("llama")
    hf = model.torch_model
    lens = tuned_lens.TunedLens.from_model(hf)
    torch.manual_seed(3)
    with torch.no_grad():
        for layer in lens.layer_translators:
            layer.weight.normal_(0, 0.05)
            layer.bias.normal_(0, 0.2)
    lens.save(tmp_path / "pkg")
    ours, config = tl.load_lens(tmp_path / "pkg", model)
    assert config.unembed_hash == tl.unembed_hash(hf.lm_head.weight)
    for key, value in lens.layer_translators.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value)
    h = torch.randn(4, int(model.describe()["d_model"]))
    with torch.no_grad():
        for i in range(model.n_layers):
            theirs = lens(h, idx=i)
            mine = tl.torch_unembed(model, h + ours[i](h))
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    tl.save_lens(tmp_path / "hub", ours, tl.model_config(model))
    back = tuned_lens.TunedLens.from_model_and_pretrained(hf, str(tmp_path / "hub"))
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(back.layer_translators.state_dict()[key], value)


def test_cli_train_then_lens_tuned(tmp_path, tiny_dir):
    folder = tiny_dir("llama")
    text = tmp_path / "text"
    text.mkdir()
    rng = random.Random(0)
    words = " ".join(SENTENCES).split()
    (text / "a.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(10)) for _ in range(120)))
    runner = CliRunner()
    out = tmp_path / "lens"
    args = ["lens", "train", "-o", out, "-m", folder, "--text", text, "--steps", 4, "--tokens-per-step", 32, "--max-length", 16,
            "--eval-length", 16, "--eval-chunks", 4, "--no-progress", "--autocast", "off"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file() and (out / "params.pt").is_file()
    report = json.loads((out / "training.json").read_text())
    assert report["complete"] and report["steps_done"] == 4 and len(report["heldout"]["kl"]) == 3 * 3
    again = runner.invoke(app, [str(a) for a in args])
    assert again.exit_code == 2 and "already holds a lens" in again.output
    result = runner.invoke(app, ["analyze", "logit-lens", "-m", str(folder), "-p", "the cat sat", "--lens", "tuned", "--tuned-lens", str(out),
                                 "--out", str(tmp_path / "runs"), "--no-progress"])
    assert result.exit_code == 0, result.output
    missing = runner.invoke(app, ["analyze", "logit-lens", "-m", str(folder), "-p", "the cat sat", "--lens", "tuned"])
    assert missing.exit_code == 2 and "--tuned-lens PATH" in missing.output
