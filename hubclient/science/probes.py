"""Probe lens: the lens probability of a few named groups of tokens at chosen rows.

Several analyses ask the same question of the logit lens: at this position, how likely is the
next token to be one of *these* tokens, layer by layer? (translation-lens: the next Chinese
token vs its English translations; task-lens: the English number word vs the digit, "and" at a
comma, a role word at an identifier.) This module holds the two halves of that mechanism:

* before the trace, :func:`first_token_ids` turns a word into the token ids it can start with
  (rule ``first-real`` of :mod:`hubclient.science.tokens`),
  and :func:`pad_groups` packs each row's groups of ids into two padded ``[rows, width]``
  tensors;
* inside the trace, :func:`group_probabilities` reads the residual stream at the batch's
  selected rows at every layer, decodes it through :func:`hubclient.science.lens.decode_layers`
  (final norm optional, then ``W_U``; Eq. 2 of Wu et al. 2024,
  ``p_l(token | x) = softmax(W_U · norm(h_l(x)))``) and keeps, per row and group, the SUM and the
  MAX of the group's token probabilities. Tokens are disjoint outcomes of one softmax, so the
  sum is the probability that the next token is *some* token of the group.

Only ``[layers+1, rows, groups]`` numbers leave the trace; the ``[rows, vocab]`` logits never do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hubclient.science.lens import decode_layers
from hubclient.science.tokens import spelled_ids, word_ids

if TYPE_CHECKING:
    import torch

    from hubclient.models.loading import HubModel


def first_token_ids(tokenizer: Any, word: str) -> tuple[list[int], int]:
    """Token ids ``word`` can start with, as written and with a leading space.

    Rule ``first-real`` of spelling ``written+space`` (:mod:`hubclient.science.tokens`): each
    spelling's FIRST token is kept unless it is the unknown token or decodes to whitespace only
    (e.g. a bare SentencePiece ``▁`` in front of a digit). Duplicates are dropped.

    Args:
        tokenizer: a Hugging Face tokenizer.
        word: the word (or digit string) to look up.

    Returns:
        ``(ids, n_tokens)``: the kept first-token ids (possibly empty) and the fewest tokens
        any spelling takes in full (1 means the whole word is one token in some spelling;
        0 when no spelling tokenises to anything).
    """
    shortest = 0
    for ids in spelled_ids(tokenizer, word, "written+space"):
        if ids:
            shortest = len(ids) if shortest == 0 else min(shortest, len(ids))
    return word_ids(tokenizer, word, "first-real", "written+space"), shortest


def pad_groups(rows: list[list[list[int]]], n_groups: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Pack per-row groups of token ids into padded tensors.

    Args:
        rows: ``rows[r][g]`` = token ids of group ``g`` at row ``r`` (every row has ``n_groups``
            lists; a list may be empty).
        n_groups: G.

    Returns:
        ``(ids, group)``, both ``[rows, width]`` long: the ids one after the other and, for each,
        its group index ``0..G-1`` (``-1`` on padding; padding ids are 0).

    Raises:
        ValueError: a row without exactly ``n_groups`` groups.
    """
    import torch

    width = 1
    for groups in rows:
        if len(groups) != n_groups:
            raise ValueError(f"every row needs {n_groups} groups, got {len(groups)}")
        total = 0
        for ids in groups:
            total += len(ids)
        width = max(width, total)
    ids_t = torch.zeros((len(rows), width), dtype=torch.long)
    group_t = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, groups in enumerate(rows):
        at = 0
        for g, ids in enumerate(groups):
            if ids:
                ids_t[r, at : at + len(ids)] = torch.tensor(ids, dtype=torch.long)
                group_t[r, at : at + len(ids)] = g
                at += len(ids)
    return ids_t, group_t


def group_probabilities(model: "HubModel", batch: Any, ids: "torch.Tensor", group: "torch.Tensor", n_groups: int, final_norm: "bool | str" = True, lens: "dict[str, Any] | None" = None) -> dict[str, "torch.Tensor"]:
    """Lens probability of each group of tokens at the batch's selected rows, every layer.

    Use inside a trace (plain loops only: it is part of the trace body). For row ``r``, layer
    ``l`` and group ``g``: ``sum[l, r, g] = sum_{t in g} p_l(t)`` and
    ``max[l, r, g] = max_{t in g} p_l(t)`` (0 for an empty group), with
    ``p_l = softmax(W_U · norm(h_l))`` from :func:`hubclient.science.lens.decode_layers`, computed as
    ``exp(logit - logsumexp(logits))``.

    Args:
        model: the traced model.
        batch: a :class:`hubclient.analysis.Batch`; its selected rows are the probe positions.
        ids / group: ``[rows, width]`` from :func:`pad_groups`, one row per selected row of the
            batch, in the batch's row order.
        n_groups: G.
        final_norm: as :func:`hubclient.science.lens.decode_layers` (``True``, ``False`` or ``"last"``).
        lens: as :func:`hubclient.science.lens.decode_layers` (``None``: the logit lens; the
            tuned lens' tensors; ``{"kind": "patchscope"}`` with a batch extended by
            :func:`hubclient.science.patchscope.extend_batch`), so ``p_l`` is that lens' distribution.

    Returns:
        ``{"sum": [layers+1, rows, G], "max": [layers+1, rows, G]}`` float32; layer 0 =
        embeddings. A batch with no selected rows gives ``[layers+1, 0, G]`` zeros without
        decoding anything.
    """
    import torch

    # decode_layers is imported at module level: this function runs on the server, where an
    # import of hub code would fail (hub is shipped by value, not installed there).
    if ids.shape[0] == 0:
        empty = torch.zeros((model.n_layers + 1, 0, n_groups))
        return {"sum": empty, "max": empty.clone()}
    ids = ids.to(model.device)
    masks = []
    for g in range(n_groups):
        masks.append((group == g).to(model.device))

    def reduce(logits: Any, rows: Any) -> Any:  # logits on model.device (decode_layers)
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        probs = torch.exp(logits.gather(1, ids[rows]) - lse)  # [chunk, width]
        zero = torch.zeros_like(probs)
        sums = []
        maxes = []
        for g in range(n_groups):
            inside = torch.where(masks[g][rows], probs, zero)
            sums.append(inside.sum(-1))
            maxes.append(inside.amax(-1))
        return {"sum": torch.stack(sums, dim=-1), "max": torch.stack(maxes, dim=-1)}

    return decode_layers(model, batch, reduce, final_norm, None, lens)
