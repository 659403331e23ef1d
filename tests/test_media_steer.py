"""The vision intervention (paper-protocols.md A19: ``hub intervene steer --task colour-edit``) on
a tiny random LLaVA whose vocabulary holds the colour words.

The reference is independent of hub: the plain transformers model loaded from the same folder,
one case at a time, ``generate`` (greedy) with forward hooks on the language model's decoder
layers that set the layer's output at the chosen image positions to ``W_U[new] − W_U[old]``
(read from ``get_output_embeddings().weight``) in the prompt's forward pass only (pyvene
``VanillaIntervention`` at ``block_output`` of 0-based layers ``s−1..L−1``, ``intervene_on_prompt``).
"""

from __future__ import annotations

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from hubclient.errors import HubError
from hubclient.runner import RunConfig

pytest.importorskip("soundfile", reason="the media extra (soundfile) is not installed")
Image = pytest.importorskip("PIL.Image", reason="the media extra (Pillow) is not installed")

from media_tiny import save_media_model  # noqa: E402

TEMPLATE = "USER: {media} ASSISTANT:"
cli = CliRunner()


PLACEHOLDER = {"llava": "<image>", "gemma3": "<start_of_image>"}


@pytest.fixture(scope="module")
def media_dirs(tmp_path_factory):
    cache = {}

    def make(family):
        if family not in cache:
            cache[family] = save_media_model(family, tmp_path_factory.mktemp(f"steer-{family}"))
        return cache[family]

    return make


@pytest.fixture(scope="module")
def llava_dir(media_dirs):
    return media_dirs("llava")


@pytest.fixture(scope="module")
def cases_file(tmp_path_factory):
    from hubclient.inputs.media import write_two_colours

    return write_two_colours(tmp_path_factory.mktemp("two-colours"), size=32)


def _replacement_setup(folder, family, image_path, half, new, old, sign):
    """The plain HF model of ``folder``, the processor inputs of the colour-edit prompt with the
    image, the decoder layers, the image positions of ``half`` ("top" / "bottom": first / second
    half) and the vector ``sign · (W_U[new] − W_U[old])`` (first tokens)."""
    import transformers as tf

    model = tf.AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    processor = tf.AutoProcessor.from_pretrained(folder)
    tok = processor.tokenizer
    enc = processor(text=[TEMPLATE.replace("{media}", PLACEHOLDER[family])], images=[Image.open(image_path).convert("RGB")], return_tensors="pt")
    image_id = getattr(model.config, "image_token_id", None) or model.config.image_token_index
    image = (enc["input_ids"][0] == image_id).nonzero().flatten().tolist()
    cols = image[: len(image) // 2] if half == "top" else image[len(image) // 2 :]
    W = model.get_output_embeddings().weight.detach()
    vec = sign * (W[tok(new, add_special_tokens=False)["input_ids"][0]] - W[tok(old, add_special_tokens=False)["input_ids"][0]])
    return model, tok, enc, model.model.language_model.layers, cols, vec


def reference_logits(folder, family, image_path, half, start, new, old, sign=1.0):
    """Last-position logits ``[vocab]`` of the plain HF forward with the replacement hooks at
    hub layers ``start..L`` (``start`` None: none)."""
    model, _, enc, layers, cols, vec = _replacement_setup(folder, family, image_path, half, new, old, sign)
    handles = []

    def hook(mod, args, out):
        hidden = out[0] if isinstance(out, tuple) else out
        hidden[:, cols, :] = vec
        return out

    if start is not None:
        for layer in range(start, len(layers) + 1):
            handles.append(layers[layer - 1].register_forward_hook(hook))
    try:
        with torch.no_grad():
            return model(**enc).logits[0, -1].float()
    finally:
        for h in handles:
            h.remove()


def reference(folder, image_path, positions_half, start, new, old, sign=1.0, n_new=5, family="llava"):
    """Generated ids of the plain HF model with the replacement hooks (``start`` None: no edit).

    ``positions_half``: "top" / "bottom" (first / second half of the image positions)."""
    model, tok, enc, layers, cols, vec = _replacement_setup(folder, family, image_path, positions_half, new, old, sign)
    ids = enc["input_ids"][0]
    handles = []

    def hook(mod, args, out):
        hidden = out[0] if isinstance(out, tuple) else out
        if hidden.shape[1] > 1:  # the prompt's forward pass only
            hidden[:, cols, :] = vec
        return out

    if start is not None:
        for layer in range(start, len(layers) + 1):  # hub layer l = output of block l = layers[l-1]
            handles.append(layers[layer - 1].register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=n_new, do_sample=False, pad_token_id=tok.pad_token_id)
    finally:
        for h in handles:
            h.remove()
    new_ids = []
    for t in out[0, ids.shape[0]:].tolist():
        if t == tok.eos_token_id:
            break
        new_ids.append(t)
    return new_ids


def test_two_colour_writer(tmp_path):
    from hubclient.inputs.media import read_pairs, two_colour_cases, write_two_colours

    cases = two_colour_cases()
    assert len(cases) == 48
    assert len({tuple(c.values()) for c in cases}) == 48
    for c in cases:
        assert c["top"] != c["bottom"] and c["new"] not in (c["top"], c["bottom"])
        assert c["old"] == c[c["side"]]
    path = write_two_colours(tmp_path, size=8)
    pairs = read_pairs(path)
    assert len(pairs) == 48 and len({p.media for p in pairs}) == 12
    rgb = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "black": (0, 0, 0)}
    for p in pairs:
        img = Image.open(p.media).convert("RGB")
        assert img.size == (8, 8)
        assert img.getpixel((5, 0)) == rgb[p.extra["top"]] and img.getpixel((5, 3)) == rgb[p.extra["top"]]
        assert img.getpixel((0, 4)) == rgb[p.extra["bottom"]] and img.getpixel((7, 7)) == rgb[p.extra["bottom"]]
        assert p.caption == f"{p.extra['top']} and {p.extra['bottom']}"


