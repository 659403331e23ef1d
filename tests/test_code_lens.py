"""The semantic hub paper's code and COGS lenses (issue 16): A7, A8, A9 data, A10.

Positions are checked against characters located by hand in hand-written programs (and
Python's ``ast`` only where the paper's rule is "the end of this node"); lens numbers against
plain transformers (``output_hidden_states=True``; the paper's lens: ``h_l @ W_U`` with no norm
below the last layer, the model's logits at it) and numpy's log-softmax, with targets looked
up in the test tokenizer's vocabulary by name.
"""

from __future__ import annotations

import ast
import json
import random

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from analyses.code_lens import SiteLens, SiteLensOptions, cluster_bootstrap, find_position, run_site_lens, space_first_token
from hubclient.cli import app
from hubclient.errors import HubError
from hubclient.inputs.tasks import TaskOptions, code, cogs, similarity_corpus, site_items
from hubclient.inputs.tasks.sites import Site
from hubclient.runner import RunConfig, run_analysis

from conftest import SHARED_DATA, tiny_model_for, word_tokenizer

runner = CliRunner()

AND_PROGRAM = "x = [1, [2, 3], 'a' , 4]\ny = [5 # five\n, 6]\nassert f([7,\n 8]) == [9]"

ROLE_PROGRAM = (
    "def add(a, b):\n"
    "    return a + b\n"
    "print(add(x, 2), len(items))\n"
    "y = add((1), b)\n"
    "z = sorted(add((1, 2), 3))\n"
    "m = max(1, 2)\n"
    "w = math.sqrt(4)\n"
    "u = foo(3)"
)

SHORT_ROLES = "def g(a):\n    return a\nv = g(a_list)\nw = g(items)\nprint(add(x, 2))"

COGS_LINES = [
    ("Emma gave Liam a cake .", "* cake ( x _ 4 ) ; give . agent ( x _ 1 , Emma ) AND give . recipient ( x _ 1 , Liam ) AND give . theme ( x _ 1 , x _ 4 )", "in_distribution"),
    ("A dog saw Noah .", "dog ( x _ 1 ) AND see . agent ( x _ 2 , x _ 1 ) AND see . theme ( x _ 2 , Noah )", "in_distribution"),
    ("Mia was helped by Ava .", "help . theme ( x _ 2 , Mia ) AND help . agent ( x _ 2 , Ava )", "in_distribution"),
    ("The cat liked Ella .", "* cat ( x _ 1 ) ; like . agent ( x _ 2 , x _ 1 ) AND like . theme ( x _ 2 , Ella )", "in_distribution"),
    ("Zoe", "Zoe", "primitive"),
    ("A boy sent Lily the cake .", "* cake ( x _ 5 ) ; boy ( x _ 1 ) AND send . agent ( x _ 2 , x _ 1 ) AND send . recipient ( x _ 2 , Lily ) AND send . theme ( x _ 2 , x _ 5 )", "in_distribution"),
    ("Leo ran .", "run . agent ( x _ 1 , Leo )", "in_distribution"),
]


# --------------------------------------------------------------------------- A7 positions
def test_and_sites_are_the_commas_after_list_elements():
    t = AND_PROGRAM
    outer = t.index("[1")
    expected = sorted([
        t.index("1,", outer) + 1,            # after 1
        t.index("],", outer) + 1,            # after the nested [2, 3]
        t.index(",", t.index("'a'")),         # after 'a' and a space
        t.index("2,", outer) + 1,            # inside [2, 3]
        t.index("7,") + 1,                   # [7,\n 8]
    ])  # not: after 4 / 3 / 8 (']' follows), after 5 (a comment follows), [9] (one element)
    sites = code.and_sites(t)
    assert [s.char for s in sites] == expected
    assert all(t[s.char] == "," for s in sites)
    assert [s.info["list_size"] for s in sites] == [4, 2, 4, 4, 2]
    assert sites[0].targets == (("and", "and"), ("or", "or"), ("not", "not"), ("next", "<next>"))


