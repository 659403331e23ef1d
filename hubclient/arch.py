"""Per-architecture facts, as data: where each family keeps its residual stream.

This is the one place in the project that knows module names. Every analysis asks this
module for the decoder layers, the final norm, the unembedding (``W_U``) and the MLP
activation point, so a new architecture is one table entry.

Layer convention (used everywhere in ``hub``)
---------------------------------------------
``layer 0`` is the embeddings: the residual stream entering decoder block 0 (token embeddings
plus positional embeddings / embedding norm where the family has them; equal to
``hidden_states[0]`` of transformers' ``output_hidden_states=True``). ``layer l`` for
``l = 1..L`` is the residual stream after decoder block ``l`` (the block's output, *before* the
final norm). transformers' ``hidden_states[l]`` equals ours for ``l < L``; its last entry
``hidden_states[L]`` already has the final norm applied, ours does not.

Adding an architecture
----------------------
Add an :class:`ArchSpec` to ``ARCHITECTURES`` under the ``config.model_type`` string of the
family, giving module paths relative to the ``*ForCausalLM`` model (``print(model)`` shows
them). ``mlp_down`` is the MLP's down projection *relative to one decoder block*; its input is
the MLP's intermediate activation (``act(gate(x)) * up(x)`` for gated MLPs, the GELU output for
GPT-2/BLOOM-style MLPs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hubclient.errors import HubError


@dataclass(frozen=True)
class ArchSpec:
    """Module paths of one model family (relative to the ``*ForCausalLM`` module).

    Attributes:
        family: ``config.model_type`` this entry covers (e.g. ``"llama"``).
        embed: token embedding module (``nn.Embedding`` holding ``W_E``, ``[vocab, d_model]``).
        layers: the ``nn.ModuleList`` of decoder blocks.
        final_norm: the norm applied after the last block, before the unembedding.
        lm_head: the unembedding ``W_U`` (``[vocab, d_model]`` linear map to logits).
        mlp_down: the MLP down projection inside one block; its *input* is the MLP
            activation, ``[batch, seq, d_ff]``.
        extra_unembed: modules applied between the final norm and ``lm_head`` (OPT's
            ``project_out`` when the model has one); skipped when absent from the model.
        logit_softcap_attr: config attribute holding a final logit soft-cap
            (Gemma 2: ``logits = cap * tanh(logits / cap)``), or ``None``.
    """

    family: str
    embed: str
    layers: str
    final_norm: str
    lm_head: str
    mlp_down: str
    extra_unembed: tuple[str, ...] = field(default=())
    logit_softcap_attr: str | None = None


def _llama_like(family: str, **kw: Any) -> ArchSpec:
    return ArchSpec(
        family=family,
        embed="model.embed_tokens",
        layers="model.layers",
        final_norm="model.norm",
        lm_head="lm_head",
        mlp_down="mlp.down_proj",
        **kw,
    )


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.family: spec
    for spec in (
        _llama_like("llama"),
        _llama_like("mistral"),
        _llama_like("qwen2"),
        _llama_like("qwen3"),
        _llama_like("gemma"),
        _llama_like("gemma2", logit_softcap_attr="final_logit_softcapping"),
        _llama_like("gemma3_text", logit_softcap_attr="final_logit_softcapping"),
        ArchSpec(
            family="gpt2",
            embed="transformer.wte",
            layers="transformer.h",
            final_norm="transformer.ln_f",
            lm_head="lm_head",
            mlp_down="mlp.c_proj",
        ),
        ArchSpec(
            family="gpt_neox",
            embed="gpt_neox.embed_in",
            layers="gpt_neox.layers",
            final_norm="gpt_neox.final_layer_norm",
            lm_head="lm_head",
            mlp_down="mlp.dense_4h_to_h",
        ),
        ArchSpec(
            family="bloom",
            embed="transformer.word_embeddings",
            layers="transformer.h",
            final_norm="transformer.ln_f",
            lm_head="lm_head",
            mlp_down="mlp.dense_4h_to_h",
        ),
        ArchSpec(
            family="opt",
            embed="model.decoder.embed_tokens",
            layers="model.decoder.layers",
            final_norm="model.decoder.final_layer_norm",
            lm_head="lm_head",
            mlp_down="fc2",
            extra_unembed=("model.decoder.project_out",),
        ),
    )
}


def supported_families() -> list[str]:
    """Sorted ``config.model_type`` strings that ``hub`` supports."""
    return sorted(ARCHITECTURES)


def spec_for_config(config: Any) -> ArchSpec:
    """Look up the :class:`ArchSpec` for a transformers config.

    Args:
        config: a ``PretrainedConfig`` (only ``model_type`` is read).

    Raises:
        HubError: the family is not in ``ARCHITECTURES``; the message lists the supported
            families and how to add one.
    """
    family = getattr(config, "model_type", None)
    if family in ARCHITECTURES:
        return ARCHITECTURES[family]
    raise HubError(
        f"unsupported architecture {family!r}. Supported: {', '.join(supported_families())}. "
        "To add one, add an ArchSpec with its module paths to ARCHITECTURES in hubclient/arch.py "
        "(print(model) shows the names)."
    )


def get_module(root: Any, path: str) -> Any:
    """Follow a dotted ``path`` of attributes from ``root`` (an nnsight envoy or a torch module).

    Returns ``None`` when an attribute on the way is missing or ``None`` (e.g. OPT without
    ``project_out``).
    """
    node = root
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def check_modules(spec: ArchSpec, model: Any) -> None:
    """Check that ``model`` (a torch ``*ForCausalLM``) has every module ``spec`` names.

    Raises:
        HubError: a module is missing (e.g. renamed by another transformers version), naming
            the module and the table entry to fix.
    """
    required = {"embed": spec.embed, "layers": spec.layers, "final_norm": spec.final_norm, "lm_head": spec.lm_head}
    for role, path in required.items():
        if get_module(model, path) is None:
            raise HubError(
                f"{type(model).__name__} has no module {path!r} ({role}) that the {spec.family!r} entry of "
                "hubclient/arch.py expects; this transformers version may name it differently: fix the entry"
            )
    first_block = get_module(model, spec.layers)[0]
    if get_module(first_block, spec.mlp_down) is None:
        raise HubError(f"decoder blocks of {type(model).__name__} have no {spec.mlp_down!r} (mlp_down); fix hubclient/arch.py")


def softcap(spec: ArchSpec, config: Any) -> float | None:
    """The final logit soft-cap of the model (Gemma 2), or ``None`` when it has none."""
    if spec.logit_softcap_attr is None:
        return None
    return getattr(config, spec.logit_softcap_attr, None) or None
