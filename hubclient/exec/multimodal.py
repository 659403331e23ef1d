"""Media as model inputs: processor encoding, media positions, batch collation.

An image/audio language model (LLaVA, Gemma 3, Chameleon, Qwen2-Audio; see :mod:`hubclient.models.arch`) reads
a prompt in which one placeholder stands for the medium. Its processor turns the placeholder
into ``k`` media tokens (``k`` = image patches after projection, or audio frames after
pooling) and the file into encoder inputs (``pixel_values``, ``input_features``…); inside the
model the encoder's output replaces the embeddings at exactly those ``k`` positions (Chameleon:
the embeddings of the image's VQ-code tokens, ``W_E[code]``, replace them). So the
**media positions** of a prompt are the positions whose input id is the media token id
(``config.image_token_id`` / ``audio_token_index``); the language model's residual stream
there is what the semantic hub paper compares with the caption (Wu et al. 2024, §"Vision /
audio").

Everything here runs on the client, before any trace: media is read and preprocessed
locally, and only the processor's tensors travel with the batch (also to NDIF with
``--remote``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hubclient.errors import HubError
from hubclient.inputs.media import MediaPair, load_audio, load_image

if TYPE_CHECKING:
    import torch

    from hubclient.models.loading import HubModel

#: Processor outputs with one value per token (right-padded like ``input_ids``); every other
#: processor output is per medium and is concatenated along dim 0.
PER_TOKEN = ("token_type_ids", "mm_token_type_ids")
#: Keys the runner builds itself.
TEXT_KEYS = ("input_ids", "attention_mask")
#: Where a media prompt (``--media-template``) puts the medium; replaced by the model's own
#: placeholder (:func:`placeholder`) when the prompt is encoded.
MEDIA_SLOT = "{media}"
#: A media prompt that starts with this is a user turn in the model's own chat template:
#: ``chat:What is the color in the image?{media}`` (:func:`chat_prompt`).
CHAT_PREFIX = "chat:"
#: ``--media-pool``: ``mean`` / ``last`` over the media positions, ``final`` the prompt's last
#: position (whatever token it is: the paper's ``hidden_states[:, -1]``), see :func:`pool_weights`
#: and :func:`paper_media_pool`.
MEDIA_POOLS = ("mean", "last", "final")


class _Attrs(dict):
    """``str.format_map`` over an object's attributes (the processor's token strings)."""

    def __init__(self, obj: Any):
        super().__init__()
        self.obj = obj

    def __missing__(self, key: str) -> Any:
        value = getattr(self.obj, key, None)
        if value is None:
            value = getattr(getattr(self.obj, "tokenizer", None), key, None)
        if value is None:
            raise HubError(f"the processor {type(self.obj).__name__} has no {key!r}; fix media_placeholder in hubclient/arch.py")
        return value


def require_modality(model: "HubModel", modality: str) -> None:
    """Check that ``model`` reads ``modality``.

    Raises:
        HubError: a text-only model, or a model of the other modality.
    """
    if model.modality is None:
        raise HubError(
            f"--modality {modality} needs an image or audio language model; {model.model_id!r} ({model.arch.family}) "
            "reads text only. Use e.g. llava-hf/llava-1.5-7b-hf (image) or Qwen/Qwen2-Audio-7B (audio)"
        )
    if model.modality != modality:
        raise HubError(f"--modality {modality} but {model.model_id!r} ({model.arch.family}) is an {model.modality} model")


def placeholder(model: "HubModel") -> str:
    """The text that asks the model's processor for one medium (e.g. ``"<image>"``)."""
    return model.arch.media_placeholder.format_map(_Attrs(model.processor))


def media_positions(tokens: list[int], media_token_id: int) -> list[int]:
    """Positions (0-based, BOS counted) whose token is the media token."""
    out = []
    for p, t in enumerate(tokens):
        if t == media_token_id:
            out.append(p)
    return out


def spread_positions(positions: list[int], limit: int | None) -> tuple[list[int], list[int]]:
    """At most ``limit`` of ``positions``, evenly spaced over them (first and last kept):
    indexes ``round(linspace(0, k-1, limit))`` (NumPy's round half to even), duplicates dropped.
    ``--max-positions`` of the media lenses: a sample of the media positions for lenses whose
    cost grows with them (the patchscope's copies, docs/lenses.md); ``None`` keeps them all.

    Returns:
        ``(kept positions, their indexes in positions)``, both in the input order.
    """
    import numpy as np

    if limit is None or len(positions) <= limit:
        return list(positions), list(range(len(positions)))
    index = list(dict.fromkeys(np.rint(np.linspace(0, len(positions) - 1, limit)).astype(int).tolist()))
    kept = []
    for i in index:
        kept.append(positions[i])
    return kept, index


