"""The semantic hub paper's media lenses (paper-protocols.md A12-A15: ``hub analyze media-lens``)
on tiny random LLaVA and Qwen2-Audio models.

Every per-medium number is recomputed independently: the plain transformers model loaded from
the same folder, run one prompt at a time with ``output_hidden_states=True`` (the paper's code:
``hidden_states[0..L]``, the last one after the final norm), the lens ``h @ lm_head.weight.T``
with ``log_softmax`` (``lib/logit_lens.py:55-66``), and numpy for the quantities as the
released scripts compute them. The inputs are built so that the variants differ: the baseline
caption is another caption with another noun count, the masks are asymmetric (a transposed
grid selects other patches), the control word is one the lens does predict.
"""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from hubclient.errors import HubError
from hubclient.runner import RunConfig

pytest.importorskip("soundfile", reason="the media extra (soundfile) is not installed")
Image = pytest.importorskip("PIL.Image", reason="the media extra (Pillow) is not installed")

from media_tiny import SAMPLING_RATE, save_media_model  # noqa: E402

PLACEHOLDER = {"llava": "<image>", "qwen2_audio": "<|audio_bos|><|AUDIO|><|audio_eos|>"}
cli = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cache = {}

    def make(family):
        if family not in cache:
            cache[family] = save_media_model(family, tmp_path_factory.mktemp(f"proto-{family}"))
        return cache[family]

    return make


def hub(*args):
    from analyses.cli import media_lens
    from hubclient.cli import app
    from hubclient.cli.commands import analyze_app

    if "media-lens" not in {c.name for c in analyze_app.registered_commands}:  # before the venv is reinstalled
        analyze_app.command("media-lens")(media_lens.command)
    return cli.invoke(app, [str(a) for a in args])


def config(folder, out, name, batch_size=2):
    return RunConfig(model=str(folder), out=out, name=name, batch_size=batch_size, progress=False, plots=False)


def reference_lens(folder, family, template, media):
    """Per medium: ``(log-probs [L+1, media positions, vocab], tokenizer)`` of the paper's lens,
    computed with plain transformers."""
    import soundfile
    import transformers as tf

    cls = tf.Qwen2AudioForConditionalGeneration if family == "qwen2_audio" else tf.AutoModelForImageTextToText
    model = cls.from_pretrained(folder, dtype=torch.float32).eval()
    processor = tf.AutoProcessor.from_pretrained(folder)
    text = template.replace("{media}", PLACEHOLDER[family])
    token = model.config.audio_token_index if family == "qwen2_audio" else model.config.image_token_id
    unembed = model.get_output_embeddings().weight.detach()
    out = []
    for path in media:
        if family == "qwen2_audio":
            data, _ = soundfile.read(str(path), dtype="float32")
            enc = processor(text=[text], audio=[data], sampling_rate=SAMPLING_RATE, return_tensors="pt")
        else:
            enc = processor(text=[text], images=[Image.open(path).convert("RGB")], return_tensors="pt")
        with torch.no_grad():
            states = torch.stack([h[0] for h in model(**enc, output_hidden_states=True).hidden_states])  # [L+1, T, d]
        positions = (enc["input_ids"][0] == token).nonzero().flatten()
        out.append(torch.log_softmax((states[:, positions] @ unembed.T).double(), dim=-1).numpy())
    return out, processor.tokenizer


def by_prompt(table, set_name):
    """``{prompt: values by layer}`` of one set of media_lens.parquet."""
    rows = table.filter(pl.col("set") == set_name).sort("prompt", "layer")
    return {p: part["value"].to_numpy() for (p,), part in rows.group_by("prompt", maintain_order=True)}


# --------------------------------------------------------------------------- A12 colour