def test_two_colour_cli(tmp_path):
    from hubclient.cli import app

    result = cli.invoke(app, ["media", "two-colours", str(tmp_path / "tc"), "--size", "16"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "tc" / "two-colours.csv").read_text().splitlines()) == 49
    assert len(list((tmp_path / "tc").glob("two-*.png"))) == 12
    result = cli.invoke(app, ["media", "two-colours", str(tmp_path / "odd"), "--size", "15"])
    assert result.exit_code != 0 and "even size" in result.output


def test_parse_rule():
    from analyses.media_steer import is_correct, parse_colours

    assert parse_colours("Red and blue.") == {"red", "blue"}
    assert is_correct(" green and blue. The top", old="red", new="green")
    assert not is_correct(" red and green.", old="red", new="green")  # old still named
    assert not is_correct(" blue and black.", old="red", new="green")  # new not named
    assert not is_correct(" green and blue? yes", old="red", new="green")  # a second '?'
    assert not is_correct(" green and blue, blue and black.", old="red", new="green")  # two distinct pairs
    assert is_correct(" green and blue. red and black", old="red", new="green")  # after the first '.' is ignored


@pytest.mark.parametrize("family", ["llava", "gemma3"])
def test_colour_edit_matches_hooked_generate(family, media_dirs, cases_file, tmp_path):
    from analyses.media_steer import ColourEditOptions, run_colour_edit
    from hubclient.inputs.media import read_pairs

    folder = media_dirs(family)
    pairs = read_pairs(cases_file)
    chosen = [pairs[0], pairs[1], pairs[7]]  # top and bottom side of one image, another image
    assert {p.extra["side"] for p in chosen} == {"top", "bottom"}
    options = ColourEditOptions(starts="1,2", max_new_tokens=5, template=TEMPLATE)
    config = RunConfig(model=str(folder), out=tmp_path, name="ce", batch_size=4, progress=False, plots=True)
    run = run_colour_edit(options, chosen, config)
    gen = run.table("generations")
    assert gen.height == 3 * 3  # cases × (unedited, start 1, start 2)
    differs = {"half": 0, "range": 0, "sign": 0}
    for r in gen.iter_rows(named=True):
        p = chosen[r["case"]]
        c = p.extra
        expected = reference(folder, p.media, c["side"], r["start_layer"], c["new"], c["old"], family=family)
        assert r["token_ids"] == expected, (r["case"], r["start_layer"])
        if r["start_layer"] is not None:
            other = "bottom" if c["side"] == "top" else "top"
            differs["half"] += reference(folder, p.media, other, r["start_layer"], c["new"], c["old"], family=family) != expected
            differs["sign"] += reference(folder, p.media, c["side"], r["start_layer"], c["new"], c["old"], sign=-1.0, family=family) != expected
            if r["start_layer"] == 1:  # off by one (pyvene i read as hub i): layers 2..L
                differs["range"] += reference(folder, p.media, c["side"], 2, c["new"], c["old"], family=family) != expected
    if family == "llava":  # the tiny Gemma 3 greedily emits <unk> whatever the edit: see the logits test
        # the test can tell a wrong half, sign or layer range from the right one
        assert all(v > 0 for v in differs.values()), differs
    rates = run.table("success_rates")
    assert rates["n"].to_list() == [3, 3, 3]
    assert rates["start_layer"].to_list() == [None, 1, 2]
    for r in rates.iter_rows(named=True):
        assert r["lo"] <= r["rate"] <= r["hi"]
        assert r["correct"] == gen.filter(pl.col("start_layer").eq_missing(r["start_layer"]))["correct"].sum()
    assert (run.path / "plots" / "colour_edit.html").is_file()


