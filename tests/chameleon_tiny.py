"""A tiny randomly initialised Chameleon (``ChameleonForConditionalGeneration``) and its
``ChameleonProcessor``, built from configs and a word-level tokenizer: no download.

Chameleon has no vision encoder that feeds features: a VQ-VAE turns the image into discrete
codes, each code is mapped to a vocabulary token ``IMGIMG<code in letters A..J>Z`` (the
config's ``vocabulary_map``), and the language model embeds those tokens with its own
``embed_tokens``. The processor expands ``<image>`` into ``<racm3:break>`` + ``image_seq_length``
× ``<image>`` + ``<eoss>`` and appends the tokenizer's ``sep_token`` (``<reserved08706>`` on
chameleon-7b) unless ``return_for_text_completion``.

Here: a 32×32 image, a VQ-VAE with three downsamplings (``channel_multiplier`` of four levels)
gives a 4×4 grid of 8-pixel patches = 16 image tokens; a codebook of :data:`N_CODES` codes,
each with its ``IMGIMG…`` token in the vocabulary (so the codes are "added tokens" of the
tokenizer, as on the real model). The language model has ``conftest`` sizes; every weight,
the RMS norms' included, is redrawn by ``conftest.spread_weights``.
"""

from __future__ import annotations

from pathlib import Path

from conftest import D_FF, D_MODEL, N_HEADS, N_LAYERS, SENTENCES, SPECIALS, spread_weights
from media_tiny import MEDIA_WORDS

#: The family (``config.model_type``) this module builds.
FAMILY = "chameleon"
#: VQ codebook size of the tiny model (one ``IMGIMG…`` token each).
N_CODES = 12
#: Image side in pixels and the patch grid it gives (3 downsamplings: 32 / 2**3 = 4).
IMAGE_SIZE, GRID = 32, 4
N_IMAGE_TOKENS = GRID * GRID
#: The processor's image markers and the sep token (chameleon-7b's names, except the sep).
IMAGE, BOI, EOI, SEP = "<image>", "<racm3:break>", "<eoss>", "<reserved08706>"
#: Words the vocabulary holds besides ``SENTENCES``: the media tests' words and the A11/A13/A19
#: prompts' words (punctuation is split off by the pre-tokenizer).
WORDS = MEDIA_WORDS + ["what", "is", "in", "image", "are", "two", "colors", "?", "dog", "frisbee"]


def code_token(code: int) -> str:
    """The vocabulary token of VQ code ``code`` (``3`` -> ``IMGIMGDZ``, ``12`` -> ``IMGIMGBCZ``):
    transformers' ``ChameleonImageVocabularyMapping`` reads the digits as letters A..J and drops
    the last character."""
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def build_tokenizer():
    """A word-level fast tokenizer (``<bos>`` prepended) over ``SENTENCES`` + :data:`WORDS`,
    with the image markers, the sep token and the ``IMGIMG…`` code tokens as added special
    tokens, and ``image_token``/``boi_token``/``eoi_token`` attributes."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for s in SENTENCES for w in s.split()} | set(WORDS))
    vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    core.add_special_tokens([IMAGE, BOI, EOI, SEP] + [code_token(c) for c in range(N_CODES)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>", sep_token=SEP,
        extra_special_tokens={"image_token": IMAGE, "boi_token": BOI, "eoi_token": EOI},
    )


def build_chameleon(seed: int = 0):
    """(hf_model, processor) of a tiny random Chameleon (eval mode, float32)."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    tok = build_tokenizer()
    vq = tf.ChameleonVQVAEConfig(
        embed_dim=8, num_embeddings=N_CODES, latent_channels=8, resolution=IMAGE_SIZE, base_channels=32,
        channel_multiplier=[1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[],
    )
    config = tf.ChameleonConfig(
        vocab_size=len(tok), hidden_size=D_MODEL, intermediate_size=D_FF, num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, vq_config=vq.to_dict(), vocabulary_map=dict(tok.get_vocab()),
    )
    model = tf.ChameleonForConditionalGeneration(config)
    spread_weights(model)
    image_processor = tf.ChameleonImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = tf.ChameleonProcessor(image_processor=image_processor, tokenizer=tok, image_seq_length=N_IMAGE_TOKENS)
    return model.float().eval(), processor


def save_chameleon(folder: Path) -> Path:
    """Build and save the tiny Chameleon and its processor to ``folder`` (``--model folder``)."""
    model, processor = build_chameleon()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
