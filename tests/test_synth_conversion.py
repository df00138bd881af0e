"""The opt-in ``Weights.cvr_shared`` coupling: conversion shares click relevance's interest + quality terms,
so the clicked rows are a biased sample for CVR (ESMM's premise); off by default, byte-identical worlds."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from ctrlens.errors import InputError
from ctrlens.synth import Weights, WorldConfig
from ctrlens.synth.world import World, rng_for
from synth_fixtures import read_day, small_world


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Same seed and sizes: default weights, and cvr_shared = 1."""
    base = tmp_path_factory.mktemp("synth_conv")
    kw = dict(days=1, rows_per_day=6_000, seed=5)
    return small_world(base / "off", **kw), small_world(base / "on", weights=Weights(cvr_shared=1.0), **kw)


def _truth(world) -> pd.DataFrame:
    return pd.read_parquet(world.root / "_truth" / f"rows-{world.days[0]}.parquet").join(read_day(world, 0)[["click", "conversion"]])


def test_default_world_is_unchanged(pair, tmp_path):
    off, _ = pair
    explicit = small_world(tmp_path / "zero", days=1, rows_per_day=6_000, seed=5, weights=Weights(cvr_shared=0.0))
    assert _digest(explicit.root) == _digest(off.root)  # default == explicit 0, byte for byte
    gt = json.loads((off.root / "ground_truth.json").read_text())
    assert "cvr_shared" not in gt["config"]["weights"]  # the record of a default world has no new key
    assert "cvr_shared" not in gt["conversion_model"]["weights"]
    assert "cvr_shared" not in gt["conversion_model"]["formula"]


def test_option_changes_conversion_only(pair):
    off, on = pair
    a, b = read_day(off, 0), read_day(on, 0)
    pd.testing.assert_frame_equal(a.drop(columns="conversion"), b.drop(columns="conversion"))  # same impressions, clicks
    ta, tb = _truth(off), _truth(on)
    np.testing.assert_array_equal(ta["relevance_logit"].to_numpy(), tb["relevance_logit"].to_numpy())
    assert (a["conversion"] != b["conversion"]).any()
    gt = on.ground_truth
    assert gt["config"]["weights"]["cvr_shared"] == 1.0 and gt["conversion_model"]["weights"]["cvr_shared"] == 1.0
    assert "cvr_shared*(relevance*log1p(n_match)" in gt["conversion_model"]["formula"]


def _bias(t: pd.DataFrame) -> tuple[float, float]:
    """(mean true CVR on clicked rows / over all impressions, corr(relevance logit, conversion logit))."""
    clicked = t["click"].to_numpy() == 1
    p = t["p_conversion"].to_numpy()
    return float(p[clicked].mean() / p.mean()), float(np.corrcoef(t["relevance_logit"], t["conversion_logit"])[0, 1])


def test_clicked_rows_are_selection_biased_only_with_the_option(pair):
    off, on = pair
    ratio_off, corr_off = _bias(_truth(off))
    ratio_on, corr_on = _bias(_truth(on))
    # default: clicks barely select on conversion (only price is common): CVR(clicked) ~ CVR(all)
    assert abs(ratio_off - 1.0) < 0.05 and abs(corr_off) < 0.15  # seed 5: 1.026, 0.088
    # option on: clicks pick high-interest, high-quality rows, which convert clearly more often
    assert ratio_on > 1.3 and corr_on > 0.5  # seed 5: 1.541, 0.791
    t = _truth(on)
    observed = t.loc[t["click"] == 1, "conversion"].mean()  # observed CVR on clicks agrees with the truth
    assert observed > 1.2 * t["p_conversion"].mean()


def test_shared_term_is_the_documented_sum():
    cfg = dict(days=1, seed=3, n_users=300, n_items=100, n_categories=5, n_shops=10)
    w0, w1 = World(WorldConfig(**cfg)), World(WorldConfig(**cfg, weights=Weights(cvr_shared=0.7)))
    ctx = w0.context(0)
    X = w0.sample(ctx, 300, rng_for(3, 99))
    d = w1.conversion_logit(X, w1.context(0)) - w0.conversion_logit(X, ctx)
    wt = w0.cfg.weights
    for i in range(0, 300, 37):
        zc = w0.item_z[X["item"][i]]
        h = (wt.relevance * np.log1p((X["hist_cat"][i] == X["cat"][i]).sum()) + wt.revisit * (X["item"][i] in X["hist_item"][i])
             + w0.item_q[X["item"][i]] + wt.image_quality * (0.8 * zc[0] - 0.6 * zc[2]))
        assert d[i] == pytest.approx(0.7 * h, abs=1e-9)


def test_negative_coupling_is_refused():
    with pytest.raises(InputError, match="cvr_shared must be >= 0, got -0.5"):
        WorldConfig(weights=Weights(cvr_shared=-0.5))
