"""`hub analyze neurons` against independent computations on tiny models.

References: the MLP activation is captured with plain torch forward hooks on each block's down
projection (and, for gated MLPs, recomputed as ``act_fn(gate_proj(x))`` from the MLP's input),
one unpadded forward per sentence; LRDS/SADS and key neurons are recomputed with explicit loops
over sentence pairs; LAPE follows Tang et al.'s released ``identify.py`` written in torch
(``kthvalue`` / ``topk``), not :mod:`hubclient.neurons`.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from analyses.neurons import NeuronOptions, Neurons, split_langs
from hubclient import neurons as hn
from hubclient.errors import HubError
from hubclient.runner import RunConfig, run_analysis

from conftest import FAMILIES

# three "languages" of five parallel sentences (the tiny tokenizer is word-level over these words)
LANGS = {
    "en": ["the cat sat on the mat", "the capital of france is paris", "one two three four", "a dog ran in the park", "language models read text"],
    "xx": ["mat the on sat cat the", "paris is france of capital the", "four three two one", "park the in ran dog a", "text read models language"],
    "yy": ["the cat sat", "paris", "one two three four five six", "the dog ran in a park and sat", "models predict the next word"],
}


def corpus():
    texts, langs, sents = [], [], []
    for name, lines in LANGS.items():
        texts += lines
        langs += [name] * len(lines)
        sents += list(range(len(lines)))
    return texts, langs, sents


def run_neurons(model, tmp_path, batch_size=3, name="run", **options):
    texts, langs, sents = corpus()
    options.setdefault("z_threshold", 1.0)  # 3 languages: no z-score can exceed 1.15
    opts = NeuronOptions(languages=list(LANGS), **options)
    return run_analysis(
        Neurons(opts, langs, sents), texts, RunConfig(out=tmp_path, name=name, progress=False, batch_size=batch_size), model=model,
        prompt_columns={"language": langs, "sentence": sents},
    )


# ---------------------------------------------------------------------------- references
def reference_activations(hub_model, texts):
    """Per text and block: (token-mean down_proj input without BOS [d_ff], active-token counts [d_ff])."""
    hf = hub_model.torch_model
    blocks = hf.get_submodule(hub_model.arch.layers)
    seen, mlp_in = {}, {}
    hooks = []
    for i, block in enumerate(blocks):
        down = block.get_submodule(hub_model.arch.mlp_down)
        hooks.append(down.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, args[0].detach().clone())))
        if hasattr(block, "mlp") and hasattr(block.mlp, "gate_proj"):
            hooks.append(block.mlp.register_forward_pre_hook(lambda m, args, i=i: mlp_in.__setitem__(i, args[0].detach().clone())))
    means, counts = [], []
    try:
        for text in texts:
            ids = hub_model.tokenizer(text, return_tensors="pt")
            with torch.no_grad():
                hf(**ids)
            m_row, c_row = [], []
            for i, block in enumerate(blocks):
                act = seen[i].reshape(-1, seen[i].shape[-1])[1:]  # one text: [seq, d_ff] (OPT is 2-D already); drop BOS
                if i in mlp_in:
                    with torch.no_grad():
                        firing = block.mlp.act_fn(block.mlp.gate_proj(mlp_in[i][0, 1:]))
                else:
                    firing = act
                m_row.append(act.mean(0).numpy())
                c_row.append((firing > 0).sum(0).numpy())
            means.append(m_row)
            counts.append(c_row)
    finally:
        for h in hooks:
            h.remove()
    return np.asarray(means, dtype=np.float64), np.asarray(counts, dtype=np.int64)  # [n, L, d]


def loop_contrast(x, labels):
    """(same, different) mean cosine over ordered pairs i != j, by explicit loops."""
    same, diff = [], []
    for i in range(len(x)):
        for j in range(len(x)):
            if i == j:
                continue
            cos = float(np.dot(x[i], x[j]) / (np.linalg.norm(x[i]) * np.linalg.norm(x[j])))
            (same if labels[i] == labels[j] else diff).append(cos)
    return np.mean(same), np.mean(diff)


def loop_key_neurons(groups, threshold):
    scores = []
    for x in groups:
        u = [v / np.linalg.norm(v) for v in x]
        total, pairs = np.zeros(len(u[0])), 0
        for i in range(len(u)):
            for j in range(i + 1, len(u)):
                total += u[i] * u[j]
                pairs += 1
        scores.append(total / pairs)
    scores = np.asarray(scores)
    z = (scores - scores.mean(0)) / scores.std(0)
    return scores, z, z > threshold


def tang_identify(probs, top_rate, filter_rate):
    """Tang et al.'s identify.py (activation()) on probs [K, N], in torch; returns specific [K, N]."""
    p = torch.tensor(probs.T, dtype=torch.float64)  # [N, K] (their neurons x languages)
    normed = p / p.sum(dim=-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    log = torch.where(normed > 0, normed.log(), 0)
    entropy = -torch.sum(normed * log, dim=-1)
    flat = p.flatten()
    top_prob = flat.kthvalue(round(len(flat) * filter_rate)).values.item()
    entropy[(p > top_prob).sum(dim=-1) == 0] = torch.inf
    _, index = entropy.topk(round(len(entropy) * top_rate), largest=False)
    specific = np.zeros(probs.shape, dtype=bool)
    for j in index.tolist():
        for k in range(probs.shape[0]):
            if p[j, k] > top_prob:
                specific[k, j] = True
    return specific


# ---------------------------------------------------------------------------- trace
@pytest.mark.parametrize("family", FAMILIES)
def test_activations_and_counts_equal_forward_hooks(tiny_hub_model, tmp_path, family):
    """activations.parquet = token mean of the down_proj input (BOS excluded), and the LAPE
    counts = tokens with act_fn(gate) > 0 (gated) or activation > 0 (GELU MLPs), batched with
    padding against one unpadded forward per sentence."""
    model = tiny_hub_model(family)
    run = run_neurons(model, tmp_path)
    texts, langs, _ = corpus()
    means, counts = reference_activations(model, texts)
    act = run.table("activations").sort("layer", "prompt")
    n_layers = model.n_layers
    ours = act["activation"].to_numpy().reshape(n_layers, len(texts), -1).transpose(1, 0, 2)
    np.testing.assert_allclose(ours, means, rtol=1e-4, atol=1e-5)
    tokens = act.filter(pl.col("layer") == 1)["n_tokens"].to_numpy()
    assert tokens.tolist() == [len(t.split()) for t in texts]
    lape = run.table("lape_counts")
    for k, lang in enumerate(LANGS):
        members = np.asarray(langs) == lang
        for layer in range(1, n_layers + 1):
            part = lape.filter((pl.col("language") == lang) & (pl.col("layer") == layer))
            assert part["n_tokens"].sum() == tokens[members].sum()
            np.testing.assert_array_equal(part["n_active"].to_numpy().sum(0), counts[members, layer - 1].sum(0))


def test_statistics_of_a_run_equal_loops(tiny_hub_model, tmp_path):
    """lrds_sads, key_neurons and lape_neurons of a run equal loops over the hook activations."""
    model = tiny_hub_model("llama")
    run = run_neurons(model, tmp_path, z_threshold=1.0, lape_top=0.05, lape_quantile=0.9)
    texts, langs, sents = corpus()
    means, counts = reference_activations(model, texts)
    langs, sents = np.asarray(langs), np.asarray(sents)
    table = run.table("lrds_sads")
    key = run.table("key_neurons")
    for layer in range(1, model.n_layers + 1):
        x = means[:, layer - 1]
        for measure, labels in (("LRDS", langs), ("SADS", sents)):
            same, diff = loop_contrast(x, labels)
            row = table.filter((pl.col("layer") == layer) & (pl.col("measure") == measure)).row(0, named=True)
            assert row["value"] == pytest.approx(same - diff, abs=1e-5)
            assert row["same"] == pytest.approx(same, abs=1e-5) and row["different"] == pytest.approx(diff, abs=1e-5)
        _, z, selected = loop_key_neurons([x[langs == lang] for lang in LANGS], 1.0)
        for k, lang in enumerate(LANGS):
            got = key.filter((pl.col("layer") == layer) & (pl.col("language") == lang)).sort("neuron")
            assert got["neuron"].to_list() == np.flatnonzero(selected[k]).tolist()
            np.testing.assert_allclose(got["z"].to_numpy(), z[k, selected[k]], atol=1e-4)
    # LAPE over all layers at once
    probs = []
    for lang in LANGS:
        members = langs == lang
        n_tok = sum(len(t.split()) for t, m in zip(texts, members) if m)
        probs.append(counts[members].sum(0).reshape(-1) / n_tok)
    specific = tang_identify(np.asarray(probs), 0.05, 0.9)
    d_ff = counts.shape[2]
    lape = run.table("lape_neurons")
    got = set(zip(lape["language"].to_list(), lape["layer"].to_list(), lape["neuron"].to_list()))
    want = set()
    for k, lang in enumerate(LANGS):
        for flat in np.flatnonzero(specific[k]):
            want.add((lang, int(flat // d_ff) + 1, int(flat % d_ff)))
    assert got == want and got
    counts_table = run.table("counts")
    assert counts_table.filter(pl.col("selector") == "lape")["n_neurons"].sum() == len(want)
    assert counts_table.filter(pl.col("selector") == "key")["n_neurons"].sum() == key.height


def test_float16_storage(tiny_hub_model, tmp_path):
    model = tiny_hub_model("llama")
    full = run_neurons(model, tmp_path, name="f32")
    half = run_neurons(model, tmp_path, name="f16", float16=True)
    assert half.table("activations").schema["activation"].inner == pl.Float16
    np.testing.assert_allclose(
        half.table("activations")["activation"].to_numpy().astype(np.float32), full.table("activations")["activation"].to_numpy(), rtol=2e-3, atol=2e-3
    )
    a, b = full.table("lrds_sads"), half.table("lrds_sads")
    np.testing.assert_allclose(a["value"].to_numpy(), b["value"].to_numpy(), atol=1e-3)


# ---------------------------------------------------------------------------- statistics (numpy)
def test_group_contrast_equals_loops_and_excludes_self_pairs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 7))
    langs = np.repeat(["a", "b", "c"], 4)
    sents = np.tile(np.arange(4), 3)
    for labels, fn in ((langs, hn.lrds), (sents, hn.sads)):
        same, diff = loop_contrast(x, labels)
        got = fn(x, labels)
        assert got.same == pytest.approx(same) and got.different == pytest.approx(diff) and got.score == pytest.approx(same - diff)
    # cross-language baseline: different sentence and different language
    vals = []
    for i in range(12):
        for j in range(12):
            if langs[i] != langs[j] and sents[i] != sents[j]:
                vals.append(np.dot(x[i], x[j]) / np.linalg.norm(x[i]) / np.linalg.norm(x[j]))
    assert hn.cross_language_baseline(x, langs, sents) == pytest.approx(np.mean(vals))
    # identical copies within a language: same-language cosine 1 (self-pairs would not change it,
    # but a group of one member has no pair and must not count)
    y = np.concatenate([np.tile(x[:1], (3, 1)), x[1:2]])
    got = hn.lrds(y, ["a", "a", "a", "b"])
    assert got.same == pytest.approx(1.0) and got.n_same == 6 and got.n_different == 6


def test_key_neurons_equal_loops():
    rng = np.random.default_rng(1)
    groups = [rng.normal(size=(6, 20)) + shift for shift in np.eye(8, 20) * 3]
    scores, z, key = hn.key_neurons(groups, 2.0)
    ref_scores, ref_z, ref_key = loop_key_neurons(groups, 2.0)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-12)
    np.testing.assert_allclose(z, ref_z, atol=1e-9)
    assert (key == ref_key).all() and key.any()


def test_lape_equals_tang_identify():
    rng = np.random.default_rng(2)
    probs = rng.uniform(0.2, 0.6, size=(5, 400))
    probs[:, :8] = 0.01
    probs[1, :8] = 0.95  # language-specific neurons
    probs[:, 8:12] = 0.0  # never active
    ref = tang_identify(probs, 0.02, 0.95)
    got = hn.lape(probs, 0.02, 0.95)
    assert (got.specific == ref).all()
    assert got.specific[1, :8].all() and not got.selected[8:12].any()


def test_statistics_reject_bad_input():
    with pytest.raises(HubError, match="one group label per vector"):
        hn.lrds(np.ones((3, 2)), ["a", "b"])
    with pytest.raises(HubError, match="inside and across groups"):
        hn.lrds(np.ones((3, 2)), ["a", "b", "c"])
    with pytest.raises(HubError, match="compare languages: need at least 2"):
        hn.key_neurons([np.ones((3, 2))])
    with pytest.raises(HubError, match=r"\[0, 1\]"):
        hn.lape(np.full((2, 3), 1.5))


# ---------------------------------------------------------------------------- CLI
def _files(folder):
    paths = []
    for name, lines in LANGS.items():
        path = folder / f"{name}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(str(path))
    return paths


def _cli(*args):
    from hubclient.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_compares_two_models(tiny_dir, tmp_path):
    """--model twice: one complete run per model in the parent, combined tables with a model
    column, the comparison charts, and each sub-run equal to a single-model run."""
    files = _files(tmp_path)
    models = [tiny_dir("llama"), tiny_dir("gpt2")]
    result = _cli("analyze", "neurons", "--langs", ",".join(files), "--n", 4, "--model", models[0], "--model", models[1],
                  "--out", tmp_path, "--name", "both", "--no-progress", "--batch-size", 4, "--z-threshold", 1)
    assert result.exit_code == 0, result.output
    parent = tmp_path / "both"
    manifest = json.loads((parent / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["models"] == [str(m) for m in models]
    combined = pl.read_parquet(parent / "lrds_sads.parquet")
    assert sorted(combined["model"].unique().to_list()) == sorted(str(m) for m in models)
    assert (parent / "plots" / "neurons_lrds_sads.png").is_file() and (parent / "plots" / "neurons_counts.png").is_file()
    single = _cli("analyze", "neurons", "--langs", ",".join(files), "--n", 4, "--model", models[1], "--out", tmp_path, "--name", "gpt2",
                  "--no-progress", "--no-plots", "--batch-size", 4, "--z-threshold", 1)
    assert single.exit_code == 0, single.output
    sub = parent / manifest["runs"][1]
    for table in ("lrds_sads", "key_neurons", "activations"):
        assert pl.read_parquet(sub / f"{table}.parquet").equals(pl.read_parquet(tmp_path / "gpt2" / f"{table}.parquet")), table
    redraw = _cli("plot", parent)
    assert redraw.exit_code == 0, redraw.output


def test_cli_unknown_flores_code(tmp_path):
    (tmp_path / "eng_Latn.devtest").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "fra_Latn.devtest").write_text("a\nb\n", encoding="utf-8")
    result = _cli("analyze", "neurons", "--flores-dir", tmp_path, "--langs", "eng_Latn,xyz_Latn", "--n", 2, "--out", tmp_path)
    assert result.exit_code == 2
    assert "unknown FLORES code 'xyz_Latn'" in result.output and "eng_Latn fra_Latn" in result.output


def test_split_langs_default_and_commas():
    assert split_langs(None)[:2] == ["eng_Latn", "zho_Hans"] and len(split_langs(None)) == 10
    assert split_langs(["a,b", "c", "a"]) == ["a", "b", "c"]


@pytest.mark.gemma
def test_gemma_activation_point(tmp_path, flores_dir):
    """Gemma-3-270m: the stored activations equal a forward hook on down_proj (3 languages × 3
    FLORES sentences), and the LAPE counts use act_fn(gate_proj(x)) > 0."""
    from hubclient.models import load_model
    from hubclient.parallel import read_flores

    model = load_model("gemma-3-270m", device="cpu", dtype="float32")
    corpus_ = read_flores(["eng_Latn", "zho_Hans", "hin_Deva"], flores_dir, n=3)
    texts, langs, sents = corpus_.flat()
    opts = NeuronOptions(languages=corpus_.languages, n=3)
    run = run_analysis(Neurons(opts, langs, sents), texts, RunConfig(out=tmp_path, progress=False, batch_size=4, plots=False), model=model,
                       prompt_columns={"language": langs, "sentence": sents})
    means, counts = reference_activations(model, texts)
    act = run.table("activations").sort("layer", "prompt")
    ours = act["activation"].to_numpy().reshape(model.n_layers, len(texts), -1).transpose(1, 0, 2)
    np.testing.assert_allclose(ours, means, rtol=1e-3, atol=1e-3)
    lape = run.table("lape_counts").group_by("layer").agg(pl.col("n_tokens").sum()).sort("layer")
    assert lape["n_tokens"].to_list() == [int(act.filter(pl.col("layer") == 1)["n_tokens"].sum())] * model.n_layers
    assert counts.shape[2] == 2048
