"""``--lens tuned|patchscope`` on ``translation-lens`` and ``language-probs`` (docs/lenses.md),
against independent computations on a tiny llama:

* tuned lens: transformers' ``output_hidden_states``, then numpy ``h + h A^T + b``, RMSNorm,
  ``W_U`` and softmax (layer ``L``: the model's own logits);
* patchscope: a plain transformers forward of the target prompt per (position, layer) with a
  torch hook writing the source state over the placeholder (``translation-lens`` under
  ``--protocol wu2024``, whose batches drop BOS: the copies are added to those batches);
* the lens is not ignored: tuned numbers differ from logit-lens numbers below layer ``L``;
* ``--remote`` on the strict NDIF test server gives the local tables (one lens per analysis).

What would make these fail: ``lens_spec`` not passed to the trace (logit-lens numbers), the
translators applied at the wrong layer or without the final norm, the patchscope copies built
from BOS-ful batches under wu2024 (positions off by one), the lens tensors or copies missing
from remote requests, the manifest not naming the lens.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from analyses.language_probs import LanguageProbs, LanguageProbsOptions
from analyses.translation_lens import TranslationLens, TranslationOptions
from hubclient.cli import app
from hubclient.dictionary import from_pairs, whitespace_words
from hubclient.models import load_model
from hubclient.runner import RunConfig, run_analysis
from hubclient.science import tuned_lens as tl
from hubclient.science.patchscope import target_tokens

sys.path.insert(0, str(Path(__file__).parent))
from test_lenses import _hooked_patchscope, _source_states  # noqa: E402
from test_lenses_tasks import random_translators  # noqa: E402
from test_remote import client_setup, remote_config  # noqa: E402

# toy en -> fr dictionary over the tiny word-level vocabulary (conftest.SENTENCES)
PAIRS = [("cat", "dog"), ("cat", "park"), ("mat", "paris"), ("sat", "ran"), ("park", "france"), ("dog", "cat"), ("the", "a")]
TL_TEXTS = ["the cat sat on the mat", "a dog ran in the park and the cat sat"]
FREQS = {
    "en": {"the": 0.05, "cat": 0.001, "sat": 0.0005, "dog": 0.001, "park": 0.0004, "paris": 0.0001},
    "fr": {"paris": 0.0008, "france": 0.0006, "the": 0.000001, "a": 0.02},
}
LP_TEXTS = ["the cat sat on the mat", "paris is the capital of france", "a dog ran in the park"]
LP_LABELS = ["en", "fr", "en"]
PATCH_PROMPT, PATCH_PLACEHOLDER = "cat cat dog dog the sat", "the"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_CACHE_DIR", str(tmp_path / "cache"))


def _toy():
    return {"en-fr": from_pairs("en", "fr", PAIRS, segmenter=whitespace_words)}


def _lens(model, folder):
    """A saved random tuned lens for ``model`` and its ``(A, b)`` as float64 numpy arrays."""
    translators = random_translators(int(model.describe()["d_model"]), model.n_layers)
    path = tl.save_lens(folder, translators, tl.model_config(model))
    params = [(t.weight.detach().double().numpy(), t.bias.detach().double().numpy()) for t in translators]
    return str(path), params


def _softmax(x):
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _tuned_probs(model, params, text, bos=True):
    """``[L+1, T, vocab]`` tuned-lens distributions of ``text`` in numpy from transformers'
    hidden states: ``softmax(W_U · RMSNorm(h + h A^T + b))``; layer L the model's output."""
    hf = model.torch_model
    ids = model.tokenizer(text, return_tensors="pt", add_special_tokens=bos)
    with torch.no_grad():
        out = hf(**ids, output_hidden_states=True)
    w_u = hf.lm_head.weight.detach().double().numpy()
    g = hf.model.norm.weight.detach().double().numpy()
    eps = hf.config.rms_norm_eps
    layers = []
    for layer in range(model.n_layers + 1):
        if layer < model.n_layers:
            h = out.hidden_states[layer][0].double().numpy()
            a, b = params[layer]
            h = h + h @ a.T + b
            logits = (h / np.sqrt((h**2).mean(-1, keepdims=True) + eps) * g) @ w_u.T
        else:
            logits = out.logits[0].double().numpy()
        layers.append(_softmax(logits))
    return np.stack(layers)


def _patch_probs(model, ids, positions):
    """``{(position, layer): distribution}`` of the patchscope for the source ``ids``."""
    target_ids, ph = target_tokens(model.tokenizer, PATCH_PROMPT, PATCH_PLACEHOLDER)
    states = _source_states(model, ids)
    out = {}
    for pos in positions:
        for layer in range(model.n_layers + 1):
            out[(pos, layer)] = _hooked_patchscope(model, target_ids, ph, states[layer, pos], layer)
    return out


