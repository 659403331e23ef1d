"""``hub intervene patch``: the command (science: :mod:`analyses.patch`)."""

from __future__ import annotations

from typing import Annotated

import typer

from analyses.patch import ANALYSIS, PatchOptions, run_patch
from hubclient.cli import options as opt
from hubclient.runner import RunConfig

__all__ = ["ANALYSIS", "command"]


@opt.analysis_command
def command(
    source: Annotated[list[str], typer.Option("--source", "-s", help="Source prompt whose states are copied (repeatable; pairs with --target in order).", rich_help_panel="Patching")],
    target: Annotated[list[str], typer.Option("--target", "-t", help="Target prompt that receives them (repeatable).", rich_help_panel="Patching")],
    layer: Annotated[str, typer.Option("--layer", "-l", help="Layers: all, a list (0,4,8) or a range (0:17 or 0:17:2). resid: 0 = embeddings .. L; attn/mlp: blocks 1..L.", rich_help_panel="Patching")] = "all",
    positions: Annotated[str, typer.Option(help="Target positions: all, last, or a list such as 0,3,-1 (BOS = 0).", rich_help_panel="Patching")] = "all",
    align: Annotated[str, typer.Option(help="Source position of each target position (--positions): auto (same index; only for prompts with the same number of tokens, else an error), start (same index) or end (same distance from the end).", rich_help_panel="Alignment")] = "auto",
    map_: Annotated[list[str], typer.Option("--map", help="Explicit source:target positions, e.g. 3:5,4:6,-1:-1 (0 = BOS, negative from the end); one for all pairs or one per pair. Replaces --positions/--align.", rich_help_panel="Alignment")] = [],  # noqa: B006
    align_word: Annotated[list[str], typer.Option("--align-word", help="SRC=TGT (repeatable): patch the token ending SRC's first occurrence in the source into the token ending TGT in the target (character offsets), e.g. France=法国.", rich_help_panel="Alignment")] = [],  # noqa: B006
    site: Annotated[str, typer.Option(help="What is copied: resid (residual stream), attn (attention output) or mlp (MLP output).", rich_help_panel="Patching")] = "resid",
    metric: Annotated[str, typer.Option(help="Per cell, at the target's last token: prob (first --token), logit-diff (first minus second --token), kl (to the clean target run), or auto.", rich_help_panel="Patching")] = "auto",
    token: Annotated[list[str], typer.Option("--token", help="Token to follow (repeatable), as written: ' Paris' for the mid-sentence form; multi-token words follow their first token.", rich_help_panel="Patching")] = [],  # noqa: B006
    *,
    config: RunConfig,
) -> None:
    """Activation patching: copy source hidden states into the target run, layer × position.

    Positions correspond as you say: --map S:T,…, --align-word SRC=TGT, or --align start|end;
    prompts of different token counts without one of them are an error. Writes patch.parquet
    (per cell: the source token patched into the target token, metric, normalized effect, KL,
    top token),
    patch_tokens.parquet, patch_baselines.parquet, a manifest and a heatmap. --batch-size sets
    the patched copies per forward pass.
    """
    options = PatchOptions(list(source), list(target), layer, positions, align, site, metric, list(token), maps=list(map_), align_words=list(align_word))
    opt.report(run_patch(options, config), ANALYSIS.summary)
