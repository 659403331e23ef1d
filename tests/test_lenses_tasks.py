"""``--lens tuned|patchscope`` on task-lens, code-lens, arithmetic-lens and media-lens
(docs/lenses.md) against independent computations.

The reference is plain transformers: ``output_hidden_states=True`` gives ``h_l`` (layers
``0..L-1``; layer ``L`` is the model's own output), the tuned lens is ``h + h A_l^T + b_l``
(numpy, float64) through the model's own final-norm module and ``W_U``; the patchscope is a
separate forward of the target prompt with a torch hook that writes the source state over the
placeholder (:func:`test_lenses._hooked_patchscope`). The tiny model's word-level vocabulary
holds every word under test (digits, number words, ``and``/``or``/``not``, the target prompt).

What would make these fail: a lens that is built but not passed to the trace (the logit lens
comes out: the numbers differ below layer ``L``), translators applied at the wrong layer or
transposed, the final norm skipped with the tuned lens, patchscope copies read at the wrong
rows, a lens missing from the manifest, or a remote trace that cannot ship the lens.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from analyses.arithmetic_lens import ArithmeticLensOptions, run_arithmetic_lens
from analyses.code_lens import run_site_lens
from analyses.task_lens import run_task_lens
from hubclient.cli.commands import app
from hubclient.inputs.tasks import TaskOptions, arithmetic, code, lens_items
from hubclient.runner import RunConfig
from hubclient.science import tuned_lens as tl
from hubclient.science.patchscope import target_tokens

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_model_for, word_tokenizer  # noqa: E402
from test_code_lens import AND_PROGRAM, _mbpp  # noqa: E402
from test_lenses import _hooked_patchscope, _source_states  # noqa: E402
from test_tasks import group_token_ids  # noqa: E402

runner = CliRunner()
#: A short target prompt whose placeholder precedes the read position.
PATCH = {"patch_prompt": "cat -> cat ; hello -> hello ; ? ->", "patch_placeholder": "?"}
TASK = TaskOptions(task="arithmetic", n=4, max_operand=4, operators="+-", data_seed=1)


# --------------------------------------------------------------------------- the tiny model
@pytest.fixture(scope="module")
def parts():
    """(hf_model, tokenizer): a tiny Llama whose vocabulary covers the arithmetic task's
    prompts and number words, the paper's arithmetic items, an MBPP program and the target prompt."""

    texts = [AND_PROGRAM, PATCH["patch_prompt"]]
    texts += [t for e in arithmetic.generate(None, max_operand=4, operators="+-", seed=0) for t in (e.digits, e.words)]
    texts += [i.lens_prompt for i in arithmetic.paper_items()]
    words = ["and", "or", "not", "plus", "minus", "equals"] + [arithmetic.number_words(v) for v in range(21)]
    words += [arithmetic.paper_number_words(v) for v in range(10)]
    tokenizer = word_tokenizer(texts, extra=words)
    return tiny_model_for(tokenizer, seed=2, max_positions=256)


@pytest.fixture(scope="module")
def tiny(parts):
    from hubclient.models import wrap_model

    return wrap_model(*parts, model_id="tiny-lens-tasks")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, parts):
    folder = tmp_path_factory.mktemp("tiny-lens-tasks")
    parts[0].save_pretrained(folder)
    parts[1].save_pretrained(folder)
    return folder


def random_translators(d_model, n_layers, seed=1, scale=0.5):
    """Non-identity translators ``A_l``, ``b_l`` (the tuned lens' parameters)."""
    torch.manual_seed(seed)
    translators = tl.make_translators(d_model, n_layers)
    with torch.no_grad():
        for layer in translators:
            layer.weight.normal_(0, scale / d_model**0.5)
            layer.bias.normal_(0, scale)
    return translators


@pytest.fixture(scope="module")
def lens_folder(tmp_path_factory, tiny):
    """(folder, translators) of a random tuned lens saved for the tiny model."""
    translators = random_translators(int(tiny.describe()["d_model"]), tiny.n_layers)
    folder = tl.save_lens(tmp_path_factory.mktemp("lens") / "lens", translators, tl.model_config(tiny))
    return str(folder), translators


