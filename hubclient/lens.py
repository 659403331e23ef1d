"""The logit lens as reusable pieces that run inside a trace.

``unembed`` decodes hidden states through the model's own final norm (optional) and
unembedding; ``reduce_logits`` turns the ``[rows, vocab]`` logits into the few numbers an
analysis stores (top-k, target probabilities and ranks, entropy) without keeping the vocabulary
axis. Both are plain torch code over envoys, so they run locally and remotely alike.

Source: the logit lens (nostalgebraist 2020); semantic hub paper (Wu et al. 2024, Eq. 2):
``p_l(token | x) = softmax(h_l(x) W_U^T)``, with the model's final norm applied to ``h_l``
first when ``final_norm`` is on (the field's convention; the semantic hub paper's code used
no final norm).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from hubclient.models import HubModel

#: Rows of ``[rows, vocab]`` logits decoded at once: bounds the float32 temporaries to about
#: ``ROW_BUDGET * 4`` bytes (256 MiB) whatever the vocabulary size.
ROW_BUDGET = 1 << 26


def unembed(model: "HubModel", hidden: "torch.Tensor", final_norm: bool = True) -> "torch.Tensor":
    """Logits of hidden states through the model's unembedding ``W_U``.

    Args:
        model: the traced model.
        hidden: residual-stream states, ``[..., d_model]``.
        final_norm: apply the model's final norm before ``W_U`` (the field's logit lens).

    Returns:
        float32 logits ``[..., vocab]``, soft-capped like the model's own output where the
        family soft-caps (Gemma 2). With ``final_norm`` on, the last layer's logits equal the
        model's own.
    """
    import torch

    h = hidden
    if final_norm:
        h = model.final_norm(h)
    for module in model.extra_unembed:
        h = module(h)
    logits = model.lm_head(h).float()
    cap = model.logit_softcap
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def reduce_logits(logits: "torch.Tensor", top_k: int, target_ids: "torch.Tensor | None" = None) -> dict[str, Any]:
    """Reduce lens logits to what is stored: top-k, entropy, target probabilities and ranks.

    Probabilities come from the logits and their log-sum-exp (no full softmax is kept):
    ``p = exp(logit - logsumexp(logits))``. Entropy in nats: ``H = lse - sum_v p_v * logit_v``.
    Rank is 1-based: ``1 + #{v : logit_v > logit_target}``.

    Args:
        logits: ``[rows, vocab]`` float32.
        top_k: number of winners to keep (``1 <= top_k <= vocab``).
        target_ids: ``[targets]`` token ids to follow, or ``None``.

    Returns:
        dict with ``top_ids`` ``[rows, k]`` (long), ``top_logits``/``top_probs`` ``[rows, k]``,
        ``entropy`` ``[rows]`` and, with targets, ``target_logits``/``target_probs``/
        ``target_ranks`` ``[rows, targets]``.
    """
    import torch

    lse = torch.logsumexp(logits, dim=-1)
    top = torch.topk(logits, top_k, dim=-1)
    probs = torch.exp(logits - lse[:, None])
    entropy = lse - (probs * logits).sum(-1)
    out: dict[str, Any] = {
        "top_ids": top.indices,
        "top_logits": top.values,
        "top_probs": torch.exp(top.values - lse[:, None]),
        "entropy": entropy,
    }
    if target_ids is not None and target_ids.numel():
        t_logits = logits[:, target_ids]
        ranks = []
        for j in range(t_logits.shape[1]):
            ranks.append((logits > t_logits[:, j : j + 1]).sum(-1) + 1)
        out["target_logits"] = t_logits
        out["target_probs"] = torch.exp(t_logits - lse[:, None])
        out["target_ranks"] = torch.stack(ranks, dim=-1)
    return out


def lens(model: "HubModel", hidden: "torch.Tensor", top_k: int, target_ids: "torch.Tensor | None" = None, final_norm: bool = True) -> dict[str, Any]:
    """``reduce_logits(unembed(hidden))`` over row chunks, so ``[rows, vocab]`` never gets large.

    Args:
        hidden: ``[rows, d_model]`` residual-stream states.

    Returns:
        the dict of :func:`reduce_logits`, rows concatenated.
    """
    import torch

    vocab = model.vocab_size
    step = max(1, ROW_BUDGET // max(vocab, 1))
    parts: list[dict[str, Any]] = []
    for start in range(0, hidden.shape[0], step):
        logits = unembed(model, hidden[start : start + step], final_norm=final_norm)
        parts.append(reduce_logits(logits, top_k, target_ids))
    merged: dict[str, Any] = {}
    for key in parts[0]:
        chunks = []
        for part in parts:
            chunks.append(part[key])
        merged[key] = torch.cat(chunks, dim=0)
    return merged
