"""Ground-truth importance: meaningful (distinct, seed-stable) and correct against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from ctrlens.synth import WorldConfig
from ctrlens.synth.importance import FIELD_INPUTS, ranking, true_importance
from ctrlens.synth.world import STREAM_DAY, STREAM_IMPORTANCE, World, rng_for
from synth_fixtures import small_world


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """Default-sized entities (the importance does not depend on rows_per_day), three seeds."""
    base = tmp_path_factory.mktemp("synth_truth")
    return [small_world(base / f"s{s}", days=1, rows_per_day=200, seed=s, n_users=20_000, n_items=5_000,
                        n_categories=40, n_shops=400, new_items_per_day=50, importance_rows=20_000) for s in (1, 2, 3)]


def test_importance_ranking_is_stable_across_seeds(worlds):
    for head in ("click", "relevance", "conversion"):
        ranks = [w.ground_truth["importance_rank"][head] for w in worlds]
        assert ranks[0] == ranks[1] == ranks[2], head
    assert worlds[0].ground_truth["importance_rank"]["click"][:5] == [
        "category_id", "hist_category_id", "position", "item_image", "price"]
    assert worlds[0].ground_truth["importance_rank"]["conversion"][:3] == ["price", "user_id", "item_image"]


def test_importances_are_clearly_distinct(worlds):
    imp = worlds[0].ground_truth["importance"]["click"]
    values = [imp[f] for f in ranking(imp)]
    assert set(imp) == set(FIELD_INPUTS)
    assert all(v > 0 for v in values)  # every field matters for clicks ...
    assert all(a > 1.1 * b for a, b in zip(values, values[1:]))  # ... by clearly different amounts


def test_fields_outside_a_function_have_zero_importance(worlds):
    imp = worlds[0].ground_truth["importance"]
    assert imp["relevance"]["position"] == 0  # position acts through examination only
    for f in ("position", "hist_item_id", "hist_category_id", "hist_image", "hour", "item_id", "user_age_bucket"):
        assert imp["conversion"][f] == 0, f


def test_importance_matches_brute_force_on_a_sample():
    w = World(WorldConfig(days=1, seed=4, n_users=500, n_items=200, n_categories=10, n_shops=30, importance_rows=500))
    got = true_importance(w)
    # brute force, per row, with the same sample and the same permutations
    ctx = w.context(0)
    X = w.sample(ctx, 500, rng_for(4, STREAM_IMPORTANCE, STREAM_DAY))
    perm_rng = rng_for(4, STREAM_IMPORTANCE)
    base = w.relevance_logit(X, ctx)
    for name, key in FIELD_INPUTS.items():
        perm = perm_rng.permutation(500)
        deltas = []
        for i in range(0, 500, 25):  # a row at a time through the true function
            row = {k: v[i:i + 1] for k, v in X.items()}
            row[key] = X[key][perm[i]:perm[i] + 1]
            deltas.append(abs(w.relevance_logit(row, ctx)[0] - base[i]))
        full = np.abs(w.relevance_logit({**X, key: X[key][perm]}, ctx) - base)
        np.testing.assert_allclose(deltas, full[::25], rtol=1e-9, atol=1e-12, err_msg=name)
        assert got["relevance"][name] == pytest.approx(full.mean(), abs=1e-5), name


def test_relevance_logit_is_the_documented_sum():
    w = World(WorldConfig(days=1, seed=2, n_users=300, n_items=100, n_categories=5, n_shops=10))
    ctx = w.context(0)
    X = w.sample(ctx, 300, rng_for(2, 99))
    r = w.relevance_logit(X, ctx)
    wt = w.cfg.weights
    for i in range(0, 300, 37):  # hand-computed for a few rows
        h = X["hist_cat"][i]
        match = h == X["cat"][i]
        zc = w.item_z[X["item"][i]]
        zh = w.item_z[X["hist_img"][i][match]]
        style = (zh.sum(0) @ zc) / max(match.sum(), 1) / 2.0
        c, a, g, hr = X["cat"][i], X["age"][i], X["gender"][i], X["hour"][i]
        want = (ctx.base + wt.relevance * np.log1p(match.sum()) + wt.revisit * (X["item"][i] in X["hist_item"][i])
                + wt.style * style + wt.image_quality * (0.8 * zc[0] - 0.6 * zc[2]) + w.item_q[X["item"][i]]
                + wt.price * (X["price"][i] - w.cat_price[c]) + ctx.cat_eff[c] + w.shop_eff[X["shop"][i]]
                + w.user_eff[X["user"][i]] + w.hour_eff[hr] + w.t3[a, c % 4, hr // 4] + w.t2[g, c])
        assert r[i] == pytest.approx(want, abs=1e-9)
