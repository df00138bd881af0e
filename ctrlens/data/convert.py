"""Convert a plain table (CSV or Parquet, one row per impression, a timestamp or date column) into the
daily data contract, driven by a small column mapping (YAML or a dict). See docs/data-format.md,
"Converting a plain table".

A mapping::

    time: event_time                 # or {column: ts, unit: s}  (s / ms / us / ns for epoch numbers);
                                     # the day of a row is its UTC date; the column is kept (passthrough)
    reference_days: 7                # vocabularies and normalisation from the first 7 days (default: all)
    fields:
      user_id: {kind: sparse, role: user}
      city:    {kind: sparse, min_count: 2}          # strings: vocabulary built from the reference days
      item_id: {kind: sparse, table: item}
      history: {kind: sequence, table: item, max_len: 20, delimiter: " "}
      tags:    {kind: bag, delimiter: "|", max_len: 8, pooling: mean, weights: tag_weights}
      price:   {kind: dense, normalize: log_standard, fill: 0.0}
      slot:    {kind: position, max_position: 10}
    labels:
      income: {column: income_50k, positive: [" 50000+."]}
    passthrough: [order_id]

Id columns holding strings get a vocabulary (values of the reference days by decreasing count, ties
by value; ``min_count``, ``max_size``) and are written as strings (the loader maps them); integer id
columns are written as they are, with ``vocab_size`` = the largest reference id + 1 unless given.
Fields sharing a ``table`` share one vocabulary. Nothing is written unless every column converts and
every day validates: the dataset is built in a temporary folder next to ``out`` and moved into place.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ctrlens.data.loader import DAY_PREFIX, DailyDataset
from ctrlens.data.schema import (
    SCHEMA_FILE,
    BagField,
    DenseField,
    PositionField,
    Schema,
    SchemaError,
    SequenceField,
    SparseField,
)
from ctrlens.data.validate import PASSTHROUGH_KEY, as_numpy, null_mask
from ctrlens.errors import InputError

KINDS = ("sparse", "bag", "sequence", "dense", "position")
NORMALIZE = ("none", "standard", "log_standard", "minmax")
_TOP_KEYS = {"time", "reference_days", "fields", "labels", "passthrough", "row_group_size"}
_FIELD_KEYS = {
    "sparse": {"kind", "column", "table", "role", "embedding_dim", "min_count", "max_size", "vocab_size", "oov",
               "dtype"},
    "bag": {"kind", "column", "table", "embedding_dim", "min_count", "max_size", "vocab_size", "oov", "delimiter",
            "max_len", "pooling", "weights", "dtype"},
    "sequence": {"kind", "column", "table", "delimiter", "max_len", "dtype"},
    "dense": {"kind", "column", "normalize", "fill"},
    "position": {"kind", "column", "max_position"},
}
_LABEL_KEYS = {"column", "positive", "threshold"}
_UNITS = ("s", "ms", "us", "ns")


class ConvertError(InputError):
    """A mapping or a source table that cannot be converted; the message names the key or column."""


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert_table` wrote: the dataset root, its schema, its days and rows, the reference days."""

    root: Path
    schema: Schema
    days: tuple[str, ...]
    rows: int
    reference_days: tuple[str, ...]


# -- the mapping -------------------------------------------------------------------------------------


