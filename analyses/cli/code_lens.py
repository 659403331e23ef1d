"""``hub analyze code-lens``: the command (science: :mod:`analyses.code_lens`); also what
``hub analyze logit-lens --task code|code-roles|cogs`` runs. Registered so that
``hub plot RUN_DIR`` redraws a code-lens run."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from analyses.cli import lens_options as lo
from analyses.code_lens import ANALYSIS, run_site_lens, summary_lines
from hubclient.cli import options as opt
from hubclient.inputs import tasks
from hubclient.inputs.tasks import TaskOptions
from hubclient.runner import RunConfig

__all__ = ["ANALYSIS", "command"]


@opt.analysis_command
def command(
    task: Annotated[str, typer.Option("--task", help="code (A7: ' and' vs ' or', ' not', the next token at MBPP list commas), code-roles (A8: parameter name vs argument at each call argument) or cogs (A10: role words before COGS proper names).", rich_help_panel=tasks.PANEL)] = "code",
    n: Annotated[Optional[int], typer.Option("--n", help="code, code-roles: the first N MBPP programs (default: all 974); cogs: the first N sentences with a proper name (default: all).", rich_help_panel=tasks.PANEL)] = None,
    data_seed: tasks.DataSeed = 0,
    mbpp: tasks.Mbpp = None,
    with_tests: tasks.WithTests = True,
    cogs_dir: tasks.CogsDir = None,
    cogs_split: tasks.CogsSplit = "train",
    final_norm_value: lo.PaperFinalNorm = None,
    no_final_norm: opt.NoFinalNorm = False,
    lens: lo.Lens = "logit",
    tuned_lens: lo.TunedLens = None,
    patch_prompt: lo.PatchPrompt = lo.DEFAULT_PROMPT,
    patch_placeholder: lo.PatchPlaceholder = lo.DEFAULT_PLACEHOLDER,
    *,
    config: RunConfig,
) -> None:
    """The semantic hub paper's code and COGS lenses (same as `hub analyze logit-lens --task …`,
    but the paper's lens, --final-norm last, is the default here).

    Writes code_lens.parquet (log-probability per site, layer and target), code_lens_summary.parquet
    (per-layer means with 95% CIs), prompts, a manifest and the plots. --lens tuned|patchscope
    reads the same sites through that lens (docs/lenses.md).
    """
    final_norm = lo.final_norm_for(final_norm_value, lens, "last", no_final_norm)
    lens_kw = lo.lens_fields(lens, tuned_lens, patch_prompt, patch_placeholder, final_norm)
    options = TaskOptions(task=task, n=n, data_seed=data_seed, mbpp=str(mbpp) if mbpp else None, with_tests=with_tests, cogs_dir=str(cogs_dir) if cogs_dir else None, cogs_split=cogs_split)
    tasks.check_task(task, "lens")
    if task not in tasks.SITE_TASKS:
        from hubclient.errors import HubError

        raise HubError(f"hub analyze code-lens takes --task {', '.join(tasks.SITE_TASKS)}; --task {task} runs with hub analyze task-lens")
    opt.report(run_site_lens(options, final_norm, config, lens=lens_kw), summary_lines)
