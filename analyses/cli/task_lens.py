"""``hub analyze task-lens``: the command (science: :mod:`analyses.task_lens`); also what
``hub analyze logit-lens --task …`` runs."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from analyses.cli import lens_options as lo
from analyses.task_lens import ANALYSIS, run_task_lens, summary_lines
from hubclient.cli import options as opt
from hubclient.inputs import tasks
from hubclient.inputs.tasks import TaskOptions
from hubclient.runner import RunConfig

__all__ = ["ANALYSIS", "command", "report"]


def report(run: Any) -> None:
    """Print the run folder, its tables and plots, and :func:`analyses.task_lens.summary_lines`."""
    opt.report(run, summary_lines)


@opt.analysis_command
def command(
    task: Annotated[str, typer.Option("--task", help="arithmetic (digit vs English number word at the end of 3+5= and of 'three plus five equals') or code (MBPP: 'and' at list commas vs controls; role words at identifiers).", rich_help_panel=tasks.PANEL)] = "arithmetic",
    n: Annotated[Optional[int], typer.Option("--n", help="arithmetic: expressions (each in two forms; default: all distinct); code: first N programs (default: all).", rich_help_panel=tasks.PANEL)] = None,
    data_seed: tasks.DataSeed = 0,
    max_operand: tasks.MaxOperand = 9,
    operators: tasks.Operators = "+-*",
    mbpp: tasks.Mbpp = None,
    with_tests: tasks.WithTests = True,
    final_norm_value: opt.FinalNorm = "on",
    no_final_norm: opt.NoFinalNorm = False,
    lens: lo.Lens = "logit",
    tuned_lens: lo.TunedLens = None,
    patch_prompt: lo.PatchPrompt = lo.DEFAULT_PROMPT,
    patch_placeholder: lo.PatchPlaceholder = lo.DEFAULT_PLACEHOLDER,
    *,
    config: RunConfig,
) -> None:
    """Probe lens on arithmetic and code (same as `hub analyze logit-lens --task …`).

    Writes task_lens.parquet (lens probability per probe, layer and word group),
    task_lens_summary.parquet (mean and 95% CI by layer per probe kind and group), prompts,
    a manifest and the plot. --lens tuned|patchscope reads the same probes through that lens
    (docs/lenses.md).
    """
    final_norm = opt.final_norm_option(final_norm_value, no_final_norm)
    lens_kw = lo.lens_fields(lens, tuned_lens, patch_prompt, patch_placeholder, final_norm)
    options = TaskOptions(task=task, n=n, data_seed=data_seed, max_operand=max_operand, operators=operators, mbpp=str(mbpp) if mbpp else None, with_tests=with_tests)
    report(run_task_lens(options, final_norm, config, lens=lens_kw))
