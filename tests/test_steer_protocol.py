"""Steering as the semantic hub code does it (paper-protocols.md A16, A18): the TransformerLens
sampler, unembedding vectors at the last token, perplexity / relevance, the per-seed report, the
MBPP ``range(`` task. Numbers are checked against plain transformers + torch hooks + numpy."""

from __future__ import annotations

import json
import random

import numpy as np
import polars as pl
import pytest
import torch

from analyses.steer import SteerOptions, Steer, range_call_tables, seed_summary, steering_word_ids, unembedding_vector
from hubclient.edits import AddEdit, generate_with_edits
from hubclient.exec.sampling import TLSampler
from hubclient.inputs.tasks.range_calls import arguments, classify, range_calls

from conftest import SHARED_DATA
from test_steer import _hf_generate

PROMPTS = ["the cat sat on the mat", "a dog ran in the park and", "one two three four"]
WORDS = dict(positive_words=["park", "paris"], negative_words=["ten", "nine"])


def _in_vocab(model, *words):
    tok = model.tokenizer
    for w in words:
        ids = tok(w, add_special_tokens=False)["input_ids"]
        assert ids and tok.unk_token_id not in ids, f"{w!r} is not in the tiny vocabulary: the test would be vacuous"


# --------------------------------------------------------------------------- the sampler


def _tl_reference(logits, tokens, temperature, top_p, penalty, pad):
    """numpy: TransformerLens sample_logits before the draw (temperature, freq penalty over
    the sequence, top-p by a full descending sort)."""
    out = logits.astype(np.float64) / temperature
    for b in range(out.shape[0]):
        counts = np.bincount(tokens[b], minlength=out.shape[1]).astype(np.float64)
        counts[pad] = 0
        out[b] -= penalty * counts
        order = np.argsort(-out[b], kind="stable")
        p = np.exp(out[b][order] - out[b].max())
        p /= p.sum()
        cum = np.cumsum(p)
        remove = cum > top_p
        remove[1:] = remove[:-1].copy()
        remove[0] = False
        out[b][order[remove]] = -np.inf
    return out


@pytest.mark.parametrize("peaked", [True, False])
def test_sampler_filter_equals_transformer_lens_rule(peaked):
    g = torch.Generator().manual_seed(0)
    vocab = 3000  # > 512: the peaked case takes the topk path, the flat one the full sort
    logits = torch.randn(4, vocab, generator=g) * (8.0 if peaked else 0.05)
    tokens = torch.randint(0, vocab, (4, 30), generator=g)
    tokens[:, :3] = 0  # left padding (pad id 0): not counted
    tokens[:, 5:9] = int(logits[0].argmax())  # a repeated favourite is pushed down
    sampler = TLSampler([0, 1, 2, 3], temperature=0.7, top_p=0.3, freq_penalty=1.0, pad_id=0)
    got = sampler.warp(tokens, logits).numpy()
    want = _tl_reference(logits.numpy(), tokens.numpy(), 0.7, 0.3, 1.0, 0)
    assert np.array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)
    assert finite.sum(1).min() >= 1 and (finite.sum(1) < vocab).all()


def test_sampler_draws_inside_the_nucleus_from_each_rows_own_seed():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 50, generator=g) * 3
    ids = torch.ones(3, 4, dtype=torch.long)
    nucleus = np.isfinite(TLSampler([0, 0, 0], top_p=0.5).warp(ids, logits).numpy())
    draws = {0: [], 7: []}
    for seed in (0, 7):
        sampler = TLSampler([seed, seed, seed], top_p=0.5)
        for _ in range(20):
            out = sampler(ids, logits)
            picked = out.argmax(-1)
            assert torch.isinf(out).sum() == 3 * 49  # one finite entry a row
            for r in range(3):
                assert nucleus[r, int(picked[r])]
            draws[seed].append(picked.tolist())
    # a row's stream depends on its seed only: the same row alone gives the same draws
    alone = TLSampler([7], top_p=0.5)
    for step in range(20):
        assert int(alone(ids[1:2], logits[1:2]).argmax()) == draws[7][step][1]
    assert draws[0] != draws[7]


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_seeded_steered_generation_equals_hooked_generate_with_the_same_sampler(tiny_hub_model, family):
    """Rows of one batch (different prompts, seeds, vectors) each equal a single-prompt HF
    generate with a forward hook and the same processor; the sign-flipped vector does not."""
    model = tiny_hub_model(family)
    _in_vocab(model, "cat", "dog")
    tokens = [model.tokenizer(p)["input_ids"] for p in PROMPTS]
    options = SteerOptions(positive=["the cat"], negative=["a dog"], layers="2", coeffs="6", seeds="3,4", top_p=0.6,
                           freq_penalty=1.0, classifier="none", max_new_tokens=8, **WORDS)
    analysis = Steer(options, None, None)
    analysis.prepare(model, PROMPTS, tokens)
    analysis.setup(model, None)
    vector = analysis.steer_plan.vectors[0][1][2]
    batches = analysis.make_batches(model, tokens, 64)
    from hubclient.edits import decode_generation
    from hubclient.exec.trace import trace_batch

    batch = batches[0]
    out = decode_generation(model, batch, trace_batch(model, analysis, batch))
    flipped_differs = False
    for r, (p, name, layer, coeff, seed) in enumerate(batch.meta["rows"]):
        delta = None if name is None else coeff * vector
        ref = _hf_generate(model, PROMPTS[p], 8, layer if name else None, delta, processor=TLSampler([seed], 1.0, 0.6, 1.0, 0))
        assert out.new_tokens[r] == ref
        if name is not None:
            flipped = _hf_generate(model, PROMPTS[p], 8, layer, -delta, processor=TLSampler([seed], 1.0, 0.6, 1.0, 0))
            flipped_differs |= flipped != out.new_tokens[r]
    assert flipped_differs


