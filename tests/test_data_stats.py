"""field_stats against a brute-force pandas computation on the source frames."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from ctrlens.data import DailyDataset, DataError
from ctrlens.data.stats import HASH_BUCKETS, OTHER, bucket_of, edges_from, field_stats
from ctrlens.results import COLUMNS
from data_fixtures import COLORS, N_IMAGES, N_ITEMS, SHAPE, image_bytes, write_dataset

DAY = "2026-01-01"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    schema, frames = write_dataset(root, rows=400, seed=5)
    return DailyDataset(root), frames


def _index(v, vocab_size=None, vocabulary=None) -> int:
    if vocabulary is not None:
        return vocabulary.index(v) + 2 if v in vocabulary else 1
    return v + 2 if 0 <= v < vocab_size else 1


def _top(values: list, k: int) -> list:
    c = Counter(values)
    total = sum(c.values())
    items = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))
    top = [[v, n / total] for v, n in items[:k]]
    return top + [[OTHER, sum(n for _, n in items[k:]) / total]]


def _check_ids(row, values: list, rows: int, missing_rows: int, k: int, **vocab) -> None:
    assert row.rows == rows
    assert row.coverage == pytest.approx(1 - missing_rows / rows)
    assert row.missing_rate == pytest.approx(missing_rows / rows)
    idx = np.array([_index(v, **vocab) for v in values])
    assert row.oov_rate == pytest.approx((idx == 1).mean())
    assert row.cardinality == len(set(values))
    got = row.top_json
    want = _top(values, k)
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want])
    hist = row.hist_json
    assert hist["kind"] == "hashed" and len(hist["counts"]) == len(hist["edges"]) - 1 == HASH_BUCKETS + 2
    want_hist = [missing_rows, int((idx == 1).sum())] + np.bincount(
        bucket_of(idx[idx >= 2]), minlength=HASH_BUCKETS).tolist()
    assert hist["counts"] == want_hist


def test_columns_and_rows(world):
    ds, _ = world
    r = field_stats(ds, DAY)
    assert list(r.frame.columns) == list(COLUMNS["field_stats"])
    assert r.frame["field"].tolist() == ["user_id", "item_id", "color", "hist_item_id", "hist_color", "price",
                                         "position", "item_image", "hist_image", "click", "conversion"]
    assert r.frame["kind"].tolist() == ["sparse"] * 3 + ["sequence"] * 2 + ["dense", "position", "image", "image",
                                                                            "label", "label"]
    assert r.meta["rows"] == 400 and r.meta["day"] == DAY


def test_sparse_and_sequence_vs_pandas(world):
    ds, frames = world
    df = frames[DAY]
    k = 5
    f = field_stats(ds, DAY, top_k=k).frame.set_index("field")
    n = len(df)
    users = [int(v) for v in df["user_id"].dropna()]
    _check_ids(f.loc["user_id"], users, n, int(df["user_id"].isna().sum()), k, vocab_size=50)
    assert math.isnan(f.loc["user_id"]["mean"])
    _check_ids(f.loc["item_id"], df["item_id"].tolist(), n, 0, k, vocab_size=N_ITEMS)
    colors = [str(v) for v in df["color"].dropna()]
    _check_ids(f.loc["color"], colors, n, int(df["color"].isna().sum()), k, vocabulary=COLORS)
    for name, vocab in (("hist_item_id", {"vocab_size": N_ITEMS}), ("hist_color", {"vocabulary": COLORS})):
        lists = [[v for v in (lst if lst is not None else []) if v is not None] for lst in df[name]]
        elems = [v for lst in lists for v in lst]
        lengths = np.array([len(lst) for lst in lists], dtype=float)
        _check_ids(f.loc[name], elems, n, int((lengths == 0).sum()), k, **vocab)
        assert f.loc[name]["mean"] == pytest.approx(lengths.mean())
        assert f.loc[name]["std"] == pytest.approx(lengths.std())


def test_dense_position_labels_vs_pandas(world):
    ds, frames = world
    df = frames[DAY]
    f = field_stats(ds, DAY, bins=8).frame.set_index("field")
    price = df["price"].to_numpy()
    p = f.loc["price"]
    assert (p.coverage, p.oov_rate, p.cardinality, p.top_json) == (1.0, 0.0, 0, [])
    assert p["mean"] == pytest.approx(price.mean()) and p["std"] == pytest.approx(price.std())
    edges = np.quantile(price, np.linspace(0, 1, 9))  # all 400 values are in the sample: exact quantiles
    np.testing.assert_allclose(p.hist_json["edges"], edges)
    assert p.hist_json["counts"] == np.histogram(price, edges)[0].tolist() and sum(p.hist_json["counts"]) == 400
    pos = f.loc["position"]
    assert pos["mean"] == pytest.approx(df["position"].mean()) and pos["std"] == pytest.approx(df["position"].std(ddof=0))
    assert pos.hist_json["counts"] == [int((df["position"] == i).sum()) for i in range(1, 6)]
    assert pos.cardinality == df["position"].nunique()
    for label in ("click", "conversion"):
        row = f.loc[label]
        assert row.kind == "label" and row["mean"] == pytest.approx(df[label].mean())
        assert row.hist_json["counts"] == [int((df[label] == 0).sum()), int((df[label] == 1).sum())]


def test_images_vs_brute_force(world):
    ds, frames = world
    df = frames[DAY]
    f = field_stats(ds, DAY).frame.set_index("field")
    bright = {i: np.frombuffer(image_bytes(i), np.uint8).astype(float).mean() / 255 for i in range(N_IMAGES)}
    refs = df["item_id"].tolist()  # every row references its candidate item (item_id has no nulls here)
    with_img = [bright[v] for v in refs if 0 <= v < N_IMAGES]
    row = f.loc["item_image"]
    assert row.coverage == pytest.approx(len(with_img) / len(refs))
    assert row["mean"] == pytest.approx(np.mean(with_img)) and row["std"] == pytest.approx(np.std(with_img))
    assert row.cardinality == len({v for v in refs if 0 <= v < N_IMAGES})
    hist_refs = [v for lst in df["hist_item_id"] if lst is not None for v in lst if v is not None]
    assert f.loc["hist_image"].coverage == pytest.approx(np.mean([0 <= v < N_IMAGES for v in hist_refs]))
    assert SHAPE == (3, 4, 4)


def test_reference_edges_make_days_comparable(world):
    ds, frames = world
    ref = field_stats(ds, DAY)
    edges = edges_from(ref)
    other = field_stats(ds, "2026-01-02", reference_edges=edges).frame.set_index("field").loc["price"]
    assert other.hist_json["edges"] == edges["price"]
    price = frames["2026-01-02"]["price"].to_numpy()
    clipped = np.clip(price, edges["price"][0], edges["price"][-1])  # out-of-range values land in end bins
    assert other.hist_json["counts"] == np.histogram(clipped, edges["price"])[0].tolist()
    assert field_stats(ds, "2026-01-02", reference_edges=edges).meta["dense_edges"]["price"] == "reference"


def test_top_shares_sum_to_one_and_other(world):
    ds, _ = world
    f = field_stats(ds, DAY, top_k=2).frame
    for r in f.itertuples():
        if r.top_json:
            assert r.top_json[-1][0] == OTHER
            assert sum(s for _, s in r.top_json) == pytest.approx(1.0)


def test_stats_refuse_bad_data(tmp_path):
    _, frames = write_dataset(tmp_path, days=(DAY,), rows=30, files=1, images=False)
    df = frames[DAY]
    df.loc[7, "position"] = 99
    from data_fixtures import write_day

    write_day(tmp_path, DAY, df, files=1)
    with pytest.raises(DataError, match="row 7: position 99 out of range"):
        field_stats(DailyDataset(tmp_path), DAY)


def test_stats_match_loader_counts(world):
    ds, _ = world
    f = field_stats(ds, DAY).frame.set_index("field")
    c = ds.validate(DAY).counts
    for name in ("user_id", "item_id", "color", "hist_item_id", "hist_color"):
        fc = c.fields[name]
        assert f.loc[name].missing_rate == pytest.approx(fc.missing / fc.rows)
        assert f.loc[name].oov_rate == pytest.approx(fc.oov / fc.values)
    assert pd.Series(f["rows"]).eq(400).all()
