"""Small hand-built datasets with bag fields and a label not called ``click`` (no ctrlens.synth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctrlens.data import BagField, Schema, SparseField

DAY = "2026-03-01"
TAGS = ("a", "b", "c", "d", "e")


def bag_schema(*, oov: str = "bucket", labels=("income",)) -> Schema:
    return Schema(
        fields=(
            SparseField("item", 30, table="item"),
            BagField("tags", len(TAGS), max_len=3, dtype="string", vocabulary=TAGS, weights="tag_w", pooling="mean"),
            BagField("also_items", table="item", max_len=2, oov=oov),  # borrows the item table
        ),
        labels=labels,
    )


def random_rows(n: int, rng: np.random.Generator) -> dict[str, list]:
    """Rows with null lists, empty lists, null elements, out-of-vocabulary ids and long bags."""
    item, tags, tag_w, also, label = [], [], [], [], []
    for i in range(n):
        item.append(None if i % 7 == 3 else int(rng.integers(0, 35)))
        k = int(rng.integers(0, 6))
        t = [str(rng.choice(list(TAGS) + ["zz"])) for _ in range(k)]
        w = [float(rng.integers(1, 5)) for _ in range(k)]
        if k and i % 5 == 1:
            t[0] = None  # a null id drops its weight with it
        if i % 11 == 4:
            t, w = None, None
        tags.append(t)
        tag_w.append(w)
        m = int(rng.integers(0, 4))
        a = [int(x) for x in rng.integers(0, 33, m)]
        also.append(None if i % 9 == 2 else a)
        label.append(int(rng.integers(0, 2)))
    return {"item": item, "tags": tags, "tag_w": tag_w, "also_items": also, "income": label}


def write_day(root: Path, schema: Schema, parts: list[dict], day: str = DAY) -> list[Path]:
    schema.save(root)
    folder = root / f"day={day}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rows in enumerate(parts):
        t = pa.table({
            "item": pa.array(rows["item"], pa.int64()),
            "tags": pa.array(rows["tags"], pa.list_(pa.string())),
            "tag_w": pa.array(rows["tag_w"], pa.list_(pa.float64())),
            "also_items": pa.array(rows["also_items"], pa.list_(pa.int64())),
            "income": pa.array(rows["income"], pa.int64()),
        })
        p = folder / f"part-{i}.parquet"
        pq.write_table(t, p, row_group_size=6)
        paths.append(p)
    return paths