def test_and_items_skip_programs_without_sites():
    programs = [code.Program(1, 1, "x = [1]\ny = (1, 2)"), code.Program(2, 2, AND_PROGRAM)]
    items = code.and_items(programs)
    assert [i.columns["task_id"] for i in items] == [2]


def test_comma_token_rule_skips_merged_commas():
    text = "['a', 2, 3]"
    comma = Site("comma", "comma-token", (), char=4)
    # "'," merged: skipped; "," alone: read; ", " (comma and a space, as the paper's strip(" ")): read
    assert find_position(text, comma, [9, 5, 6, 7], [(0, 1), (1, 3), (3, 5), (5, 11)], set(), None) == (None, "merged")
    assert find_position(text, comma, [9, 5, 6, 7], [(0, 1), (1, 4), (4, 5), (5, 11)], set(), None) == (2, "")
    assert find_position(text, comma, [9, 5, 6, 7], [(0, 1), (1, 4), (4, 6), (6, 11)], set(), None) == (2, "")
    key = Site("argument", "ends-at", (), char=1)
    assert find_position("f([1])", key, [1, 2], [(0, 1), (1, 3)], set(), None) == (None, "merged")  # "([" merged forward
    assert find_position("f([1])", key, [1, 2], [(0, 2), (2, 3)], set(), None) == (0, "")  # "f(" ends at the key


# --------------------------------------------------------------------------- A8 positions and role words
def test_role_sites_follow_the_paper_rules():
    t = ROLE_PROGRAM
    sites, dropped = code.role_sites(t)
    got = sorted((s.char, s.info["function"], s.info["arg_index"], s.info["param"], s.info["surface"]) for s in sites)
    line3 = t.index("print(")
    line5 = t.index("z = ")
    expected = sorted([
        (line3 + 5, "print", 0, "args", "add(x, 2)"),                  # inspect.signature(print): args, sep, …
        (t.index(", len"), "print", 1, "sep", "len(items)"),
        (t.index("add(x") + 3, "add", 0, "a", "x"),
        (t.index("x, 2") + 1, "add", 1, "b", "2"),
        (t.index("add((1)") + 3, "add", 0, "a", "1"),                  # (1) unparses to 1
        (line5 + len("z = sorted"), "sorted", 0, "iterable", "add((1, 2), 3)"),
        (t.index("2), 3") + 2, "add", 1, "b", "3"),                     # the ',' after ')' of (1, 2)
    ])
    assert got == expected
    for char, *_ in got:
        assert t[char] in "(,"
    # len(items): obj; add((1), b): b == b; add((1, 2), 3): argument 0 starts with '('; max: skipped
    # builtin (2 arguments); foo: not defined here; math.sqrt: not a plain name (never counted)
    assert dropped == {"no_param": 3, "same": 1, "paren": 1, "obj": 1, "no_key": 0}


def test_builtin_params_match_the_paper_table():
    assert code.builtin_param("len", 0) == "obj" and code.builtin_param("sorted", 0) == "iterable"
    assert code.builtin_param("int", 1) == "base" and code.builtin_param("map", 1) == "iter1"  # the hard-coded table
    assert code.builtin_param("range", 0) is None and code.builtin_param("zip", 0) is None
    assert code.builtin_param("abs", 3) is None


# --------------------------------------------------------------------------- COGS data
def _cogs_dir(tmp_path, lines=COGS_LINES, split="train"):
    folder = tmp_path / "cogs"
    folder.mkdir(exist_ok=True)
    (folder / f"{split}.tsv").write_text("".join("\t".join(row) + "\n" for row in lines), encoding="utf-8")
    return folder


def test_parse_names_maps_names_to_roles():
    assert cogs.parse_names(*COGS_LINES[0][:2], ignore_start=False) == {"Emma": "agent", "Liam": "recipient"}
    assert cogs.parse_names(*COGS_LINES[0][:2]) == {"Liam": "recipient"}  # Emma starts the sentence
    assert cogs.parse_names(*COGS_LINES[1][:2]) == {"Noah": "theme"}
    assert cogs.parse_names("A cake .", "cake ( x _ 1 ) AND cake . nmod . beside ( x _ 1 , Emma )", False) == {"Emma": "beside"}
    with pytest.raises(HubError, match="two roles"):
        cogs.parse_names("x", "a . agent ( x _ 1 , Emma ) AND a . theme ( x _ 1 , Emma )", False)