@pytest.mark.parametrize("family", ["llava", "gemma3"])
def test_replacement_logits(family, media_dirs, cases_file):
    """The replacement edit hub sends (:func:`apply_replacements` on the batches of
    :class:`ColourEdit`) gives the hooked HF forward's logits, and a wrong half, sign or layer
    range would not."""
    from analyses.media_steer import ColourEdit, ColourEditOptions
    from hubclient.exec.edits import apply_replacements
    from hubclient.exec.multimodal import encode
    from hubclient.inputs.media import read_pairs
    from hubclient.models import load_model

    folder = media_dirs(family)
    model = load_model(str(folder), device="cpu", dtype="float32")
    pairs = read_pairs(cases_file)
    chosen = [pairs[0], pairs[1]]  # the top and the bottom side of red/green, new blue
    analysis = ColourEdit(ColourEditOptions(starts="1,2", template=TEMPLATE), chosen)
    prompts = [TEMPLATE] * len(chosen)
    tokens, _ = encode(model, prompts, chosen)
    analysis.prepare(model, prompts, tokens)
    analysis.setup(model, None)
    batches = analysis.make_batches(model, tokens, batch_size=6)
    assert len(batches) == 1 and batches[0].meta["rows"] == [(0, None), (0, 1), (0, 2), (1, None), (1, 1), (1, 2)]
    batch = batches[0]
    with torch.no_grad():
        with model.lm.trace(batch.inputs):
            apply_replacements(model, batch.meta["replace_order"], batch.meta["replace"])
            logits = model.lm.output.logits[:, -1, :].save()
    logits = logits.float()
    for row, (case, start) in enumerate(batch.meta["rows"]):
        c = chosen[case].extra
        expected = reference_logits(folder, family, chosen[case].media, c["side"], start, c["new"], c["old"])
        torch.testing.assert_close(logits[row], expected, rtol=1e-4, atol=1e-4)
        if start is not None:
            other = "bottom" if c["side"] == "top" else "top"
            wrong = [
                reference_logits(folder, family, chosen[case].media, other, start, c["new"], c["old"]),
                reference_logits(folder, family, chosen[case].media, c["side"], start, c["new"], c["old"], sign=-1.0),
                reference_logits(folder, family, chosen[case].media, c["side"], start + 1, c["new"], c["old"]),
                reference_logits(folder, family, chosen[case].media, c["side"], None, c["new"], c["old"]),
            ]
            for other_logits in wrong:
                assert (other_logits - expected).abs().max() > 1e-2


