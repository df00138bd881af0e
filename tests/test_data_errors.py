"""Every bad input of the data contract gets an InputError naming file, column, row and what was expected.

Each value problem is checked both by ``validate(day)`` (whole day, no tensors) and while streaming.
Rows in messages are 0-based within the named file; the bad row sits in a later row group and in the
second file so the offsets are exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctrlens.data import DailyDataset, DataError, Schema
from ctrlens.data.schema import SchemaError
from ctrlens.errors import InputError
from data_fixtures import make_schema, random_frame, to_table, write_images

DAY = "2026-01-01"
BAD_ROW = 13  # within part-1.parquet (row groups of 5 rows: row group 2)


def _write(root: Path, df1: pd.DataFrame | pa.Table, *, schema: Schema | None = None, images: bool = False) -> Path:
    """A dataset whose day has a good part-0 and ``df1`` as part-1; returns part-1's path."""
    schema = schema or make_schema(images=images)
    schema.save(root)
    folder = root / f"day={DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    good = random_frame(20, np.random.default_rng(0))
    if schema["item_id"].oov == "error":  # the good file must be good under the stricter policy too
        good = _in_vocab(good)
    pq.write_table(to_table(good), folder / "part-0.parquet", row_group_size=5)
    t = df1 if isinstance(df1, pa.Table) else to_table(df1)
    pq.write_table(t, folder / "part-1.parquet", row_group_size=5)
    if images:
        write_images(root)
    return folder / "part-1.parquet"


def _frame() -> pd.DataFrame:
    return random_frame(20, np.random.default_rng(1))


