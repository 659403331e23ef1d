"""`hub analyze logit-lens`, `hub plot`, `hub runs` end to end through Typer's runner."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from hubclient.cli import app

runner = CliRunner()


def hub(*args):
    return runner.invoke(app, [str(a) for a in args])


def lens(model_dir, out, *args):
    return hub("analyze", "logit-lens", "--model", model_dir, "--out", out, "--no-progress", *args)


def test_logit_lens_end_to_end(tmp_path, tiny_dir):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat sat on the mat\nparis\none two three\n", encoding="utf-8")
    result = lens(tiny_dir("llama"), tmp_path / "out", "--prompts", prompts, "--positions", "all", "--top-k", "3", "--target", "cat", "--name", "r1")
    assert result.exit_code == 0, result.output
    run = tmp_path / "out" / "r1"
    for name in ("logit_lens.parquet", "targets.parquet", "prompts.parquet", "manifest.json",
                 "plots/lens_heatmap.html", "plots/lens_heatmap.png", "plots/target_probability.html", "plots/target_probability.png"):
        assert (run / name).is_file(), name
    assert not (run / ".parts").exists()
    table = pl.read_parquet(run / "logit_lens.parquet")
    assert table.columns == ["prompt", "position", "input_token", "layer", "rank", "token_id", "token", "probability", "logit", "entropy"]
    assert dict(zip(table.columns, table.dtypes))["layer"] == pl.Int32
    n_tokens = [7, 2, 4]  # BOS + words
    layers = 3 + 1
    assert table.height == sum(n_tokens) * layers * 3
    assert sorted(table["layer"].unique().to_list()) == list(range(layers))
    # probabilities of the top-k are sorted and below 1; ranks are 1..k
    top = table.group_by("prompt", "position", "layer").agg(pl.col("probability").sum(), pl.col("rank").max())
    assert (top["probability"] <= 1.0 + 1e-6).all() and (top["rank"] == 3).all()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["analysis"] == "logit-lens"
    assert manifest["options"]["targets"] == ["cat"]
    assert manifest["input_sha256"] and manifest["versions"]["nnsight"] and manifest["versions"]["torch"]
    assert manifest["layer_convention"].startswith("layer 0 = embeddings")
    assert set(manifest["timings"]) == {"load_and_prepare", "batches", "tables", "plots"}
    prompts_table = pl.read_parquet(run / "prompts.parquet")
    assert prompts_table["text"].to_list() == ["the cat sat on the mat", "paris", "one two three"]
    assert prompts_table["n_tokens"].to_list() == n_tokens
    # the terminal summary: per prompt the top-1 token at layers 0, 1, 2, 3 and where 'cat' peaks
    summary = result.output[result.output.index("top-1 token by layer"):].splitlines()
    assert len(summary) == 1 + 2 * 3
    last = table.filter((pl.col("prompt") == 1) & (pl.col("position") == 1) & (pl.col("rank") == 1)).sort("layer")
    assert summary[3] == "  prompt 1 @ 'paris': " + " · ".join(f"L{i} {t!r}" for i, t in enumerate(last["token"]))
    targets = pl.read_parquet(run / "targets.parquet").filter((pl.col("prompt") == 1) & (pl.col("position") == 1))
    peak = targets.row(int(targets["probability"].arg_max()), named=True)
    assert summary[4] == f"    'cat' peaks at layer {peak['layer']} (p={peak['probability']:.3f})"


def test_jsonl_csv_parquet_columns(tmp_path, tiny_dir):
    rows = [{"sentence": "the cat sat"}, {"sentence": "paris"}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    pl.DataFrame(rows).write_csv(tmp_path / "p.csv")
    pl.DataFrame(rows).write_parquet(tmp_path / "p.parquet")
    for suffix in ("jsonl", "csv", "parquet"):
        result = lens(tiny_dir("gpt2"), tmp_path / "out", "--prompts", tmp_path / f"p.{suffix}", "--column", "sentence", "--name", suffix)
        assert result.exit_code == 0, result.output
        texts = pl.read_parquet(tmp_path / "out" / suffix / "prompts.parquet")["text"].to_list()
        assert texts == ["the cat sat", "paris"]


def test_no_plots_skips_drawing_until_hub_plot(tmp_path, tiny_dir):
    assert lens(tiny_dir("llama"), tmp_path, "-p", "the cat", "--no-plots", "--name", "np").exit_code == 0
    assert not (tmp_path / "np" / "plots").exists()
    assert json.loads((tmp_path / "np" / "manifest.json").read_text())["plots"] == []
    assert hub("plot", tmp_path / "np").exit_code == 0
    assert (tmp_path / "np" / "plots" / "lens_heatmap.png").is_file()


def test_plot_redraws_from_parquet_and_runs_lists(tmp_path, tiny_dir):
    assert lens(tiny_dir("llama"), tmp_path, "-p", "the cat", "-p", "paris", "--name", "r").exit_code == 0
    png = tmp_path / "r" / "plots" / "lens_heatmap.png"
    png.unlink()
    result = hub("plot", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    listing = hub("runs", "--out", tmp_path)
    assert listing.exit_code == 0 and "logit-lens" in listing.output and "complete" in listing.output


def _assert_error(result, *fragments):
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: ")
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--prompts", "{tmp}/missing.txt"], ["does not exist"]),
        (["--prompts", "{tmp}/empty.txt"], ["is empty"]),
        (["--prompts", "{tmp}/blank.txt"], ["line 2 is an empty prompt"]),
        (["-p", "   "], ["is empty"]),
        ([], ["no prompts"]),
        (["-p", "the cat", "--positions", "first"], ["bad --positions"]),
        (["-p", "the cat", "--positions", "0,7"], ["position 7 is out of range for prompt 1 (counting prompts from 1", "-3..2"]),
        (["--prompts", "{tmp}/p.csv", "--column", "nope"], ["no column 'nope'", "sentence"]),
        (["--prompts", "{tmp}/p.jsonl"], ["line 1 has no column 'text'"]),
        (["-p", "the cat " * 40], ["more than the model's context of 64"]),
        (["-p", "the cat", "--top-k", "0"], ["--top-k must be at least 1"]),
        (["-p", "the cat", "--top-k", "100000"], ["exceeds the vocabulary size"]),
        (["-p", "the cat", "--device", "tpu"], ["unknown --device"]),
        (["-p", "the cat", "--final-norm", "sometimes"], ["--final-norm 'sometimes'", "on", "off", "last"]),
        (["-p", "the cat", "--final-norm", "last", "--no-final-norm"], ["contradicts"]),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, tiny_dir, args, fragments):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "blank.txt").write_text("the cat\n\nparis\n", encoding="utf-8")
    (tmp_path / "p.csv").write_text("sentence\nthe cat\n", encoding="utf-8")
    (tmp_path / "p.jsonl").write_text('{"sentence": "the cat"}\n', encoding="utf-8")
    out = tmp_path / "out"
    result = lens(tiny_dir("llama"), out, *[a.format(tmp=tmp_path) for a in args])
    _assert_error(result, *fragments)
    assert not out.exists() or not any(out.iterdir())


def test_unknown_model_and_unsupported_architecture(tmp_path, tiny_dir):
    _assert_error(lens(tmp_path / "no-such-model", tmp_path / "out", "-p", "x"), "does not exist")
    _assert_error(lens(tmp_path / "weights.bin", tmp_path / "out", "-p", "x"), "does not exist")
    (tmp_path / "weights.bin").write_bytes(b"x")
    _assert_error(lens(tmp_path / "weights.bin", tmp_path / "out", "-p", "x"), "not a .gguf file")
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    _assert_error(lens(folder, tmp_path / "out", "-p", "x"), "no config.json")
    # an architecture outside the table: the error lists the supported ones and how to add one
    import shutil

    odd = tmp_path / "odd"
    shutil.copytree(tiny_dir("llama"), odd)
    config = json.loads((odd / "config.json").read_text())
    config["model_type"], config["architectures"] = "mixtral", ["MixtralForCausalLM"]
    (odd / "config.json").write_text(json.dumps(config))
    _assert_error(lens(odd, tmp_path / "out", "-p", "x"), "unsupported architecture 'mixtral'", "gpt2", "hubclient/arch.py")
    assert not (tmp_path / "out").exists()


def test_existing_run_is_never_overwritten(tmp_path, tiny_dir):
    assert lens(tiny_dir("llama"), tmp_path, "-p", "the cat", "--name", "same").exit_code == 0
    before = (tmp_path / "same" / "logit_lens.parquet").read_bytes()
    _assert_error(lens(tiny_dir("llama"), tmp_path, "-p", "paris", "--name", "same"), "already exists")
    assert (tmp_path / "same" / "logit_lens.parquet").read_bytes() == before


def test_multi_token_target_warns_and_follows_first_token(tmp_path, tiny_dir):
    result = lens(tiny_dir("llama"), tmp_path, "-p", "the cat", "--target", "cat sat", "--name", "w")
    assert result.exit_code == 0, result.output
    assert "warning: --target 'cat sat' is 2 tokens" in result.output
    targets = pl.read_parquet(tmp_path / "w" / "targets.parquet")
    from conftest import build_tokenizer

    assert set(targets["token_id"].to_list()) == {build_tokenizer().convert_tokens_to_ids("cat")}


@pytest.mark.parametrize("flags, stored", [([], True), (["--no-final-norm"], False), (["--final-norm", "off"], False), (["--final-norm", "last"], "last")])
def test_final_norm_modes_reach_the_manifest(tmp_path, tiny_dir, flags, stored):
    result = lens(tiny_dir("llama"), tmp_path, "-p", "the cat", "--no-plots", "--name", "n", *flags)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "n" / "manifest.json").read_text())
    assert manifest["options"]["final_norm"] == stored
