"""`hub analyze neurons` against independent computations on tiny models.

References: the MLP activation is captured with plain torch forward hooks on each block's down
projection (and, for gated MLPs, recomputed as ``act_fn(gate_proj(x))`` from the MLP's input),
one unpadded forward per sentence; LRDS/SADS and key neurons are recomputed with explicit loops
over sentence pairs; LAPE follows Tang et al.'s released ``identify.py`` written in torch
(``kthvalue`` / ``topk``), not :mod:`hubclient.neurons`.
"""

from __future__ import annotations

import json
import re

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


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def protocol_measures(x, langs, sents):
    """paper-protocols.md §B2 by explicit loops over ordered pairs i != j: {measure: (same, different)}.

    LRDS: same language & different sentence vs different language & different sentence.
    SADS intended: same sentence & different language vs different language & different sentence.
    SADS hub: same sentence vs different sentence (any languages)."""
    sets = {k: [] for k in ("sl_ds", "dl_ds", "tr", "ds")}
    for i in range(len(x)):
        for j in range(len(x)):
            if i == j:
                continue
            c = cosine(x[i], x[j])
            if langs[i] == langs[j] and sents[i] != sents[j]:
                sets["sl_ds"].append(c)
            if langs[i] != langs[j] and sents[i] != sents[j]:
                sets["dl_ds"].append(c)
            if sents[i] == sents[j] and langs[i] != langs[j]:
                sets["tr"].append(c)
            if sents[i] != sents[j]:
                sets["ds"].append(c)
    m = {k: np.mean(v) for k, v in sets.items()}
    return {"LRDS": (m["sl_ds"], m["dl_ds"]), "SADS-intended": (m["tr"], m["dl_ds"]), "SADS-hub": (m["tr"], m["ds"])}


def released_sads(x, n_langs):
    """The released show_cos_sim after rearrange_by_meaning (LinguaFranca/run.py:164-255), as the
    protocol quotes it: language-major rows, the stride-(S+1) loop, K×K blocks with their own
    diagonal masked, mean of diagonal-block means minus mean of off-diagonal-block means."""
    n = len(x)
    s = n // n_langs
    order = []
    for i in range(s + 1):
        for j in range(i, n, s + 1):
            order.append(j)
    y = x[order]
    m = np.array([[cosine(a, b) for b in y] for a in y])
    blocks = n // n_langs
    means = np.zeros((blocks, blocks))
    for bi in range(blocks):
        for bj in range(blocks):
            vals = [m[bi * n_langs + a, bj * n_langs + b] for a in range(n_langs) for b in range(n_langs) if a != b]
            means[bi, bj] = np.mean(vals)
    diag = np.mean([means[b, b] for b in range(blocks)])
    off = np.mean([means[a, b] for a in range(blocks) for b in range(blocks) if a != b])
    return diag, off


