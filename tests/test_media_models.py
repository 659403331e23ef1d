"""Image/audio language models end to end on tiny random models (LLaVA, Gemma 3, Qwen2-Audio).

Every number is checked against an independent computation: the plain transformers model
loaded from the same folder, run one prompt at a time, with forward hooks on its decoder
layers, and numpy for the statistics.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from hubclient.cli import app
from hubclient.errors import HubError
from hubclient.runner import RunConfig

pytest.importorskip("soundfile", reason="the media extra (soundfile) is not installed")
Image = pytest.importorskip("PIL.Image", reason="the media extra (Pillow) is not installed")

from media_tiny import SAMPLING_RATE, save_media_model  # noqa: E402

#: The family's own placeholder text, written out here (not taken from hub).
PLACEHOLDER = {"llava": "<image>", "gemma3": "<start_of_image>", "qwen2_audio": "<|audio_bos|><|AUDIO|><|audio_eos|>"}
CAPTIONS = ["the cat sat on the mat", "a dog ran in the park", "paris is the capital of france"]
cli = CliRunner()


def hub(*args):
    return cli.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def media_model(tmp_path_factory):
    """``media_model(family)`` -> saved tiny model folder (built once per session)."""
    cache = {}

    def make(family):
        if family not in cache:
            cache[family] = save_media_model(family, tmp_path_factory.mktemp(f"tiny-{family}"))
        return cache[family]

    return make


def write_pairs(folder, modality):
    """Three media files of different sizes/lengths (one audio clip at 8 kHz, resampled) and
    their captions, as a pairs CSV."""
    import soundfile

    rng = np.random.default_rng(0)
    rows = []
    for i, caption in enumerate(CAPTIONS):
        if modality == "image":
            name = f"m{i}.png"
            Image.fromarray(rng.integers(0, 256, size=(20 + 9 * i, 30 + 5 * i, 3), dtype=np.uint8)).save(folder / name)
        else:
            name = f"m{i}.wav"
            rate = 8000 if i == 1 else SAMPLING_RATE
            t = np.arange(int(rate * (0.4 + 0.3 * i))) / rate
            soundfile.write(str(folder / name), 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(t.size), rate)
        rows.append(f"{name},{caption}")
    path = folder / "pairs.csv"
    path.write_text("media,caption\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def reference(folder, family, pairs_file):
    """Independent per-prompt forwards of the plain transformers model.

    Returns ``(media_states, media_ids, caption_states, model)``: lists over pairs of
    ``[layers+1, seq, d]`` residual streams (layer 0 = embeddings, layer l = output of block l,
    read by hooks) and the media prompt's input ids.
    """
    import soundfile
    import transformers as tf
    from scipy.signal import resample_poly

    cls = tf.Qwen2AudioForConditionalGeneration if family == "qwen2_audio" else tf.AutoModelForImageTextToText
    model = cls.from_pretrained(folder, dtype=torch.float32).eval()
    processor = tf.AutoProcessor.from_pretrained(folder)
    layers = model.model.language_model.layers

    def states(**inputs):
        seen = {}
        hooks = [layer.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o[0] if isinstance(o, tuple) else o)) for k, layer in enumerate(layers)]
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
        for h in hooks:
            h.remove()
        return torch.stack([out.hidden_states[0][0]] + [seen[k][0] for k in range(len(layers))])

    media_states, media_ids, caption_states = [], [], []
    lines = pairs_file.read_text().splitlines()[1:]
    for line in lines:
        name, caption = line.split(",", 1)
        if family == "qwen2_audio":
            data, rate = soundfile.read(str(pairs_file.parent / name), dtype="float32")
            if rate != SAMPLING_RATE:
                data = resample_poly(data, SAMPLING_RATE // 8000, 1).astype(np.float32)
            enc = processor(text=[PLACEHOLDER[family]], audio=[data], sampling_rate=SAMPLING_RATE, return_tensors="pt")
        else:
            image = Image.open(pairs_file.parent / name).convert("RGB")
            enc = processor(text=[PLACEHOLDER[family]], images=[image], return_tensors="pt")
        media_states.append(states(**enc))
        media_ids.append(enc["input_ids"][0])
        caption_states.append(states(**processor.tokenizer([caption], return_tensors="pt")))
    return media_states, media_ids, caption_states, model


def expected_media_positions(family, ids, model):
    """Media positions from the config's token id and the family's own token count."""
    token = model.config.audio_token_index if family == "qwen2_audio" else model.config.image_token_id
    return (ids == token).nonzero().flatten().tolist()


@pytest.mark.parametrize("family", ["llava", "gemma3", "qwen2_audio"])
def test_similarity_media_vs_caption_equals_independent(tmp_path, media_model, family):
    from analyses.media_runs import run_similarity
    from analyses.similarity import SimilarityOptions

    modality = "audio" if family == "qwen2_audio" else "image"
    pairs = write_pairs(tmp_path, modality)
    folder = media_model(family)
    options = SimilarityOptions(modality=modality, media_pool="mean", pool="last", bootstrap=50)
    config = RunConfig(model=str(folder), out=tmp_path / "out", name="r", batch_size=2, progress=False, plots=False)
    run, _ = run_similarity(pairs, options, None, config)
    vectors = run.table("vectors")
    prompts = run.table("prompts")
    assert prompts["language"].to_list() == [modality] * 3 + ["caption"] * 3
    assert prompts["text"].to_list()[:3] == ["{media}"] * 3

    media_states, media_ids, caption_states, model = reference(folder, family, pairs)
    n_layers = len(model.model.language_model.layers)
    for i in range(3):
        positions = expected_media_positions(family, media_ids[i], model)
        assert len(positions) > 0
        if family == "llava":
            assert len(positions) == (32 // 8) ** 2  # one token per CLIP patch (CLS dropped)
        elif family == "gemma3":
            assert len(positions) == 4  # mm_tokens_per_image
        assert positions == list(range(positions[0], positions[0] + len(positions)))  # one contiguous block
        assert prompts["n_tokens"][i] == len(media_ids[i])
    expected = {}
    for layer in range(n_layers + 1):
        img = np.stack([media_states[i][layer, expected_media_positions(family, media_ids[i], model)].mean(0).numpy() for i in range(3)])
        cap = np.stack([caption_states[i][layer, -1].numpy() for i in range(3)])
        for lang, arr in ((modality, img), ("caption", cap)):
            got = np.stack(vectors.filter((pl.col("layer") == layer) & (pl.col("language") == lang)).sort("sentence")["vector"].to_list())
            np.testing.assert_allclose(got, arr, rtol=1e-4, atol=1e-4, err_msg=f"{family} layer {layer} {lang}")
        a = img / np.linalg.norm(img, axis=1, keepdims=True)
        b = cap / np.linalg.norm(cap, axis=1, keepdims=True)
        s = a @ b.T
        expected[layer] = s.trace() / 3 - (s.sum() - s.trace()) / 6  # Eq. 1: matching minus non-matching
    table = run.table("similarity").sort("layer")
    assert table["pair"].unique().to_list() == [f"{modality}-caption"]
    np.testing.assert_allclose(table["similarity"].to_numpy(), [expected[layer] for layer in range(n_layers + 1)], atol=1e-5)
    assert (table["ci_low"] <= table["similarity"] + 1e-9).all() and (table["similarity"] <= table["ci_high"] + 1e-9).all()


def test_similarity_last_media_position_and_mean_caption(tmp_path, media_model):
    from analyses.media_runs import run_similarity
    from analyses.similarity import SimilarityOptions

    pairs = write_pairs(tmp_path, "image")
    folder = media_model("llava")
    options = SimilarityOptions(modality="image", media_pool="last", pool="mean", layers="2", bootstrap=10)
    run, _ = run_similarity(pairs, options, None, RunConfig(model=str(folder), out=tmp_path / "o", name="r", batch_size=3, progress=False, plots=False))
    media_states, media_ids, caption_states, model = reference(folder, "llava", pairs)
    vectors = run.table("vectors").sort("language", "sentence")
    for i in range(3):
        last = expected_media_positions("llava", media_ids[i], model)[-1]
        got = vectors.filter((pl.col("language") == "image") & (pl.col("sentence") == i))["vector"].to_list()[0]
        np.testing.assert_allclose(got, media_states[i][2, last].numpy(), rtol=1e-4, atol=1e-4)
        got = vectors.filter((pl.col("language") == "caption") & (pl.col("sentence") == i))["vector"].to_list()[0]
        np.testing.assert_allclose(got, caption_states[i][2, 1:].mean(0).numpy(), rtol=1e-4, atol=1e-4)  # without BOS


@pytest.mark.parametrize("family", ["llava", "gemma3", "qwen2_audio"])
def test_media_lens_equals_independent(tmp_path, media_model, family):
    from analyses.media_runs import MediaLensOptions, run_lens

    modality = "audio" if family == "qwen2_audio" else "image"
    pairs = write_pairs(tmp_path, modality)
    folder = media_model(family)
    options = MediaLensOptions(top_k=2, modality=modality)
    run = run_lens(pairs, options, None, RunConfig(model=str(folder), out=tmp_path / "out", name="r", batch_size=2, progress=False))
    lens = run.table("logit_lens")
    words = run.table("caption_words")
    media_states, media_ids, _, model = reference(folder, family, pairs)
    vocab = model.config.text_config.vocab_size
    tokenizer_vocab = __import__("transformers").AutoProcessor.from_pretrained(folder).tokenizer.get_vocab()
    for i in range(3):
        positions = expected_media_positions(family, media_ids[i], model)
        assert sorted(lens.filter(pl.col("prompt") == i)["position"].unique().to_list()) == positions
        with torch.no_grad():
            logits = model.lm_head(model.model.language_model.norm(media_states[i][:, positions]))  # [layers+1, k, vocab]
            cap = getattr(model.config.text_config, "final_logit_softcapping", None)
            if cap:  # Gemma 3 soft-caps its logits
                logits = torch.tanh(logits / cap) * cap
        probs = torch.softmax(logits.double(), dim=-1).numpy()
        assert probs.shape[-1] == vocab
        top1 = lens.filter((pl.col("prompt") == i) & (pl.col("rank") == 1)).sort("layer", "position")
        np.testing.assert_array_equal(top1["token_id"].to_numpy().reshape(probs.shape[0], -1), probs.argmax(-1))
        content = [w for w in CAPTIONS[i].split() if w not in ("the", "a", "is", "of", "on", "in", "and")]
        got_words = words.filter(pl.col("prompt") == i)
        assert sorted(got_words["word"].unique().to_list()) == sorted(set(content))
        for word in set(content):
            rows = got_words.filter(pl.col("word") == word).sort("layer", "position")
            assert rows["token_id"].unique().to_list() == [tokenizer_vocab[word]]
            want = probs[:, :, tokenizer_vocab[word]]
            np.testing.assert_allclose(rows["probability"].to_numpy().reshape(want.shape), want, rtol=1e-4, atol=1e-7)
            want_rank = 1 + (probs > want[..., None]).sum(-1)  # 1 + #{v: p_v > p_word}
            np.testing.assert_array_equal(rows["rank"].to_numpy().reshape(want.shape), want_rank)
    for plot in ("caption_probability", "lens_heatmap"):
        assert (run.path / "plots" / f"{plot}.png").is_file()


# --------------------------------------------------------------------------- errors


def test_bad_media_and_wrong_models_fail_clearly(tmp_path, media_model, tiny_dir):
    pairs = write_pairs(tmp_path, "image")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pairs.open("a") as fh:
        fh.write("broken.png,the cat\n")
    out = tmp_path / "out"
    result = hub("analyze", "similarity", "--modality", "image", pairs, "--model", media_model("llava"), "--out", out, "--no-progress")
    assert result.exit_code == 2
    assert "pairs.csv:5:" in result.output and "broken.png is not a readable image" in result.output
    assert not out.exists() or not any(out.iterdir())  # no half-written run

    good = write_pairs(tmp_path, "image")
    result = hub("analyze", "similarity", "--modality", "image", good, "--model", tiny_dir("llama"), "--out", out, "--no-progress")
    assert result.exit_code == 2 and "reads text only" in result.output
    result = hub("analyze", "logit-lens", "--modality", "audio", "--prompts", good, "--model", media_model("llava"), "--out", out, "--no-progress")
    assert result.exit_code == 2 and "is an image model" in result.output
    result = hub("analyze", "similarity", "--modality", "image", good, "--media-template", "USER: picture", "--model", media_model("llava"), "--out", out)
    assert result.exit_code == 2 and "{media}" in result.output

    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    audio = write_pairs(audio_dir, "audio")  # pair 2 is at 8 kHz
    result = hub("analyze", "similarity", "--modality", "audio", audio, "--no-resample", "--model", media_model("qwen2_audio"), "--out", out, "--no-progress")
    assert result.exit_code == 2
    assert "pairs.csv:3:" in result.output and "8000 Hz" in result.output and "16000 Hz" in result.output
    assert not out.exists() or not any(out.iterdir())
    # audio clips given to an image model (a task that does not name the modality): the file
    # kind and the model kind are named, not "not a readable image"
    from hubclient.errors import HubError
    from hubclient.exec.multimodal import encode
    from hubclient.inputs.media import read_pairs
    from hubclient.models import load_model

    llava = load_model(str(media_model("llava")), device="cpu")
    with pytest.raises(HubError, match=r"pairs.csv:2: m0.wav is an audio file, but .* reads images; use an audio language model"):
        encode(llava, ["{media}"], read_pairs(audio)[:1])
    qwen = load_model(str(media_model("qwen2_audio")), device="cpu")
    with pytest.raises(HubError, match=r"m0.png is an image, but .* reads audio; use an image language model"):
        encode(qwen, ["{media}"], read_pairs(good)[:1])


def test_media_positions_missing_template_slot():
    from hubclient.multimodal import check_template

    with pytest.raises(HubError, match="exactly once"):
        check_template("{media} and {media}")


# --------------------------------------------------------------------------- CLI on the demo data


def test_cli_on_demo_images(tmp_path, media_model):
    demo = tmp_path / "demo"
    result = hub("media", "demo", demo, "--size", "48")
    assert result.exit_code == 0, result.output
    pairs = demo / "images.csv"
    model = media_model("gemma3")
    out = tmp_path / "out"
    result = hub("analyze", "similarity", "--modality", "image", pairs, "--model", model, "--out", out, "--name", "sim", "--no-progress", "--bootstrap", "100", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(out / "sim" / "similarity.parquet")
    assert table.height == 4 and table["n_sentences"].to_list() == [22] * 4
    for name in ("similarity_by_layer", "similarity_means", "similarity_heatmap"):
        assert (out / "sim" / "plots" / f"{name}.png").is_file()
    result = hub("analyze", "logit-lens", "--modality", "image", "--prompts", pairs, "--n", "5", "--model", model, "--out", out, "--name", "lens", "--no-progress")
    assert result.exit_code == 0, result.output
    words = pl.read_parquet(out / "lens" / "caption_words.parquet")
    assert set(words["prompt"].unique().to_list()) <= set(range(5))
    result = hub("plot", out / "lens")
    assert result.exit_code == 0, result.output
    assert "caption_probability.png" in result.output


# --------------------------------------------------------------------------- batching, resume


def test_media_and_text_prompts_never_share_a_batch():
    import torch

    from hubclient.runner import make_batches

    tokens = [[2, 5, 5, 5, 6], [2, 7], [2, 5, 5, 8], [2, 7, 7, 7, 7, 7], [2, 5, 5, 5, 5, 5, 6]]
    extras = [{"pixel_values": torch.full((1, 3), float(i))} if i in (0, 2, 4) else None for i in range(5)]
    batches = make_batches(tokens, [[len(t) - 1] for t in tokens], 2, 0, extras)
    members = [b.prompt_index for b in batches]
    assert members == [[4, 0], [2], [3, 1]]  # media first (longest first), then text
    assert batches[0].extra["pixel_values"][:, 0].tolist() == [4.0, 0.0]  # in batch order
    assert batches[2].extra == {} and set(batches[2].inputs) == {"input_ids", "attention_mask"}
    plain = make_batches(tokens, [[len(t) - 1] for t in tokens], 2, 0)
    assert [b.prompt_index for b in plain] == [[4, 3], [0, 2], [1]]  # text batching unchanged


def test_token_type_ids_are_right_padded():
    import torch

    from hubclient.multimodal import collate

    out = collate([{"token_type_ids": torch.tensor([[0, 1, 1, 0]]), "pixel_values": torch.zeros(1, 3)},
                   {"token_type_ids": torch.tensor([[0, 1]]), "pixel_values": torch.ones(1, 3)}], width=4)
    assert out["token_type_ids"].tolist() == [[0, 1, 1, 0], [0, 1, 0, 0]]
    assert out["pixel_values"].shape == (2, 3)


def test_media_run_resumes_and_refuses_detach(tmp_path, media_model, monkeypatch):
    from analyses.media_runs import run_similarity
    from analyses.similarity import SimilarityOptions

    pairs = write_pairs(tmp_path, "image")
    folder = media_model("llava")

    def run(name, **kw):
        config = RunConfig(model=str(folder), out=tmp_path, name=name, batch_size=2, progress=False, plots=False, **kw)
        return run_similarity(pairs, SimilarityOptions(modality="image", bootstrap=10), None, config)[0]

    with pytest.raises(HubError, match="--detach is not supported"):
        run("detached", remote=True, detach=True)
    full = run("full")

    from hubclient.exec import local

    real, calls = local.trace_batch, []

    def interrupted(*args, **kwargs):  # Ctrl-C during the second batch
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(local, "trace_batch", interrupted)
    with pytest.raises(HubError, match="--resume"):
        run("part")
    monkeypatch.setattr(local, "trace_batch", real)
    resumed = run(None, resume=tmp_path / "part")
    assert resumed.table("vectors").equals(full.table("vectors"))
    assert resumed.table("similarity").equals(full.table("similarity"))

    with pytest.raises(HubError, match="cannot resume"):  # the same paths, another image: another input hash
        calls.clear()
        monkeypatch.setattr(local, "trace_batch", interrupted)
        try:
            run("part2")
        except HubError:
            pass
        monkeypatch.setattr(local, "trace_batch", real)
        Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "m0.png")
        run(None, resume=tmp_path / "part2")
