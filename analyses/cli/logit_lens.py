"""``hub analyze logit-lens``: the command (science: :mod:`analyses.logit_lens`).

Three modes, chosen once: text prompts (the lens), ``--task`` (the probe lens of
:mod:`analyses.task_lens`) and ``--modality image|audio`` (the lens at media positions,
:mod:`analyses.media_runs`); an option of another mode is an error.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from analyses.cli import lens_options as lo
from analyses.logit_lens import ANALYSIS, DEFAULT_TOP_K, LensOptions, LogitLens
from hubclient.cli import options as opt
from hubclient.errors import HubError
from hubclient.inputs import tasks
from hubclient.inputs.prompts import read_prompts
from hubclient.runner import RunConfig, run_analysis
from hubclient.science.lens import LENS_DTYPES

__all__ = ["ANALYSIS", "command"]


@opt.analysis_command
def command(
    prompt: opt.Prompt = None,
    prompts: opt.PromptsFile = None,
    dataset: opt.Dataset = None,
    column: opt.Column = None,
    n: opt.N = None,
    positions: Annotated[str, typer.Option(help="Token positions: last, all, or a list such as 0,3,-1 (0 = first token, BOS included).", rich_help_panel="Lens")] = "last",
    top_k: Annotated[Optional[int], typer.Option(help="Top-k tokens kept per prompt, position and layer [default: 10].", rich_help_panel="Lens")] = None,
    target: Annotated[list[str], typer.Option("--target", "-t", help="Follow this word's probability and rank (repeatable). Tokenised as written; multi-token words follow their first token (with a warning). Use ' Paris' for the mid-sentence form.", rich_help_panel="Lens")] = [],  # noqa: B006
    final_norm_value: opt.FinalNorm = "on",
    no_final_norm: opt.NoFinalNorm = False,
    lens_dtype: Annotated[str, typer.Option(help=f"Precision of W_U · h: model (the model's own lm_head) or one of {', '.join(LENS_DTYPES[1:])}. bfloat16 is ~3× faster on CPUs with bf16 instructions, at bf16 precision of the logits.", rich_help_panel="Lens")] = "model",
    lens: lo.Lens = "logit",
    tuned_lens: lo.TunedLens = None,
    patch_prompt: lo.PatchPrompt = lo.DEFAULT_PROMPT,
    patch_placeholder: lo.PatchPlaceholder = lo.DEFAULT_PLACEHOLDER,
    task: tasks.Task = None,
    data_seed: tasks.DataSeed = 0,
    max_operand: tasks.MaxOperand = 9,
    operators: tasks.Operators = "+-*",
    mbpp: tasks.Mbpp = None,
    with_tests: tasks.WithTests = True,
    cogs_dir: tasks.CogsDir = None,
    cogs_split: tasks.CogsSplit = "train",
    modality: Annotated[str, typer.Option(help="text: the prompts; image or audio: --prompts is a pairs file (.csv/.jsonl, columns media and caption) and the lens reads every media position, following the caption's words (an image/audio model). docs/modalities.md.", rich_help_panel="Media")] = "text",
    media_template: Annotated[str, typer.Option(help="With --modality image|audio: the text around the medium; {media} marks where it goes.", rich_help_panel="Media")] = "{media}",
    resample: Annotated[bool, typer.Option("--resample/--no-resample", help="Audio at another sampling rate than the model's: resample it (scipy) or stop with an error.", rich_help_panel="Media")] = True,
    max_positions: Annotated[Optional[int], typer.Option("--max-positions", min=1, help="With --modality image|audio: read at most N media positions per medium, evenly spaced (first and last kept) [default: all]. For --lens patchscope, whose copies grow with the positions (docs/lenses.md).", rich_help_panel="Media", show_default=False)] = None,
    *,
    config: RunConfig,
) -> None:
    """Logit lens: decode every layer's residual stream through the final norm and W_U.

    Writes logit_lens.parquet (top-k tokens with probability, logit and entropy per prompt,
    position and layer; layer 0 = embeddings), targets.parquet (with --target), a manifest,
    and plots (lens heatmap, target probability by layer) as HTML and PNG.

    With --task arithmetic the prompts and probe positions come from the task and the
    probe lens runs instead (analysis task-lens; docs/tasks.md): task_lens.parquet,
    task_lens_summary.parquet and its plot; --n counts expressions. With --task code,
    code-roles or cogs the semantic hub paper's code and COGS lenses run (A7, A8, A10;
    analysis code-lens): code_lens.parquet, code_lens_summary.parquet and plots; use
    --final-norm last for the paper's lens.
    """
    final_norm = opt.final_norm_option(final_norm_value, no_final_norm)
    # what needs no model is checked before it loads (a bad option must not cost the load)
    for word in target:
        if not word.strip():
            raise HubError(f"--target {word!r} is empty; give a word such as ' Paris'")
    if lens_dtype not in LENS_DTYPES:
        raise HubError(f"--lens-dtype {lens_dtype!r} is not one of {', '.join(LENS_DTYPES)}")
    lens_kw = lo.lens_fields(lens, tuned_lens, patch_prompt, patch_placeholder, final_norm)
    task_given = {
        "--data-seed": data_seed != 0, "--max-operand": max_operand != 9, "--operators": operators != "+-*",
        "--no-tests": not with_tests, "--cogs-split": cogs_split != "train",
    }  # --mbpp also comes from $HUB_MBPP, so it is not refused here
    media_given = {"--media-template": media_template != "{media}", "--no-resample": not resample, "--max-positions": max_positions is not None}
    if modality != "text":  # the lens at the media positions of (media, caption) pairs
        from analyses import media_runs

        mode = f"logit-lens --modality {modality} (it reads (media, caption) pairs from --prompts FILE and every media position)"
        opt.reject(mode, {
            "--task": task is not None, "--prompt": bool(prompt), "--column": column is not None, "--dataset": dataset is not None,
            "--positions": positions != "last", "--lens-dtype": lens_dtype != "model", **task_given,
        })
        options = media_runs.MediaLensOptions(
            top_k=DEFAULT_TOP_K if top_k is None else top_k, targets=list(target), final_norm=final_norm,
            modality=modality, media_template=media_template, resample=resample, max_positions=max_positions, **lens_kw,
        )
        opt.report(media_runs.run_lens(media_runs.single_pairs_file([str(prompts)] if prompts else None, modality), options, n, config))
        return
    if task is not None:  # the probe lens (analyses/task_lens.py)
        from analyses import task_lens
        from analyses.cli.task_lens import report

        mode = f"logit-lens --task {task} (it builds its own prompts and probes, and names the words it follows)"
        opt.reject(mode, {
            "--prompt": bool(prompt), "--prompts": prompts is not None, "--dataset": dataset is not None, "--column": column is not None,
            "--positions": positions != "last", "--target": bool(target), "--top-k": top_k is not None,
            "--lens-dtype": lens_dtype != "model", **media_given,
        })
        options = tasks.TaskOptions(task=task, n=n, data_seed=data_seed, max_operand=max_operand, operators=operators, mbpp=str(mbpp) if mbpp else None, with_tests=with_tests,
                                     cogs_dir=str(cogs_dir) if cogs_dir else None, cogs_split=cogs_split)
        report(task_lens.run_task_lens(options, final_norm, config, lens=lens_kw))
        return
    opt.reject("logit-lens on text prompts (task options need --task, media options --modality image|audio)", {**task_given, **media_given})
    analysis = LogitLens(LensOptions(positions=positions, top_k=DEFAULT_TOP_K if top_k is None else top_k, targets=list(target), final_norm=final_norm, lens_dtype=lens_dtype, **lens_kw))
    texts = read_prompts(prompt, prompts, column, n, dataset=dataset)
    opt.report(run_analysis(analysis, texts, config), analysis.summary)