def released_key_neurons(groups, norms, threshold):
    """find_max_average_neurons + zscore_outliers as released (run.py:300-381): hs / ||all-layer hs|| + 10e-6,
    running mean of elementwise products over i < j, then / counter again, np.std z, z > threshold."""
    scores = []
    for x, nrm in zip(groups, norms):
        hs = x / nrm[:, None] + 10e-6
        sum_hs, counter = np.zeros(hs.shape[1]), 0
        for i in range(hs.shape[0]):
            for j in range(i + 1, hs.shape[0]):
                sum_hs += (hs[i] * hs[j] - sum_hs) / (counter + 1)
                counter += 1
        scores.append(sum_hs / counter)
    scores = np.asarray(scores)
    z = (scores - scores.mean(0)) / np.std(scores, axis=0)
    return scores, z, z > threshold


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
    all_norms = np.linalg.norm(means.reshape(len(texts), -1), axis=1)  # the all-layer concatenated vector
    for layer in range(1, model.n_layers + 1):
        x = means[:, layer - 1]
        expected = protocol_measures(x, langs, sents)
        expected["SADS-released"] = released_sads(x, len(LANGS))
        expected["SADS"] = expected["SADS-intended"]
        for measure, (same, diff) in expected.items():
            row = table.filter((pl.col("layer") == layer) & (pl.col("measure") == measure)).row(0, named=True)
            assert row["value"] == pytest.approx(same - diff, abs=1e-5), measure
            assert row["same"] == pytest.approx(same, abs=1e-5) and row["different"] == pytest.approx(diff, abs=1e-5)
        _, z, selected = released_key_neurons([x[langs == lang] for lang in LANGS], [all_norms[langs == lang] for lang in LANGS], 1.0)
        for k, lang in enumerate(LANGS):
            got = key.filter((pl.col("layer") == layer) & (pl.col("language") == lang)).sort("neuron")
            assert got["neuron"].to_list() == np.flatnonzero(selected[k]).tolist()
            np.testing.assert_allclose(got["z"].to_numpy(), z[k, selected[k]], atol=1e-4)
    # the concatenated all-layer vector
    whole = protocol_measures(means.reshape(len(texts), -1), langs, sents)
    for measure in ("LRDS", "SADS-intended", "SADS-hub"):
        row = table.filter((pl.col("scope") == "all") & (pl.col("measure") == measure)).row(0, named=True)
        assert row["layer"] is None and row["value"] == pytest.approx(whole[measure][0] - whole[measure][1], abs=1e-5)
        assert row["ci_low"] <= row["value"] + 1e-9 and row["value"] - 1e-9 <= row["ci_high"]
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


# ---------------------------------------------------------------------------- protocol versions (paper-protocols.md §B)
def _parallel(k, s, d, seed, lang_shift=1.0, sent_shift=1.0):
    """Rows (language, sentence) = language offset + sentence offset + noise, in shuffled order."""
    rng = np.random.default_rng(seed)
    lang_vec, sent_vec = rng.normal(size=(k, d)) * lang_shift, rng.normal(size=(s, d)) * sent_shift
    langs = np.repeat([f"l{i}" for i in range(k)], s)
    sents = np.tile(np.arange(s), k)
    x = lang_vec[np.repeat(np.arange(k), s)] + sent_vec[sents] + rng.normal(size=(k * s, d))
    order = rng.permutation(k * s)
    return x[order], langs[order], sents[order]


def test_lrds_sads_variants_equal_protocol_loops():
    """LRDS, SADS intended and hub from the sentence-pair sums equal loops over the pair sets the
    protocol names, whatever the row order; lrds(x, langs, sents) is the same LRDS."""
    x, langs, sents = _parallel(4, 6, 9, seed=3)
    layout = hn.parallel_layout(langs, sents, ["l0", "l1", "l2", "l3"])
    u = hn.unit_rows(x)
    got = hn.pair_contrasts(hn.sentence_pairs(u @ u.T, layout))
    want = protocol_measures(x, langs, sents)
    for name, ref in (("LRDS", "LRDS"), ("SADS", "SADS-intended"), ("SADS-hub", "SADS-hub")):
        np.testing.assert_allclose(got[name], want[ref], atol=1e-12)
    r = hn.lrds(x, langs, sents)
    assert (r.same, r.different) == pytest.approx(want["LRDS"]) and r.n_different == 4 * 3 * 6 * 5
    # the released SADS, on language-major rows, equals the released loops
    lm = layout.reshape(-1)
    ref = released_sads(x[lm], 4)
    np.testing.assert_allclose(hn.sads_released(u @ u.T, layout), ref, atol=1e-12)
    with pytest.raises(HubError, match="not parallel"):
        hn.parallel_layout(langs[:-1], sents[:-1])


