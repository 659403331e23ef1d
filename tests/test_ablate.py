"""`hub intervene ablate` against hand-run forwards on tiny models.

References: the plain transformers forward (no hooks) for unablated rows, and a forward with a
torch pre-hook on a block's down projection that zeroes (or sets to given values) the chosen
columns of its input, each text alone (no padding); log-probabilities are summed by hand from
``log_softmax`` of the logits.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from analyses.ablate import AblateOptions, Ablate, Condition, build_conditions, open_neurons_run
from hubclient.runner import RunConfig, run_analysis

from test_neurons import LANGS, _cli, _files  # the same three tiny languages and CLI helpers

# distinct lengths: the runner sorts by length, so with batch size = number of conditions one batch
# holds one text under every condition
TEXTS = ["the cat sat on the mat", "paris is the capital", "one two three", "a dog ran in the park and the cat sat"]
LANGUAGES = ["en", "en", "xx", "xx"]


def replace_down_input(hub_model, block=None, columns=None, values=None):
    """A plain torch pre-hook on block ``block``'s down projection that replaces its input's
    ``columns`` by ``values`` (zero when ``None``); returns the handle, ``None`` without a block."""
    if block is None:
        return None
    hf = hub_model.torch_model
    down = hf.get_submodule(hub_model.arch.layers)[block - 1].get_submodule(hub_model.arch.mlp_down)

    def hook(module, args):
        x = args[0].clone()
        x[..., columns] = 0.0 if values is None else torch.as_tensor(values, dtype=x.dtype)
        return (x,)

    return down.register_forward_pre_hook(hook)


def reference_logprob(hub_model, text, block=None, columns=None, values=None):
    """Summed next-token log-probability of ``text`` alone; optionally with columns of block
    ``block``'s down_proj input replaced by ``values`` (zero when ``None``)."""
    hf = hub_model.torch_model
    handle = replace_down_input(hub_model, block, columns, values)
    try:
        ids = hub_model.tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = hf(input_ids=ids).logits[0].double()
    finally:
        if handle is not None:
            handle.remove()
    logp = torch.log_softmax(logits, dim=-1)
    total = 0.0
    for s in range(ids.shape[1] - 1):
        total += float(logp[s, ids[0, s + 1]])
    return total


def run_ablate(model, tmp_path, conditions, mode="zero", means=None, name="run", batch_size=None):
    options = AblateOptions(source="test", ablate=["en"], languages=["en", "xx"], n=2, offset=0, mode=mode)
    analysis = Ablate(options, conditions, LANGUAGES, [0, 1, 0, 1], means=means)
    run = run_analysis(analysis, analysis.prompts(TEXTS), RunConfig(out=tmp_path, name=name, progress=False, batch_size=batch_size or len(conditions)),
                       model=model, prompt_columns=analysis.prompt_columns())
    return run.table("scores").sort("prompt")


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_conditions_equal_hand_run_forwards(tiny_hub_model, tmp_path, family):
    """none = plain forward; an empty set = none exactly (in a batch where other rows are
    edited); all neurons of block 2 zeroed = forward with a hook zeroing them; some neurons of
    block 1 = the same with a hook."""
    model = tiny_hub_model(family)
    d_ff = {"llama": 64, "gpt2": 128, "opt": 64}[family]
    conditions = [
        Condition("none", "none", ""),
        Condition("key:en", "selected", "en", {}),
        Condition("all:2", "selected", "en", {2: list(range(d_ff))}),
        Condition("some:1", "selected", "en", {1: [0, 5, 9, 33]}),
    ]
    scores = run_ablate(model, tmp_path, conditions)
    n = len(TEXTS)
    got = scores["logprob"].to_numpy().reshape(len(conditions), n)
    for i, text in enumerate(TEXTS):
        assert got[0, i] == pytest.approx(reference_logprob(model, text), abs=1e-4)
        assert got[1, i] == pytest.approx(reference_logprob(model, text), abs=1e-4)
        assert got[2, i] == pytest.approx(reference_logprob(model, text, 2, list(range(d_ff))), abs=1e-4)
        assert got[3, i] == pytest.approx(reference_logprob(model, text, 1, [0, 5, 9, 33]), abs=1e-4)
    assert not np.allclose(got[2], got[0])
    # Exactly: the same batches with no edit at all (four empty conditions) give the none and
    # empty-set rows bit for bit, although the other rows of their batches were edited.
    # (Two identical rows of one batch may differ in the last bits on CPU kernels, so rows are
    # compared at the same place of the same batch shape.)
    plain = [Condition("none", "none", "")] + [Condition(f"empty{i}", "selected", "en", {}) for i in range(3)]
    unedited = run_ablate(model, tmp_path, plain, name="unedited")["logprob"].to_numpy().reshape(len(plain), n)
    np.testing.assert_array_equal(got[0], unedited[0])
    np.testing.assert_array_equal(got[1], unedited[1])
    assert scores["n_tokens"].to_list()[:n] == [len(t.split()) for t in TEXTS]


