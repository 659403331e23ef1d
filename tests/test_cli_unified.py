"""One way to run: commands in analyses/cli, languages as positional files and/or FLORES codes
(``--flores-dir`` or ``$HUB_FLORES_DIR``) on every multilingual command, and options of another
mode refused."""

from __future__ import annotations

import json
from importlib import import_module, metadata

import polars as pl
import pytest
from typer.testing import CliRunner

from hubclient.cli import app

runner = CliRunner()
MOVED = ["logit_lens", "similarity", "translation_lens", "language_probs", "neurons", "task_lens", "ablate", "patch", "steer", "arithmetic_intervention"]


def hub(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env={"HUB_FLORES_DIR": None, **(env or {})})


def flores_lines(folder, code, n):
    return (folder / f"{code}.devtest").read_text(encoding="utf-8").splitlines()[:n]


def write_file(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- entry points
def test_entry_points_name_the_cli_modules():
    from hubclient.cli import analysis_modules
    from hubclient.cli.commands import analyze_app, intervene_app

    entries = {e.value: e for group in ("hub.analyses", "hub.interventions") for e in metadata.entry_points(group=group)}
    for module in MOVED:
        assert f"analyses.cli.{module}" in entries, module
        cli = import_module(f"analyses.cli.{module}")
        assert cli.ANALYSIS is import_module(f"analyses.{module}").ANALYSIS
        assert not hasattr(import_module(f"analyses.{module}"), "command"), f"analyses.{module} still defines a command"
    registered = {c.name: c.callback for c in analyze_app.registered_commands + intervene_app.registered_commands}
    modules = {**analysis_modules(), **analysis_modules("hub.interventions")}
    for name, module in modules.items():
        assert registered[name] is module.command
    for name in ("logit-lens", "similarity", "translation-lens", "language-probs", "neurons", "task-lens", "ablate", "patch", "steer", "arithmetic"):
        assert modules[name].__name__.startswith("analyses.cli."), name


def test_science_modules_do_not_import_commands():
    import subprocess
    import sys

    code = "import sys, analyses.logit_lens, analyses.similarity, analyses.media_runs; print(any(m.startswith('analyses.cli') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- languages: files and FLORES codes
def test_similarity_files_and_codes_with_env(tmp_path, tiny_dir, flores_dir):
    en = write_file(tmp_path / "en.txt", flores_lines(flores_dir, "eng_Latn", None))  # parallel to the FLORES files: all lines
    result = hub("analyze", "similarity", en, "fra_Latn", "--n", 3, "--layers", "0,-1", "--heatmap-layer", "-1", "--model", tiny_dir("llama"),
                 "--out", tmp_path, "--name", "s", "--no-progress", "--bootstrap", 10, env={"HUB_FLORES_DIR": str(flores_dir)})
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "s" / "similarity.parquet")
    assert table["pair"].unique().to_list() == ["en-fra_Latn"] and sorted(table["layer"].to_list()) == [0, 3]
    prompts = pl.read_parquet(tmp_path / "s" / "prompts.parquet")
    assert prompts["text"].to_list() == flores_lines(flores_dir, "eng_Latn", 3) + flores_lines(flores_dir, "fra_Latn", 3)
    sources = json.loads((tmp_path / "s" / "manifest.json").read_text())["options"]["sources"]
    assert sources == [str(en), str(flores_dir / "fra_Latn.devtest")]


def test_language_probs_files_and_codes_with_env(tmp_path, tiny_dir, flores_dir):
    en = write_file(tmp_path / "en.txt", flores_lines(flores_dir, "eng_Latn", 2))
    result = hub("analyze", "language-probs", en, "fra_Latn", "--n", 2, "--positions", "last", "--model", tiny_dir("llama"), "--matrix", "wordfreq",
                 "--out", tmp_path, "--name", "l", "--no-progress", "--no-plots", env={"HUB_FLORES_DIR": str(flores_dir)})
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "l" / "language_probs.parquet")
    assert table["input_language"].unique(maintain_order=True).to_list() == ["en", "fra_Latn"]
    assert sorted(table["language"].unique()) == ["en", "fr", "unknown"]


