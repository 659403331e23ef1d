"""``hub intervene arithmetic`` (semantic hub A17) against plain transformers with torch hooks.

The tiny model here has its own word-level vocabulary that CONTAINS every token the experiment
uses: the digits 0..99, ``=``, ``+``, the number words, ``-`` (``twenty-one`` splits into three
words), ``equals``, ``to`` and ``plus`` (the shared tiny tokenizer of conftest.py has none of
them: its vector would be ``h(<unk>) − h(<unk>) = 0`` and any test vacuous). Its decoder joins
tokens without spaces, so ``8=5+`` decodes back to ``8=5+`` and the released code's string
scoring applies as on a real tokenizer.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from analyses.arithmetic_intervention import (
    ArithmeticIntervention,
    ArithmeticOptions,
    accuracy_table,
    auto_layers,
    number_words,
    paper_items,
    run_arithmetic,
    score,
    select_items,
    wilson_interval,
)
from hubclient.errors import HubError
from hubclient.runner import RunConfig

WORDS = sorted({w for v in range(100) for w in number_words(v).split("-")} | {"-", "equals", "to", "plus", "=", "+"} | {str(v) for v in range(100)})


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from conftest import SENTENCES, SPECIALS

    words = sorted({w for s in SENTENCES for w in s.split()} | set(WORDS))
    vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def _build(family: str):
    from transformers import AutoModelForCausalLM

    from conftest import spread_weights, tiny_config

    tokenizer = _tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tokenizer)), dtype=torch.float32)
    spread_weights(model)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def number_model():
    """``number_model(family)``: a wrapped tiny model whose vocabulary has the number words."""
    from hubclient.models import wrap_model

    cache = {}

    def make(family: str = "llama"):
        if family not in cache:
            model, tokenizer = _build(family)
            cache[family] = wrap_model(model, tokenizer, model_id=f"tiny-numbers-{family}")
        return cache[family]

    return make


# --------------------------------------------------------------------------- independent references


def _hf_vector(model, item, layer):
    """h_l(positive) − h_l(negative) at the last token, from transformers' hidden_states."""
    out = []
    for text in (item.positive, item.negative):
        with torch.no_grad():
            hs = model.torch_model(**model.tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states
        out.append(hs[layer][0, -1])
    return out[0] - out[1]


def _hf_generate(model, text, add_layer, delta, n):
    """Greedy generate with ``delta`` added to residual layer ``add_layer`` (output of block
    ``add_layer``; 0 = input of block 1) at the prompt's last position, prompt pass only."""
    blocks = model.torch_model.get_submodule(model.arch.layers)
    calls = {"n": 0}

    def post(mod, args, out):
        hidden = (out[0] if isinstance(out, tuple) else out).clone()
        if calls["n"] == 0:
            hidden[0, -1] += delta
        calls["n"] += 1
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    def pre(mod, args, kwargs):
        if calls["n"] == 0:
            hidden = (args[0] if args else kwargs["hidden_states"]).clone()
            hidden[0, -1] += delta
            calls["n"] += 1
            return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})
        calls["n"] += 1
        return None

    handle = None
    if delta is not None:
        handle = blocks[0].register_forward_pre_hook(pre, with_kwargs=True) if add_layer == 0 else blocks[add_layer - 1].register_forward_hook(post)
    ids = model.tokenizer(text, return_tensors="pt")
    try:
        with torch.no_grad():
            out = model.torch_model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
    finally:
        if handle is not None:
            handle.remove()
    ids = out[0].tolist()
    eos = model.tokenizer.eos_token_id
    n_prompt = model.tokenizer(text, return_tensors="pt")["input_ids"].shape[1]
    new = ids[n_prompt:]
    new = new[: new.index(eos)] if eos in new else new
    return model.tokenizer.decode(ids[:n_prompt] + new, skip_special_tokens=True)


# --------------------------------------------------------------------------- data, words, scoring


def test_number_words_match_num2words_and_items_follow_the_released_code():
    from num2words import num2words

    for v in range(100):
        assert number_words(v) == num2words(v, lang="en")
    with pytest.raises(HubError, match="0..99"):
        number_words(100)
    items = paper_items()
    assert len(items) == 846
    counts = {}
    for item in items:
        assert 1 <= item.target <= 9 and 1 <= item.other <= 99 - item.target and item.result < 100
        counts[item.target] = counts.get(item.target, 0) + 1
    assert counts == {t: 99 - t for t in range(1, 10)}
    first = items[0]
    assert (first.prompt, first.positive, first.negative) == ("2=1+", "two equals to two plus", "two equals to one plus")
    eight = next(i for i in items if i.other == 5 and i.target == 3)
    assert (eight.prompt, eight.positive, eight.negative) == ("8=5+", "eight equals to six plus", "eight equals to five plus")
    assert next(i for i in items if i.other == 20 and i.target == 1).positive == "twenty-one equals to twenty-one plus"
    sub = select_items(50, seed=3)
    assert len(sub) == 50 and len(set(sub)) == 50 and set(sub) <= set(items)
    assert sub == select_items(50, seed=3) and sub != select_items(50, seed=4)
    assert [items.index(i) for i in sub] == sorted(items.index(i) for i in sub)