def test_mean_ablation_equals_hook(tiny_hub_model, tmp_path):
    model = tiny_hub_model("llama")
    rng = np.random.default_rng(0)
    means = {1: rng.normal(size=64), 3: rng.normal(size=64)}
    cols = [1, 2, 40]
    conditions = [Condition("none", "none", ""), Condition("key:en", "selected", "en", {3: cols})]
    got = run_ablate(model, tmp_path, conditions, mode="mean", means=means)["logprob"].to_numpy().reshape(2, len(TEXTS))
    for i, text in enumerate(TEXTS):
        assert got[1, i] == pytest.approx(reference_logprob(model, text, 3, cols, means[3][cols]), abs=1e-4)
        assert got[0, i] == pytest.approx(reference_logprob(model, text), abs=1e-4)


# ---------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def neurons_run(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("neurons")
    files = _files(out)
    result = _cli("analyze", "neurons", "--langs", ",".join(files), "--n", 3, "--model", tiny_dir("llama"), "--out", out, "--name", "n",
                  "--no-progress", "--no-plots", "--z-threshold", 1, "--batch-size", 4)
    assert result.exit_code == 0, result.output
    return out / "n"


def test_cli_from_a_neurons_run(tiny_dir, neurons_run, tmp_path):
    result = _cli("intervene", "ablate", "--from", neurons_run, "--n", 2, "--perplexity", "sentences", "--model", tiny_dir("llama"), "--out", tmp_path, "--name", "a",
                  "--no-progress", "--batch-size", 4)
    assert result.exit_code == 0, result.output
    run = tmp_path / "a"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["options"]["offset"] == 3
    prompts = pl.read_parquet(run / "prompts.parquet")
    assert prompts.filter(pl.col("condition") == "none")["text"].to_list() == [t for lines in LANGS.values() for t in lines[3:5]]
    table = pl.read_parquet(run / "perplexity.parquet")
    assert table.height == 7 * 3  # none + (key, random) × 3 ablated languages, × 3 evaluated
    assert table.filter(pl.col("kind") == "none")["change"].to_list() == [0.0, 0.0, 0.0]
    # perplexity = exp(-sum logprob / tokens) of the scores
    scores = pl.read_parquet(run / "scores.parquet").filter((pl.col("condition") == "key:en") & (pl.col("language") == "en"))
    row = table.filter((pl.col("condition") == "key:en") & (pl.col("language") == "en")).row(0, named=True)
    assert row["perplexity"] == pytest.approx(np.exp(-scores["logprob"].sum() / scores["n_tokens"].sum()))
    assert row["delta_nll"] == pytest.approx(np.log(row["perplexity"]) - np.log(row["baseline"]))
    assert row["change"] == pytest.approx(row["perplexity"] / row["baseline"] - 1)
    assert (run / "plots" / "ablate_perplexity.png").is_file()
    # random sets: same size per block as the selected ones, disjoint from them, seeded
    source = open_neurons_run(neurons_run)
    conds = {c.name: c for c in build_conditions(source, "key", ["en", "yy"], True, 0)}
    again = {c.name: c for c in build_conditions(source, "key", ["en", "yy"], True, 0)}
    for lang in ("en", "yy"):
        key, rand = conds[f"key:{lang}"], conds[f"random:{lang}"]
        assert key.size > 0 and rand.neurons == again[f"random:{lang}"].neurons
        for block, idx in key.neurons.items():
            assert len(rand.neurons[block]) == len(idx) and not set(rand.neurons[block]) & set(idx)
    assert table.filter(pl.col("condition") == "random:en")["n_ablated"][0] == conds["key:en"].size