def load_mapping(path: str | Path) -> dict:
    """Read a YAML mapping file (a dict of ``time``, ``fields``, ``labels``...)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConvertError(f"mapping {p}: file not found")
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConvertError(f"mapping {p}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(d, dict):
        raise ConvertError(f"mapping {p}: expected a mapping with keys 'time', 'fields' and 'labels', "
                           f"got {type(d).__name__}")
    return d


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConvertError(msg)


def _check_mapping(m: Mapping, src: str) -> None:
    _need(isinstance(m, Mapping), f"{src}: expected a mapping, got {type(m).__name__}")
    unknown = sorted(set(m) - _TOP_KEYS)
    _need(not unknown, f"{src}: unknown key(s) {unknown}; keys are {sorted(_TOP_KEYS)}")
    for k in ("time", "fields", "labels"):
        _need(k in m, f"{src}: key {k!r} is required")
    fields = m["fields"]
    _need(isinstance(fields, Mapping) and fields, f"{src}: 'fields' must map field names to specs")
    for name, spec in fields.items():
        where = f"{src}: fields.{name}"
        _need(isinstance(spec, Mapping), f"{where}: expected a mapping with a 'kind', got {spec!r}")
        kind = spec.get("kind")
        _need(kind in KINDS, f"{where}: kind must be one of {list(KINDS)}, got {kind!r}")
        bad = sorted(set(spec) - _FIELD_KEYS[kind])
        _need(not bad, f"{where}: unknown key(s) {bad} for kind {kind!r}; keys are {sorted(_FIELD_KEYS[kind])}")
        if kind == "dense":
            norm = spec.get("normalize", "none")
            _need(norm in NORMALIZE, f"{where}.normalize: must be one of {list(NORMALIZE)}, got {norm!r}")
        if "dtype" in spec:
            _need(spec["dtype"] in ("int64", "string"), f"{where}.dtype: must be 'int64' or 'string', got {spec['dtype']!r}")
        if kind in ("bag", "sequence"):
            _need("max_len" in spec, f"{where}: max_len is required for a {kind} field")
        if kind == "sequence":
            _need("table" in spec, f"{where}: a sequence field needs 'table' (the table of a sparse or bag field)")
        for k in ("min_count", "max_size", "vocab_size", "max_len", "max_position", "embedding_dim"):
            if k in spec:
                v = spec[k]
                _need(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                      f"{where}.{k}: must be an integer >= 1, got {v!r}")
    labels = m["labels"]
    _need(isinstance(labels, Mapping) and labels, f"{src}: 'labels' must map label names to columns")
    for name, spec in labels.items():
        if isinstance(spec, Mapping):
            bad = sorted(set(spec) - _LABEL_KEYS)
            _need(not bad, f"{src}: labels.{name}: unknown key(s) {bad}; keys are {sorted(_LABEL_KEYS)}")
            _need(not ("positive" in spec and "threshold" in spec),
                  f"{src}: labels.{name}: give 'positive' or 'threshold', not both")
        else:
            _need(isinstance(spec, str), f"{src}: labels.{name}: expected a column name or a mapping, got {spec!r}")
    pt = m.get("passthrough", [])
    _need(isinstance(pt, list) and all(isinstance(c, str) for c in pt),
          f"{src}: 'passthrough' must be a list of column names")


# -- reading -----------------------------------------------------------------------------------------


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV (header row) or Parquet file as pandas (list columns stay lists)."""
    p = Path(path)
    if not p.is_file():
        raise ConvertError(f"{p}: source table not found")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            return pq.read_table(p).to_pandas()
        if p.suffix.lower() in (".csv", ".tsv", ".txt") or p.name.lower().endswith((".csv.gz", ".tsv.gz")):
            sep = "\t" if ".tsv" in p.name.lower() else ","
            return pd.read_csv(p, sep=sep, keep_default_na=True)
    except (pa.ArrowException, OSError, ValueError, pd.errors.ParserError) as e:
        raise ConvertError(f"{p}: cannot read the table ({e})") from None
    raise ConvertError(f"{p}: unsupported file type {p.suffix!r}; give a .csv, .tsv or .parquet file")


def _column(df: pd.DataFrame, name: str, what: str, src: str) -> pd.Series:
    if name not in df.columns:
        raise ConvertError(f"{src}: column {name!r} ({what}) not found; the table has columns {list(df.columns)}")
    return df[name]


def _days(df: pd.DataFrame, spec: Any, src: str) -> tuple[np.ndarray, np.ndarray]:
    """``YYYY-MM-DD`` (UTC) of every row, and its time as int64 nanoseconds (for the order within a day)."""
    if isinstance(spec, str):
        spec = {"column": spec}
    _need(isinstance(spec, Mapping) and isinstance(spec.get("column"), str),
          f"{src}: time: expected a column name or {{column: name, unit: s}}, got {spec!r}")
    bad = sorted(set(spec) - {"column", "unit"})
    _need(not bad, f"{src}: time: unknown key(s) {bad}; keys are ['column', 'unit']")
    col = spec["column"]
    s = _column(df, col, "time", src)
    unit = spec.get("unit")
    _need(unit is None or unit in _UNITS, f"{src}: time.unit must be one of {list(_UNITS)}, got {unit!r}")
    nulls = s.isna().to_numpy()
    if nulls.any():
        raise ConvertError(f"{src}: column {col!r}: row {int(np.flatnonzero(nulls)[0])}: missing time")
    try:
        if unit is not None:
            _need(pd.api.types.is_numeric_dtype(s), f"{src}: column {col!r}: time.unit {unit!r} needs epoch numbers, "
                                                   f"got {s.dtype}")
            t = pd.to_datetime(s, unit=unit, utc=True)
        elif pd.api.types.is_numeric_dtype(s):
            raise ConvertError(f"{src}: column {col!r}: numbers as time need a unit (time: {{column: {col}, unit: s}})")
        else:
            t = pd.to_datetime(s, utc=True, format="mixed")
    except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime):
        bad_row = _first_bad_time(s, unit)
        raise ConvertError(f"{src}: column {col!r}: row {bad_row}: cannot read {s.iloc[bad_row]!r} as a date or "
                           "timestamp (ISO 8601, or epoch numbers with time.unit)") from None
    return t.dt.strftime("%Y-%m-%d").to_numpy(), t.astype("int64").to_numpy()


