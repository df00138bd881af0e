"""Checks of the daily data contract: column presence and types per file, values per slice.

Every failure raises :class:`DataError` (an :class:`~ctrlens.errors.InputError`) whose message names the
file, the column, the row (0-based, within that file) where it applies, what was expected and what was
found -- the CLI prints it on one line and exits with code 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctrlens.data.schema import (
    BagField,
    DenseField,
    PositionField,
    Schema,
    SequenceField,
    SparseField,
)
from ctrlens.errors import InputError

#: ``schema.extra`` key listing extra columns the loader tolerates and ignores (e.g. a timestamp).
PASSTHROUGH_KEY = "passthrough_columns"
#: Columns any file may carry without listing them (writers of Hive-style partitions often keep it).
ALWAYS_ALLOWED = ("day",)


class DataError(InputError):
    """A dataset that breaks the data contract (docs/data-format.md).

    Attributes (each ``None`` where it does not apply): ``file``, ``column``, ``row`` (0-based, within
    ``file``) and ``day``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        column: str | None = None,
        row: int | None = None,
        day: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = None if file is None else str(file)
        self.column = column
        self.row = row
        self.day = day


def fail(what: str, *, file: str | Path | None = None, column: str | None = None, row: int | None = None,
         day: str | None = None) -> DataError:
    """Build a :class:`DataError` whose message starts with ``file: column 'c': row r:``."""
    parts = [str(file)] if file is not None else []
    if column is not None:
        parts.append(f"column {column!r}")
    if row is not None:
        parts.append(f"row {row}")
    prefix = ": ".join(parts)
    return DataError(f"{prefix}: {what}" if prefix else what, file=file, column=column, row=row, day=day)


# -- column types ----------------------------------------------------------------------------------