def test_name_swap_baseline_column(tmp_path):
    folder = _cogs_dir(tmp_path)
    corpus = cogs.read_cogs_baseline(folder, baseline="swap")
    assert corpus.languages == ["sentence", "logical_form", "swapped_logical_form"]
    # exactly two names: lines 1 and 3 (0-based 0 and 2); the primitive and one-name lines are out
    assert corpus.sentences == [0, 2]
    assert corpus.texts[2][0] == "* cake ( x _ 4 ) ; give . agent ( x _ 1 , Liam ) AND give . recipient ( x _ 1 , Emma ) AND give . theme ( x _ 1 , x _ 4 )"
    assert corpus.texts[2][1] == "help . theme ( x _ 2 , Ava ) AND help . agent ( x _ 2 , Mia )"
    shuffled = cogs.read_cogs_baseline(folder, baseline="swap-shuffle")
    assert shuffled.languages[2] == "shuffled_swapped_logical_form"
    for swapped, mixed in zip(corpus.texts[2], shuffled.texts[2]):
        head = swapped.rsplit(" ; ", 1)[0] + " ; " if " ; " in swapped else ""
        assert mixed.startswith(head)
        assert sorted(mixed[len(head):].split(" AND ")) == sorted(swapped[len(head):].split(" AND "))
    # the paper: random.seed(42), then random.shuffle of each swapped form's conjuncts in file order
    random.seed(42)
    want = []
    for swapped in corpus.texts[2]:
        head, _, rhs = swapped.rpartition(" ; ")
        parts = rhs.split(" AND ")
        random.shuffle(parts)
        want.append((head + " ; " if head else "") + " AND ".join(parts))
    assert shuffled.texts[2] == want
    with pytest.raises(HubError, match="--n 3 is more than the 2 items"):
        cogs.read_cogs_baseline(folder, n=3)
    via_task = similarity_corpus(TaskOptions(task="cogs", cogs_dir=str(folder), cogs_baseline="swap"))
    assert via_task.texts == corpus.texts


def test_names_are_resampled_and_start_names_dropped(tmp_path):
    folder = _cogs_dir(tmp_path)
    items, roles, counts = cogs.role_items(folder, seed=0)
    assert roles == ["agent", "recipient", "theme"]
    assert counts["rows"] == 6 and counts["with_names"] == 6
    original = {row[0] for row in COGS_LINES}
    all_names = {"Emma", "Liam", "Noah", "Mia", "Ava", "Ella", "Lily", "Leo"}
    for item in items:
        assert item.text not in original
        line = COGS_LINES[item.columns["line"] - 1]
        old = cogs.parse_names(line[0], line[1], ignore_start=False)
        new = cogs.parse_names(item.text, item.columns["logical_form"], ignore_start=False)
        assert sorted(new.values()) == sorted(old.values()) and not set(new) & set(old) and set(new) <= all_names
        for site in item.sites:
            assert site.word in new and not item.text.startswith(site.word) and site.info["gold_role"] == new[site.word]
    # "Leo ran ." only has a name at the start: dropped; so is Emma's (the start) in line 1
    assert [i.columns["line"] for i in items] == [1, 2, 3, 4, 6]
    assert [len(i.sites) for i in items] == [1, 1, 1, 1, 1]
    again, _, _ = cogs.role_items(folder, seed=0)
    assert [i.text for i in again] == [i.text for i in items]
    assert [i.text for i in cogs.role_items(folder, seed=1)[0]] != [i.text for i in items]


def test_shared_cogs_train_counts():
    folder = SHARED_DATA / "cogs"
    if not (folder / "train.tsv").is_file():
        pytest.skip(f"COGS train.tsv not found at {folder} (set HUB_SHARED_DATA to the shared data folder)")
    assert cogs.read_cogs_baseline(folder, baseline="swap").n == 2233
    items, roles, counts = cogs.role_items(folder, n=50)
    assert roles == ["agent", "recipient", "theme"] and len(items) == 50
    assert counts["rows"] == 24012 and counts["kept"] == 7476


