"""Hand-built datasets of the daily data contract for the data tests (no dependency on ctrlens.synth).

``write_dataset`` writes random days with every field kind, nulls, out-of-vocabulary ids, sequences
longer and shorter than ``max_len``, several files per day and small row groups, and returns the
source frames so tests can compare what the loader yields with a brute-force mapping of the source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ctrlens.data import DenseField, ImageField, PositionField, Schema, SequenceField, SparseField

COLORS = ("red", "green", "blue", "black")
SHAPE = (3, 4, 4)
N_ITEMS = 40  # item vocabulary
N_IMAGES = 30  # items 0..29 have an image; 30..39 do not


def make_schema(*, images: bool = True, item_oov: str = "bucket", dense_fill: float | None = None,
                passthrough: tuple[str, ...] = ()) -> Schema:
    fields = [
        SparseField("user_id", 50, role="user"),
        SparseField("item_id", N_ITEMS, table="item", role="item", oov=item_oov),  # type: ignore[arg-type]
        SparseField("color", len(COLORS), dtype="string", vocabulary=COLORS),
        SequenceField("hist_item_id", table="item", max_len=4),
        SequenceField("hist_color", table="color", max_len=3),
        DenseField("price", fill=dense_fill),
        PositionField(max_position=5),
    ]
    if images:
        fields += [ImageField("item_image", "item_id"), ImageField("hist_image", "hist_item_id")]
    return Schema(
        fields=tuple(fields),
        labels=("click", "conversion"),
        image_table="images.parquet" if images else None,
        image_shape=SHAPE if images else None,
        extra={"passthrough_columns": list(passthrough)} if passthrough else {},
    )


def random_frame(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` rows with nulls and out-of-vocabulary values in every id field."""
    user = rng.integers(0, 55, n).astype(object)  # 50..54 are OOV
    user[rng.random(n) < 0.1] = None
    item = rng.integers(-1, N_ITEMS + 3, n)  # -1 and >= 40 are OOV
    color = rng.choice(list(COLORS) + ["pink"], n).astype(object)
    color[rng.random(n) < 0.1] = None

    def seq(values: list, null_rate: float) -> list:
        out = []
        for _ in range(n):
            u = rng.random()
            if u < 0.05:
                out.append(None)
            else:
                k = int(rng.integers(0, 8))
                v = [values[j] for j in rng.integers(0, len(values), k)]
                v = [None if rng.random() < null_rate else x for x in v]
                out.append(v)
        return out

    hist_item = seq(list(range(-1, N_ITEMS + 2)), 0.05)
    hist_color = seq(list(COLORS) + ["pink"], 0.0)
    click = (rng.random(n) < 0.3).astype(np.int64)
    conversion = (click * (rng.random(n) < 0.4)).astype(np.int64)
    return pd.DataFrame({
        "user_id": pd.array(user, dtype="Int64"),
        "item_id": item.astype(np.int64),
        "color": pd.array(color, dtype="string"),
        "hist_item_id": hist_item,
        "hist_color": hist_color,
        "price": rng.lognormal(1.0, 0.8, n),
        "position": rng.integers(1, 6, n).astype(np.int64),
        "click": click,
        "conversion": conversion,
    })


def to_table(df: pd.DataFrame) -> pa.Table:
    """Arrow table with the contract's types (list<int64>, list<string>)."""
    types = {"hist_item_id": pa.list_(pa.int64()), "hist_color": pa.list_(pa.string())}
    cols = {}
    for c in df.columns:
        if c in types:
            cols[c] = pa.array(df[c].tolist(), type=types[c])
        else:
            cols[c] = pa.array(df[c], from_pandas=True)
    return pa.table(cols)


def write_day(root: Path, day: str, df: pd.DataFrame, *, files: int = 2, row_group_size: int = 37) -> list[Path]:
    folder = Path(root) / f"day={day}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(df)), files)):
        p = folder / f"part-{i}.parquet"
        pq.write_table(to_table(df.iloc[part].reset_index(drop=True)), p, row_group_size=row_group_size)
        paths.append(p)
    return paths


def image_bytes(item: int) -> bytes:
    c, h, w = SHAPE
    return (np.arange(c * h * w, dtype=np.int64) * 7 + item * 13 + 1).astype(np.uint8).tobytes()


def write_images(root: Path, n: int = N_IMAGES) -> None:
    ids = np.arange(n, dtype=np.int64)
    pq.write_table(pa.table({"item_id": ids[::-1].copy(), "image": pa.array([image_bytes(int(i)) for i in ids[::-1]],
                                                                             type=pa.binary())}),
                   Path(root) / "images.parquet")


def write_dataset(root: Path, *, days: tuple[str, ...] = ("2026-01-01", "2026-01-02"), rows: int = 300, seed: int = 0,
                  files: int = 2, row_group_size: int = 37, **schema_kw) -> tuple[Schema, dict[str, pd.DataFrame]]:
    schema = make_schema(**schema_kw)
    schema.save(root)
    rng = np.random.default_rng(seed)
    frames = {}
    for d in days:
        frames[d] = random_frame(rows, rng)
        write_day(root, d, frames[d], files=files, row_group_size=row_group_size)
    if schema.images:
        write_images(root)
    return schema, frames


# -- brute-force expectations (per row, plain Python: the loader must agree with these) ---------------


def expect_index(value, vocab_size: int | None = None, vocabulary: tuple[str, ...] | None = None) -> int:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return 0
    if vocabulary is not None:
        return vocabulary.index(value) + 2 if value in vocabulary else 1
    v = int(value)
    return v + 2 if 0 <= v < vocab_size else 1  # type: ignore[operator]


def expect_sequence(values, max_len: int, **kw) -> list[int]:
    if values is None:
        return [0] * max_len
    idx = [expect_index(v, **kw) for v in values if v is not None]
    idx = idx[-max_len:]
    return idx + [0] * (max_len - len(idx))


def expected_features(df: pd.DataFrame) -> dict[str, np.ndarray]:
    return {
        "user_id": np.array([expect_index(v, 50) for v in df["user_id"]]),
        "item_id": np.array([expect_index(v, N_ITEMS) for v in df["item_id"]]),
        "color": np.array([expect_index(v, vocabulary=COLORS) for v in df["color"]]),
        "hist_item_id": np.array([expect_sequence(v, 4, vocab_size=N_ITEMS) for v in df["hist_item_id"]]),
        "hist_color": np.array([expect_sequence(v, 3, vocabulary=COLORS) for v in df["hist_color"]]),
        "price": df["price"].to_numpy(np.float32),
        "position": df["position"].to_numpy(np.int64),
    }
