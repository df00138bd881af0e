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
        Whatever the policy, an unsigned id above the int64 range is refused (it cannot be an id here:
        it would wrap to a negative number).
        """
        plain = _plain(arr)
        if pa.types.is_unsigned_integer(plain.type) and plain.type.bit_width == 64 and len(plain):
            big = np.asarray(pc.fill_null(plain, 0).to_numpy(zero_copy_only=False), dtype=np.uint64) > np.uint64(2**63 - 1)
            if big.any():
                i = first_true(big)
                row = row0 + (int(np.searchsorted(offsets, i, side="right")) - 1 if offsets is not None else i)
                raise fail(f"id {plain[i].as_py()} is above the int64 range (at most {2**63 - 1}): ids must fit a "
                           f"signed 64-bit integer ({int(big.sum())} such values in this slice)",
                           file=file, column=column, row=row)  # fmt: skip
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

    def padded(self, max_len: int, *, keep: str = "last") -> np.ndarray:
        """``[n, max_len]`` int64: each row's *last* (``keep="last"``, sequences: the most recent) or
        *first* (``keep="first"``, bags) ``max_len`` elements, right-padded with 0."""
        return self.pad(self.idx, max_len, keep=keep, fill=PAD_INDEX)

    def pad(self, values: np.ndarray, max_len: int, *, keep: str = "last", fill: float = 0) -> np.ndarray:
        """``[n, max_len]``: ``values`` (``[E]``, aligned with ``idx``) placed like :meth:`padded`."""
        n = len(self.lengths)
        if n == 0 or len(values) == 0:
            return np.full((n, max_len), fill, dtype=values.dtype)
        k = np.minimum(self.lengths, max_len)
        first = self.starts + self.lengths - k if keep == "last" else self.starts
        cols = np.arange(max_len)
        valid = cols < k[:, None]  # [n, L]
        src = np.where(valid, first[:, None] + cols, 0)
        out = values[src]
        out[~valid] = fill
        return out


def _map_list(arr: pa.Array | pa.ChunkedArray, idmap: IdMap, *, file: Path, column: str,
              row0: int) -> tuple[SequenceValues, pa.Array, np.ndarray | None, np.ndarray]:
    """Map a list column: values, the Arrow elements kept, the keep mask over all elements (``None`` when
    every element was kept) and the list offsets (from 0)."""
    arr = _plain(arr)
    n = len(arr)
    offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    base, end = int(offsets[0]), int(offsets[-1])
    offsets = offsets - base
    elems = arr.values.slice(base, end - base)
    idx = idmap(elems)
    lengths = np.diff(offsets)
    idmap.refuse_oov(elems, idx, file=file, column=column, offsets=offsets, row0=row0)
    list_null = null_mask(arr)
    keep = idx != PAD_INDEX
    if keep.all() and not (list_null.any() and lengths[list_null].any()):
        lengths[list_null] = 0  # (null lists span no elements here)
        return SequenceValues(idx, lengths, offsets[:-1]), elems, None, offsets
    row_of = np.repeat(np.arange(n), lengths)
    if list_null.any():
        keep &= ~list_null[row_of]
    idx = idx[keep]
    lengths = np.bincount(row_of[keep], minlength=n).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    return SequenceValues(idx, lengths, starts), elems.filter(pa.array(keep)), keep, offsets


def map_sequence(arr: pa.Array | pa.ChunkedArray, idmap: IdMap, *, file: Path, column: str,
                 row0: int) -> tuple[SequenceValues, pa.Array]:
    """Map a list column; null lists become empty, null elements are dropped.

    Returns the mapped values and the Arrow elements they came from (same order as ``idx``), for
    callers that need raw values (statistics).
    """
    sv, elems, _, _ = _map_list(arr, idmap, file=file, column=column, row0=row0)
    return sv, elems


def map_bag(arr: pa.Array | pa.ChunkedArray, idmap: IdMap, *, file: Path, column: str, row0: int,
            weights: pa.Array | pa.ChunkedArray | None = None,
            weights_column: str | None = None) -> tuple[SequenceValues, pa.Array, np.ndarray | None]:
    """Map a bag column (and its weights column, if any) like :func:`map_sequence`.

    Returns the mapped values, the Arrow elements kept and float32 ``[E]`` weights aligned with
    ``idx`` (``None`` without a weights column). The weights column must give every row as many
    finite, non-null weights as the row has ids (a null id drops its weight with it).
    """
    sv, elems, keep, offsets = _map_list(arr, idmap, file=file, column=column, row0=row0)
    if weights is None:
        return sv, elems, None
    w = _plain(weights)
    w_off = np.asarray(w.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    w_off = w_off - w_off[0]
    ids_len = np.where(null_mask(_plain(arr)), 0, np.diff(offsets))
    w_len = np.where(null_mask(w), 0, np.diff(w_off))
    bad = ids_len != w_len
    if bad.any():
        r = first_true(bad)
        raise fail(f"{int(w_len[r])} weights for {int(ids_len[r])} ids of bag field {column!r}: every id needs one "
                   f"weight ({int(bad.sum())} such rows in this slice)", file=file, column=weights_column, row=row0 + r)
    w_base = int(np.asarray(w.offsets.to_numpy(zero_copy_only=False))[0])
    vals = w.values.slice(w_base, int(w_off[-1]))
    wv_null = null_mask(vals)
    wv = as_numpy(vals, "float64")
    keep_all = keep if keep is not None else np.ones(int(offsets[-1]), dtype=bool)
    live = _live_by_row(offsets, w_off, keep_all, ids_len)  # the weights of the ids kept
    bad = live & (wv_null | ~np.isfinite(wv))
    if bad.any():
        i = first_true(bad)
        r = int(np.searchsorted(w_off, i, side="right")) - 1
        what = "null" if wv_null[i] else f"{wv[i]}"
        raise fail(f"weight {what} of bag field {column!r}: expected a finite number ({int(bad.sum())} such "
                   "weights in this slice)", file=file, column=weights_column, row=row0 + r)
    return sv, elems, wv[live].astype(np.float32)


def _live_by_row(id_off: np.ndarray, w_off: np.ndarray, keep: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Mask over the weights' elements of the ids kept: row ``r``'s ``j``-th weight goes with its
    ``j``-th id (rows whose id list is null count 0 ids)."""
    n = len(lengths)
    live = np.zeros(int(w_off[-1]), dtype=bool)
    row_of = np.repeat(np.arange(n), lengths)
    j = np.arange(len(row_of)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    id_pos = id_off[:-1][row_of] + j
    w_pos = w_off[:-1][row_of] + j
    live[w_pos] = keep[id_pos]
    return live
