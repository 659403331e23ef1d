"""``hub intervene arithmetic``: the command (science: :mod:`analyses.arithmetic_intervention`)."""

from __future__ import annotations

from typing import Annotated

import typer

from analyses.arithmetic_intervention import ANALYSIS, ArithmeticOptions, run_arithmetic
from hubclient.cli import options as opt
from hubclient.runner import RunConfig

__all__ = ["ANALYSIS", "command"]


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
    opt.report(run_arithmetic(options, config), ANALYSIS.summary)