def _log_softmax(logits):
    top = logits.max(-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))


def tuned_reference(model, text, translators):
    """``[L+1, seq, vocab]`` tuned-lens log-probabilities of one unpadded text (float64 numpy):
    ``log_softmax(W_U · norm(h + h A^T + b))`` on transformers' hidden states, layer ``L`` the
    model's own logits; and the text's token ids."""
    hf = model.torch_model
    ids = model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = hf(**ids, output_hidden_states=True)
    w_u = hf.lm_head.weight.detach().double().numpy()
    norm = hf.model.norm
    layers = []
    for layer in range(model.n_layers):
        h = out.hidden_states[layer][0].double().numpy()
        a = translators[layer].weight.detach().double().numpy()
        b = translators[layer].bias.detach().double().numpy()
        translated = torch.from_numpy(h + h @ a.T + b)
        with torch.no_grad():
            normed = norm.double()(translated).numpy()
        norm.float()
        layers.append(normed @ w_u.T)
    layers.append(out.logits[0].double().numpy())
    return _log_softmax(np.stack(layers)), ids["input_ids"][0].tolist()


def patchscope_reference(model, text, position, patch_prompt, placeholder):
    """``[L+1, vocab]`` patchscope log-probabilities of ``text``'s state at ``position``: per
    layer, a hooked forward of the target prompt (:func:`test_lenses._hooked_patchscope`)."""
    target_ids, ph = target_tokens(model.tokenizer, patch_prompt, placeholder)
    states = _source_states(model, text)
    out = []
    for layer in range(model.n_layers + 1):
        out.append(np.log(_hooked_patchscope(model, target_ids, ph, states[layer, position], layer)))
    return np.stack(out)


def config(tmp_path, name, **kw):
    return RunConfig(out=tmp_path, name=name, progress=False, batch_size=3, **kw)


# --------------------------------------------------------------------------- task-lens

def test_task_lens_tuned_equals_numpy(tmp_path, tiny, lens_folder):
    """Every probe's group probabilities (sum and max over the group's tokens) are the tuned
    lens' at the probed token, every layer."""
    folder, translators = lens_folder
    items = lens_items(TASK)
    run = run_task_lens(TASK, True, config(tmp_path, "t", plots=False), model=tiny, lens={"lens": "tuned", "tuned_lens": folder})
    assert run.manifest["options"]["lens"] == "tuned" and run.manifest["lens"]["lens"] == "tuned"
    table = run.table("task_lens")
    checked = 0
    for i, item in enumerate(items):
        logp, _ = tuned_reference(tiny, item.text, translators)
        rows = table.filter(pl.col("prompt") == i)
        for k, probe in enumerate(item.probes):
            probe_rows = rows.filter(pl.col("probe") == k)
            position = probe_rows["position"][0]
            for group, words in probe.groups.items():
                got = probe_rows.filter(pl.col("group") == group).sort("layer")
                probs = np.exp(logp[:, position, group_token_ids(tiny.tokenizer, words)])
                np.testing.assert_allclose(got["probability"].to_numpy(), probs.sum(-1), rtol=2e-4, atol=1e-9)
                np.testing.assert_allclose(got["max_probability"].to_numpy(), probs.max(-1), rtol=2e-4, atol=1e-9)
                checked += 1
    assert checked == table.select("prompt", "probe", "group").unique().height > 0


def test_task_lens_patchscope_equals_hooked_forward(tmp_path, tiny):
    """With --lens patchscope the group probabilities are the target prompt's next-token
    distribution with the probe's state patched in at the same layer."""
    options = TaskOptions(task="arithmetic", n=2, max_operand=4, operators="+", data_seed=1)
    items = lens_items(options)
    run = run_task_lens(options, True, config(tmp_path, "p", plots=False), model=tiny, lens={"lens": "patchscope", **PATCH})
    assert run.manifest["lens"]["patch_placeholder_position"] == target_tokens(tiny.tokenizer, PATCH["patch_prompt"], "?")[1]
    table = run.table("task_lens")
    for i, item in enumerate(items):
        rows = table.filter(pl.col("prompt") == i)
        for k, probe in enumerate(item.probes):
            probe_rows = rows.filter(pl.col("probe") == k)
            logp = patchscope_reference(tiny, item.text, probe_rows["position"][0], PATCH["patch_prompt"], "?")
            for group, words in probe.groups.items():
                got = probe_rows.filter(pl.col("group") == group).sort("layer")
                probs = np.exp(logp[:, group_token_ids(tiny.tokenizer, words)])
                np.testing.assert_allclose(got["probability"].to_numpy(), probs.sum(-1), rtol=2e-4, atol=1e-9)


