"""Shared fixtures: tiny randomly initialised models of every supported family.

No test here downloads anything: each tiny model is built from a small config with a
word-level tokenizer trained on a few sentences, and saved to a temporary folder so that the
CLI can load it with ``--model <folder>``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Data by name (hub data get) would find a developer's downloaded data sets; tests see an empty
# data folder unless they set HUB_DATA_DIR (or pass paths from ../shared/data) themselves.
import tempfile as _tempfile

os.environ.setdefault("HUB_DATA_DIR", _tempfile.mkdtemp(prefix="hub-test-data-"))

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HUB_SHARED_DATA", ROOT.parent / "shared" / "data"))

SENTENCES = [
    "the capital of france is paris",
    "the cat sat on the mat",
    "a dog ran in the park and the cat sat",
    "one two three four five six seven eight nine ten",
    "language models read text and predict the next word",
]
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
D_MODEL, N_LAYERS, N_HEADS, D_FF, CONTEXT = 32, 3, 4, 64, 64


def build_tokenizer():
    """A word-level fast tokenizer over ``SENTENCES`` that prepends ``<bos>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for s in SENTENCES for w in s.split()})
    vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def word_tokenizer(texts, extra=()):
    """Word-level tokenizer for tiny models that must know the words under test: whitespace
    split, every punctuation character alone, digits one by one; the vocabulary is
    ``<pad> <unk> <bos> <eos>`` then, sorted, ``extra`` and every word of ``texts``; BOS is
    prepended."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated"), pre_tokenizers.Digits(individual_digits=True)])
    words = set(extra)
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(text))
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<unk>", "<bos>", "<eos>"] + sorted(words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def tiny_config(family: str, vocab: int):
    """A 3-layer, d_model-32 config of ``family`` (``config.model_type``)."""
    import transformers as tf

    common = dict(vocab_size=vocab, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    llama_like = dict(
        hidden_size=D_MODEL, intermediate_size=D_FF, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS,
        num_key_value_heads=2, max_position_embeddings=CONTEXT, **common,
    )
    if family == "llama":
        return tf.LlamaConfig(**llama_like)
    if family == "mistral":
        return tf.MistralConfig(**llama_like)
    if family == "qwen2":
        return tf.Qwen2Config(**llama_like)
    if family == "qwen3":
        return tf.Qwen3Config(head_dim=8, **llama_like)
    if family == "gemma":
        return tf.GemmaConfig(head_dim=8, **llama_like)
    if family == "gemma2":
        return tf.Gemma2Config(head_dim=8, final_logit_softcapping=30.0, sliding_window=16, **llama_like)
    if family == "gemma3_text":
        return tf.Gemma3TextConfig(head_dim=8, sliding_window=16, **llama_like)
    if family == "gpt2":
        return tf.GPT2Config(n_embd=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS, n_positions=CONTEXT, **common)
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(
            hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, intermediate_size=D_FF,
            max_position_embeddings=CONTEXT, **common,
        )
    if family == "bloom":
        return tf.BloomConfig(hidden_size=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS, **common)
    if family == "opt":
        return tf.OPTConfig(
            hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, ffn_dim=D_FF, num_attention_heads=N_HEADS,
            max_position_embeddings=CONTEXT, word_embed_proj_dim=D_MODEL, **common,
        )
    raise KeyError(family)


FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gpt2", "gpt_neox", "bloom", "opt"]


def spread_weights(model) -> None:
    """Redraw the parameters of ``model`` in place, from the global torch RNG (seed it first).

    1. every matrix from N(0, 0.3²): the default random init is tiny (std 0.02), which leaves
       the logit lens with no real ranking (these draws come first, in parameter order, as they
       always did);
    2. then every vector parameter: biases (linear and norm biases, ``*.bias``) from N(0, 0.3²),
       every other vector (norm weights: LayerNorm/RMSNorm scales, Gemma's ``(1 + w)`` offsets,
       Qwen3/Gemma3's q/k norms) moved from its identity init by U(-0.5, 0.5): a scale of 1
       becomes U(0.5, 1.5), Gemma's offset 0 becomes U(-0.5, 0.5) (an effective scale in
       U(0.5, 1.5) too). transformers initialises norms to the identity and biases to zero, so
       without this a test could not tell a wrong norm module, a missing ``1 +`` or a dropped
       bias from the right one.
    """
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
        for name, p in model.named_parameters():
            if p.dim() == 1:
                if name.endswith("bias"):
                    p.normal_(0.0, 0.3)
                else:
                    p.add_(torch.empty_like(p).uniform_(-0.5, 0.5))


def tiny_model_for(tokenizer, family: str = "llama", seed: int = 0, max_positions: int | None = None):
    """(hf_model, tokenizer): a tiny random model of ``family`` sized to ``tokenizer``'s
    vocabulary (``torch.manual_seed(seed)``, :func:`spread_weights`), in eval mode, float32;
    ``max_positions`` overrides the config's ``max_position_embeddings``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(family, len(tokenizer))
    if max_positions is not None:
        config.max_position_embeddings = max_positions
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    spread_weights(model)
    return model.eval(), tokenizer


