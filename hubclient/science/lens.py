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

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch

    from hubclient.models.loading import HubModel

#: Rows of ``[rows, vocab]`` logits decoded at once: bounds the float32 temporaries to about
#: ``ROW_BUDGET * 4`` bytes (256 MiB) whatever the vocabulary size.
ROW_BUDGET = 1 << 26


def unembed(model: "HubModel", hidden: "torch.Tensor", final_norm: bool = True, dtype: Any = None) -> "torch.Tensor":
    """Logits of hidden states through the model's unembedding ``W_U``.

    Args:
        model: the traced model.
        hidden: residual-stream states, ``[..., d_model]``.
        final_norm: apply the model's final norm before ``W_U`` (the field's logit lens).
        dtype: compute ``W_U · h`` in this torch dtype (e.g. ``torch.bfloat16``; the final norm
            still runs in the model's dtype) instead of through the model's own ``lm_head``.
            ``None``: the model's ``lm_head`` as it is. Needs an ``lm_head`` without bias (see
            :func:`check_lens_dtype`).

    Returns:
        float32 logits ``[..., vocab]`` on ``hidden``'s device, soft-capped like the model's own
        output where the family soft-caps (Gemma 2). With ``final_norm`` on, the last layer's
        logits equal the model's own. On a model split over devices (``device_map``) the norm
        and ``lm_head`` run where they sit (accelerate moves their inputs there) and the logits
        come back to ``hidden``'s device.
    """
    import torch

    h = hidden
    if final_norm:
        h = model.final_norm(h)
    for module in model.extra_unembed:
        h = module(h)
    if dtype is None:
        logits = model.lm_head(h).float()
    else:
        weight = model.unembedding_weight(dtype)
        logits = torch.nn.functional.linear(h.to(device=weight.device, dtype=dtype), weight).float()
    cap = model.logit_softcap
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.to(hidden.device)


#: ``--lens-dtype`` choices: ``model`` (the lm_head as the model runs it) or a torch dtype name.
LENS_DTYPES = ("model", "float32", "bfloat16", "float16")


def check_lens_dtype(model: "HubModel", name: str) -> Any:
    """The torch dtype for ``--lens-dtype name`` (``None`` for ``model``).

    Raises:
        HubError: an unknown name, or a lower-precision lens for an ``lm_head`` with a bias.
    """
    import torch

    from hubclient.errors import HubError

    if name not in LENS_DTYPES:
        raise HubError(f"--lens-dtype {name!r} is not one of {', '.join(LENS_DTYPES)}")
    if name == "model":
        return None
    head = model.torch_model.get_submodule(model.arch.lm_head)
    if getattr(head, "bias", None) is not None:
        raise HubError(f"--lens-dtype {name} needs an unembedding without bias; this model's lm_head has one: use --lens-dtype model")
    return getattr(torch, name)


def reduce_logits(logits: "torch.Tensor", top_k: int, target_ids: "torch.Tensor | None" = None) -> dict[str, Any]:
    """Reduce lens logits to what is stored: top-k, entropy, target probabilities and ranks.

    One softmax pass gives ``p`` (the only ``[rows, vocab]`` temporary); the log-sum-exp comes
    from the top-1 token, ``lse = logit_max - log p_max`` (``p_max >= 1/vocab``, so nothing
    underflows), which saves the separate ``logsumexp`` pass over the vocabulary. Top-k and
    target probabilities are ``exp(logit - lse)``. Entropy in nats: ``H = lse - sum_v p_v *
    logit_v``.
    Rank is 1-based: ``1 + #{v : logit_v > logit_target}``.

    Args:
        logits: ``[rows, vocab]`` float32.
        top_k: number of winners to keep (``1 <= top_k <= vocab``).
        target_ids: ``[targets]`` token ids to follow (the same for every row), or
            ``[rows, targets]`` (each row its own, e.g. its caption's words), or ``None``.

    Returns:
        dict with ``top_ids`` ``[rows, k]`` (long), ``top_logits``/``top_probs`` ``[rows, k]``,
        ``entropy`` ``[rows]`` and, with targets, ``target_logits``/``target_probs``/
        ``target_ranks`` ``[rows, targets]``.
    """
    import torch

    top = torch.topk(logits, top_k, dim=-1)  # sorted: column 0 is the arg-max
    probs = torch.softmax(logits, dim=-1)  # the one [rows, vocab] temporary
    lse = top.values[:, 0] - torch.log(probs.gather(1, top.indices[:, :1]).squeeze(1))
    entropy = lse - torch.bmm(probs.unsqueeze(1), logits.unsqueeze(2)).reshape(-1)  # row-wise dot, no product tensor
    out: dict[str, Any] = {
        "top_ids": top.indices,
        "top_logits": top.values,
        "top_probs": torch.exp(top.values - lse[:, None]),
        "entropy": entropy,
    }
    if target_ids is not None and target_ids.numel():
        t_logits = logits.gather(1, target_ids) if target_ids.dim() == 2 else logits[:, target_ids]
        ranks = []
        for j in range(t_logits.shape[1]):
            ranks.append((logits > t_logits[:, j : j + 1]).sum(-1) + 1)
        out["target_logits"] = t_logits
        out["target_probs"] = torch.exp(t_logits - lse[:, None])
        out["target_ranks"] = torch.stack(ranks, dim=-1)
    return out


