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
        output where the family soft-caps (Gemma 2), and with the tokens the model's forward
        masks set to the float32 minimum (Chameleon's image codes, ``model.masked_output_ids``). With ``final_norm`` on, the last layer's
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
    masked = model.masked_output_ids
    if masked is not None:  # as the model's own forward (Chameleon: image codes never come out as text)
        logits = logits.index_fill(-1, torch.tensor(masked, device=logits.device), torch.finfo(logits.dtype).min)
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
    lens: "dict[str, Any] | None" = None,
) -> Any:
    """The logit lens (or a tuned lens, or a patchscope) at a batch's selected rows, at every
    layer, reduced chunk by chunk.

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
        lens: which lens, as plain data (so trace code needs no hub class):
            ``None`` or ``{"kind": "logit"}``: the logit lens (as before);
            ``{"kind": "tuned", "weight": [L, d, d], "bias": [L, d]}``: the tuned lens
            (Belrose et al. 2023; :mod:`hubclient.science.tuned_lens`), ``h + h A_l^T + b_l``
            at layers ``0..L-1`` (layer ``L`` as it is), always through the final norm (the
            lens' definition, ``Unembed.forward`` of the tuned-lens package), so ``final_norm``
            is not used; ``{"kind": "patchscope"}``: the patchscope lens (Ghandeharioun et al.
            2024; :mod:`hubclient.science.patchscope`): the batch carries target-prompt copies
            (``batch.meta["patchscope"]``, :func:`hubclient.science.patchscope.extend_batch`);
            each layer's source state replaces the placeholder's state of its copy at the same
            layer, and the copies' own next-token distribution (final norm, ``W_U``) at the read
            position is decoded; ``final_norm`` is not used.

    Returns:
        what ``reduce`` returns, with the chunks joined and reshaped to ``[layers+1, rows, …]``.
    """
    import torch

    kind = "logit" if lens is None else lens["kind"]
    rows_b = batch.row_batch.to(model.device)
    rows_p = batch.row_position.to(model.device)
    states = []
    if kind == "patchscope":
        patch = batch.meta["patchscope"]
        n_sel = int(batch.row_batch.shape[0])
        start, placeholder, read = patch["start"], patch["placeholder"], patch["read"]
        hidden = None
        for layer, hidden in model.hidden_states():
            targets = torch.arange(start + layer * n_sel, start + (layer + 1) * n_sel, device=hidden.device)
            hidden[targets, placeholder] = hidden[rows_b.to(hidden.device), rows_p.to(hidden.device)]
            n_layers_seen = layer + 1
        copies = torch.arange(start, start + n_layers_seen * n_sel, device=hidden.device)
        stacked = hidden[copies, read].reshape(n_layers_seen, n_sel, -1)  # [layers+1, rows, d_model]
        final_norm = True
    else:
        for layer, hidden in model.hidden_states():
            state = hidden[rows_b.to(hidden.device), rows_p.to(hidden.device)]
            if kind == "tuned" and layer < lens["weight"].shape[0]:
                w = lens["weight"][layer].to(device=state.device, dtype=state.dtype)
                b = lens["bias"][layer].to(device=state.device, dtype=state.dtype)
                state = state + state @ w.T + b
            states.append(state.to(model.device))
        stacked = torch.stack(states)  # [layers+1, rows, d_model]
        if kind == "tuned":
            final_norm = True
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


#: ``--lens`` choices: the logit lens, the tuned lens (Belrose et al. 2023) and the patchscope
#: lens (Ghandeharioun et al. 2024).
LENSES = ("logit", "tuned", "patchscope")
#: Plot/summary names of the lenses.
LENS_LABELS = {"logit": "Logit lens", "tuned": "Tuned lens", "patchscope": "Patchscope lens"}


def lens_label(options: Any) -> str:
    """``"Logit lens"``, ``"Tuned lens"`` or ``"Patchscope lens"`` for a manifest's options
    (``lens`` absent: the logit lens)."""
    return LENS_LABELS.get((options or {}).get("lens", "logit") or "logit", "Logit lens")