def test_colour_lens_equals_independent_top1_rates(tmp_path, model_dir):
    from analyses.media_runs import PAPER_TEMPLATES, MediaProtocolOptions, run_media_lens

    folder = model_dir("llava")
    colours = tmp_path / "colours"
    from hubclient.inputs.media import write_solid_colours

    pairs = write_solid_colours(colours)
    # the paper's images: torch.zeros(3, 256, 256) with channel colors.index(c) set to 1
    for i, colour in enumerate(["red", "green", "blue", "black"]):
        pixels = np.asarray(Image.open(colours / f"solid-{colour}.png"))
        expected = np.zeros((256, 256, 3), dtype=np.uint8)
        if colour != "black":
            expected[..., i] = 255
        assert (pixels == expected).all(), colour
    lps, tok = reference_lens(folder, "llava", PAPER_TEMPLATES["colour"], [colours / f"solid-{c}.png" for c in ["red", "green", "blue", "black"]])
    # a control word the lens does predict somewhere, so the rate is not trivially 0
    vocab = tok.get_vocab()
    tops = np.concatenate([lp.argmax(-1).reshape(-1) for lp in lps])
    words = [w for w in ("white", "sky", "grass", "person", "cat", "dog", "park", "mat") if np.any(tops == vocab[w])]
    assert words, "no test word is ever top-1: change the seed of the tiny model"
    control = words[0]
    run = run_media_lens(MediaProtocolOptions(experiment="colour", control=control, bootstrap=50), pairs, None, config(folder, tmp_path, "c"))
    table = run.table("media_lens")
    got_m, got_b = by_prompt(table, "matching"), by_prompt(table, "baseline")
    for i, colour in enumerate(["red", "green", "blue", "black"]):
        top = lps[i].argmax(-1)  # [L+1, positions]
        np.testing.assert_allclose(got_m[i], 100 * (top == vocab[colour]).mean(axis=1))
        np.testing.assert_allclose(got_b[i], 100 * (top == vocab[control]).mean(axis=1))
    assert max(v.max() for v in got_b.values()) > 0
    summary = run.table("media_lens_summary")
    pooled = 100 * np.mean([(lp.argmax(-1) == vocab[control]) for lp in lps], axis=(0, 2))  # over images and positions
    np.testing.assert_allclose(summary.filter(pl.col("set") == "baseline").sort("layer")["mean"].to_numpy(), pooled)
    assert run.manifest["protocol"] == "A12"


# --------------------------------------------------------------------------- A13 caption nouns


def write_images(folder, count, size=32):
    rng = np.random.default_rng(3)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_caption_nouns_lens_equals_independent(tmp_path, model_dir):
    from analyses.media_runs import PAPER_TEMPLATES, MediaProtocolOptions, run_media_lens

    folder = model_dir("llava")
    paths = write_images(tmp_path, 4)
    captions = [
        ("the cat sat on the mat", "cat;mat"),
        ("a dog ran in the park with a frisbee", "dog;park;frisbee"),
        ("a man and a dog", "man;dog"),
        ("red car", ""),  # no nouns cell: the content-words rule (red, car)
    ]
    lines = ["media,caption,nouns"] + [f"{p.name},{c},{n}" for p, (c, n) in zip(paths, captions)]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(lines) + "\n")
    run = run_media_lens(MediaProtocolOptions(experiment="caption-nouns", bootstrap=50), pairs, 3, config(folder, tmp_path, "n"))
    # the least-overlapping caption over the whole file (lower-cased token texts, first wins ties)
    token_sets = [set(c.lower().split()) for c, _ in captions]
    expected_base = [min(range(4), key=lambda j: (len(token_sets[i] & token_sets[j]), j)) for i in range(3)]
    assert expected_base == [2, 3, 0]  # never the true caption; image 1: 3 true nouns, 2 baseline nouns (the scaling counts)
    assert run.table("prompts")["baseline"].to_list() == [captions[j][0] for j in expected_base]
    nouns = [["cat", "mat"], ["dog", "park", "frisbee"], ["man", "dog"], ["red", "car"]]
    lps, tok = reference_lens(folder, "llava", PAPER_TEMPLATES["caption-nouns"], paths[:3])
    vocab = tok.get_vocab()
    table = run.table("media_lens")
    got_m, got_b = by_prompt(table, "matching"), by_prompt(table, "baseline")
    for i in range(3):
        probs = np.exp(lps[i])  # [L+1, positions, vocab]

        def alignment(keywords):
            ids = [vocab[k] for k in keywords]
            return probs[:, :, ids].mean(axis=1).sum(axis=1) / len(keywords) * len(nouns[i])

        np.testing.assert_allclose(got_m[i], alignment(nouns[i]), rtol=1e-4)  # float32 trace vs float64 numpy on probabilities ~1e-15
        np.testing.assert_allclose(got_b[i], alignment(nouns[expected_base[i]]), rtol=1e-4)
        assert not np.allclose(got_m[i], got_b[i])
    diff = run.table("media_lens_summary").filter(pl.col("set") == "difference").sort("layer")["mean"].to_numpy()
    np.testing.assert_allclose(diff, np.mean([got_m[i] - got_b[i] for i in range(3)], axis=0), rtol=1e-6)