def _in_vocab(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["item_id"] = np.arange(len(df)) % 40
    df["hist_item_id"] = [[1, 2]] * len(df)
    return df


def _both(root: Path) -> list[str]:
    """Messages of validate() and of streaming the day (both must fail)."""
    msgs = []
    for run in (lambda ds: ds.validate(DAY), lambda ds: list(ds.iter_batches(DAY, 7))):
        with pytest.raises(InputError) as e:
            run(DailyDataset(root))
        msgs.append(str(e.value))
    return msgs


def _replace(t: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    return t.set_column(t.schema.get_field_index(name), name, arr)


# -- layout ----------------------------------------------------------------------------------------


def test_missing_schema(tmp_path):
    (tmp_path / f"day={DAY}").mkdir()
    with pytest.raises(SchemaError, match=r"schema\.json: schema file not found"):
        DailyDataset(tmp_path)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="dataset root not found"):
        DailyDataset(tmp_path / "nope")


def test_invalid_schema_json(tmp_path):
    (tmp_path / "schema.json").write_text("{not json")
    with pytest.raises(InputError, match=r"schema\.json: not valid JSON"):
        DailyDataset(tmp_path)


def test_absent_day_lists_days_present(tmp_path):
    _write(tmp_path, _frame())
    with pytest.raises(DataError) as e:
        DailyDataset(tmp_path).iter_batches("2026-02-01")  # raised at the call, before iterating
    assert "day '2026-02-01' not found" in str(e.value) and "days present: 2026-01-01" in str(e.value)
    assert e.value.day == "2026-02-01"


def test_empty_day_zero_rows(tmp_path):
    f = _write(tmp_path, _frame())
    t = to_table(_frame()).slice(0, 0)
    pq.write_table(t, f)
    pq.write_table(t, f.parent / "part-0.parquet")
    for msg in _both(tmp_path):
        assert f"day {DAY} is empty" in msg and "0 rows" in msg


def test_empty_day_no_files(tmp_path):
    make_schema(images=False).save(tmp_path)
    (tmp_path / f"day={DAY}").mkdir()
    for msg in _both(tmp_path):
        assert f"day {DAY} is empty" in msg and "no *.parquet files" in msg


def test_bad_partition_name(tmp_path):
    _write(tmp_path, _frame())
    (tmp_path / "day=2026-13-01").mkdir()
    with pytest.raises(DataError, match=r"day=2026-13-01.*must be day=YYYY-MM-DD"):
        DailyDataset(tmp_path).days()


def test_corrupt_parquet(tmp_path):
    f = _write(tmp_path, _frame())
    f.write_bytes(b"this is not parquet at all")
    for msg in _both(tmp_path):
        assert str(f) in msg and "not a readable Parquet file" in msg


def test_truncated_parquet(tmp_path):
    f = _write(tmp_path, _frame())
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    for msg in _both(tmp_path):
        assert str(f) in msg and "Parquet" in msg


# -- columns ---------------------------------------------------------------------------------------


def test_missing_column(tmp_path):
    f = _write(tmp_path, _frame().drop(columns=["price"]))
    for msg in _both(tmp_path):
        assert str(f) in msg and "missing column(s) ['price']" in msg and "dense field" in msg


def test_extra_column_refused_unless_listed(tmp_path):
    df = _frame().assign(debug_flag=1)
    f = _write(tmp_path, df)
    for msg in _both(tmp_path):
        assert str(f) in msg and "unexpected column(s) ['debug_flag']" in msg and "passthrough_columns" in msg
    # listing it in the schema makes the loader ignore it
    make_schema(images=False, passthrough=("debug_flag",)).save(tmp_path)
    assert DailyDataset(tmp_path).validate(DAY).rows == 40


def test_mistyped_sparse_float(tmp_path):
    df = _frame()
    df["user_id"] = df["user_id"].astype("float64")  # what pandas does to ints with missing values
    f = _write(tmp_path, df)
    for msg in _both(tmp_path):
        assert str(f) in msg and "column 'user_id'" in msg and "expected integer ids" in msg
        assert "got double" in msg and "'Int64'" in msg


def test_mistyped_sequence_and_dense_and_label(tmp_path):
    cases = {
        "hist_item_id": (pa.array(["1,2"] * 20), "expected list<int64>"),
        "hist_color": (pa.array([[1]] * 20, type=pa.list_(pa.int64())), "expected list<string>"),
        "price": (pa.array(["1.5"] * 20), "expected float or integer numbers"),
        "click": (pa.array(["yes"] * 20), "expected 0/1 label"),
        "color": (pa.array([1] * 20), "expected string values"),
        "position": (pa.array([1.0] * 20), "expected integer positions 1..5"),
    }
    for col, (arr, want) in cases.items():
        root = tmp_path / col
        root.mkdir()
        f = _write(root, _replace(to_table(_frame()), col, arr))
        for msg in _both(root):
            assert str(f) in msg and f"column {col!r}" in msg and want in msg, msg


# -- values ----------------------------------------------------------------------------------------


def test_oov_error_sparse(tmp_path):
    df = _in_vocab(_frame())
    df.loc[BAD_ROW, "item_id"] = 41
    f = _write(tmp_path, df, schema=make_schema(images=False, item_oov="error"))
    for msg in _both(tmp_path):
        assert f"{f}: column 'item_id': row {BAD_ROW}: id 41 is out of vocabulary" in msg
        assert "[0, 40)" in msg


def test_oov_error_sequence_shares_table_policy(tmp_path):
    df = _in_vocab(_frame())
    df.at[BAD_ROW, "hist_item_id"] = [3, -5]
    f = _write(tmp_path, df, schema=make_schema(images=False, item_oov="error"))
    for msg in _both(tmp_path):
        assert f"{f}: column 'hist_item_id': row {BAD_ROW}: id -5 is out of vocabulary" in msg


def test_oov_bucket_is_not_an_error(tmp_path):
    df = _frame()
    df.loc[BAD_ROW, "item_id"] = 1000
    _write(tmp_path, df)
    ds = DailyDataset(tmp_path)
    assert ds.validate(DAY).counts.fields["item_id"].oov >= 1


@pytest.mark.parametrize("value, word", [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")])
def test_non_finite_dense(tmp_path, value, word):
    t = to_table(_frame())
    price = t.column("price").to_numpy().copy()
    price[BAD_ROW] = value
    f = _write(tmp_path, _replace(t, "price", pa.array(price, from_pandas=False)))  # keep NaN as NaN, not null
    for msg in _both(tmp_path):
        assert f"{f}: column 'price': row {BAD_ROW}: expected a finite number, got {word}" in msg


def test_null_dense_without_fill(tmp_path):
    df = _frame()
    df.loc[BAD_ROW, "price"] = np.nan  # pandas writes it as null
    f = _write(tmp_path, df)
    for msg in _both(tmp_path):
        assert f"{f}: column 'price': row {BAD_ROW}: missing value (null" in msg and "fill" in msg


def test_null_dense_with_fill_is_filled_and_counted(tmp_path):
    df = _frame()
    df.loc[BAD_ROW, "price"] = np.nan
    _write(tmp_path, df, schema=make_schema(images=False, dense_fill=-1.0))
    ds = DailyDataset(tmp_path)
    b = ds.load_day(DAY)
    assert float(b.features["price"][20 + BAD_ROW]) == -1.0
    assert ds.counts(DAY).fields["price"].missing == 1


def test_conversion_without_click(tmp_path):
    df = _frame()
    df.loc[BAD_ROW, ["click", "conversion"]] = [0, 1]
    f = _write(tmp_path, df)
    for msg in _both(tmp_path):
        assert f"{f}: column 'conversion': row {BAD_ROW}: conversion=1 without click" in msg


@pytest.mark.parametrize("col, value", [("click", 2), ("conversion", -1)])
def test_label_not_binary(tmp_path, col, value):
    df = _frame()
    df.loc[BAD_ROW, ["click", "conversion"]] = [1, 0]
    df.loc[BAD_ROW, col] = value
    f = _write(tmp_path, df)
    for msg in _both(tmp_path):
        assert f"{f}: column {col!r}: row {BAD_ROW}: label must be 0 or 1, got {value}" in msg


@pytest.mark.parametrize("col, fill, expected", [("click", 0, "missing label (null)"), ("position", 1, "missing position")])
def test_label_or_position_null(tmp_path, col, fill, expected):
    t = _replace(to_table(_frame()), col, pa.array([None if i == BAD_ROW else fill for i in range(20)], type=pa.int64()))
    if col == "click":  # no conversion without a click
        t = _replace(t, "conversion", pa.array([0] * 20))
    f = _write(tmp_path, t)
    for msg in _both(tmp_path):
        assert f"{f}: column {col!r}: row {BAD_ROW}: {expected}" in msg


@pytest.mark.parametrize("value", [0, 6])
def test_position_out_of_range(tmp_path, value):
    df = _frame()
    df.loc[BAD_ROW, "position"] = value
    f = _write(tmp_path, df)
    for msg in _both(tmp_path):
        assert f"{f}: column 'position': row {BAD_ROW}: position {value} out of range: expected an integer in 1..5" in msg


# -- image table -----------------------------------------------------------------------------------


def test_image_table_missing(tmp_path):
    _write(tmp_path, _frame(), images=True)
    (tmp_path / "images.parquet").unlink()
    with pytest.raises(DataError, match=r"images\.parquet: image table not found"):
        DailyDataset(tmp_path)


def test_image_wrong_size_and_duplicates(tmp_path):
    _write(tmp_path, _frame(), images=True)
    p = tmp_path / "images.parquet"
    pq.write_table(pa.table({"item_id": [0, 1, 2], "image": [b"\x00" * 48, b"\x00" * 47, b"\x00" * 48]}), p)
    for msg in _both(tmp_path):
        assert f"{p}: column 'image': row 1: image has 47 bytes, expected 48" in msg
    pq.write_table(pa.table({"item_id": [0, 1, 1], "image": [b"\x00" * 48] * 3}), p)
    for msg in _both(tmp_path):
        assert f"{p}: column 'item_id': row 2: item_id 1 appears 2 times" in msg
    pq.write_table(pa.table({"id": [0], "image": [b"\x00" * 48]}), p)
    for msg in _both(tmp_path):
        assert f"{p}: column 'item_id': missing column 'item_id'" in msg


def test_bad_arguments(tmp_path):
    _write(tmp_path, _frame())
    ds = DailyDataset(tmp_path)
    with pytest.raises(InputError, match="rank must be in"):
        list(ds.iter_batches(DAY, rank=2, world_size=2))
    with pytest.raises(InputError, match="batch_size must be >= 1"):
        list(ds.iter_batches(DAY, batch_size=0))


def test_errors_carry_fields(tmp_path):
    df = _frame()
    df.loc[BAD_ROW, "position"] = 9
    f = _write(tmp_path, df)
    with pytest.raises(DataError) as e:
        DailyDataset(tmp_path).validate(DAY)
    assert (e.value.file, e.value.column, e.value.row) == (str(f), "position", BAD_ROW)
    assert json.dumps(str(e.value)).count("\\n") == 0  # one line, for the CLI
