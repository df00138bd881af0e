"""The synthetic world: layout of the data contract, determinism and the planted ground-truth effects."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctrlens.data.schema import Schema
from ctrlens.synth import generate
from synth_fixtures import SMALL, fit_eta, history_match, read_all, read_day, small_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return small_world(tmp_path_factory.mktemp("synth") / "w")


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """Two days of 20k rows: day 1 has its examination exponent doubled (0.7 -> 1.4)."""
    return small_world(tmp_path_factory.mktemp("synth") / "big", days=2, rows_per_day=20_000, seed=3,
                       incidents=["1:position_bias_change:1.0"])


def test_layout_matches_the_data_contract(world):
    root = world.root
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["schema.json", "images.parquet", "ground_truth.json", "_truth"] + [f"day={d}" for d in world.days]
    )
    assert world.days == [f"2026-01-0{i}" for i in range(1, 7)]
    schema = Schema.load(root)
    assert schema == world.schema
    assert schema.labels == ("click", "conversion")
    assert schema["item_id"].role == "item" and schema["user_id"].role == "user"
    assert schema["hist_item_id"].table == schema["item_id"].table_name == "item"
    assert schema["hist_category_id"].table == schema["category_id"].table_name == "category"
    assert schema["item_image"].source == "item_id" and schema["hist_image"].source == "hist_item_id"
    assert schema.position.max_position == 10 and schema.image_shape == (3, 32, 32)
    # item vocabulary has headroom for every item created later
    assert schema["item_id"].vocab_size == SMALL["n_items"] + 6 * SMALL["new_items_per_day"]

    for d in world.days:
        assert [p.name for p in (root / f"day={d}").iterdir()] == ["part-0.parquet"]
        t = pq.read_table(root / f"day={d}" / "part-0.parquet")
        assert t.column_names == [f.name for f in schema.fields if f.kind != "image"] + ["click", "conversion"]
        for f in schema.sparse:
            assert t.schema.field(f.name).type == pa.int64()
            v = t[f.name].to_numpy()
            assert v.min() >= 0 and v.max() < f.vocab_size, f.name
        for s in schema.sequences:
            assert t.schema.field(s.name).type == pa.list_(pa.int64())
            col = t[s.name].combine_chunks()
            lens = np.diff(col.offsets.to_numpy())
            assert lens.max() <= s.max_len and lens.min() >= 0
            vals = col.values.to_numpy()
            assert vals.min() >= 0 and vals.max() < schema.table_of(s.name).vocab_size
        assert pa.types.is_floating(t.schema.field("price").type)
        pos = t["position"].to_numpy()
        assert pos.min() >= 1 and pos.max() <= 10
        assert t.num_rows == 3000 and sum(c.null_count for c in t.columns) == 0

    img = pq.read_table(root / "images.parquet")
    assert img.column_names == ["item_id", "image"]
    ids = img["item_id"].to_numpy()
    np.testing.assert_array_equal(ids, np.arange(schema["item_id"].vocab_size))  # one row per item
    assert {len(b) for b in img["image"].to_pylist()[:50]} == {3 * 32 * 32}

    gt = json.loads((root / "ground_truth.json").read_text())
    assert gt == world.ground_truth
    for key in ("config", "examination", "click_model", "conversion_model", "importance", "importance_rank", "incidents", "days"):
        assert key in gt
    assert gt["examination"]["values"] == pytest.approx([p ** -0.7 for p in range(1, 11)], abs=1e-6)
    assert [d["date"] for d in gt["days"]] == world.days


def test_rows_agree_with_ground_truth_daily_rates(world):
    for i, d in enumerate(world.ground_truth["days"]):
        df = read_day(world, i)
        assert d["rows"] == len(df) and d["clicks"] == df.click.sum() and d["conversions"] == df.conversion.sum()
        assert d["ctr"] == pytest.approx(df.click.mean(), abs=1e-6)
        # the true CTR (mean p_click) explains the observed one within 4 standard errors
        se = np.sqrt(d["true_ctr"] * (1 - d["true_ctr"]) / d["rows"])
        assert abs(d["ctr"] - d["true_ctr"]) < 4 * se


def test_truth_rows_are_calibrated(world):
    df = read_all(world)
    truth = pd.concat([pd.read_parquet(world.root / "_truth" / f"rows-{d}.parquet") for d in world.days], ignore_index=True)
    assert len(truth) == len(df)
    np.testing.assert_allclose(truth.p_click, truth.examine / (1 + np.exp(-truth.relevance_logit)), rtol=1e-5)
    dec = pd.qcut(truth.p_click, 5, labels=False)
    obs = df.click.groupby(dec).mean()
    exp = truth.p_click.groupby(dec).mean()
    assert (np.abs(obs - exp) < 0.25 * exp + 0.01).all()
    assert obs.is_monotonic_increasing


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(days=2, rows_per_day=500, incidents=["1:shuffled:hour", "1:blank_images::0.5"])
    a = small_world(tmp_path / "a", **kw)
    b = small_world(tmp_path / "b", **kw)
    c = small_world(tmp_path / "c", seed=8, **kw)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    for f in files:
        assert (a.root / f).read_bytes() == (b.root / f).read_bytes(), f
    assert (a.root / "day=2026-01-01/part-0.parquet").read_bytes() != (c.root / "day=2026-01-01/part-0.parquet").read_bytes()


def test_new_items_appear_on_their_day(world):
    n0, per_day = SMALL["n_items"], SMALL["new_items_per_day"]
    for i in range(len(world.days)):
        df = read_day(world, i)
        seen = np.concatenate([df.item_id.to_numpy(), np.concatenate(df.hist_item_id.to_numpy())])
        assert seen.max() < n0 + (i + 1) * per_day  # nothing before it is created
        fresh = df.item_id[(df.item_id >= n0 + i * per_day)]
        assert fresh.nunique() > per_day // 2  # today's new items are shown (fresh boost)
        assert world.ground_truth["days"][i]["new_items"] == [n0 + i * per_day, n0 + (i + 1) * per_day]


def test_images_carry_the_item_latents(world):
    img = pq.read_table(world.root / "images.parquet")
    items = pd.read_parquet(world.root / "_truth" / "items.parquet")
    px = np.frombuffer(b"".join(img["image"].to_pylist()), dtype=np.uint8).reshape(-1, 3, 32, 32) / 255.0
    red = px[:, 0].mean(axis=(1, 2))
    green = px[:, 1].mean(axis=(1, 2))
    texture = px.std(axis=(2, 3)).mean(axis=1)
    assert np.corrcoef(red, items.z0)[0, 1] > 0.9
    assert np.corrcoef(green, items.z1)[0, 1] > 0.9
    assert np.corrcoef(texture, items.z2)[0, 1] > 0.6
    # the image-visible part of quality is recoverable from pixels; the id-only part is not
    X = np.c_[red, green, texture, np.ones_like(red)]
    fit = np.linalg.lstsq(X, items.quality_image, rcond=None)[0]
    assert np.corrcoef(X @ fit, items.quality_image)[0, 1] > 0.85
    assert abs(np.corrcoef(X @ fit, items.quality_id)[0, 1]) < 0.1


def test_ctr_by_position_follows_the_examination_curve(big):
    df0 = read_day(big, 0)
    g = df0.groupby("position").click.agg(["mean", "count"])
    ratio = (g["mean"] / g["mean"].loc[1]).to_numpy()
    curve = np.array(big.ground_truth["examination"]["values"])
    # binomial standard error of each ratio CTR(k) / CTR(1); 4 SE for ten comparisons
    rel_var = (1 - g["mean"]) / (g["count"] * g["mean"])
    se = ratio * np.sqrt(rel_var.to_numpy() + rel_var.iloc[0])
    assert np.all(np.abs(ratio - curve) < 4 * se + 1e-9)
    assert np.all(np.abs(ratio - curve) < 0.5 * curve)
    assert fit_eta(df0) == pytest.approx(0.7, abs=0.1)
    # position_bias_change on day 1 doubled the exponent: the data follows, the truth records it
    assert fit_eta(read_day(big, 1)) == pytest.approx(1.4, abs=0.15)
    assert big.ground_truth["examination"]["per_day"]["2026-01-02"]["eta"] == pytest.approx(1.4)
    assert big.ground_truth["days"][1]["eta"] == pytest.approx(1.4)


def test_clicks_depend_on_history_relevance_only(big):
    df = read_day(big, 0)
    match = history_match(df)
    assert 0.3 < match.mean() < 0.7
    assert df.click[match].mean() > 2.5 * df.click[~match].mean()
    # only the related part of the history matters: without a related behaviour, length is irrelevant
    length = df.hist_category_id.map(len).to_numpy()
    short, long_ = ~match & (length <= 5), ~match & (length >= 10)
    assert short.sum() > 1500 and long_.sum() > 1500
    assert abs(df.click[short].mean() - df.click[long_].mean()) < 0.015


def test_conversions_follow_clicks_and_their_own_function(big):
    df = pd.concat([read_day(big, 0), read_day(big, 1)], ignore_index=True)
    assert not ((df.conversion == 1) & (df.click == 0)).any()
    q = pd.qcut(df.price, 4, labels=False)
    clicked = df.click == 1
    cvr = df.conversion[clicked].groupby(q[clicked]).mean()
    ctr = df.click.groupby(q).mean()
    assert np.all(np.diff(cvr) < 0.02) and cvr.iloc[0] > 3 * cvr.iloc[-1]  # price drives conversion ...
    assert ctr.iloc[0] < 1.6 * ctr.iloc[-1]  # ... much more than it drives clicks
    match = history_match(df)
    # history relevance drives clicks but not conversions
    assert df.click[match].mean() > 2.5 * df.click[~match].mean()
    assert abs(df.conversion[clicked & match].mean() - df.conversion[clicked & ~match].mean()) < 0.05


def test_weekly_seasonality_and_drift_are_recorded(tmp_path):
    w = small_world(tmp_path / "w", days=8, rows_per_day=300)
    base = [d["base_logit"] for d in w.ground_truth["days"]]
    dates = [dt.date.fromisoformat(d) for d in w.days]
    sunday = [b for b, t in zip(base, dates) if t.weekday() == 6]
    thursday = [b for b, t in zip(base, dates) if t.weekday() == 3]
    assert sunday[0] > thursday[0]  # weekly peak on Sunday
    assert base[0] == pytest.approx(base[7])  # same weekday, same seasonal level


def test_generate_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    from ctrlens.errors import InputError

    small_world(tmp_path / "w", days=1, rows_per_day=100)
    with pytest.raises(InputError, match="not empty"):
        small_world(tmp_path / "w", days=1, rows_per_day=100)
    w = small_world(tmp_path / "w", days=2, rows_per_day=100, overwrite=True)
    assert len(w.days) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        generate(tmp_path / "other", days=1, rows_per_day=10, overwrite=True, **{**SMALL})
    with pytest.raises(InputError, match="unknown option"):
        generate(tmp_path / "x", days=1, rows_per_day=10, colour="red")
    with pytest.raises(InputError, match="n_items .* must be >= n_categories"):
        generate(tmp_path / "x", days=1, rows_per_day=10, n_items=5, n_categories=10)
