"""What a token-lens task's prompt is: :class:`SiteItem` with its :class:`Site` read positions.

The semantic hub paper's code and COGS lenses (``paper-protocols.md`` A7, A8, A10) read, at one
token of a prompt, the log-probability of a few *named targets*, each the first token of
``" " + word`` (the paper's ``first_token_id_for_string(s, add_prefix_space=True)``,
``lib/logit_lens.py:115-129``), or the prompt's own next token. A :class:`Site` says where
that token is (in characters, resolved against the tokenizer by
:mod:`analyses.code_lens`) and which targets it reads; the task modules (:mod:`.code`,
:mod:`.cogs`) build them with Python's :mod:`ast` or the COGS logical form, without a model.

Kept apart from :mod:`hubclient.inputs.tasks` so the task modules can import it without an
import cycle (like :mod:`.items`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MATCHES", "NEXT_TOKEN", "Site", "SiteItem"]

#: Target word that stands for "the prompt's true next token" (A7's control).
NEXT_TOKEN = "<next>"

#: How a site's ``char`` / ``word`` becomes a token position (see :class:`Site`).
MATCHES = ("comma-token", "ends-at", "before-word")


@dataclass(frozen=True)
class Site:
    """One read position of a prompt and the targets read there.

    Attributes:
        kind: what the site is (``comma``, ``argument``, ``name``); results are per kind.
        match: how the token is found (each rule is the paper code's, quoted in
            :mod:`analyses.code_lens`):

            * ``comma-token`` (A7): the token whose character span ``[s, e)`` holds ``char``
              and whose text, stripped of spaces, is exactly ``","``; a comma merged with
              other characters (``',``) has none, and the site is skipped and counted;
            * ``ends-at`` (A8): the token whose span ends right after ``char`` (``e ==
              char + 1``); none when the key character is merged forward (``([``): skipped;
            * ``before-word`` (A10): the token just before the one token whose decoded text,
              stripped, equals ``word``; skipped when no token or several tokens do.
        char: character index in the prompt (``comma-token``, ``ends-at``); ``-1`` otherwise.
        word: the word of ``before-word`` (the proper name); ``""`` otherwise.
        targets: ``(name, word)`` pairs: the target named ``name`` is the first token of
            ``" " + word`` (a bare SentencePiece ``▁`` before it is skipped), or the token
            after the read position when ``word`` is :data:`NEXT_TOKEN`.
        info: extra per-site columns for the result table (e.g. ``function``, ``param``,
            ``surface``, ``gold_role``); every site of one task has the same keys.
    """

    kind: str
    match: str
    targets: tuple[tuple[str, str], ...]
    char: int = -1
    word: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class SiteItem:
    """One prompt of a token-lens task: its text, sites and per-prompt columns (written to
    ``prompts.parquet``, e.g. ``task_id``)."""

    text: str
    sites: list[Site]
    columns: dict[str, Any] = field(default_factory=dict)
