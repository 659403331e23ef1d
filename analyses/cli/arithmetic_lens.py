"""``hub analyze arithmetic-lens``: the command (science: :mod:`analyses.arithmetic_lens`).

The paper's arithmetic logit lens (``paper-protocols.md`` §A5): prompts ``8=5+``, log-prob of
the missing digit vs its English word at the last token, layer by layer.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from analyses.cli import lens_options as lo
from analyses.arithmetic_lens import ANALYSIS, ArithmeticLensOptions, run_arithmetic_lens, summary_lines
from hubclient.cli import options as opt
from hubclient.inputs.tasks import arithmetic
from hubclient.runner import RunConfig
from hubclient.science import stats

__all__ = ["ANALYSIS", "command"]

PANEL = "Arithmetic (paper A5)"


@opt.analysis_command
def command(
    operators: Annotated[str, typer.Option("--operators", help="The paper's operators to keep: +* (both, the paper: 846 + and 277 * items), + or *.", rich_help_panel=PANEL)] = "+*",
    n: Annotated[Optional[int], typer.Option("--n", help="A seeded random subset of N items, in the paper's order (default: all 1,123, the paper).", rich_help_panel=PANEL)] = None,
    data_seed: Annotated[int, typer.Option("--data-seed", help="Seed of the --n subset.", rich_help_panel=PANEL)] = 0,
    final_norm_value: lo.PaperFinalNorm = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap over items.", rich_help_panel=PANEL)] = 0,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CIs.", rich_help_panel=PANEL)] = stats.N_BOOTSTRAP,
    lens: lo.Lens = "logit",
    tuned_lens: lo.TunedLens = None,
    patch_prompt: lo.PatchPrompt = lo.DEFAULT_PROMPT,
    patch_placeholder: lo.PatchPlaceholder = lo.DEFAULT_PLACEHOLDER,
    *,
    config: RunConfig,
) -> None:
    """The semantic hub paper's arithmetic logit lens (Fig. 5; paper-protocols.md A5).

    For each of the paper's 1,123 items the prompt is '{result}={other}{op}' (e.g. 8=5+) and
    the missing operand is a digit 1-9: at the last token, per layer, the log-probability of the
    digit ('3', no space) and of the English word (' three', with a space). Writes
    arithmetic_lens.parquet, arithmetic_lens_summary.parquet (mean log-prob per layer with a 95%
    bootstrap CI over items; text-number is the per-item difference), prompts, a manifest, a plot.
    --lens tuned|patchscope reads the same two log-probabilities through that lens (docs/lenses.md).
    """
    final_norm = lo.final_norm_for(final_norm_value, lens, "last")
    lens_kw = lo.lens_fields(lens, tuned_lens, patch_prompt, patch_placeholder, final_norm)
    options = ArithmeticLensOptions(operators=operators, n=n, data_seed=data_seed, final_norm=final_norm, seed=seed, bootstrap=bootstrap, **lens_kw)
    arithmetic.sample_paper_items(arithmetic.paper_items(operators), n, data_seed)  # bad input fails before a model loads
    run = run_arithmetic_lens(options, config)
    opt.report(run, summary_lines)