def _first_bad_time(s: pd.Series, unit: str | None) -> int:
    for i, v in enumerate(s):
        try:
            pd.to_datetime(v, unit=unit, utc=True) if unit else pd.to_datetime(v, utc=True)
        except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime):
            return i
    return 0


def _reference(days: np.ndarray, spec: Any, src: str) -> list[str]:
    all_days = sorted(set(days.tolist()))
    if spec is None:
        return all_days
    if isinstance(spec, int) and not isinstance(spec, bool):
        _need(spec >= 1, f"{src}: reference_days: must be >= 1, got {spec}")
        return all_days[:spec]
    if isinstance(spec, (str, dt.date)):
        a, _, b = str(spec).partition(":")
        b = b or a
        ref = [d for d in all_days if a <= d <= b]
    elif isinstance(spec, list):
        ref = sorted(str(d) for d in spec)
        missing = [d for d in ref if d not in all_days]
        _need(not missing, f"{src}: reference_days {missing} have no rows; days present: {all_days[0]} .. {all_days[-1]}")
    else:
        raise ConvertError(f"{src}: reference_days: expected N (first N days), 'FROM:TO' or a list of days, got {spec!r}")
    _need(bool(ref), f"{src}: reference_days {spec!r} select no day; days present: {all_days[0]} .. {all_days[-1]}")
    return ref


# -- columns -----------------------------------------------------------------------------------------


def _is_str_values(values: pd.Series) -> bool:
    v = values.dropna()
    return len(v) > 0 and all(isinstance(x, str) for x in v.iloc[: min(len(v), 1000)])


def _int_values(s: pd.Series, col: str, src: str) -> pd.Series:
    """Integer ids as pandas ``Int64`` (nulls kept); refuses non-integral values naming the row."""
    if pd.api.types.is_integer_dtype(s) or pd.api.types.is_bool_dtype(s):
        return s.astype("Int64")
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna() & s.notna()
    bad |= num.notna() & (num != np.floor(num.fillna(0)))
    if bad.any():
        r = int(np.flatnonzero(bad.to_numpy())[0])
        raise ConvertError(f"{src}: column {col!r}: row {r}: expected an integer id, got {s.iloc[r]!r}")
    return num.astype("Int64")


_INT_TEXT = r"^\s*-?[0-9]+\s*$"


def _lists(s: pd.Series, col: str, delimiter: str | None, src: str) -> pa.ListArray:
    """A list column, or delimited text split into lists, as an Arrow list array (vectorised).

    Text is split on ``delimiter`` and each element trimmed; empty elements become nulls (which the
    loader drops), so an empty string is a row without ids. A column the CSV reader read as numbers
    (every row one id) is a one-id list per row.
    """
    try:
        arr = pa.array(s, from_pandas=True)
        if isinstance(arr, pa.ChunkedArray):  # large columns come in chunks
            arr = arr.combine_chunks()
    except (pa.ArrowException, TypeError, ValueError):
        arr = None
    if arr is None or not (_is_list_type(arr.type) or pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
                           or pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_null(arr.type)):
        _first_bad_list(s, col, delimiter, src)  # raises naming the row
        raise ConvertError(f"{src}: column {col!r}: expected lists (or delimited text), got {s.dtype}")
    if pa.types.is_null(arr.type):
        return pa.ListArray.from_arrays(pa.array(np.zeros(len(arr) + 1, np.int32)), pa.array([], pa.int64()),
                                        mask=pa.array(np.ones(len(arr), bool)))
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        if delimiter is None:
            r = int(np.flatnonzero(~null_mask(arr))[0]) if arr.null_count < len(arr) else 0
            raise ConvertError(f"{src}: column {col!r}: row {r}: got the string {arr[r].as_py()!r}; a list field given "
                               "as text needs a 'delimiter' (e.g. delimiter: '|')")
        lists = pc.split_pattern(arr, pattern=delimiter)
        vals = pc.utf8_trim_whitespace(lists.values)
        vals = pc.if_else(pc.equal(vals, ""), pa.scalar(None, vals.type), vals)
        return _relist(lists, vals)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        if delimiter is None:
            raise ConvertError(f"{src}: column {col!r}: expected lists (or delimited text), got numbers ({s.dtype})")
        offsets = np.arange(len(arr) + 1, dtype=np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), arr, mask=pa.array(null_mask(arr)) if arr.null_count else None)
    return _relist(arr, arr.values.slice(arr.offsets[0].as_py(), arr.offsets[-1].as_py() - arr.offsets[0].as_py()))


