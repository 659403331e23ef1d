"""The patchscope lens (Ghandeharioun et al. 2024, "Patchscopes", arXiv 2401.06102, Sec. 4.1).

For a source state ``h_l`` (layer ``l``, one position of a source prompt), the patchscope
runs a *target prompt* whose placeholder token's hidden state at layer ``l*`` is replaced by
``h_l``, and reads the target's next-token distribution at its last position::

    Patchscope_l(h) = p_model(next token | T with h at (placeholder, layer l*))

hub's default target is the identity prompt ``"cat -> cat; 1135 -> 1135; hello -> hello; ? ->"``
(the placeholder ``?``; the few-shot pairs ask the model to repeat what the placeholder
stands for) and ``l* = l`` (the same layer, as nnterp's ``patchscope_lens``,
``nnterp/interventions.py``: ``get_layer_output(nn_model, layer)[…, index_to_patch] =
latents[idx]``). Differences from nnterp, by design: hub patches the source rows' states in the
*same* forward pass as the source (the target copies are extra rows of the source batch, one
copy per (row, layer), so one forward pass per batch of prompts instead of one per layer), and
it includes layer 0 (the embeddings). A fixed ``l* != l`` is not offered: ``l* < l`` needs the
source's later layers before the target's earlier ones, i.e. a second forward pass.

Note on the read position: with the default prompt the placeholder is not the last token, so a
patch at the last layer ``L`` cannot reach the read position (its layer-``L`` state is already
computed); layer ``L`` of the patchscope is the target prompt's own prediction. nnterp's
default prompt ends at the placeholder (read = placeholder), where layer ``L`` gives the logit
lens of the source state; pass such a prompt with ``--patch-prompt`` to get that behaviour.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from hubclient.errors import HubError

if TYPE_CHECKING:
    pass

#: The identity target prompt of Ghandeharioun et al. (2024), with ``?`` as the placeholder,
#: ending in the arrow so the next token is what the placeholder stands for.
DEFAULT_PROMPT = "cat -> cat; 1135 -> 1135; hello -> hello; ? ->"
DEFAULT_PLACEHOLDER = "?"


def target_tokens(tokenizer: Any, prompt: str, placeholder: str) -> tuple[list[int], int]:
    """The target prompt's token ids (with the tokenizer's special tokens, as every hub prompt)
    and the position of the placeholder's token (its last occurrence in the prompt).

    The placeholder must be one token: the prompt up to and including it must tokenise to a
    prefix of the whole prompt's ids, whose last token decodes to the placeholder (leading
    space aside, as SentencePiece's ``▁?``).

    Returns:
        (ids ``[T]``, placeholder position in ``0..T-1``).

    Raises:
        HubError: an empty prompt, a placeholder that is not in the prompt, or one that does not
            stand as a token of its own there (naming ``--patch-prompt``/``--patch-placeholder``).
    """
    if not prompt.strip():
        raise HubError("--patch-prompt is empty; give a target prompt such as " + repr(DEFAULT_PROMPT))
    if not placeholder or placeholder not in prompt:
        raise HubError(f"--patch-placeholder {placeholder!r} does not occur in --patch-prompt {prompt!r}")
    end = prompt.rindex(placeholder) + len(placeholder)
    ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    head = list(tokenizer(prompt[:end], add_special_tokens=True)["input_ids"])
    position = len(head) - 1
    alone = ids[: len(head)] == head and tokenizer.decode([ids[position]]).strip() == placeholder.strip()
    if not alone:
        raise HubError(
            f"--patch-placeholder {placeholder!r} is not one token of its own in --patch-prompt {prompt!r} "
            "for this tokenizer; choose a placeholder that tokenises alone (e.g. '?' with spaces around it)"
        )
    return ids, position


def extend_batch(
    batch: Any, target_ids: list[int], placeholder: int, n_layers: int, pad_id: int | None, per_token: tuple[str, ...] = ()
) -> Any:
    """``batch`` with one copy of the target prompt per (layer, selected row) appended as
    extra rows: copy ``(l, r)`` is row ``B + l * rows + r`` (``B`` = the batch's prompts).

    The width is the longer of the batch and the target; every row stays right-padded, so the
    prompts' rows read as before and the copies' tokens keep their positions. The batch's
    ``meta["patchscope"]`` gets ``start`` (``B``), ``placeholder`` and ``read`` (the target's
    last position) for :func:`hubclient.science.lens.decode_layers`.

    Image/audio batches (``batch.extra`` non-empty): the copies are text rows, so they carry no
    media tokens and the model scatters the encoder's features into the prompts' media
    positions only (LLaVA, Gemma 3 and Qwen2-Audio fill the positions whose id is the media
    token, in batch order). Per-token processor tensors (``per_token``, ``[B, seq]``, e.g.
    Gemma 3's ``token_type_ids``) get zero rows for the copies and are right-padded with 0 to
    the new width, as :func:`hubclient.exec.multimodal.collate` pads them; per-medium tensors
    (``pixel_values``, ``input_features``, ``feature_attention_mask``…) are kept as they are.
    The copies are as wide as the batch: a media batch of width ``T`` with ``R`` selected rows
    runs ``B + n_layers * R`` rows of ``T`` tokens (docs/lenses.md, "cost").

    Args:
        batch: a :class:`hubclient.analysis.Batch` (right-padded).
        target_ids: the target prompt's ids (:func:`target_tokens`).
        placeholder: its placeholder position.
        n_layers: hidden-state layers decoded, ``L + 1``.
        pad_id: the tokenizer's pad id (``None``: 0; padding is masked out).
        per_token: the keys of ``batch.extra`` with one value per token
            (:data:`hubclient.exec.multimodal.PER_TOKEN`); every other key is per medium.

    Raises:
        HubError: a per-token tensor whose shape is not the batch's ``[B, seq]`` (fix the
            processor key in ``PER_TOKEN``).
    """
    import torch

    n_rows = int(batch.row_batch.shape[0])
    copies = n_layers * n_rows
    n_prompts, old_width = int(batch.input_ids.shape[0]), int(batch.input_ids.shape[1])
    width = max(old_width, len(target_ids))
    pad = 0 if pad_id is None else int(pad_id)
    ids = torch.full((n_prompts + copies, width), pad, dtype=batch.input_ids.dtype)
    mask = torch.zeros((ids.shape[0], width), dtype=batch.attention_mask.dtype)
    ids[:n_prompts, :old_width] = batch.input_ids
    mask[:n_prompts, :old_width] = batch.attention_mask
    target = torch.tensor(target_ids, dtype=batch.input_ids.dtype)
    ids[n_prompts:, : len(target_ids)] = target
    mask[n_prompts:, : len(target_ids)] = 1
    extra = {}
    for key, value in batch.extra.items():
        if key in per_token:
            if tuple(value.shape) != (n_prompts, old_width):
                raise HubError(f"the processor tensor {key!r} has shape {tuple(value.shape)}, not the batch's {(n_prompts, old_width)}; it is not per token: remove it from PER_TOKEN in hubclient/exec/multimodal.py")
            grown = torch.zeros((n_prompts + copies, width), dtype=value.dtype)
            grown[:n_prompts, :old_width] = value
            value = grown
        extra[key] = value
    meta = dict(batch.meta)
    meta["patchscope"] = {"start": n_prompts, "placeholder": int(placeholder), "read": len(target_ids) - 1}
    return dataclasses.replace(batch, input_ids=ids, attention_mask=mask, extra=extra, meta=meta)
