"""``hub analyze media-lens``: the semantic hub paper's lens experiments on images and audio
(science: :mod:`analyses.media_runs`, paper-protocols.md A12-A15).

One experiment per run: ``colour`` (A12, solid-colour images the command writes itself),
``caption-nouns`` (A13), ``segmentation`` (A14, masks given in the pairs file) and
``label-words`` (A15, audio clips with their labels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from analyses.cli import lens_options as lo
from analyses.media_runs import EXPERIMENTS, NOUN_SOURCES, MediaProtocolLens, MediaProtocolOptions, protocol_summary, run_media_lens
from hubclient.cli import options as opt
from hubclient.errors import HubError
from hubclient.runner import RunConfig

__all__ = ["ANALYSIS", "command"]

ANALYSIS = MediaProtocolLens
PANEL = "Media lens"


@opt.analysis_command
def command(
    experiment: Annotated[str, typer.Argument(help=f"One of: {', '.join(f'{k} ({v[0]})' for k, v in EXPERIMENTS.items())}.", show_default=False)],
    pairs: Annotated[Optional[Path], typer.Argument(help="Pairs file (.csv/.jsonl: media, caption; caption-nouns: optional nouns; segmentation: mask, labels). colour: optional (default: the four solid images, written under --out).", show_default=False)] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Use only the first N media (baselines are still drawn from the whole file).", rich_help_panel="Input")] = None,
    media_template: Annotated[Optional[str], typer.Option(help="The prompt, with {media} where the medium goes [default: the paper's LLaVA / SALMONN prompt of the experiment; caption-nouns and segmentation on Chameleon: its 'What is in the image?\n{media}'].", rich_help_panel="Input", show_default=False)] = None,
    nouns: Annotated[str, typer.Option(help=f"caption-nouns: where the nouns come from: {', '.join(NOUN_SOURCES)} (column: the pairs file's 'nouns' cells, e.g. from spaCy as the paper; content-words: ours, the caption's non-function words; auto: the column when present).", rich_help_panel=PANEL)] = "auto",
    control: Annotated[str, typer.Option(help="colour: the control word (the paper: white).", rich_help_panel=PANEL)] = "white",
    seed: Annotated[Optional[int], typer.Option(help="Seed of the random baseline (segmentation, label-words) [default: the paper's, 1 and 0].", rich_help_panel=PANEL, show_default=False)] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="label-words: a file of every label, one a line, that the random label is drawn from (the paper: all VGGSound labels; default: the pairs file's labels).", rich_help_panel=PANEL, show_default=False)] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples of the 95% CI over media.", rich_help_panel=PANEL)] = 1000,
    final_norm_value: lo.PaperFinalNorm = None,
    lens: Annotated[str, typer.Option("--lens", help="Decoder of the hidden states: logit (W_U · norm(h), the paper's), tuned (Belrose et al. 2023, --tuned-lens PATH) or patchscope (Ghandeharioun et al. 2024: each media position's state patched into the text --patch-prompt, which has no medium; (L+1) x media positions copies per medium, see docs/lenses.md for the cost). docs/lenses.md.", rich_help_panel="Lens")] = "logit",
    tuned_lens: lo.TunedLens = None,
    patch_prompt: lo.PatchPrompt = lo.DEFAULT_PROMPT,
    patch_placeholder: lo.PatchPlaceholder = lo.DEFAULT_PLACEHOLDER,
    resample: Annotated[bool, typer.Option("--resample/--no-resample", help="Audio at another sampling rate than the model's: resample it (scipy) or stop with an error.", rich_help_panel="Input")] = True,
    max_positions: Annotated[Optional[int], typer.Option("--max-positions", min=1, help="Read at most N media positions per medium, evenly spaced in the medium's order (first and last kept) [default: all, as the paper]. For --lens patchscope, whose copies grow with the positions (docs/lenses.md); the quantities are then means over that sample, not the paper's.", rich_help_panel=PANEL, show_default=False)] = None,
    mask_added_tokens: Annotated[Optional[bool], typer.Option("--mask-added-tokens/--no-mask-added-tokens", help="Mask every added token of the tokenizer and every image-code token out of the lens softmax, renormalised over the rest (the paper's A13 code on Chameleon) [default: on for caption-nouns on Chameleon, else off].", rich_help_panel=PANEL, show_default=False)] = None,
    *,
    config: RunConfig,
) -> None:
    """The paper's logit lens at image/audio positions, matching targets vs a baseline, by layer.

    Writes media_lens.parquet (per medium, layer and set: the released code's quantity),
    media_lens_summary.parquet (mean over media with a 95% bootstrap CI, and the paired
    difference), prompts.parquet (with each medium's baseline), a manifest and a plot.
    The lens defaults to the paper's (--final-norm last); --lens tuned decodes through a tuned
    lens instead, --lens patchscope through the text target prompt (--patch-prompt, without the
    medium). docs/modalities.md, docs/lenses.md.
    """
    final_norm = lo.final_norm_for(final_norm_value, lens, "last")
    lens_kw = lo.lens_fields(lens, tuned_lens, patch_prompt, patch_placeholder, final_norm)
    if experiment not in EXPERIMENTS:
        raise HubError(f"unknown experiment {experiment!r}; choose {', '.join(EXPERIMENTS)}")
    if nouns not in NOUN_SOURCES:
        raise HubError(f"--nouns {nouns!r}: choose {', '.join(NOUN_SOURCES)}")
    if bootstrap < 1:
        raise HubError(f"--bootstrap must be at least 1, got {bootstrap}")
    opt.reject(f"media-lens {experiment}", {
        "--nouns": nouns != "auto" and experiment != "caption-nouns",
        "--control": control != "white" and experiment != "colour",
        "--seed": seed is not None and experiment not in ("segmentation", "label-words"),
        "--labels": labels is not None and experiment != "label-words",
    })
    options = MediaProtocolOptions(
        experiment=experiment, media_template=media_template, final_norm=final_norm, nouns=nouns, control=control,
        seed=seed, bootstrap=bootstrap, resample=resample, label_pool=str(labels) if labels else None,
        mask_added=mask_added_tokens, max_positions=max_positions, **lens_kw,
    )
    run = run_media_lens(options, pairs, n, config)
    opt.report(run, protocol_summary)
