"""DailyDataset: round trip against the source frames, images, sharding, shuffling, DataLoader use."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ctrlens.data import Batch, DailyDataset, Schema
from data_fixtures import (
    COLORS,
    N_IMAGES,
    SHAPE,
    expected_features,
    image_bytes,
    write_dataset,
)

DAY = "2026-01-01"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("daily")
    schema, frames = write_dataset(root, rows=300)
    return root, schema, frames


def test_days_sorted_and_schema_loaded(world):
    root, schema, _ = world
    (root / "notes").mkdir(exist_ok=True)  # other folders are ignored
    ds = DailyDataset(root)
    assert ds.days() == ["2026-01-01", "2026-01-02"]
    assert ds.schema == schema
    assert ds.num_rows(DAY) == 300
    assert [p.name for p in ds.files(DAY)] == ["part-0.parquet", "part-1.parquet"]


def test_round_trip_every_tensor(world):
    root, schema, frames = world
    ds = DailyDataset(root)
    for day, df in frames.items():
        batches = list(ds.iter_batches(day, batch_size=64))
        assert [len(b) for b in batches] == [64, 64, 64, 64, 44]
        b = Batch.concat(batches)
        exp = expected_features(df)
        for name, want in exp.items():
            got = b.features[name].numpy()
            np.testing.assert_array_equal(got, want, err_msg=name)
        assert b.features["price"].dtype == torch.float32
        for k in ("user_id", "item_id", "color", "hist_item_id", "hist_color", "position"):
            assert b.features[k].dtype == torch.int64
        for s in ("hist_item_id", "hist_color"):
            np.testing.assert_array_equal(b.masks[s].numpy(), exp[s] != 0)
            assert b.masks[s].dtype == torch.bool
        np.testing.assert_array_equal(b.labels["click"].numpy(), df["click"].to_numpy(np.float32))
        np.testing.assert_array_equal(b.labels["conversion"].numpy(), df["conversion"].to_numpy(np.float32))
        np.testing.assert_array_equal(b.row.numpy(), np.arange(len(df)))
        users = df["user_id"].astype("float64").fillna(-1).to_numpy().astype(np.int64)
        np.testing.assert_array_equal(b.user.numpy(), users)  # raw ids, OOV users keep their id


def test_sequences_keep_last_max_len_and_right_pad(tmp_path):
    schema, frames = write_dataset(tmp_path, days=(DAY,), rows=4, files=1, images=False)
    df = frames[DAY]
    df.loc[:, "hist_item_id"] = pd.Series([[1, 2, 3, 4, 5, 6], [7], None, [8, None, 9]])
    from data_fixtures import write_day

    for p in (tmp_path / f"day={DAY}").glob("*.parquet"):
        p.unlink()
    write_day(tmp_path, DAY, df, files=1)
    b = DailyDataset(tmp_path).load_day(DAY)
    assert b.features["hist_item_id"].tolist() == [[5, 6, 7, 8], [9, 0, 0, 0], [0, 0, 0, 0], [10, 11, 0, 0]]
    assert b.masks["hist_item_id"].sum(1).tolist() == [4, 1, 0, 2]


def test_missing_and_oov_counts(world):
    root, _, frames = world
    ds = DailyDataset(root)
    df = frames[DAY]
    list(ds.iter_batches(DAY, 100))
    c = ds.counts(DAY)
    assert c.rows == 300
    exp = expected_features(df)
    for name in ("user_id", "item_id", "color"):
        assert c.fields[name].missing == int((exp[name] == 0).sum()) == int(df[name].isna().sum())
        assert c.fields[name].oov == int((exp[name] == 1).sum())
    assert c.fields["item_id"].oov > 0 and c.fields["user_id"].oov > 0 and c.fields["color"].oov > 0
    # sequences count elements before truncation (all non-null elements of all lists)
    elems = [v for lst in df["hist_item_id"] if lst is not None for v in lst if v is not None]
    assert c.fields["hist_item_id"].values == len(elems)
    assert c.fields["hist_item_id"].oov == sum(1 for v in elems if not 0 <= v < 40)
    assert c.fields["hist_item_id"].missing == sum(1 for lst in df["hist_item_id"]
                                                    if lst is None or all(v is None for v in lst))
    assert ds.oov_counts(DAY)["color"] == int((df["color"].notna() & ~df["color"].isin(COLORS)).sum())


def test_images_unique_items_and_blank_row(world):
    root, _, frames = world
    ds = DailyDataset(root)
    df = frames[DAY]
    c, h, w = SHAPE
    for b in ds.iter_batches(DAY, 50):
        assert b.images is not None and b.images.dtype == torch.float32
        assert b.images.shape[1:] == SHAPE
        assert torch.all(b.images[0] == 0)
        assert 0 <= float(b.images.min()) and float(b.images.max()) <= 1
        idx_item = b.image_index["item_image"]
        idx_hist = b.image_index["hist_image"]
        assert idx_item.shape == (len(b),) and idx_hist.shape == b.features["hist_item_id"].shape
        # every image row appears once (unique items), and is referenced
        used = torch.cat([idx_item, idx_hist.flatten()]).unique()
        assert len(used) <= b.images.shape[0]
        assert b.images.shape[0] == len(torch.cat([idx_item, idx_hist.flatten(), torch.zeros(1, dtype=torch.long)]).unique())
        for i in range(len(b)):
            raw = int(df["item_id"].iloc[int(b.row[i])])
            img = b.images[idx_item[i]]
            if 0 <= raw < N_IMAGES:
                want = np.frombuffer(image_bytes(raw), np.uint8).reshape(c, h, w) / 255.0
                np.testing.assert_allclose(img.numpy(), want, rtol=0, atol=1e-6)
            else:
                assert int(idx_item[i]) == 0
        # padding positions point at the blank image
        assert torch.all(idx_hist[~b.masks["hist_item_id"]] == 0)


def test_ddp_shards_disjoint_equal_and_cover(world):
    root, _, _ = world
    ds = DailyDataset(root)
    for world_size in (1, 3, 7):
        rows, counts = [], []
        for rank in range(world_size):
            bs = list(ds.iter_batches(DAY, 16, rank=rank, world_size=world_size))
            counts.append(len(bs))
            rows.append(torch.cat([b.row for b in bs]).numpy())
        share = 300 // world_size
        assert all(len(r) == share for r in rows)
        assert len(set(counts)) == 1  # equal batch counts: DDP never waits on a missing batch
        allrows = np.concatenate(rows)
        assert len(np.unique(allrows)) == len(allrows) == share * world_size
    # pad: every row used, ranks still equal
    rows = [torch.cat([b.row for b in ds.iter_batches(DAY, 16, rank=r, world_size=7, remainder="pad")]).numpy()
            for r in range(7)]
    assert all(len(r) == 43 for r in rows)  # ceil(300 / 7)
    assert set(np.concatenate(rows)) == set(range(300))
    # exact: every row exactly once (evaluation), shares differ by at most one row
    for world_size, limit in ((7, None), (3, 101), (4, 2)):
        rows = [torch.cat([b.row for b in ds.iter_batches(DAY, 16, rank=r, world_size=world_size, limit=limit,
                                                          remainder="exact")] or [torch.empty(0, dtype=torch.long)]).numpy()
                for r in range(world_size)]
        total = 300 if limit is None else limit
        assert sorted(np.concatenate(rows).tolist()) == list(range(total))
        assert max(map(len, rows)) - min(map(len, rows)) <= 1
    it = ds.torch_dataset(DAY, 16, rank=2, world_size=7, remainder="exact")
    assert it.num_batches() == len(list(iter(it))) == 3  # 43 rows


def test_shuffle_deterministic_and_complete(world):
    root, _, frames = world
    ds = DailyDataset(root)
    a = torch.cat([b.row for b in ds.iter_batches(DAY, 32, shuffle=True, seed=3)]).numpy()
    b = torch.cat([b.row for b in ds.iter_batches(DAY, 32, shuffle=True, seed=3)]).numpy()
    c = torch.cat([b.row for b in ds.iter_batches(DAY, 32, shuffle=True, seed=4)]).numpy()
    np.testing.assert_array_equal(a, b)
    assert sorted(a) == list(range(300)) and not np.array_equal(a, c) and not np.array_equal(a, np.arange(300))
    # shuffled rows still carry their own values
    batch = next(ds.iter_batches(DAY, 300, shuffle=True, seed=1))
    exp = expected_features(frames[DAY])
    np.testing.assert_array_equal(batch.features["hist_item_id"].numpy(), exp["hist_item_id"][batch.row.numpy()])
    # with a small shuffle buffer, shards stay disjoint across ranks
    rows = [torch.cat([x.row for x in ds.iter_batches(DAY, 8, shuffle=True, seed=2, rank=r, world_size=2,
                                                      shuffle_buffer=20)]) for r in range(2)]
    assert len(set(rows[0].tolist()) & set(rows[1].tolist())) == 0 and len(rows[0]) == len(rows[1]) == 150


def test_limit_load_day_and_read_frame(world):
    root, _, frames = world
    ds = DailyDataset(root)
    b = ds.load_day(DAY, limit=120)
    assert len(b) == 120 and b.row.tolist() == list(range(120))
    full = ds.load_day(DAY)
    assert len(full) == 300
    rows = [torch.cat([x.row for x in ds.iter_batches(DAY, 50, limit=101, rank=r, world_size=2)]) for r in range(2)]
    assert rows[0].tolist() == list(range(50)) and rows[1].tolist() == list(range(50, 100))
    frame = ds.read_frame(DAY)
    assert list(frame.columns) == list(frames[DAY].columns) and len(frame) == 300
    np.testing.assert_allclose(frame["price"].to_numpy(), frames[DAY]["price"].to_numpy())
    assert not ds.load_day(DAY, images=False).images


def test_torch_dataloader_ddp_and_workers(world):
    root, _, _ = world
    ds = DailyDataset(root)
    tds = ds.torch_dataset(["2026-01-01", "2026-01-02"], batch_size=32, rank=1, world_size=2, shuffle=True, seed=0)
    loader = torch.utils.data.DataLoader(tds, batch_size=None)
    batches = list(loader)
    assert all(isinstance(b, Batch) for b in batches)
    assert len(batches) == tds.num_batches() == 2 * 5  # 150 rows per day -> 5 batches
    other = ds.torch_dataset(["2026-01-01", "2026-01-02"], batch_size=32, rank=0, world_size=2, shuffle=True, seed=0)
    mine = {(i // 5, int(r)) for i, b in enumerate(batches) for r in b.row}
    theirs = {(i // 5, int(r)) for i, b in enumerate(other) for r in b.row}
    assert not mine & theirs and len(mine) == len(theirs) == 300
    tds.set_epoch(1)
    assert [b.row.tolist() for b in tds] != [b.row.tolist() for b in batches]
    # two workers split the rank's share again, disjointly
    two = list(torch.utils.data.DataLoader(ds.torch_dataset(DAY, 25, rank=0, world_size=1), batch_size=None,
                                           num_workers=2))
    rows = torch.cat([b.row for b in two]).tolist()
    assert sorted(rows) == list(range(300)) and len(two) == ds.torch_dataset(DAY, 25).num_batches(num_workers=2)


def test_string_user_ids_and_no_images(tmp_path):
    from ctrlens.data import SparseField

    schema = Schema(fields=(SparseField("user", 3, dtype="string", vocabulary=("a", "b", "c"), role="user"),),
                    labels=("click",))
    schema.save(tmp_path)
    (tmp_path / f"day={DAY}").mkdir()
    pd.DataFrame({"user": ["b", None, "zz", "a"], "click": [1, 0, 0, 1]}).to_parquet(
        tmp_path / f"day={DAY}" / "x.parquet")
    b = DailyDataset(tmp_path).load_day(DAY)
    assert b.features["user"].tolist() == [3, 0, 1, 2]
    assert b.user.tolist() == [1, -1, -2, 0]  # vocabulary position; -1 missing, -2 out of vocabulary
    assert b.images is None and b.image_index == {}


def test_pandas_partition_cols_and_passthrough(tmp_path):
    """The writer in the docs: pandas ``partition_cols=["day"]`` plus a listed extra column."""
    from ctrlens.data import DenseField, SparseField

    Schema(fields=(SparseField("item_id", 10), DenseField("price")), labels=("click",),
           extra={"passthrough_columns": ["ts"]}).save(tmp_path)
    df = pd.DataFrame({"item_id": [1, 2, 3, 4], "price": [1.0, 2.0, 3.0, 4.0], "click": [0, 1, 0, 1],
                       "ts": [10, 11, 12, 13], "day": ["2026-01-02", "2026-01-01", "2026-01-02", "2026-01-01"]})
    df.to_parquet(tmp_path, partition_cols=["day"])
    ds = DailyDataset(tmp_path)
    assert ds.days() == ["2026-01-01", "2026-01-02"]
    b = ds.load_day("2026-01-01")
    assert b.features["item_id"].tolist() == [4, 6] and b.labels["click"].tolist() == [1.0, 1.0]
    assert ds.read_frame("2026-01-01")["ts"].tolist() == [11, 13]