def _is_list_type(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _relist(lists: pa.Array, values: pa.Array) -> pa.ListArray:
    """``lists``' rows (offsets, nulls) over new ``values`` (one per element), offsets from 0."""
    off = np.asarray(lists.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    off = (off - off[0]).astype(np.int32)
    mask = pa.array(null_mask(lists)) if lists.null_count else None
    return pa.ListArray.from_arrays(pa.array(off), values, mask=mask)


def _first_bad_list(s: pd.Series, col: str, delimiter: str | None, src: str) -> None:
    """Raise for the first row that is neither null, a list nor (with a delimiter) text."""
    for i, v in enumerate(s.tolist()):
        if v is None or (isinstance(v, float) and math.isnan(v)) or isinstance(v, (list, tuple, np.ndarray)):
            continue
        if isinstance(v, str) and delimiter is not None:
            continue
        if isinstance(v, str):
            raise ConvertError(f"{src}: column {col!r}: row {i}: got the string {v!r}; a list field given as text "
                               "needs a 'delimiter' (e.g. delimiter: '|')")
        raise ConvertError(f"{src}: column {col!r}: row {i}: expected a list (or delimited text), got {v!r}")


def _row_of(lists: pa.ListArray, i: int) -> int:
    """The row holding element ``i`` of ``lists.values``."""
    off = np.asarray(lists.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    return int(np.searchsorted(off - off[0], i, side="right")) - 1


def _list_ids(lists: pa.ListArray, want: str | None, col: str, src: str) -> pa.ListArray:
    """Ids of a list column as ``list<string>`` or ``list<int64>``: integer values, or text that is all
    integers (unless ``want="string"``), become int64; ``want`` forces a type."""
    vals = lists.values
    if pa.types.is_string(vals.type) or pa.types.is_large_string(vals.type):
        if want == "string":
            return _relist(lists, vals.cast(pa.string()))
        is_int = pc.fill_null(pc.match_substring_regex(vals, _INT_TEXT), True)
        ok = bool(pc.all(is_int).as_py()) if len(vals) else False
        if want is None and not (ok and vals.null_count < len(vals)):
            return _relist(lists, vals.cast(pa.string()))
        if not ok and len(vals):
            i = int(np.flatnonzero(~np.asarray(is_int.to_numpy(zero_copy_only=False), bool))[0])
            raise ConvertError(f"{src}: column {col!r}: row {_row_of(lists, i)}: expected integer ids, got "
                               f"{vals[i].as_py()!r}")
        return _relist(lists, pc.cast(pc.utf8_trim_whitespace(vals), pa.int64()))
    if pa.types.is_integer(vals.type):
        return _relist(lists, vals.cast(pa.string()) if want == "string" else vals.cast(pa.int64()))
    if pa.types.is_floating(vals.type):
        x = as_numpy(vals, "float64")
        bad = ~null_mask(vals) & ((x != np.floor(x)) | ~np.isfinite(x))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ConvertError(f"{src}: column {col!r}: row {_row_of(lists, i)}: expected integer ids, got {x[i]!r}")
        ints = pa.array(np.nan_to_num(x).astype(np.int64), pa.int64(), mask=null_mask(vals) if vals.null_count else None)
        return _relist(lists, ints.cast(pa.string()) if want == "string" else ints)
    if pa.types.is_null(vals.type):
        return _relist(lists, pa.array([None] * len(vals), pa.string() if want == "string" else pa.int64()))
    raise ConvertError(f"{src}: column {col!r}: expected ids (integers or text) in the lists, got {vals.type}")


def _list_weights(lists: pa.ListArray, col: str, src: str) -> pa.ListArray:
    """Per-id weights as ``list<float32>``: numbers, finite (text is parsed)."""
    vals = lists.values
    if pa.types.is_string(vals.type) or pa.types.is_large_string(vals.type):
        x = pd.to_numeric(pd.Series(vals.to_pylist(), dtype=object), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(x) & ~null_mask(vals)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ConvertError(f"{src}: column {col!r}: row {_row_of(lists, i)}: expected numbers (weights), got "
                               f"{vals[i].as_py()!r}")
    elif pa.types.is_integer(vals.type) or pa.types.is_floating(vals.type) or pa.types.is_null(vals.type):
        x = as_numpy(vals, "float64") if not pa.types.is_null(vals.type) else np.full(len(vals), np.nan)
        x[null_mask(vals)] = np.nan
    else:
        raise ConvertError(f"{src}: column {col!r}: expected numbers (weights) in the lists, got {vals.type}")
    bad = np.isinf(x) | (np.isnan(x) & ~null_mask(vals))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConvertError(f"{src}: column {col!r}: row {_row_of(lists, i)}: weights must be finite, got {x[i]}")
    return _relist(lists, pa.array(x.astype(np.float32), pa.float32(), mask=np.isnan(x)))


def _list_lengths(lists: pa.ListArray) -> np.ndarray:
    """Elements per row (null rows: 0)."""
    n = np.diff(np.asarray(lists.offsets.to_numpy(zero_copy_only=False), dtype=np.int64))
    n[null_mask(lists)] = 0
    return n


def _str_values(s: pd.Series) -> pd.Series:
    """Ids as strings (nulls kept): integral floats (a CSV integer column with gaps) lose their ``.0``."""
    return s.map(_str_or_none).astype(object)


def _first_non_int_text(values: Any) -> tuple[int, Any] | None:
    """``(row, value)`` of the first id that is not the text of an integer, or ``None``."""
    if isinstance(values, pa.ListArray):
        vals = values.values
        ok = np.asarray(pc.fill_null(pc.match_substring_regex(vals, _INT_TEXT), True).to_numpy(zero_copy_only=False), bool)
        if ok.all():
            return None
        i = int(np.flatnonzero(~ok)[0])
        return _row_of(values, i), vals[i].as_py()
    for i, x in enumerate(values.tolist()):
        if x is not None and not (isinstance(x, str) and x.strip().lstrip("-").isdigit()):
            return i, x
    return None


def _vocabulary(counts: dict, min_count: int, max_size: int | None) -> tuple[str, ...]:
    items = sorted(((v, c) for v, c in counts.items() if c >= min_count), key=lambda t: (-t[1], t[0]))
    if max_size is not None:
        items = items[:max_size]
    return tuple(v for v, _ in items)


def _label(s: pd.Series, name: str, col: str, spec: Mapping, src: str) -> np.ndarray:
    if "positive" in spec:
        pos = spec["positive"] if isinstance(spec["positive"], list) else [spec["positive"]]
        out = s.isin(pos).to_numpy()
        nulls = s.isna().to_numpy()
    elif "threshold" in spec:
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna() & s.notna()
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise ConvertError(f"{src}: column {col!r}: row {r}: label {name!r} with a threshold needs numbers, "
                               f"got {s.iloc[r]!r}")
        out = (num >= float(spec["threshold"])).to_numpy()
        nulls = num.isna().to_numpy()
    else:
        v = s
        if not pd.api.types.is_bool_dtype(v):
            v = pd.to_numeric(s, errors="coerce")
            bad = (v.isna() & s.notna()) | (v.notna() & ~v.isin([0, 1]))
            if bad.any():
                r = int(np.flatnonzero(bad.to_numpy())[0])
                raise ConvertError(f"{src}: column {col!r}: row {r}: label {name!r} must be 0/1 or true/false, got "
                                   f"{s.iloc[r]!r} (or map it: labels: {{{name}: {{column: {col}, positive: [...]}}}})")
        nulls = v.isna().to_numpy()
        out = v.fillna(0).astype(bool).to_numpy()
    if nulls.any():
        r = int(np.flatnonzero(nulls)[0])
        raise ConvertError(f"{src}: column {col!r}: row {r}: missing label {name!r}")
    return out.astype(np.int8)


# -- the conversion ------------------------------------------------------------------------------------


def convert_table(source: str | Path | pd.DataFrame, mapping: str | Path | Mapping, out: str | Path, *,
                  overwrite: bool = False) -> ConvertResult:
    """Convert a plain table into a dataset root of the data contract.

    Args:
        source: a CSV / Parquet path, or a pandas DataFrame.
        mapping: a YAML file path or the mapping as a dict (see the module docstring).
        out: the dataset root to write (must not exist or be empty, unless ``overwrite`` and it is a
            ctrlens dataset).

    Raises:
        ConvertError: a bad mapping (naming the key) or a column that does not convert (naming the
            column and its first bad row); nothing is written.
    """
    msrc = f"mapping {mapping}" if isinstance(mapping, (str, Path)) else "mapping"
    m = load_mapping(mapping) if isinstance(mapping, (str, Path)) else mapping
    _check_mapping(m, msrc)
    out = Path(out)
    _check_out(out, overwrite)
    tsrc = str(source) if isinstance(source, (str, Path)) else "table"
    df = read_table(source) if isinstance(source, (str, Path)) else source.reset_index(drop=True)
    if len(df) == 0:
        raise ConvertError(f"{tsrc}: the table has no rows")
    src = tsrc

    days, times = _days(df, m["time"], src)
    ref_days = _reference(days, m.get("reference_days"), msrc)
    ref = np.isin(days, ref_days)

    fspecs: dict[str, Mapping] = dict(m["fields"])
    label_specs = {k: ({"column": v} if isinstance(v, str) else dict(v)) for k, v in m["labels"].items()}
    cols: dict[str, pa.Array] = {}
    # 1. raw values per id field (lists for bags / sequences), grouped by table
    raw: dict[str, Any] = {}
    table_of: dict[str, str] = {}
    for name, spec in fspecs.items():
        kind = spec["kind"]
        col = spec.get("column", name)
        s = _column(df, col, f"{kind} field {name!r}", src)
        want = spec.get("dtype")
        if kind == "sparse":
            string = _is_str_values(s) if want is None else want == "string"
            raw[name] = _str_values(s) if string else _int_values(s, col, src)
            table_of[name] = spec.get("table", name)
        elif kind in ("bag", "sequence"):
            raw[name] = _list_ids(_lists(s, col, spec.get("delimiter"), src), want, col, src)
            table_of[name] = spec.get("table", name)
    defining: dict[str, str] = {}
    for name in fspecs:
        if name in table_of and fspecs[name]["kind"] in ("sparse", "bag"):
            defining.setdefault(table_of[name], name)
    for name, t in table_of.items():
        _need(t in defining, f"{msrc}: fields.{name}: table {t!r} is not defined by a sparse or bag field of the "
                             f"mapping (tables: {sorted(defining)})")

    # 2. one vocabulary (strings) or vocab size (integers) per table, from the reference rows
    vocab: dict[str, tuple[str, ...] | None] = {}
    sizes: dict[str, int] = {}
    for t, first in defining.items():
        members = [n for n, tt in table_of.items() if tt == t]
        kinds = {n: _is_string_field(raw[n]) for n in members}
        if len(set(kinds.values())) > 1:  # integer ids in one field, text in another: find the culprit
            for n in [n for n, v in kinds.items() if v]:
                col = fspecs[n].get("column", n)
                bad = _first_non_int_text(raw[n])
                if bad is not None:
                    raise ConvertError(f"{src}: column {col!r}: row {bad[0]}: expected an integer id like the other "
                                       f"fields of table {t!r}, got {bad[1]!r}")
                raw[n] = _int_values(raw[n], col, src) if isinstance(raw[n], pd.Series) \
                    else _list_ids(raw[n], "int64", col, src)
                kinds[n] = False
        if len(set(kinds.values())) > 1:
            raise ConvertError(f"{msrc}: table {t!r}: fields {sorted(n for n, v in kinds.items() if v)} hold strings but "
                               f"{sorted(n for n, v in kinds.items() if not v)} hold integers; a table has one id type")
        spec = fspecs[first]
        if kinds[first]:
            counts: dict[str, int] = {}
            for n in members:
                vc = pc.value_counts(pa.array(_ref_values(raw[n], ref), pa.string()))
                for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
                    counts[v] = counts.get(v, 0) + c
            voc = _vocabulary(counts, int(spec.get("min_count", 1)), spec.get("max_size"))
            _need(bool(voc), f"{src}: table {t!r} (field {first!r}): no value in the reference days "
                             f"{ref_days[0]} .. {ref_days[-1]} to build a vocabulary from")
            vocab[t], sizes[t] = voc, len(voc)
        else:
            top = -1
            for n in members:
                v = _ref_values(raw[n], ref)
                if len(v):
                    top = max(top, int(np.max(v)))
                    lo = int(np.min(v))
                    if lo < 0:
                        raise ConvertError(f"{src}: column {fspecs[n].get('column', n)!r}: negative id {lo}; integer ids "
                                           "must be >= 0 (or give the column as strings)")
            size = spec.get("vocab_size") or top + 1
            _need(size >= 1, f"{src}: table {t!r} (field {first!r}): no id in the reference days and no vocab_size")
            vocab[t], sizes[t] = None, int(size)

    # 3. columns and schema fields, in mapping order
    fields = []
    extra_norm: dict[str, dict] = {}
    for name, spec in fspecs.items():
        kind = spec["kind"]
        col = spec.get("column", name)
        if kind in ("sparse", "bag", "sequence"):
            t = table_of[name]
            voc = vocab[t]
            is_def = defining[t] == name
            dtype = "string" if voc is not None else "int64"
            if kind == "sparse":
                s = raw[name]
                cols[name] = _str_array(s) if voc is not None else _int_array(s)
                fields.append(SparseField(name, sizes[t], table=t if t != name else None, dtype=dtype, vocabulary=voc,
                                          role=spec.get("role"), embedding_dim=spec.get("embedding_dim", 8),
                                          oov=spec.get("oov", "bucket")))
            else:
                lists = raw[name]
                cols[name] = lists
                if kind == "sequence":
                    fields.append(SequenceField(name, table=t, max_len=spec["max_len"]))
                else:
                    weights = spec.get("weights")
                    if weights is not None:
                        wl = _list_weights(_lists(_column(df, weights, f"weights of bag field {name!r}", src), weights,
                                                  spec.get("delimiter"), src), weights, src)
                        n_ids, n_w = _list_lengths(lists), _list_lengths(wl)
                        bad = np.flatnonzero(n_ids != n_w)
                        if len(bad):
                            i = int(bad[0])
                            raise ConvertError(f"{src}: column {weights!r}: row {i}: {n_w[i]} weights for {n_ids[i]} ids "
                                               f"of bag field {name!r}")
                        cols[weights] = wl
                    own = is_def
                    fields.append(BagField(
                        name, sizes[t] if own else None, max_len=spec["max_len"], table=t if t != name else None,
                        dtype=dtype if own else "int64", vocabulary=voc if own else None,
                        embedding_dim=spec.get("embedding_dim", 8), oov=spec.get("oov", "bucket"),
                        weights=weights, pooling=spec.get("pooling", "sum")))
        elif kind == "dense":
            s = _column(df, col, f"dense field {name!r}", src)
            num = pd.to_numeric(s, errors="coerce")
            bad = num.isna() & s.notna()
            if bad.any():
                r = int(np.flatnonzero(bad.to_numpy())[0])
                raise ConvertError(f"{src}: column {col!r}: row {r}: expected a number, got {s.iloc[r]!r}")
            x = num.to_numpy(dtype=np.float64)
            inf = np.isinf(x)
            if inf.any():
                raise ConvertError(f"{src}: column {col!r}: row {int(np.flatnonzero(inf)[0])}: expected a finite number")
            x, params = _normalise(x, ref, spec.get("normalize", "none"), col, src)
            if params:
                extra_norm[name] = params
            cols[name] = pa.array(x, pa.float32(), mask=np.isnan(x))
            fill = spec.get("fill")
            fields.append(DenseField(name, fill=None if fill is None else float(fill)))
        else:  # position
            s = _int_values(_column(df, col, f"position field {name!r}", src), col, src)
            if s.isna().any():
                raise ConvertError(f"{src}: column {col!r}: row {int(np.flatnonzero(s.isna().to_numpy())[0])}: missing "
                                   "position")
            mp = spec.get("max_position") or int(s[ref].max())
            v = s.to_numpy(dtype=np.int64)
            bad = (v < 1) | (v > mp)
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise ConvertError(f"{src}: column {col!r}: row {r}: position {v[r]} outside 1..{mp} (max_position)")
            cols[name] = pa.array(v, pa.int64())
            fields.append(PositionField(name, max_position=mp))
    for name, spec in label_specs.items():
        col = spec.get("column", name)
        cols[name] = pa.array(_label(_column(df, col, f"label {name!r}", src), name, col, spec, src))
    passthrough = list(m.get("passthrough", []))
    tcol = m["time"] if isinstance(m["time"], str) else m["time"]["column"]
    if tcol not in cols and tcol not in passthrough:
        passthrough.append(tcol)  # the time rides along (ignored by the loader), for joins back to the source
    for c in passthrough:
        _need(c not in cols, f"{msrc}: passthrough column {c!r} is also a field or label")
        s = _column(df, c, "passthrough", src)
        try:
            cols[c] = pa.array(s, from_pandas=True)
        except (pa.ArrowException, ValueError, TypeError) as e:
            raise ConvertError(f"{src}: column {c!r}: cannot keep it as a passthrough column ({e})") from None
    try:
        schema = Schema(
            fields=tuple(fields), labels=tuple(label_specs),
            extra={"source": f"converted by ctrlens data convert from {tsrc}",
                   "time_column": tcol, "reference_days": [ref_days[0], ref_days[-1]],
                   **({"normalization": extra_norm} if extra_norm else {}),
                   **({PASSTHROUGH_KEY: passthrough} if passthrough else {})},
        )
    except SchemaError as e:
        raise ConvertError(f"{msrc}: {e}") from None

    # 4. write to a temporary folder, validate every day, then move into place
    table = pa.table(cols)
    order = np.argsort(times, kind="stable")  # days in order, rows in time order within a day
    table, sdays = table.take(pa.array(order)), days[order]
    bounds = np.flatnonzero(np.r_[True, sdays[1:] != sdays[:-1], True])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.convert-", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the dataset gets the usual permissions
        schema.save(tmp)
        for a, b in zip(bounds[:-1], bounds[1:]):
            folder = tmp / f"{DAY_PREFIX}{sdays[a]}"
            folder.mkdir()
            pq.write_table(table.slice(a, b - a), folder / "part-0.parquet", row_group_size=int(m.get("row_group_size", 65_536)))
        ds = DailyDataset(tmp)
        try:
            for d in ds.days():
                ds.validate(d)
        except InputError as e:  # name the day's file as it would have been at ``out``
            raise ConvertError(str(e).replace(str(tmp), str(out)) + " (nothing was written)") from None
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    written = tuple(str(sdays[a]) for a in bounds[:-1])
    return ConvertResult(out, Schema.load(out), written, len(df), tuple(ref_days))


def _str_or_none(x: Any) -> str | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    if isinstance(x, (float, np.floating)) and float(x).is_integer():
        return str(int(x))
    return str(x)


def _str_array(s: pd.Series) -> pa.Array:
    return pa.array([_str_or_none(x) for x in s.tolist()], pa.string())


def _int_array(s: pd.Series) -> pa.Array:
    mask = s.isna().to_numpy()
    return pa.array(s.fillna(0).to_numpy(dtype=np.int64), pa.int64(), mask=mask if mask.any() else None)


def _is_string_field(values: Any) -> bool:
    if isinstance(values, pd.Series):
        return not pd.api.types.is_integer_dtype(values)
    return pa.types.is_string(values.type.value_type)


def _ref_values(values: Any, ref: np.ndarray) -> np.ndarray | list:
    """Non-null values of the reference rows (list fields: their elements)."""
    if isinstance(values, pd.Series):
        v = values[ref].dropna()
        return v.astype(str).tolist() if not pd.api.types.is_integer_dtype(values) else v.to_numpy(dtype=np.int64)
    elems = values.filter(pa.array(ref)).flatten().drop_null()
    return elems.to_pylist() if pa.types.is_string(elems.type) else np.asarray(elems.to_numpy(), dtype=np.int64)


def _normalise(x: np.ndarray, ref: np.ndarray, how: str, col: str, src: str) -> tuple[np.ndarray, dict]:
    """Normalised values (NaN kept) and the parameters (from the reference rows) for the record."""
    if how == "none":
        return x, {}
    if how == "log_standard":
        bad = x < 0
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise ConvertError(f"{src}: column {col!r}: row {r}: log_standard needs values >= 0, got {x[r]}")
        x = np.log1p(x)
    r = x[ref & ~np.isnan(x)]
    if not len(r):
        raise ConvertError(f"{src}: column {col!r}: no value in the reference days to normalise with")
    if how == "minmax":
        lo, hi = float(r.min()), float(r.max())
        scale = hi - lo if hi > lo else 1.0
        return (x - lo) / scale, {"method": how, "min": lo, "max": hi}
    mean, std = float(r.mean()), float(r.std())
    return (x - mean) / (std if std > 0 else 1.0), {"method": how, "mean": mean, "std": std}


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out}: output path exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConvertError(f"{out}: output folder is not empty (pass --overwrite to replace a ctrlens dataset there)")
        if not (out / SCHEMA_FILE).exists():
            raise ConvertError(f"{out}: not a ctrlens dataset (no {SCHEMA_FILE}); refusing to overwrite it")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp`` (renames on one file system: a reader sees the old or the new dataset)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{tmp.name[-8:]}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


__all__ = ["ConvertError", "ConvertResult", "convert_table", "load_mapping", "read_table"]
