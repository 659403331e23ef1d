"""Chameleon (the semantic hub paper's second image model, paper-protocols.md A11/A13/A14/A19)
end to end on a tiny random Chameleon (``tests/chameleon_tiny.py``).

Every number is checked against an independent computation: the plain transformers
``ChameleonForConditionalGeneration`` and ``ChameleonProcessor`` loaded from the same folder,
one prompt at a time (``output_hidden_states=True``, forward hooks on ``model.model.layers``),
and numpy for the lens, the masked softmax and the statistics. Nothing in the reference goes
through hub's accessors or its table of module paths.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from hubclient.runner import RunConfig

Image = pytest.importorskip("PIL.Image", reason="the media extra (Pillow) is not installed")

from chameleon_tiny import BOI, EOI, GRID, IMAGE, N_CODES, N_IMAGE_TOKENS, SEP, SPECIALS, code_token, save_chameleon  # noqa: E402

CAPTIONS = ["the cat sat on the mat", "a dog ran in the park", "red car and the blue sky"]
NOUNS = ["cat;mat", "dog;park", "car;sky"]


@pytest.fixture(scope="module")
def cham_dir(tmp_path_factory):
    return save_chameleon(tmp_path_factory.mktemp("tiny-chameleon"))


@pytest.fixture(scope="module")
def ref(cham_dir):
    return Reference(cham_dir)


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """Three random images of different sizes (the processor resizes and crops them to 32×32)
    with captions and a ``nouns`` column (A13)."""
    folder = tmp_path_factory.mktemp("cham-pairs")
    rng = np.random.default_rng(0)
    rows = []
    for i, (caption, nouns) in enumerate(zip(CAPTIONS, NOUNS)):
        Image.fromarray(rng.integers(0, 256, size=(30 + 9 * i, 40 + 5 * i, 3), dtype=np.uint8)).save(folder / f"m{i}.png")
        rows.append(f"m{i}.png,{caption},{nouns}")
    path = folder / "pairs.csv"
    path.write_text("media,caption,nouns\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def config(folder, tmp_path, name, **kw):
    return RunConfig(model=str(folder), out=tmp_path, name=name, batch_size=2, progress=False, plots=False, device="cpu", dtype="float32", **kw)


class Reference:
    """The plain transformers model and processor of the folder (independent of hub)."""

    def __init__(self, folder):
        import transformers as tf

        self.model = tf.ChameleonForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        self.processor = tf.ChameleonProcessor.from_pretrained(folder)
        self.tok = self.processor.tokenizer
        self.image_id = self.tok.convert_tokens_to_ids(IMAGE)
        self.W_U = self.model.lm_head.weight.detach().double().numpy()
        self.W_E = self.model.model.embed_tokens.weight.detach().double().numpy()
        self.norm_w = self.model.model.norm.weight.detach().double().numpy()
        self.eps = self.model.config.rms_norm_eps
        self.L = len(self.model.model.layers)

    def encode(self, text, image_path):
        image = Image.open(image_path).convert("RGB")
        return self.processor(text=[text], images=[image], return_tensors="pt")

    def states(self, enc):
        """``[L+1, seq, d]`` float64: ``hidden_states[0..L-1]`` of ``output_hidden_states`` and
        the last block's output (before the final norm) from a forward hook."""
        seen = {}
        hook = self.model.model.layers[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("o", o[0] if isinstance(o, tuple) else o))
        try:
            with torch.no_grad():
                out = self.model(**enc, output_hidden_states=True)
        finally:
            hook.remove()
        hidden = list(out.hidden_states[: self.L]) + [seen["o"]]
        return torch.stack([h[0] for h in hidden]).double().numpy()

    def rms(self, h):
        return self.norm_w * h / np.sqrt((h**2).mean(-1, keepdims=True) + self.eps)