def chat_prompt(model: "HubModel", text: str) -> str:
    """A media prompt in the model's own chat template: one user turn whose content is the
    text of ``text`` (after :data:`CHAT_PREFIX`) with the medium where ``{media}`` stands,
    followed by the generation prompt (``processor.apply_chat_template(...,
    add_generation_prompt=True)``), e.g. LLaVA-1.5-hf: ``USER: <image>\nWhat is in the image?
    ASSISTANT:`` for ``chat:{media}\nWhat is in the image?``.

    Returns:
        the prompt text, with the processor's own placeholder for the medium.

    Raises:
        HubError: the processor has no chat template, or ``text`` has no or several
            ``{media}``.
    """
    body = text[len(CHAT_PREFIX):] if text.startswith(CHAT_PREFIX) else text
    if body.count(MEDIA_SLOT) != 1:
        raise HubError(f"the chat media prompt must contain {MEDIA_SLOT} exactly once, got {text!r}")
    processor = model.processor
    if not getattr(processor, "chat_template", None):
        raise HubError(f"{model.model_id!r} has no chat template in its processor; give the prompt as text, e.g. --media-template 'USER: {MEDIA_SLOT}\\nASSISTANT:'")
    before, after = body.split(MEDIA_SLOT)
    content: list[dict[str, str]] = []
    if before:
        content.append({"type": "text", "text": before})
    content.append({"type": str(model.modality)})
    if after:
        content.append({"type": "text", "text": after})
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)


def load_media(model: "HubModel", pair: MediaPair, resample: bool = True) -> Any:
    """Open ``pair.media`` for ``model``: a PIL image, or mono float32 audio at the feature
    extractor's sampling rate (resampled unless ``resample`` is off).

    Raises:
        HubError: an audio file for an image model or an image for an audio model (by suffix);
            as :func:`hubclient.inputs.media.load_image` / :func:`~hubclient.inputs.media.load_audio`,
            naming the pairs file and line.
    """
    from hubclient.inputs.media import AUDIO_SUFFIXES, IMAGE_SUFFIXES

    other = AUDIO_SUFFIXES if model.modality == "image" else IMAGE_SUFFIXES
    if pair.media.suffix.lower() in other:
        kind = "an audio file" if model.modality == "image" else "an image"
        reads = "images" if model.modality == "image" else "audio"
        raise HubError(
            f"{pair.where()}: {pair.media.name} is {kind}, but {model.model_id!r} ({model.arch.family}) reads {reads}; "
            f"use {'an audio language model (Qwen2-Audio)' if model.modality == 'image' else 'an image language model (LLaVA, Gemma 3)'} or a pairs file of {reads}"
        )
    if model.modality == "image":
        return load_image(pair.media, where=pair.where())
    rate = int(model.processor.feature_extractor.sampling_rate)
    return load_audio(pair.media, rate, resample=resample, where=pair.where())


def encode_one(model: "HubModel", text: str, pair: MediaPair, resample: bool = True) -> tuple[list[int], dict[str, "torch.Tensor"]]:
    """Encode one prompt with one medium through the model's processor.

    Args:
        text: the prompt; it must contain :data:`MEDIA_SLOT` (``{media}``) exactly once,
            which becomes the model's :func:`placeholder` (e.g. ``<image>``); with the
            :data:`CHAT_PREFIX` ``chat:``, the rest is a user turn in the model's chat template
            (:func:`chat_prompt`).
        pair: the medium.

    Returns:
        ``(token ids with the placeholder expanded, other processor tensors)`` such as
        ``pixel_values`` ``[1, 3, H, W]`` or ``input_features`` ``[1, mel, frames]`` plus
        ``feature_attention_mask``.

    Raises:
        HubError: an unreadable medium, a prompt without the placeholder, or a processor that
            put no media token into the ids.
    """
    if model.modality is None:
        raise HubError(f"{model.model_id!r} ({model.arch.family}) reads text only; image/audio pairs need an image or audio language model")
    if text.count(MEDIA_SLOT) != 1:
        raise HubError(f"the media prompt must contain {MEDIA_SLOT} exactly once (where the {model.modality} goes), got {text!r}")
    if text.startswith(CHAT_PREFIX):
        text = chat_prompt(model, text)
    else:
        text = text.replace(MEDIA_SLOT, placeholder(model))
    medium = load_media(model, pair, resample=resample)
    try:
        if model.modality == "image":
            enc = model.processor(text=[text], images=[medium], return_tensors="pt")
        else:
            rate = int(model.processor.feature_extractor.sampling_rate)
            enc = model.processor(text=[text], audio=[medium], sampling_rate=rate, return_tensors="pt")
    except (ValueError, TypeError, RuntimeError) as exc:
        raise HubError(f"{pair.where()}: the processor could not encode {pair.media} ({exc})") from None
    ids = enc["input_ids"][0].tolist()
    if not media_positions(ids, model.media_token_id):
        raise HubError(f"{pair.where()}: the processor put no {model.modality} tokens (id {model.media_token_id}) into the prompt")
    extra = {}
    for key, value in enc.items():
        if key not in TEXT_KEYS and hasattr(value, "shape"):
            extra[key] = value
    return ids, extra


