"""Arithmetic steering with English operation words: ``hub intervene arithmetic``.

Wu et al. 2024 (semantic hub, Sec. 6): adding ``h_l(word_a) - h_l(word_b)`` (e.g. "times" −
"plus", English words) at the last position of a digit expression (``3+5=``) at layer ``l``
can change the model's answer to the one the English word implies (``3*5``).

Traces: the two words in one forward pass; the vector is the difference of their residual
streams at their last tokens (:func:`hubclient.edits.last_token_states`), ``[d_model]`` per
layer. Then greedy generation of ``--max-new-tokens`` tokens for every expression, unsteered
and with ``c · v_l`` added at the expression's last token in the prompt's forward pass
(:func:`hubclient.edits.generate_with_edits`).

Reduces: the answer = the first integer in the continuation (null when there is none).

Stores: ``answers.parquet`` (expression, operands, layer, coeff, continuation, answer, the
unsteered answer, the answer the expression implies and the one ``word_a`` implies,
``changed``, ``to_word_answer`` = changed *and* now equal to ``word_a``'s answer, so an
unsteered answer that already was ``a·b`` never counts), ``accuracy.parquet`` (per layer and coefficient: share of
expressions whose answer became ``word_a``'s, share changed, share correct before), plot
``arithmetic_accuracy`` (share switched to word_a's answer, by layer), manifest.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import typer

from hubclient.cli import options as opt
from hubclient.analysis import Analysis
from hubclient.exec.edits import AddEdit, InterventionRun, generate_with_edits, last_token_states, load_for, parse_layers, parse_numbers, progress_bar
from hubclient.errors import HubError
from hubclient.runner import RunConfig, tokenize

#: English operation words and the operation each implies.
OPERATIONS = {"plus": ("+", operator.add), "minus": ("-", operator.sub), "times": ("*", operator.mul)}
SYMBOLS = {symbol: word for word, (symbol, _) in OPERATIONS.items()}
NUMBER = re.compile(r"-?\d+")


@dataclass
class ArithmeticOptions:
    """Options of ``hub intervene arithmetic`` (see the module docstring)."""

    word_a: str = "times"
    word_b: str = "plus"
    op: str = "+"
    operands: str = "2:9"
    layers: str = "all"
    coeffs: str = "1"
    max_new_tokens: int = 3
    template: str = "{a}{op}{b}="


def expressions(options: ArithmeticOptions) -> list[tuple[int, int, str]]:
    """``(a, b, text)`` for every ordered operand pair (a ≠ b) formatted with the template.

    Raises:
        HubError: an unknown operation symbol or word, or a template without {a}, {b}.
    """
    if options.op not in SYMBOLS:
        raise HubError(f"unknown --op {options.op!r}; choose one of {', '.join(SYMBOLS)}")
    for word in (options.word_a, options.word_b):
        if word not in OPERATIONS:
            raise HubError(f"unknown operation word {word!r}; choose among {', '.join(OPERATIONS)}")
    if "{a}" not in options.template or "{b}" not in options.template:
        raise HubError("--template needs {a} and {b} (and optionally {op}), e.g. '{a}{op}{b}='")
    values = parse_numbers(options.operands, "operands", integer=True)
    out = []
    for a in values:
        for b in values:
            if a != b:
                out.append((a, b, options.template.format(a=a, b=b, op=options.op)))
    return out


def first_integer(text: str) -> int | None:
    """The first integer in ``text`` (``"15\\n"`` -> 15), or ``None``."""
    match = NUMBER.search(text)
    return int(match.group()) if match else None


class ArithmeticIntervention(Analysis):
    """Steer digit arithmetic with ``h_l(word_a) - h_l(word_b)`` at the last position."""

    name: ClassVar[str] = "arithmetic"
    tables: ClassVar[dict[str, list[str]]] = {"answers": ["expression", "steered", "layer", "coeff"]}

    def finish(self, run: Any) -> dict[str, Any]:
        """Join each steered answer with the unsteered one; accuracy per layer × coefficient."""
        import polars as pl

        answers = run.table("answers")
        before = answers.filter(~pl.col("steered")).select("expression", before=pl.col("answer"))
        steered = answers.filter(pl.col("steered")).drop("before", strict=False).join(before, on="expression").with_columns(
            changed=pl.col("answer").ne_missing(pl.col("before")),
            to_word_answer=pl.col("answer").ne_missing(pl.col("before")) & pl.col("answer").eq_missing(pl.col("word_answer")),
            correct_before=pl.col("before").eq_missing(pl.col("expected")),
            word_answer_before=pl.col("before").eq_missing(pl.col("word_answer")),
        )
        accuracy = steered.group_by("layer", "coeff").agg(
            n=pl.len(),
            to_word_answer=pl.col("to_word_answer").mean(),
            changed=pl.col("changed").mean(),
            correct_before=pl.col("correct_before").mean(),
            word_answer_before=pl.col("word_answer_before").mean(),
            still_correct=pl.col("answer").eq_missing(pl.col("expected")).mean(),
        ).sort("layer", "coeff")
        return {"answers_steered": steered.sort("expression", "layer", "coeff"), "accuracy": accuracy}

    @classmethod
    def plots(cls, run: Any) -> dict[str, Any]:
        """``arithmetic_accuracy``: share of answers switched to word_a's, by layer (per coeff)."""
        import polars as pl

        from hubclient.plots import by_layer

        acc = run.table("accuracy")
        if acc.height == 0:
            return {}
        o = run.manifest["options"]
        frame = pl.concat([
            acc.select("layer", "coeff", value=pl.col("to_word_answer"), measure=pl.lit(f"answer = {o['word_a']}'s")),
            acc.select("layer", "coeff", value=pl.col("changed"), measure=pl.lit("answer changed")),
        ]).with_columns(series=pl.format("{} (c={})", pl.col("measure"), pl.col("coeff")))
        return {"arithmetic_accuracy": by_layer(frame.sort("series", "layer"), "value", "series",
                                                f"'{o['word_a']}' − '{o['word_b']}' added at the last token of a{o['op']}b=", "share of expressions")}