def test_released_sads_pair_composition_matches_the_protocol_table():
    """K=10, S=100: the released stride-(S+1) blocks hold 8,952 / 32 / 16 "diagonal" and
    868,320 / 8,888 / 13,792 "off-diagonal" pairs (diff-lang diff-sent / translations / same-lang),
    paper-protocols.md §B2, counted here by loops over the permuted rows."""
    k, s = 10, 100
    order = hn.released_order(k, s)
    assert sorted(order.tolist()) == list(range(k * s))
    lang, sent = (np.arange(k * s) // s)[order], (np.arange(k * s) % s)[order]
    diag, off = np.zeros(3, int), np.zeros(3, int)
    for i in range(k * s):
        bi, ai = divmod(i, k)
        same_block = np.arange(k * s) // k == bi
        keep = np.arange(k * s) % k != ai  # each block's own diagonal is masked
        tr = (sent == sent[i]) & (lang != lang[i])
        sl = lang == lang[i]
        dd = ~tr & ~sl
        for target, mask in ((diag, same_block), (off, ~same_block)):
            target += [int((keep & mask & dd).sum()), int((keep & mask & tr).sum()), int((keep & mask & sl).sum())]
    assert diag.tolist() == [8952, 32, 16] and off.tolist() == [868320, 8888, 13792]


def test_sads_separates_meaning_from_language():
    """Rows built from a sentence signal: intended and hub SADS are clearly positive, the released
    SADS (blocks without translations) is about 0; with a language signal only, SADS is about 0
    and LRDS positive."""
    x, langs, sents = _parallel(5, 30, 40, seed=4, lang_shift=0.0, sent_shift=2.0)
    layout = hn.parallel_layout(langs, sents)
    u = hn.unit_rows(x)
    cos = u @ u.T
    got = hn.pair_contrasts(hn.sentence_pairs(cos, layout))
    released = hn.sads_released(cos, layout)
    assert got["SADS"][0] - got["SADS"][1] > 0.5 and abs(released[0] - released[1]) < 0.05
    x, langs, sents = _parallel(5, 30, 40, seed=5, lang_shift=2.0, sent_shift=0.0)
    u = hn.unit_rows(x)
    got = hn.pair_contrasts(hn.sentence_pairs(u @ u.T, hn.parallel_layout(langs, sents)))
    assert abs(got["SADS"][0] - got["SADS"][1]) < 0.05 and got["LRDS"][0] - got["LRDS"][1] > 0.5


def test_bootstrap_replicate_equals_resampled_rows():
    """One bootstrap replicate = the loops on the resampled data set, each drawn sentence copy a
    unit: pairs of different original sentences count, translations within a copy count, pairs
    between two copies of one sentence do not."""
    x, langs, sents = _parallel(3, 7, 5, seed=6)
    layout = hn.parallel_layout(langs, sents, ["l0", "l1", "l2"])
    u = hn.unit_rows(x)
    pairs = hn.sentence_pairs(u @ u.T, layout)
    picks = np.array([0, 0, 2, 3, 3, 3, 6])
    w = np.bincount(picks, minlength=7).astype(float)
    got = {k: v[0] for k, v in hn.bootstrap_contrasts(pairs, w[None]).items()}
    rows = [(lang, copy, s) for lang in range(3) for copy, s in enumerate(picks)]
    sets = {"sl": [], "dd": [], "tr": [], "ds": []}
    for a in rows:
        for b in rows:
            if a == b:
                continue
            c = cosine(x[layout[a[0], a[2]]], x[layout[b[0], b[2]]])
            if a[2] != b[2]:
                sets["ds"].append(c)
                (sets["sl"] if a[0] == b[0] else sets["dd"]).append(c)
            elif a[1] == b[1]:
                sets["tr"].append(c)
    m = {k: np.mean(v) for k, v in sets.items()}
    assert got["LRDS"] == pytest.approx(m["sl"] - m["dd"])
    assert got["SADS"] == pytest.approx(m["tr"] - m["dd"]) and got["SADS-hub"] == pytest.approx(m["tr"] - m["ds"])
    draws = hn.bootstrap_draws(7, 200, seed=1)
    assert draws.shape == (200, 7) and (draws.sum(1) == 7).all()
    np.testing.assert_array_equal(draws, hn.bootstrap_draws(7, 200, seed=1))
    low, high = hn.percentile_ci(hn.bootstrap_contrasts(pairs, draws)["SADS"])
    point = hn.pair_contrasts(pairs)["SADS"]
    assert low < point[0] - point[1] < high


def test_key_neurons_all_layer_norm_equal_released():
    """key_neurons with the all-layer norms and +1e-5 = the released loops; per layer (norms=None)
    differs from it on the same data."""
    rng = np.random.default_rng(7)
    groups = [rng.normal(size=(5, 12)) + shift for shift in np.eye(7, 12) * 3]
    norms = [np.linalg.norm(np.concatenate([g, rng.normal(size=(5, 30)) * 4], axis=1), axis=1) for g in groups]
    _, z, key = hn.key_neurons(groups, 2.0, norms=norms, eps=1e-5)
    _, ref_z, ref_key = released_key_neurons(groups, norms, 2.0)
    np.testing.assert_allclose(z, ref_z, atol=1e-9)
    assert (key == ref_key).all() and key.any()
    _, z_layer, _ = hn.key_neurons(groups, 2.0, eps=1e-5)
    assert not np.allclose(z_layer, ref_z, atol=1e-3)


def test_z_bound_is_sqrt_k_minus_1():
    """With the population std the largest z among K values is sqrt(K-1), reached by one value apart;
    the warning fires exactly when the threshold cannot be passed."""
    for k in (3, 9, 10):
        scores = np.zeros((k, 1))
        scores[0] = 1.0
        assert hn.zscores(scores)[0, 0] == pytest.approx(np.sqrt(k - 1)) == pytest.approx(hn.max_zscore(k))
    opts = {"languages": ["a", "b", "c"]}
    import warnings as w

    with w.catch_warnings():
        w.simplefilter("error")
        Neurons(NeuronOptions(z_threshold=1.2, **opts), [], [])  # 1.2 < sqrt(2): reachable (the old bound 1.15 warned)
    with pytest.warns(UserWarning, match=r"sqrt\(3-1\) = 1.41"):
        Neurons(NeuronOptions(z_threshold=1.5, **opts), [], [])
    with pytest.raises(HubError, match="--sads"):
        Neurons(NeuronOptions(sads="paper", **opts), [], [])


def test_key_null_counts_equal_independent_permutations(tiny_hub_model, tmp_path):
    """key_null: null_mean per layer and language = the mean over the same seeded permutations
    (numpy default_rng(seed).permutation, drawn here) of the released key-neuron counts with
    shuffled language labels; fdr = null_mean / observed."""
    model = tiny_hub_model("llama")
    run = run_neurons(model, tmp_path, permutations=6, seed=11, bootstrap=50)
    texts, langs, _ = corpus()
    means, _ = reference_activations(model, texts)
    langs = np.asarray(langs)
    norms = np.linalg.norm(means.reshape(len(texts), -1), axis=1)
    rng = np.random.default_rng(11)
    perms = [rng.permutation(len(texts)) for _ in range(6)]
    null = run.table("key_null")
    assert set(null["language"].unique().to_list()) == {*LANGS, "all"}
    for layer in range(1, model.n_layers + 1):
        x = means[:, layer - 1]
        counts = []
        for perm in perms:
            shuffled = langs[perm]
            _, _, key = released_key_neurons([x[shuffled == g] for g in LANGS], [norms[shuffled == g] for g in LANGS], 1.0)
            counts.append(key.sum(1))
        counts = np.asarray(counts)
        _, _, observed = released_key_neurons([x[langs == g] for g in LANGS], [norms[langs == g] for g in LANGS], 1.0)
        for k, lang in enumerate([*LANGS, "all"]):
            row = null.filter((pl.col("layer") == layer) & (pl.col("language") == lang)).row(0, named=True)
            want = counts.sum(1) if lang == "all" else counts[:, k]
            obs = observed.sum() if lang == "all" else observed[k].sum()
            assert row["observed"] == obs and row["null_mean"] == pytest.approx(want.mean()) and row["permutations"] == 6
            if obs:
                assert row["fdr"] == pytest.approx(min(1.0, want.mean() / obs))


def test_key_null_tells_signal_from_noise():
    """Pure noise: observed key counts are about what the permutation null expects; a language
    signal on some neurons: many more, and a small FDR."""
    rng = np.random.default_rng(8)
    k, s, d = 6, 20, 200
    labels = np.repeat(np.arange(k), s)
    perms = hn.permutations(k * s, 30, seed=0)
    noise = np.abs(rng.normal(size=(k * s, d)))
    units = hn.scaled_units(noise, None, 1e-5)
    observed = (hn.zscores(hn.group_scores(units, labels, k)) > 2).sum()
    expected = hn.key_neuron_null(units, labels, k, 2.0, perms).sum(1).mean()
    assert observed < 2 * expected + 10
    signal = noise.copy()
    for g in range(k):
        signal[labels == g, g * 10:(g + 1) * 10] += 3.0
    units = hn.scaled_units(signal, None, 1e-5)
    observed = (hn.zscores(hn.group_scores(units, labels, k)) > 2).sum()
    expected = hn.key_neuron_null(units, labels, k, 2.0, perms).sum(1).mean()
    assert observed >= 60 and expected / observed < 0.3


# ---------------------------------------------------------------------------- checkpoints
def test_cli_checkpoints_hash_identical_weights_and_step_chart(tmp_path):
    """Three local "checkpoints" of one tiny model (step-100 and step-200 identical, step-300
    different): one run each, a weights hash per checkpoint in the parent manifest (equal for the
    identical pair, and equal to a hash of the saved tensors), a warning naming the identical pair,
    scores that differ only where the weights do, and the score-by-training-step chart."""
    from conftest import build_tiny
    from safetensors.torch import load_file

    from analyses.neurons import identical_weights, training_step

    files = _files(tmp_path)
    folders = []
    for step, seed in ((100, 0), (200, 0), (300, 1)):
        model, tokenizer = build_tiny("llama", seed=seed)
        folder = tmp_path / "ckpt" / f"step-{step}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    args = ["analyze", "neurons", "--langs", ",".join(files), "--n", 4, "--out", tmp_path, "--name", "steps", "--no-progress",
            "--batch-size", 4, "--z-threshold", 1, "--permutations", 3, "--bootstrap", 20]
    for folder in folders:
        args += ["--model", folder]
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    assert re.search(r"warning: checkpoints \S*step-100, \S*step-200 have identical weights", result.output)
    parent = tmp_path / "steps"
    manifest = json.loads((parent / "manifest.json").read_text())
    hashes = [c["weights_sha256"] for c in manifest["checkpoints"]]
    assert [c["step"] for c in manifest["checkpoints"]] == [100, 200, 300]
    assert hashes[0] == hashes[1] != hashes[2] and len(hashes[0]) == 64
    assert manifest["identical_weights"] == [[str(folders[0]), str(folders[1])]]
    # the saved files agree: identical tensors in 100/200, not in 300
    a, b, c = (load_file(f / "model.safetensors") for f in folders)
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)
    table = pl.read_parquet(parent / "lrds_sads.parquet").filter(pl.col("scope") == "all")
    values = {m: table.filter(pl.col("model") == m).sort("measure")["value"].to_list() for m in manifest["models"]}
    assert values[str(folders[0])] == values[str(folders[1])] != values[str(folders[2])]
    assert (parent / "plots" / "neurons_by_step.png").is_file() and (parent / "plots" / "neurons_key_null.png").is_file()
    sub = json.loads((parent / manifest["runs"][2] / "manifest.json").read_text())
    assert sub["checkpoint"]["weights_sha256"] == hashes[2]
    assert training_step("org/bloom-560m-intermediate", "global_step1000") == 1000 and training_step("ckpt/final", None) is None
    assert identical_weights([{"label": "a", "weights_sha256": "x"}, {"label": "b", "weights_sha256": "y"}]) == []


