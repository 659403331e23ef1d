"""The one layer/number parser (hubclient.inputs.ranges) and its use by every layer option."""

from __future__ import annotations

import pytest

from hubclient.errors import HubError
from hubclient.inputs.ranges import check_layers, parse_layer, parse_layers, parse_numbers


@pytest.mark.parametrize(
    "text, expected",
    [
        ("all", [0, 1, 2, 3, 4, 5, 6, 7, 8]),
        ("ALL", [0, 1, 2, 3, 4, 5, 6, 7, 8]),
        ("2-5", [2, 3, 4, 5]),  # similarity's syntax: inclusive
        (" 2 - 2 ", [2]),
        ("0:8:2", [0, 2, 4, 6, 8]),  # intervene's: inclusive, with a step
        ("0:3", [0, 1, 2, 3]),
        ("0,4,8", [0, 4, 8]),
        ("8,0,4,4", [0, 4, 8]),  # sorted, no repeats
        ("0,4:6", [0, 4, 5, 6]),
        ("1,3-4,6:8:2", [1, 3, 4, 6, 8]),
        ("-1", [8]),  # negative: from the top
        ("-2", [7]),
        ("-3:-1", [6, 7, 8]),
        ("-3--1", [6, 7, 8]),
        ("0:-1:4", [0, 4, 8]),
        ("0,-1", [0, 8]),
        ("all,-1", [0, 1, 2, 3, 4, 5, 6, 7, 8]),
    ],
)
def test_parse_layers_syntaxes(text, expected):
    assert parse_layers(text, 0, 8) == expected


def test_blocks_start_at_one():
    assert parse_layers("all", 1, 3) == [1, 2, 3]
    assert parse_layers("-3", 1, 3) == [1]
    with pytest.raises(HubError, match=r"--layer 0 is out of range: this model has mlp layers 1\.\.3; -1 = 3"):
        parse_layers("0", 1, 3, "--layer", "mlp layers")
    with pytest.raises(HubError, match=r"--layer -4 is out of range"):
        parse_layers("-4", 1, 3, "--layer")


@pytest.mark.parametrize(
    "text, message",
    [
        ("9", r"^--layers 9 is out of range: this model has layers 0\.\.8 \(0 = embeddings\); -1 = 8, the last$"),
        ("-10", r"^--layers -10 is out of range: this model has layers 0\.\.8"),
        ("2:12", r"^--layers '2:12' reaches 12, which is out of range: this model has layers 0\.\.8"),
        ("5-2", r"^--layers range '5-2' starts after it ends \(layers 5 > 2\)"),
        ("-1:0", r"^--layers range '-1:0' starts after it ends \(layers 8 > 0\)"),
        ("0:8:0", r"^--layers range '0:8:0' needs a positive step"),
        ("2-8:2", r"^--layers item '2-8:2': a step needs the start:stop:step form"),
        ("x", r"^--layers item 'x' is not an integer layer; give all, an index"),
        ("1,,2", r"^--layers item '' is not an integer layer"),
        ("1.5", r"^--layers item '1.5' is not an integer layer"),
        ("", r"^--layers is empty"),
    ],
)
def test_parse_layers_errors_are_one_line_naming_option_and_item(text, message):
    with pytest.raises(HubError, match=message) as info:
        parse_layers(text, 0, 8)
    assert "\n" not in str(info.value)


def test_check_layers_needs_no_model_and_option_name_is_used():
    check_layers("0:8:2,-1")
    with pytest.raises(HubError, match=r"^--heatmap-layer item 'a' is not an integer layer"):
        check_layers("a", "--heatmap-layer")


def test_parse_layer_is_one_index():
    assert parse_layer("-1", 0, 8, "--heatmap-layer") == 8
    assert parse_layer("3", 0, 8, "--heatmap-layer") == 3
    for bad in ("1,2", "all", "1-2"):
        with pytest.raises(HubError, match="--heatmap-layer takes one layer"):
            parse_layer(bad, 0, 8, "--heatmap-layer")


def test_parse_numbers_moved_and_unchanged():
    assert parse_numbers("5", "coeff", integer=True) == [5]
    assert parse_numbers("0:8:2", "coeff", integer=True) == [0, 2, 4, 6, 8]
    assert parse_numbers("0,4:6,4", "coeff", integer=True) == [0, 4, 5, 6]
    assert parse_numbers("-1:1:0.5", "coeff", integer=False) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    with pytest.raises(HubError, match=r"--coeff value 'x' is not a number"):
        parse_numbers("x", "coeff", integer=False)
    with pytest.raises(HubError, match=r"--operands value '1.5' is not an integer"):
        parse_numbers("1.5", "operands", integer=True)
    with pytest.raises(HubError, match="needs a positive step"):
        parse_numbers("0:4:-1", "coeff", integer=True)
    with pytest.raises(HubError, match="is empty"):
        parse_numbers("4:0", "coeff", integer=True)


def test_edits_delegate_to_ranges():
    from types import SimpleNamespace

    from hubclient.exec import edits

    model = SimpleNamespace(n_layers=6)
    assert edits.parse_layers("2-4", model) == [2, 3, 4]
    assert edits.parse_layers("-1", model) == [6]
    assert edits.parse_layers("all", model, "attn") == [1, 2, 3, 4, 5, 6]
    with pytest.raises(HubError, match=r"^--layer 0 is out of range: this model has attn layers 1\.\.6"):
        edits.parse_layers("0", model, "attn")
    assert edits.parse_numbers("0:1:0.5", "coeff", integer=False) == [0.0, 0.5, 1.0]


def test_similarity_parse_layers_old_name():
    from analyses.similarity import heatmap_layer, parse_layers as similarity_layers

    assert similarity_layers("-1", 3) == [3]
    assert heatmap_layer("-1", 3) == 3 and heatmap_layer(2, 3) == 2 and heatmap_layer(None, 3) is None
