"""Arithmetic steering with English operation words: ``hub intervene arithmetic``.

Wu et al. 2024 (semantic hub, Sec. 6): adding ``h_l(word_a) - h_l(word_b)`` (e.g. "times" −
"plus", English words) at the last position of a digit expression (``3+5=``) at layer ``l``
can change the model's answer to the one the English word implies (``3*5``).

Traces: the two words in one forward pass; the vector is the difference of their residual
streams at their last tokens (:func:`hubclient.exec.edits.last_token_states`, in
:meth:`ArithmeticIntervention.setup`), ``[d_model]`` per layer. Then greedy generation of
``--max-new-tokens`` tokens for every expression, unsteered and with ``c · v_l`` added at the
expression's last token in the prompt's forward pass
(:class:`hubclient.exec.edits.GenerateWithEdits`). Both run locally or on NDIF (``--remote``,
``--detach``) like every analysis.

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
from typing import Any, ClassVar


from hubclient.errors import HubError
from hubclient.exec.edits import AddEdit, GenerateWithEdits, decode_generation, edit_batch, last_token_states, parse_layers, parse_numbers
from hubclient.runner import RunConfig, run_analysis

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


class ArithmeticIntervention(GenerateWithEdits):
    """Steer digit arithmetic with ``h_l(word_a) - h_l(word_b)`` at the last position.

    Raises:
        HubError: ``max_new_tokens`` < 1.
    """

    name: ClassVar[str] = "arithmetic"
    tables: ClassVar[dict[str, list[str]]] = {"answers": ["expression", "steered", "layer", "coeff"]}

    def __init__(self, options: ArithmeticOptions):
        super().__init__(options, options.max_new_tokens)
        self.exprs = expressions(options)
        self.layers: list[int] = []
        self.coeffs: list[float] = []
        self.vectors: dict[int, Any] = {}

    def prepare(self, model: Any, prompts: list[str], tokens: list[list[int]]) -> None:
        """Resolve layers and coefficients against the model.

        Raises:
            HubError: a layer out of range, a coefficient that is not a number.
        """
        self.layers = parse_layers(self.options.layers, model)
        self.coeffs = parse_numbers(self.options.coeffs, "coeff", integer=False)

    def setup(self, model: Any, executor: Any) -> None:
        """``v_l = h_l(word_a) - h_l(word_b)`` at the words' last tokens, through ``executor``."""
        states = last_token_states(model, [self.options.word_a, self.options.word_b], self.layers, executor)
        self.vectors = {}
        for layer in self.layers:
            self.vectors[layer] = states[layer][0] - states[layer][1]

    def make_batches(self, model: Any, tokens: list[list[int]], batch_size: int) -> list[Any]:
        """Every expression unsteered and at each layer × coefficient, ``batch_size`` rows a
        (greedy) generation; the vector is added at the expression's last token."""
        units = []
        for i in range(len(self.exprs)):
            units.append((i, None, None))
            for layer in self.layers:
                for coeff in self.coeffs:
                    units.append((i, layer, coeff))
        batches = []
        for start in range(0, len(units), batch_size):
            chunk = units[start : start + batch_size]
            edits, rows, prompt_index = [], [], []
            for i, layer, coeff in chunk:
                rows.append(tokens[i])
                prompt_index.append(i)
                edits.append([] if layer is None else [AddEdit(layer, len(tokens[i]) - 1, self.vectors[layer][None, :], coeff)])
            batches.append(edit_batch(model, len(batches), rows, edits, prompt_index, None, None, chunk))
        return batches

    def rows(self, model: Any, batch: Any, saved: dict[str, Any]) -> dict[str, Any]:
        """One row per generation: continuation, the answer and the answers to compare with."""
        import polars as pl

        out = decode_generation(model, batch, saved)
        fn_a = OPERATIONS[self.options.word_a][1]
        fn = OPERATIONS[SYMBOLS[self.options.op]][1]
        records = []
        for r, (i, layer, coeff) in enumerate(batch.meta["rows"]):
            a, b, text = self.exprs[i]
            records.append({"expression": i, "text": text, "a": a, "b": b, "steered": layer is not None, "layer": layer, "coeff": coeff,
                            "continuation": out.texts[r], "answer": first_integer(out.texts[r]), "expected": fn(a, b), "word_answer": fn_a(a, b)})
        schema = {"expression": pl.Int64, "text": pl.String, "a": pl.Int64, "b": pl.Int64, "steered": pl.Boolean, "layer": pl.Int64,
                  "coeff": pl.Float64, "continuation": pl.String, "answer": pl.Int64, "expected": pl.Int64, "word_answer": pl.Int64}
        return {"answers": pl.DataFrame(records, schema=schema)}

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
    def summary(cls, run: Any) -> str:
        """The unsteered accuracy and the layer × coefficient cells that switch the most
        answers to word_a's answer (the three best)."""
        acc = run.table("accuracy")
        if acc.height == 0:
            return ""
        word = run.manifest.get("options", {}).get("word_a", "word_a")
        lines = [f"  unsteered: {acc['correct_before'][0]:.0%} correct; answers switched to the {word!r} answer:"]
        for c in acc.sort(["to_word_answer", "layer", "coeff"], descending=[True, False, False]).head(3).iter_rows(named=True):
            lines.append(f"  layer {c['layer']} coeff {c['coeff']:g}: {c['to_word_answer']:.0%} switched, {c['changed']:.0%} changed (n={c['n']})")
        return "\n".join(lines)


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
    """Run the arithmetic intervention and write a complete run folder; returns its ``RunDir``
    (here or on NDIF with ``config.remote``).

    Raises:
        HubError: see :func:`expressions`, a layer out of range, a coefficient that is not a
            number, ``--max-new-tokens`` < 1; nothing is written when the input is bad.
    """
    analysis = ArithmeticIntervention(options)
    texts, a, b = [], [], []
    for e in analysis.exprs:
        a.append(e[0])
        b.append(e[1])
        texts.append(e[2])
    return run_analysis(analysis, texts, config, model=model, prompt_columns={"a": a, "b": b})

ANALYSIS = ArithmeticIntervention