def code_ids(ref):
    """The VQ code tokens' ids, from how chameleon_tiny names them (``IMGIMG…``): the tokens
    ``ChameleonForConditionalGeneration.forward`` masks out of its logits."""
    return [ref.tok.convert_tokens_to_ids(code_token(c)) for c in range(N_CODES)]


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_processor_layout_and_image_code_embeddings(ref, pairs_file):
    """The expansion hub relies on: BOI + 16 <image> + EOI + SEP at the end, and the model's
    input embeddings at the <image> positions are W_E rows of the image's VQ code tokens."""
    enc = ref.encode("what is in the image ?\n<image>", pairs_file.parent / "m0.png")
    tokens = ref.tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert tokens[-1] == SEP and tokens[-2] == EOI
    first = tokens.index(BOI) + 1
    assert tokens[first : first + N_IMAGE_TOKENS] == [IMAGE] * N_IMAGE_TOKENS and first + N_IMAGE_TOKENS == len(tokens) - 2
    codes = ref.model.get_image_tokens(enc["pixel_values"])[0].tolist()
    names = ref.tok.convert_ids_to_tokens(codes)
    assert all(n in [code_token(c) for c in range(N_CODES)] for n in names)
    assert len(set(codes)) > 1  # the tiny VQ-VAE gives several codes
    states = ref.states(enc)
    np.testing.assert_allclose(states[0, first : first + N_IMAGE_TOKENS], ref.W_E[codes], rtol=1e-6, atol=1e-6)


def test_hub_loads_chameleon_as_an_image_family(cham_dir):
    from hubclient.exec.multimodal import placeholder
    from hubclient.models import load_model

    model = load_model(str(cham_dir), device="cpu", dtype="float32")
    assert model.arch.family == "chameleon" and model.modality == "image"
    assert model.media_token_id == model.tokenizer.convert_tokens_to_ids(IMAGE)
    assert placeholder(model) == IMAGE
    assert model.n_layers == 3


def test_logit_lens_at_image_positions_equals_independent(tmp_path, cham_dir, ref, pairs_file):
    """``logit-lens --modality image``: the positions are the 16 <image> (VQ code) positions,
    and the top-k and caption-word probabilities there are softmax(W_U · RMSNorm(h_l)) of the
    plain model's hidden states, at every layer."""
    from analyses.media_runs import MediaLensOptions, caption_words, run_lens

    run = run_lens(pairs_file, MediaLensOptions(top_k=3), None, config(cham_dir, tmp_path, "lens"))
    lens = run.table("logit_lens")
    words = run.table("caption_words")
    for p, caption in enumerate(CAPTIONS):
        enc = ref.encode(IMAGE, pairs_file.parent / f"m{p}.png")
        ids = enc["input_ids"][0]
        positions = (ids == ref.image_id).nonzero().flatten().tolist()
        assert len(positions) == N_IMAGE_TOKENS
        states = ref.states(enc)
        mine = lens.filter(pl.col("prompt") == p)
        assert sorted(mine["position"].unique().to_list()) == positions  # not BOI/EOI/SEP
        with torch.no_grad():
            own = torch.log_softmax(ref.model(**enc).logits[0, positions].double(), -1).numpy()  # the model's output
        for layer in range(ref.L + 1):
            z = ref.rms(states[layer, positions]) @ ref.W_U.T  # [positions, vocab]
            z[:, code_ids(ref)] = -np.inf  # as the model's forward: image codes are no text
            lp = log_softmax(z)
            top = np.argsort(-lp, axis=1, kind="stable")[:, :3]
            got = mine.filter(pl.col("layer") == layer).sort("position", "rank")
            np.testing.assert_array_equal(got["token_id"].to_numpy().reshape(-1, 3), top)
            np.testing.assert_allclose(got["probability"].to_numpy().reshape(-1, 3), np.exp(np.take_along_axis(lp, top, 1)), rtol=1e-4, atol=1e-6)
            if layer == ref.L:  # the last layer is the model's own output distribution
                np.testing.assert_allclose(got["probability"].to_numpy().reshape(-1, 3), np.exp(np.take_along_axis(own, top, 1)), rtol=1e-4, atol=1e-6)
                unmasked = log_softmax(ref.rms(states[layer, positions]) @ ref.W_U.T)
                assert np.abs(np.exp(unmasked) - np.exp(own)).max() > 1e-3  # without the mask it would not be
            for word in caption_words(caption):
                token = ref.tok.convert_tokens_to_ids(word)
                if token == ref.tok.unk_token_id:
                    continue
                row = words.filter((pl.col("prompt") == p) & (pl.col("layer") == layer) & (pl.col("word") == word)).sort("position")
                np.testing.assert_allclose(row["probability"].to_numpy(), np.exp(lp[:, token]), rtol=1e-4, atol=1e-7)