def test_caption_noun_rules_and_least_overlap():
    from pathlib import Path

    from analyses.media_runs import caption_nouns, caption_token_texts, least_overlap
    from hubclient.inputs.media import MediaPair

    pair = MediaPair(Path("x.png"), "A dog's frisbee, on the grass.", 2, Path("p.csv"))
    assert caption_nouns(pair, "content-words") == ["dog", "s", "frisbee", "grass"]
    assert caption_token_texts("A Dog, a dog.") == {"a", "dog", ",", "."}
    with pytest.raises(HubError, match="nouns"):
        caption_nouns(pair, "column")
    tagged = MediaPair(Path("x.png"), "A dog", 2, Path("p.csv"), extra={"nouns": "Dog; frisbee"})
    assert caption_nouns(tagged, "auto") == ["Dog", "frisbee"] and caption_nouns(tagged, "content-words") == ["dog"]
    sets = [{"a", "b"}, {"a"}, {"c"}, {"d"}]
    assert least_overlap(0, sets) == 2  # 2 and 3 tie at 0: the first wins
    assert least_overlap(2, sets) == 0


# --------------------------------------------------------------------------- A14 segmentation


def write_segmentation(folder):
    """Two 32×32 images (4×4 patches of 8 pixels for the tiny LLaVA) with RGB-encoded panoptic
    masks. Image 0: "person" in the top-right 16×16 block plus 40 of the 64 pixels of patch
    (row 3, col 0) (> 50%: labelled), "sky" in 24 pixels of patch (0, 0) (< 50%: not) and in the
    bottom-right block. Image 1: "dog" in the left column of patches."""
    paths = write_images(folder, 2)
    ids = {"person": 3226956, "sky": 1200, "dog": 77, "grass": 5}
    m0 = np.zeros((32, 32), dtype=np.int64)
    m0[0:16, 16:32] = ids["person"]
    m0[24:29, 0:8] = ids["person"]  # 40 pixels of patch (3, 0)
    m0[0:3, 0:8] = ids["sky"]  # 24 pixels of patch (0, 0)
    m0[16:32, 16:32] = ids["sky"]
    m1 = np.zeros((32, 32), dtype=np.int64)
    m1[:, 0:8] = ids["dog"]
    for name, mask in (("mask0.png", m0), ("mask1.png", m1)):
        rgb = np.stack([mask % 256, (mask // 256) % 256, mask // 65536], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(folder / name)
    rows = [
        f"{paths[0].name},person sky,mask0.png,{ids['person']}:person;{ids['sky']}:sky;{ids['grass']}:grass",
        f"{paths[1].name},dog,mask1.png,{ids['dog']}:dog",
    ]
    pairs = folder / "seg.csv"
    pairs.write_text("media,caption,mask,labels\n" + "\n".join(rows) + "\n")
    patches = {
        0: {"person": [2, 3, 6, 7, 12], "sky": [10, 11, 14, 15]},  # row-major y*4+x
        1: {"dog": [0, 4, 8, 12]},
    }
    return paths, pairs, patches


def test_segmentation_lens_equals_independent_row_major(tmp_path, model_dir):
    from analyses.media_runs import PAPER_TEMPLATES, MediaProtocolOptions, run_media_lens

    folder = model_dir("llava")
    paths, pairs, patches = write_segmentation(tmp_path)
    run = run_media_lens(MediaProtocolOptions(experiment="segmentation", bootstrap=50), pairs, None, config(folder, tmp_path, "s"))
    lps, tok = reference_lens(folder, "llava", PAPER_TEMPLATES["segmentation"], paths)
    vocab = tok.get_vocab()
    baselines = run.table("prompts")["baseline"].to_list()
    table = run.table("media_lens")
    got_m, got_b = by_prompt(table, "matching"), by_prompt(table, "baseline")
    names_in_file = {"person", "sky", "grass", "dog"}
    for i in range(2):
        true_names = list(patches[i])
        fake = baselines[i].split(", ")
        all_true = ["person", "sky", "grass"] if i == 0 else ["dog"]
        assert len(fake) == len(all_true) and all(f != t and f in names_in_file for f, t in zip(fake, all_true))
        fake_of = dict(zip(all_true, fake))

        def value(names):
            return np.mean([np.exp(lps[i][:, patches[i][t], vocab[n]].mean(axis=1)) for t, n in zip(true_names, names)], axis=0)

        np.testing.assert_allclose(got_m[i], value(true_names), rtol=1e-5)
        np.testing.assert_allclose(got_b[i], value([fake_of[t] for t in true_names]), rtol=1e-5)
        # the released code's transposed grid would read other patches: the values differ
        transposed = [[(p % 4) * 4 + p // 4 for p in patches[i][t]] for t in true_names]
        wrong = np.mean([np.exp(lps[i][:, tp, vocab[t]].mean(axis=1)) for tp, t in zip(transposed, true_names)], axis=0)
        assert not np.allclose(got_m[i], wrong)
    assert set(table.filter(pl.col("set") == "matching")["n"].to_list()) == {2, 1}  # categories with patches


def test_patch_masks_and_mask_files(tmp_path):
    from analyses.media_runs import patch_masks
    from hubclient.inputs.media import parse_segment_labels, read_label_mask

    class Identity:  # an image processor that leaves the mask as it is (channels first)
        class image_processor:  # noqa: N801
            @staticmethod
            def __call__(images, **kw):
                return {"pixel_values": np.stack([np.transpose(images[0], (2, 0, 1))])}

    Identity.image_processor = Identity.image_processor()
    mask = np.zeros((4, 6), dtype=np.int64)  # H=4, W=6 -> with 4 positions: 2×2 grid of 2×3 cells
    mask[0:2, 3:6] = 9  # top-right cell
    out = patch_masks(mask, {9: "cat", 8: "dog"}, Identity, 4)
    assert [name for name, _ in out] == ["cat"] and out[0][1].tolist() == [False, True, False, False]
    with pytest.raises(HubError, match="square"):
        patch_masks(mask, {9: "cat"}, Identity, 6)
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[1, 2] = (76, 61, 49)  # 76 + 256*61 + 65536*49
    Image.fromarray(rgb).save(tmp_path / "m.png")
    ids = read_label_mask(tmp_path / "m.png")
    assert ids.shape == (2, 3) and ids[1, 2] == 76 + 256 * 61 + 65536 * 49 and ids.sum() == ids[1, 2]
    assert parse_segment_labels("3:person; 7:dog") == {3: "person", 7: "dog"}
    with pytest.raises(HubError, match="pixel_id:category"):
        parse_segment_labels("person")


# --------------------------------------------------------------------------- A15 audio labels


def test_label_words_lens_equals_independent(tmp_path, model_dir):
    import soundfile

    from analyses.media_runs import PAPER_TEMPLATES, MediaProtocolOptions, label_words, run_media_lens

    folder = model_dir("qwen2_audio")
    labels = ["dog, cat", "car engine", "bird", "cat"]
    rng = np.random.default_rng(1)
    rows = []
    paths = []
    for i, label in enumerate(labels):
        t = np.arange(int(SAMPLING_RATE * (0.3 + 0.1 * i))) / SAMPLING_RATE
        path = tmp_path / f"a{i}.wav"
        soundfile.write(str(path), 0.3 * np.sin(2 * np.pi * (220 + 90 * i) * t) + 0.05 * rng.standard_normal(t.size), SAMPLING_RATE)
        rows.append(f'{path.name},"{label}"')
        paths.append(path)
    pairs = tmp_path / "audio.csv"
    pairs.write_text("media,caption\n" + "\n".join(rows) + "\n")
    run = run_media_lens(MediaProtocolOptions(experiment="label-words", bootstrap=50), pairs, None, config(folder, tmp_path, "a"))
    baselines = run.table("prompts")["baseline"].to_list()
    for label, other in zip(labels, baselines):
        assert other in labels and not set(label_words(label)) & set(label_words(other))
    # released code: random.seed(0); random.choice over sorted(set(all labels)) sharing no word, per clip in order
    draw = random.Random(0)
    expected = [draw.choice([o for o in sorted(labels) if not set(label_words(lab)) & set(label_words(o))]) for lab in labels]
    assert baselines == expected
    lps, tok = reference_lens(folder, "qwen2_audio", PAPER_TEMPLATES["label-words"], paths)
    vocab = tok.get_vocab()
    table = run.table("media_lens")
    got_m, got_b = by_prompt(table, "matching"), by_prompt(table, "baseline")
    for i in range(4):
        def geo(words):
            return np.exp(np.mean([lps[i][:, :, vocab[w]].mean(axis=1) for w in words], axis=0))

        np.testing.assert_allclose(got_m[i], geo(label_words(labels[i])), rtol=1e-5)
        np.testing.assert_allclose(got_b[i], geo(label_words(baselines[i])), rtol=1e-5)


# --------------------------------------------------------------------------- CLI


def test_cli_colour_and_errors(tmp_path, model_dir):
    folder = model_dir("llava")
    result = hub("analyze", "media-lens", "colour", "--model", folder, "--out", tmp_path, "--name", "c", "--no-progress", "--bootstrap", "20")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / "plots" / "media_lens.png").is_file()
    html = (tmp_path / "c" / "plots" / "media_lens.html").read_text()
    assert str(folder) not in html and folder.name in html  # the model's folder name, not its local path
    assert "the colour's name" in result.output
    assert pl.read_parquet(tmp_path / "c" / "prompts.parquet")["caption"].to_list() == ["red", "green", "blue", "black"]
    result = hub("analyze", "media-lens", "colours", "--model", folder, "--out", tmp_path)
    assert result.exit_code != 0 and "unknown experiment" in result.output
    result = hub("analyze", "media-lens", "colour", "--nouns", "column", "--model", folder, "--out", tmp_path)
    assert result.exit_code != 0 and "--nouns does not apply" in result.output
    paths = write_images(tmp_path, 2)
    (tmp_path / "p.csv").write_text(f"media,caption\n{paths[0].name},cat\n{paths[1].name},dog\n")
    result = hub("analyze", "media-lens", "segmentation", tmp_path / "p.csv", "--model", folder, "--out", tmp_path)
    assert result.exit_code != 0 and "'mask'" in result.output
    result = hub("analyze", "media-lens", "label-words", tmp_path / "p.csv", "--model", folder, "--out", tmp_path, "--no-progress")
    assert result.exit_code != 0 and "is an image model" in result.output


# --------------------------------------------------------------------------- A11 default


def test_similarity_media_default_is_the_last_media_position(tmp_path, model_dir):
    """A11: without --media-pool the medium's vector is its last media position (the paper's
    ``hidden_states[1:][:, -1, :]`` with LLaVA's prompt ``<image>``), checked against the plain
    model's hidden state there; ``--media-pool mean`` gives another vector."""
    import json

    import transformers as tf

    folder = model_dir("llava")
    paths = write_images(tmp_path, 2)
    (tmp_path / "p.csv").write_text(f"media,caption\n{paths[0].name},a cat\n{paths[1].name},a dog\n")
    for name, extra in (("last", []), ("mean", ["--media-pool", "mean"])):
        result = hub("analyze", "similarity", "--modality", "image", tmp_path / "p.csv", "--model", folder, "--out", tmp_path, "--name", name,
                     "--no-progress", "--no-plots", "--bootstrap", "10", *extra)
        assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "last" / "manifest.json").read_text())["options"]["media_pool"] == "last"
    model = tf.AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    processor = tf.AutoProcessor.from_pretrained(folder)
    enc = processor(text=["<image>"], images=[Image.open(paths[0]).convert("RGB")], return_tensors="pt")
    layers = model.model.language_model.layers
    seen = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o[0] if isinstance(o, tuple) else o)) for k, layer in enumerate(layers)]
    with torch.no_grad():
        model(**enc)
    for h in hooks:
        h.remove()
    last_image = int((enc["input_ids"][0] == model.config.image_token_id).nonzero().max())
    assert last_image == enc["input_ids"].shape[1] - 1  # BOS + image tokens: the last image patch is the last position
    for name, close in (("last", True), ("mean", False)):
        vectors = pl.read_parquet(tmp_path / name / "vectors.parquet").filter((pl.col("prompt") == 0) & (pl.col("layer") == 2))
        got = np.asarray(vectors["vector"][0])
        assert np.allclose(got, seen[1][0, last_image].numpy(), atol=1e-5) == close