def test_neurons_then_ablate_files_and_codes_with_env(tmp_path, tiny_dir, flores_dir):
    env = {"HUB_FLORES_DIR": str(flores_dir)}
    en = write_file(tmp_path / "en.txt", flores_lines(flores_dir, "eng_Latn", None))
    neurons = hub("analyze", "neurons", en, "fra_Latn", "spa_Latn", "--n", 3, "--model", tiny_dir("llama"), "--out", tmp_path,
                  "--name", "n", "--no-progress", "--no-plots", "--z-threshold", 1, "--lape-corpus", "parallel", env=env)
    assert neurons.exit_code == 0, neurons.output
    activations = pl.read_parquet(tmp_path / "n" / "activations.parquet")
    assert activations["language"].unique(maintain_order=True).to_list() == ["en", "fra_Latn", "spa_Latn"]
    # ablate: a file for "en" (its held-out lines 3..4), a FLORES code read from $HUB_FLORES_DIR
    ablate = hub("intervene", "ablate", "fra_Latn", en, "--from", tmp_path / "n", "--n", 2, "--ablate", "fra_Latn", "--no-random",
                 "--perplexity", "sentences", "--model", tiny_dir("llama"), "--out", tmp_path, "--name", "a", "--no-progress", "--no-plots", env=env)
    assert ablate.exit_code == 0, ablate.output
    options = json.loads((tmp_path / "a" / "manifest.json").read_text())["options"]
    assert options["languages"] == ["fra_Latn", "en"]
    assert options["sources"] == [str(flores_dir / "fra_Latn.devtest"), str(en)]
    prompts = pl.read_parquet(tmp_path / "a" / "prompts.parquet")
    assert set(flores_lines(flores_dir, "eng_Latn", 5)[3:]) <= set(prompts["text"].to_list())
    # the old spelling still works
    old = hub("intervene", "ablate", "--from", tmp_path / "n", "--langs", "fra_Latn,spa_Latn", "--n", 1, "--ablate", "spa_Latn", "--no-random",
              "--perplexity", "sentences", "--model", tiny_dir("llama"), "--out", tmp_path, "--name", "b", "--no-progress", "--no-plots", env=env)
    assert old.exit_code == 0, old.output
    # windowed perplexity (the default): each language's joined held-out text is longer than the
    # tiny model's 64-token context, and is cut into windows rather than refused
    windows = hub("intervene", "ablate", "fra_Latn", en, "--from", tmp_path / "n", "--n", 4, "--ablate", "fra_Latn", "--no-random",
                  "--window", 32, "--model", tiny_dir("llama"), "--out", tmp_path, "--name", "w", "--no-progress", "--no-plots", env=env)
    assert windows.exit_code == 0, windows.output
    scores = pl.read_parquet(tmp_path / "w" / "scores.parquet")
    assert scores.height > 0 and json.loads((tmp_path / "w" / "manifest.json").read_text())["window"] == 32


def test_translation_lens_files_and_codes_with_env(tmp_path, tiny_dir, flores_dir, monkeypatch):
    """The command's inputs (the tiny model has no Chinese, so the run itself is stubbed)."""
    from analyses.cli import translation_lens as cli
    from hubclient.errors import HubError

    seen = []

    def capture(analysis, texts, config, prompt_columns=None, **kwargs):
        seen.append((texts, prompt_columns["direction"]))
        raise HubError("stop")

    monkeypatch.setattr(cli, "run_analysis", capture)
    env = {"HUB_FLORES_DIR": str(flores_dir)}
    en = write_file(tmp_path / "en.txt", ["the cat sat", "the dog ran"])
    for args, texts, labels in (
        (["zho_Hans"], flores_lines(flores_dir, "zho_Hans", 2), ["zh-en"] * 2),
        ([en, "--direction", "en-zh"], ["the cat sat", "the dog ran"], ["en-zh"] * 2),
        (["--direction", "both"], flores_lines(flores_dir, "zho_Hans", 2) + flores_lines(flores_dir, "eng_Latn", 2), ["zh-en"] * 2 + ["en-zh"] * 2),
    ):
        seen.clear()
        result = hub("analyze", "translation-lens", *args, "--n", 2, "--model", tiny_dir("llama"), "--out", tmp_path, env=env)
        assert result.exit_code == 2 and "error: stop" in result.output, result.output
        assert seen == [(texts, labels)]
    bad = hub("analyze", "translation-lens", "fra_Latn", "--model", tiny_dir("llama"), "--out", tmp_path, env=env)
    assert bad.exit_code == 2 and "FLORES code 'fra_Latn' is neither" in bad.output