# --------------------------------------------------------------------------- code-lens
def test_code_lens_tuned_equals_numpy(tmp_path, tiny, lens_folder):
    """A7 (' and' at list commas) through the tuned lens: log p of and/or/not and the true next
    token at every comma and layer."""
    folder, translators = lens_folder
    path = _mbpp(tmp_path, [AND_PROGRAM])
    run = run_site_lens(TaskOptions(task="code", mbpp=str(path)), True, config(tmp_path, "c"), model=tiny, lens={"lens": "tuned", "tuned_lens": folder})
    assert run.manifest["options"]["lens"] == "tuned" and run.manifest["lens"]["tuned_lens"] == "lens"
    table = run.table("code_lens")
    logp, ids = tuned_reference(tiny, AND_PROGRAM, translators)
    tok = tiny.tokenizer
    assert table["site"].n_unique() == len(code.and_sites(AND_PROGRAM)) == 5
    for (site,), rows in table.sort("layer").group_by("site", maintain_order=True):
        position = rows["position"][0]
        for name in ("and", "or", "not"):
            np.testing.assert_allclose(rows[f"logp_{name}"].to_numpy(), logp[:, position, tok.convert_tokens_to_ids(name)], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(rows["logp_next"].to_numpy(), logp[:, position, ids[position + 1]], rtol=1e-4, atol=1e-4)
    assert (run.path / "plots" / "code_and.png").is_file()


def test_code_lens_patchscope_runs(tmp_path, tiny):
    """Smoke: the patchscope gives finite log-probabilities, other than the logit lens'."""
    path = _mbpp(tmp_path, [AND_PROGRAM])
    options = TaskOptions(task="code", mbpp=str(path))
    patch = run_site_lens(options, True, config(tmp_path, "p", plots=False), model=tiny, lens={"lens": "patchscope", **PATCH}).table("code_lens")
    logit = run_site_lens(options, True, config(tmp_path, "l", plots=False), model=tiny).table("code_lens")
    assert patch.height == logit.height > 0 and np.isfinite(patch["logp_and"].to_numpy()).all()
    assert np.abs(patch["logp_and"].to_numpy() - logit["logp_and"].to_numpy()).max() > 1e-2


# --------------------------------------------------------------------------- arithmetic-lens
def _arith_ids(tok, item):
    return tok.convert_tokens_to_ids(str(item.target)), tok.convert_tokens_to_ids(arithmetic.paper_number_words(item.target))


def test_arithmetic_lens_tuned_equals_numpy(tmp_path, tiny, lens_folder):
    """A5 ('8=5+': log p of the digit and of the English word at the last token) through the
    tuned lens; the summary is the mean of those over items."""
    folder, translators = lens_folder
    options = ArithmeticLensOptions(n=6, data_seed=3, final_norm=True, lens="tuned", tuned_lens=folder, bootstrap=50)
    items = arithmetic.sample_paper_items(arithmetic.paper_items(), 6, seed=3)
    run = run_arithmetic_lens(options, config(tmp_path, "a"), model=tiny)
    table = run.table("arithmetic_lens")
    per_item = []
    for p, item in enumerate(items):
        logp, _ = tuned_reference(tiny, item.lens_prompt, translators)
        digit, word = _arith_ids(tiny.tokenizer, item)
        rows = table.filter(pl.col("prompt") == p).sort("layer")
        np.testing.assert_allclose(rows.filter(pl.col("form") == "number")["logprob"].to_numpy(), logp[:, -1, digit], rtol=1e-4, atol=2e-4)
        np.testing.assert_allclose(rows.filter(pl.col("form") == "text")["logprob"].to_numpy(), logp[:, -1, word], rtol=1e-4, atol=2e-4)
        per_item.append(logp[:, -1, word])
    text = run.table("arithmetic_lens_summary").filter(pl.col("form") == "text").sort("layer")["mean"].to_numpy()
    np.testing.assert_allclose(text, np.mean(per_item, axis=0), atol=2e-4)
    assert run.manifest["lens"]["tuned_lens_unembed_hash"] == tl.model_config(tiny).unembed_hash
    assert (run.path / "plots" / "arithmetic_lens.png").is_file()


def test_arithmetic_lens_patchscope_equals_hooked_forward(tmp_path, tiny):
    options = ArithmeticLensOptions(n=3, data_seed=4, final_norm=True, lens="patchscope", bootstrap=20, **PATCH)
    items = arithmetic.sample_paper_items(arithmetic.paper_items(), 3, seed=4)
    table = run_arithmetic_lens(options, config(tmp_path, "p", plots=False), model=tiny).table("arithmetic_lens")
    for p, item in enumerate(items):
        n_tokens = len(tiny.tokenizer(item.lens_prompt)["input_ids"])
        logp = patchscope_reference(tiny, item.lens_prompt, n_tokens - 1, PATCH["patch_prompt"], "?")
        digit, word = _arith_ids(tiny.tokenizer, item)
        rows = table.filter(pl.col("prompt") == p).sort("layer")
        np.testing.assert_allclose(rows.filter(pl.col("form") == "number")["logprob"].to_numpy(), logp[:, digit], rtol=1e-4, atol=2e-4)
        np.testing.assert_allclose(rows.filter(pl.col("form") == "text")["logprob"].to_numpy(), logp[:, word], rtol=1e-4, atol=2e-4)


# --------------------------------------------------------------------------- the lens is used
def _runs(tmp_path, tiny, lens):
    """Task, code and arithmetic lens tables, ``(name, table, value column)``, with ``lens``."""
    path = _mbpp(tmp_path, [AND_PROGRAM])
    task = run_task_lens(TASK, True, config(tmp_path, f"t-{lens.get('lens', 'logit')}", plots=False), model=tiny, lens=lens).table("task_lens")
    site = run_site_lens(TaskOptions(task="code", mbpp=str(path)), True, config(tmp_path, f"c-{lens.get('lens', 'logit')}", plots=False), model=tiny, lens=lens).table("code_lens")
    arith = run_arithmetic_lens(ArithmeticLensOptions(n=4, final_norm=True, bootstrap=10, **lens), config(tmp_path, f"a-{lens.get('lens', 'logit')}", plots=False), model=tiny).table("arithmetic_lens")
    return [("task_lens", task, "probability"), ("code_lens", site, "logp_and"), ("arithmetic_lens", arith, "logprob")]


def test_tuned_lens_is_not_ignored(tmp_path, tiny, lens_folder):
    """The tuned lens changes every analysis below layer L and leaves layer L (no translator
    there; the model's own output) as the logit lens with the final norm gives it."""
    tuned = _runs(tmp_path, tiny, {"lens": "tuned", "tuned_lens": lens_folder[0]})
    logit = _runs(tmp_path, tiny, {})
    for (name, t, column), (_, base, _) in zip(tuned, logit):
        assert t.height == base.height > 0, name
        top = (t["layer"] == tiny.n_layers).to_numpy()
        np.testing.assert_allclose(t[column].to_numpy()[top], base[column].to_numpy()[top], rtol=1e-5, atol=1e-7, err_msg=name)
        assert np.abs(t[column].to_numpy()[~top] - base[column].to_numpy()[~top]).max() > 1e-3, name


# --------------------------------------------------------------------------- CLI and errors
def _hub(*args):
    return runner.invoke(app, ["analyze", *[str(a) for a in args], "--no-progress"])


def test_cli_lens_on_each_command(tmp_path, tiny_folder, lens_folder):
    """task-lens, logit-lens --task, code-lens and arithmetic-lens take --lens; the paper's
    default --final-norm last becomes on for the tuned lens; the lens is in the manifest and
    the plot titles say which lens."""
    from analyses.arithmetic_lens import ArithmeticLens
    from hubclient.run.folder import RunDir

    mbpp = _mbpp(tmp_path, [AND_PROGRAM])
    tuned = ("--lens", "tuned", "--tuned-lens", lens_folder[0])
    runs = {
        "task": ("task-lens", "--n", 2, "--max-operand", 4, "--operators", "+"),
        "ll": ("logit-lens", "--task", "arithmetic", "--n", 2, "--max-operand", 4, "--operators", "+"),
        "code": ("code-lens", "--task", "code", "--mbpp", mbpp),
        "arith": ("arithmetic-lens", "--n", 3, "--bootstrap", 10),
    }
    for name, args in runs.items():
        result = _hub(*args, *tuned, "--model", tiny_folder, "--out", tmp_path, "--name", name, "--no-plots")
        assert result.exit_code == 0, (name, result.output)
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifest["options"]["lens"] == "tuned" and manifest["lens"]["lens"] == "tuned", name
        assert manifest["options"]["final_norm"] is True, name
    chart = ArithmeticLens.plots(RunDir(tmp_path / "arith"))["arithmetic_lens"].to_dict()
    assert "Arithmetic tuned lens" in json.dumps(chart)


@pytest.mark.parametrize("args,fragment", [
    (("arithmetic-lens", "--n", 3, "--lens", "tuned", "--tuned-lens", "{lens}", "--final-norm", "last"), "--final-norm last applies to the logit lens only"),
    (("code-lens", "--task", "code", "--lens", "tuned"), "--tuned-lens PATH"),
    (("task-lens", "--patch-prompt", "a ? b"), "are for --lens patchscope"),
])
def test_cli_bad_lens_options_fail_before_the_model(tmp_path, lens_folder, args, fragment):
    args = [str(a).replace("{lens}", lens_folder[0]) for a in args]
    result = _hub(*args, "--model", tmp_path / "no-such-model", "--out", tmp_path)
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert not any(tmp_path.glob("*/manifest.json"))


# --------------------------------------------------------------------------- media-lens (LLaVA)
def test_media_lens_tuned_equals_independent(tmp_path, tmp_path_factory):
    """A13 (caption nouns) through the tuned lens on a tiny LLaVA: the per-image alignment from
    transformers' hidden states at the image positions, translated, normed and unembedded."""
    pytest.importorskip("soundfile", reason="the media extra (soundfile) is not installed")
    image = pytest.importorskip("PIL.Image", reason="the media extra (Pillow) is not installed")
    import transformers as tf
    from media_tiny import save_media_model

    from analyses.media_runs import PAPER_TEMPLATES, MediaProtocolOptions, run_media_lens

    folder = save_media_model("llava", tmp_path_factory.mktemp("llava"))
    hf = tf.AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    processor = tf.AutoProcessor.from_pretrained(folder)
    lm = hf.model.language_model
    n_layers, d = len(lm.layers), hf.config.text_config.hidden_size
    translators = random_translators(d, n_layers, seed=5)
    from hubclient.models import load_model

    lens = tl.save_lens(tmp_path / "lens", translators, tl.model_config(load_model(str(folder), device="cpu")))
    rng = np.random.default_rng(3)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"img{i}.png")
        image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(paths[-1])
    captions = [("the cat sat on the mat", "cat;mat"), ("a dog ran in the park", "dog;park"), ("a man and a dog", "man;dog")]
    (tmp_path / "pairs.csv").write_text("media,caption,nouns\n" + "".join(f"{p.name},{c},{n}\n" for p, (c, n) in zip(paths, captions)))
    options = MediaProtocolOptions(experiment="caption-nouns", bootstrap=20, final_norm=True, lens="tuned", tuned_lens=str(lens))
    run = run_media_lens(options, tmp_path / "pairs.csv", None, RunConfig(model=str(folder), out=tmp_path, name="m", batch_size=2, progress=False, plots=False))
    assert run.manifest["options"]["lens"] == "tuned" and run.manifest["lens"]["lens"] == "tuned"
    baselines = run.table("prompts")["baseline"].to_list()
    vocab = processor.tokenizer.get_vocab()
    text = PAPER_TEMPLATES["caption-nouns"].replace("{media}", "<image>")
    w_u = hf.get_output_embeddings().weight.detach().double()
    table = run.table("media_lens").filter(pl.col("set") == "matching").sort("prompt", "layer")
    # logit-lens --modality image with the tuned lens, the same prompt: every caption word's probability
    from analyses.media_runs import MediaLensOptions, run_lens

    words = run_lens(
        tmp_path / "pairs.csv", MediaLensOptions(top_k=2, modality="image", media_template=PAPER_TEMPLATES["caption-nouns"], lens="tuned", tuned_lens=str(lens)),
        None, RunConfig(model=str(folder), out=tmp_path, name="w", batch_size=2, progress=False, plots=False),
    ).table("caption_words")
    for i, path in enumerate(paths):
        enc = processor(text=[text], images=[image.open(path).convert("RGB")], return_tensors="pt")
        with torch.no_grad():
            out = hf(**enc, output_hidden_states=True)
        positions = (enc["input_ids"][0] == hf.config.image_token_id).nonzero().flatten()
        layers = []
        for layer in range(n_layers):
            h = out.hidden_states[layer][0, positions].double()
            with torch.no_grad():
                h = h + h @ translators[layer].weight.double().T + translators[layer].bias.double()
                layers.append(lm.norm.double()(h) @ w_u.T)
            lm.norm.float()
        layers.append(out.logits[0, positions].double())
        probs = torch.softmax(torch.stack(layers), dim=-1).numpy()  # [L+1, positions, vocab]
        nouns = captions[i][1].split(";")
        expected = probs[:, :, [vocab[k] for k in nouns]].mean(axis=1).sum(axis=1)  # / |keywords| * |nouns| = 1
        np.testing.assert_allclose(table.filter(pl.col("prompt") == i)["value"].to_numpy(), expected, rtol=1e-4)
        mine = words.filter(pl.col("prompt") == i)
        assert mine.height > 0
        at = {int(p): k for k, p in enumerate(positions)}
        for row in mine.iter_rows(named=True):
            assert row["probability"] == pytest.approx(probs[row["layer"], at[row["position"]], row["token_id"]], rel=1e-4, abs=1e-8)
    assert len(baselines) == 3