# --------------------------------------------------------------------------- scores at c != 0


def test_internal_score_under_steering_equals_a_hooked_forward(tiny_hub_model):
    model = tiny_hub_model("llama")
    tok = model.tokenizer
    _in_vocab(model, "park", "paris", "ten", "nine")
    pos = tok("park paris", add_special_tokens=False)["input_ids"]
    neg = tok("ten nine", add_special_tokens=False)["input_ids"]
    v = torch.randn(2, model.torch_model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    tokens = [tok(p)["input_ids"] for p in PROMPTS]
    out = generate_with_edits(model, tokens, [[AddEdit(2, 1, v, 3.0)]] * 3, max_new_tokens=1, token_sets=[pos, neg])
    blocks = model.torch_model.get_submodule(model.arch.layers)

    def score(text, sign):
        def hook(mod, args, o):
            h = (o[0] if isinstance(o, tuple) else o).clone()
            h[0, 1:3] += sign * 3.0 * v
            return (h, *o[1:]) if isinstance(o, tuple) else h

        handle = blocks[1].register_forward_hook(hook)
        with torch.no_grad():
            lp = torch.log_softmax(model.torch_model(**tok(text, return_tensors="pt")).logits[0, -1].float(), -1)
        handle.remove()
        return float(torch.logsumexp(lp[pos], 0) - torch.logsumexp(lp[neg], 0))

    for i, text in enumerate(PROMPTS):
        got = float(out.first_logprobs[i, 0] - out.first_logprobs[i, 1])
        assert got == pytest.approx(score(text, 1.0), abs=1e-4)
        assert abs(got - score(text, -1.0)) > 1e-3  # the sign-flipped vector gives another score


def test_steering_words_are_left_out_of_the_internal_score(tiny_hub_model):
    model = tiny_hub_model("llama")
    _in_vocab(model, "cat", "dog", "park")
    ids = steering_word_ids(model.tokenizer, ["cat", "dog"])
    cat = model.tokenizer("cat", add_special_tokens=False)["input_ids"][0]
    dog = model.tokenizer("dog", add_special_tokens=False)["input_ids"][0]
    assert {cat, dog} <= ids
    options = SteerOptions(positive=["cat"], negative=["dog"], layers="1", classifier="none", positive_words=["cat", "park"], negative_words=["dog", "ten"])
    analysis = Steer(options)
    analysis.prepare(model, PROMPTS, [model.tokenizer(p)["input_ids"] for p in PROMPTS])
    plan = analysis.steer_plan
    assert cat not in plan.pos_ids and dog not in plan.neg_ids and plan.pos_tokens == ["park"] and plan.neg_tokens == ["ten"]
    assert sorted(plan.excluded) == ["cat", "dog"]


def test_perplexity_and_relevance_equal_direct_transformers_computations(tiny_hub_model):
    model = tiny_hub_model("gemma3_text")
    hf, tok = model.torch_model, model.tokenizer
    analysis = Steer(SteerOptions(perplexity="self", relevance="self", classifier="none", **WORDS))
    prompts = [tok(p)["input_ids"] for p in PROMPTS]
    conts = [tok("park and the", add_special_tokens=False)["input_ids"], [], tok("ten", add_special_tokens=False)["input_ids"]]
    got = analysis._perplexities(model, prompts, conts)
    for ids, new, value in zip(prompts, conts, got):
        if not new:
            assert np.isnan(value)
            continue
        with torch.no_grad():
            lp = torch.log_softmax(hf(input_ids=torch.tensor([ids + new])).logits[0].float(), -1)
        nll = -sum(float(lp[len(ids) - 1 + i, t]) for i, t in enumerate(new)) / len(new)
        assert value == pytest.approx(np.exp(nll), rel=1e-4)
    emb = analysis._embed(hf, model, [prompts[0], prompts[1]])
    for row, ids in enumerate(prompts[:2]):
        with torch.no_grad():
            h = hf(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0].float()
        ref = h.mean(0) / h.mean(0).norm()
        torch.testing.assert_close(emb[row], ref, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- unembedding vectors (A18)


def test_unembedding_vector_at_the_last_token_equals_a_hooked_generate(tiny_hub_model):
    model = tiny_hub_model("llama")
    _in_vocab(model, "cat", "dog")
    vector, (a, b) = unembedding_vector(model, "cat", "dog")
    w = model.torch_model.get_output_embeddings().weight.detach()
    torch.testing.assert_close(vector[0], w[a] - w[b])
    assert a == model.tokenizer("cat", add_special_tokens=False)["input_ids"][0]
    tokens = [model.tokenizer(p)["input_ids"] for p in PROMPTS]
    coeff, layer = 4.0, 2
    edits = []
    for ids in tokens:
        edits.append([AddEdit(layer, len(ids) - 1, vector, coeff)])
    out = generate_with_edits(model, tokens, edits, max_new_tokens=6)
    flipped_differs = False
    for i, text in enumerate(PROMPTS):
        start = len(tokens[i]) - 1
        assert out.new_tokens[i] == _hf_generate(model, text, 6, layer, coeff * vector, start=start)
        flipped_differs |= out.new_tokens[i] != _hf_generate(model, text, 6, layer, -coeff * vector, start=start)
    assert flipped_differs


# --------------------------------------------------------------------------- range( task


def test_range_arguments_follow_the_released_parser():
    assert arguments("n)") == ["n"]
    assert arguments("0, len(a)):\n") == ["0", "len(a)"]
    assert arguments("f(a, b), 2)") == ["f(a, b)", "2"]
    assert arguments(" )") == []
    assert arguments("n") == []  # never closed: the unfinished argument is dropped
    assert arguments("") == []
    assert classify(["n"], ["0", "n"]) == "correct"
    assert classify(["n"], ["n"]) == "unchanged"
    assert classify(["n"], ["1", "n"]) == "other"


def test_range_prompts_from_mbpp_records(tmp_path):
    records = [
        {"task_id": 1, "code": "def f(n):\r\n\tfor i in range(n):\r\n\t\tprint(range (2, i))\r\n\treturn [x for x in range (len(n))]"},
        {"task_id": 2, "code": "s = 'é'; t = range(3)"},
        {"task_id": 3, "code": "x = 1"},
    ]
    path = tmp_path / "mbpp.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    calls = range_calls(path)
    assert [(c.task_id, c.argument) for c in calls] == [(1, "n"), (1, "len(n)"), (2, "3")]
    assert calls[0].prompt == "def f(n):\r\n\tfor i in range("
    assert calls[1].prompt.endswith("return [x for x in range (")
    assert calls[2].prompt == "s = 'é'; t = range("  # a non-ASCII byte column


def test_range_prompts_of_the_real_mbpp():
    path = SHARED_DATA / "mbpp" / "mbpp.jsonl"
    if not path.is_file():
        pytest.skip(f"MBPP not found at {path}")
    calls = range_calls(path)
    assert len(calls) == 182
    for c in calls:
        assert c.prompt.endswith(("range(", "range ("))


def test_range_call_tables_count_outcomes_against_the_unsteered_row():
    rows = []
    def add(p, steered, coeff, text):
        rows.append({"prompt": p, "steered": steered, "vector": "v" if steered else None, "layer": 3 if steered else None, "coeff": coeff, "continuation": text})
    add(0, False, None, "n):")
    add(0, True, 10.0, "0, n):")
    add(0, True, 20.0, "n):")
    add(1, False, None, "0, n):")  # two arguments unsteered: dropped
    add(1, True, 10.0, "0, 0, n):")
    add(2, False, None, "len(a))")
    add(2, True, 10.0, "1, len(a))")
    add(2, True, 20.0, "0, len(a))")
    gen = pl.DataFrame(rows, schema={"prompt": pl.Int64, "steered": pl.Boolean, "vector": pl.String, "layer": pl.Int64, "coeff": pl.Float64, "continuation": pl.String})
    rates = range_call_tables(gen)["range_calls"]
    c10 = rates.filter(pl.col("coeff") == 10.0).row(0, named=True)
    c20 = rates.filter(pl.col("coeff") == 20.0).row(0, named=True)
    assert (c10["n"], c10["correct"], c10["other"]) == (2, 0.5, 0.5)
    assert (c20["n"], c20["correct"], c20["unchanged"]) == (2, 0.5, 0.5)
    assert c10["correct_lo"] < 0.5 < c10["correct_hi"]


# --------------------------------------------------------------------------- A16 report and data


def test_seed_summary_is_the_mean_over_seeds_of_prompt_means():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for p in range(3):
            for steered in (False, True):
                text = "" if (p == 0 and seed == 1 and steered) else "x"
                rows.append({"prompt": p, "language": "chinese", "seed": seed, "steered": steered, "vector": "v" if steered else None,
                             "layer": 10 if steered else None, "coeff": 5.0 if steered else None, "continuation": text,
                             "sentiment_diff": float(rng.uniform(-1, 1)), "perplexity": float(rng.uniform(1, 9)) if p else float("inf"),
                             "relevance": float(rng.uniform(0, 1)), "internal_score": float(rng.normal())})
    gen = pl.DataFrame(rows)
    out = seed_summary(gen)
    steered = out.filter(pl.col("vector") == "v").row(0, named=True)
    per_seed = []
    for seed in range(4):
        vals = [r["sentiment_diff"] for r in rows if r["steered"] and r["seed"] == seed and r["continuation"]]
        per_seed.append(np.mean(vals))
    assert steered["sentiment_diff"] == pytest.approx(np.mean(per_seed))
    assert steered["sentiment_diff_std"] == pytest.approx(np.std(per_seed))
    half = 3.182 * np.std(per_seed, ddof=1) / 2
    assert steered["sentiment_diff_hi"] == pytest.approx(np.mean(per_seed) + half, rel=1e-3)
    ppl = [np.mean([r["perplexity"] for r in rows if r["steered"] and r["seed"] == s and r["continuation"] and np.isfinite(r["perplexity"])]) for s in range(4)]
    assert steered["perplexity"] == pytest.approx(np.mean(ppl))  # inf dropped as the reporter does
    assert steered["n_prompts"] == 3 and steered["n_seeds"] == 4
    base = []
    for seed in range(4):
        base.append(np.mean([r["sentiment_diff"] for r in rows if not r["steered"] and r["seed"] == seed]))
    paired = np.array(per_seed) - np.array(base)
    assert steered["delta_sentiment_diff"] == pytest.approx(paired.mean())
    assert steered["delta_sentiment_diff_lo"] == pytest.approx(paired.mean() - 3.182 * paired.std(ddof=1) / 2, rel=1e-3)
    assert out.filter(pl.col("vector").is_null())["delta_sentiment_diff"][0] is None


def test_protocol_prompts_are_the_seed_0_sample_with_the_prefix():
    data = SHARED_DATA / "sentiment"
    if not data.is_dir():
        pytest.skip(f"sentiment data not found at {data}")
    from hubclient.inputs.sentiment import PROTOCOL_PREFIX, protocol_prompts, read_split

    prompts, idx, split = protocol_prompts(data, "spanish", 5)
    rows = read_split(data, "spanish", "train", labels=None)["text"].to_list()
    expected = random.Random(0).sample(range(len(rows)), 1000)[:5]
    assert split == "train.csv" and idx == expected
    assert prompts == [PROTOCOL_PREFIX["spanish"] + rows[i] for i in expected]
    assert prompts[0].startswith("Todo el texto siguiente está en español. ")
    zh, _, zh_split = protocol_prompts(data, "chinese", 3)
    assert zh_split == "valid.csv" and zh[0].startswith("接下来的文字全部是中文的。")
    state = random.getstate()
    protocol_prompts(data, "chinese", 2)
    assert random.getstate() == state  # the global RNG is left alone


def test_three_class_classifier_scores_positive_minus_negative():
    data = SHARED_DATA / "sentiment"
    if not data.is_dir():
        pytest.skip(f"sentiment data not found at {data}")
    from hubclient.inputs.sentiment import LABELS3, CharNgramClassifier

    clf = CharNgramClassifier.train(data, labels=LABELS3)
    texts = ["非常好，很喜欢", "太差了，退货"]
    proba = clf.pipeline.predict_proba(texts)
    classes = list(clf.pipeline.classes_)
    np.testing.assert_allclose(clf.positive_minus_negative(texts), proba[:, classes.index("positive")] - proba[:, classes.index("negative")])
    d = clf.positive_minus_negative(texts)
    assert d[0] > 0 > d[1]
    for language in ("english", "spanish", "chinese"):
        assert clf.accuracy[language] > 0.45  # three classes: chance is about 1/3


def test_cli_unembed_vector_with_seeds_and_range_task(tmp_path, tiny_dir):
    from typer.testing import CliRunner

    from hubclient.cli import app

    model = str(tiny_dir("llama"))
    common = ["--model", model, "--out", str(tmp_path), "--no-progress", "--positive-words", "park,paris", "--negative-words", "ten,nine"]
    r = CliRunner().invoke(app, ["intervene", "steer", "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--vector", "unembed:cat,dog",
                                 "--layer", "2", "--coeff", "0,8", "--positions", "last", "--seeds", "0:2", "--top-p", "0.5",
                                 "--freq-penalty", "1", "--max-new-tokens", "4", "--perplexity", "self", "--name", "u", *common])
    assert r.exit_code == 0, r.output
    gen = pl.read_parquet(tmp_path / "u" / "generations.parquet")
    assert gen.height == 2 * 3 * (1 + 2) and set(gen["seed"].to_list()) == {0, 1, 2}
    assert gen["perplexity"].drop_nulls().len() == gen.height
    side = pl.read_parquet(tmp_path / "u" / "side_by_side.parquet").filter(pl.col("coeff") == 0)
    assert (side["continuation"] == side["unsteered"]).all()  # c = 0 with the same seed: the same sample
    summary = pl.read_parquet(tmp_path / "u" / "seed_summary.parquet")
    assert set(summary["n_seeds"].to_list()) == {3}
    manifest = json.loads((tmp_path / "u" / "manifest.json").read_text())
    assert manifest["sampler"]["top_p"] == 0.5 and manifest["sampler"]["seeds"] == [0, 1, 2]
    mbpp = tmp_path / "mbpp.jsonl"
    mbpp.write_text(json.dumps({"task_id": 1, "code": "for i in range(n):\n    pass"}) + "\n")
    r = CliRunner().invoke(app, ["intervene", "steer", "--task", "range-calls", "--mbpp", str(mbpp), "--vector", "unembed:cat,dog",
                                 "--layer", "2", "--coeff", "10,20", "--name", "r", *common])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "range_items.parquet").is_file()
    gen = pl.read_parquet(tmp_path / "r" / "generations.parquet")
    assert gen.height == 3 and gen["prompt_text"][0] == "for i in range("
    bad = CliRunner().invoke(app, ["intervene", "steer", "--task", "range-calls", "--mbpp", str(mbpp), "--prompt", "x", "--vector", "unembed:cat,dog", *common])
    assert bad.exit_code == 2 and "--prompt does not apply" in bad.output


def test_wu2024_pairs_and_layer():
    from analyses.cli.steer import wu2024_pairs
    from analyses.steer import paper_layer

    pos, neg, langs = wu2024_pairs(["chinese", "spanish"])
    assert list(zip(pos, neg, langs)) == [("Good", "Bad", "english"), ("Bad", "Good", "english"), ("好", "坏", "chinese"),
                                          ("坏", "好", "chinese"), ("Bueno", "Malo", "spanish"), ("Malo", "Bueno", "spanish")]
    assert paper_layer(32) == 17 and paper_layer(18) == 10  # TL resid_pre 17 = hub layer 17 on 32 layers


def test_transformers_classifier_by_path_equals_a_direct_softmax(tmp_path):
    import transformers as tf

    from conftest import build_tokenizer
    from hubclient.errors import HubError
    from hubclient.inputs.sentiment import load_classifier

    tok = build_tokenizer()
    config = tf.BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                           num_labels=3, id2label={0: "positive", 1: "neutral", 2: "negative"}, label2id={"positive": 0, "neutral": 1, "negative": 2})
    torch.manual_seed(0)
    model = tf.BertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    clf = load_classifier(f"hf:{tmp_path / 'clf'}", None)
    texts = ["the cat sat on the mat", "a dog ran"]
    with torch.no_grad():
        p = model(**tok(texts, return_tensors="pt", padding=True)).logits.softmax(-1).numpy()
    np.testing.assert_allclose(clf.positive_minus_negative(texts), p[:, 0] - p[:, 2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clf.positive_probability(texts), p[:, 0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(p[:, 0] - p[:, 2], p[:, 2] - p[:, 0])  # the sign is testable
    with pytest.raises(HubError, match="no such folder"):
        load_classifier(f"hf:{tmp_path / 'missing'}", None)