def run_arithmetic(options: ArithmeticOptions, config: RunConfig, model: Any = None) -> Any:
    """Run the arithmetic intervention and write a complete run folder; returns its ``RunDir``.

    Raises:
        HubError: see :func:`expressions`, a layer out of range, a coefficient that is not a
            number; nothing is written when the input is bad.
    """
    import polars as pl

    analysis = ArithmeticIntervention(options)
    exprs = expressions(options)
    model = load_for(config, model)
    layers = parse_layers(options.layers, model)
    coeffs = parse_numbers(options.coeffs, "coeff", integer=False)
    if options.max_new_tokens < 1:
        raise HubError(f"--max-new-tokens must be at least 1, got {options.max_new_tokens}")
    texts = [e[2] for e in exprs]
    tokens = tokenize(model, texts)
    states = last_token_states(model, [options.word_a, options.word_b], layers)
    vectors = {layer: states[layer][0] - states[layer][1] for layer in layers}
    fn_a = OPERATIONS[options.word_a][1]
    fn = OPERATIONS[SYMBOLS[options.op]][1]
    state = InterventionRun.start(analysis, config, model, texts, {"a": [e[0] for e in exprs], "b": [e[1] for e in exprs]})
    rows = []
    for i in range(len(exprs)):
        rows.append((i, None, None))
        for layer in layers:
            for coeff in coeffs:
                rows.append((i, layer, coeff))
    chunks = [rows[s : s + config.batch_size] for s in range(0, len(rows), config.batch_size)]
    schema = {"expression": pl.Int64, "text": pl.String, "a": pl.Int64, "b": pl.Int64, "steered": pl.Boolean, "layer": pl.Int64,
              "coeff": pl.Float64, "continuation": pl.String, "answer": pl.Int64, "expected": pl.Int64, "word_answer": pl.Int64}
    with state.guard("generations"), progress_bar(len(chunks), "arithmetic generations", config.progress) as (bar, task):
        for index, chunk in enumerate(chunks):
            if index not in state.done:
                edits, batch = [], []
                for i, layer, coeff in chunk:
                    batch.append(tokens[i])
                    edits.append([] if layer is None else [AddEdit(layer, len(tokens[i]) - 1, vectors[layer][None, :], coeff)])
                out = generate_with_edits(model, batch, edits, max_new_tokens=options.max_new_tokens)
                records = []
                for r, (i, layer, coeff) in enumerate(chunk):
                    a, b, text = exprs[i]
                    records.append({"expression": i, "text": text, "a": a, "b": b, "steered": layer is not None, "layer": layer, "coeff": coeff,
                                    "continuation": out.texts[r], "answer": first_integer(out.texts[r]), "expected": fn(a, b), "word_answer": fn_a(a, b)})
                state.write(index, {"answers": pl.DataFrame(records, schema=schema)})
            bar.advance(task)
    return state.finish()


@opt.analysis_command
def command(
    word_a: Annotated[str, typer.Option(help="Operation word whose answer the steering aims at (plus, minus, times).", rich_help_panel="Arithmetic")] = "times",
    word_b: Annotated[str, typer.Option(help="Operation word subtracted (usually the expression's own).", rich_help_panel="Arithmetic")] = "plus",
    op: Annotated[str, typer.Option(help="Operation symbol of the expressions: +, - or *.", rich_help_panel="Arithmetic")] = "+",
    operands: Annotated[str, typer.Option(help="Operand values: 2:9 or 2,3,5 (all ordered pairs a != b).", rich_help_panel="Arithmetic")] = "2:9",
    template: Annotated[str, typer.Option(help="Expression template with {a}, {op}, {b}.", rich_help_panel="Arithmetic")] = "{a}{op}{b}=",
    layer: Annotated[str, typer.Option("--layer", "-l", help="Layers: all, 2,6,10 or 0:18:2 (0 = embeddings).", rich_help_panel="Steering")] = "all",
    coeff: Annotated[str, typer.Option("--coeff", "-c", help="Coefficient(s) of the vector: 1, 1,4 or 0:8:2.", rich_help_panel="Steering")] = "1",
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens generated for the answer (greedy).", rich_help_panel="Steering")] = 3,
    *,
    config: RunConfig,
) -> None:
    """Add h_l(word_a) − h_l(word_b) at the last token of digit expressions; does the answer follow the word?

    Writes answers.parquet, answers_steered.parquet, accuracy.parquet (by layer and
    coefficient), a manifest and a plot of accuracy by layer.
    """
    options = ArithmeticOptions(word_a=word_a, word_b=word_b, op=op, operands=operands, layers=layer, coeffs=coeff, max_new_tokens=max_new_tokens, template=template)
    opt.report(run_arithmetic(options, config))


ANALYSIS = ArithmeticIntervention
