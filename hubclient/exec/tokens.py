"""Tokenising prompts: the one place text becomes token ids (with the tokenizer's special tokens)."""

from __future__ import annotations

from typing import Any

from hubclient.errors import HubError


_CONTEXT = object()


def tokenize(model: Any, prompts: list[str], limit: Any = _CONTEXT) -> list[list[int]]:
    """Token ids of each prompt, with the tokenizer's special tokens (e.g. BOS).

    Args:
        limit: the most tokens a prompt may have (default: the model's context); ``None`` for
            analyses that cut long prompts into windows themselves
            (:meth:`hubclient.analysis.Analysis.prompt_limit`).

    Raises:
        HubError: a prompt that tokenises to nothing, or one longer than ``limit``.
    """
    encoded = model.tokenizer(prompts, add_special_tokens=True)["input_ids"]
    if limit is _CONTEXT:
        limit = model.max_length
    for i, ids in enumerate(encoded):
        if not ids:
            raise HubError(f"prompt {i + 1} (counting from 1, as file lines) tokenises to no tokens; give some text")
        if limit is not None and len(ids) > limit:
            raise HubError(
                f"prompt {i + 1} (counting from 1, as file lines) has {len(ids)} tokens, more than the model's context of {limit}; shorten it"
            )
    return [list(ids) for ids in encoded]
