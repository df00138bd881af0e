"""Conversions between result frames and database rows, and the store's JSON text encoding.

* JSON columns are written with Python's :mod:`json` (``allow_nan``: NaN and +-Infinity are kept,
  which PostgreSQL's ``json`` type would reject) after turning numpy arrays / scalars into lists /
  numbers; they read back as the same lists and dicts.
* Float NaN is stored as NULL on both backends (SQLite has no NaN) and reads back as NaN.
* Frames are validated before any transaction starts: exact columns, values of the declared types,
  one row per subject. Failures are :class:`~ctrlens.errors.InputError` naming kind, column and row.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ctrlens.errors import InputError
from ctrlens.results import COLUMNS, Result
from ctrlens.store.models import key_columns

_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RUN_KIND_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (dt.date, dt.datetime)):
        return o.isoformat()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


_ENCODER = json.JSONEncoder(default=_default, separators=(",", ":"), allow_nan=True)


def dumps(value: Any) -> str:
    """JSON text for the store (compact; NaN/Infinity allowed; numpy turned into plain Python)."""
    return _ENCODER.encode(value)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def parse_day(day: Any, what: str = "day") -> dt.date:
    """A day as ``datetime.date`` from ``"YYYY-MM-DD"``, a date or a pandas Timestamp."""
    if isinstance(day, pd.Timestamp):
        return day.date()
    if isinstance(day, dt.datetime):
        return day.date()
    if isinstance(day, dt.date):
        return day
    if isinstance(day, str) and _DAY_RE.match(day):
        try:
            return dt.date.fromisoformat(day)
        except ValueError:
            pass
    raise InputError(f"{what} {day!r}: expected a date written YYYY-MM-DD")


def check_run_kind(run_kind: str) -> str:
    if not isinstance(run_kind, str) or not _RUN_KIND_RE.match(run_kind):
        raise InputError(
            f"run kind {run_kind!r}: expected a short lower-case name such as 'nightly' or 'analysis' "
            "(letters, digits, '_' or '-', at most 32 characters)"
        )
    return run_kind


def _is_missing(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, float) and math.isnan(v)


def _as_int(v: Any) -> int | None:
    if _is_missing(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    raise ValueError(v)


def _as_float(v: Any) -> float | None:
    if _is_missing(v):
        return None
    f = float(v)  # raises on strings that are not numbers
    return None if math.isnan(f) else f


def _as_bool(v: Any) -> bool | None:
    if _is_missing(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)) and int(v) in (0, 1):
        return bool(v)
    raise ValueError(v)


def _as_str(v: Any) -> str | None:
    if _is_missing(v):
        return None
    if isinstance(v, str):
        return v
    raise ValueError(v)


def _as_json(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    return dumps(v)


_CONVERT = {"int": _as_int, "float": _as_float, "bool": _as_bool, "str": _as_str, "json": _as_json}


def merge_results(results: Sequence[Result]) -> dict[str, Result]:
    """Group results by kind; several of one kind are concatenated (their metas kept as ``parts``)."""
    by_kind: dict[str, list[Result]] = {}
    for i, r in enumerate(results):
        if not isinstance(r, Result):
            raise InputError(f"results[{i}]: expected a ctrlens.results.Result, got {type(r).__name__}")
        by_kind.setdefault(r.kind, []).append(r)
    out: dict[str, Result] = {}
    for kind, rs in by_kind.items():
        if len(rs) == 1:
            out[kind] = rs[0]
            continue
        frame = pd.concat([r.frame for r in rs], ignore_index=True)
        metas = [r.meta for r in rs]
        meta = metas[0] if all(m == metas[0] for m in metas) else {"parts": metas}
        out[kind] = Result(kind, frame, meta)
    return out


_NOT_STR = object()
_INT_LIST_CHARS = str.maketrans("", "", "[]0123456789,- ")


def _int_lists_json(values: list[Any]) -> list[str] | None:
    """JSON for a column of (nested) lists of Python ints -- histogram counts, the bulk of the JSON
    written -- via ``repr``, about twice as fast as the JSON encoder; None if the values are not
    all such lists (a repr made only of brackets, digits, '-', ',' and ' ' is valid JSON)."""
    if not values or not all(v.__class__ is list for v in values):
        return None
    texts = [repr(v) for v in values]
    if "".join(texts).translate(_INT_LIST_CHARS):
        return None  # floats, strings, None, True/False, ... : the JSON encoder
    return [t.replace(" ", "") for t in texts]


def _column_values(kind: str, col: str, t: str, series: pd.Series, nan_is_null: bool) -> list[Any]:
    """Python values of one column for the database, vectorised for the common dtypes."""
    dtype = series.dtype
    kind_char = getattr(dtype, "kind", "O")  # numpy and pandas dtypes: "f", "i", "u", "b", "O", ...
    if t == "float" and kind_char in "fiu":
        arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
        if nan_is_null:  # the database stores a bound NaN as NULL itself (SQLite)
            return arr.tolist()
        out = arr.astype(object)
        out[np.isnan(arr)] = None
        return out.tolist()
    if t == "int" and kind_char in "iu" and not series.hasnans:
        return series.to_numpy(dtype=np.int64).tolist()
    if t == "bool" and kind_char == "b" and not series.hasnans:
        return series.to_numpy(dtype=bool).tolist()
    if t == "json":
        values = series.tolist()
        fast = _int_lists_json(values)
        if fast is not None:
            return fast
        enc = _ENCODER.encode
        try:
            return [None if v is None or (v.__class__ is float and v != v) else enc(v) for v in values]
        except (TypeError, ValueError):
            pass  # name the row below
    if t == "str" and isinstance(dtype, pd.StringDtype) and len(series) > 64:
        # few distinct strings repeated (layer names, methods): factorise, then take -- all in C
        codes, uniques = pd.factorize(series)
        return np.array([*uniques.tolist(), None], dtype=object)[codes].tolist()  # code -1 (missing) -> None
    if t == "str":
        values = series.tolist()
        if isinstance(dtype, pd.StringDtype):  # pandas string dtype: str or NA only
            return [None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v for v in values] if series.hasnans else values
        out = [v if isinstance(v, str) else None if _is_missing(v) else _NOT_STR for v in values]
        if _NOT_STR not in out:
            return out
    return _values(kind, col, t, series.tolist())


def _values(kind: str, col: str, t: str, values: list[Any]) -> list[Any]:
    """The general path: value by value, naming the first bad one."""
    conv = _CONVERT[t]
    out = []
    for i, v in enumerate(values):
        try:
            out.append(conv(v))
        except (TypeError, ValueError) as e:
            raise InputError(
                f"result {kind!r}, column {col!r}, row {i}: {v!r} is not a valid {t} value"
                + (f" ({e})" if isinstance(e, TypeError) else "")
            ) from None
    return out


def frame_to_columns(kind: str, frame: pd.DataFrame, *, nan_is_null: bool = False) -> list[list[Any]]:
    """Validated values per column (``COLUMNS[kind]`` order), ready for a bulk insert.

    Float NaN becomes None (SQL NULL), unless ``nan_is_null`` says the database does that itself.

    Raises:
        InputError: a value of the wrong type (names kind, column, row), an empty subject column,
            or two rows for the same subject (names the key).
    """
    spec = COLUMNS[kind]
    cols = list(spec)
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise InputError(f"result {kind!r}: missing columns {missing}; expected {cols}")
    n = len(frame)
    if n <= 64:  # small frames: value by value beats pandas' per-column overhead
        converted = [_values(kind, col, spec[col], values) for col, values in zip(cols, frame[cols].to_numpy(dtype=object).T.tolist())]
    else:
        converted = [_column_values(kind, col, spec[col], frame[col], nan_is_null) for col in cols]
    keys = key_columns(kind)
    key_values = [converted[cols.index(k)] for k in keys]
    for k, values in zip(keys, key_values):
        if None in values:
            raise InputError(f"result {kind!r}, column {k!r}, row {values.index(None)}: a subject column may not be empty")
    subjects = key_values[0] if len(keys) == 1 else list(zip(*key_values))
    if len(set(subjects)) != n:
        seen: dict[Any, int] = {}
        for i, key in enumerate(subjects):
            if key in seen:
                vals = key if len(keys) > 1 else (key,)
                subject = ", ".join(f"{k}={v!r}" for k, v in zip(keys, vals))
                raise InputError(
                    f"result {kind!r}: rows {seen[key]} and {i} are for the same subject ({subject}); "
                    "a result has one row per subject"
                )
            seen[key] = i
    return converted


def frame_to_rows(kind: str, frame: pd.DataFrame, *, nan_is_null: bool = False) -> list[tuple[Any, ...]]:
    """:func:`frame_to_columns` as row tuples."""
    return list(zip(*frame_to_columns(kind, frame, nan_is_null=nan_is_null)))


def rows_to_frame(kind: str, rows: Iterable[Sequence[Any]]) -> pd.DataFrame:
    """A frame with exactly ``COLUMNS[kind]`` from stored rows (JSON decoded, NULL floats -> NaN)."""
    spec = COLUMNS[kind]
    cols = list(spec)
    rows = list(rows)
    data: dict[str, Any] = {}
    for j, col in enumerate(cols):
        values = [r[j] for r in rows]
        t = spec[col]
        if t == "float":
            data[col] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        elif t == "int":
            if any(v is None for v in values):
                data[col] = pd.array(values, dtype="Int64")
            else:
                data[col] = np.array(values, dtype=np.int64)
        elif t == "bool":
            if any(v is None for v in values):
                data[col] = pd.array(values, dtype="boolean")
            else:
                data[col] = np.array(values, dtype=bool)
        elif t == "json":
            data[col] = pd.Series([loads(v) for v in values], dtype=object)
        else:  # let pandas pick its string dtype (pandas 3: "str", missing = NaN, like the frames handed over)
            data[col] = pd.Series(values, dtype=object if not values else None)
    return pd.DataFrame(data, columns=cols)


def pack_neuron_vectors(frame: pd.DataFrame, statistics: Sequence[str]) -> list[tuple[str, str, bytes]]:
    """(layer, statistic, data) per layer of a neuron_stats frame: each statistic's values as one
    little-endian float64 array, and the layer's neuron ids (int64, same order) under ``"neuron"``."""
    out: list[tuple[str, str, bytes]] = []
    if len(frame) == 0:
        return out
    codes, layers = pd.factorize(frame["layer"])
    ids = frame["neuron"].to_numpy(dtype="<i8")
    values = {s: frame[s].to_numpy(dtype="<f8", na_value=np.nan) for s in statistics}
    contiguous = bool(np.all(codes[1:] >= codes[:-1]))  # rows grouped by layer: slices, no fancy indexing
    for c, layer in enumerate(layers.tolist()):
        if contiguous:
            a, b = np.searchsorted(codes, [c, c + 1])
            sel: Any = slice(int(a), int(b))
        else:
            sel = np.flatnonzero(codes == c)
        out.append((str(layer), "neuron", ids[sel].tobytes()))
        out.extend((str(layer), s, values[s][sel].tobytes()) for s in statistics)
    return out
