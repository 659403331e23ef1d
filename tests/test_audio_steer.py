"""The audio intervention (paper-protocols.md A20: ``hub intervene steer --task animal-class``) on
a tiny random Qwen2-Audio whose vocabulary holds the animal words and Yes/No.

The reference is independent of hub: the plain transformers model loaded from the same folder,
one clip at a time, the processor on the same wav, a forward hook on
``model.model.language_model.layers[l-1]`` (hub layer ``l`` = output of block ``l``) that adds
``s · (W_U[new] − W_U[old])`` (rows of ``get_output_embeddings().weight``, first token of each
word) at the positions whose id is ``config.audio_token_index``, then numpy softmax of the
logits at the last position and ``P(Yes)/(P(Yes)+P(No))``.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from hubclient.errors import HubError
from hubclient.runner import RunConfig

soundfile = pytest.importorskip("soundfile", reason="the media extra (soundfile) is not installed")

from media_tiny import SAMPLING_RATE, save_media_model  # noqa: E402

TEMPLATE = "USER: {media} Is this animal a mammal ? ASSISTANT:"
PLACEHOLDER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
#: (label, seconds); the third row is not an animal label and is skipped.
CLIPS = [("dog barking", 0.5), ("owl hooting", 0.8), ("car engine knocking", 0.4), ("cat meowing", 0.6), ("duck quacking", 0.7)]
cli = CliRunner()


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    return save_media_model("qwen2_audio", tmp_path_factory.mktemp("audio-steer"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(3)
    rows = []
    for i, (label, seconds) in enumerate(CLIPS):
        t = np.arange(int(SAMPLING_RATE * seconds)) / SAMPLING_RATE
        soundfile.write(str(folder / f"c{i}.wav"), 0.3 * np.sin(2 * np.pi * (180 + 110 * i) * t) + 0.05 * rng.standard_normal(t.size), SAMPLING_RATE)
        rows.append(f'c{i}.wav,"{label}"')
    path = folder / "audio.csv"
    path.write_text("media,caption\n" + "\n".join(rows) + "\n")
    return path


class Reference:
    """The plain HF model with an additive forward hook (see the module docstring)."""

    def __init__(self, folder):
        import transformers as tf

        self.model = tf.Qwen2AudioForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        self.processor = tf.AutoProcessor.from_pretrained(folder)
        self.tok = self.processor.tokenizer
        self.W = self.model.get_output_embeddings().weight.detach()
        self.layers = self.model.model.language_model.layers

    def first(self, word):
        return self.tok(word, add_special_tokens=False)["input_ids"][0]

    def p_yes_norm(self, wav, layer=None, strength=0.0, new=None, old=None, sign=1.0, shift=0, readout=-1):
        """Normalised P(Yes) at position ``readout``, with the vector added at hub layer
        ``layer`` (None: no edit) at the audio positions shifted by ``shift``."""
        data, rate = soundfile.read(str(wav), dtype="float32")
        assert rate == SAMPLING_RATE
        enc = self.processor(text=[TEMPLATE.replace("{media}", PLACEHOLDER)], audio=[data], sampling_rate=SAMPLING_RATE, return_tensors="pt")
        audio = (enc["input_ids"][0] == self.model.config.audio_token_index).nonzero().flatten() + shift
        handles = []
        if layer is not None:
            vec = sign * strength * (self.W[self.first(new)] - self.W[self.first(old)])

            def hook(mod, args, out):
                hidden = out[0] if isinstance(out, tuple) else out
                hidden[:, audio, :] += vec
                return out

            handles.append(self.layers[layer - 1].register_forward_hook(hook))
        try:
            with torch.no_grad():
                logits = self.model(**enc).logits[0, readout].double().numpy()
        finally:
            for h in handles:
                h.remove()
        p = np.exp(logits - logits.max())
        p /= p.sum()
        yes, no = p[self.first("Yes")], p[self.first("No")]
        return yes / (yes + no)


@pytest.fixture(scope="module")
def reference(audio_dir):
    return Reference(audio_dir)


def hub(*args):
    from hubclient.cli import app

    result = cli.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_words_and_draws():
    from analyses.audio_steer import ANIMAL_LABELS, MAMMAL_WORDS, MAMMALS, NON_MAMMAL_WORDS, default_layer, draw_new_words

    assert len(ANIMAL_LABELS) == 56 and len(MAMMALS) == 24 and MAMMALS <= set(ANIMAL_LABELS.values())
    assert len(MAMMAL_WORDS) + len(NON_MAMMAL_WORDS) == len(set(ANIMAL_LABELS.values())) == 44 and len(NON_MAMMAL_WORDS) == 20
    assert ANIMAL_LABELS["bird chirping, tweeting"] == "bird" and "bird" in NON_MAMMAL_WORDS and "dog" in MAMMAL_WORDS
    animals = ["dog", "owl", "cat"]
    draws = draw_new_words(animals, [10.0, 20.0, 30.0], seed=5)
    rng = np.random.default_rng(5)  # the stated rule: clips in order, strengths in order, sorted other-class words
    for animal, row in zip(animals, draws):
        pool = sorted(set(ANIMAL_LABELS.values()) - MAMMALS) if animal in MAMMALS else sorted(MAMMALS)
        assert row == [pool[rng.integers(len(pool))] for _ in range(3)]
        assert all((w in MAMMALS) != (animal in MAMMALS) for w in row)
    assert [default_layer(n) for n in (40, 32, 3, 1)] == [14, 11, 1, 1]


def test_animal_class_matches_hooked_forward(audio_dir, clips, reference, tmp_path):
    out = tmp_path / "runs"
    result = hub("intervene", "steer", "--task", "animal-class", "--pairs", clips, "--model", audio_dir, "--layer", "2", "--coeff", "1,4",
                 "--seed", "3", "--media-template", TEMPLATE, "--batch-size", "2", "--out", out, "--name", "a", "--no-progress")
    assert "4 animal clips" in result.output and "1 of its 5 rows skipped" in result.output
    run = out / "a"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["layer"] == 2 and manifest["skipped_non_animal_rows"] == 1 and manifest["clips"] == 4
    scores = pl.read_parquet(run / "scores.parquet")
    assert scores.height == 4 * 3 and scores["label"].unique().sort().to_list() == ["cat meowing", "dog barking", "duck quacking", "owl hooting"]
    wavs = {f"c{i}.wav": clips.parent / f"c{i}.wav" for i in range(len(CLIPS))}
    differs = {"sign": 0, "layer_up": 0, "layer_down": 0, "positions": 0, "readout": 0, "baseline": 0}
    for r in scores.iter_rows(named=True):
        wav = wavs[r["media"]]
        assert r["p_yes_norm"] == pytest.approx(r["p_yes"] / (r["p_yes"] + r["p_no"]))
        if r["strength"] is None:
            expected = reference.p_yes_norm(wav)
            assert r["p_yes_norm"] == pytest.approx(expected, abs=1e-5)
            continue
        kw = dict(strength=r["strength"], new=r["new"], old=r["animal"])
        expected = reference.p_yes_norm(wav, layer=2, **kw)
        assert r["p_yes_norm"] == pytest.approx(expected, abs=1e-5), r
        wrong = {
            "sign": reference.p_yes_norm(wav, layer=2, sign=-1.0, **kw),  # new and old swapped
            "layer_up": reference.p_yes_norm(wav, layer=3, **kw),  # one block late (pyvene 13 read as hub 13+2)
            "layer_down": reference.p_yes_norm(wav, layer=1, **kw),  # one block early (pyvene 13 read as hub 13)
            "positions": reference.p_yes_norm(wav, layer=2, shift=-1, **kw),  # one position early
            "readout": reference.p_yes_norm(wav, layer=2, readout=-2, **kw),  # the position before the last
            "baseline": reference.p_yes_norm(wav),
        }
        for name, value in wrong.items():
            differs[name] += abs(value - expected) > 1e-3
    assert all(v > 0 for v in differs.values()), differs  # the test tells each wrong variant from the right one
    # new words: the seeded draw over the other class
    from analyses.audio_steer import MAMMALS, draw_new_words

    steered = scores.filter(pl.col("strength").is_not_null()).sort("clip", "strength")
    animals = ["dog", "owl", "cat", "duck"]
    draws = draw_new_words(animals, [1.0, 4.0], seed=3)
    assert steered["new"].to_list() == [w for row in draws for w in row]
    assert all((n in MAMMALS) != (a in MAMMALS) for n, a in zip(steered["new"], steered["animal"]))
    # per clip × strength and per class × strength
    per_clip = pl.read_parquet(run / "clip_strengths.parquet")
    assert per_clip.height == 4 * 2
    base = {r["clip"]: r["p_yes_norm"] for r in scores.filter(pl.col("strength").is_null()).iter_rows(named=True)}
    for r in per_clip.iter_rows(named=True):
        assert r["baseline"] == base[r["clip"]]
        assert r["change"] == pytest.approx(r["steered"] - r["baseline"])
    summary = pl.read_parquet(run / "class_strengths.parquet")
    assert summary.select("class", "strength").rows() == [("mammal", 0.0), ("mammal", 1.0), ("mammal", 4.0),
                                                          ("non-mammal", 0.0), ("non-mammal", 1.0), ("non-mammal", 4.0)]
    for r in summary.iter_rows(named=True):
        part = scores.filter((pl.col("class") == r["class"]) & (pl.col("strength").is_null() if r["strength"] == 0 else pl.col("strength") == r["strength"]))
        assert r["n"] == 2 and r["mean"] == pytest.approx(float(np.mean(part["p_yes_norm"].to_numpy())))
        assert r["ci_low"] <= r["mean"] + 1e-12 and r["mean"] <= r["ci_high"] + 1e-12
    assert (run / "plots" / "animal_class.html").is_file()


def test_default_layer_and_n(audio_dir, clips, reference, tmp_path):
    from analyses.audio_steer import AnimalClassOptions, run_animal_class
    from hubclient.inputs.media import read_pairs

    config = RunConfig(model=str(audio_dir), out=tmp_path, name="d", batch_size=8, progress=False, plots=False)
    run = run_animal_class(AnimalClassOptions(strengths="2", template=TEMPLATE), read_pairs(clips), config, n=2)
    assert run.manifest["layer"] == 1  # floor(14·3/40 + 0.5)
    scores = run.table("scores")
    assert scores["label"].unique().sort().to_list() == ["dog barking", "owl hooting"]  # the first two animal clips
    r = scores.filter(pl.col("strength").is_not_null()).row(0, named=True)
    wav = clips.parent / r["media"]
    assert r["p_yes_norm"] == pytest.approx(reference.p_yes_norm(wav, layer=1, strength=2.0, new=r["new"], old=r["animal"]), abs=1e-5)


def test_bad_inputs_fail_before_loading(tmp_path, clips):
    from analyses.audio_steer import first_token
    from analyses.cli import steer

    none = tmp_path / "none.csv"
    none.write_text(f"media,caption\n{clips.parent / 'c2.wav'},car engine knocking\n")
    model = str(tmp_path / "no-such-model")  # never loaded: every error comes first
    config = RunConfig(model=model, out=tmp_path)
    with pytest.raises(HubError, match="56 VGGSound animal labels"):
        steer.animal_class(none, TEMPLATE, None, None, None, 0, config)
    with pytest.raises(HubError, match="needs --pairs"):
        steer.animal_class(None, TEMPLATE, None, None, None, 0, config)
    with pytest.raises(HubError, match="exactly once"):
        steer.animal_class(clips, "no slot", None, None, None, 0, config)
    with pytest.raises(HubError, match="one hub layer"):
        steer.animal_class(clips, TEMPLATE, "1,2", None, None, 0, config)
    with pytest.raises(HubError, match="embeddings"):
        steer.animal_class(clips, TEMPLATE, "0", None, None, 0, config)
    with pytest.raises(HubError, match="--coeff"):
        steer.animal_class(clips, TEMPLATE, None, "ten", None, 0, config)
    with pytest.raises(HubError, match="--n must be"):
        steer.animal_class(clips, TEMPLATE, None, None, 0, 0, config)
    from hubclient.cli import app

    for extra in (["--vector", "unembed:a,b"], ["--max-new-tokens", "3"], ["--prompt", "hi"]):
        result = cli.invoke(app, ["intervene", "steer", "--task", "animal-class", "--pairs", str(clips), *extra, "--model", model, "--out", str(tmp_path)])
        assert result.exit_code != 0 and extra[0] in result.output, result.output

    from media_tiny import build_media_tokenizer

    words = build_media_tokenizer()  # word level: "Yes" and "No" are words of it, "Nope" is not
    with pytest.raises(HubError, match="needs one token each"):
        first_token(words, "Yes No", single=True)
    with pytest.raises(HubError, match="not in this model's vocabulary"):
        first_token(words, "Nope")
    assert first_token(words, "Yes", single=True) == words.convert_tokens_to_ids("Yes")


def test_word_initial_and_chat_spellings_of_the_tokens():
    """On a byte-level BPE tokenizer (Qwen2's kind: no automatic word-initial space), the default
    ``ASSISTANT:`` prompt reads ``ĠYes``/``ĠNo`` and edits with ``Ġfox`` (the paper's Llama
    ``▁Yes``/``▁fox``), a ``chat:`` template reads the bare ``Yes``/``No``: a readout or edit
    that took ``tokenizer(word)[0]`` on this tokenizer would pick the bare tokens and fail."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from analyses.audio_steer import DEFAULT_TEMPLATE, first_token, readout_spelling

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(["Yes No fox dog. Yes, No, fox, dog:\nYes\nNo\nfox"] * 50, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core)
    ids = {piece: tok.convert_tokens_to_ids(piece) for piece in ("Yes", "ĠYes", "No", "ĠNo", "fox", "Ġfox")}
    assert len(set(ids.values())) == 6 and None not in ids.values()
    spaced = readout_spelling(DEFAULT_TEMPLATE)
    chat = readout_spelling("chat:{media}Is this animal a mammal?")
    assert (spaced, chat) == ("space+written", "written")
    assert first_token(tok, "Yes", single=True, spelling=spaced) == ids["ĠYes"]
    assert first_token(tok, "No", single=True, spelling=spaced) == ids["ĠNo"]
    assert first_token(tok, "Yes", single=True, spelling=chat) == ids["Yes"]
    assert first_token(tok, "fox") == ids["Ġfox"]


def test_text_only_model_refused(tiny_dir, clips, tmp_path):
    from analyses.audio_steer import AnimalClassOptions, run_animal_class
    from hubclient.inputs.media import read_pairs

    config = RunConfig(model=str(tiny_dir()), out=tmp_path, name="t", progress=False, plots=False)
    with pytest.raises(HubError, match="text only"):
        run_animal_class(AnimalClassOptions(template=TEMPLATE), read_pairs(clips), config)
    assert not (tmp_path / "t").exists()


def test_animal_class_remote_equals_local(audio_dir, clips, tmp_path, monkeypatch):
    """The strict NDIF test server (hub not importable there) runs the same additions and
    readout: the tables equal a local run's; the W_U rows are read by the server too."""
    import nnsight

    from analyses.audio_steer import AnimalClassOptions, run_animal_class
    from hubclient import remote
    from hubclient.inputs.media import read_pairs
    from test_remote import KEY, ServerProcess

    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", KEY)
    monkeypatch.setattr(nnsight.CONFIG.API, "HOST", nnsight.CONFIG.API.HOST)
    monkeypatch.setattr(remote.config, "POLL_INTERVAL", 0.05)
    srv = ServerProcess([str(audio_dir)])
    try:
        options = AnimalClassOptions(layer=2, strengths="1,4", seed=1, template=TEMPLATE)
        pairs = read_pairs(clips)
        local = run_animal_class(options, pairs, RunConfig(model=str(audio_dir), out=tmp_path, name="local", batch_size=2, progress=False, plots=False), n=3)
        far = run_animal_class(options, pairs, RunConfig(model=str(audio_dir), out=tmp_path, name="remote", batch_size=2, progress=False, plots=False,
                                                         remote=True, ndif_host=srv.url, timeout=120), n=3)
    finally:
        srv.stop()
    for table in ("scores", "clip_strengths", "class_strengths"):
        got, want = far.table(table), local.table(table)
        assert got.columns == want.columns and got.height == want.height, table
        for column in want.columns:
            if want[column].dtype == pl.Float64:
                np.testing.assert_allclose(got[column].to_numpy(), want[column].to_numpy(), rtol=1e-6, atol=1e-7, err_msg=f"{table}.{column}")
            else:
                assert got[column].to_list() == want[column].to_list(), (table, column)
    steered = local.table("clip_strengths")
    assert (steered["change"].abs() > 1e-4).any()  # the edit acts
    block = far.manifest["remote"]
    assert block["requests"] and all(r["state"] == "collected" for r in block["requests"])
