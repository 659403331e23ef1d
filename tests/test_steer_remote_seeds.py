"""The per-row seeded sampler (``--seeds``, A16) on the NDIF test server: the logits processor
travels with the request and gives the same continuations as here."""

from __future__ import annotations

import polars as pl

from analyses.steer import SteerOptions, run_steer
from test_intervene_remote import PROMPTS, assert_same, client, configs  # noqa: F401  (client: fixture; server: conftest)


def test_seeded_sampler_remote_equals_local(tiny_dir, server, tmp_path):  # noqa: F811
    options = SteerOptions(positive=["the cat"], negative=["a dog"], layers="2", coeffs="0,8", max_new_tokens=5, seeds="0:1",
                           top_p=0.7, freq_penalty=1.0, positive_words=["park", "paris"], negative_words=["ten", "nine"], classifier="none")
    local, far = configs(tiny_dir, server, tmp_path)
    here = run_steer(options, PROMPTS, local)
    there = run_steer(options, PROMPTS, far)
    # (side_by_side's deltas are differences of near-equal floats: compared through their parts)
    assert_same(there, here, ("generations", "seed_summary"))
    assert there.table("side_by_side")["continuation"].to_list() == here.table("side_by_side")["continuation"].to_list()
    gen = there.table("generations")
    assert set(gen["seed"].to_list()) == {0, 1}
    side = there.table("side_by_side").filter(pl.col("coeff") == 8)
    assert (side["continuation"] != side["unsteered"]).any()