def test_similarity_last_is_the_sep_token(tmp_path, cham_dir, ref, pairs_file):
    """A11: ``similarity --modality image`` with the default ``--media-pool last`` takes, on
    Chameleon, the state at the sep token the processor appends (the paper's
    ``hidden_states[:, -1]``), not the last image token; the manifest says ``final``."""
    from analyses.media_runs import run_similarity
    from analyses.similarity import SimilarityOptions

    template = "what is in the image ?\n{media}"
    options = SimilarityOptions(modality="image", media_template=template, bootstrap=20)
    run, _ = run_similarity(pairs_file, options, None, config(cham_dir, tmp_path, "sim"))
    assert run.manifest["options"]["media_pool"] == "last"
    assert run.manifest["media_position"] == "final"
    vectors = run.table("vectors")
    caption_ids = []
    image_vec, caption_vec = {}, {}
    for i in range(3):
        enc = ref.encode(template.replace("{media}", IMAGE), pairs_file.parent / f"m{i}.png")
        ids = enc["input_ids"][0]
        assert ref.tok.convert_ids_to_tokens(int(ids[-1])) == SEP
        states = ref.states(enc)
        last_image = int((ids == ref.image_id).nonzero().flatten()[-1])
        assert last_image == len(ids) - 3  # ... <image> <eoss> <sep>
        for layer in range(ref.L + 1):
            got = np.asarray(vectors.filter((pl.col("language") == "image") & (pl.col("sentence") == i) & (pl.col("layer") == layer))["vector"][0])
            np.testing.assert_allclose(got, states[layer, -1], rtol=1e-4, atol=1e-4)
            if layer > 0:
                assert not np.allclose(got, states[layer, last_image], atol=1e-3)  # the last image token's state is another vector
            image_vec[i, layer] = states[layer, -1]
        cap = ref.tok([CAPTIONS[i]], return_tensors="pt")
        caption_ids.append(cap["input_ids"][0])
        with torch.no_grad():
            out = ref.model(**cap, output_hidden_states=True)
        for layer in range(ref.L):
            caption_vec[i, layer] = out.hidden_states[layer][0, -1].double().numpy()
    table = run.table("similarity").sort("layer")
    for layer in range(ref.L):  # layer L: hub's raw block output, checked above through the vectors
        a = np.stack([image_vec[i, layer] for i in range(3)])
        b = np.stack([caption_vec[i, layer] for i in range(3)])
        s = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
        expected = s.trace() / 3 - (s.sum() - s.trace()) / 6  # Eq. 1
        assert table.filter(pl.col("layer") == layer)["similarity"][0] == pytest.approx(expected, abs=1e-5)


def test_similarity_media_pools_on_chameleon(tmp_path, cham_dir, ref, pairs_file):
    """``--media-pool final`` equals the default on Chameleon; ``mean`` averages the 16 image
    positions (not BOI/EOI/SEP)."""
    from analyses.media_runs import run_similarity
    from analyses.similarity import SimilarityOptions

    got = {}
    for pool in ("final", "mean"):
        run, _ = run_similarity(pairs_file, SimilarityOptions(modality="image", media_pool=pool, bootstrap=20), None, config(cham_dir, tmp_path, pool))
        assert run.manifest["media_position"] == pool
        got[pool] = run.table("vectors").filter((pl.col("language") == "image") & (pl.col("sentence") == 0) & (pl.col("layer") == 2))["vector"][0]
    enc = ref.encode(IMAGE, pairs_file.parent / "m0.png")
    ids = enc["input_ids"][0]
    states = ref.states(enc)
    np.testing.assert_allclose(np.asarray(got["final"]), states[2, -1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got["mean"]), states[2, (ids == ref.image_id).numpy()].mean(0), rtol=1e-4, atol=1e-4)