# --------------------------------------------------------------------------- remote (strict test server)
def test_task_and_arithmetic_lens_remote_equal_local(tmp_path, tiny_folder, lens_folder):
    """The tuned task lens and the patchscope arithmetic lens through --remote (the strict NDIF
    test server: hub is not importable there) give the local tables."""
    from test_remote import ServerProcess

    runs = {
        "task": ("logit-lens", "--task", "arithmetic", "--n", 3, "--max-operand", 4, "--operators", "+-", "--lens", "tuned", "--tuned-lens", lens_folder[0]),
        "arith": ("arithmetic-lens", "--n", 4, "--bootstrap", 10, "--lens", "patchscope", "--patch-prompt", PATCH["patch_prompt"]),
    }
    tables = {"task": ("task_lens", "task_lens_summary"), "arith": ("arithmetic_lens", "arithmetic_lens_summary")}
    srv = ServerProcess([str(tiny_folder)], key=None)
    try:
        for name, args in runs.items():
            remote = _hub(*args, "--model", tiny_folder, "--out", tmp_path, "--no-plots", "--name", f"{name}-remote", "--remote", "--ndif-host", srv.url, "--timeout", "60")
            assert remote.exit_code == 0, remote.output
    finally:
        srv.stop()
    for name, args in runs.items():
        local = _hub(*args, "--model", tiny_folder, "--out", tmp_path, "--no-plots", "--name", f"{name}-local")
        assert local.exit_code == 0, local.output
        for table in tables[name]:
            there = pl.read_parquet(tmp_path / f"{name}-remote" / f"{table}.parquet")
            here = pl.read_parquet(tmp_path / f"{name}-local" / f"{table}.parquet")
            assert there.height > 0 and there.equals(here), (name, table)
        manifest = json.loads((tmp_path / f"{name}-remote" / "manifest.json").read_text())
        assert manifest["remote"]["requests"] and manifest["options"]["lens"] in ("tuned", "patchscope")