def test_bad_inputs_fail_before_loading(tmp_path, cases_file):
    from analyses.cli import steer
    from hubclient.cli import app
    from hubclient.cli.commands import intervene_app  # noqa: F401

    bad = tmp_path / "bad.csv"
    bad.write_text(f"media,caption,top,bottom,side,old,new\n{cases_file.parent / 'two-red-green.png'},x,red,green,left,red,blue\n")
    missing = tmp_path / "missing.csv"
    missing.write_text(f"media,caption\n{cases_file.parent / 'two-red-green.png'},x\n")
    wrong_old = tmp_path / "old.csv"
    wrong_old.write_text(f"media,caption,top,bottom,side,old,new\n{cases_file.parent / 'two-red-green.png'},x,red,green,top,green,blue\n")
    model = str(tmp_path / "no-such-model")  # never loaded: every error comes first
    for pairs_file, message in ((bad, "side must be top or bottom"), (missing, "missing top, bottom, side, old, new"), (wrong_old, "is not the top colour")):
        with pytest.raises(HubError, match=message):
            steer.colour_edit(pairs_file, TEMPLATE, None, None, None, RunConfig(model=model, out=tmp_path))
    with pytest.raises(HubError, match="exactly once"):
        steer.colour_edit(bad, "no slot", None, None, None, RunConfig(model=model, out=tmp_path))
    with pytest.raises(HubError, match="--n must be"):
        steer.colour_edit(cases_file, TEMPLATE, None, None, 0, RunConfig(model=model, out=tmp_path))
    result = cli.invoke(app, ["intervene", "steer", "--task", "colour-edit", "--vector", "unembed:a,b", "--model", model, "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--vector" in result.output
    del steer


def test_text_only_model_refused(tiny_dir, cases_file, tmp_path):
    from analyses.media_steer import ColourEditOptions, run_colour_edit
    from hubclient.inputs.media import read_pairs

    config = RunConfig(model=str(tiny_dir()), out=tmp_path, name="t", progress=False, plots=False)
    with pytest.raises(HubError, match="text only"):
        run_colour_edit(ColourEditOptions(template=TEMPLATE), read_pairs(cases_file, 1), config)


def test_layer_zero_refused(llava_dir, cases_file, tmp_path):
    from analyses.media_steer import ColourEditOptions, run_colour_edit
    from hubclient.inputs.media import read_pairs

    config = RunConfig(model=str(llava_dir), out=tmp_path, name="z", progress=False, plots=False)
    with pytest.raises(HubError, match="embeddings"):
        run_colour_edit(ColourEditOptions(starts="0,1", template=TEMPLATE), read_pairs(cases_file, 1), config)


def test_colour_edit_remote_equals_local(llava_dir, cases_file, tmp_path, monkeypatch):
    """The strict NDIF test server (hub not importable there) runs the same replacement edits:
    the generations equal a local run's; the W_U rows are read by the server too."""
    import nnsight

    from analyses.media_steer import ColourEditOptions, run_colour_edit
    from hubclient import remote
    from hubclient.inputs.media import read_pairs
    from test_remote import KEY, ServerProcess

    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", KEY)
    monkeypatch.setattr(nnsight.CONFIG.API, "HOST", nnsight.CONFIG.API.HOST)
    monkeypatch.setattr(remote.config, "POLL_INTERVAL", 0.05)
    srv = ServerProcess([str(llava_dir)])
    try:
        pairs = read_pairs(cases_file, 2)
        options = ColourEditOptions(starts="1,2", max_new_tokens=4, template=TEMPLATE)
        local = run_colour_edit(options, pairs, RunConfig(model=str(llava_dir), out=tmp_path, name="local", batch_size=3, progress=False, plots=False))
        far = run_colour_edit(options, pairs, RunConfig(model=str(llava_dir), out=tmp_path, name="remote", batch_size=3, progress=False, plots=False,
                                                      remote=True, ndif_host=srv.url, timeout=120))
    finally:
        srv.stop()
    for table in ("generations", "success_rates"):
        assert far.table(table).equals(local.table(table)), table
    gen = local.table("generations")
    assert gen["edited"].sum() == 4
    unedited = {r["case"]: r["token_ids"] for r in gen.filter(~pl.col("edited")).iter_rows(named=True)}
    assert any(r["token_ids"] != unedited[r["case"]] for r in gen.filter(pl.col("edited")).iter_rows(named=True))  # the edit acts
    block = far.manifest["remote"]
    assert block["requests"] and all(r["state"] == "collected" for r in block["requests"])
