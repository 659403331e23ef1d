"""``--lens tuned`` and ``--lens patchscope`` on the NDIF test server give the local tables.

What would make these fail: an import of hub code in the lens' trace code, the tuned lens'
tensors not travelling with the request (or left on the client's device), or patchscope
copies that the weightless client model builds differently from the local run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from polars.testing import assert_frame_equal

from analyses.logit_lens import LensOptions, LogitLens
from hubclient.models import load_model
from hubclient.runner import RunConfig, run_analysis
from hubclient.science import tuned_lens as tl

sys.path.insert(0, str(Path(__file__).parent))
from test_remote import client_setup, remote_config  # noqa: E402

PROMPTS = ["the cat sat on the mat", "one two three four", "a dog ran in the park"]


@pytest.fixture(autouse=True)
def client(monkeypatch, server, tmp_path):
    client_setup(monkeypatch)
    monkeypatch.setenv("HUB_CACHE_DIR", str(tmp_path / "cache"))
    server.set_faults()
    yield
    server.set_faults()


def _lens_folder(tiny_dir, tmp_path) -> str:
    model = load_model(str(tiny_dir("llama")), device="cpu")
    config = tl.model_config(model)
    torch.manual_seed(0)
    translators = tl.make_translators(config.d_model, config.num_hidden_layers)
    with torch.no_grad():
        for layer in translators:
            layer.weight.normal_(0, 0.1)
            layer.bias.normal_(0, 0.3)
    return str(tl.save_lens(tmp_path / "lens", translators, config))


@pytest.mark.parametrize("lens", ["tuned", "patchscope"])
def test_lens_remote_equals_local(tiny_dir, server, tmp_path, lens):
    extra = {"tuned_lens": _lens_folder(tiny_dir, tmp_path)} if lens == "tuned" else {"patch_prompt": "cat cat dog dog the sat", "patch_placeholder": "the"}

    def analysis():
        return LogitLens(LensOptions(positions="all", top_k=3, targets=["cat"], lens=lens, **extra))

    here = run_analysis(analysis(), PROMPTS, RunConfig(model=str(tiny_dir("llama")), out=tmp_path, name="local", batch_size=2, progress=False))
    there = run_analysis(analysis(), PROMPTS, remote_config(tiny_dir, server, tmp_path))
    assert there.manifest["options"]["lens"] == lens
    for table in ("logit_lens", "targets"):
        assert_frame_equal(there.table(table), here.table(table), check_exact=False, rel_tol=1e-5, abs_tol=1e-6)
