"""ActAdd steering (``hub intervene steer``) against plain transformers ``generate`` with hooks."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from analyses.steer import SteerOptions, run_steer
from hubclient.edits import AddEdit, contrast_tokens, generate_with_edits, steering_vectors
from hubclient.errors import HubError
from hubclient.runner import RunConfig

from conftest import SHARED_DATA

PROMPTS = ["the cat sat on the mat", "a dog ran in the park and", "one two three four"]
# internal-score words: in the tiny vocabulary and never part of the steering prompts below
# ("the cat" / "a dog"), which the score leaves out
WORDS = dict(positive_words=["park", "paris"], negative_words=["ten", "nine"])


class FakeClassifier:
    """A plug-in scorer: P(positive) = share of the word 'cat' among the words."""

    def positive_probability(self, texts):
        out = []
        for t in texts:
            words = t.split()
            out.append(words.count("cat") / len(words) if words else 0.5)
        return np.array(out)

    def describe(self):
        return {"name": "fake"}


def fake_classifier(data):
    return FakeClassifier()


def _hf_hidden(model, text):
    ids = model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model.torch_model(**ids, output_hidden_states=True).hidden_states


def _hf_generate(model, text, n, layer=None, delta=None, every=False, start=0, processor=None):
    """Greedy generation with a forward hook adding ``delta`` ([k, d] rows from position
    ``start``, or [d] everywhere) to block ``layer``'s output (independent of nnsight), with an
    optional logits processor."""
    hf = model.torch_model
    blocks = hf.get_submodule(model.arch.layers)
    state = {"step": 0}

    def hook(mod, args, out):
        hidden = (out[0] if isinstance(out, tuple) else out).clone()
        if every:
            hidden = hidden + delta
        elif state["step"] == 0:
            hidden[0, start : start + delta.shape[0]] += delta
        state["step"] += 1
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handle = blocks[layer - 1].register_forward_hook(hook) if layer else None
    ids = model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        kwargs = {"logits_processor": [processor]} if processor is not None else {}
        out = hf.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=model.tokenizer.pad_token_id, **kwargs)
    if handle:
        handle.remove()
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    eos = model.tokenizer.eos_token_id
    return new[: new.index(eos)] if eos in new else new


def test_steering_vector_is_the_aligned_hidden_state_difference(tiny_hub_model):
    model = tiny_hub_model("llama")
    pos, neg, pads = contrast_tokens(model, "the cat sat", "a dog")
    assert len(pos) == len(neg) == 4 and pads == 1
    vectors = steering_vectors(model, "the cat sat", "a dog", [0, 2, 3])
    with torch.no_grad():
        hp = model.torch_model(input_ids=torch.tensor([pos]), output_hidden_states=True).hidden_states
        hn = model.torch_model(input_ids=torch.tensor([neg]), output_hidden_states=True).hidden_states
    for layer in (0, 2):
        torch.testing.assert_close(vectors[layer], hp[layer][0] - hn[layer][0], rtol=1e-5, atol=1e-5)
    assert vectors[3].shape == (4, model.torch_model.config.hidden_size)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_coefficient_zero_equals_unsteered_and_plain_generate(tiny_hub_model, family):
    model = tiny_hub_model(family)
    tokens = [model.tokenizer(p)["input_ids"] for p in PROMPTS]
    vectors = steering_vectors(model, "the cat", "a dog", [2])
    zero = generate_with_edits(model, tokens, [[AddEdit(2, 0, vectors[2], 0.0)]] * 3, max_new_tokens=6)
    plain = generate_with_edits(model, tokens, [[], [], []], max_new_tokens=6)
    assert zero.new_tokens == plain.new_tokens
    for i, text in enumerate(PROMPTS):
        assert plain.new_tokens[i] == _hf_generate(model, text, 6)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_steered_generation_matches_a_hooked_transformers_generate(tiny_hub_model, family):
    model = tiny_hub_model(family)
    tokens = [model.tokenizer(p)["input_ids"] for p in PROMPTS]
    vectors = steering_vectors(model, "the cat", "a dog", [1, 2])
    for layer, coeff in ((1, 4.0), (2, 8.0)):
        out = generate_with_edits(model, tokens, [[AddEdit(layer, 0, vectors[layer], coeff)]] * 3, max_new_tokens=6)
        every = generate_with_edits(model, tokens, [[AddEdit(layer, 0, vectors[layer][-1], coeff, every_step=True)]] * 3, max_new_tokens=6)
        for i, text in enumerate(PROMPTS):
            assert out.new_tokens[i] == _hf_generate(model, text, 6, layer, coeff * vectors[layer])
            assert every.new_tokens[i] == _hf_generate(model, text, 6, layer, coeff * vectors[layer][-1], every=True)


def test_internal_score_equals_direct_log_probabilities(tiny_hub_model):
    model = tiny_hub_model("llama")
    tok = model.tokenizer
    pos_ids = tok("cat park", add_special_tokens=False)["input_ids"]
    neg_ids = tok("dog mat", add_special_tokens=False)["input_ids"]
    tokens = [tok(p)["input_ids"] for p in PROMPTS]
    out = generate_with_edits(model, tokens, [[], [], []], max_new_tokens=1, token_sets=[pos_ids, neg_ids])
    for i, text in enumerate(PROMPTS):
        with torch.no_grad():
            lp = torch.log_softmax(model.torch_model(**tok(text, return_tensors="pt")).logits[0, -1].float(), -1)
        expected = torch.logsumexp(lp[pos_ids], 0) - torch.logsumexp(lp[neg_ids], 0)
        assert float(out.first_logprobs[i, 0] - out.first_logprobs[i, 1]) == pytest.approx(expected.item(), abs=1e-4)


def test_greedy_is_deterministic_and_sampling_is_seeded(tiny_hub_model):
    model = tiny_hub_model("gemma3_text")
    tokens = [model.tokenizer(p)["input_ids"] for p in PROMPTS]
    runs = []
    for _ in range(2):
        runs.append(generate_with_edits(model, tokens, [[], [], []], max_new_tokens=8).new_tokens)
    assert runs[0] == runs[1]
    a = generate_with_edits(model, tokens, [[], [], []], max_new_tokens=8, sample=True, seed=3).new_tokens
    b = generate_with_edits(model, tokens, [[], [], []], max_new_tokens=8, sample=True, seed=3).new_tokens
    assert a == b


def test_sweep_writes_side_by_side_and_effects(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    options = SteerOptions(positive=["the cat"], negative=["a dog"], layers="1:2", coeffs="0,6", max_new_tokens=5,
                           classifier="test_steer:fake_classifier", **WORDS)
    run = run_steer(options, PROMPTS, RunConfig(out=tmp_path, progress=False, batch_size=4), model=model)
    gen = run.table("generations")
    assert gen.height == 3 * (1 + 2 * 2)
    side = run.table("side_by_side")
    zero = side.filter(pl.col("coeff") == 0)
    assert (zero["continuation"] == zero["unsteered"]).all()
    np.testing.assert_allclose(zero["delta_internal"].to_numpy(), 0.0, atol=1e-5)
    effects = run.table("effects")
    assert effects.height == 4 and set(effects["coeff"].to_list()) == {0.0, 6.0}
    for row in gen.iter_rows(named=True):  # the plug-in classifier's score is stored as is
        words = row["continuation"].split()
        assert row["sentiment"] == pytest.approx(words.count("cat") / len(words) if words else 0.5)
    manifest = run.manifest
    assert manifest["classifier"] == {"name": "fake"} and manifest["status"] == "complete"
    assert (run.path / "plots" / "steer_internal.png").is_file()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(layers="7"), "out of range"),
        (dict(coeffs="strong"), "is not a number"),
        (dict(coeffs="1,nan"), "not a finite number"),
        (dict(positive=[" "]), "--positive is empty"),
        (dict(positive=["the cat", "x"]), "one --negative per --positive"),
        (dict(positive=["the cat sat on the mat and the dog"]), "beyond prompt"),
        (dict(positions="40"), "beyond prompt"),
        (dict(positions="-1"), "negative"),
        (dict(positive_words=["zebra"]), "single token"),
        (dict(positive_words=["cat"]), "other than the steering words"),
        (dict(positive=[], negative=[]), "no steering vector"),
        (dict(unembed=["cat"]), "bad --vector"),
        (dict(unembed=["cat,zebra"]), "not in this model's vocabulary"),
        (dict(seeds="0,x"), "not an integer"),
        (dict(seeds="0", top_p=0.0), "--top-p"),
        (dict(perplexity="llama"), "unknown --perplexity"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, tiny_hub_model, changes, message):
    model = tiny_hub_model("llama")
    settings = dict(positive=["the cat"], negative=["a dog"], layers="2", classifier="none", **WORDS)
    settings.update(changes)
    with pytest.raises(HubError, match=message):
        run_steer(SteerOptions(**settings), PROMPTS, RunConfig(out=tmp_path / "runs", progress=False), model=model)
    assert not (tmp_path / "runs").exists()


def test_cli_steer_end_to_end(tmp_path, tiny_dir):
    from typer.testing import CliRunner

    from hubclient.cli import app

    args = ["intervene", "steer", "--model", str(tiny_dir("llama")), "--prompt", PROMPTS[0], "--prompt", PROMPTS[1],
            "--positive", "the cat", "--negative", "a dog", "--layer", "1,3", "--coeff", "0:4:2", "--max-new-tokens", "4",
            "--positive-words", "park,paris", "--negative-words", "ten,nine", "--out", str(tmp_path), "--name", "s", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    gen = pl.read_parquet(tmp_path / "s" / "generations.parquet")
    assert gen.height == 2 * (1 + 2 * 3)
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["classifier"] is None
    summary = result.output[result.output.index("mean Δ internal score"):].splitlines()
    assert len(summary) == 1 + 6 + 1 and summary[1].startswith("  layer 1 coeff 0: +0.000 (0% continuations changed)")
    effects = pl.read_parquet(tmp_path / "s" / "effects.parquet")
    best = effects.row(int(effects["delta_internal"].arg_max()), named=True)
    assert summary[-1] == f"  best: layer {best['layer']} coeff {best['coeff']:g}, Δ {best['delta_internal']:+.3f}"
    bad = CliRunner().invoke(app, [*args[:-5], "--coeff", "big", "--out", str(tmp_path), "--no-progress"])
    assert bad.exit_code == 2 and "error: --coeff value 'big' is not a number" in bad.output


def test_char_ngram_classifier_heldout_accuracy():
    data = SHARED_DATA / "sentiment"
    if not data.is_dir():
        pytest.skip(f"sentiment data not found at {data}")
    from hubclient.sentiment import CharNgramClassifier

    clf = CharNgramClassifier.train(data)
    for language in ("english", "spanish", "chinese"):
        assert clf.accuracy[language] > 0.65  # well above the ~50% of a coin (binary, balanced-ish)
    p = clf.positive_probability(["非常好，很喜欢", "太差了，退货"])
    assert p[0] > 0.5 > p[1]