def patched_next_token_probs(hf, blocks, target_ids, position, state, layer):
    """Next-token probabilities (float64 numpy ``[vocab]``) of ``target_ids`` (one prompt, no
    media) through the plain transformers model ``hf``, with ``state`` ``[d_model]`` written over
    the residual stream at ``position`` and ``layer`` by a torch hook: layer 0 = the input of
    ``blocks[0]`` (a pre-hook), layer ``l`` = the output of ``blocks[l-1]``. The independent
    patchscope of the lens tests (Ghandeharioun et al. 2024)."""
    import torch

    def replace(tensor):
        tensor = tensor.clone()
        tensor[0, position] = state
        return tensor

    if layer == 0:
        def pre(module, args, kwargs):
            if args:
                return (replace(args[0]),) + tuple(args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = replace(kwargs["hidden_states"])
            return args, kwargs

        handle = blocks[0].register_forward_pre_hook(pre, with_kwargs=True)
    else:
        def post(module, args, output):
            if isinstance(output, tuple):
                return (replace(output[0]),) + tuple(output[1:])
            return replace(output)

        handle = blocks[layer - 1].register_forward_hook(post)
    try:
        with torch.no_grad():
            logits = hf(input_ids=torch.tensor([target_ids])).logits[0, -1].double()
    finally:
        handle.remove()
    return torch.softmax(logits, -1).numpy()


def build_tiny(family: str, seed: int = 0):
    """(hf_model, tokenizer) for a tiny random model of ``family``, in eval mode, float32."""
    return tiny_model_for(build_tokenizer(), family, seed)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """``tiny_dir(family)`` -> folder with a saved tiny model of that family (built once)."""
    cache: dict[str, Path] = {}

    def make(family: str = "llama") -> Path:
        if family not in cache:
            model, tokenizer = build_tiny(family)
            folder = tmp_path_factory.mktemp(f"tiny-{family}")
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            cache[family] = folder
        return cache[family]

    return make


@pytest.fixture(scope="session")
def tiny_hub_model():
    """``tiny_hub_model(family)`` -> a wrapped :class:`hubclient.models.HubModel` (built once)."""
    from hubclient.models import wrap_model

    cache = {}

    def make(family: str = "llama"):
        if family not in cache:
            model, tokenizer = build_tiny(family)
            cache[family] = wrap_model(model, tokenizer, model_id=f"tiny-{family}")
        return cache[family]

    return make


@pytest.fixture(scope="module")
def server(tiny_dir):
    """The NDIF test server (a separate process, strict by default) serving the tiny llama and
    requiring ``test_remote.KEY``; one per test module. A module that needs other models
    defines its own ``server``."""
    from test_remote import ServerProcess

    srv = ServerProcess([str(tiny_dir("llama"))])
    yield srv
    srv.stop()


@pytest.fixture
def flores_dir() -> Path:
    """The shared FLORES-200 devtest folder; skips the test when it is absent."""
    folder = SHARED_DATA / "flores200-devtest"
    if not folder.is_dir():
        pytest.skip(f"FLORES data not found at {folder} (set HUB_SHARED_DATA to the shared data folder)")
    return folder
