"""Stream a day of the data contract as :class:`~ctrlens.data.batch.Batch` objects.

Reading is file by file and row group by row group (in record batches of at most
:data:`READ_ROWS` rows), so memory stays bounded by the batch size and the shuffle buffer, never by
the day. Ids are mapped to embedding indices with vectorised numpy/Arrow code; every slice is
checked as it is read (the same checks :meth:`DailyDataset.validate` runs over a whole day).

Sharding for DDP: the day's rows (after ``limit``) are split into ``world_size`` contiguous shares of
equal size in reading order; rank ``r`` reads only its share. The remainder (fewer than
``world_size`` rows) is dropped (``remainder="drop"``, the default) or filled by repeating rows from the
start of the day (``remainder="pad"``), so every rank yields the same number of batches. Evaluation
and analyses use ``remainder="exact"``: every row exactly once, shares differing by at most one row.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ctrlens.data.batch import Batch
from ctrlens.data.columns import IdMap, map_bag, map_sequence
from ctrlens.data.images import ImageStore
from ctrlens.data.schema import BagField, DenseField, PositionField, Schema, SequenceField, SparseField
from ctrlens.data.validate import (
    DataError,
    DayCounts,
    ValidationReport,
    check_file_columns,
    check_image_sources,
    dense_values,
    expected_columns,
    label_values,
    names,
    position_values,
)
from ctrlens.errors import InputError

DAY_PREFIX = "day="
IMAGE_OVERRIDE = "_images.parquet"  # per-day image override inside a day folder
#: Rows decoded per Arrow record batch while reading a row group (bounds memory for huge row groups).
READ_ROWS = 65_536
#: Default rows mixed together by ``shuffle=True`` (a day that fits is shuffled uniformly).
SHUFFLE_BUFFER = 262_144

Chunk = dict  # key -> numpy array with a leading row axis: "f:<field>", "w:<bag>", "l:<label>", "_user", "_row"


@dataclass(frozen=True)
class Segment:
    """One row group of one file, placed within the day."""

    file: int
    row_group: int
    file_row0: int  # first row of the row group within its file
    day_row0: int  # first row of the row group within the day
    rows: int


@dataclass
class DayPlan:
    """The files of a day (already checked for columns and types) and their row groups."""

    day: str
    files: list[Path]
    parquet: list[pq.ParquetFile]
    segments: list[Segment]

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments)


def _day_key(day: str) -> int:
    return dt.date.fromisoformat(day).toordinal()


class DailyDataset:
    """A dataset root of the daily data contract (docs/data-format.md).

    Args:
        root: folder with ``schema.json`` and ``day=YYYY-MM-DD/*.parquet`` partitions.
        schema: use this schema instead of reading ``<root>/schema.json``.

    Raises:
        InputError: the root or its schema is missing or invalid (message names the file).
    """

    def __init__(self, root: str | Path, *, schema: Schema | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset root not found (expected a folder with schema.json and "
                            "day=YYYY-MM-DD/ partitions)", file=self.root)
        self.schema = schema if schema is not None else Schema.load(self.root)
        check_image_sources(self.schema)
        self.columns = list(expected_columns(self.schema))
        self._maps = {name: IdMap(f) for name, f in self.schema.tables().items()}
        self._images: ImageStore | None = None
        self._day_images: dict[str, ImageStore] = {}
        self._counts: dict[str, DayCounts] = {}
        if self.schema.images:
            p = self.image_path
            if p is None or not p.exists():
                raise DataError(f"{p}: image table not found; schema.json names image_table "
                                f"{self.schema.image_table!r} for image fields {[f.name for f in self.schema.images]}",
                                file=p)

    def __repr__(self) -> str:
        return f"DailyDataset({str(self.root)!r}, fields={list(self.schema.names)})"

    def __getstate__(self) -> dict:  # DataLoader workers: reload images lazily, start counts afresh
        state = dict(self.__dict__)
        state["_images"] = None
        state["_day_images"] = {}
        state["_counts"] = {}
        return state

    # -- layout ----------------------------------------------------------------------------------
    def days(self) -> list[str]:
        """The partitions present, as sorted ``"YYYY-MM-DD"`` strings."""
        out = []
        for p in self.root.iterdir():
            if not (p.is_dir() and p.name.startswith(DAY_PREFIX)):
                continue
            day = p.name[len(DAY_PREFIX):]
            try:
                dt.date.fromisoformat(day)
                ok = len(day) == 10
            except ValueError:
                ok = False
            if not ok:
                raise DataError(f"{p}: partition folder name must be day=YYYY-MM-DD, got {p.name!r}", file=p)
            out.append(day)
        return sorted(out)

    def files(self, day: str) -> list[Path]:
        """The Parquet files of ``day`` in reading order (sorted by name)."""
        folder = self.root / f"{DAY_PREFIX}{day}"
        if not folder.is_dir():
            present = self.days()
            raise DataError(f"{self.root}: day {day!r} not found (no folder {folder.name}); days present: "
                            f"{names(present)}", file=folder, day=day)
        return sorted(p for p in folder.glob("*.parquet") if p.is_file() and not p.name.startswith((".", "_")))

    def plan(self, day: str) -> DayPlan:
        """Open the day's files, check their columns and list their row groups."""
        files = self.files(day)
        folder = self.root / f"{DAY_PREFIX}{day}"
        if not files:
            raise DataError(f"{folder}: day {day} is empty: the partition has no *.parquet files", file=folder, day=day)
        parquet, segments, day_row = [], [], 0
        for i, path in enumerate(files):
            try:
                pf = pq.ParquetFile(path)
                arrow_schema = pf.schema_arrow
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{path}: not a readable Parquet file ({e})", file=path, day=day) from None
            check_file_columns(self.schema, path, arrow_schema)
            parquet.append(pf)
            file_row = 0
            for rg in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(rg).num_rows
                if n:
                    segments.append(Segment(i, rg, file_row, day_row, n))
                file_row += n
                day_row += n
        if day_row == 0:
            raise DataError(f"{folder}: day {day} is empty: {len(files)} file(s) with 0 rows", file=folder, day=day)
        return DayPlan(day, files, parquet, segments)

    def num_rows(self, day: str) -> int:
        """Rows of ``day`` (from Parquet metadata; nothing is decoded)."""
        return self.plan(day).rows

    @property
    def image_path(self) -> Path | None:
        return None if self.schema.image_table is None else self.root / self.schema.image_table

    @property
    def images(self) -> ImageStore | None:
        """The image table, loaded once on first use; ``None`` without image fields."""
        if self._images is None and self.schema.images:
            key = self.schema.table_of(self.schema.images[0].source)
            self._images = ImageStore(self.image_path, self.schema.image_shape, key)  # type: ignore[arg-type]
        return self._images

    # -- reading ---------------------------------------------------------------------------------
    def _read(self, plan: DayPlan, seg: Segment, lo: int, hi: int,
              columns: Sequence[str] | None = None) -> Iterator[tuple[pa.RecordBatch, int]]:
        """Rows ``[lo, hi)`` of a segment as record batches with their first row within the file."""
        pf, path = plan.parquet[seg.file], plan.files[seg.file]
        pos = 0
        try:
            for rb in pf.iter_batches(batch_size=READ_ROWS, row_groups=[seg.row_group],
                                      columns=list(columns or self.columns)):
                a, b = max(lo, pos), min(hi, pos + rb.num_rows)
                if a < b:
                    yield rb.slice(a - pos, b - a), seg.file_row0 + a
                pos += rb.num_rows
                if pos >= hi:
                    break
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: corrupt Parquet data in row group {seg.row_group} ({e})",
                            file=path, day=plan.day) from None

    def scan(self, day: str, columns: Sequence[str] | None = None
             ) -> Iterator[tuple[pa.RecordBatch, Path, int, int]]:
        """Every row of the day in reading order, raw: ``(record batch, file, first file row, first day row)``."""
        plan = self.plan(day)
        for seg in plan.segments:
            for rb, file_row in self._read(plan, seg, 0, seg.rows, columns):
                yield rb, plan.files[seg.file], file_row, seg.day_row0 + file_row - seg.file_row0

    def map_slice(self, rb: pa.RecordBatch, file: Path, file_row0: int, day_row0: int, counts: DayCounts,
                  *, build: bool = True) -> Chunk:
        """Check and map one slice; adds to ``counts``. With ``build=False`` no padded arrays are made."""
        n = rb.num_rows
        out: Chunk = {}
        user = self.schema.role("user")
        for f in self.schema.fields:
            if isinstance(f, SparseField):
                m = self._maps[f.table_name]
                col = rb.column(f.name)
                idx = m(col)
                m.refuse_oov(col, idx, file=file, column=f.name, offsets=None, row0=file_row0)
                missing, oov = int((idx == 0).sum()), int((idx == 1).sum())
                counts.for_field(f.name).add(n, n - missing, missing, oov)
                out["f:" + f.name] = idx
                if user is not None and f.name == user.name:
                    if m.is_string:  # vocabulary position; -1 missing, -2 out of vocabulary
                        out["_user"] = np.where(idx >= 2, idx - 2, np.where(idx == 1, -2, -1))
                    else:
                        out["_user"] = np.where(idx == 0, -1, m.raw(col))
            elif isinstance(f, SequenceField):
                sv, _ = map_sequence(rb.column(f.name), self._maps[f.table], file=file, column=f.name, row0=file_row0)
                counts.for_field(f.name).add(n, len(sv.idx), int((sv.lengths == 0).sum()), int((sv.idx == 1).sum()))
                if build:
                    out["f:" + f.name] = sv.padded(f.max_len)
            elif isinstance(f, BagField):
                wcol = rb.column(f.weights) if f.weights else None
                sv, _, w = map_bag(rb.column(f.name), self._maps[f.table_name], file=file, column=f.name,
                                   row0=file_row0, weights=wcol, weights_column=f.weights)
                counts.for_field(f.name).add(n, len(sv.idx), int((sv.lengths == 0).sum()), int((sv.idx == 1).sum()))
                if build:
                    out["f:" + f.name] = sv.padded(f.max_len, keep="first")
                    if w is not None:
                        out["w:" + f.name] = sv.pad(w, f.max_len, keep="first", fill=0.0)
            elif isinstance(f, DenseField):
                v, n_null = dense_values(rb.column(f.name), f, file=file, row0=file_row0)
                counts.for_field(f.name).add(n, n - n_null, n_null, 0)
                out["f:" + f.name] = v
            elif isinstance(f, PositionField):
                out["f:" + f.name] = position_values(rb.column(f.name), f, file=file, row0=file_row0)
        labels = label_values(self.schema, {k: rb.column(k) for k in self.schema.labels}, file=file, row0=file_row0)
        for k, v in labels.items():
            out["l:" + k] = v
        out["_row"] = np.arange(day_row0, day_row0 + n, dtype=np.int64)
        counts.rows += n
        return out

    def images_for(self, day: str | None) -> ImageStore | None:
        """The image table as it was on ``day``: the shared table, with the rows of the day's override
        table ``day=D/_images.parquet`` (if present) replacing theirs -- how a broken image pipeline on one
        day is logged without rewriting the shared table (see docs/data-format.md)."""
        base = self.images
        if base is None or day is None:
            return base
        if day not in self._day_images:
            p = self.root / f"{DAY_PREFIX}{day}" / IMAGE_OVERRIDE
            self._day_images[day] = base.with_overrides(p) if p.exists() else base
        return self._day_images[day]

    def to_batch(self, chunk: Chunk, *, images: bool = True, day: str | None = None) -> Batch:
        """Tensors of a mapped chunk (zero-copy where possible), with the images it references
        (as logged on ``day`` when given)."""
        feats = {k[2:]: torch.from_numpy(v) for k, v in chunk.items() if k.startswith("f:")}
        masks = {f.name: feats[f.name] != 0 for f in (*self.schema.sequences, *self.schema.bags)}
        labels = {k[2:]: torch.from_numpy(v) for k, v in chunk.items() if k.startswith("l:")}
        weights = {k[2:]: torch.from_numpy(v) for k, v in chunk.items() if k.startswith("w:")}
        batch = Batch(features=feats, masks=masks, labels=labels,
                      user=torch.from_numpy(chunk["_user"]) if "_user" in chunk else None,
                      row=torch.from_numpy(chunk["_row"]), weights=weights)
        if images and self.schema.images:
            store = self.images_for(day)
            assert store is not None
            batch.images, batch.image_index = store.gather(
                {f.name: chunk["f:" + f.source] for f in self.schema.images})
        return batch

    # -- public streaming API ---------------------------------------------------------------------
    def iter_batches(
        self,
        day: str,
        batch_size: int = 4096,
        *,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        limit: int | None = None,
        remainder: Literal["drop", "pad", "exact"] = "drop",
        shuffle_buffer: int = SHUFFLE_BUFFER,
        images: bool = True,
        every: tuple[int, int] | None = None,
        first: bool = False,
    ) -> Iterator[Batch]:
        """Stream rank ``rank``'s share of ``day`` in batches of ``batch_size`` rows (the last may be shorter).

        Args:
            shuffle: visit row groups in a seeded random order and shuffle rows within a buffer of
                ``shuffle_buffer`` rows (uniform over the share when it fits in the buffer).
            seed: the same seed on every rank (row-group order must agree for shares to be disjoint).
            rank, world_size: DDP sharding; each rank gets ``rows // world_size`` rows (``remainder="drop"``),
                ``ceil(rows / world_size)`` (``"pad"``, repeating the day's first rows), or its own
                contiguous part of every row exactly once (``"exact"``: shares differ by at most one
                row, so ranks may yield different numbers of batches -- for evaluation and analyses,
                not for gradient steps).
            limit: use only the first ``limit`` rows of the day (in the possibly shuffled row-group
                order), before sharding.
            images: build ``batch.images`` / ``batch.image_index`` (schemas with image fields).
            every: ``(start, step)``: yield only batches ``start, start + step, ...`` of the stream
                (the others are read, not built). Analyses shard a day this way: with
                ``(rank, world_size)`` the ranks together get exactly one process's batches, whatever
                the number of ranks (``rank``/``world_size`` above give each rank other batches).
            first: with ``every``, also yield the stream's first batch (before the others) when it is
                not one of those: a share that must take settings from the day's first rows (e.g.
                histogram edges) gets them from the pass it reads anyway.

        Counts of missing and out-of-vocabulary values of this pass: :meth:`counts`.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise InputError(f"rank must be in [0, world_size); got rank={rank}, world_size={world_size}")
        if remainder not in ("drop", "pad", "exact"):
            raise InputError(f"remainder must be 'drop', 'pad' or 'exact', got {remainder!r}")
        if limit is not None and limit < 0:
            raise InputError(f"limit must be >= 0, got {limit}")
        plan = self.plan(day)
        counts = DayCounts(day)
        self._counts[day] = counts
        segments = list(plan.segments)
        if shuffle:
            order = np.random.default_rng([seed, _day_key(day)]).permutation(len(segments))
            segments = [segments[i] for i in order]
        total = plan.rows if limit is None else min(plan.rows, limit)
        if remainder == "exact":
            lo, hi = rank * total // world_size, (rank + 1) * total // world_size
            ranges = [(lo, hi)] if hi > lo else []
        else:
            share = total // world_size if remainder == "drop" else math.ceil(total / world_size)
            ranges = _wrapped(rank * share, share, total) if share else []
        rng = np.random.default_rng([seed, _day_key(day), rank, world_size]) if shuffle else None
        if every is not None and not (every[1] >= 1 and 0 <= every[0] < every[1]):
            raise InputError(f"every must be (start, step) with 0 <= start < step; got {every}")
        # a generator from here on: argument and layout errors above surface at the call, not at first next()
        return self._stream(plan, segments, ranges, counts, batch_size, rng, max(shuffle_buffer, batch_size), images,
                            every, first)

    def _stream(self, plan: DayPlan, segments: list[Segment], ranges: list[tuple[int, int]], counts: DayCounts,
                batch_size: int, rng: np.random.Generator | None, buffer_rows: int, images: bool,
                every: tuple[int, int] | None = None, first: bool = False) -> Iterator[Batch]:
        chunks = self._chunks(plan, segments, ranges, counts)
        for i, chunk in enumerate(_rebatch(chunks, batch_size, rng, buffer_rows)):
            if every is None or i % every[1] == every[0] or (first and i == 0):
                yield self.to_batch(chunk, images=images, day=plan.day)

    def _chunks(self, plan: DayPlan, segments: list[Segment], ranges: list[tuple[int, int]],
                counts: DayCounts) -> Iterator[Chunk]:
        """Mapped slices covering positions ``ranges`` of the concatenation of ``segments``."""
        for a, b in ranges:
            pos = 0
            for seg in segments:
                lo, hi = max(a - pos, 0), min(b - pos, seg.rows)
                if lo < hi:
                    for rb, file_row in self._read(plan, seg, lo, hi):
                        day_row = seg.day_row0 + file_row - seg.file_row0
                        yield self.map_slice(rb, plan.files[seg.file], file_row, day_row, counts)
                pos += seg.rows
                if pos >= b:
                    break

    def load_day(self, day: str, limit: int | None = None, *, images: bool = True) -> Batch:
        """The whole day (or its first ``limit`` rows) as one :class:`Batch`."""
        rows = self.num_rows(day) if limit is None else min(limit, self.num_rows(day))
        batches = list(self.iter_batches(day, max(rows, 1), limit=limit, images=images))
        if not batches:
            raise InputError(f"day {day}: limit={limit} selects no rows")
        return batches[0]

    def read_frame(self, day: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The day's raw rows as pandas (files in reading order; passthrough columns included)."""
        plan = self.plan(day)
        tables = []
        for path in plan.files:
            try:
                tables.append(pq.read_table(path, columns=list(columns) if columns else None))
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{path}: not a readable Parquet file ({e})", file=path, day=day) from None
        table = pa.concat_tables(tables, promote_options="permissive")
        if "day" in table.column_names:
            table = table.drop_columns(["day"])
        return table.to_pandas()

    def validate(self, day: str) -> ValidationReport:
        """Check every row of ``day`` (and the image table) without building tensors.

        Raises:
            DataError: the first problem found, naming file, column, row and what was expected.
        """
        plan = self.plan(day)
        counts = DayCounts(day)
        for rb, path, file_row, day_row in self.scan(day):
            self.map_slice(rb, path, file_row, day_row, counts, build=False)
        if self.schema.images:
            _ = self.images
        self._counts[day] = counts
        return ValidationReport(day, [str(p) for p in plan.files], counts.rows, counts)

    def counts(self, day: str) -> DayCounts:
        """Counts (rows, missing, out-of-vocabulary per field) of the latest pass over ``day``.

        After :meth:`iter_batches` they cover what that pass yielded (the rank's share, up to where
        iteration stopped); a day not read yet is scanned in full by :meth:`validate`.
        """
        if day not in self._counts:
            self.validate(day)
        return self._counts[day]

    def oov_counts(self, day: str) -> dict[str, int]:
        """Field -> values mapped to the OOV bucket in the latest pass over ``day`` (see :meth:`counts`)."""
        return self.counts(day).oov

    def torch_dataset(self, days: str | Sequence[str], batch_size: int = 4096, *, rank: int | None = None,
                      world_size: int | None = None, shuffle: bool = False, seed: int = 0,
                      limit: int | None = None, remainder: Literal["drop", "pad", "exact"] = "drop") -> "DailyIterable":
        """A ``torch.utils.data.IterableDataset`` of :class:`Batch` es for ``DataLoader(ds, batch_size=None)``.

        ``rank``/``world_size`` default to ``torch.distributed``'s when it is initialised. See
        :class:`DailyIterable`.
        """
        return DailyIterable(self, [days] if isinstance(days, str) else list(days), batch_size, rank=rank,
                             world_size=world_size, shuffle=shuffle, seed=seed, limit=limit, remainder=remainder)


def _wrapped(start: int, length: int, total: int) -> list[tuple[int, int]]:
    """Positions ``[start, start + length)`` modulo ``total`` as ranges (padding repeats the first rows)."""
    out, a, end = [], start, start + length
    while a < end:
        s = a % total
        n = min(end - a, total - s)
        out.append((s, s + n))
        a += n
    return out


def _concat(chunks: list[Chunk]) -> Chunk:
    if len(chunks) == 1:
        return chunks[0]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _rebatch(chunks: Iterator[Chunk], batch_size: int, rng: np.random.Generator | None,
             buffer_rows: int) -> Iterator[Chunk]:
    """Cut a stream of chunks into batches; with ``rng``, shuffle within windows of ``buffer_rows``."""
    pending: list[Chunk] = []
    n_pending = 0
    threshold = buffer_rows if rng is not None else batch_size
    for ch in chunks:
        pending.append(ch)
        n_pending += len(ch["_row"])
        if n_pending < threshold:
            continue
        merged = _concat(pending)
        if rng is not None:
            perm = rng.permutation(n_pending)
            merged = {k: v[perm] for k, v in merged.items()}
        full = (n_pending // batch_size) * batch_size
        for s in range(0, full, batch_size):
            yield {k: v[s:s + batch_size] for k, v in merged.items()}
        pending = [{k: v[full:] for k, v in merged.items()}] if full < n_pending else []
        n_pending -= full
    if n_pending:
        merged = _concat(pending)
        if rng is not None:
            perm = rng.permutation(n_pending)
            merged = {k: v[perm] for k, v in merged.items()}
        for s in range(0, n_pending, batch_size):
            yield {k: v[s:s + batch_size] for k, v in merged.items()}


class DailyIterable(torch.utils.data.IterableDataset):
    """Batches of several days for a ``DataLoader`` under DDP: each rank (and each worker of a rank)
    reads a disjoint, equal-sized share of every day.

    Use ``DataLoader(ds, batch_size=None)`` (the dataset yields whole :class:`Batch` es). With
    ``num_workers=k`` the rank's share is split again into ``k`` equal shares, one per worker.
    Call :meth:`set_epoch` each epoch to reshuffle (seed + epoch), as with ``DistributedSampler``.
    """

    def __init__(self, dataset: DailyDataset, days: list[str], batch_size: int, *, rank: int | None = None,
                 world_size: int | None = None, shuffle: bool = False, seed: int = 0, limit: int | None = None,
                 remainder: Literal["drop", "pad", "exact"] = "drop") -> None:
        super().__init__()
        if rank is None or world_size is None:
            dist = torch.distributed
            ready = dist.is_available() and dist.is_initialized()
            rank = (dist.get_rank() if ready else 0) if rank is None else rank
            world_size = (dist.get_world_size() if ready else 1) if world_size is None else world_size
        self.dataset, self.days, self.batch_size = dataset, days, batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.limit, self.remainder = shuffle, seed, limit, remainder
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _worker(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        if info is None:
            return self.rank, self.world_size
        return self.rank * info.num_workers + info.id, self.world_size * info.num_workers

    def __iter__(self) -> Iterator[Batch]:
        rank, world = self._worker()
        for day in self.days:
            yield from self.dataset.iter_batches(
                day, self.batch_size, shuffle=self.shuffle, seed=self.seed + self.epoch, rank=rank,
                world_size=world, limit=self.limit, remainder=self.remainder)

    def num_batches(self, num_workers: int = 0) -> int:
        """Batches this rank yields per epoch (the same on every rank, except with ``remainder="exact"``)."""
        k = max(num_workers, 1)
        world = self.world_size * k
        out = 0
        for day in self.days:
            rows = self.dataset.num_rows(day)
            total = rows if self.limit is None else min(rows, self.limit)
            if self.remainder == "exact":
                for w in range(self.rank * k, (self.rank + 1) * k):
                    share = (w + 1) * total // world - w * total // world
                    out += math.ceil(share / self.batch_size)
                continue
            share = total // world if self.remainder == "drop" else math.ceil(total / world)
            out += k * math.ceil(share / self.batch_size)
        return out


__all__ = ["DailyDataset", "DailyIterable", "DataError", "DayPlan", "Segment"]
