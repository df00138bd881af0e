"""Per-field statistics of one day: the input half of drift monitoring (``Result("field_stats")``).

One streaming pass over the day's raw rows (plus, for dense fields without reference edges, a
second pass over those columns only), vectorised with numpy/Arrow. Every value goes through the same
checks as the loader, so a day that fails validation fails here too.

Histograms are comparable across days by construction:

* dense fields: fixed ``edges`` -- the ``reference_edges`` given (e.g. from the reference day's
  stats, see :func:`edges_from`), else quantile edges of this day (from a uniform sample of at most
  :data:`SAMPLE` values). Values outside the edges count in the first/last bin.
* id fields (sparse, sequence and bag elements): ``2 + hash_buckets`` buckets, always the same:
  ``__missing__`` (rows with no value: null, or an empty list), ``__oov__``, then a fixed hash of
  the embedding index into ``hash_buckets`` buckets.
* position: one bin per position; labels: bins 0 and 1; image fields: mean pixel value of each
  referenced image over ``bins`` equal bins of [0, 1].

``hist_json`` is always ``{"kind", "edges", "counts"}`` with ``len(counts) == len(edges) - 1``
(id histograms also carry ``labels``; their edges are just 0..n). A bag field's ``hist_json`` also
carries ``lengths``: ``{"edges", "labels", "counts"}`` of its rows' bag lengths ``0, 1, ..., max_len``
and ``>max_len`` (rows cut by the loader).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ctrlens.data.columns import IdMap, _plain, map_bag, map_sequence
from ctrlens.data.loader import DailyDataset
from ctrlens.data.schema import BagField, DenseField, PositionField, SequenceField, SparseField
from ctrlens.data.validate import dense_values, label_values, position_values
from ctrlens.results import Result

HASH_BUCKETS = 64
#: Values sampled per dense field to place quantile edges when no reference edges are given.
SAMPLE = 100_000
OTHER = "__other__"
_COMPACT = 2_000_000  # merge accumulated value counts beyond this many entries


def bucket_of(idx: np.ndarray, buckets: int = HASH_BUCKETS) -> np.ndarray:
    """Fixed hash (splitmix64 finaliser) of embedding indices into ``[0, buckets)``; same on every day."""
    x = idx.astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(buckets)).astype(np.int64)


class _ValueCounts:
    """Mergeable counts of raw values (Arrow group-by; strings or int64)."""

    def __init__(self, string: bool) -> None:
        self.type = pa.large_string() if string else pa.int64()
        self.values: list[pa.Array] = []
        self.counts: list[pa.Array] = []
        self.size = 0

    def add(self, arr: pa.Array) -> None:
        arr = _plain(arr)
        if arr.null_count:
            arr = arr.drop_null()
        vc = pc.value_counts(arr.cast(self.type))
        self.values.append(vc.field("values"))
        self.counts.append(vc.field("counts").cast(pa.int64()))
        self.size += len(vc)
        if self.size > _COMPACT and len(self.values) > 1:
            t = self.table()
            self.values, self.counts, self.size = [t.column("v").combine_chunks()], [t.column("n").combine_chunks()], len(t)

    def table(self) -> pa.Table:
        if not self.values:
            return pa.table({"v": pa.array([], self.type), "n": pa.array([], pa.int64())})
        t = pa.table({"v": pa.concat_arrays(self.values), "n": pa.concat_arrays(self.counts)})
        return t.group_by("v").aggregate([("n", "sum")]).rename_columns(["v", "n"])

    def top(self, k: int) -> tuple[int, list[list[Any]]]:
        """Cardinality and ``[[value, share], ...]`` of the top ``k`` plus ``[__other__, share]``."""
        t = self.table().sort_by([("n", "descending"), ("v", "ascending")])
        n = np.asarray(t.column("n").to_numpy(), dtype=np.int64)
        total = int(n.sum())
        if total == 0:
            return 0, [[OTHER, 0.0]]
        head = t.slice(0, k)
        out = [[v, c / total] for v, c in zip(head.column("v").to_pylist(), head.column("n").to_pylist())]
        out.append([OTHER, float(n[k:].sum()) / total])
        return len(t), out


@dataclass
class _IdAcc:
    string: bool
    buckets: int
    rows: int = 0
    missing: int = 0  # rows without a value
    values: int = 0  # non-missing values (sequence: elements)
    oov: int = 0
    len_sum: float = 0.0
    len_sq: float = 0.0
    max_len: int | None = None  # bags: lengths counted 0..max_len and beyond
    hist: np.ndarray = field(init=False)
    vc: _ValueCounts = field(init=False)

    def __post_init__(self) -> None:
        self.hist = np.zeros(self.buckets + 2, dtype=np.int64)
        self.vc = _ValueCounts(self.string)
        self.lengths = np.zeros((self.max_len or 0) + 2, dtype=np.int64)

    def add_lengths(self, lengths: np.ndarray) -> None:
        """List lengths ``[n]`` of a sequence or bag slice (before truncation)."""
        self.len_sum += float(lengths.sum())
        self.len_sq += float(np.square(lengths.astype(np.float64)).sum())
        if self.max_len is not None:
            self.lengths += np.bincount(np.minimum(lengths, self.max_len + 1), minlength=self.max_len + 2)

    def add(self, raw: pa.Array, idx: np.ndarray, rows: int, missing: int) -> None:
        """``raw``/``idx``: the non-missing values (with their indices) of ``rows`` rows."""
        self.rows += rows
        self.missing += missing
        self.values += len(idx)
        oov = idx == 1
        self.oov += int(oov.sum())
        self.hist[0] += missing
        self.hist[1] += int(oov.sum())
        known = idx[idx >= 2]
        self.hist[2:] += np.bincount(bucket_of(known, self.buckets), minlength=self.buckets)
        self.vc.add(raw)

    def row(self, name: str, kind: str, top_k: int) -> dict:
        card, top = self.vc.top(top_k)
        labels = ["__missing__", "__oov__"] + [f"h{i}" for i in range(self.buckets)]
        mean = std = math.nan
        if kind in ("sequence", "bag") and self.rows:
            mean = self.len_sum / self.rows
            std = math.sqrt(max(self.len_sq / self.rows - mean * mean, 0.0))
        hist = {"kind": "hashed", "edges": list(range(len(labels) + 1)), "labels": labels, "counts": self.hist.tolist()}
        if self.max_len is not None:
            k = self.max_len
            hist["lengths"] = {"edges": list(range(k + 3)), "labels": [str(i) for i in range(k + 1)] + [f">{k}"],
                               "counts": self.lengths.tolist()}
        return _row(name, kind, self.rows, self.rows - self.missing, self.oov / self.values if self.values else 0.0,
                    card, mean, std, top, hist)


@dataclass
class _DenseAcc:
    edges: np.ndarray | None
    seed: int
    rows: int = 0
    nulls: int = 0
    s1: float = 0.0
    s2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    counts: np.ndarray | None = None
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        if self.edges is not None:
            self.counts = np.zeros(len(self.edges) - 1, dtype=np.int64)

    def add(self, v: np.ndarray, rows: int, nulls: int) -> None:
        """``v``: the non-null values (float64) of ``rows`` rows."""
        self.rows += rows
        self.nulls += nulls
        if len(v):
            self.s1 += float(v.sum())
            self.s2 += float(np.square(v).sum())
            self.lo, self.hi = min(self.lo, float(v.min())), max(self.hi, float(v.max()))
        if self.edges is not None:
            self.count(v)
        else:  # bottom-k of uniform keys = a uniform sample without replacement
            keys = np.concatenate([self.keys, self.rng.random(len(v))])
            vals = np.concatenate([self.sample, v])
            if len(keys) > SAMPLE:
                keep = np.argpartition(keys, SAMPLE)[:SAMPLE]
                keys, vals = keys[keep], vals[keep]
            self.keys, self.sample = keys, vals

    def count(self, v: np.ndarray) -> None:
        assert self.edges is not None and self.counts is not None
        self.counts += np.histogram(np.clip(v, self.edges[0], self.edges[-1]), self.edges)[0]

    def place_edges(self, bins: int) -> None:
        """Quantile edges from the sample, with the exact min and max as the outer edges."""
        if not len(self.sample):
            e = np.array([0.0, 1.0])
        else:
            e = np.unique(np.quantile(self.sample, np.linspace(0, 1, bins + 1)))
            e[0], e[-1] = self.lo, self.hi
            e = np.unique(e)
            if len(e) == 1:
                e = np.array([e[0] - 0.5, e[0] + 0.5])
        self.edges = e
        self.counts = np.zeros(len(e) - 1, dtype=np.int64)

    def row(self, name: str) -> dict:
        n = self.rows - self.nulls
        mean = self.s1 / n if n else math.nan
        std = math.sqrt(max(self.s2 / n - mean * mean, 0.0)) if n else math.nan
        assert self.edges is not None and self.counts is not None
        return _row(name, "dense", self.rows, n, 0.0, 0, mean, std, [],
                    {"kind": "fixed", "edges": [float(x) for x in self.edges], "counts": self.counts.tolist()})


def _row(name: str, kind: str, rows: int, present: int, oov_rate: float, card: int, mean: float, std: float,
         top: list, hist: dict) -> dict:
    cov = present / rows if rows else 0.0
    return {"field": name, "kind": kind, "rows": rows, "coverage": cov, "missing_rate": 1.0 - cov,
            "oov_rate": oov_rate, "cardinality": card, "mean": mean, "std": std, "top_json": top, "hist_json": hist}


def _counts_row(name: str, kind: str, counts: np.ndarray, values: np.ndarray, edges: list[float],
                top_k: int) -> dict:
    """Row for a small integer-valued column given its value counts (position, labels)."""
    rows = int(counts.sum())
    mean = float((counts * values).sum() / rows) if rows else math.nan
    std = float(math.sqrt(max((counts * values**2).sum() / rows - mean * mean, 0.0))) if rows else math.nan
    order = sorted((i for i in range(len(values)) if counts[i]), key=lambda i: (-counts[i], values[i]))
    top = [[int(values[i]), counts[i] / rows] for i in order[:top_k]]
    top.append([OTHER, float(sum(counts[i] for i in order[top_k:])) / rows if rows else 0.0])
    card = int((counts > 0).sum())
    return _row(name, kind, rows, rows, 0.0, card, mean, std, top,
                {"kind": "fixed", "edges": edges, "counts": counts.astype(int).tolist()})


def field_stats(
    dataset: DailyDataset,
    day: str,
    *,
    top_k: int = 20,
    bins: int = 20,
    reference_edges: Mapping[str, Sequence[float]] | None = None,
    hash_buckets: int = HASH_BUCKETS,
) -> Result:
    """Statistics of every field, image field and label of ``day``: one row each (``COLUMNS["field_stats"]``).

    Args:
        top_k: values listed in ``top_json`` (shares of non-missing values) before ``__other__``.
        bins: dense histogram bins when edges come from this day; image-brightness bins.
        reference_edges: dense field -> histogram edges to use (so days compare bin by bin).
        hash_buckets: hashed buckets of id histograms (keep it fixed across days).

    Means and stds are population statistics (``ddof=0``) over non-missing values; a sequence's or
    bag's mean and std are of its list lengths (before truncation to ``max_len``), and its other
    statistics count list elements (a bag's ``top_json``: its most frequent ids; ``oov_rate``: the
    share of its ids out of vocabulary; ``coverage``: rows with a non-empty bag).
    """
    schema = dataset.schema
    ref = {k: np.asarray(v, dtype=np.float64) for k, v in (reference_edges or {}).items()}
    maps = {name: IdMap(f) for name, f in schema.tables().items()}
    ids: dict[str, _IdAcc] = {}
    dense: dict[str, _DenseAcc] = {}
    pos = schema.position
    pos_counts = np.zeros(pos.max_position + 1, dtype=np.int64) if pos else None
    label_counts = {k: np.zeros(2, dtype=np.int64) for k in schema.labels}
    store = dataset.images_for(day) if schema.images else None  # as logged on that day
    # per image field: references per image-table row (row 0: no image) -- memory bounded by the
    # table, not by the day's rows
    image_refs = {f.name: np.zeros(len(store) + 1, dtype=np.int64) for f in schema.images} if store is not None else {}
    for i, f in enumerate(schema.fields):
        if isinstance(f, SparseField):
            ids[f.name] = _IdAcc(f.dtype == "string", hash_buckets)
        elif isinstance(f, SequenceField):
            ids[f.name] = _IdAcc(schema.table_of(f.name).dtype == "string", hash_buckets)
        elif isinstance(f, BagField):
            ids[f.name] = _IdAcc(schema.table_of(f.name).dtype == "string", hash_buckets, max_len=f.max_len)
        elif isinstance(f, DenseField):
            dense[f.name] = _DenseAcc(ref.get(f.name), seed=i)
    rows = 0
    for rb, path, row0, _ in dataset.scan(day):
        n = rb.num_rows
        rows += n
        src_idx: dict[str, np.ndarray] = {}
        for f in schema.fields:
            if isinstance(f, SparseField):
                m = maps[f.table_name]
                col = rb.column(f.name)
                idx = m(col)
                m.refuse_oov(col, idx, file=path, column=f.name, offsets=None, row0=row0)
                present = idx != 0
                ids[f.name].add(_plain(col).filter(pa.array(present)), idx[present], n, int(n - present.sum()))
                src_idx[f.name] = idx
            elif isinstance(f, SequenceField):
                sv, elems = map_sequence(rb.column(f.name), maps[f.table], file=path, column=f.name, row0=row0)
                acc = ids[f.name]
                acc.add(elems, sv.idx, n, int((sv.lengths == 0).sum()))
                acc.add_lengths(sv.lengths)
                src_idx[f.name] = sv.idx
            elif isinstance(f, BagField):
                wcol = rb.column(f.weights) if f.weights else None  # checked like the loader does
                sv, elems, _ = map_bag(rb.column(f.name), maps[f.table_name], file=path, column=f.name, row0=row0,
                                       weights=wcol, weights_column=f.weights)
                acc = ids[f.name]
                acc.add(elems, sv.idx, n, int((sv.lengths == 0).sum()))
                acc.add_lengths(sv.lengths)
            elif isinstance(f, DenseField):
                col = rb.column(f.name)
                v, n_null = dense_values(col, f, file=path, row0=row0)
                keep = ~_plain(col).is_null().to_numpy(zero_copy_only=False) if n_null else slice(None)
                dense[f.name].add(v[keep].astype(np.float64), n, n_null)
            elif isinstance(f, PositionField):
                p = position_values(rb.column(f.name), f, file=path, row0=row0)
                pos_counts += np.bincount(p, minlength=f.max_position + 1)  # type: ignore[operator]
        labels = label_values(schema, {k: rb.column(k) for k in schema.labels}, file=path, row0=row0)
        for k, v in labels.items():
            label_counts[k] += np.bincount(v.astype(np.int64), minlength=2)
        for f in schema.images:
            assert store is not None
            src = src_idx[f.source]
            refs = image_refs[f.name]  # references: non-missing source values
            refs += np.bincount(store.rows(src[src != 0]), minlength=len(refs))
    # dense fields without reference edges: place edges from the sample, then count in a second pass
    todo = [k for k, acc in dense.items() if acc.counts is None]
    for k in todo:
        dense[k].place_edges(bins)
    if todo:
        for rb, path, row0, _ in dataset.scan(day, columns=todo):
            for k in todo:
                col = rb.column(k)
                v, n_null = dense_values(col, schema[k], file=path, row0=row0)  # type: ignore[arg-type]
                keep = ~_plain(col).is_null().to_numpy(zero_copy_only=False) if n_null else slice(None)
                dense[k].count(v[keep].astype(np.float64))

    out: list[dict] = []
    for f in schema.fields:
        if f.name in ids:
            out.append(ids[f.name].row(f.name, f.kind, top_k))
        elif f.name in dense:
            out.append(dense[f.name].row(f.name))
        elif isinstance(f, PositionField):
            assert pos_counts is not None
            values = np.arange(1, f.max_position + 1)
            edges = [float(x) for x in np.arange(f.max_position + 1) + 0.5]
            out.append(_counts_row(f.name, "position", pos_counts[1:], values, edges, top_k))
    if store is not None:
        brightness = store.pixels.reshape(len(store) + 1, -1).to(torch.float32).mean(1).div(255).numpy()
        for f in schema.images:
            c = image_refs[f.name]
            w, b = c[1:].astype(np.float64), brightness[1:].astype(np.float64)  # referenced images, weighted
            n_has, n_all = int(c[1:].sum()), int(c.sum())
            mean = float((w * b).sum() / n_has) if n_has else math.nan
            std = float(math.sqrt((w * np.square(b - mean)).sum() / n_has)) if n_has else math.nan
            edges = np.linspace(0.0, 1.0, bins + 1)
            out.append(_row(f.name, "image", rows, 0, 0.0, int((c[1:] > 0).sum()), mean, std, [],
                            {"kind": "fixed", "edges": edges.tolist(),
                             "counts": np.rint(np.histogram(b, edges, weights=w)[0]).astype(int).tolist()}))
            cov = n_has / n_all if n_all else 0.0  # share of item references that have an image
            out[-1].update(coverage=cov, missing_rate=1.0 - cov)
    for k, c in label_counts.items():
        out.append(_counts_row(k, "label", c, np.array([0, 1]), [-0.5, 0.5, 1.5], top_k))
    meta = {"day": day, "rows": rows, "top_k": top_k, "bins": bins, "hash_buckets": hash_buckets,
            "schema_hash": schema.hash, "root": str(dataset.root),
            "dense_edges": {k: ("reference" if k in ref else "day quantiles") for k in dense}}
    return Result("field_stats", pd.DataFrame(out), meta)


def edges_from(result: Result) -> dict[str, list[float]]:
    """Dense field -> histogram edges of a ``field_stats`` result (pass as ``reference_edges``)."""
    f = result.frame
    return {r.field: list(r.hist_json["edges"]) for r in f.itertuples() if r.kind == "dense"}


__all__ = ["HASH_BUCKETS", "bucket_of", "edges_from", "field_stats"]