def check_lens_choice(lens: str, tuned_lens: Any, final_norm: Any, patch_prompt: str | None = None, patch_placeholder: str | None = None) -> None:
    """Check the ``--lens`` options before a model loads.

    Raises:
        HubError: an unknown lens; ``--lens tuned`` without ``--tuned-lens PATH`` (or a folder
            without ``config.json``/``params.pt``); ``--tuned-lens`` without ``--lens tuned``;
            ``--final-norm off|last`` with the tuned or patchscope lens (both always decode
            through the final norm); patchscope options with another lens, or a placeholder
            that is not in the prompt.
    """
    from hubclient.errors import HubError

    if lens not in LENSES:
        raise HubError(f"--lens {lens!r} is not one of {', '.join(LENSES)}")
    if lens == "tuned":
        if not tuned_lens:
            raise HubError("--lens tuned needs --tuned-lens PATH, a folder with config.json and params.pt (hub lens train writes one; the tuned-lens package's saved lenses load too)")
        from hubclient.science.tuned_lens import check_lens_folder

        check_lens_folder(tuned_lens)
    elif tuned_lens:
        raise HubError(f"--tuned-lens is for --lens tuned (this run uses --lens {lens})")
    if lens != "logit" and final_norm is not True:
        raise HubError(f"--final-norm {'last' if final_norm == 'last' else 'off'} applies to the logit lens only; --lens {lens} always decodes through the final norm (use --final-norm on)")
    from hubclient.science.patchscope import DEFAULT_PLACEHOLDER, DEFAULT_PROMPT

    prompt = DEFAULT_PROMPT if patch_prompt is None else patch_prompt
    placeholder = DEFAULT_PLACEHOLDER if patch_placeholder is None else patch_placeholder
    if lens != "patchscope" and (prompt != DEFAULT_PROMPT or placeholder != DEFAULT_PLACEHOLDER):
        raise HubError(f"--patch-prompt/--patch-placeholder are for --lens patchscope (this run uses --lens {lens})")
    if lens == "patchscope" and (not placeholder or placeholder not in prompt):
        raise HubError(f"--patch-placeholder {placeholder!r} does not occur in --patch-prompt {prompt!r}")


def lens_spec(model: "HubModel", lens: str, tuned_lens: Any = None) -> "dict[str, Any] | None":
    """The ``lens`` argument of :func:`decode_layers` for ``--lens`` (call in ``prepare``):
    ``None`` (logit), the tuned lens' tensors read from ``tuned_lens`` (checked against the
    model), or ``{"kind": "patchscope"}``.

    Raises:
        HubError: see :func:`hubclient.science.tuned_lens.load_lens`.
    """
    if lens == "tuned":
        from hubclient.science.tuned_lens import lens_tensors, load_lens

        translators, _ = load_lens(tuned_lens, model)
        return lens_tensors(translators)
    if lens == "patchscope":
        return {"kind": "patchscope"}
    return None


def describe_lens(model: "HubModel", lens: str, tuned_lens: Any = None, patch: "tuple[list[int], int] | None" = None) -> dict[str, Any]:
    """The manifest's ``lens`` block: the lens, and for the tuned lens its folder, base model and
    ``W_U`` hash; for the patchscope the target prompt's tokens and placeholder position."""
    out: dict[str, Any] = {"lens": lens}
    if lens == "tuned" and tuned_lens:
        import json
        from pathlib import Path

        config = json.loads((Path(tuned_lens) / "config.json").read_text())
        out.update({"tuned_lens": str(Path(tuned_lens).resolve().name), "tuned_lens_base_model": config.get("base_model_name_or_path"), "tuned_lens_unembed_hash": config.get("unembed_hash")})
    if lens == "patchscope" and patch is not None:
        from hubclient.science.tokens import decoder

        decode = decoder(model.tokenizer)
        out.update({"patch_tokens": list(decode(patch[0])), "patch_placeholder_position": patch[1], "patch_target_layer": "same as the source layer"})
    return out
