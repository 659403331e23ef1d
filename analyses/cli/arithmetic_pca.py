"""``hub analyze arithmetic-pca``: the command (science: :mod:`analyses.arithmetic_pca`).

The paper's arithmetic PCA (``paper-protocols.md`` §A6): last-token trajectories of the 846
``8=5+`` prompts through layers 0..L, projected on the 2 principal components of the 20 digit and
number-word unembeddings.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from analyses.arithmetic_pca import ANALYSIS, ArithmeticPCAOptions, items_for, run_arithmetic_pca, summary_lines
from hubclient.cli import options as opt
from hubclient.runner import RunConfig

__all__ = ["ANALYSIS", "command"]

PANEL = "Arithmetic (paper A6)"


@opt.analysis_command
def command(
    n: Annotated[Optional[int], typer.Option("--n", help="A seeded random subset of N of the 846 '+' items (default: all, the paper).", rich_help_panel=PANEL)] = None,
    data_seed: Annotated[int, typer.Option("--data-seed", help="Seed of the --n subset.", rich_help_panel=PANEL)] = 0,
    final_norm_value: Annotated[str, typer.Option("--final-norm", help="last (default, the paper: layer L after the final norm, as transformers' hidden_states), off (every layer raw) or on (every layer normed).", rich_help_panel=PANEL)] = "last",
    *,
    config: RunConfig,
) -> None:
    """The semantic hub paper's arithmetic PCA (paper-protocols.md A6).

    Prompts '{result}={other}+' (e.g. 8=5+) for the paper's 846 '+' items; the last token's
    states at layers 0..L, standardised per example, projected on a PCA(2) fit on the
    unembeddings of '0'..'9' and ' zero'..' nine'. Writes trajectories.parquet, anchors.parquet,
    prompts, a manifest and the plot (100 random examples, layer-coloured).
    """
    from hubclient.science.lens import norm_mode

    options = ArithmeticPCAOptions(final_norm=norm_mode(final_norm_value), n=n, data_seed=data_seed)
    items_for(options)  # bad input fails before a model loads
    opt.report(run_arithmetic_pca(options, config), summary_lines)
