"""store.merge_parts: the bounded-memory merge equals concatenating and sorting in memory."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from hubclient.store import merge_parts


def _parts(tmp_path, n_parts: int = 7, seed: int = 0):
    """Parts like a run's: each batch holds some prompts at every layer, with a vector column."""
    rng = np.random.default_rng(seed)
    prompts = rng.permutation(n_parts * 5)
    paths = []
    for b in range(n_parts):
        mine = prompts[b * 5 : (b + 1) * 5]
        frame = pl.DataFrame(
            {
                "prompt": np.tile(mine, 4).astype(np.int64),
                "layer": np.repeat(np.arange(4), len(mine)).astype(np.int32),
                "language": rng.choice(["eng", "zho"], size=4 * len(mine)),
                "vector": rng.normal(size=(4 * len(mine), 16)).astype(np.float32),
            }
        )
        path = tmp_path / f"part-{b:06d}.parquet"
        frame.write_parquet(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("keys", [["layer", "prompt"], ["prompt", "layer"], ["language", "layer"]])
@pytest.mark.parametrize("budget", [1, 3000, 1 << 30])
def test_merge_equals_in_memory_sort(tmp_path, keys, budget):
    parts = _parts(tmp_path)
    expected = pl.concat([pl.read_parquet(p) for p in parts]).sort(keys, maintain_order=True)
    out = tmp_path / "merged.parquet"
    assert merge_parts(parts, keys, out, budget=budget) == expected.height
    got = pl.read_parquet(out)
    assert got.equals(expected)
    groups = pq.ParquetFile(out).metadata.num_row_groups
    if budget == 1:  # one window per value of the first key
        assert groups == expected[keys[0]].n_unique()
    if budget == 1 << 30:
        assert groups == 1


def test_merge_without_parts_or_keys(tmp_path):
    out = tmp_path / "empty.parquet"
    assert merge_parts([], ["prompt"], out) == 0
    assert pl.read_parquet(out).height == 0
    parts = _parts(tmp_path, n_parts=3)
    assert merge_parts(parts, [], out, budget=1) == 60
    assert pl.read_parquet(out).equals(pl.concat([pl.read_parquet(p) for p in parts]))