def test_bad_from_and_languages(tiny_dir, neurons_run, tmp_path):
    result = _cli("intervene", "ablate", "--from", tmp_path, "--model", tiny_dir("llama"), "--out", tmp_path)
    assert result.exit_code == 2 and "not a hub run folder" in result.output
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"analysis": "similarity", "status": "complete"}))
    result = _cli("intervene", "ablate", "--from", other, "--model", tiny_dir("llama"), "--out", tmp_path)
    assert result.exit_code == 2 and "is a 'similarity' run, not a neurons run" in result.output
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "manifest.json").write_text(json.dumps({"analysis": "neurons", "status": "complete", "runs": ["m1", "m2"]}))
    result = _cli("intervene", "ablate", "--from", parent, "--model", tiny_dir("llama"), "--out", tmp_path)
    assert result.exit_code == 2 and "compares several models" in result.output and "m2" in result.output
    result = _cli("intervene", "ablate", "--from", neurons_run, "--ablate", "fr", "--model", tiny_dir("llama"), "--out", tmp_path)
    assert result.exit_code == 2 and "--ablate 'fr' is not a language of the neurons run (en, xx, yy)" in result.output
    result = _cli("intervene", "ablate", "--from", neurons_run, "--n", 3, "--model", tiny_dir("llama"), "--out", tmp_path)
    assert result.exit_code == 2 and "--n 6 is larger than the data" in result.output
    result = _cli("intervene", "ablate", "--from", neurons_run, "--n", 1, "--model", tiny_dir("gpt2"), "--out", tmp_path)
    assert result.exit_code == 2 and "use the same model" in result.output
    assert not list(tmp_path.glob("*ablate*"))