@pytest.mark.parametrize(
    ("decoded", "target", "category"),
    [
        ("8=5+3", 3, "unchanged"),
        ("8=5+3=8\n", 3, "unchanged"),
        ("8=5+2+1", 3, "correct"),
        ("8=5+2+1=8 and more", 3, "correct"),
        ("8=5+2", 3, "other"),  # a bare target − 1 counts as other in the released code
        ("8=5+2+2", 3, "other"),
        ("8=5+21", 3, "other"),
        ("8=5+ 3", 3, "other"),
        ("8=5 +3", 3, "other"),
        ("2=1+0+1", 1, "correct"),
        ("2=1+1", 1, "unchanged"),
    ],
)
def test_score_is_the_released_codes_prefix_rule(decoded, target, category):
    prompt = decoded[:4] if decoded.startswith(("8=5+", "2=1+")) else "8=5+"
    assert score(decoded, prompt, target) == category


def test_wilson_interval_matches_scipy():
    from scipy.stats import binomtest

    for k, n in [(0, 10), (3, 10), (10, 10), (17, 400), (200, 400), (1, 1)]:
        expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-9)
    with pytest.raises(HubError):
        wilson_interval(3, 0)


def test_auto_layers_are_the_papers_or_proportional():
    assert auto_layers("meta-llama/Llama-2-7b-hf", 32, "next") == [30]
    assert auto_layers("meta-llama/Meta-Llama-3-8B", 32, "next") == [25]
    assert auto_layers("google/gemma-3-270m", 18, "next") == [14, 17]
    assert auto_layers("tiny", 3, "next") == [2]
    assert auto_layers("tiny", 3, "same") == [2, 3]


def test_the_tiny_vocabulary_has_every_word_of_the_experiment(number_model):
    model = number_model("llama")
    unk = model.tokenizer.unk_token_id
    for item in paper_items():
        for text in (item.prompt, item.positive, item.negative):
            ids = model.tokenizer(text)["input_ids"]
            assert unk not in ids, text
    assert model.tokenizer.decode(model.tokenizer("43=42+")["input_ids"], skip_special_tokens=True) == "43=42+"


# --------------------------------------------------------------------------- numbers against transformers


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_vectors_match_transformers_hidden_states(number_model, family):
    model = number_model(family)
    analysis = ArithmeticIntervention(ArithmeticOptions(layers="0,1,2", n=7, seed=1))
    tokens = []
    for item in analysis.items:
        tokens.append(model.tokenizer(item.prompt)["input_ids"])
    analysis.prepare(model, [i.prompt for i in analysis.items], tokens)
    analysis.setup(model, None)
    for layer in (0, 1, 2):
        assert analysis.vectors[layer].shape == (7, model.torch_model.config.hidden_size)
        for i, item in enumerate(analysis.items):
            expected = _hf_vector(model, item, layer)
            if layer == 0:  # both texts end in the same token "plus": no context yet
                assert expected.norm() == 0
            else:  # words in the vocabulary: the vector is not zero
                assert expected.norm() > 1e-3
            torch.testing.assert_close(analysis.vectors[layer][i], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("family", "add_at"), [("llama", "next"), ("gemma3_text", "next"), ("llama", "same")])
def test_steered_generations_match_hooked_generate(tmp_path, number_model, family, add_at):
    model = number_model(family)
    options = ArithmeticOptions(layers="1,2" if add_at == "next" else "0,2", add_at=add_at, strengths="0,1,3", n=6, seed=0, max_new_tokens=5)
    run = run_arithmetic(options, RunConfig(out=tmp_path, progress=False, batch_size=4), model=model)
    answers = run.table("answers")
    layers = [1, 2] if add_at == "next" else [0, 2]
    assert answers.height == 6 * 2 * 3 and sorted(answers["layer"].unique().to_list()) == layers
    flipped_differs = steering_changes = 0
    for row in answers.iter_rows(named=True):
        item = next(i for i in select_items(6, 0) if i.prompt == row["prompt"])
        add = row["layer"] + 1 if add_at == "next" else row["layer"]
        assert row["add_layer"] == add
        v = _hf_vector(model, item, row["layer"])
        assert row["vector_norm"] == pytest.approx(v.norm().item(), rel=1e-4)
        plain = _hf_generate(model, item.prompt, add, None, 5)
        if row["strength"] == 0:
            assert row["decoded"] == plain
            continue
        expected = _hf_generate(model, item.prompt, add, row["strength"] * v, 5)
        assert row["decoded"] == expected
        flipped_differs += _hf_generate(model, item.prompt, add, -row["strength"] * v, 5) != expected
        steering_changes += expected != plain
        assert row["category"] == score(row["decoded"], item.prompt, item.target)
    assert steering_changes > 0  # the vector does something on this model
    assert flipped_differs > 0  # so a sign error would fail the equality above