def test_revision_needs_a_repo_id(tiny_dir, tmp_path):
    """--revision with a local folder is refused before anything runs, naming the fix."""
    files = _files(tmp_path)
    result = _cli("analyze", "neurons", "--langs", ",".join(files), "--n", 4, "--model", tiny_dir("llama"), "--revision", "global_step1",
                  "--revision", "global_step2", "--out", tmp_path, "--no-progress")
    assert result.exit_code == 2 and "pass each local checkpoint folder as --model" in result.output, result.output


def test_load_model_passes_the_revision_to_from_pretrained(monkeypatch):
    """A repo id with a revision reaches every from_pretrained call of the loader as revision=."""
    import transformers

    from hubclient.models import loading

    seen = []

    def fake(path, *args, **kwargs):
        seen.append(kwargs.get("revision"))
        raise OSError("offline")

    monkeypatch.setattr(loading, "check_hub_reachable", lambda name: None)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", fake)
    with pytest.raises(HubError):
        loading.load_model("bigscience/bloom-560m-intermediate", device="cpu", revision="global_step1000")
    assert seen == ["global_step1000"]


def test_lape_counts_the_whole_corpus(tmp_path, tiny_dir):
    """--lape-corpus all (default): LAPE counts every line of each file and of a FLORES .dev sibling,
    the parallel statistics use the first --n lines only, and the manifest records the tokens
    counted per language; --lape-corpus parallel counts the parallel lines only."""
    folder = tmp_path / "flores"
    folder.mkdir()
    for name, lines in (("eng_Latn", LANGS["en"]), ("fra_Latn", LANGS["xx"]), ("deu_Latn", LANGS["yy"])):
        (folder / f"{name}.devtest").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "eng_Latn.dev").write_text("the cat sat\n\none two\n", encoding="utf-8")
    common = ["analyze", "neurons", "--flores-dir", folder, "eng_Latn", "fra_Latn", "deu_Latn", "--n", 3, "--model", tiny_dir("llama"),
              "--out", tmp_path, "--no-progress", "--no-plots", "--z-threshold", 1, "--batch-size", 4, "--permutations", 0, "--bootstrap", 0]
    result = _cli(*common, "--name", "all")
    assert result.exit_code == 0, result.output
    run = tmp_path / "all"
    words = {"eng_Latn": sum(len(t.split()) for t in LANGS["en"]) + 3 + 2, "fra_Latn": sum(len(t.split()) for t in LANGS["xx"]),
             "deu_Latn": sum(len(t.split()) for t in LANGS["yy"])}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["lape_tokens"] == words
    counts = pl.read_parquet(run / "lape_counts.parquet").filter(pl.col("layer") == 1).group_by("language").agg(pl.col("n_tokens").sum())
    assert dict(zip(counts["language"].to_list(), counts["n_tokens"].to_list())) == words
    act = pl.read_parquet(run / "activations.parquet").filter(pl.col("layer") == 1)
    assert act.height == 9 and act["sentence"].min() == 0 and act["sentence"].max() == 2
    result = _cli(*common, "--name", "par", "--lape-corpus", "parallel")
    assert result.exit_code == 0, result.output
    par = json.loads((tmp_path / "par" / "manifest.json").read_text())["lape_tokens"]
    assert par["eng_Latn"] == sum(len(t.split()) for t in LANGS["en"][:3])
    a, b = pl.read_parquet(tmp_path / "par" / "lrds_sads.parquet"), pl.read_parquet(run / "lrds_sads.parquet")
    assert a["measure"].to_list() == b["measure"].to_list()
    np.testing.assert_allclose(a["value"].to_numpy(), b["value"].to_numpy(), atol=1e-5)  # other batches, same statistics