#: ``final_norm`` values of :func:`decode_layers`: ``True`` (every layer through the final norm,
#: the field's logit lens), ``False`` (no layer), ``"last"`` (the semantic hub paper's code: only
#: layer ``L``, so the lens there is the model's own output; layers ``0..L-1`` raw).
FINAL_NORM_MODES = (True, False, "last")


def norm_mode(value: Any) -> Any:
    """Parse a ``--final-norm`` value: ``on``/``true`` -> ``True``, ``off``/``false`` -> ``False``,
    ``last`` (the paper's convention) -> ``"last"``.

    Raises:
        HubError: anything else, naming the three choices.
    """
    from hubclient.errors import HubError

    if value in FINAL_NORM_MODES:
        return value
    text = str(value).strip().lower()
    if text in ("on", "true", "all", "yes"):
        return True
    if text in ("off", "false", "none", "no"):
        return False
    if text in ("last", "paper"):
        return "last"
    raise HubError(f"--final-norm {value!r}: choose on (every layer), off (none) or last (only layer L, the semantic hub paper's code)")


def norm_label(value: Any) -> str:
    """The plot/summary words for a ``final_norm`` value of a manifest (``True`` if absent)."""
    if value == "last":
        return "final norm at layer L only (paper)"
    return "final norm" if value in (True, None) else "no final norm"


def decode_layers(
    model: "HubModel",
    batch: Any,
    reduce: Callable[["torch.Tensor", "torch.Tensor"], Any],
    final_norm: "bool | str" = True,
    dtype: Any = None,
) -> Any:
    """The logit lens at a batch's selected rows, at every layer, reduced chunk by chunk.

    Use inside a trace. Reads the residual stream at ``batch.row_batch``/``batch.row_position``
    for layers ``0..L`` (``[layers+1, rows, d_model]``, small), then decodes all layers' rows
    together through :func:`unembed` in chunks of at most ``ROW_BUDGET / vocab`` rows: ``W_U``
    (671 MB for Gemma's 262k vocabulary in fp32) is read once per chunk instead of once per
    layer, and ``[rows, vocab]`` logits never exist for more than one chunk.

    Args:
        batch: a :class:`hubclient.analysis.Batch` with at least one selected row.
        reduce: ``reduce(logits, rows)`` with float32 ``logits`` ``[chunk, vocab]`` and ``rows``
            ``[chunk]`` (long) giving each logit row's index among the batch's selected rows
            (so per-row data such as target ids can be indexed); returns a tensor ``[chunk, …]``
            or a dict of them.
        final_norm: ``True``/``False`` as :func:`unembed`; ``"last"``: the semantic hub paper's
            convention (``lib/logit_lens.py:46-66`` of its code: ``hidden_states[L]`` is
            ``norm(output of the last block)``, every lower layer raw), i.e. the final norm only
            at layer ``L``.
        dtype: as :func:`unembed`.

    Returns:
        what ``reduce`` returns, with the chunks joined and reshaped to ``[layers+1, rows, …]``.
    """
    import torch

    # Per layer on that layer's device (a model split by device_map has layers on several
    # devices), each selected row moved once to model.device, then stacked there.
    rows_b = batch.row_batch.to(model.device)
    rows_p = batch.row_position.to(model.device)
    states = []
    for _, hidden in model.hidden_states():
        here = hidden.device
        states.append(hidden[rows_b.to(here), rows_p.to(here)].to(rows_b.device))
    stacked = torch.stack(states)  # [layers+1, rows, d_model] on model.device
    n_layers, n_rows = stacked.shape[0], stacked.shape[1]
    flat = stacked.reshape(n_layers * n_rows, -1)
    row_of = torch.arange(n_rows, device=flat.device).repeat(n_layers)
    step = max(1, ROW_BUDGET // max(model.vocab_size, 1))
    parts = []
    if final_norm == "last":  # raw layers 0..L-1, then layer L through the norm
        spans = [(0, (n_layers - 1) * n_rows, False), ((n_layers - 1) * n_rows, n_layers * n_rows, True)]
    else:
        spans = [(0, n_layers * n_rows, bool(final_norm))]
    for begin, end, normed in spans:
        for start in range(begin, end, step):
            stop = min(start + step, end)
            logits = unembed(model, flat[start:stop], final_norm=normed, dtype=dtype)
            parts.append(reduce(logits, row_of[start:stop]))
    if isinstance(parts[0], dict):
        out = {}
        for key in parts[0]:
            chunks = []
            for part in parts:
                chunks.append(part[key])
            joined = torch.cat(chunks, dim=0)
            out[key] = joined.reshape(n_layers, n_rows, *joined.shape[1:])
        return out
    joined = torch.cat(parts, dim=0)
    return joined.reshape(n_layers, n_rows, *joined.shape[1:])