# --------------------------------------------------------------------------- the model's chat template

CHAT = (
    "{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


def test_chat_template_prompt(tmp_path, model_dir):
    """``--media-template 'chat:…{media}…'``: one user turn in the processor's chat template;
    the numbers equal the plain model's on the rendered prompt. A processor without a chat
    template is a clear error."""
    import shutil

    import transformers as tf

    from analyses.media_runs import MediaProtocolOptions, run_media_lens
    from hubclient.inputs.media import write_solid_colours

    folder = tmp_path / "chat-llava"
    shutil.copytree(model_dir("llava"), folder)
    processor = tf.AutoProcessor.from_pretrained(folder)
    processor.chat_template = CHAT
    processor.save_pretrained(folder)
    pairs = write_solid_colours(tmp_path / "colours", colours=("red", "blue"))
    # caption-nouns on the two images (captions "red", "blue": one content word each): continuous values
    options = MediaProtocolOptions(experiment="caption-nouns", media_template="chat:What is the color in the image?{media}", bootstrap=20)
    run = run_media_lens(options, pairs, None, config(folder, tmp_path, "chat"))
    lps, tok = reference_lens(folder, "llava", "USER: What is the color in the image?{media} ASSISTANT:", [tmp_path / "colours" / "solid-red.png", tmp_path / "colours" / "solid-blue.png"])
    plain, _ = reference_lens(folder, "llava", "What is the color in the image?{media}", [tmp_path / "colours" / "solid-red.png"])
    vocab = tok.get_vocab()
    got = by_prompt(run.table("media_lens"), "matching")
    for i, colour in enumerate(["red", "blue"]):
        np.testing.assert_allclose(got[i], np.exp(lps[i][:, :, vocab[colour]]).mean(axis=1), rtol=1e-5)
    assert not np.allclose(got[0], np.exp(plain[0][:, :, vocab["red"]]).mean(axis=1), rtol=1e-3)  # the template matters
    with pytest.raises(HubError, match="no chat template"):
        run_media_lens(MediaProtocolOptions(experiment="colour", media_template="chat:{media}"), pairs, None, config(model_dir("llava"), tmp_path, "nochat"))


def test_label_pool_file_and_dataset_writers(tmp_path):
    """--labels: the random label comes from the given label file (sorted); the VGGSound and
    COCO pairs writers follow the released loaders (file order, label by video id)."""
    import json
    import os

    from analyses.media_runs import MediaProtocolLens, MediaProtocolOptions
    from hubclient.inputs.media import coco_caption_pairs, coco_panoptic_pairs, read_pairs, vggsound_pairs

    wavs = tmp_path / "wavs"
    wavs.mkdir()
    for name in ("vidA_30000.wav", "vid_B_10.wav", "note.txt"):
        (wavs / name).write_bytes(b"")
    (tmp_path / "vgg.csv").write_text("vidA,30,dog barking,test\nvid_B,10,car engine starting,train\nvidC,0,bird chirping,test\n")
    pairs = vggsound_pairs(tmp_path / "vgg.csv", wavs, tmp_path / "audio.csv")
    listed = [f for f in os.listdir(wavs) if f.endswith(".wav")]
    expected = {"vidA_30000.wav": "dog barking", "vid_B_10.wav": "car engine starting"}
    assert [(p.media.name, p.caption) for p in read_pairs(pairs)] == [(f, expected[f]) for f in listed]
    assert (tmp_path / "labels.txt").read_text().split("\n")[:3] == ["bird chirping", "car engine starting", "dog barking"]
    lens = MediaProtocolLens(MediaProtocolOptions(experiment="label-words", label_pool=str(tmp_path / "labels.txt")), read_pairs(pairs))
    draw = random.Random(0)
    pool = ["bird chirping", "car engine starting", "dog barking"]
    for pair, base in zip(read_pairs(pairs), lens.baseline_of):
        words = set(pair.caption.split())
        assert base == draw.choice([o for o in pool if not words & set(o.split())])
    with pytest.raises(HubError, match="no such file"):
        MediaProtocolLens(MediaProtocolOptions(experiment="label-words", label_pool=str(tmp_path / "none.txt")), read_pairs(pairs))

    images = tmp_path / "val2017"
    images.mkdir()
    for name in ("000000000001.jpg", "000000000002.jpg"):
        Image.new("RGB", (4, 4)).save(images / name)
    captions = {"images": [{"id": 1, "file_name": "000000000001.jpg"}, {"id": 2, "file_name": "000000000002.jpg"}],
                "annotations": [{"image_id": 2, "caption": "A dog  runs."}, {"image_id": 1, "caption": "A cat."}, {"image_id": 2, "caption": "Grass."}]}
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    got = read_pairs(coco_caption_pairs(tmp_path / "captions.json", images, tmp_path / "cap.csv", n=2))
    assert [(p.media.name, p.caption) for p in got] == [("000000000002.jpg", "A dog runs."), ("000000000001.jpg", "A cat.")]
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "masks" / "000000000001.png")
    panoptic = {"images": captions["images"], "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "wall-other"}],
                "annotations": [{"image_id": 1, "file_name": "000000000001.png", "segments_info": [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 2}]}]}
    (tmp_path / "panoptic.json").write_text(json.dumps(panoptic))
    got = read_pairs(coco_panoptic_pairs(tmp_path / "panoptic.json", images, tmp_path / "masks", tmp_path / "pan.csv"))
    assert got[0].extra["labels"] == "5:person" and got[0].extra["mask"] == "masks/000000000001.png"

    # the same writers as `hub media vggsound|coco-captions|coco-panoptic`
    from hubclient.cli import app

    for args, name in (
        (["vggsound", tmp_path / "vgg.csv", wavs, "-o", tmp_path / "cli" / "audio.csv"], "audio.csv"),
        (["coco-captions", tmp_path / "captions.json", images, "-o", tmp_path / "cli" / "cap.csv", "--n", "2"], "cap.csv"),
        (["coco-panoptic", tmp_path / "panoptic.json", images, tmp_path / "masks", "-o", tmp_path / "cli" / "pan.csv"], "pan.csv"),
    ):
        result = cli.invoke(app, ["media", *[str(a) for a in args]])
        assert result.exit_code == 0, result.output
        def rows(csv):  # masks are written relative to the pairs file's folder
            out = []
            for p in read_pairs(csv):
                extra = dict(p.extra)
                if "mask" in extra:
                    extra["mask"] = (csv.parent / extra["mask"]).resolve()
                out.append((p.media.resolve(), p.caption, extra))
            return out

        assert rows(tmp_path / "cli" / name) == rows(tmp_path / name), name
    assert (tmp_path / "cli" / "labels.txt").read_text() == (tmp_path / "labels.txt").read_text()
    result = cli.invoke(app, ["media", "vggsound", str(tmp_path / "none.csv"), str(wavs), "-o", str(tmp_path / "x.csv")])
    assert result.exit_code != 0 and "cannot read the VGGSound csv" in result.output


