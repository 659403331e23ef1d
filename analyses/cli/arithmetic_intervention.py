"""``hub intervene arithmetic``: the command (science: :mod:`analyses.arithmetic_intervention`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from analyses.arithmetic_intervention import ANALYSIS, STRENGTHS, ArithmeticOptions, run_arithmetic
from hubclient.cli import options as opt
from hubclient.runner import RunConfig

__all__ = ["ANALYSIS", "command"]


@opt.analysis_command
def command(
    protocol: Annotated[str, typer.Option(help="wu2024: the semantic hub's A17 as its released code runs it (the only protocol).", rich_help_panel="Arithmetic")] = "wu2024",
    layer: Annotated[str, typer.Option("--layer", "-l", help="Read layers (residual, 0 = embeddings = HF hidden_states index): auto (30 on Llama-2-7b, 25 on Llama-3-8B, else round(30/32·L) and round(25/32·L)), or 14, 14,17, 10:17.", rich_help_panel="Arithmetic")] = "auto",
    add_at: Annotated[str, typer.Option(help="Where the vector read at layer l is added: next (layer l+1 = pyvene block_output l, the released code) or same (layer l; our variant).", rich_help_panel="Arithmetic")] = "next",
    strength: Annotated[str, typer.Option("--strength", "-c", help="Strengths of the vector (0 = unsteered).", rich_help_panel="Arithmetic")] = STRENGTHS,
    n: Annotated[Optional[int], typer.Option("--n", help="Use a seeded random subset of N of the 846 '+' items (default: all).", rich_help_panel="Arithmetic")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --n subset.", rich_help_panel="Arithmetic")] = 0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Greedy tokens generated (16 in the released code).", rich_help_panel="Arithmetic")] = 16,
    *,
    config: RunConfig,
) -> None:
    """Semantic hub A17: add h_l("… equals to {other+1} plus") − h_l("… equals to {other} plus") at the last token of {result}={other}+; does the answer become {target−1}+1?

    Writes answers.parquet (one row per item × layer × strength, with the category correct /
    unchanged / other), accuracy.parquet (% per category with Wilson 95% intervals), a manifest
    (read and add layers) and a plot of % correct by strength.
    """
    options = ArithmeticOptions(protocol=protocol, layers=layer, add_at=add_at, strengths=strength, n=n, seed=seed, max_new_tokens=max_new_tokens)
    opt.report(run_arithmetic(options, config), ANALYSIS.summary)
