"""What a lens task's prompt is: :class:`LensItem` with its :class:`Probe` spans.

Kept apart from :mod:`hubclient.inputs.tasks` so the task modules (``arithmetic``, ``code``) can
import these without importing the package that dispatches to them (no import cycle). Both names
stay importable from :mod:`hubclient.inputs.tasks` (and its old path ``hubclient.tasks``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LensItem", "Probe"]


@dataclass(frozen=True)
class Probe:
    """One probed span of a prompt and the words whose lens probability is read there.

    Attributes:
        kind: what the span is (``digits_prompt``, ``words_prompt``, …); results
            are summarised per kind.
        start / end: character span in the prompt text; the lens is read at the model token
            that holds the span's LAST character (it must end exactly at ``end``).
        text: the span's text (``prompt[start:end]``).
        groups: group name -> the words of that group (each word is followed by its first
            token, as written and with a leading space; see
            :func:`hubclient.science.probes.first_token_ids`).
    """

    kind: str
    start: int
    end: int
    text: str
    groups: dict[str, tuple[str, ...]]


@dataclass
class LensItem:
    """One prompt of a lens task: its text, probes and extra per-prompt columns
    (written to ``prompts.parquet``, e.g. ``task_id`` or ``a, op, b, answer``)."""

    text: str
    probes: list[Probe]
    columns: dict[str, Any] = field(default_factory=dict)
