"""Tiny randomly initialised image/audio language models with processors built from parts.

No download: each processor is assembled from a transformers image processor / feature
extractor and the project's word-level test tokenizer (``conftest.build_tokenizer``) with the
family's media tokens added; each model is built from a small config (vision tower or audio
encoder + a 3-layer language model of ``conftest`` sizes). ``save_media_model`` writes both
to a folder that ``--model <folder>`` loads.
"""

from __future__ import annotations

from pathlib import Path

from conftest import D_FF, D_MODEL, N_HEADS, N_LAYERS, SENTENCES, SPECIALS, spread_weights

MEDIA_FAMILIES = ["llava", "gemma3", "qwen2_audio"]
IMAGE_FAMILIES = ["llava", "gemma3"]
SAMPLING_RATE = 16000
#: Words the media tokenizers know besides ``conftest.SENTENCES``': the colour lens' colours and
#: control, nouns and category / label names of the protocol lens tests; the animal words and the
#: Yes/No readout of the audio intervention (A20, tests/test_audio_steer.py).
MEDIA_WORDS = [
    "red", "green", "blue", "black", "white", "frisbee", "person", "sky", "grass", "bird", "car", "engine",
    "siren", "man", "Yes", "No", "Is", "this", "animal", "a", "mammal", "bull", "canary", "cat", "cattle",
    "cheetah", "chicken", "chimpanzee", "chinchilla", "chipmunk", "cow", "coyote", "cricket", "crow",
    "dinosaurs", "dog", "duck", "eagle", "elephant", "elk", "ferret", "fox", "francolin", "frog", "gibbon",
    "goat", "goose", "horse", "lions", "magpie", "mosquito", "mouse", "otter", "owl", "parrot", "penguins",
    "pheasant", "pig", "sheep", "snake", "turkey", "warbler", "whale", "zebra"
]


def build_media_tokenizer():
    """A word-level fast tokenizer over ``SENTENCES`` plus :data:`MEDIA_WORDS` that prepends
    ``<bos>`` (``conftest.build_tokenizer`` with a larger vocabulary)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for s in SENTENCES for w in s.split()} | set(MEDIA_WORDS))
    vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def _text_config(vocab: int, **kw):
    return dict(
        vocab_size=vocab, hidden_size=D_MODEL, intermediate_size=D_FF, num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, **kw,
    )


def _tokenizer_with(tokens: list[str], attributes: dict[str, str] | None = None):
    from transformers import PreTrainedTokenizerFast

    base = build_media_tokenizer()
    core = base.backend_tokenizer
    core.add_special_tokens(tokens)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens=attributes or {},
    )


def build_media(family: str, seed: int = 0):
    """(hf_model, processor) of a tiny random ``family`` model (eval mode, float32)."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    if family == "llava":
        tok = _tokenizer_with(["<image>"], {"image_token": "<image>"})
        vision = tf.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
        config = tf.LlavaConfig(
            vision_config=vision, text_config=tf.LlamaConfig(**_text_config(len(tok))),
            image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1, vision_feature_select_strategy="default",
        )
        model = tf.LlavaForConditionalGeneration(config)
        image_processor = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        processor = tf.LlavaProcessor(
            image_processor=image_processor, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
            image_token="<image>", num_additional_image_tokens=1,
        )
    elif family == "gemma3":
        tok = _tokenizer_with(
            ["<start_of_image>", "<image_soft_token>", "<end_of_image>"],
            {"boi_token": "<start_of_image>", "image_token": "<image_soft_token>", "eoi_token": "<end_of_image>"},
        )
        text = tf.Gemma3TextConfig(**_text_config(len(tok), head_dim=8, sliding_window=16))
        vision = tf.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
        config = tf.Gemma3Config(
            text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=tok.boi_token_id,
            eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"), image_token_index=tok.image_token_id,
        )
        model = tf.Gemma3ForConditionalGeneration(config)
        processor = tf.Gemma3Processor(image_processor=tf.Gemma3ImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok, image_seq_length=4)
    elif family == "qwen2_audio":
        tok = _tokenizer_with(["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"])
        audio = dict(d_model=16, encoder_attention_heads=2, encoder_ffn_dim=32, encoder_layers=2, num_mel_bins=16, max_source_positions=1500)
        config = tf.Qwen2AudioConfig(audio_config=audio, text_config=_text_config(len(tok)), audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
        model = tf.Qwen2AudioForConditionalGeneration(config)
        extractor = tf.WhisperFeatureExtractor(feature_size=16, sampling_rate=SAMPLING_RATE)
        processor = tf.Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=tok)
    else:
        raise KeyError(family)
    spread_weights(model)
    return model.float().eval(), processor


def save_media_model(family: str, folder: Path) -> Path:
    """Build and save a tiny ``family`` model and its processor to ``folder``."""
    model, processor = build_media(family)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
