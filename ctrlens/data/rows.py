"""Your own rows to a :class:`~ctrlens.data.batch.Batch`: a pandas DataFrame or Arrow table in the
columns of the data contract, mapped exactly as the loader maps a day (see docs/data-format.md,
"Your rows to batches").

    from ctrlens.data import rows_to_batch
    batch = rows_to_batch(df, schema)        # df: one row per impression, raw ids / strings / lists

What it does for you: raw ids -> embedding indices (``+2``; 0 = missing, 1 = out of vocabulary),
string values through the vocabulary, sequences and bags padded to ``max_len`` with their masks
(sequences keep their last ``max_len`` entries, bags their first), bag weights aligned with their ids,
dense nulls filled, labels as float 0/1, and every check of the contract (errors name the column and
the 0-based row of ``rows``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ctrlens.data.batch import Batch
from ctrlens.data.columns import IdMap
from ctrlens.data.images import ImageStore
from ctrlens.data.loader import DailyDataset
from ctrlens.data.schema import Schema
from ctrlens.data.validate import DataError, DayCounts, check_file_columns, expected_columns
from ctrlens.errors import InputError


class _RowMapper:
    """The loader's per-slice mapping (:meth:`DailyDataset.map_slice` / :meth:`DailyDataset.to_batch`)
    for rows that are not in a dataset folder. It borrows those methods rather than copying them, so
    rows given here and rows read from disk are mapped by the same code."""

    map_slice = DailyDataset.map_slice
    to_batch = DailyDataset.to_batch

    def __init__(self, schema: Schema, images: ImageStore | None) -> None:
        self.schema = schema
        self._maps = {name: IdMap(f) for name, f in schema.tables().items()}
        self._store = images

    def images_for(self, day: str | None) -> ImageStore | None:
        return self._store


def _as_table(rows: Any, source: str) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if isinstance(rows, pd.DataFrame):
        try:
            return pa.Table.from_pandas(rows, preserve_index=False)
        except (pa.ArrowException, ValueError, TypeError) as e:
            raise DataError(f"{source}: cannot convert the DataFrame to Arrow ({e}); give list columns as lists "
                            "of ids and id columns as integers (pandas 'Int64' where values are missing)") from None
    raise InputError(f"{source}: expected a pandas DataFrame or a pyarrow Table, got {type(rows).__name__}")


def rows_to_batch(rows: pd.DataFrame | pa.Table, schema: Schema, *, images: ImageStore | None = None,
                  source: str = "rows", row0: int = 0) -> Batch:
    """One :class:`Batch` of ``rows`` (``B`` rows), mapped like the loader maps a day.

    Args:
        rows: a pandas DataFrame or pyarrow Table with a column per schema field (sparse: int ids or
            strings; sequence / bag: lists; a bag's weights column: lists of floats; dense: numbers;
            position: ints). Label columns are used when present (all of them) and left out when all are
            absent (rows to score). Other columns are ignored.
        schema: the dataset's :class:`Schema` (e.g. ``Schema.load(root)``, or the one your model was
            built for).
        images: the image table (``DailyDataset(root).images``) for schemas with image fields;
            without it the batch has no images.
        source: how error messages name the rows.
        row0: ``batch.row`` numbers start here.

    Returns:
        A :class:`Batch`: ``features`` (sparse ``[B]`` int64, sequence / bag ``[B, max_len]`` int64, dense
        ``[B]`` float32, position ``[B]`` int64), ``masks`` (sequences and bags), ``weights`` (bags with a
        weights column), ``labels`` and ``user`` as the loader gives them.

    Raises:
        DataError: a missing column, a column of the wrong type or a bad value, naming the column and row.
    """
    table = _as_table(rows, source)
    if table.num_rows == 0:
        raise DataError(f"{source}: no rows", file=source)
    have = set(table.column_names)
    missing_labels = [k for k in schema.labels if k not in have]
    with_labels = len(missing_labels) < len(schema.labels)
    if with_labels and missing_labels:
        raise DataError(f"{source}: label column(s) {missing_labels} missing; give all of {list(schema.labels)} "
                        "or none", file=source, column=missing_labels[0])
    use: Any = schema if with_labels else _NoLabels(schema)
    cols = list(expected_columns(use))
    # names every missing column and every column of the wrong type (other columns are ignored)
    check_file_columns(use, source, pa.schema([table.schema.field(c) for c in cols if c in have]))
    mapper = _RowMapper(use, images)
    chunks, start = [], 0
    for rb in table.select(cols).combine_chunks().to_batches():
        chunks.append(mapper.map_slice(rb, source, start, row0 + start, DayCounts(source)))  # type: ignore[arg-type]
        start += rb.num_rows
    chunk = chunks[0] if len(chunks) == 1 else {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    return mapper.to_batch(chunk, images=images is not None)  # type: ignore[arg-type]


class _NoLabels:
    """A read-only view of a schema whose ``labels`` are empty: rows to score carry no labels, while a
    :class:`Schema` always names at least one."""

    def __init__(self, schema: Schema) -> None:
        self._s = schema

    labels: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s, name)

    def __getitem__(self, name: str) -> Any:
        return self._s[name]

    def __contains__(self, name: object) -> bool:
        return name in self._s


__all__ = ["rows_to_batch"]