def _added_ids(ref):
    """The tiny tokenizer's added tokens, written out from how chameleon_tiny builds it: the
    four specials, the image markers, the sep token and every VQ code token."""
    names = list(SPECIALS) + [IMAGE, BOI, EOI, SEP] + [code_token(c) for c in range(N_CODES)]
    return sorted(ref.tok.convert_tokens_to_ids(n) for n in names)


@pytest.mark.parametrize("mask", [None, False])
def test_caption_nouns_masked_softmax_equals_numpy(tmp_path, cham_dir, ref, pairs_file, mask):
    """A13 on Chameleon: by default every added token (image codes included) is out of the
    softmax, renormalised over the rest; ``--no-mask-added-tokens`` keeps the model's own softmax
    (image codes out, as its forward; every other token in).
    The value is ``Σ_k mean_pos P(k) / |keywords| · |nouns|`` at the image positions, with the
    paper's lens (raw layers, the final norm at L)."""
    from analyses.media_runs import MediaProtocolOptions, least_overlap, caption_token_texts, run_media_lens

    template = "what is in the image ?\n{media}"
    options = MediaProtocolOptions(experiment="caption-nouns", media_template=template, bootstrap=20, mask_added=mask)
    run = run_media_lens(options, pairs_file, None, config(cham_dir, tmp_path, f"a13-{mask}"))
    masked = _added_ids(ref)
    if mask is None:
        assert run.manifest["softmax_mask"]["n_ids"] == len(masked)
    else:
        assert run.manifest["softmax_mask"] is None
    table = run.table("media_lens")
    sets = [caption_token_texts(c) for c in CAPTIONS]
    for p in range(3):
        enc = ref.encode(template.replace("{media}", IMAGE), pairs_file.parent / f"m{p}.png")
        ids = enc["input_ids"][0]
        positions = (ids == ref.image_id).nonzero().flatten().tolist()
        states = ref.states(enc)
        nouns = NOUNS[p].split(";")
        base = NOUNS[least_overlap(p, sets)].split(";")
        for layer in range(ref.L + 1):
            h = states[layer, positions]
            z = (ref.rms(h) if layer == ref.L else h) @ ref.W_U.T
            z[:, code_ids(ref)] = -np.inf  # the model's own output mask, always
            if mask is None:
                z[:, masked] = -np.inf
            lp = log_softmax(z)
            for set_name, words in (("matching", nouns), ("baseline", base)):
                toks = [ref.tok.convert_tokens_to_ids(w) for w in words]
                expected = np.exp(lp[:, toks]).mean(axis=0).sum() / len(toks) * len(nouns)
                got = table.filter((pl.col("prompt") == p) & (pl.col("layer") == layer) & (pl.col("set") == set_name))["value"][0]
                assert got == pytest.approx(expected, rel=1e-4), (p, layer, set_name)


def test_masked_softmax_changes_the_number(tmp_path, cham_dir, pairs_file):
    """The mask is not a no-op on this model (so the test above tells the two apart); without
    --media-template the prompt is the released code's Chameleon prompt."""
    from analyses.media_runs import CHAMELEON_TEMPLATES, MediaProtocolOptions, run_media_lens

    values = {}
    for mask in (True, False):
        options = MediaProtocolOptions(experiment="caption-nouns", bootstrap=20, mask_added=mask)
        run = run_media_lens(options, pairs_file, None, config(cham_dir, tmp_path, f"m{mask}"))
        assert run.table("prompts")["text"].to_list() == ["What is in the image?\n{media}"] * 3 == [CHAMELEON_TEMPLATES["caption-nouns"]] * 3
        values[mask] = run.table("media_lens").sort("prompt", "layer", "set")["value"].to_numpy()
    assert np.abs(values[True] - values[False]).max() > 1e-3


