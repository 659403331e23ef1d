"""``hub intervene arithmetic`` against a hooked transformers ``generate`` on tiny models."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from analyses.arithmetic_intervention import ArithmeticIntervention, ArithmeticOptions, expressions, first_integer, run_arithmetic
from hubclient.errors import HubError
from hubclient.runner import RunConfig


def _hf_last_states(model, words, layer):
    out = []
    for w in words:
        with torch.no_grad():
            hs = model.torch_model(**model.tokenizer(w, return_tensors="pt"), output_hidden_states=True).hidden_states
        out.append(hs[layer][0, -1])
    return out[0] - out[1]


def _hf_generate_with_last_add(model, text, layer, delta, n):
    blocks = model.torch_model.get_submodule(model.arch.layers)
    calls = {"n": 0}

    def hook(mod, args, out):
        hidden = (out[0] if isinstance(out, tuple) else out).clone()
        if calls["n"] == 0:
            hidden[0, -1] += delta
        calls["n"] += 1
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handle = blocks[layer - 1].register_forward_hook(hook)
    ids = model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model.torch_model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
    handle.remove()
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    eos = model.tokenizer.eos_token_id
    return model.tokenizer.decode(new[: new.index(eos)] if eos in new else new, skip_special_tokens=True)


def test_expressions_and_answer_parsing():
    exprs = expressions(ArithmeticOptions(operands="2:4"))
    assert [e[2] for e in exprs] == ["2+3=", "2+4=", "3+2=", "3+4=", "4+2=", "4+3="]
    assert first_integer("15\n") == 15 and first_integer(" -3 and") == -3 and first_integer("none") is None


def test_steered_answers_match_hooked_transformers(tmp_path, tiny_hub_model):
    model = tiny_hub_model("llama")
    options = ArithmeticOptions(word_a="times", word_b="plus", operands="2:3", layers="1,3", coeffs="0,3", max_new_tokens=3,
                                template="the cat {a} sat {b}")
    run = run_arithmetic(options, RunConfig(out=tmp_path, progress=False, batch_size=3), model=model)
    answers = run.table("answers")
    assert answers.height == 2 * (1 + 2 * 2)
    steered = run.table("answers_steered")
    zero = steered.filter(pl.col("coeff") == 0)
    unsteered = answers.filter(~pl.col("steered")).select("expression", base=pl.col("continuation"))
    joined = zero.join(unsteered, on="expression")
    assert (joined["continuation"] == joined["base"]).all() and not joined["changed"].any()
    for row in answers.filter(pl.col("steered") & (pl.col("coeff") == 3)).iter_rows(named=True):
        delta = 3.0 * _hf_last_states(model, ["times", "plus"], row["layer"])
        assert row["continuation"] == _hf_generate_with_last_add(model, row["text"], row["layer"], delta, 3)
        assert row["expected"] == row["a"] + row["b"] and row["word_answer"] == row["a"] * row["b"]
    expected_switch = steered["changed"] & (steered["answer"] == steered["word_answer"]).fill_null(False)
    assert steered["to_word_answer"].to_list() == expected_switch.to_list()
    acc = run.table("accuracy")
    assert acc.height == 4 and (run.path / "plots" / "arithmetic_accuracy.png").is_file()
    summary = ArithmeticIntervention.summary(run).splitlines()
    best = acc.sort(["to_word_answer", "layer", "coeff"], descending=[True, False, False]).row(0, named=True)
    assert len(summary) == 4 and summary[0].startswith("  unsteered: ") and "'times' answer" in summary[0]
    assert summary[1].startswith(f"  layer {best['layer']} coeff {best['coeff']:g}: {best['to_word_answer']:.0%} switched")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(word_a="divided"), "unknown operation word"),
        (dict(op="/"), "unknown --op"),
        (dict(layers="4"), "out of range"),
        (dict(coeffs="one"), "not a number"),
        (dict(operands="a:b"), "not an integer"),
        (dict(template="{a}+"), "needs {a} and {b}"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, tiny_hub_model, changes, message):
    model = tiny_hub_model("llama")
    settings = dict(operands="2:3", layers="1")
    settings.update(changes)
    with pytest.raises(HubError, match=message):
        run_arithmetic(ArithmeticOptions(**settings), RunConfig(out=tmp_path / "runs", progress=False), model=model)
    assert not (tmp_path / "runs").exists()