def _base(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _is_str(t: pa.DataType) -> bool:
    t = _base(t)
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def expected_columns(schema: Schema) -> dict[str, str]:
    """Column name -> human description of the expected Parquet type, for every required column."""
    out: dict[str, str] = {}
    for f in schema.fields:
        if isinstance(f, SparseField):
            out[f.name] = (
                f"string values (sparse field with a {f.vocab_size}-entry vocabulary)"
                if f.dtype == "string"
                else "integer ids, int64 (sparse field)"
            )
        elif isinstance(f, SequenceField):
            elem = "string" if schema.table_of(f.name).dtype == "string" else "int64"
            out[f.name] = f"list<{elem}> (sequence field, table {f.table!r})"
        elif isinstance(f, BagField):
            elem = "string" if schema.table_of(f.name).dtype == "string" else "int64"
            out[f.name] = f"list<{elem}> (bag field, table {f.table_name!r})"
            if f.weights:
                out[f.weights] = f"list<float> (per-id weights of bag field {f.name!r}, same lengths)"
        elif isinstance(f, DenseField):
            out[f.name] = "float or integer numbers (dense field)"
        elif isinstance(f, PositionField):
            out[f.name] = f"integer positions 1..{f.max_position} (position field)"
    for label in schema.labels:
        out[label] = "0/1 label (int, bool or float)"
    return out


def type_ok(schema: Schema, name: str, t: pa.DataType) -> bool:
    """Whether Parquet/Arrow type ``t`` is acceptable for required column ``name``."""
    if name in schema.labels:
        return _is_int(t) or pa.types.is_boolean(t) or pa.types.is_floating(t)
    if name in schema.weight_columns().values():
        return _is_list(t) and (pa.types.is_floating(t.value_type) or _is_int(t.value_type))
    f = schema[name]
    if isinstance(f, SparseField):
        return _is_str(t) if f.dtype == "string" else _is_int(t)
    if isinstance(f, (SequenceField, BagField)):
        if not _is_list(t):
            return False
        vt = t.value_type
        return _is_str(vt) if schema.table_of(name).dtype == "string" else _is_int(vt)
    if isinstance(f, DenseField):
        return pa.types.is_floating(t) or _is_int(t)
    if isinstance(f, PositionField):
        return _is_int(t)
    return False


def passthrough_columns(schema: Schema) -> tuple[str, ...]:
    cols = schema.extra.get(PASSTHROUGH_KEY) or ()
    return tuple(ALWAYS_ALLOWED) + tuple(cols)


def check_file_columns(schema: Schema, path: str | Path, arrow_schema: pa.Schema) -> None:
    """Refuse a file whose columns are missing, extra or of the wrong type (names them all)."""
    want = expected_columns(schema)
    have = {n: arrow_schema.field(n).type for n in arrow_schema.names}
    missing = [n for n in want if n not in have]
    if missing:
        desc = "; ".join(f"{n!r}: {want[n]}" for n in missing)
        raise DataError(f"{path}: missing column(s) {missing} (expected {desc}); the file has columns {list(have)}",
                        file=path, column=missing[0])
    allowed = set(want) | set(passthrough_columns(schema))
    extra = [n for n in have if n not in allowed]
    if extra:
        raise DataError(
            f"{path}: unexpected column(s) {extra}: not in schema.json. Remove them, or list them in the "
            f"schema's extra[{PASSTHROUGH_KEY!r}] to have the loader ignore them",
            file=path, column=extra[0],
        )
    for n in want:
        if not type_ok(schema, n, have[n]):
            hint = ""
            if pa.types.is_floating(have[n]) and (n in schema and isinstance(schema[n], (SparseField, PositionField))):
                hint = " (pandas turns integer columns with missing values into float: use dtype 'Int64')"
            raise fail(f"expected {want[n]}, got {have[n]}{hint}", file=path, column=n)


def check_image_sources(schema: Schema) -> None:
    """All image fields must key the one image table through the same embedding table."""
    tables = {schema.table_of(f.source).table_name for f in schema.images}
    if len(tables) > 1:
        names = [f.name for f in schema.images]
        raise DataError(
            f"schema.json: image fields {names} have sources in different embedding tables {sorted(tables)}; "
            "the one image table is keyed by the ids of one table"
        )


# -- values --------------------------------------------------------------------------------------


def first_true(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def as_numpy(arr: pa.Array | pa.ChunkedArray, dtype: str, *, writable: bool = True) -> np.ndarray:
    """Arrow -> numpy of ``dtype`` with nulls as 0 (callers check nulls separately).

    ``writable=False`` allows a read-only zero-copy view (for values only read, never handed to torch).
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_boolean(arr.type):
        arr = arr.cast(pa.int8())
    if arr.null_count:
        arr = pc.fill_null(arr, 0)
    out = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=dtype)
    # Arrow hands out read-only views; torch wants writable memory (copy only when needed)
    return out if out.flags.writeable or not writable else out.copy()


def null_mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    n = len(arr)
    if arr.null_count == 0:
        return np.zeros(n, dtype=bool)
    return np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def dense_values(arr: pa.Array, f: DenseField, *, file: Path, row0: int) -> tuple[np.ndarray, int]:
    """Float32 ``[n]`` values of a dense column and the number of nulls filled with ``f.fill``.

    Refuses nulls (unless the field has ``fill``) and NaN/inf, naming the first bad row.
    """
    nulls = null_mask(arr)
    values = as_numpy(arr, "float64")
    n_null = int(nulls.sum())
    if n_null:
        if f.fill is None:
            r = first_true(nulls)
            raise fail(
                f"missing value (null; pandas writes NaN as null) in dense field, which has no 'fill' "
                f"({n_null} such rows in this slice); give the field a fill value or clean the column",
                file=file, column=f.name, row=row0 + r,
            )
        values[nulls] = f.fill
    bad = ~np.isfinite(values)
    if bad.any():
        r = first_true(bad)
        raise fail(f"expected a finite number, got {values[r]} ({int(bad.sum())} non-finite values in this slice)",
                   file=file, column=f.name, row=row0 + r)
    return values.astype(np.float32), n_null


def position_values(arr: pa.Array, f: PositionField, *, file: Path, row0: int) -> np.ndarray:
    nulls = null_mask(arr)
    if nulls.any():
        raise fail(f"missing position (null); expected an integer in 1..{f.max_position}",
                   file=file, column=f.name, row=row0 + first_true(nulls))
    v = as_numpy(arr, "int64")
    bad = (v < 1) | (v > f.max_position)
    if bad.any():
        r = first_true(bad)
        raise fail(f"position {v[r]} out of range: expected an integer in 1..{f.max_position}",
                   file=file, column=f.name, row=row0 + r)
    return v


def label_values(schema: Schema, cols: dict[str, pa.Array], *, file: Path, row0: int) -> dict[str, np.ndarray]:
    """Float32 ``[n]`` 0/1 arrays per label; refuses nulls, values other than 0/1 and conversion without click."""
    out: dict[str, np.ndarray] = {}
    for name in schema.labels:
        arr = cols[name]
        nulls = null_mask(arr)
        if nulls.any():
            raise fail("missing label (null); expected 0 or 1", file=file, column=name, row=row0 + first_true(nulls))
        v = as_numpy(arr, "float64")
        bad = (v != 0) & (v != 1)
        if bad.any():
            r = first_true(bad)
            raise fail(f"label must be 0 or 1, got {v[r]:g}", file=file, column=name, row=row0 + r)
        out[name] = v.astype(np.float32)
    if "conversion" in out and "click" in out:
        bad = (out["conversion"] == 1) & (out["click"] == 0)
        if bad.any():
            r = first_true(bad)
            raise fail(
                f"conversion=1 without click (click=0): a conversion can only follow a click "
                f"({int(bad.sum())} such rows in this slice)",
                file=file, column="conversion", row=row0 + r,
            )
    return out


# -- reports -------------------------------------------------------------------------------------


@dataclass
class FieldCounts:
    """What the loader saw of one field (one pass over a day or a rank's share).

    ``values``: non-missing values (sparse: rows; sequence, bag: list elements, before truncation);
    ``missing``: rows with no value (sparse: null; sequence, bag: null or empty list; dense: nulls filled);
    ``oov``: values mapped to the OOV bucket.
    """

    rows: int = 0
    values: int = 0
    missing: int = 0
    oov: int = 0

    def add(self, rows: int, values: int, missing: int, oov: int) -> None:
        self.rows += rows
        self.values += values
        self.missing += missing
        self.oov += oov


@dataclass
class DayCounts:
    """Counts of one pass over a day (all rows for :meth:`DailyDataset.validate`; the rank's share
    for :meth:`DailyDataset.iter_batches`)."""

    day: str
    rows: int = 0
    fields: dict[str, FieldCounts] = field(default_factory=dict)

    def for_field(self, name: str) -> FieldCounts:
        return self.fields.setdefault(name, FieldCounts())

    @property
    def oov(self) -> dict[str, int]:
        return {k: v.oov for k, v in self.fields.items()}

    @property
    def missing(self) -> dict[str, int]:
        return {k: v.missing for k, v in self.fields.items()}


@dataclass
class ValidationReport:
    """Result of :meth:`DailyDataset.validate` for one day that passed every check."""

    day: str
    files: list[str]
    rows: int
    counts: DayCounts

    def summary(self) -> str:
        oov = {k: v for k, v in self.counts.oov.items() if v}
        missing = {k: v for k, v in self.counts.missing.items() if v}
        return (f"{self.day}: OK, {self.rows} rows in {len(self.files)} file(s); "
                f"missing {missing or 'none'}; out-of-vocabulary {oov or 'none'}")


def names(items: Iterable[str], limit: int = 10) -> str:
    """Short listing of names for messages: all if few, else first/last and a count."""
    items = list(items)
    if len(items) <= limit:
        return ", ".join(items) if items else "(none)"
    return f"{', '.join(items[:3])}, ..., {', '.join(items[-3:])} ({len(items)} in all)"


__all__ = [
    "DataError",
    "DayCounts",
    "FieldCounts",
    "PASSTHROUGH_KEY",
    "ValidationReport",
    "check_file_columns",
    "expected_columns",
    "type_ok",
]