def _reference_matrix(tokenizer):
    """The wordfreq matrix of FREQS from its definition (``unknown`` column for unseen words)."""
    langs = list(FREQS)
    m = np.zeros((len(tokenizer), len(langs) + 1))
    for i in range(len(tokenizer)):
        word = tokenizer.convert_ids_to_tokens(i).lower()
        f = np.array([FREQS[lang].get(word, 0.0) for lang in langs])
        if f.sum() > 0:
            m[i, :-1] = f / f.sum()
        else:
            m[i, -1] = 1.0
    return m


def _check_translation(model, table, targets_of, probs_of, aggregate="sum"):
    """Every (prompt, position, layer) row of ``table`` against ``probs_of(prompt)[(position,
    layer)]``: input = the next token's probability, translation = the max over its ids and
    ``probability`` the ``aggregate`` (sum or max) over them."""
    checked = 0
    for prompt, targets in targets_of.items():
        probs = probs_of(prompt)
        rows = table.filter(pl.col("prompt") == prompt)
        for t in targets:
            for layer in range(model.n_layers + 1):
                p = probs[(t.position, layer)]
                got = rows.filter((pl.col("position") == t.position) & (pl.col("layer") == layer))
                inp = got.filter(pl.col("kind") == "input")
                tra = got.filter(pl.col("kind") == "translation")
                assert inp["probability"][0] == pytest.approx(p[t.input_ids].sum(), rel=1e-4, abs=1e-9)
                assert tra["max_probability"][0] == pytest.approx(p[t.translation_ids].max(), rel=1e-4, abs=1e-9)
                chosen = p[t.translation_ids].sum() if aggregate == "sum" else p[t.translation_ids].max()
                assert tra["probability"][0] == pytest.approx(chosen, rel=1e-4, abs=1e-9)
                checked += 1
    return checked


