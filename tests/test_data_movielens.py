"""MovieLens -> data contract: on a hand-made folder (exact semantics) and on the real ml-latest-small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ctrlens.data import DailyDataset
from ctrlens.data.movielens import convert, partition_labels
from ctrlens.errors import InputError


def _tiny(src: Path) -> None:
    src.mkdir(parents=True, exist_ok=True)
    day = 86_400
    t0 = 946_684_800  # 2000-01-01 00:00:00 UTC
    pd.DataFrame({
        "userId": [1, 1, 1, 1, 2, 2],
        "movieId": [10, 30, 20, 50, 30, 10],
        "rating": [4.0, 3.5, 5.0, 1.0, 4.5, 2.0],
        "timestamp": [t0, t0 + 5, t0 + 5, t0 + 40 * day, t0 + day - 1, t0 + day],
    }).to_csv(src / "ratings.csv", index=False)
    pd.DataFrame({"movieId": [10, 20, 30, 40, 50],
                  "title": ["A", "B", "C", "D", "E"],
                  "genres": ["Drama|Comedy", "Comedy", "Action|Drama", "(no genres listed)", "Drama"]}).to_csv(
        src / "movies.csv", index=False)


def test_tiny_exact(tmp_path):
    _tiny(tmp_path / "src")
    info = convert(tmp_path / "src", tmp_path / "out", max_len=2, partition="day")
    assert (info.rows, info.users, info.items, info.partitions) == (6, 2, 5, 3)
    ds = DailyDataset(tmp_path / "out")
    assert ds.days() == ["2000-01-01", "2000-01-02", "2000-02-10"]
    f = pd.concat([ds.read_frame(d) for d in ds.days()], ignore_index=True)
    rows = {(int(r.user_id), int(r.item_id)): r for r in f.itertuples()}
    # items: movieId 10,20,30,40,50 -> 0..4; categories sorted: (no genres listed), Action, Comedy, Drama
    cats = ds.schema.extra["categories"]
    assert cats == ["(no genres listed)", "Action", "Comedy", "Drama"]
    assert [cats[int(rows[(1, m)].category_id)] for m in (0, 1, 2, 4)] == ["Drama", "Comedy", "Action", "Drama"]
    # user 1: movie 10 at t0; movies 30 and 20 at the same second t0+5 (a tie: neither sees the other)
    assert list(rows[(1, 0)].hist_item_id) == []
    assert list(rows[(1, 2)].hist_item_id) == [0] and list(rows[(1, 1)].hist_item_id) == [0]
    assert list(rows[(1, 4)].hist_item_id) == [1, 2]  # last max_len=2 of [10, 20, 30] (tie ordered by movieId)
    assert [cats[c] for c in rows[(1, 4)].hist_category_id] == ["Comedy", "Action"]
    assert list(rows[(2, 0)].hist_item_id) == [2]  # user 2, next UTC day
    assert [int(rows[k].click) for k in [(1, 0), (1, 2), (1, 1), (1, 4), (2, 2), (2, 0)]] == [1, 0, 1, 0, 1, 0]
    b = ds.load_day("2000-01-01")
    assert b.features["hist_item_id"].shape[1] == 2 and b.user is not None
    assert (tmp_path / "out" / "items.parquet").exists()


def test_partition_labels():
    d = np.array(["2000-01-01", "2000-01-06", "2000-01-07", "2000-02-29", "2001-03-15"], dtype="datetime64[D]")
    assert [str(x) for x in partition_labels(d, "month")] == ["2000-01-01"] * 3 + ["2000-02-01", "2001-03-01"]
    assert [str(x) for x in partition_labels(d, "6d")][:3] == ["2000-01-01", "2000-01-01", "2000-01-07"]
    assert list(partition_labels(d, "day")) == list(d)
    with pytest.raises(InputError, match="partition must be 'day', 'month' or '<N>d'"):
        partition_labels(d, "weekly")


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="MovieLens folder not found"):
        convert(tmp_path / "nope", tmp_path / "out")
    _tiny(tmp_path / "src")
    (tmp_path / "src" / "movies.csv").unlink()
    with pytest.raises(InputError, match=r"movies\.csv: file not found"):
        convert(tmp_path / "src", tmp_path / "out")
    _tiny(tmp_path / "src")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        convert(tmp_path / "src", tmp_path / "busy")
    with pytest.raises(InputError, match="not a ctrlens dataset"):
        convert(tmp_path / "src", tmp_path / "busy", overwrite=True)
    assert (tmp_path / "busy" / "x.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def movielens(shared_data, tmp_path_factory):
    src = shared_data / "movielens-latest-small"
    out = tmp_path_factory.mktemp("ml") / "ml"
    info = convert(src, out, max_len=20)
    return src, out, info


def test_real_counts_and_click_rate(movielens):
    src, out, info = movielens
    assert info.rows == 100_836 and info.users == 610 and info.items == 9_742
    assert info.click_rate == pytest.approx(0.482, abs=0.001)
    ds = DailyDataset(out)
    assert sum(ds.num_rows(d) for d in ds.days()) == 100_836
    assert ds.days()[0] == "1996-03-01" and ds.days()[-1] == "2018-09-01" and len(ds.days()) == info.partitions
    assert (out / "GROUPLENS_README.txt").exists()  # the licence travels with the transformation


def test_real_history_strictly_earlier(movielens):
    src, out, _ = movielens
    ds = DailyDataset(out)
    t = pd.concat([ds.read_frame(d).assign(day=d) for d in ds.days()], ignore_index=True)
    assert len(t) == 100_836
    # every (user, movie) is rated once in MovieLens: look up each history element's own timestamp
    key = t["user_id"].to_numpy() * 100_000 + t["item_id"].to_numpy()
    order = np.argsort(key)
    assert len(np.unique(key)) == len(key)
    lengths = t["hist_item_id"].map(len).to_numpy()
    assert lengths.max() == 20
    flat = np.concatenate(t["hist_item_id"].to_numpy())
    users = np.repeat(t["user_id"].to_numpy(), lengths)
    ts = np.repeat(t["timestamp"].to_numpy(), lengths)
    pos = order[np.searchsorted(key[order], users * 100_000 + flat)]
    assert (key[pos] == users * 100_000 + flat).all()
    hist_ts = t["timestamp"].to_numpy()[pos]
    assert (hist_ts < ts).all()
    # the partition is the UTC month of the rating
    month = pd.to_datetime(t["timestamp"], unit="s", utc=True).dt.strftime("%Y-%m-01")
    assert (month.to_numpy() == t["day"].to_numpy()).all()
    # exact history for a few users, brute force from ratings.csv
    r = pd.read_csv(src / "ratings.csv")
    items = pq.read_table(out / "items.parquet").to_pandas().set_index("movieId")["item_id"]
    for u in (1, 68, 414):
        mine = r[r.userId == u].sort_values(["timestamp", "movieId"])
        got = t[t.user_id == u].set_index("item_id")
        for row in mine.sample(30, random_state=0).itertuples():
            earlier = mine[mine.timestamp < row.timestamp]["movieId"].map(items).tolist()[-20:]
            assert list(got.loc[items[row.movieId], "hist_item_id"]) == earlier
            assert got.loc[items[row.movieId], "click"] == int(row.rating >= 4)
