"""The family contract: what ``hub`` reads from a model, against plain transformers + torch hooks.

Every family of :data:`hubclient.models.arch.ARCHITECTURES` must pass the same checks on a tiny
random model whose norm weights and biases are random too (``conftest.spread_weights``), so a
wrong module in the architecture table, a missing norm or a dropped soft-cap shows up as a
number mismatch. The expected values never go through hubclient's accessors: they come from
transformers' own ``output_hidden_states`` / logits and from forward hooks on the modules named
in :data:`REFERENCE`, a second, hand-written description of each family's transformers
implementation (the final norm in it is itself checked against transformers' last hidden state,
and the lens at the last layer against the model's logits).

Each ``check_*`` function raises ``AssertionError`` (from ``torch.testing.assert_close`` or a
plain ``assert``) on a mismatch; ``tests/families/test_families.py`` runs them for every family,
and also runs them against deliberately broken table entries to show that they fail.

Shapes: ``ids`` is ``{"input_ids": [1, seq], "attention_mask": [1, seq]}``; hidden states are
``[1, seq, d_model]``, logits ``[1, seq, vocab]``.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: conftest's builders

from conftest import SENTENCES, build_tokenizer, spread_weights, tiny_config  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)

#: A short prompt, and one longer than every sliding window below (``SLIDING_WINDOW``).
SHORT = SENTENCES[0]
LONG = " ".join(SENTENCES[:4])
#: Sliding window of the families that have one (their tiny configs get it; LONG is longer).
SLIDING_WINDOW = 6


@dataclass(frozen=True)
class Reference:
    """How one family's transformers implementation is laid out, written independently of
    ``hubclient.models.arch`` (attribute access, no dotted paths from the table).

    Attributes:
        blocks: model -> the decoder blocks (``nn.ModuleList``).
        final_norm: model -> the norm applied after the last block.
        unembed_extra: model -> modules applied between final norm and ``lm_head`` (OPT's
            ``project_out`` when it exists).
        down: block -> the MLP down projection (its input is the MLP activation).
        attn: block -> the attention module (output element 0 is the attention output).
        mlp: block -> the module whose output carries the MLP's contribution.
        mlp_adds_residual: the ``mlp`` module adds its second argument (the residual) to its
            output (BLOOM), so the contribution is ``output - residual``.
        flat_tokens: the block runs its MLP on ``[batch * seq, d]`` (OPT).
    """

    blocks: Callable[[Any], Any]
    final_norm: Callable[[Any], Any]
    down: Callable[[Any], Any]
    attn: Callable[[Any], Any]
    mlp: Callable[[Any], Any]
    unembed_extra: Callable[[Any], list[Any]] = lambda m: []
    mlp_adds_residual: bool = False
    flat_tokens: bool = False


def _llama_like() -> Reference:
    return Reference(
        blocks=lambda m: m.model.layers,
        final_norm=lambda m: m.model.norm,
        down=lambda b: b.mlp.down_proj,
        attn=lambda b: b.self_attn,
        mlp=lambda b: b.mlp,
    )


def _opt_extra(m: Any) -> list[Any]:
    project_out = getattr(m.model.decoder, "project_out", None)
    return [project_out] if project_out is not None else []


#: Every text family hub supports, described by hand (see :class:`Reference`).
REFERENCE: dict[str, Reference] = {
    "llama": _llama_like(),
    "mistral": _llama_like(),
    "qwen2": _llama_like(),
    "qwen3": _llama_like(),
    "gemma": _llama_like(),
    "gemma2": _llama_like(),
    "gemma3_text": _llama_like(),
    "gpt2": Reference(
        blocks=lambda m: m.transformer.h, final_norm=lambda m: m.transformer.ln_f,
        down=lambda b: b.mlp.c_proj, attn=lambda b: b.attn, mlp=lambda b: b.mlp,
    ),
    "gpt_neox": Reference(
        blocks=lambda m: m.gpt_neox.layers, final_norm=lambda m: m.gpt_neox.final_layer_norm,
        down=lambda b: b.mlp.dense_4h_to_h, attn=lambda b: b.attention, mlp=lambda b: b.mlp,
    ),
    "bloom": Reference(
        blocks=lambda m: m.transformer.h, final_norm=lambda m: m.transformer.ln_f,
        down=lambda b: b.mlp.dense_4h_to_h, attn=lambda b: b.self_attention, mlp=lambda b: b.mlp,
        mlp_adds_residual=True,
    ),
    "opt": Reference(
        blocks=lambda m: m.model.decoder.layers, final_norm=lambda m: m.model.decoder.final_layer_norm,
        down=lambda b: b.fc2, attn=lambda b: b.self_attn, mlp=lambda b: b.fc2, unembed_extra=_opt_extra,
        flat_tokens=True,
    ),
}

#: Families whose tiny config gets a sliding window of ``SLIDING_WINDOW`` tokens.
SLIDING = ("mistral", "qwen2", "gemma2", "gemma3_text")


def family_config(family: str, vocab: int, sliding_window: int | None = SLIDING_WINDOW) -> Any:
    """``conftest.tiny_config`` with a sliding window on the families that have one
    (``None``: as long as the context, i.e. no window)."""
    config = tiny_config(family, vocab)
    if family in SLIDING:
        window = sliding_window if sliding_window is not None else config.max_position_embeddings
        config.sliding_window = window
        if family == "qwen2":  # Qwen2 windows only layers >= max_window_layers, when asked
            config.use_sliding_window = True
            config.max_window_layers = 1
            config.layer_types = ["full_attention"] + ["sliding_attention"] * (config.num_hidden_layers - 1)
    return config


@functools.lru_cache(maxsize=None)
def build_family(family: str, sliding_window: int | None = SLIDING_WINDOW) -> tuple[Any, Any]:
    """(hf_model, tokenizer): the tiny random ``family`` model of the contract (seed 0, random
    matrices, norm weights and biases), float32, eval mode."""
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(family_config(family, len(tokenizer), sliding_window), dtype=torch.float32)
    spread_weights(model)
    return model.eval(), tokenizer


def wrap(family: str) -> Any:
    """A fresh :class:`hubclient.models.HubModel` around :func:`build_family`'s model (the
    architecture entry is looked up now, so a monkeypatched table takes effect)."""
    from hubclient.models import wrap_model

    hf_model, tokenizer = build_family(family)
    return wrap_model(hf_model, tokenizer, model_id=f"tiny-{family}")


def encode(model: Any, text: str) -> dict[str, torch.Tensor]:
    """``{"input_ids", "attention_mask"}`` ``[1, seq]`` of ``text`` (with BOS)."""
    return dict(model.tokenizer(text, return_tensors="pt"))


# --------------------------------------------------------------------------- reference runs


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, tuple) else value


def reference_run(hf_model: Any, ref: Reference, ids: dict[str, torch.Tensor]) -> dict[str, Any]:
    """One plain transformers forward pass with hooks, no hubclient code.

    Returns:
        ``out`` (the model output with ``hidden_states``), ``block_in0`` (input of block 0,
        ``[1, seq, d_model]``), ``block_out`` (list of L block outputs), ``down_in`` (L inputs
        of the down projections), ``attn`` (L attention outputs), ``mlp`` (L MLP contributions,
        ``[1, seq, d_model]``).
    """
    blocks = ref.blocks(hf_model)
    seen: dict[str, Any] = {"block_out": {}, "down_in": {}, "attn": {}, "mlp": {}}
    handles = []

    def block0_pre(module, args, kwargs):
        seen["block_in0"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    handles.append(blocks[0].register_forward_pre_hook(block0_pre, with_kwargs=True))
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_hook(lambda m, a, o, i=i: seen["block_out"].__setitem__(i, _first(o).detach().clone())))
        handles.append(ref.down(block).register_forward_pre_hook(lambda m, a, i=i: seen["down_in"].__setitem__(i, a[0].detach().clone())))
        handles.append(ref.attn(block).register_forward_hook(lambda m, a, o, i=i: seen["attn"].__setitem__(i, _first(o).detach().clone())))

        def mlp_hook(module, args, kwargs, output, i=i):
            value = _first(output)
            if ref.mlp_adds_residual:
                residual = args[1] if len(args) > 1 else kwargs["residual"]
                value = value - residual
            if ref.flat_tokens:
                value = value.view(ids["input_ids"].shape[0], ids["input_ids"].shape[1], -1)
            seen["mlp"][i] = value.detach().clone()

        handles.append(ref.mlp(block).register_forward_hook(mlp_hook, with_kwargs=True))
    try:
        with torch.no_grad():
            out = hf_model(**ids, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    n = len(blocks)
    return {
        "out": out,
        "block_in0": seen["block_in0"],
        "block_out": [seen["block_out"][i] for i in range(n)],
        "down_in": [seen["down_in"][i] for i in range(n)],
        "attn": [seen["attn"][i] for i in range(n)],
        "mlp": [seen["mlp"][i] for i in range(n)],
    }


def reference_lens(hf_model: Any, ref: Reference, hidden: torch.Tensor, final_norm: bool) -> torch.Tensor:
    """``lm_head(extra(final_norm(h)))`` (or without the norm), soft-capped as the config says:
    ``cap * tanh(logits / cap)`` where ``final_logit_softcapping`` is set. ``[..., vocab]``."""
    with torch.no_grad():
        h = ref.final_norm(hf_model)(hidden) if final_norm else hidden
        for module in ref.unembed_extra(hf_model):
            h = module(h)
        logits = hf_model.lm_head(h).float()
    cap = getattr(hf_model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


# --------------------------------------------------------------------------- the contract


def check_hidden_states(model: Any, ref: Reference, ids: dict[str, torch.Tensor]) -> None:
    """``model.hidden_states()`` in a trace: layer 0 = input of block 0 = transformers'
    ``hidden_states[0]``; layer ``l`` = output of block ``l`` (hook) = ``hidden_states[l]`` for
    ``l < L``; the reference final norm of layer ``L`` = ``hidden_states[L]``."""
    import nnsight

    hf = model.torch_model
    expected = reference_run(hf, ref, ids)
    with torch.no_grad():
        with model.lm.trace(ids):
            states = nnsight.save([])
            for _, h in model.hidden_states():
                states.append(h)
    n = len(ref.blocks(hf))
    hidden = expected["out"].hidden_states
    assert len(states) == len(hidden) == n + 1
    torch.testing.assert_close(states[0], hidden[0], **TOL)
    torch.testing.assert_close(states[0], expected["block_in0"], **TOL)
    for layer in range(1, n + 1):
        torch.testing.assert_close(states[layer], expected["block_out"][layer - 1], **TOL)
        if layer < n:
            torch.testing.assert_close(states[layer], hidden[layer], **TOL)
    with torch.no_grad():
        normed = ref.final_norm(hf)(expected["block_out"][-1])
    torch.testing.assert_close(normed, hidden[n], **TOL)


def check_lens(model: Any, ref: Reference, ids: dict[str, torch.Tensor], final_norm: bool) -> None:
    """:func:`hubclient.science.lens.unembed` of every layer's hidden state (every position,
    the whole vocabulary) = :func:`reference_lens` of the hooked hidden state; with the final
    norm, the last layer's lens also equals the model's own logits."""
    import nnsight

    from hubclient.science.lens import unembed

    hf = model.torch_model
    expected = reference_run(hf, ref, ids)
    with torch.no_grad():
        with model.lm.trace(ids):
            lens = nnsight.save([])
            for _, h in model.hidden_states():
                lens.append(unembed(model, h, final_norm=final_norm))
    states = [expected["block_in0"]] + expected["block_out"]
    assert len(lens) == len(states)
    for layer, h in enumerate(states):
        torch.testing.assert_close(lens[layer], reference_lens(hf, ref, h, final_norm), rtol=1e-4, atol=1e-4)
    if final_norm:
        torch.testing.assert_close(lens[-1], expected["out"].logits.float(), rtol=1e-4, atol=1e-4)


def check_lens_analysis(model: Any, ref: Reference, texts: list[str], final_norm: bool, out: Path) -> None:
    """``analyses.logit_lens.LogitLens`` run through ``hubclient.runner.run_analysis`` (batched,
    all positions, ``--no-final-norm`` when ``final_norm`` is off): at every layer and position
    its top-5 tokens and logits = the top-5 of :func:`reference_lens`."""
    import numpy as np

    from analyses.logit_lens import LensOptions, LogitLens
    from hubclient.runner import RunConfig, run_analysis

    k = 5
    run = run_analysis(
        LogitLens(LensOptions(positions="all", top_k=k, final_norm=final_norm)),
        texts,
        RunConfig(out=out, progress=False, batch_size=len(texts)),
        model=model,
    )
    table = run.table("logit_lens").sort("prompt", "layer", "position", "rank")
    hf = model.torch_model
    offset = 0
    for p, text in enumerate(texts):
        ids = encode(model, text)
        expected = reference_run(hf, ref, ids)
        states = [expected["block_in0"]] + expected["block_out"]
        for layer, h in enumerate(states):
            top = torch.topk(reference_lens(hf, ref, h[0], final_norm), k, dim=-1)  # [seq, k]
            n = top.indices.numel()
            rows = table.slice(offset, n)
            offset += n
            assert rows["prompt"].unique().to_list() == [p] and rows["layer"].unique().to_list() == [layer]
            assert rows["position"].to_list() == np.repeat(np.arange(top.indices.shape[0]), k).tolist()
            assert rows["token_id"].to_list() == top.indices.reshape(-1).tolist(), (p, layer)
            np.testing.assert_allclose(rows["logit"].to_numpy(), top.values.reshape(-1).numpy(), rtol=1e-4, atol=1e-4)
    assert offset == table.height  # every row of the table was checked


def check_mlp_activation(model: Any, ref: Reference, ids: dict[str, torch.Tensor]) -> None:
    """``model.mlp_down(b).input`` in a trace = the hooked input of the down projection."""
    import nnsight

    expected = reference_run(model.torch_model, ref, ids)
    with torch.no_grad():
        with model.lm.trace(ids):
            acts = nnsight.save([])
            for b in range(1, model.n_layers + 1):
                acts.append(model.mlp_down(b).input)
    assert len(acts) == len(expected["down_in"])
    for got, want in zip(acts, expected["down_in"]):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, **TOL)


def check_sites(model: Any, ref: Reference, ids: dict[str, torch.Tensor]) -> None:
    """``site_value(model, "attn"|"mlp", l)`` read in a trace = the hooked attention output /
    MLP contribution of block ``l``, ``[batch, seq, d_model]``, for every block."""
    import nnsight

    from hubclient.exec.edits import site_value

    expected = reference_run(model.torch_model, ref, ids)
    got = {}
    for site in ("attn", "mlp"):  # one trace per site: an OPT mlp site reads its block's input first
        with torch.no_grad():
            with model.lm.trace(ids):
                values = nnsight.save([])
                for layer in range(1, model.n_layers + 1):
                    values.append(site_value(model, site, layer))
        got[site] = values
    batch, seq = ids["input_ids"].shape
    for site in ("attn", "mlp"):
        assert len(got[site]) == len(expected[site])
        for value, want in zip(got[site], expected[site]):
            assert tuple(value.shape) == (batch, seq, want.shape[-1]) == tuple(want.shape), site
            torch.testing.assert_close(value, want, **TOL)


def check_site_edits(model: Any, ref: Reference, ids: dict[str, torch.Tensor], layer: int = 2) -> None:
    """Zeroing ``site_value(model, site, layer)[:, -1]`` in a trace (what patching's slice
    assignment does) gives the logits of a plain forward pass whose hook zeroes the same
    contribution; and those differ from the clean logits (the edit reaches the output)."""
    from hubclient.exec.edits import site_value

    hf = model.torch_model
    block = ref.blocks(hf)[layer - 1]
    with torch.no_grad():
        clean = hf(**ids).logits
    for site in ("attn", "mlp"):
        with torch.no_grad():
            with model.lm.trace(ids):
                value = site_value(model, site, layer)
                value[:, -1, :] = 0.0
                logits = model.lm.output.logits.save()

        def zero_last(module, args, kwargs, output, site=site):
            value = _first(output)
            if site == "mlp" and ref.mlp_adds_residual:  # keep the residual, drop the contribution
                residual = args[1] if len(args) > 1 else kwargs["residual"]
                value = value.clone()
                value[:, -1, :] = residual[:, -1, :]
            else:
                value = value.clone()
                if site == "mlp" and ref.flat_tokens:
                    value.view(ids["input_ids"].shape[0], ids["input_ids"].shape[1], -1)[:, -1, :] = 0.0
                else:
                    value[:, -1, :] = 0.0
            return (value, *output[1:]) if isinstance(output, tuple) else value

        module = ref.attn(block) if site == "attn" else ref.mlp(block)
        handle = module.register_forward_hook(zero_last, with_kwargs=True)
        try:
            with torch.no_grad():
                want = hf(**ids).logits
        finally:
            handle.remove()
        assert not torch.allclose(want, clean, **TOL), f"zeroing the {site} output changed nothing"
        torch.testing.assert_close(logits, want, **TOL)


def check_sliding_window_bites(family: str, ids: dict[str, torch.Tensor]) -> None:
    """The tiny ``family`` model's logits on ``ids`` (longer than the window) differ from the
    same weights without a window: the window is active, so the contract runs over it."""
    hf, _ = build_family(family)
    wide, _ = build_family(family, sliding_window=None)
    wide.load_state_dict(hf.state_dict())
    with torch.no_grad():
        a = hf(**ids).logits
        b = wide(**ids).logits
    assert ids["input_ids"].shape[1] > SLIDING_WINDOW
    assert not torch.allclose(a, b, **TOL)
    torch.testing.assert_close(a[:, :SLIDING_WINDOW], b[:, :SLIDING_WINDOW], **TOL)  # inside the window: equal
