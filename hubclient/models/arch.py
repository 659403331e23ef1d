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
GPT-2/BLOOM-style MLPs). ``attention`` (default ``self_attn``) and ``mlp_output`` (default
``mlp_down``) name the modules read by the ``attn``/``mlp`` patching sites; set
``mlp_flat_tokens`` where the block runs its MLP on ``[batch * seq, d]`` (OPT). Then add the
family to ``tests/families/suite.py`` (``REFERENCE``): its contract test fails until you do.
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
        modality: ``"image"`` or ``"audio"`` for a multimodal wrapper (a vision or audio
            encoder feeding a language model), ``None`` for a text-only model.
        media_token_attrs: config attributes holding the id of the token whose positions
            carry the media (the processor expands one placeholder into many of them; the
            encoder's features replace their embeddings); the first one set is used. On
            Chameleon there is no encoder: a VQ-VAE turns the image into discrete codes and the
            model replaces the ``<image>`` ids by the codes' vocabulary tokens (``IMGIMG…``,
            ``config.vocabulary_map``), so the embeddings at the image positions (hub layer 0)
            are ``embed_tokens`` rows of those code tokens, ``[positions, d_model]``, not
            projected vision features.
        media_placeholder: the text that asks the processor for one image/audio clip, as a
            ``str.format`` template over the processor's attributes (e.g.
            ``"{image_token}"``).
        appends_sep: the processor appends its tokenizer's ``sep_token`` to every prompt
            (Chameleon's ``ChameleonProcessor`` without ``return_for_text_completion``), so a
            prompt's last position is that sep token, not a media or prompt token: the position
            the semantic hub paper's A11 reads on Chameleon (``hidden_states[:, -1]``).
        masked_output_prefix: the model's forward sets the logits of the vocabulary tokens
            whose ``config.vocabulary_map`` name starts with this to the dtype's minimum
            (Chameleon: ``"IMGIMG"``, the image-code tokens it never emits as text,
            ``ChameleonForConditionalGeneration.forward``); the lens does the same
            (:func:`masked_output_ids`), so its last layer is the model's own output.
        auto_class: the transformers auto class that loads the model.
        task: the nnsight/transformers pipeline task of the wrapper (``None``: inferred, the
            text models' ``text-generation``); part of the model's NDIF key.
        mlp_gate_act: gated MLPs only: the activation-function module inside one block, whose
            output is ``act(gate(x))``, ``[batch, seq, d_ff]`` (where LAPE, Tang et al. 2024,
            counts a neuron as active); ``None`` where the ``mlp_down`` input is itself the
            activation function's output (GPT-2/BLOOM-style MLPs).
        attention: the attention module inside one decoder block (relative to the block). Its
            output (element 0 where the module returns a tuple) is the ``attn`` site of
            activation patching, ``[batch, seq, d_model]``: the attention's contribution before
            any post-attention norm (Gemma 2/3's ``post_attention_layernorm``). BLOOM's
            ``self_attention`` adds the residual itself, so there the site includes it.
        mlp_output: the module inside one decoder block whose output is the MLP's contribution
            to the residual stream (the ``mlp`` site of activation patching), before any
            post-MLP norm (Gemma 2/3's ``post_feedforward_layernorm``); ``None``: the
            ``mlp_down`` projection itself.
        mlp_flat_tokens: the block flattens ``[batch, seq, d_model]`` to
            ``[batch * seq, d_model]`` before its MLP (OPT's ``OPTDecoderLayer``), so the
            ``mlp_down`` input is ``[batch * seq, d_ff]`` and the ``mlp_output`` output
            ``[batch * seq, d_model]``; readers reshape them to ``[batch, seq, -1]``.
    """

    family: str
    embed: str
    layers: str
    final_norm: str
    lm_head: str
    mlp_down: str
    extra_unembed: tuple[str, ...] = field(default=())
    logit_softcap_attr: str | None = None
    modality: str | None = None
    media_token_attrs: tuple[str, ...] = ()
    media_placeholder: str = ""
    appends_sep: bool = False
    masked_output_prefix: str | None = None
    auto_class: str = "AutoModelForCausalLM"
    task: str | None = None
    mlp_gate_act: str | None = None
    attention: str = "self_attn"
    mlp_output: str | None = None
    mlp_flat_tokens: bool = False

    @property
    def mlp_output_path(self) -> str:
        """``mlp_output``, or ``mlp_down`` where the entry leaves it unset (relative to a block)."""
        return self.mlp_output or self.mlp_down


def _llama_like(family: str, **kw: Any) -> ArchSpec:
    return ArchSpec(
        family=family,
        embed="model.embed_tokens",
        layers="model.layers",
        final_norm="model.norm",
        lm_head="lm_head",
        mlp_down="mlp.down_proj",
        mlp_gate_act="mlp.act_fn",
        **kw,
    )


def _multimodal(family: str, modality: str, token_attrs: tuple[str, ...], placeholder: str, auto_class: str, task: str, **kw: Any) -> ArchSpec:
    """A media encoder + language model wrapper (transformers 5 layout: the language model's
    decoder at ``model.language_model``, the unembedding at the top-level ``lm_head``)."""
    return ArchSpec(
        family=family,
        embed="model.language_model.embed_tokens",
        layers="model.language_model.layers",
        final_norm="model.language_model.norm",
        lm_head="lm_head",
        mlp_down="mlp.down_proj",
        mlp_gate_act="mlp.act_fn",
        modality=modality,
        media_token_attrs=token_attrs,
        media_placeholder=placeholder,
        auto_class=auto_class,
        task=task,
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
            attention="attn",
        ),
        ArchSpec(
            family="gpt_neox",
            embed="gpt_neox.embed_in",
            layers="gpt_neox.layers",
            final_norm="gpt_neox.final_layer_norm",
            lm_head="lm_head",
            mlp_down="mlp.dense_4h_to_h",
            attention="attention",
        ),
        ArchSpec(
            family="bloom",
            embed="transformer.word_embeddings",
            layers="transformer.h",
            final_norm="transformer.ln_f",
            lm_head="lm_head",
            mlp_down="mlp.dense_4h_to_h",
            attention="self_attention",
        ),
        ArchSpec(
            family="opt",
            embed="model.decoder.embed_tokens",
            layers="model.decoder.layers",
            final_norm="model.decoder.final_layer_norm",
            lm_head="lm_head",
            mlp_down="fc2",
            extra_unembed=("model.decoder.project_out",),
            mlp_flat_tokens=True,
        ),
        # Multimodal wrappers: LLaVA(-1.5) (CLIP vision tower + projector + Llama/Vicuna),
        # Gemma 3 (SigLIP + Gemma 3 text), Chameleon (VQ-VAE image codes + Llama-like decoder)
        # and Qwen2-Audio (Whisper-style encoder + Qwen2).
        _multimodal("llava", "image", ("image_token_id", "image_token_index"), "{image_token}", "AutoModelForImageTextToText", "image-text-to-text"),
        _multimodal(
            "gemma3", "image", ("image_token_id", "image_token_index"), "{boi_token}", "AutoModelForImageTextToText", "image-text-to-text",
            logit_softcap_attr="final_logit_softcapping",
        ),
        # Chameleon (Team 2024): early fusion, no vision encoder feeding features. A VQ-VAE turns
        # the image into 1024 discrete codes (32x32 patches of 16 pixels on chameleon-7b), each a
        # vocabulary token ("IMGIMG..."), embedded by the language model's own embed_tokens at the
        # <image> positions; the decoder is Llama-like at model.layers.
        _llama_like(
            "chameleon", modality="image", media_token_attrs=("image_token_id",), media_placeholder="{image_token}", appends_sep=True,
            masked_output_prefix="IMGIMG",
            auto_class="AutoModelForImageTextToText", task="image-text-to-text",
        ),
        _multimodal(
            "qwen2_audio", "audio", ("audio_token_id", "audio_token_index"), "{audio_bos_token}{audio_token}{audio_eos_token}",
            "AutoModelForMultimodalLM", "any-to-any",
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
    for role, path in (("mlp_gate_act", spec.mlp_gate_act), ("attention", spec.attention), ("mlp_output", spec.mlp_output)):
        if path is not None and get_module(first_block, path) is None:
            raise HubError(f"decoder blocks of {type(model).__name__} have no {path!r} ({role}); fix hubclient/arch.py")


def text_config_value(config: Any, attr: str) -> Any:
    """``config.<attr>``, else the language model's ``config.text_config.<attr>`` (where
    multimodal wrappers keep it), else ``None``."""
    value = getattr(config, attr, None)
    if value is None and getattr(config, "text_config", None) is not None:
        value = getattr(config.text_config, attr, None)
    return value


def softcap(spec: ArchSpec, config: Any) -> float | None:
    """The final logit soft-cap of the model (Gemma 2), or ``None`` when it has none
    (read through :func:`text_config_value`)."""
    if spec.logit_softcap_attr is None:
        return None
    return text_config_value(config, spec.logit_softcap_attr) or None


def masked_output_ids(spec: ArchSpec, config: Any) -> list[int] | None:
    """Token ids whose logits the model's own forward sets to the dtype's minimum
    (:attr:`ArchSpec.masked_output_prefix`; Chameleon's image-code tokens, read from
    ``config.vocabulary_map``), sorted; ``None`` for a family that masks nothing."""
    if spec.masked_output_prefix is None:
        return None
    vocabulary_map = getattr(config, "vocabulary_map", None) or {}
    ids = []
    for name, index in vocabulary_map.items():
        if str(name).startswith(spec.masked_output_prefix):
            ids.append(int(index))
    return sorted(ids) or None


def media_token_id(spec: ArchSpec, config: Any) -> int | None:
    """The id of the media (image/audio) token of a multimodal model, from its config.

    Returns ``None`` for text-only families.

    Raises:
        HubError: a multimodal family whose config sets none of ``spec.media_token_attrs``.
    """
    if spec.modality is None:
        return None
    for attr in spec.media_token_attrs:
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    raise HubError(
        f"the {spec.family!r} config sets none of {', '.join(spec.media_token_attrs)} (the {spec.modality} token id); "
        "fix the config or the entry in hubclient/arch.py"
    )