def encode(model: "HubModel", prompts: list[str], media: list[MediaPair | None], resample: bool = True) -> tuple[list[list[int]], list[dict[str, Any] | None]]:
    """Token ids and processor tensors of every prompt; prompts without medium are tokenised
    as text (the runner's :func:`hubclient.exec.tokens.tokenize`, identical ids).

    Returns:
        ``(tokens, extras)``: ``extras[i]`` is ``None`` for a text prompt.

    Raises:
        HubError: see :func:`encode_one`; a prompt longer than the model's context.
    """
    from hubclient.exec.tokens import tokenize

    if len(media) != len(prompts):
        raise ValueError("media must have one entry (or None) per prompt")
    tokens: list[list[int]] = []
    extras: list[dict[str, Any] | None] = []
    text_idx = [i for i, m in enumerate(media) if m is None]
    text_tokens = dict(zip(text_idx, tokenize(model, [prompts[i] for i in text_idx]))) if text_idx else {}
    limit = model.max_length
    for i, pair in enumerate(media):
        if pair is None:
            tokens.append(text_tokens[i])
            extras.append(None)
            continue
        ids, extra = encode_one(model, prompts[i], pair, resample=resample)
        if limit is not None and len(ids) > limit:
            raise HubError(f"{pair.where()}: the prompt has {len(ids)} tokens with its {model.modality}, more than the model's context of {limit}")
        tokens.append(ids)
        extras.append(extra)
    return tokens, extras


def collate(extras: list[dict[str, Any]], width: int) -> dict[str, "torch.Tensor"]:
    """Join the processor tensors of one batch's prompts (in batch order).

    Per-token tensors (:data:`PER_TOKEN`, ``[1, seq]``) are right-padded with 0 to ``width``
    like ``input_ids``; per-medium tensors (``pixel_values``, ``input_features``,
    ``feature_attention_mask``, ``image_sizes``…) are concatenated along dim 0, which is the
    order in which the model scatters them into the media positions.
    """
    import torch

    out: dict[str, torch.Tensor] = {}
    for key in extras[0]:
        parts = []
        for extra in extras:
            value = extra[key]
            if key in PER_TOKEN:
                pad = torch.zeros((value.shape[0], width - value.shape[1]), dtype=value.dtype)
                value = torch.cat([value, pad], dim=1)
            parts.append(value)
        out[key] = torch.cat(parts, dim=0)
    return out


def media_key(pair: MediaPair | None) -> str:
    """What identifies a medium in the run's input hash: its path and sha256."""
    if pair is None:
        return ""
    from hubclient.models.loading import sha256_file

    return f"{pair.media}#{sha256_file(pair.media)}"


def check_template(template: str) -> str:
    """Validate ``--media-template`` (the text around the medium).

    Raises:
        HubError: no or several ``{media}`` slots.
    """
    if template.count(MEDIA_SLOT) != 1:
        raise HubError(f"--media-template {template!r} must contain {MEDIA_SLOT} exactly once, e.g. 'USER: {MEDIA_SLOT}\\nASSISTANT:'")
    return template


def paper_media_pool(model: "HubModel", media_pool: str) -> str:
    """The pooling :func:`pool_weights` applies for ``--media-pool media_pool`` on ``model``.

    ``last`` is the semantic hub paper's position (paper-protocols.md A11: its code reads
    ``hidden_states[:, -1]``, the prompt's last position): on LLaVA with the prompt ``<image>``
    that is the last image patch, so ``last`` is the last media position; on a family whose
    processor appends a sep token after the prompt (``ArchSpec.appends_sep``: Chameleon) it is
    that sep token, so ``last`` becomes ``final``. ``mean`` and ``final`` are kept.

    Raises:
        HubError: an unknown ``media_pool``.
    """
    if media_pool not in MEDIA_POOLS:
        raise HubError(f"unknown --media-pool {media_pool!r}; choose {', '.join(MEDIA_POOLS)}")
    if media_pool == "last" and model.arch.appends_sep:
        return "final"
    return media_pool


def pool_weights(batch: Any, media_token_id: int, media_pool: str, text_pool: str, bos_id: int | None) -> "torch.Tensor":
    """Pooling weights ``[batch, seq]`` (float32, each row sums to 1) for media and text rows.

    A row with media tokens pools over its media positions: ``mean`` = uniform over them,
    ``last`` = the last one; ``final`` = the row's last real position (after the medium: on
    Chameleon the sep token its processor appends). A row without (a caption) pools as the text similarity does:
    ``last`` = its last real token, ``mean`` = its real tokens without a leading BOS. The
    pooled vector is ``einsum("bs,bsd->bd", w, h)``. Plain loops: this runs in trace bodies.
    """
    import torch

    ids = batch.input_ids
    weights = torch.zeros(ids.shape, dtype=torch.float32)
    text = batch.token_weights(bos_id)
    for b in range(ids.shape[0]):
        length = int(batch.lengths[b])
        media = ids[b, :length] == media_token_id
        if bool(media.any()):
            if media_pool == "last":
                weights[b, int(media.nonzero()[-1])] = 1.0
            elif media_pool == "final":
                weights[b, length - 1] = 1.0
            else:
                weights[b, :length] = media.float() / media.sum()
        elif text_pool == "last":
            weights[b, length - 1] = 1.0
        else:
            weights[b] = text[b] / text[b].sum()
    return weights