def test_neurons_and_ablation_run_remotely(tiny_dir, neurons_run, tmp_path):
    """--remote through the project's NDIF test server: the neurons run (activation and gate
    reads) and the ablation (nnsight edits) give the local runs' tables."""
    from test_remote import ServerProcess

    srv = ServerProcess([str(tiny_dir("llama"))], key=None)
    try:
        files = json.loads((neurons_run / "manifest.json").read_text())["options"]["sources"]
        neurons = _cli("analyze", "neurons", "--langs", ",".join(files), "--n", 3, "--model", tiny_dir("llama"), "--out", tmp_path,
                       "--name", "neurons-remote", "--no-progress", "--no-plots", "--z-threshold", 1, "--batch-size", 4,
                       "--remote", "--ndif-host", srv.url, "--timeout", 60, "--transfer-dtype", "float32")
        remote = _cli("intervene", "ablate", "--from", neurons_run, "--n", 2, "--perplexity", "sentences", "--ablate", "en", "--model", tiny_dir("llama"), "--out", tmp_path,
                      "--name", "remote", "--no-progress", "--no-plots", "--batch-size", 4, "--remote", "--ndif-host", srv.url, "--timeout", 60)
        windows = _cli("intervene", "ablate", "--from", neurons_run, "--offset", 0, "--window", 6, "--ablate", "en", "--model", tiny_dir("llama"),
                       "--out", tmp_path, "--name", "remote-w", "--no-progress", "--no-plots", "--batch-size", 4, "--remote", "--ndif-host", srv.url,
                       "--timeout", 60)
    finally:
        srv.stop()
    assert neurons.exit_code == 0, neurons.output
    for table in ("activations", "lape_counts", "lrds_sads", "key_neurons", "lape_neurons"):
        assert pl.read_parquet(tmp_path / "neurons-remote" / f"{table}.parquet").equals(pl.read_parquet(neurons_run / f"{table}.parquet")), table
    assert remote.exit_code == 0, remote.output
    local = _cli("intervene", "ablate", "--from", neurons_run, "--n", 2, "--perplexity", "sentences", "--ablate", "en", "--model", tiny_dir("llama"), "--out", tmp_path,
                 "--name", "local", "--no-progress", "--no-plots", "--batch-size", 4)
    assert local.exit_code == 0, local.output
    for table in ("scores", "perplexity"):
        ours, theirs = pl.read_parquet(tmp_path / "remote" / f"{table}.parquet"), pl.read_parquet(tmp_path / "local" / f"{table}.parquet")
        assert ours.equals(theirs), table
    assert windows.exit_code == 0, windows.output
    local = _cli("intervene", "ablate", "--from", neurons_run, "--offset", 0, "--window", 6, "--ablate", "en", "--model", tiny_dir("llama"),
                 "--out", tmp_path, "--name", "local-w", "--no-progress", "--no-plots", "--batch-size", 4)
    assert local.exit_code == 0, local.output
    for table in ("scores", "perplexity"):
        ours, theirs = pl.read_parquet(tmp_path / "remote-w" / f"{table}.parquet"), pl.read_parquet(tmp_path / "local-w" / f"{table}.parquet")
        assert ours.equals(theirs), table
    assert json.loads((tmp_path / "remote" / "manifest.json").read_text())["remote"]["requests"]


def test_mean_mode_needs_the_means_of_every_ablated_block():
    from hubclient.errors import HubError

    options = AblateOptions(source="test", ablate=["en"], languages=["en"], n=1, offset=0, mode="mean")
    conditions = [Condition("none", "none", ""), Condition("key:en", "selected", "en", {2: [1], 3: []})]
    with pytest.raises(HubError, match="needs the mean activation of block 2"):
        Ablate(options, conditions, ["en"], [0], means={3: np.zeros(4)})
    with pytest.raises(HubError, match="needs the mean activation of block 2"):
        Ablate(options, conditions, ["en"], [0], means=None)
    Ablate(options, conditions, ["en"], [0], means={2: np.zeros(4)})  # block 3 ablates nothing: no mean needed


# ---------------------------------------------------------------------------- paper evaluation
MC_ITEMS = [
    {"language": "en", "context": "the cat sat on the", "endings": ["mat", "paris", "three"], "label": 0},
    {"language": "en", "context": "the capital of france is", "endings": ["two", "paris"], "label": 1},
    {"language": "xx", "context": "one two three four", "endings": ["five", "dog", "text"], "label": 0},
]