def test_adding_at_the_next_layer_differs_from_the_same_layer(tmp_path, number_model):
    """The released code reads at l and adds at l+1 (pyvene block_output l): check that the
    test above could tell the two conventions apart."""
    model = number_model("llama")
    differ = 0
    for item in select_items(6, 0):
        v = 3 * _hf_vector(model, item, 1)
        differ += _hf_generate(model, item.prompt, 2, v, 5) != _hf_generate(model, item.prompt, 1, v, 5)
    assert differ > 0


def test_accuracy_counts_and_intervals(tmp_path, number_model):
    from scipy.stats import binomtest

    model = number_model("llama")
    run = run_arithmetic(ArithmeticOptions(layers="2", strengths="0,2", n=12, seed=5, max_new_tokens=4), RunConfig(out=tmp_path, progress=False, batch_size=7), model=model)
    answers, acc = run.table("answers"), run.table("accuracy")
    assert acc.height == 2 and acc["n"].to_list() == [12, 12]
    for row in acc.iter_rows(named=True):
        cats = answers.filter(pl.col("strength") == row["strength"])["category"].to_list()
        for cat in ("correct", "unchanged", "other"):
            k = cats.count(cat)
            ci = binomtest(k, 12).proportion_ci(method="wilson")
            assert row[cat] == pytest.approx(100 * k / 12)
            assert (row[f"{cat}_low"], row[f"{cat}_high"]) == pytest.approx((100 * ci.low, 100 * ci.high), abs=1e-6)
        assert row["correct"] + row["unchanged"] + row["other"] == pytest.approx(100)
    assert accuracy_table(answers).equals(acc)
    manifest = run.manifest
    assert manifest["read_layers"] == [2] and manifest["add_layers"] == [3] and manifest["n_items"] == 12
    assert "pyvene block_output" in manifest["layer_convention"]
    assert (run.path / "plots" / "arithmetic_correct.png").is_file()
    summary = ArithmeticIntervention.summary(run).splitlines()
    first = acc.row(0, named=True)
    assert summary[0].startswith(f"  layer 2→3 strength 0: correct {first['correct']:.1f}% [{first['correct_low']:.1f}, {first['correct_high']:.1f}]")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(protocol="paper"), "unknown --protocol"),
        (dict(add_at="before"), "unknown --add-at"),
        (dict(n=0), "--n must be between 1 and 846"),
        (dict(n=847), "--n must be between 1 and 846"),
        (dict(layers="3"), "added at layer 4"),
        (dict(layers="4", add_at="same"), "out of range"),
        (dict(strengths="one"), "not a number"),
        (dict(max_new_tokens=0), "at least 1"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, number_model, changes, message):
    model = number_model("llama")
    settings = dict(n=2, layers="1")
    settings.update(changes)
    with pytest.raises(HubError, match=message):
        run_arithmetic(ArithmeticOptions(**settings), RunConfig(out=tmp_path / "runs", progress=False), model=model)
    assert not (tmp_path / "runs").exists()


def test_cli_writes_tables_manifest_and_summary(tmp_path):
    from typer.testing import CliRunner

    from hubclient.cli import app

    model, tokenizer = _build("llama")
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    result = CliRunner().invoke(app, [
        "intervene", "arithmetic", "--model", str(folder), "--n", "3", "--layer", "1", "--strength", "0,2", "--max-new-tokens", "3",
        "--out", str(tmp_path), "--name", "a", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["analysis"] == "arithmetic" and manifest["add_layers"] == [2]
    acc = pl.read_parquet(tmp_path / "a" / "accuracy.parquet")
    assert acc["n"].to_list() == [3, 3]
    assert "  layer 1→2 strength 0: correct " in result.output and "(n=3)" in result.output
    np.testing.assert_allclose(acc["correct"] + acc["unchanged"] + acc["other"], 100.0)
