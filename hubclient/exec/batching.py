"""Tokenising and batching prompts: what one forward pass receives.

Prompts are tokenised once (with the tokenizer's special tokens), sorted by length and cut into
right-padded batches (:class:`hubclient.analysis.Batch`); generation uses left padding
(:func:`left_pad`). Nothing here runs a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hubclient.analysis import Batch
from hubclient.errors import HubError
from hubclient.exec.tokens import tokenize

__all__ = ["batches_for", "left_pad", "make_batches", "right_pad", "tokenize"]

if TYPE_CHECKING:
    import torch


def right_pad(tokens: list[list[int]], pad_id: int) -> dict[str, "torch.Tensor"]:
    """Right-padded ``input_ids`` / ``attention_mask`` ``[batch, max_len]`` (long): every token
    keeps the position it has when its prompt runs alone (causal attention never sees the pads
    that follow), so batched results equal unbatched ones."""
    import torch

    width = max(len(t) for t in tokens)
    ids = torch.full((len(tokens), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(tokens), width), dtype=torch.long)
    for b, t in enumerate(tokens):
        ids[b, : len(t)] = torch.tensor(t, dtype=torch.long)
        mask[b, : len(t)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def make_batches(
    tokens: list[list[int]],
    positions: list[list[int]],
    batch_size: int,
    pad_id: int,
    extras: list[dict[str, Any] | None] | None = None,
) -> list[Batch]:
    """Cut prompts into length-sorted, right-padded batches.

    Prompts are sorted by length, longest first (ties keep input order), so padding is small
    and a batch that does not fit memory fails first. The result does not depend on anything
    but the inputs and ``batch_size``.

    Args:
        tokens: token ids per prompt.
        positions: positions to read per prompt (from ``Analysis.positions``).
        batch_size: prompts per batch.
        pad_id: id used for padding (masked out).
        extras: per prompt, the processor tensors of an image/audio prompt or ``None`` (text).
            Media prompts and text prompts then go into separate batches (media first), each
            group length-sorted as above, and a batch's tensors are joined by
            :func:`hubclient.exec.multimodal.collate`.
    """
    import torch

    if batch_size < 1:
        raise HubError(f"--batch-size must be at least 1, got {batch_size}")
    order = sorted(range(len(tokens)), key=lambda i: -len(tokens[i]))
    groups = [order]
    if extras is not None:
        groups = [[i for i in order if extras[i] is not None], [i for i in order if extras[i] is None]]
    chunks = []
    for group in groups:
        for start in range(0, len(group), batch_size):
            chunks.append(group[start : start + batch_size])
    batches = []
    for k, idx in enumerate(chunks):
        padded = right_pad([tokens[i] for i in idx], pad_id)
        row_b: list[int] = []
        row_p: list[int] = []
        for b, i in enumerate(idx):
            for p in positions[i]:
                row_b.append(b)
                row_p.append(p)
        batches.append(
            Batch(
                index=k,
                prompt_index=idx,
                input_ids=padded["input_ids"],
                attention_mask=padded["attention_mask"],
                lengths=[len(tokens[i]) for i in idx],
                row_batch=torch.tensor(row_b, dtype=torch.long),
                row_position=torch.tensor(row_p, dtype=torch.long),
                tokens=[tokens[i] for i in idx],
                extra=_collate(extras, idx, padded["input_ids"].shape[1]),
            )
        )
    return batches


def _collate(extras: list[dict[str, Any] | None] | None, idx: list[int], width: int) -> dict[str, Any]:
    if extras is None or extras[idx[0]] is None:
        return {}
    from hubclient.exec.multimodal import collate

    return collate([extras[i] for i in idx], width)


def batches_for(analysis: Any, model: Any, tokens: list[list[int]], batch_size: int, extras: list[dict[str, Any] | None] | None = None) -> list[Batch]:
    """The batches of a run: ``analysis.make_batches`` (``make_media_batches`` with image/audio
    ``extras``) when the analysis batches its own units (interventions, the patchscope), else the prompts cut by :func:`make_batches` at the positions
    ``analysis.token_positions`` gives.

    Raises:
        HubError: ``batch_size`` < 1, or positions the analysis refuses.
    """
    if batch_size < 1:
        raise HubError(f"--batch-size must be at least 1, got {batch_size}")
    if extras is None:
        own = analysis.make_batches(model, tokens, batch_size)
    else:
        own = analysis.make_media_batches(model, tokens, batch_size, extras)
    if own is not None:
        return own
    positions = []
    for i, ids in enumerate(tokens):
        positions.append(analysis.token_positions(ids, i))
    return make_batches(tokens, positions, batch_size, model.tokenizer.pad_token_id, extras)


def left_pad(tokens: list[list[int]], pad_id: int) -> tuple[dict[str, "torch.Tensor"], list[int]]:
    """Left-padded inputs for generation and each row's offset (pads before its first token):
    prompt position ``p`` of row ``b`` is column ``offsets[b] + p``. ``input_ids`` /
    ``attention_mask`` are ``[batch, max_len]`` (long)."""
    import torch

    width = max(len(t) for t in tokens)
    ids = torch.full((len(tokens), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(tokens), width), dtype=torch.long)
    offsets = []
    for b, t in enumerate(tokens):
        off = width - len(t)
        ids[b, off:] = torch.tensor(t, dtype=torch.long)
        mask[b, off:] = 1
        offsets.append(off)
    return {"input_ids": ids, "attention_mask": mask}, offsets