# --------------------------------------------------------------------------- translation-lens
def test_translation_lens_tuned_equals_numpy(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    folder, params = _lens(model, tmp_path / "lens")
    analysis = TranslationLens(TranslationOptions(directions=["en-fr"] * 2, lens="tuned", tuned_lens=folder), dictionaries=_toy())
    run = run_analysis(analysis, TL_TEXTS, RunConfig(out=tmp_path / "runs", batch_size=2, progress=False), model=model)
    assert run.manifest["options"]["lens"] == "tuned" and run.manifest["lens"]["lens"] == "tuned"
    assert run.manifest["lens"]["tuned_lens_unembed_hash"] == tl.unembed_hash(model.torch_model.lm_head.weight)

    def probs_of(prompt):
        p = _tuned_probs(model, params, TL_TEXTS[prompt])
        return {(pos, layer): p[layer, pos] for layer in range(p.shape[0]) for pos in range(p.shape[1])}

    checked = _check_translation(model, run.table("translation_lens"), analysis.targets, probs_of)
    assert checked == sum(len(t) for t in analysis.targets.values()) * (model.n_layers + 1) >= 5 * 4


def test_translation_lens_patchscope_wu2024_equals_hooked_forward(tmp_path, tiny_hub_model):
    """Under wu2024 the texts run without BOS: the source states (and positions) are those of
    the BOS-less ids; the target copies keep the target prompt's own BOS."""
    model = tiny_hub_model("llama")
    options = TranslationOptions(directions=["zh-en"] * 2, protocol="wu2024", aggregate="max", lens="patchscope",
                                 patch_prompt=PATCH_PROMPT, patch_placeholder=PATCH_PLACEHOLDER)
    analysis = TranslationLens(options, dictionaries={"zh-en": _toy()["en-fr"]})
    run = run_analysis(analysis, TL_TEXTS, RunConfig(out=tmp_path, batch_size=2, progress=False), model=model)
    assert run.manifest["options"]["lens"] == "patchscope"
    assert run.manifest["lens"]["patch_placeholder_position"] == target_tokens(model.tokenizer, PATCH_PROMPT, PATCH_PLACEHOLDER)[1]
    distinct = set()

    def probs_of(prompt):
        ids = model.tokenizer(TL_TEXTS[prompt], add_special_tokens=False)["input_ids"]
        out = _patch_probs(model, ids, [t.position for t in analysis.targets[prompt]])
        for p in out.values():
            distinct.add(round(float(p.max()), 5))
        return out

    table = run.table("translation_lens")
    checked = _check_translation(model, table, analysis.targets, probs_of, "max")
    assert checked == sum(len(t) for t in analysis.targets.values()) * (model.n_layers + 1) >= 4 * 4
    assert len(distinct) > 3  # the patched state matters
    # wu2024 stores log max p of the translations: the same numbers in log space
    tra = table.filter(pl.col("kind") == "translation")
    np.testing.assert_allclose(tra["log_probability"].to_numpy(), np.log(tra["max_probability"].to_numpy()), rtol=1e-6)


def test_translation_lens_is_not_the_logit_lens(tmp_path, tiny_hub_model):
    """Tuned and patchscope numbers differ from the logit lens' below layer L; the tuned lens
    equals it at layer L (no translator there)."""
    model = tiny_hub_model("llama")
    folder, _ = _lens(model, tmp_path / "lens")
    config = RunConfig(out=tmp_path / "runs", batch_size=2, progress=False)
    tables = {}
    for lens, extra in (("logit", {}), ("tuned", {"tuned_lens": folder}), ("patchscope", {"patch_prompt": PATCH_PROMPT, "patch_placeholder": PATCH_PLACEHOLDER})):
        analysis = TranslationLens(TranslationOptions(directions=["en-fr"] * 2, lens=lens, **extra), dictionaries=_toy())
        tables[lens] = run_analysis(analysis, TL_TEXTS, config, model=model).table("translation_lens").sort("prompt", "position", "layer", "kind")
    logit = tables["logit"]
    lower = (logit["layer"] < model.n_layers).to_numpy()
    for lens in ("tuned", "patchscope"):
        other = tables[lens]
        assert other.select("prompt", "position", "layer", "kind").equals(logit.select("prompt", "position", "layer", "kind"))
        diff = np.abs(np.log(other["probability"].to_numpy()) - np.log(logit["probability"].to_numpy()))
        assert diff[lower].max() > 0.1, lens
    np.testing.assert_allclose(tables["tuned"]["probability"].to_numpy()[~lower], logit["probability"].to_numpy()[~lower], rtol=1e-5)


# --------------------------------------------------------------------------- language-probs
def test_language_probs_tuned_equals_numpy(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    folder, params = _lens(model, tmp_path / "lens")
    options = LanguageProbsOptions(languages=["en", "fr"], input_languages=LP_LABELS, lens="tuned", tuned_lens=folder)
    run = run_analysis(LanguageProbs(options, frequencies=FREQS), LP_TEXTS, RunConfig(out=tmp_path / "runs", batch_size=2, progress=False), model=model)
    assert run.manifest["options"]["lens"] == "tuned" and run.manifest["lens"]["lens"] == "tuned"
    m = _reference_matrix(model.tokenizer)
    table = run.table("language_probs")
    for i, text in enumerate(LP_TEXTS):
        p = _tuned_probs(model, params, text)  # [L+1, T, vocab]; position 0 = BOS, left out
        expected = (p[:, 1:] @ m).mean(1)
        got = table.filter(pl.col("prompt") == i).pivot(on="language", index="layer", values="probability").sort("layer").select("en", "fr", "unknown").to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_language_probs_patchscope_equals_hooked_forward(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    options = LanguageProbsOptions(languages=["en", "fr"], input_languages=LP_LABELS, lens="patchscope", patch_prompt=PATCH_PROMPT, patch_placeholder=PATCH_PLACEHOLDER)
    run = run_analysis(LanguageProbs(options, frequencies=FREQS), LP_TEXTS, RunConfig(out=tmp_path, batch_size=2, progress=False), model=model)
    assert run.manifest["options"]["lens"] == "patchscope" and run.manifest["lens"]["patch_tokens"]
    m = _reference_matrix(model.tokenizer)
    table = run.table("language_probs")
    for i, text in enumerate(LP_TEXTS):
        ids = model.tokenizer(text)["input_ids"]
        positions = list(range(1, len(ids)))  # BOS left out (protocol hub)
        probs = _patch_probs(model, ids, positions)
        expected = np.stack([np.mean([probs[(pos, layer)] @ m for pos in positions], axis=0) for layer in range(model.n_layers + 1)])
        got = table.filter(pl.col("prompt") == i).pivot(on="language", index="layer", values="probability").sort("layer").select("en", "fr", "unknown").to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    assert np.ptp(table.filter(pl.col("language") == "en")["probability"].to_numpy()) > 1e-3


def test_language_probs_is_not_the_logit_lens(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    folder, _ = _lens(model, tmp_path / "lens")
    config = RunConfig(out=tmp_path / "runs", batch_size=3, progress=False)
    frames = {}
    for lens, extra in (("logit", {}), ("tuned", {"tuned_lens": folder})):
        options = LanguageProbsOptions(languages=["en", "fr"], input_languages=LP_LABELS, lens=lens, **extra)
        frames[lens] = run_analysis(LanguageProbs(options, frequencies=FREQS), LP_TEXTS, config, model=model).table("language_probs").sort("prompt", "layer", "language")
    a, b = frames["tuned"], frames["logit"]
    lower = (a["layer"] < model.n_layers).to_numpy()
    assert np.abs(a["probability"].to_numpy() - b["probability"].to_numpy())[lower].max() > 1e-2
    np.testing.assert_allclose(a["probability"].to_numpy()[~lower], b["probability"].to_numpy()[~lower], rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------- CLI
def test_cli_lens_options(tmp_path, tiny_dir):
    """The commands take --lens; --protocol wu2024's default final norm becomes 'on' with the
    tuned lens or the patchscope; misuse is one error line before any model loads."""
    folder = tiny_dir("llama")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "en.txt").write_text("the cat sat on the mat\na dog ran\n")
    (corpus / "fr.txt").write_text("paris france\n")
    runner = CliRunner()
    common = ["--model", str(folder), "--no-progress", "--out", str(tmp_path / "runs")]
    result = runner.invoke(app, ["analyze", "language-probs", "--lang", f"en={corpus / 'en.txt'}", "--matrix", f"folder:{corpus}",
                                 "--protocol", "wu2024", "--lens", "patchscope", "--patch-prompt", PATCH_PROMPT, "--patch-placeholder", PATCH_PLACEHOLDER, *common])
    assert result.exit_code == 0, result.output
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/manifest.json")]
    assert len(manifests) == 1 and manifests[0]["options"]["final_norm"] is True and manifests[0]["options"]["lens"] == "patchscope"
    bad = runner.invoke(app, ["analyze", "language-probs", "--lang", f"en={corpus / 'en.txt'}", "--lens", "tuned", *common])
    assert bad.exit_code == 2 and "--tuned-lens PATH" in bad.output
    bad = runner.invoke(app, ["analyze", "translation-lens", "--prompt", "the cat", "--protocol", "wu2024", "--final-norm", "last", "--lens", "patchscope", *common])
    assert bad.exit_code == 2 and "applies to the logit lens only" in bad.output
    bad = runner.invoke(app, ["analyze", "translation-lens", "--prompt", "the cat", "--patch-prompt", "x ? y", *common])
    assert bad.exit_code == 2 and "are for --lens patchscope" in bad.output


# --------------------------------------------------------------------------- remote
@pytest.fixture()
def client(monkeypatch, server):
    client_setup(monkeypatch)
    server.set_faults()
    yield
    server.set_faults()


def _same(there, here, tables):
    for table in tables:
        assert there.table(table).height > 0, table
        assert_frame_equal(there.table(table), here.table(table), check_exact=False, rel_tol=1e-5, abs_tol=1e-6)


def test_translation_lens_patchscope_remote_equals_local(tiny_dir, server, client, tmp_path):
    def analysis():
        options = TranslationOptions(directions=["zh-en"] * 2, protocol="wu2024", aggregate="max", lens="patchscope",
                                     patch_prompt=PATCH_PROMPT, patch_placeholder=PATCH_PLACEHOLDER)
        return TranslationLens(options, dictionaries={"zh-en": _toy()["en-fr"]})

    here = run_analysis(analysis(), TL_TEXTS, RunConfig(model=str(tiny_dir("llama")), out=tmp_path, name="local", batch_size=2, progress=False))
    there = run_analysis(analysis(), TL_TEXTS, remote_config(tiny_dir, server, tmp_path))
    assert there.manifest["options"]["lens"] == "patchscope" and there.manifest["remote"]
    _same(there, here, ("translation_lens", "translation_lens_summary"))


def test_language_probs_tuned_remote_equals_local(tiny_dir, server, client, tmp_path):
    model = load_model(str(tiny_dir("llama")), device="cpu")
    folder, _ = _lens(model, tmp_path / "lens")

    def analysis():
        options = LanguageProbsOptions(languages=["en", "fr"], input_languages=LP_LABELS, lens="tuned", tuned_lens=folder)
        return LanguageProbs(options, frequencies=FREQS, cache=False)

    here = run_analysis(analysis(), LP_TEXTS, RunConfig(model=str(tiny_dir("llama")), out=tmp_path, name="local", batch_size=2, progress=False))
    there = run_analysis(analysis(), LP_TEXTS, remote_config(tiny_dir, server, tmp_path))
    assert there.manifest["options"]["lens"] == "tuned"
    _same(there, here, ("language_probs", "language_probs_summary"))
