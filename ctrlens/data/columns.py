"""Vectorised mapping of Arrow columns to embedding indices (no per-row Python).

Index convention (see :mod:`ctrlens.data.schema`): 0 = missing/padding, 1 = out-of-vocabulary,
raw id ``r`` -> ``r + 2`` (integer tables) or vocabulary position ``p`` -> ``p + 2`` (string tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctrlens.data.schema import INDEX_OFFSET, OOV_INDEX, PAD_INDEX, SparseField
from ctrlens.data.validate import as_numpy, fail, first_true, null_mask


def _plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


class IdMap:
    """Raw ids of one embedding table -> int64 indices.

    Args:
        table: the :class:`SparseField` that defines the table's vocabulary and OOV policy.
    """

    def __init__(self, table: SparseField) -> None:
        self.table = table
        self.vocab_size = table.vocab_size
        self.is_string = table.dtype == "string"
        self._value_set = pa.array(list(table.vocabulary or ()), type=pa.large_string()) if self.is_string else None

    def __call__(self, arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Indices ``[n]`` int64 of ``arr`` (nulls -> 0, unknown -> 1)."""
        arr = _plain(arr)
        nulls = null_mask(arr)
        if self.is_string:
            pos = pc.index_in(arr.cast(pa.large_string()), value_set=self._value_set)
            found = ~null_mask(pos)
            idx = np.where(found, as_numpy(pos, "int64") + INDEX_OFFSET, OOV_INDEX)
        else:
            raw = as_numpy(arr, "int64", writable=False)
            idx = raw + INDEX_OFFSET
            idx[raw.view(np.uint64) >= self.vocab_size] = OOV_INDEX  # negatives wrap to huge: one test
        if nulls.any():
            idx[nulls] = PAD_INDEX
        return idx.astype(np.int64, copy=False)

    def raw(self, arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Raw values as numpy (int64 for integer tables, object strings for string tables)."""
        arr = _plain(arr)
        return as_numpy(arr, "int64") if not self.is_string else np.asarray(arr.to_numpy(zero_copy_only=False))

    def refuse_oov(self, arr: pa.Array, idx: np.ndarray, *, file: Path, column: str, offsets: np.ndarray | None,
                   row0: int) -> None:
        """Raise for the first out-of-vocabulary value when the table's policy is ``oov="error"``.

        ``offsets`` (``[n + 1]``, from 0) place list elements in rows (sequences); ``None`` for one value per row.
        """
        if self.table.oov != "error":
            return
        bad = idx == OOV_INDEX
        if not bad.any():
            return
        i = first_true(bad)
        value = _plain(arr)[i].as_py()
        row = row0 + (int(np.searchsorted(offsets, i, side="right")) - 1 if offsets is not None else i)
        expected = (f"one of the {self.vocab_size} vocabulary values" if self.is_string
                    else f"an id in [0, {self.vocab_size})")
        raise fail(
            f"id {value!r} is out of vocabulary: expected {expected} (table {self.table.table_name!r} has "
            f"oov='error'; {int(bad.sum())} such values in this slice)",
            file=file, column=column, row=row,
        )


@dataclass
class SequenceValues:
    """One slice of a list column after mapping.

    ``idx``: ``[E]`` indices of the non-null elements of every row, rows back to back;
    ``lengths``: ``[n]`` elements per row (null list -> 0); ``starts``: ``[n]`` first element of each row.
    """

    idx: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray

    def padded(self, max_len: int) -> np.ndarray:
        """``[n, max_len]`` int64: each row's *last* ``max_len`` elements, right-padded with 0."""
        n = len(self.lengths)
        if n == 0 or len(self.idx) == 0:
            return np.zeros((n, max_len), dtype=np.int64)
        keep = np.minimum(self.lengths, max_len)
        first = self.starts + self.lengths - keep
        cols = np.arange(max_len)
        valid = cols < keep[:, None]  # [n, L]
        src = np.where(valid, first[:, None] + cols, 0)
        out = self.idx[src]
        out[~valid] = PAD_INDEX
        return out


def map_sequence(arr: pa.Array | pa.ChunkedArray, idmap: IdMap, *, file: Path, column: str,
                 row0: int) -> tuple[SequenceValues, pa.Array]:
    """Map a list column; null lists become empty, null elements are dropped.

    Returns the mapped values and the Arrow elements they came from (same order as ``idx``), for
    callers that need raw values (statistics).
    """
    arr = _plain(arr)
    n = len(arr)
    offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    base, end = int(offsets[0]), int(offsets[-1])
    elems = arr.values.slice(base, end - base)
    idx = idmap(elems)
    lengths = np.diff(offsets)
    idmap.refuse_oov(elems, idx, file=file, column=column, offsets=offsets - base, row0=row0)
    list_null = null_mask(arr)
    keep = idx != PAD_INDEX
    if keep.all() and not (list_null.any() and lengths[list_null].any()):
        lengths[list_null] = 0  # (null lists span no elements here)
        return SequenceValues(idx, lengths, offsets[:-1] - base), elems
    row_of = np.repeat(np.arange(n), lengths)
    if list_null.any():
        keep &= ~list_null[row_of]
    idx = idx[keep]
    lengths = np.bincount(row_of[keep], minlength=n).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    return SequenceValues(idx, lengths, starts), elems.filter(pa.array(keep))