def test_multiple_choice_runs_with_the_ablation_applied(tiny_hub_model, tmp_path):
    """--mc items are scored under every condition: an ending's score = log p(context + ending) −
    log p(context), from hand-run forwards with the same ablation hook; accuracy per condition
    compares the argmax with the label."""
    from analyses.ablate import mc_texts

    model = tiny_hub_model("llama")
    path = tmp_path / "mc.jsonl"
    path.write_text("\n".join(json.dumps(i) for i in MC_ITEMS) + "\n", encoding="utf-8")
    texts, langs, items, tasks, endings, answers = mc_texts(path)
    assert len(texts) == 3 + 8 and tasks.count("mc-context") == 3 and answers == {"en/0": 0, "en/1": 1, "xx/0": 0}
    texts, langs, items = TEXTS + texts, LANGUAGES + langs, [0, 1, 0, 1] + items
    tasks, endings = ["ppl"] * 4 + tasks, [-1] * 4 + endings
    conditions = [Condition("none", "none", ""), Condition("all:2", "selected", "en", {2: list(range(64))})]
    options = AblateOptions(source="test", ablate=["en"], languages=["en", "xx"], n=2, offset=0)
    analysis = Ablate(options, conditions, langs, items, tasks=tasks, endings=endings, answers=answers)
    run = run_analysis(analysis, analysis.prompts(texts), RunConfig(out=tmp_path, name="mc", progress=False, batch_size=3),
                       model=model, prompt_columns=analysis.prompt_columns())
    table = run.table("multiple_choice")
    for cond, block in (("none", None), ("all:2", 2)):
        cols = None if block is None else list(range(64))
        for lang in ("en", "xx"):
            correct = []
            for index, item in enumerate(i for i in MC_ITEMS if i["language"] == lang):
                ctx = reference_logprob(model, item["context"], block, cols)
                scored = [reference_logprob(model, item["context"] + " " + e, block, cols) - ctx for e in item["endings"]]
                correct.append(int(np.argmax(scored)) == item["label"])
            row = table.filter((pl.col("condition") == cond) & (pl.col("language") == lang)).row(0, named=True)
            assert row["accuracy"] == pytest.approx(np.mean(correct)) and row["n_items"] == len(correct)
    # perplexity is computed on the ppl texts only
    assert set(run.table("perplexity")["n_sentences"].to_list()) == {2}
    with pytest.raises(Exception, match="label among them"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"language": "en", "context": "a", "endings": ["b"], "label": 0}) + "\n")
        mc_texts(bad)


def test_random_draws_and_their_spread(tiny_dir, neurons_run, tmp_path):
    """--random-draws 3: three seeded random sets per language (same size per block, disjoint
    from the selected ones, different from each other); random_control equals numpy over the
    perplexity table's random rows."""
    result = _cli("intervene", "ablate", "--from", neurons_run, "--n", 2, "--perplexity", "sentences", "--ablate", "en", "--random-draws", 3, "--model", tiny_dir("llama"),
                  "--out", tmp_path, "--name", "r", "--no-progress", "--batch-size", 4)
    assert result.exit_code == 0, result.output
    run = tmp_path / "r"
    table = pl.read_parquet(run / "perplexity.parquet")
    assert sorted(table.filter(pl.col("kind") == "random")["condition"].unique().to_list()) == ["random:en", "random:en#1", "random:en#2"]
    conds = {c.name: c for c in build_conditions(open_neurons_run(neurons_run), "key", ["en"], True, 0, 3)}
    key = conds["key:en"]
    sets = [conds[n] for n in ("random:en", "random:en#1", "random:en#2")]
    for block, idx in key.neurons.items():
        for r in sets:
            assert len(r.neurons[block]) == len(idx) and not set(r.neurons[block]) & set(idx)
    assert len({tuple(tuple(v) for v in r.neurons.values()) for r in sets}) == 3
    control = pl.read_parquet(run / "random_control.parquet")
    for row in control.iter_rows(named=True):
        draws = table.filter((pl.col("kind") == "random") & (pl.col("language") == row["language"]))["change"].to_numpy()
        sel = table.filter((pl.col("kind") == "selected") & (pl.col("language") == row["language"]))["change"][0]
        assert row["n_draws"] == 3 and row["random_mean"] == pytest.approx(draws.mean()) and row["random_sd"] == pytest.approx(draws.std(ddof=1))
        assert row["selected_change"] == pytest.approx(sel) and row["p_random"] == pytest.approx((1 + (draws >= sel).sum()) / 4)
        assert row["random_low"] >= draws.min() - 1e-12 and row["random_high"] <= draws.max() + 1e-12
    assert (run / "plots" / "ablate_perplexity.png").is_file()


