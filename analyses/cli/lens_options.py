"""The ``--lens`` options every lens command shares (docs/lenses.md): ``--lens
logit|tuned|patchscope``, ``--tuned-lens PATH``, ``--patch-prompt``, ``--patch-placeholder``.

Commands take them as parameters of these types and check them with
:func:`hubclient.science.lens.check_lens_choice` before a model loads.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from hubclient.science.patchscope import DEFAULT_PLACEHOLDER, DEFAULT_PROMPT

PANEL = "Lens"
Lens = Annotated[str, typer.Option("--lens", help="Decoder of the hidden states: logit (W_U · norm(h)), tuned (Belrose et al. 2023: per-layer affine translators, --tuned-lens PATH; hub lens train makes one) or patchscope (Ghandeharioun et al. 2024: the state patched into --patch-prompt at the same layer, the next token decoded). docs/lenses.md.", rich_help_panel=PANEL)]
TunedLens = Annotated[Optional[str], typer.Option("--tuned-lens", help="With --lens tuned: a tuned lens folder (config.json + params.pt; hub lens train, or the tuned-lens package's TunedLens.save).", rich_help_panel=PANEL)]
PatchPrompt = Annotated[str, typer.Option("--patch-prompt", help="With --lens patchscope: the target prompt; the next token after it is decoded.", rich_help_panel=PANEL)]
PatchPlaceholder = Annotated[str, typer.Option("--patch-placeholder", help="With --lens patchscope: the token of --patch-prompt whose state is replaced (its last occurrence; must be one token).", rich_help_panel=PANEL)]

#: ``--final-norm`` of a command whose logit lens defaults to the paper's (``last``): unset, it
#: is ``last`` with ``--lens logit`` and ``on`` with the other lenses (:func:`final_norm_for`).
PaperFinalNorm = Annotated[Optional[str], typer.Option(
    "--final-norm", show_default=False, rich_help_panel=PANEL,
    help="Final norm in the logit lens: last (default: the semantic hub paper's code, raw layers below L and the model's output at L), "
    "on (every layer through the final norm) or off. --lens tuned and patchscope always decode through the final norm (default on there).",
)]


def final_norm_for(value: "str | None", lens: str, default: str = "last", off: bool = False) -> Any:
    """The ``final_norm`` of a command's ``--final-norm`` (``None``: not given) and
    ``--no-final-norm`` (``off``): unset, ``default`` for the logit lens and ``on`` for the
    tuned and patchscope lenses.

    Raises:
        HubError: an unknown value, or a contradiction with ``--no-final-norm``.
    """
    from hubclient.cli.options import final_norm_option

    if value is None:
        value = "off" if off else (default if lens == "logit" else "on")
    return final_norm_option(value, off)


def lens_fields(lens: str, tuned_lens: Any, patch_prompt: str, patch_placeholder: str, final_norm: Any) -> dict[str, Any]:
    """Check the ``--lens`` options before a model loads
    (:func:`hubclient.science.lens.check_lens_choice`) and return them as the keyword
    arguments of an options dataclass that inherits :class:`analyses.lenses.LensChoice`.

    Raises:
        HubError: see :func:`hubclient.science.lens.check_lens_choice`.
    """
    from hubclient.science.lens import check_lens_choice

    check_lens_choice(lens, tuned_lens, final_norm, patch_prompt, patch_placeholder)
    return {"lens": lens, "tuned_lens": str(tuned_lens) if tuned_lens else None, "patch_prompt": patch_prompt, "patch_placeholder": patch_placeholder}


__all__ = ["DEFAULT_PLACEHOLDER", "DEFAULT_PROMPT", "Lens", "PaperFinalNorm", "PatchPlaceholder", "PatchPrompt", "TunedLens", "final_norm_for", "lens_fields"]
