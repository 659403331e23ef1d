"""``--lens patchscope`` at image/audio positions (docs/lenses.md) on tiny random LLaVA, Gemma 3
and Qwen2-Audio models, against an independent computation.

The reference is plain transformers with torch hooks, one prompt at a time: the media prompt
alone gives ``h_l`` at each media position (layer 0 = the input of decoder block 0, i.e. the
embeddings with the encoder's features scattered in; layer ``l`` = the output of block ``l``);
then the target prompt alone (text, no media inputs) runs with a hook that writes ``h_l`` over
the placeholder's state at the same layer, and the softmax of its last position is the
patchscope (Ghandeharioun et al. 2024, Sec. 4.1). hub's stored numbers (``logit_lens`` top-k,
``caption_words`` probabilities, ``media_lens`` values) must equal it.

What would make these fail: the placeholder one position off, the source state of another
layer patched (the reference is checked to differ from both, so the comparison can tell), the
copies given media features (a Gemma 3 copy marked as image tokens in ``token_type_ids`` gets
bidirectional attention; a copy with media ids breaks the feature count), per-token processor
tensors padded at the wrong width or side, or the copies' rows mixed up with the prompts'.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

pytest.importorskip("soundfile", reason="the media extra (soundfile) is not installed")
Image = pytest.importorskip("PIL.Image", reason="the media extra (Pillow) is not installed")

from media_tiny import SAMPLING_RATE, save_media_model  # noqa: E402
from test_media_models import write_pairs  # noqa: E402

from hubclient.runner import RunConfig  # noqa: E402

#: The family's own placeholder text, written out here (not taken from hub).
PLACEHOLDER = {"llava": "<image>", "gemma3": "<start_of_image>", "qwen2_audio": "<|audio_bos|><|AUDIO|><|audio_eos|>"}
MODALITY = {"llava": "image", "gemma3": "image", "qwen2_audio": "audio"}
#: (target prompt, placeholder): the placeholder before the read position (a short target,
#: narrower than the media prompts), and a long target that ends at its placeholder (wider
#: than Gemma 3's and the audio prompts: the batch grows and per-token tensors are re-padded).
TARGETS = [
    ("cat cat dog dog the sat", "the"),
    ("one two three four five six seven eight nine ten cat dog mat", "mat"),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cache = {}

    def make(family):
        if family not in cache:
            cache[family] = save_media_model(family, tmp_path_factory.mktemp(f"ps-{family}"))
        return cache[family]

    return make


class Reference:
    """The plain transformers model of ``folder`` with hooks on its decoder layers."""

    def __init__(self, folder, family):
        import transformers as tf

        cls = tf.Qwen2AudioForConditionalGeneration if family == "qwen2_audio" else tf.AutoModelForImageTextToText
        self.family = family
        self.model = cls.from_pretrained(folder, dtype=torch.float32).eval()
        self.processor = tf.AutoProcessor.from_pretrained(folder)
        self.tokenizer = self.processor.tokenizer
        self.layers = self.model.model.language_model.layers
        token = self.model.config.audio_token_index if family == "qwen2_audio" else self.model.config.image_token_id
        self.media_token = int(token)

    def encode(self, path, text=None):
        """The processor's inputs of one media prompt (``text`` with the family's placeholder)."""
        import soundfile
        from scipy.signal import resample_poly

        text = PLACEHOLDER[self.family] if text is None else text
        if self.family == "qwen2_audio":
            data, rate = soundfile.read(str(path), dtype="float32")
            if rate != SAMPLING_RATE:
                data = resample_poly(data, SAMPLING_RATE // rate, 1).astype(np.float32)
            return self.processor(text=[text], audio=[data], sampling_rate=SAMPLING_RATE, return_tensors="pt")
        return self.processor(text=[text], images=[Image.open(path).convert("RGB")], return_tensors="pt")

    def source_states(self, enc):
        """``([L+1, T, d] residual stream, media positions)`` of one media prompt: layer 0 from a
        pre-hook on block 0, layer l from a forward hook on block l."""
        seen = {}

        def pre(module, args, kwargs):
            seen[0] = (args[0] if args else kwargs["hidden_states"])[0].clone()

        hooks = [self.layers[0].register_forward_pre_hook(pre, with_kwargs=True)]
        for k, layer in enumerate(self.layers):
            hooks.append(layer.register_forward_hook(lambda m, a, o, k=k: seen.__setitem__(k + 1, (o[0] if isinstance(o, tuple) else o)[0].clone())))
        try:
            with torch.no_grad():
                self.model(**enc)
        finally:
            for h in hooks:
                h.remove()
        states = torch.stack([seen[k] for k in range(len(self.layers) + 1)])
        positions = (enc["input_ids"][0] == self.media_token).nonzero().flatten().tolist()
        return states, positions

    def target(self, prompt, placeholder):
        """The target prompt's ids (with BOS) and the placeholder's last position."""
        ids = self.tokenizer(prompt)["input_ids"]
        word = self.tokenizer.convert_tokens_to_ids(placeholder)
        return ids, max(i for i, t in enumerate(ids) if t == word)

    def patched(self, target_ids, position, state, layer):
        """Next-token probabilities (float64 ``[vocab]``) of the target prompt alone with ``state``
        written over ``position`` at ``layer`` (0: the input of block 0)."""
        from conftest import patched_next_token_probs

        return patched_next_token_probs(self.model, self.layers, target_ids, position, state, layer)


def media_files(pairs_file):
    return [pairs_file.parent / line.split(",", 1)[0] for line in pairs_file.read_text().splitlines()[1:]]


def config(folder, out, name, batch_size=2):
    return RunConfig(model=str(folder), out=out, name=name, batch_size=batch_size, progress=False, plots=False)


@pytest.mark.parametrize("family", ["llava", "gemma3", "qwen2_audio"])
@pytest.mark.parametrize("target", TARGETS, ids=["before-read", "at-read"])
def test_media_logit_lens_patchscope_equals_hooked_forwards(tmp_path, model_dir, family, target):
    """``logit-lens --modality`` with ``--lens patchscope`` (MediaLens): every media position and
    layer's top-k and caption-word probabilities equal the hooked reference; batches of 2 media
    of different lengths (audio) with the target copies appended."""
    from analyses.media_runs import MediaLensOptions, run_lens

    prompt, placeholder = target
    folder = model_dir(family)
    pairs = write_pairs(tmp_path, MODALITY[family])
    k = 3
    options = MediaLensOptions(top_k=k, modality=MODALITY[family], lens="patchscope", patch_prompt=prompt, patch_placeholder=placeholder)
    run = run_lens(pairs, options, None, config(folder, tmp_path, "ps"))
    assert run.manifest["options"]["lens"] == "patchscope"
    ref = Reference(folder, family)
    target_ids, ph = ref.target(prompt, placeholder)
    assert ref.tokenizer.unk_token_id not in target_ids
    assert run.manifest["lens"]["patch_placeholder_position"] == ph
    top = run.table("logit_lens")
    words = run.table("caption_words")
    n_layers = len(ref.layers) + 1
    checked = 0
    shifted_gap = placeholder_gap = own_gap = 0.0
    unpatched = None
    for p, path in enumerate(media_files(pairs)):
        states, positions = ref.source_states(ref.encode(path))
        assert positions and top.filter(pl.col("prompt") == p)["position"].unique().sort().to_list() == positions
        for layer in range(n_layers):
            for pos in positions:
                probs = ref.patched(target_ids, ph, states[layer, pos], layer)
                rows = top.filter((pl.col("prompt") == p) & (pl.col("position") == pos) & (pl.col("layer") == layer)).sort("rank")
                order = np.argsort(-probs)[:k]
                assert rows["token_id"].to_list() == order.tolist(), (p, pos, layer)
                np.testing.assert_allclose(rows["probability"].to_numpy(), probs[order], rtol=1e-4, atol=1e-6)
                cells = words.filter((pl.col("prompt") == p) & (pl.col("position") == pos) & (pl.col("layer") == layer))
                assert cells.height > 0
                np.testing.assert_allclose(cells["probability"].to_numpy(), probs[cells["token_id"].to_numpy()], rtol=1e-4, atol=1e-7)
                checked += 1
                # the comparison can tell a wrong layer, a wrong placeholder and no patch apart
                if 0 < layer < n_layers - 1:
                    shifted = ref.patched(target_ids, ph, states[layer, pos], layer + 1)
                    shifted_gap = max(shifted_gap, float(np.abs(shifted[order] - rows["probability"].to_numpy()).max()))
                if layer < n_layers - 1:
                    moved = ref.patched(target_ids, ph - 1, states[layer, pos], layer)
                    placeholder_gap = max(placeholder_gap, float(np.abs(moved[order] - rows["probability"].to_numpy()).max()))
                if unpatched is None:
                    with torch.no_grad():
                        unpatched = torch.softmax(ref.model(input_ids=torch.tensor([target_ids])).logits[0, -1].double(), -1).numpy()
                own_gap = max(own_gap, float(np.abs(unpatched[order] - rows["probability"].to_numpy()).max()))
    assert checked == top.select("prompt", "position", "layer").unique().height
    assert min(shifted_gap, placeholder_gap, own_gap) > 1e-3, (shifted_gap, placeholder_gap, own_gap)


def test_media_lens_label_words_patchscope_equals_independent(tmp_path, model_dir):
    """``media-lens label-words`` (A15) with ``--lens patchscope`` on the tiny Qwen2-Audio: each
    clip's ``exp(mean_words mean_positions log P(word))`` from the hooked patchscope, for its
    label (matching) and the drawn baseline label."""
    import soundfile

    from analyses.media_runs import MediaProtocolOptions, run_media_lens

    folder = model_dir("qwen2_audio")
    labels = ["dog, cat", "car engine", "bird", "cat"]
    rows = []
    for i, label in enumerate(labels):
        t = np.arange(int(SAMPLING_RATE * (0.3 + 0.1 * i))) / SAMPLING_RATE
        soundfile.write(str(tmp_path / f"a{i}.wav"), 0.3 * np.sin(2 * np.pi * (220 + 90 * i) * t), SAMPLING_RATE)
        rows.append(f'a{i}.wav,"{label}"')
    (tmp_path / "audio.csv").write_text("media,caption\n" + "\n".join(rows) + "\n")
    prompt, placeholder = TARGETS[0]
    options = MediaProtocolOptions(
        experiment="label-words", media_template="{media}", final_norm=True, bootstrap=20,
        lens="patchscope", patch_prompt=prompt, patch_placeholder=placeholder,
    )
    run = run_media_lens(options, tmp_path / "audio.csv", None, config(folder, tmp_path, "a15", batch_size=3))
    table = run.table("media_lens")
    baselines = run.table("prompts")["baseline"].to_list()
    ref = Reference(folder, "qwen2_audio")
    target_ids, ph = ref.target(prompt, placeholder)
    vocab = ref.tokenizer.get_vocab()

    def split(label):
        return [w for part in label.split(",") for w in part.strip().split(" ") if w]

    for i, label in enumerate(labels):
        states, positions = ref.source_states(ref.encode(tmp_path / f"a{i}.wav"))
        lp = np.stack([np.log(np.stack([ref.patched(target_ids, ph, states[layer, pos], layer) for pos in positions])) for layer in range(len(ref.layers) + 1)])
        for set_name, words in (("matching", split(label)), ("baseline", split(baselines[i]))):
            got = table.filter((pl.col("prompt") == i) & (pl.col("set") == set_name)).sort("layer")["value"].to_numpy()
            expected = np.exp(lp[:, :, [vocab[w] for w in words]].mean(axis=(1, 2)))
            np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert run.manifest["lens"]["lens"] == "patchscope" and run.manifest["options"]["lens"] == "patchscope"


def test_copies_carry_zero_per_token_rows_and_the_batch_media_tensors(tmp_path, model_dir):
    """The batch a Gemma 3 patchscope run sends: the prompts' rows, ids and ``token_type_ids``
    unchanged (right-padded to the wider target), the copies text rows of the target with
    ``token_type_ids`` 0, and ``pixel_values`` one per image (not per row)."""
    from analyses.lenses import patch_batches
    from analyses.media_runs import MediaLens, MediaLensOptions
    from hubclient.exec.batching import make_batches
    from hubclient.exec.multimodal import encode
    from hubclient.inputs.media import read_pairs
    from hubclient.models import load_model

    folder = model_dir("gemma3")
    model = load_model(str(folder), device="cpu")
    pairs = read_pairs(write_pairs(tmp_path, "image"))
    tokens, extras = encode(model, ["{media}"] * len(pairs), pairs)
    prompt, placeholder = TARGETS[1]
    analysis = MediaLens(MediaLensOptions(lens="patchscope", patch_prompt=prompt, patch_placeholder=placeholder), [p.caption for p in pairs])
    analysis.prepare(model, ["{media}"] * len(pairs), tokens)
    plain = make_batches(tokens, [analysis.token_positions(t, i) for i, t in enumerate(tokens)], 2, model.tokenizer.pad_token_id, extras)
    patched = patch_batches(analysis, model, tokens, 2, extras)
    target_ids = model.tokenizer(prompt)["input_ids"]
    assert len(plain) == len(patched) == 2
    for before, after in zip(plain, patched):
        b, w = before.input_ids.shape
        assert after.input_ids.shape[1] == max(w, len(target_ids)) > w  # the long target widens the batch
        n_copies = (model.n_layers + 1) * before.row_batch.shape[0]
        assert after.input_ids.shape[0] == b + n_copies
        assert torch.equal(after.input_ids[:b, :w], before.input_ids)
        assert torch.equal(after.extra["token_type_ids"][:b, :w], before.extra["token_type_ids"])
        assert int(before.extra["token_type_ids"].sum()) == int((before.input_ids == model.media_token_id).sum()) > 0
        assert int(after.extra["token_type_ids"][:, w:].abs().sum()) == 0 and int(after.extra["token_type_ids"][b:].abs().sum()) == 0
        assert (after.input_ids[b:, : len(target_ids)] == torch.tensor(target_ids)).all()
        assert not (after.input_ids[b:] == model.media_token_id).any()
        assert torch.equal(after.extra["pixel_values"], before.extra["pixel_values"])
        assert after.meta["patchscope"] == {"start": b, "placeholder": len(target_ids) - 1, "read": len(target_ids) - 1}


def test_cli_media_lens_patchscope_runs_and_records_the_lens(tmp_path, model_dir):
    """``hub analyze media-lens caption-nouns --lens patchscope --patch-prompt …`` on the tiny
    LLaVA: the run finishes with its tables, summary, plot and the lens block in the manifest
    (the CLI takes the patchscope options it used to refuse)."""
    import json

    from test_media_protocols import hub

    rng = np.random.default_rng(1)
    rows = []
    for i, caption in enumerate(["a cat on the mat", "a dog in the park"]):
        Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(tmp_path / f"i{i}.png")
        rows.append(f"i{i}.png,{caption}")
    (tmp_path / "pairs.csv").write_text("media,caption\n" + "\n".join(rows) + "\n")
    prompt, placeholder = TARGETS[0]
    result = hub(
        "analyze", "media-lens", "caption-nouns", tmp_path / "pairs.csv", "--nouns", "content-words", "--model", model_dir("llava"),
        "--out", tmp_path, "--name", "cli", "--no-progress", "--bootstrap", "20", "--lens", "patchscope", "--patch-prompt", prompt, "--patch-placeholder", placeholder,
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert manifest["options"]["lens"] == "patchscope" and manifest["options"]["patch_prompt"] == prompt
    assert manifest["lens"]["patch_placeholder_position"] == 5
    assert manifest["options"]["final_norm"] is True
    assert pl.read_parquet(tmp_path / "cli" / "media_lens_summary.parquet").height > 0
    assert (tmp_path / "cli" / "plots" / "media_lens.png").stat().st_size > 0
    assert "patchscope lens" in (tmp_path / "cli" / "plots" / "media_lens.html").read_text()


def test_large_patchscope_batches_warn_with_their_size(tmp_path, model_dir, monkeypatch):
    """Above ``COPY_WARN_TOKENS`` token positions a batch warns with its rows, width and copies
    (here the threshold is lowered: 2 LLaVA images, 16 positions each, 4 layers, 17 tokens)."""
    import analyses.lenses as lenses
    from analyses.media_runs import MediaLens, MediaLensOptions
    from hubclient.exec.multimodal import encode
    from hubclient.inputs.media import read_pairs
    from hubclient.models import load_model

    model = load_model(str(model_dir("llava")), device="cpu")
    pairs = read_pairs(write_pairs(tmp_path, "image"))[:2]
    tokens, extras = encode(model, ["{media}"] * 2, pairs)
    prompt, placeholder = TARGETS[0]
    analysis = MediaLens(MediaLensOptions(lens="patchscope", patch_prompt=prompt, patch_placeholder=placeholder), [p.caption for p in pairs])
    analysis.prepare(model, ["{media}"] * 2, tokens)
    monkeypatch.setattr(lenses, "COPY_WARN_TOKENS", 130 * 17 - 1)
    with pytest.warns(UserWarning, match=r"130 rows of 17 tokens \(2 prompt\(s\) and 4 layers x 32 positions = 128 target-prompt copies\)"):
        batches = lenses.patch_batches(analysis, model, tokens, 2, extras)
    assert batches[0].input_ids.shape == (130, 17)
    monkeypatch.setattr(lenses, "COPY_WARN_TOKENS", 130 * 17)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lenses.patch_batches(analysis, model, tokens, 2, extras)


def test_max_positions_patchscope_reads_the_sampled_positions(tmp_path, model_dir):
    """``--max-positions 4`` with ``--lens patchscope`` (logit-lens --modality image, tiny LLaVA,
    16 image positions): the stored rows are at the media positions of indexes 0, 5, 10, 15
    (evenly spaced, first and last kept), the batch carries (L+1) × 4 copies per image instead
    of × 16, and the numbers equal the hooked reference there."""
    from analyses.media_runs import MediaLensOptions, run_lens

    folder = model_dir("llava")
    pairs = write_pairs(tmp_path, "image")
    prompt, placeholder = TARGETS[0]
    options = MediaLensOptions(top_k=2, modality="image", lens="patchscope", patch_prompt=prompt, patch_placeholder=placeholder, max_positions=4)
    run = run_lens(pairs, options, None, config(folder, tmp_path, "ps4"))
    ref = Reference(folder, "llava")
    target_ids, ph = ref.target(prompt, placeholder)
    top = run.table("logit_lens")
    for p, path in enumerate(media_files(pairs)):
        states, positions = ref.source_states(ref.encode(path))
        assert len(positions) == 16
        kept = [positions[i] for i in (0, 5, 10, 15)]
        assert top.filter(pl.col("prompt") == p)["position"].unique().sort().to_list() == kept
        for layer in (0, 2):
            for pos in kept:
                probs = ref.patched(target_ids, ph, states[layer, pos], layer)
                rows = top.filter((pl.col("prompt") == p) & (pl.col("position") == pos) & (pl.col("layer") == layer)).sort("rank")
                np.testing.assert_allclose(rows["probability"].to_numpy(), np.sort(probs)[::-1][:2], rtol=1e-4, atol=1e-6)