def test_segmentation_patch_grid_from_the_chameleon_processor(cham_dir):
    """A14: the patch grid comes from the model's processor: 4×4 patches of 8 pixels on the tiny
    model, and 32×32 patches of 16 pixels with chameleon-7b's image processor settings (shortest
    edge 512, centre crop 512), row-major."""
    import transformers as tf

    from analyses.media_runs import patch_masks

    processor = tf.ChameleonProcessor.from_pretrained(cham_dir)
    ids = np.zeros((32, 32), dtype=np.int64)
    ids[0:8, 8:16] = 7  # row 0, column 1 of the 4×4 grid
    [(name, patches)] = patch_masks(ids, {7: "dog"}, processor, GRID * GRID)
    assert name == "dog" and patches.nonzero()[0].tolist() == [1]

    class Real:
        image_processor = tf.ChameleonImageProcessor()  # chameleon-7b's defaults

    big = np.zeros((512, 512), dtype=np.int64)
    big[16:32, 48:64] = 3  # patch row 1, column 3 of 32
    [(_, patches)] = patch_masks(big, {3: "cat"}, Real, 1024)
    assert patches.shape == (1024,) and patches.nonzero()[0].tolist() == [1 * 32 + 3]


def test_colour_edit_on_chameleon_equals_hooked_generate(tmp_path, cham_dir, ref):
    """A19 on Chameleon with the default prompt (the paper's, sep appended): the half's image
    positions are replaced by W_U[new] − W_U[old] at layers s..L in the prompt pass; the
    greedy tokens equal the plain model's ``generate`` with forward hooks doing the same, and
    the edit changes the prompt's next-token logits."""
    from analyses.media_steer import PAPER_TEMPLATE, ColourEditOptions, run_colour_edit
    from hubclient.inputs.media import read_pairs, write_two_colours

    cases = read_pairs(write_two_colours(tmp_path / "cases", size=32))
    chosen = [cases[0], cases[1]]
    assert {c.extra["side"] for c in chosen} == {"top", "bottom"}
    start, n_new = 2, 4
    run = run_colour_edit(ColourEditOptions(starts=str(start), max_new_tokens=n_new), chosen, config(cham_dir, tmp_path, "edit"))
    assert run.manifest["options"]["template"] == PAPER_TEMPLATE
    gen = run.table("generations")
    prompt = PAPER_TEMPLATE.replace("{media}", IMAGE)
    changed = False
    for case, pair in enumerate(chosen):
        enc = ref.encode(prompt, pair.media)
        ids = enc["input_ids"][0]
        assert ref.tok.convert_ids_to_tokens(int(ids[-1])) == SEP
        image = (ids == ref.image_id).nonzero().flatten().tolist()
        assert len(image) == N_IMAGE_TOKENS
        cols = image[: N_IMAGE_TOKENS // 2] if pair.extra["side"] == "top" else image[N_IMAGE_TOKENS // 2 :]
        W = ref.model.lm_head.weight.detach()
        vec = W[ref.tok.convert_tokens_to_ids(pair.extra["new"])] - W[ref.tok.convert_tokens_to_ids(pair.extra["old"])]

        def hook(module, args, out):
            hidden = out[0] if isinstance(out, tuple) else out
            if hidden.shape[1] > 1:  # the prompt's pass only
                hidden[:, cols, :] = vec
            return out

        results = {}
        for edited in (False, True):
            handles = [ref.model.model.layers[l - 1].register_forward_hook(hook) for l in range(start, ref.L + 1)] if edited else []
            try:
                with torch.no_grad():
                    logits = ref.model(**enc).logits[0, -1]
                    out = ref.model.generate(**enc, max_new_tokens=n_new, do_sample=False, pad_token_id=ref.tok.pad_token_id)
            finally:
                for h in handles:
                    h.remove()
            new = []
            for t in out[0, len(ids):].tolist():
                if t == ref.tok.eos_token_id:
                    break
                new.append(t)
            results[edited] = (logits, new)
        changed |= not torch.allclose(results[True][0], results[False][0], atol=1e-4)
        row = gen.filter((pl.col("case") == case) & (pl.col("start_layer") == start))
        assert row["token_ids"][0].to_list() == results[True][1]
        base = gen.filter((pl.col("case") == case) & pl.col("start_layer").is_null())
        assert base["token_ids"][0].to_list() == results[False][1]
    assert changed


def test_colour_edit_default_prompt_is_per_family():
    from analyses.media_steer import DEFAULT_TEMPLATE, PAPER_TEMPLATE, default_template

    assert default_template("chameleon") == PAPER_TEMPLATE == "What are the two colors in the image?\n{media}"
    assert default_template("llava") == DEFAULT_TEMPLATE



def _hooked_logits(ref, enc, cols, start, vec):
    """Last-position logits ``[vocab]`` of the plain model with the replacement at the output of
    blocks ``start..L`` (1-based hub layers; ``start`` None: no edit)."""

    def hook(module, args, out):
        hidden = out[0] if isinstance(out, tuple) else out
        hidden[:, cols, :] = vec
        return out

    handles = [] if start is None else [ref.model.model.layers[l - 1].register_forward_hook(hook) for l in range(start, ref.L + 1)]
    try:
        with torch.no_grad():
            return ref.model(**enc).logits[0, -1].float()
    finally:
        for h in handles:
            h.remove()


def test_colour_edit_replacement_logits_on_chameleon(tmp_path, cham_dir, ref):
    """The edit hub sends on Chameleon (:class:`ColourEdit` batches through
    :func:`apply_replacements`) gives the hooked forward's next-token logits at the sep
    position; the other half, the opposite sign or one layer fewer would not."""
    from analyses.media_steer import PAPER_TEMPLATE, ColourEdit, ColourEditOptions
    from hubclient.exec.edits import apply_replacements
    from hubclient.exec.multimodal import encode
    from hubclient.inputs.media import read_pairs, write_two_colours
    from hubclient.models import load_model

    model = load_model(str(cham_dir), device="cpu", dtype="float32")
    cases = read_pairs(write_two_colours(tmp_path / "cases", size=32))
    chosen = [cases[0], cases[1]]
    analysis = ColourEdit(ColourEditOptions(starts="1,2", template=PAPER_TEMPLATE), chosen)
    prompts = [PAPER_TEMPLATE] * 2
    tokens, _ = encode(model, prompts, chosen)
    analysis.prepare(model, prompts, tokens)
    analysis.setup(model, None)
    [batch] = analysis.make_batches(model, tokens, batch_size=6)
    with torch.no_grad():
        with model.lm.trace(batch.inputs):
            apply_replacements(model, batch.meta["replace_order"], batch.meta["replace"])
            logits = model.lm.output.logits[:, -1, :].save()
    logits = logits.float()
    W = ref.model.lm_head.weight.detach()
    for row, (case, start) in enumerate(batch.meta["rows"]):
        c = chosen[case].extra
        enc = ref.encode(PAPER_TEMPLATE.replace("{media}", IMAGE), chosen[case].media)
        image = (enc["input_ids"][0] == ref.image_id).nonzero().flatten().tolist()
        halves = {"top": image[: len(image) // 2], "bottom": image[len(image) // 2 :]}
        assert analysis.halves[case] == halves[c["side"]] and len(image) == N_IMAGE_TOKENS
        vec = W[ref.tok.convert_tokens_to_ids(c["new"])] - W[ref.tok.convert_tokens_to_ids(c["old"])]
        expected = _hooked_logits(ref, enc, halves[c["side"]], start, vec)
        finite = expected > torch.finfo(expected.dtype).min  # the model masks the image-code logits
        torch.testing.assert_close(logits[row][finite], expected[finite], rtol=1e-4, atol=1e-4)
        if start is not None:
            other = "bottom" if c["side"] == "top" else "top"
            for wrong in (
                _hooked_logits(ref, enc, halves[other], start, vec),
                _hooked_logits(ref, enc, halves[c["side"]], start, -vec),
                _hooked_logits(ref, enc, halves[c["side"]], start + 1, vec),
                _hooked_logits(ref, enc, halves[c["side"]], None, vec),
            ):
                assert (wrong - expected)[finite].abs().max() > 1e-2


@pytest.fixture(scope="module")
def cham_server(cham_dir):
    """The strict NDIF test server (hub not importable in its worker) serving the tiny Chameleon."""
    from test_remote import ServerProcess

    srv = ServerProcess([str(cham_dir)])
    yield srv
    srv.stop()


def test_remote_equals_local_on_chameleon(tmp_path, monkeypatch, cham_dir, cham_server, pairs_file):
    """``--remote``: A11 (the sep position) and A13 (the masked softmax) traced on the strict
    test server give tables equal to local runs."""
    import nnsight
    from typer.testing import CliRunner

    from hubclient import remote
    from hubclient.cli import app
    from test_remote import KEY

    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", KEY)
    monkeypatch.setattr(remote.config, "POLL_INTERVAL", 0.05)
    far = ["--remote", "--ndif-host", cham_server.url, "--timeout", "120", "--transfer-dtype", "float32"]
    runs = {
        "similarity": (["analyze", "similarity", "--modality", "image", pairs_file], ("similarity", "vectors")),
        "nouns": (["analyze", "media-lens", "caption-nouns", pairs_file], ("media_lens", "media_lens_summary")),
    }
    for name, (args, tables) in runs.items():
        for where, extra in (("local", []), ("remote", far)):
            common = ["--model", cham_dir, "--out", tmp_path, "--name", f"{name}-{where}", "--no-progress", "--no-plots", "--batch-size", "2"]
            result = CliRunner().invoke(app, [str(a) for a in args + common + extra])
            assert result.exit_code == 0, result.output
        for table in tables:
            got = pl.read_parquet(tmp_path / f"{name}-remote" / f"{table}.parquet")
            assert got.equals(pl.read_parquet(tmp_path / f"{name}-local" / f"{table}.parquet")), (name, table)


def test_cli_defaults_per_family(tmp_path, cham_dir, pairs_file):
    """The CLI: ``--no-mask-added-tokens`` turns A13's mask off (manifest ``softmax_mask`` null);
    ``steer --task colour-edit`` without ``--media-template`` uses the paper's prompt on
    Chameleon and the LLaVA-1.5 format on LLaVA."""
    import json

    from typer.testing import CliRunner

    from analyses.media_steer import DEFAULT_TEMPLATE, PAPER_TEMPLATE
    from hubclient.cli import app
    from media_tiny import save_media_model

    def hub(*args):
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / args[args.index("--name") + 1] / "manifest.json").read_text())

    common = ["--out", tmp_path, "--no-progress", "--no-plots", "--device", "cpu", "--dtype", "float32"]
    manifest = hub("analyze", "media-lens", "caption-nouns", pairs_file, "--model", cham_dir, "--no-mask-added-tokens", "--name", "nomask", *common)
    assert manifest["softmax_mask"] is None and manifest["options"]["mask_added"] is False
    llava = save_media_model("llava", tmp_path / "llava")
    for folder, expected in ((cham_dir, PAPER_TEMPLATE), (llava, DEFAULT_TEMPLATE)):
        name = f"edit-{folder.name}"
        manifest = hub("intervene", "steer", "--task", "colour-edit", "--model", folder, "--n", "1", "--layer", "3", "--max-new-tokens", "2", "--name", name, *common)
        assert manifest["options"]["template"] == expected
