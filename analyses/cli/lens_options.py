"""The ``--lens`` options every lens command shares (docs/lenses.md): ``--lens
logit|tuned|patchscope``, ``--tuned-lens PATH``, ``--patch-prompt``, ``--patch-placeholder``.

Commands take them as parameters of these types and check them with
:func:`hubclient.science.lens.check_lens_choice` before a model loads.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from hubclient.science.patchscope import DEFAULT_PLACEHOLDER, DEFAULT_PROMPT

PANEL = "Lens"
Lens = Annotated[str, typer.Option("--lens", help="Decoder of the hidden states: logit (W_U · norm(h)), tuned (Belrose et al. 2023: per-layer affine translators, --tuned-lens PATH; hub lens train makes one) or patchscope (Ghandeharioun et al. 2024: the state patched into --patch-prompt at the same layer, the next token decoded). docs/lenses.md.", rich_help_panel=PANEL)]
TunedLens = Annotated[Optional[str], typer.Option("--tuned-lens", help="With --lens tuned: a tuned lens folder (config.json + params.pt; hub lens train, or the tuned-lens package's TunedLens.save).", rich_help_panel=PANEL)]
PatchPrompt = Annotated[str, typer.Option("--patch-prompt", help="With --lens patchscope: the target prompt; the next token after it is decoded.", rich_help_panel=PANEL)]
PatchPlaceholder = Annotated[str, typer.Option("--patch-placeholder", help="With --lens patchscope: the token of --patch-prompt whose state is replaced (its last occurrence; must be one token).", rich_help_panel=PANEL)]

__all__ = ["DEFAULT_PLACEHOLDER", "DEFAULT_PROMPT", "Lens", "PatchPlaceholder", "PatchPrompt", "TunedLens"]