def test_flores_codes_without_a_folder_name_both_ways(tmp_path, tiny_dir):
    result = hub("analyze", "neurons", "eng_Latn", "fra_Latn", "--model", tiny_dir("llama"), "--out", tmp_path)
    assert result.exit_code == 2
    assert "error: FLORES code 'eng_Latn' needs a FLORES folder: pass --flores-dir DIR or set HUB_FLORES_DIR" in result.output


# --------------------------------------------------------------------------- options of another mode
@pytest.mark.parametrize(
    "args, message",
    [
        (["similarity", "--task", "arithmetic", "--skip-empty"], "error: --skip-empty does not apply to similarity --task arithmetic"),
        (["similarity", "--task", "arithmetic", "--flores-dir", "."], "error: --flores-dir does not apply to similarity --task arithmetic"),
        (["similarity", "a.txt", "b.txt", "--media-pool", "mean"], "error: --media-pool does not apply to similarity on parallel texts"),
        (["similarity", "a.txt", "b.txt", "--data-seed", "3"], "error: --data-seed does not apply to similarity on parallel texts"),
        (["similarity", "p.csv", "--modality", "image", "--skip-empty"], "error: --skip-empty does not apply to similarity --modality image"),
        (["logit-lens", "--task", "arithmetic", "--lens-dtype", "bfloat16"], "error: --lens-dtype does not apply to logit-lens --task arithmetic"),
        (["logit-lens", "--task", "arithmetic", "--media-template", "x {media}"], "error: --media-template does not apply to logit-lens --task arithmetic"),
        (["logit-lens", "-p", "the cat", "--max-operand", "5"], "error: --max-operand does not apply to logit-lens on text prompts"),
        (["logit-lens", "--modality", "image", "--prompts", "p.csv", "--positions", "all"], "error: --positions does not apply to logit-lens --modality image"),
        (["logit-lens", "--modality", "image", "--task", "arithmetic"], "error: --task does not apply to logit-lens --modality image"),
        (["translation-lens", "--cloze-dir", ".", "--flores-dir", "."], "error: --flores-dir does not apply to translation-lens --cloze-dir"),
        (["translation-lens", "-p", "the cat", "--cloze-lang", "fr"], "error: --cloze-lang does not apply to translation-lens without --cloze-dir"),
        (["translation-lens", "-p", "the cat", "--flores-dir", "."], "error: --flores-dir does not apply to translation-lens on --prompt/--prompts"),
    ],
)
def test_option_of_another_mode_is_an_error(tmp_path, tiny_dir, args, message):
    out = tmp_path / "out"
    result = hub("analyze", *args, "--model", tiny_dir("llama"), "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output
    assert not out.exists()


def test_env_folder_is_not_an_option_given(tmp_path, tiny_dir, flores_dir):
    """$HUB_FLORES_DIR set is not --flores-dir given: --task still only objects to --skip-empty."""
    result = hub("analyze", "similarity", "--task", "arithmetic", "--skip-empty", "--model", tiny_dir("llama"), "--out", tmp_path,
                 env={"HUB_FLORES_DIR": str(flores_dir)})
    assert result.exit_code == 2 and "--skip-empty does not apply" in result.output


def test_bad_layers_fail_before_the_model_loads(tmp_path):
    a = write_file(tmp_path / "a.txt", ["x", "y"])
    b = write_file(tmp_path / "b.txt", ["x", "y"])
    result = hub("analyze", "similarity", a, b, "--layers", "0:4:0", "--model", tmp_path / "no-model", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "error: --layers range '0:4:0' needs a positive step" in result.output
    result = hub("analyze", "similarity", a, b, "--heatmap-layer", "1,2", "--model", tmp_path / "no-model", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "error: --heatmap-layer takes one layer" in result.output