def test_shared_mbpp_sites():
    path = SHARED_DATA / "mbpp" / "mbpp.jsonl"
    if not path.is_file():
        pytest.skip(f"MBPP not found at {path} (set HUB_SHARED_DATA to the shared data folder)")
    items, targets, counts = site_items(TaskOptions(task="code", mbpp=str(path)))
    assert counts["programs"] == 974 and len(items) == counts["programs_with_sites"] == 447 and targets == ["and", "or", "not", "next"]
    roles, targets, counts = site_items(TaskOptions(task="code-roles", mbpp=str(path)))
    assert targets == ["role", "surface"] and counts["programs"] == 974
    assert not any("assert" in item.text for item in roles)  # A8: no tests


# --------------------------------------------------------------------------- tiny model
def _tokenizer(texts, extra=()):
    """Word-level tokenizer (:func:`conftest.word_tokenizer`)."""
    return word_tokenizer(texts, extra)


@pytest.fixture(scope="module")
def parts():

    texts = [AND_PROGRAM, SHORT_ROLES, ROLE_PROGRAM] + [row[0] for row in COGS_LINES]
    tokenizer = _tokenizer(texts, extra=["and", "or", "not", "agent", "theme", "recipient", "iterable", "args", "sep"])
    for word in ("and", "or", "not", "agent", "theme", "recipient", "Emma", "Liam", "iterable"):  # the words under test are tokens
        assert tokenizer.convert_tokens_to_ids(word) != tokenizer.unk_token_id
    return tiny_model_for(tokenizer, seed=0, max_positions=256)


@pytest.fixture(scope="module")
def tiny(parts):
    from hubclient.models import wrap_model

    return wrap_model(*parts, model_id="tiny-code-llama")


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory, parts):
    model, tokenizer = parts
    folder = tmp_path_factory.mktemp("tiny-code-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _reference_logp(model, text, final_norm="last"):
    """[L+1, seq, vocab] lens log-probabilities in numpy: raw h_l @ W_U below L (the paper's
    lens), HF's own logits at L; with final_norm True, RMSNorm then W_U at every layer."""
    hf = model.torch_model
    ids = model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = hf(**ids, output_hidden_states=True)
    w_u = hf.lm_head.weight.detach().double().numpy()
    weight = hf.model.norm.weight.detach().double().numpy()
    eps = hf.config.rms_norm_eps
    layers = []
    for layer in range(model.n_layers):
        h = out.hidden_states[layer][0].double().numpy()
        if final_norm is True:
            h = h / np.sqrt((h * h).mean(-1, keepdims=True) + eps) * weight
        layers.append(h @ w_u.T)
    layers.append(out.logits[0].double().numpy())
    logits = np.stack(layers)
    top = logits.max(-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True)), ids["input_ids"][0].tolist()