WINDOW_TEXTS = {"en": LANGS["en"], "xx": LANGS["xx"]}


def reference_window_nll(hub_model, text, window, block=None, columns=None):
    """Zeng et al.'s ``lib/eval.py`` by hand: tokenise ``text`` once (tokenizer defaults), cut
    non-overlapping ``window``-token windows (remainder dropped), run each alone through the
    plain transformers model (a pre-hook on block ``block``'s down projection zeroes
    ``columns``), and return (summed next-token NLL, predicted tokens) over the windows, numpy."""
    hf = hub_model.torch_model
    handle = replace_down_input(hub_model, block, columns)
    ids = hub_model.tokenizer(text)["input_ids"]
    nll, count = 0.0, 0
    try:
        for w in range(len(ids) // window):
            chunk = torch.tensor([ids[w * window : (w + 1) * window]])
            with torch.no_grad():
                logits = hf(input_ids=chunk).logits[0].double().numpy()
            logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
            target = chunk[0, 1:].numpy()
            nll -= logp[np.arange(window - 1), target].sum()
            count += window - 1
    finally:
        if handle is not None:
            handle.remove()
    return nll, count


def test_windows_perplexity_equals_hand_run_windows(tiny_hub_model, tmp_path):
    """--perplexity windows: per language, the joined held-out text cut into 8-token windows
    (last partial one dropped); perplexity = exp(token-weighted mean NLL) equals plain
    transformers forwards of the same windows with a hook zeroing the same neurons."""
    from analyses.ablate import join_by_language

    model = tiny_hub_model("llama")
    window = 8
    conditions = [Condition("none", "none", ""), Condition("some:1", "selected", "en", {1: [0, 5, 9, 33], 2: [1, 2]})]
    texts, langs = [], []
    for lang, lines in WINDOW_TEXTS.items():
        texts.extend(lines)
        langs.extend([lang] * len(lines))
    joined, order = join_by_language(texts, langs)
    assert order == ["en", "xx"] and joined[0] == "\n\n".join(LANGS["en"])
    options = AblateOptions(source="test", ablate=["en"], languages=order, n=5, offset=0, perplexity="windows", window=window)
    analysis = Ablate(options, conditions, order, [-1, -1])
    run = run_analysis(analysis, analysis.prompts(joined), RunConfig(out=tmp_path, name="w", progress=False, batch_size=3),
                       model=model, prompt_columns=analysis.prompt_columns())
    assert run.manifest["window"] == window
    scores = run.table("scores")
    table = run.table("perplexity")
    for lang, text in zip(order, joined):
        n_ids = len(model.tokenizer(text)["input_ids"])
        for cond in ("none", "some:1"):
            rows = scores.filter((pl.col("condition") == cond) & (pl.col("language") == lang))
            assert sorted(rows["sentence"].to_list()) == list(range(n_ids // window))  # remainder dropped
            assert set(rows["n_tokens"].to_list()) == {window - 1}
        nll, count = reference_window_nll(model, text, window)
        row = table.filter((pl.col("condition") == "none") & (pl.col("language") == lang)).row(0, named=True)
        assert row["n_tokens"] == count and row["perplexity"] == pytest.approx(np.exp(nll / count), rel=1e-4)
        # the hook zeroes block 1 then block 2; compose by hooking both blocks
        hf = model.torch_model
        handles = []
        for block, cols in ((1, [0, 5, 9, 33]), (2, [1, 2])):
            down = hf.get_submodule(model.arch.layers)[block - 1].get_submodule(model.arch.mlp_down)

            def hook(module, args, cols=cols):
                x = args[0].clone()
                x[..., cols] = 0.0
                return (x,)

            handles.append(down.register_forward_pre_hook(hook))
        try:
            nll_ab, _ = reference_window_nll(model, text, window)
        finally:
            for h in handles:
                h.remove()
        row = table.filter((pl.col("condition") == "some:1") & (pl.col("language") == lang)).row(0, named=True)
        assert row["perplexity"] == pytest.approx(np.exp(nll_ab / count), rel=1e-4)
        assert row["perplexity"] != pytest.approx(np.exp(nll / count), rel=1e-6)


def test_cli_windows_default(tiny_dir, neurons_run, tmp_path):
    """The CLI default is windows: one joined text per language; too long a window is one error."""
    result = _cli("intervene", "ablate", "--from", neurons_run, "--offset", 0, "--window", 6, "--ablate", "en", "--no-random",
                  "--model", tiny_dir("llama"), "--out", tmp_path, "--name", "w", "--no-progress", "--no-plots", "--batch-size", 4)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert manifest["options"]["perplexity"] == "windows" and manifest["options"]["n"] == 5
    prompts = pl.read_parquet(tmp_path / "w" / "prompts.parquet").filter(pl.col("condition") == "none")
    assert prompts["text"].to_list() == ["\n\n".join(lines) for lines in LANGS.values()]
    table = pl.read_parquet(tmp_path / "w" / "perplexity.parquet")
    assert table.height == 2 * 3 and (table["n_tokens"] % 5 == 0).all()
    result = _cli("intervene", "ablate", "--from", neurons_run, "--offset", 0, "--window", 10000, "--model", tiny_dir("llama"),
                  "--out", tmp_path, "--name", "w2", "--no-progress")
    assert result.exit_code == 2 and "--window 10000 is longer than the model's context" in result.output


def test_windows_with_multiple_choice(tiny_hub_model, tmp_path):
    """Windows mode with --mc items: the perplexity texts run as windows, the items as whole
    texts, and every item's log-probability equals the sentences-mode run's."""
    from analyses.ablate import join_by_language, mc_texts

    model = tiny_hub_model("llama")
    path = tmp_path / "mc.jsonl"
    path.write_text("\n".join(json.dumps(i) for i in MC_ITEMS) + "\n", encoding="utf-8")
    mc_t, mc_l, mc_i, mc_k, mc_e, answers = mc_texts(path)
    joined, order = join_by_language([*LANGS["en"], *LANGS["xx"]], ["en"] * 5 + ["xx"] * 5)
    conditions = [Condition("none", "none", ""), Condition("some:1", "selected", "en", {1: [0, 5, 9]})]
    runs = {}
    for mode, texts, langs, sents in (("windows", joined, order, [-1, -1]), ("sentences", TEXTS, LANGUAGES, [0, 1, 0, 1])):
        options = AblateOptions(source="test", ablate=["en"], languages=["en", "xx"], n=2, offset=0, perplexity=mode, window=8)
        analysis = Ablate(options, conditions, langs + mc_l, sents + mc_i, tasks=["ppl"] * len(texts) + mc_k,
                          endings=[-1] * len(texts) + mc_e, answers=answers)
        runs[mode] = run_analysis(analysis, analysis.prompts(texts + mc_t), RunConfig(out=tmp_path, name=mode, progress=False, batch_size=3),
                                  model=model, prompt_columns=analysis.prompt_columns())
    win = runs["windows"].table("scores")
    assert set(win.filter(pl.col("task") == "ppl")["n_tokens"].to_list()) == {7}
    key = ["condition", "language", "sentence", "task", "ending"]
    ours = win.filter(pl.col("task") != "ppl").sort(key)
    theirs = runs["sentences"].table("scores").filter(pl.col("task") != "ppl").sort(key)
    np.testing.assert_allclose(ours["logprob"].to_numpy(), theirs["logprob"].to_numpy(), atol=1e-4)
    assert runs["windows"].table("multiple_choice").sort("condition", "language")["accuracy"].to_list() == \
        runs["sentences"].table("multiple_choice").sort("condition", "language")["accuracy"].to_list()
