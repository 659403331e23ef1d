"""The architecture table: MLP activation points against a direct computation, error messages."""

from __future__ import annotations

import pytest
import torch

from hubclient.arch import ARCHITECTURES, spec_for_config, supported_families
from hubclient.errors import HubError

from conftest import FAMILIES


def _direct_mlp_activation(family, block, x):
    """The MLP intermediate activation computed from the MLP's input ``x`` by hand."""
    if family in ("gpt2",):
        return block.mlp.act(block.mlp.c_fc(x))
    if family in ("gpt_neox",):
        return block.mlp.act(block.mlp.dense_h_to_4h(x))
    if family == "bloom":
        return block.mlp.gelu_impl(block.mlp.dense_h_to_4h(x))
    if family == "opt":
        return block.activation_fn(block.fc1(x))
    return block.mlp.act_fn(block.mlp.gate_proj(x)) * block.mlp.up_proj(x)


def _mlp_input_module(family, block):
    return block.fc1 if family == "opt" else block.mlp


@pytest.mark.parametrize("family", FAMILIES)
def test_mlp_activation_point(tiny_hub_model, family):
    import nnsight

    model = tiny_hub_model(family)
    ids = model.tokenizer("the cat sat on the mat", return_tensors="pt")
    with model.lm.trace(dict(ids)):
        acts = nnsight.save([])
        for b in range(1, model.n_layers + 1):
            acts.append(model.mlp_down(b).input)

    blocks = model.torch_model.get_submodule(model.arch.layers)
    seen = {}
    hooks = []
    for i, block in enumerate(blocks):
        hooks.append(_mlp_input_module(family, block).register_forward_hook(lambda m, inp, out, i=i: seen.__setitem__(i, inp[0])))
    with torch.no_grad():
        model.torch_model(**ids)
    for h in hooks:
        h.remove()
    for i, block in enumerate(blocks):
        with torch.no_grad():
            expected = _direct_mlp_activation(family, block, seen[i])
        torch.testing.assert_close(acts[i], expected, rtol=1e-5, atol=1e-5)
        assert acts[i].shape[-1] == expected.shape[-1] > model.config.hidden_size - 1


def test_block_out_of_range(tiny_hub_model):
    model = tiny_hub_model("llama")
    with pytest.raises(HubError, match="blocks 1..3"):
        model.mlp_down(0)


def test_unknown_family_lists_supported_and_how_to_add():
    class Config:
        model_type = "mamba"

    with pytest.raises(HubError) as err:
        spec_for_config(Config())
    message = str(err.value)
    assert "'mamba'" in message and "hubclient/arch.py" in message
    for family in supported_families():
        assert family in message


def test_every_family_in_the_table_is_tested():
    from chameleon_tiny import FAMILY as CHAMELEON  # tests/test_chameleon.py
    from media_tiny import MEDIA_FAMILIES  # image/audio families: tests/test_media_models.py

    assert set(ARCHITECTURES) == set(FAMILIES) | set(MEDIA_FAMILIES) | {CHAMELEON}