def test_segmentation_lens_max_positions_reads_the_sampled_patches(tmp_path, model_dir):
    """``--max-positions 6`` of the 16 image positions reads positions ``round(linspace(0, 15,
    6))`` = 0, 3, 6, 9, 12, 15; A14 then averages each category over its patches among them
    (person 3, 6, 12; sky 15; dog 0, 12), recomputed here from the full reference lens; with all
    positions the value differs, so reading all of them (or the first six) would fail."""
    from analyses.media_runs import PAPER_TEMPLATES, MediaProtocolOptions, run_media_lens

    folder = model_dir("llava")
    paths, pairs, patches = write_segmentation(tmp_path)
    options = MediaProtocolOptions(experiment="segmentation", bootstrap=20, max_positions=6)
    run = run_media_lens(options, pairs, None, config(folder, tmp_path, "s6"))
    assert run.manifest["options"]["max_positions"] == 6
    lps, tok = reference_lens(folder, "llava", PAPER_TEMPLATES["segmentation"], paths)
    vocab = tok.get_vocab()
    sampled = {0, 3, 6, 9, 12, 15}
    got = by_prompt(run.table("media_lens"), "matching")
    for i in range(2):
        kept = {name: sorted(set(p) & sampled) for name, p in patches[i].items()}
        expected = np.mean([np.exp(lps[i][:, kept[n], vocab[n]].mean(axis=1)) for n in kept], axis=0)
        np.testing.assert_allclose(got[i], expected, rtol=1e-5)
        every = np.mean([np.exp(lps[i][:, patches[i][n], vocab[n]].mean(axis=1)) for n in kept], axis=0)
        assert not np.allclose(got[i], every)


def test_max_positions_spread_and_errors(tmp_path, model_dir):
    from hubclient.exec.multimodal import spread_positions

    assert spread_positions(list(range(10, 26)), 6) == ([10, 13, 16, 19, 22, 25], [0, 3, 6, 9, 12, 15])
    assert spread_positions([4, 5, 6], 8) == ([4, 5, 6], [0, 1, 2])
    assert spread_positions([4, 5, 6], None) == ([4, 5, 6], [0, 1, 2])
    assert spread_positions(list(range(5)), 1) == ([0], [0])
    from analyses.media_runs import MediaProtocolOptions, run_media_lens

    _, pairs, _ = write_segmentation(tmp_path)
    with pytest.raises(HubError, match="--max-positions must be at least 1"):
        run_media_lens(MediaProtocolOptions(experiment="segmentation", max_positions=0), pairs, None, config(model_dir("llava"), tmp_path, "bad"))
