"""The family contract (``suite.py``) for every family of the architecture table, and proof that
it fails when a table entry is wrong."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import suite  # noqa: E402
from hubclient.models.arch import ARCHITECTURES  # noqa: E402

FAMILIES = sorted(suite.REFERENCE)
PROMPTS = {"short": suite.SHORT, "long": suite.LONG}


@pytest.fixture(scope="module")
def hub_models():
    """``hub_models(family)`` -> the contract's wrapped tiny model (built once per family)."""
    cache = {}

    def make(family):
        if family not in cache:
            cache[family] = suite.wrap(family)
        return cache[family]

    return make


def test_every_family_in_the_table_is_covered():
    """A family added to ARCHITECTURES must get a Reference here (text) or a tiny media model
    in tests/media_tiny.py (image/audio, tested by tests/test_media_models.py) or
    tests/chameleon_tiny.py (Chameleon, tested by tests/test_chameleon.py)."""
    from chameleon_tiny import FAMILY as CHAMELEON
    from media_tiny import MEDIA_FAMILIES

    text = {f for f, spec in ARCHITECTURES.items() if spec.modality is None}
    media = {f for f, spec in ARCHITECTURES.items() if spec.modality is not None}
    assert text == set(suite.REFERENCE)
    assert media == set(MEDIA_FAMILIES) | {CHAMELEON}
    assert len(text) == 11


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
@pytest.mark.parametrize("family", FAMILIES)
def test_contract(hub_models, family, prompt):
    model = hub_models(family)
    ref = suite.REFERENCE[family]
    ids = suite.encode(model, PROMPTS[prompt])
    suite.check_hidden_states(model, ref, ids)
    for final_norm in (True, False):
        suite.check_lens(model, ref, ids, final_norm)
    suite.check_mlp_activation(model, ref, ids)
    suite.check_sites(model, ref, ids)
    suite.check_site_edits(model, ref, ids)


@pytest.mark.parametrize("family", FAMILIES)
def test_lens_analysis(tmp_path, hub_models, family):
    model = hub_models(family)
    ref = suite.REFERENCE[family]
    texts = [suite.SHORT, suite.LONG]
    suite.check_lens_analysis(model, ref, texts, True, tmp_path / "norm")
    suite.check_lens_analysis(model, ref, texts, False, tmp_path / "raw")


@pytest.mark.parametrize("family", suite.SLIDING)
def test_long_prompt_crosses_the_sliding_window(hub_models, family):
    model = hub_models(family)
    suite.check_sliding_window_bites(family, suite.encode(model, suite.LONG))


# --------------------------------------------------------------------------- the suite bites


def _broken(monkeypatch, family, **change):
    """A HubModel of ``family`` wrapped with its table entry changed by ``change``."""
    monkeypatch.setitem(ARCHITECTURES, family, dataclasses.replace(ARCHITECTURES[family], **change))
    return suite.wrap(family)


@pytest.mark.parametrize(
    "family, wrong",
    [("llama", "model.layers.0.input_layernorm"), ("gpt2", "transformer.h.2.ln_2"), ("gemma2", "model.layers.2.post_feedforward_layernorm")],
)
def test_wrong_final_norm_fails_the_lens_contract(monkeypatch, family, wrong):
    model = _broken(monkeypatch, family, final_norm=wrong)
    ids = suite.encode(model, suite.SHORT)
    with pytest.raises(AssertionError):
        suite.check_lens(model, suite.REFERENCE[family], ids, final_norm=True)
    suite.check_lens(model, suite.REFERENCE[family], ids, final_norm=False)  # the norm is the only fault


def test_wrong_attention_module_fails_the_site_contract(monkeypatch):
    model = _broken(monkeypatch, "llama", attention="input_layernorm")  # same shape, other values
    with pytest.raises(AssertionError):
        suite.check_sites(model, suite.REFERENCE["llama"], suite.encode(model, suite.SHORT))


def test_wrong_mlp_output_fails_the_site_contract(monkeypatch):
    model = _broken(monkeypatch, "gemma2", mlp_output="post_feedforward_layernorm")  # after the norm: wrong
    with pytest.raises(AssertionError):
        suite.check_sites(model, suite.REFERENCE["gemma2"], suite.encode(model, suite.SHORT))


def test_opt_without_flat_tokens_fails_the_site_contract(monkeypatch):
    model = _broken(monkeypatch, "opt", mlp_flat_tokens=False)  # fc2 output stays [batch * seq, d_model]
    with pytest.raises(AssertionError):
        suite.check_sites(model, suite.REFERENCE["opt"], suite.encode(model, suite.SHORT))