def _mbpp(tmp_path, programs, tests=()):
    path = tmp_path / "mbpp.jsonl"
    lines = [json.dumps({"task_id": k + 1, "code": p, "test_list": list(tests)}) for k, p in enumerate(programs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_and_lens_equals_independent_computation(tmp_path, tiny):
    path = _mbpp(tmp_path, [AND_PROGRAM])
    run = run_site_lens(TaskOptions(task="code", mbpp=str(path)), "last", RunConfig(out=tmp_path / "out", progress=False), model=tiny)
    table = run.table("code_lens").sort("site", "layer")
    logp, ids = _reference_logp(tiny, AND_PROGRAM)
    tok = tiny.tokenizer
    offsets = tok(AND_PROGRAM, return_offsets_mapping=True)["offset_mapping"]
    commas = [s.char for s in code.and_sites(AND_PROGRAM)]
    want = {name: tok.convert_tokens_to_ids(name) for name in ("and", "or", "not")}
    assert table["site"].n_unique() == len(commas) == 5
    for k, char in enumerate(commas):
        position = next(t for t, (s, e) in enumerate(offsets) if (s, e) == (char, char + 1))  # the comma's own token
        rows = table.filter(pl.col("site") == k)
        assert rows["position"].unique().to_list() == [position] and rows["token"][0] == ","
        assert rows.height == tiny.n_layers + 1
        for name, token in want.items():
            np.testing.assert_allclose(rows[f"logp_{name}"].to_numpy(), logp[:, position, token], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(rows["logp_next"].to_numpy(), logp[:, position, ids[position + 1]], rtol=1e-4, atol=1e-4)
        assert rows["next_token"][0] == tok.decode([ids[position + 1]])
    # the summary is the paper's mean over commas (one program: its CI is a point)
    summary = run.table("code_lens_summary").filter((pl.col("statistic") == "logp_and") & (pl.col("layer") == 1))
    assert summary["mean"][0] == pytest.approx(table.filter(pl.col("layer") == 1)["logp_and"].mean())
    assert summary["n"][0] == 5 and summary["n_clusters"][0] == 1
    diff = run.table("code_lens_summary").filter((pl.col("statistic") == "and-or") & (pl.col("layer") == 2))
    layer2 = table.filter(pl.col("layer") == 2)
    assert diff["mean"][0] == pytest.approx((layer2["logp_and"] - layer2["logp_or"]).mean())
    wins = run.table("code_lens_summary").filter((pl.col("statistic") == "and>not") & (pl.col("layer") == 2))
    assert wins["mean"][0] == pytest.approx((layer2["logp_and"] > layer2["logp_not"]).mean())
    assert (run.path / "plots" / "code_and.png").is_file()


def test_final_norm_on_is_the_field_lens(tmp_path, tiny):
    path = _mbpp(tmp_path, [AND_PROGRAM])
    run = run_site_lens(TaskOptions(task="code", mbpp=str(path)), True, RunConfig(out=tmp_path / "out", progress=False, plots=False), model=tiny)
    rows = run.table("code_lens").filter(pl.col("site") == 0).sort("layer")
    logp, _ = _reference_logp(tiny, AND_PROGRAM, final_norm=True)
    np.testing.assert_allclose(rows["logp_and"].to_numpy(), logp[:, rows["position"][0], tiny.tokenizer.convert_tokens_to_ids("and")], rtol=1e-4, atol=1e-4)
    raw, _ = _reference_logp(tiny, AND_PROGRAM)
    assert not np.allclose(rows["logp_and"].to_numpy()[:-1], raw[:-1, rows["position"][0], tiny.tokenizer.convert_tokens_to_ids("and")], atol=1e-3)


def test_role_lens_equals_independent_computation(tmp_path, tiny):
    path = _mbpp(tmp_path, [SHORT_ROLES], tests=["assert g(1) == 1"])
    run = run_site_lens(TaskOptions(task="code-roles", mbpp=str(path)), "last", RunConfig(out=tmp_path / "out", progress=False), model=tiny)
    assert run.manifest["sites_skipped"] == {"same_token": 1}  # g(a_list): ' a' is the first token of both
    prompt = run.table("prompts")["text"][0]
    assert prompt == SHORT_ROLES  # no tests appended (A8)
    table = run.table("code_lens").sort("site", "layer")
    logp, ids = _reference_logp(tiny, SHORT_ROLES)
    tok = tiny.tokenizer
    offsets = tok(SHORT_ROLES, return_offsets_mapping=True)["offset_mapping"]
    expected = [  # (key char, param, surface)
        (SHORT_ROLES.index("g(items)") + 1, "a", "items"),
        (SHORT_ROLES.index("print(") + 5, "args", "add(x, 2)"),
    ]
    got = table.select("param", "surface").unique(maintain_order=True).rows()
    assert got == [(p, s) for _, p, s in expected]
    for (char, param, surface), (_, rows) in zip(expected, table.group_by("site", maintain_order=True)):
        position = next(t for t, (s, e) in enumerate(offsets) if e == char + 1)
        assert rows["position"][0] == position and SHORT_ROLES[offsets[position][0]] in "(,"
        role_id = tok.convert_tokens_to_ids(param)
        surface_id = tok.convert_tokens_to_ids(surface.split("(")[0])  # the first word of the surface
        np.testing.assert_allclose(rows["logp_role"].to_numpy(), logp[:, position, role_id], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(rows["logp_surface"].to_numpy(), logp[:, position, surface_id], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(rows["delta"].to_numpy(), logp[:, position, role_id] - logp[:, position, surface_id], rtol=1e-4, atol=1e-4)
    summary = run.table("code_lens_summary")
    for layer in range(tiny.n_layers + 1):
        delta = table.filter(pl.col("layer") == layer)["delta"].to_numpy()
        frac = summary.filter((pl.col("statistic") == "frac_role") & (pl.col("layer") == layer))["mean"][0]
        assert frac == pytest.approx((delta > 0).mean())
    for stem in ("code_roles_sign", "code_roles_fraction"):
        assert (run.path / "plots" / f"{stem}.png").is_file()


def test_cogs_role_lens_equals_independent_computation(tmp_path, tiny):
    folder = _cogs_dir(tmp_path)
    run = run_site_lens(TaskOptions(task="cogs", cogs_dir=str(folder)), "last", RunConfig(out=tmp_path / "out", progress=False), model=tiny)
    table = run.table("code_lens").sort("prompt", "site", "layer")
    prompts = run.table("prompts")
    tok = tiny.tokenizer
    roles = ["agent", "recipient", "theme"]
    role_ids = [tok.convert_tokens_to_ids(r) for r in roles]
    assert table["prompt"].n_unique() == 5
    for (prompt, _), rows in table.group_by("prompt", "site", maintain_order=True):
        text = prompts.filter(pl.col("prompt") == prompt)["text"][0]
        logp, ids = _reference_logp(tiny, text)
        words = [tok.decode([t]) for t in ids]
        name_at = words.index(rows["name"][0])
        assert rows["position"][0] == name_at - 1
        for role, token in zip(roles, role_ids):
            np.testing.assert_allclose(rows[f"logp_{role}"].to_numpy(), logp[:, name_at - 1, token], rtol=1e-4, atol=1e-4)
    # the paper's second print: P(pred) minus its mean over all names, per (gold, pred)
    summary = run.table("code_lens_summary")
    layer = table.filter(pl.col("layer") == 2)
    probs = {r: np.exp(layer[f"logp_{r}"].to_numpy()) for r in roles}
    gold = layer["gold_role"].to_numpy()
    for g in set(gold):
        for p in roles:
            want = probs[p][gold == g].mean() - probs[p].mean()
            got = summary.filter((pl.col("statistic") == "prob_minus_mean") & (pl.col("gold") == g) & (pl.col("pred") == p) & (pl.col("layer") == 2))["mean"][0]
            assert got == pytest.approx(want, abs=1e-12)
    top = summary.filter((pl.col("statistic") == "gold_top") & (pl.col("layer") == 2))["mean"][0]
    ranked = np.stack([layer[f"logp_{r}"].to_numpy() for r in roles], 1).argmax(1)
    assert top == pytest.approx(np.mean([roles[k] == g for k, g in zip(ranked, gold)]))
    assert (run.path / "plots" / "cogs_roles.png").is_file()


def test_cluster_bootstrap_resamples_programs():
    values = np.array([1.0, 1.0, 1.0, 5.0])
    mean, low, high = cluster_bootstrap(values, np.array([0, 0, 0, 1]))
    assert mean == 2.0 and low == pytest.approx(1.0) and high == pytest.approx(5.0)  # one cluster or the other
    assert cluster_bootstrap(np.array([3.0]), np.array([0]))[0] == 3.0


def test_space_first_token_skips_a_bare_marker():
    class Fake:
        unk_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [5, 7] if text == " and" else [0]}

        def decode(self, ids):
            return {5: " ", 7: " and"}.get(ids[0], "?")

    assert space_first_token(Fake(), "and") == 7
    assert space_first_token(Fake(), "zzz") is None


# --------------------------------------------------------------------------- CLI
def _hub(*args):
    return runner.invoke(app, ["analyze", *[str(a) for a in args], "--no-progress"])


def test_cli_logit_lens_tasks(tmp_path, code_dir):
    path = _mbpp(tmp_path, [AND_PROGRAM, SHORT_ROLES])
    folder = _cogs_dir(tmp_path)
    for task, extra, stat in (("code", ["--mbpp", path], "and-or"), ("code-roles", ["--mbpp", path], "frac_role"), ("cogs", ["--cogs-dir", folder], "gold_minus_mean")):
        result = _hub("logit-lens", "--task", task, *extra, "--final-norm", "last", "--model", code_dir, "--out", tmp_path / "out", "--name", task)
        assert result.exit_code == 0, result.output
        run = tmp_path / "out" / task
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["analysis"] == "code-lens" and manifest["options"]["final_norm"] == "last"
        assert stat in set(pl.read_parquet(run / "code_lens_summary.parquet")["statistic"])
        assert f"  {stat}" in result.output


def test_cli_similarity_cogs_baseline(tmp_path, code_dir):
    folder = _cogs_dir(tmp_path)
    result = _hub("similarity", "--task", "cogs", "--cogs-dir", folder, "--cogs-baseline", "swap", "--model", code_dir, "--out", tmp_path / "out", "--name", "s")
    assert result.exit_code == 0, result.output
    prompts = pl.read_parquet(tmp_path / "out" / "s" / "prompts.parquet")
    assert prompts["language"].to_list() == ["sentence"] * 2 + ["logical_form"] * 2 + ["swapped_logical_form"] * 2
    manifest = json.loads((tmp_path / "out" / "s" / "manifest.json").read_text())
    assert manifest["task"]["cogs_baseline"] == "swap" and manifest["task"]["cogs_split"] == "train"


def test_sitelens_refuses_unknown_experiment():
    with pytest.raises(HubError, match="unknown experiment"):
        SiteLens(SiteLensOptions(experiment="nope"), [])


def test_ast_positions_agree_with_characters():
    """Byte columns of ast are converted to characters (a non-ASCII string before the list)."""
    text = "s = 'é'; x = [1, 2]"
    (site,) = code.and_sites(text)
    assert site.char == text.index("1,") + 1
    assert ast.parse(text)  # valid program


# --------------------------------------------------------------------------- remote (NDIF test server)
def test_code_lens_remote_equals_local(tiny_dir, tmp_path, monkeypatch):
    """The trace body runs on a server without hub: same tables as a local run."""
    import sys
    from pathlib import Path

    from polars.testing import assert_frame_equal

    from hubclient.inputs.tasks.sites import SiteItem

    sys.path.insert(0, str(Path(__file__).parent))
    from test_remote import ServerProcess, client_setup, remote_config

    folder = tiny_dir("llama")
    texts = ["the cat sat , and the dog ran", "a dog ran in the park , the cat sat , one two"]
    items = []
    for text in texts:
        sites = []
        at = text.index(",")
        while at >= 0:
            sites.append(Site("comma", "comma-token", (("and", "and"), ("the", "the"), ("next", "<next>")), char=at, info={"list_size": 2}))
            at = text.find(",", at + 1)
        items.append(SiteItem(text, sites))

    def analysis():
        return SiteLens(SiteLensOptions(experiment="and", targets=["and", "the", "next"]), items)

    server = ServerProcess([str(folder)])
    try:
        client_setup(monkeypatch)
        monkeypatch.setenv("HUB_CACHE_DIR", str(tmp_path / "cache"))
        here = run_analysis(analysis(), texts, RunConfig(model=str(folder), out=tmp_path, name="local", batch_size=1, progress=False))
        there = run_analysis(analysis(), texts, remote_config(tiny_dir, server, tmp_path))
    finally:
        server.stop()
    for table in ("code_lens", "code_lens_summary"):
        assert here.table(table).height > 0
        assert_frame_equal(there.table(table), here.table(table), check_exact=False, rel_tol=1e-5, abs_tol=1e-6)
    assert there.manifest["remote"]["requests"]
