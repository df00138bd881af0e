"""Loader and field-statistics throughput on one synthetic day, against the obvious approach.

The obvious approach: ``pandas.read_parquet`` the whole day, then map ids and pad sequences row by row
in Python (what a hand-written Dataset.__getitem__ does), then stack tensors. It is timed on a slice of
the day and compared per row. Peak memory: the process's peak RSS growth while streaming the whole day
(it must stay far below the day's in-memory size).

    .venv/bin/python benchmarks/data_loader.py [--quick] [--rows N]

The last line printed is one JSON object with figures, targets and "met" booleans.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ctrlens.data import DailyDataset, DenseField, ImageField, PositionField, Schema, SequenceField, SparseField
from ctrlens.data.stats import field_stats

DAY = "2026-01-01"
MAX_LEN = 20


def write_day(root: Path, rows: int, seed: int = 0) -> Schema:
    rng = np.random.default_rng(seed)
    schema = Schema(
        fields=(
            SparseField("user_id", 100_000, role="user"),
            SparseField("item_id", 50_000, table="item", role="item"),
            SparseField("category_id", 500, table="category"),
            SparseField("shop_id", 5_000),
            SequenceField("hist_item_id", table="item", max_len=MAX_LEN),
            SequenceField("hist_category_id", table="category", max_len=MAX_LEN),
            DenseField("price"),
            DenseField("score"),
            PositionField(max_position=10),
            ImageField("item_image", "item_id"),
        ),
        labels=("click", "conversion"),
        image_table="images.parquet",
        image_shape=(3, 32, 32),
    )
    schema.save(root)
    folder = root / f"day={DAY}"
    folder.mkdir(parents=True)
    per_file = 250_000
    for f, start in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - start)
        lengths = rng.integers(0, 2 * MAX_LEN, n)
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
        click = (rng.random(n) < 0.1).astype(np.int8)
        t = pa.table({
            "user_id": rng.integers(0, 100_500, n),
            "item_id": rng.integers(0, 50_500, n),
            "category_id": rng.integers(0, 500, n),
            "shop_id": rng.integers(0, 5_000, n),
            "hist_item_id": pa.ListArray.from_arrays(offsets, rng.integers(0, 50_000, int(offsets[-1]))),
            "hist_category_id": pa.ListArray.from_arrays(offsets, rng.integers(0, 500, int(offsets[-1]))),
            "price": rng.lognormal(2, 1, n),
            "score": rng.normal(0, 1, n),
            "position": rng.integers(1, 11, n),
            "click": click,
            "conversion": (click * (rng.random(n) < 0.2)).astype(np.int8),
        })
        pq.write_table(t, folder / f"part-{f}.parquet", row_group_size=131_072)
    items = np.arange(20_000)
    pq.write_table(pa.table({"item_id": items, "image": pa.array(
        [rng.integers(0, 256, 3 * 32 * 32, dtype=np.uint8).tobytes() for _ in items], type=pa.binary())}),
        root / "images.parquet")
    return schema


def naive(root: Path, schema: Schema, rows: int) -> float:
    """Rows/s of pandas + per-row Python mapping (no images), on the first ``rows`` rows."""
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.concat([pd.read_parquet(p) for p in sorted((root / f"day={DAY}").glob("*.parquet"))]).head(rows)
    sizes = {f.name: f.vocab_size for f in schema.sparse}

    def idx(v, size):
        return 0 if v is None else (v + 2 if 0 <= v < size else 1)

    feats = {}
    for name, size in sizes.items():
        feats[name] = torch.tensor([idx(v, size) for v in df[name].tolist()])
    for name, table in (("hist_item_id", "item_id"), ("hist_category_id", "category_id")):
        out = []
        for lst in df[name].tolist():
            v = [idx(x, sizes[table]) for x in list(lst)[-MAX_LEN:]]
            out.append(v + [0] * (MAX_LEN - len(v)))
        feats[name] = torch.tensor(out)
    for name in ("price", "score"):
        feats[name] = torch.tensor(df[name].to_numpy(np.float32))
    return rows / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200k rows instead of 1M")
    ap.add_argument("--rows", type=int, default=None)
    args = ap.parse_args()
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        schema = write_day(root, rows)
        print(f"wrote {rows} rows in {time.perf_counter() - t0:.1f}s")
        ds = DailyDataset(root)
        _ = ds.images  # image table loaded once, outside the timing
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        n = 0
        for b in ds.iter_batches(DAY, 4096):
            n += len(b)
        stream_s = time.perf_counter() - t0
        rss_stream = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
        t0 = time.perf_counter()
        for b in ds.iter_batches(DAY, 4096, shuffle=True, seed=1):
            pass
        shuffle_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for b in ds.iter_batches(DAY, 4096, images=False):
            pass
        noimg_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        field_stats(ds, DAY)
        stats_s = time.perf_counter() - t0
        naive_rows = min(rows, 50_000)
        naive_rps = naive(root, schema, naive_rows)
        # in-memory size of the whole day as tensors (what load_day would hold), for the memory ratio
        day_mb = rows * (4 * 8 + 2 * MAX_LEN * 9 + 2 * 4 + 8 + 2 * 4 + 16) / 2**20
    fig = {
        "rows": rows,
        "stream_rows_per_s": round(n / stream_s),
        "stream_no_images_rows_per_s": round(rows / noimg_s),
        "shuffle_rows_per_s": round(rows / shuffle_s),
        "field_stats_rows_per_s": round(rows / stats_s),
        "naive_rows_per_s": round(naive_rps),
        "speedup_vs_naive": round(rows / noimg_s / naive_rps, 1),
        "stream_peak_rss_growth_mb": round(rss_stream, 1),
        "day_as_tensors_mb": round(day_mb, 1),
    }
    for k, v in fig.items():
        print(f"{k:32s} {v}")
    # memory: bounded by batch size, read-batch size and shuffle buffer, not by the day (same at 200k and 1M rows)
    # with images, each 4096-row batch carries ~3.7k unique 3x32x32 images as float32 (~45 MB): that part is
    # memory-bandwidth bound and reported, not targeted
    targets = {"stream_no_images_rows_per_s": 100_000, "speedup_vs_naive": 10, "stream_peak_rss_growth_mb_max": 300}
    met = {
        "stream_no_images_rows_per_s": fig["stream_no_images_rows_per_s"] >= targets["stream_no_images_rows_per_s"],
        "speedup_vs_naive": fig["speedup_vs_naive"] >= targets["speedup_vs_naive"],
        "stream_memory_bounded": rss_stream <= targets["stream_peak_rss_growth_mb_max"],
    }
    print(json.dumps({"benchmark": "data_loader", "figures": fig, "targets": targets, "met": met}))


if __name__ == "__main__":
    main()
