"""Turn GroupLens MovieLens ratings (``ratings.csv`` + ``movies.csv``) into the daily data contract.

One row per rating:

* ``user_id`` (sparse, role ``user``): MovieLens ``userId`` as is (vocabulary ``max userId + 1``);
* ``item_id`` (sparse, table ``item``, role ``item``): ``movieId`` remapped to dense ids ``0..n-1`` in
  ``movieId`` order (the map is in ``<out>/items.parquet``);
* ``category_id`` (sparse, table ``category``): the movie's *first* listed genre (sorted genre names
  are the vocabulary, ``schema.extra["categories"]``);
* ``hist_item_id`` / ``hist_category_id`` (sequences over the ``item`` / ``category`` tables): the
  user's movies rated *strictly before* this rating's timestamp, oldest first (ties in time ordered
  by ``movieId``), the last ``max_len`` kept;
* label ``click`` = ``rating >= 4``; ``timestamp`` and ``rating`` ride along as passthrough columns
  (never features: ``rating`` is the label's source).

The partition of a rating is its UTC date, bucketed because 100k ratings spread over 22 years:
``partition="day"`` (one partition per date), ``"month"`` (labelled by the month's first day) or
``"<N>d"`` (N-day slices from the first rating's date, labelled by their first day).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ctrlens.data.loader import DAY_PREFIX
from ctrlens.data.schema import SCHEMA_FILE, Schema, SequenceField, SparseField
from ctrlens.data.validate import PASSTHROUGH_KEY
from ctrlens.errors import InputError

LICENSE_FILE = "GROUPLENS_README.txt"


@dataclass(frozen=True)
class ConvertInfo:
    """What :func:`convert` wrote."""

    root: Path
    rows: int
    users: int
    items: int
    partitions: int
    click_rate: float
    first_day: str
    last_day: str


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{path}: file not found (expected MovieLens {path.name} with columns {columns})")
    df = pd.read_csv(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; expected {columns}, found {list(df.columns)}")
    return df


def partition_labels(dates: np.ndarray, partition: str) -> np.ndarray:
    """``datetime64[D]`` dates -> ``datetime64[D]`` partition labels (the first day of each bucket)."""
    if partition == "day":
        return dates
    if partition == "month":
        return dates.astype("datetime64[M]").astype("datetime64[D]")
    m = re.fullmatch(r"([1-9][0-9]*)d", partition)
    if not m:
        raise InputError(f"partition must be 'day', 'month' or '<N>d' (e.g. '7d'), got {partition!r}")
    n = int(m.group(1))
    anchor = dates.min()
    return anchor + ((dates - anchor).astype(np.int64) // n * n).astype("timedelta64[D]")


def _histories(user: np.ndarray, ts: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by (user, timestamp): ``[start, stop)`` of each row's earlier ratings."""
    n = len(user)
    new_user = np.r_[True, user[1:] != user[:-1]]
    new_tie = new_user | np.r_[True, ts[1:] != ts[:-1]]
    user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
    stop = np.maximum.accumulate(np.where(new_tie, np.arange(n), 0))  # first rating at this very second
    start = np.maximum(user_start, stop - max_len)
    return start, stop


def _list_array(values: np.ndarray, start: np.ndarray, stop: np.ndarray) -> pa.Array:
    lengths = stop - start
    offsets = np.r_[0, np.cumsum(lengths)]
    total = int(offsets[-1])
    within = np.arange(total) - np.repeat(offsets[:-1], lengths)
    flat = values[np.repeat(start, lengths) + within]
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat, type=pa.int64()))


def convert(src: str | Path, out: str | Path, *, max_len: int = 20, partition: str = "month",
            overwrite: bool = False) -> ConvertInfo:
    """Write MovieLens ``src`` (a folder with ``ratings.csv`` and ``movies.csv``) as a dataset at ``out``.

    Args:
        max_len: history length kept (the most recent ``max_len`` earlier ratings).
        partition: ``"day"``, ``"month"`` or ``"<N>d"`` (see the module docstring).
        overwrite: replace the partitions of an existing ctrlens dataset at ``out``.
    """
    src, out = Path(src), Path(out)
    if max_len < 1:
        raise InputError(f"max_len must be >= 1, got {max_len}")
    partition_labels(np.array(["2000-01-01"], dtype="datetime64[D]"), partition)  # check the option early
    if not src.is_dir():
        raise InputError(f"{src}: MovieLens folder not found (expected ratings.csv and movies.csv in it)")
    ratings = _read(src / "ratings.csv", ["userId", "movieId", "rating", "timestamp"])
    movies = _read(src / "movies.csv", ["movieId", "title", "genres"])
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out}: folder exists and is not empty; pass overwrite=True (--overwrite) to replace it")
        if not (out / SCHEMA_FILE).exists():
            raise InputError(f"{out}: not a ctrlens dataset (no {SCHEMA_FILE}); refusing to overwrite it")
        for p in out.glob(f"{DAY_PREFIX}*"):
            shutil.rmtree(p)

    # items: every movieId of movies.csv or ratings.csv, dense in movieId order
    movie_ids = np.union1d(movies["movieId"].to_numpy(), ratings["movieId"].to_numpy())
    first_genre = movies.set_index("movieId")["genres"].astype(str).str.split("|").str[0]
    categories = sorted(first_genre.unique())
    cat_of_movie = pd.Series(pd.Categorical(first_genre, categories=categories).codes, index=first_genre.index)
    item_cat = cat_of_movie.reindex(movie_ids).to_numpy()  # NaN where a rated movie is not in movies.csv
    item_cat = np.where(np.isnan(item_cat), -1, item_cat).astype(np.int64)

    r = ratings.sort_values(["userId", "timestamp", "movieId"], kind="stable").reset_index(drop=True)
    user = r["userId"].to_numpy(np.int64)
    ts = r["timestamp"].to_numpy(np.int64)
    item = np.searchsorted(movie_ids, r["movieId"].to_numpy())
    cat = item_cat[item]
    start, stop = _histories(user, ts, max_len)
    dates = ts.astype("datetime64[s]").astype("datetime64[D]")
    label = partition_labels(dates, partition)

    table = pa.table({
        "user_id": pa.array(user),
        "item_id": pa.array(item.astype(np.int64)),
        "category_id": pa.array(cat, mask=cat < 0),
        "hist_item_id": _list_array(item.astype(np.int64), start, stop),
        "hist_category_id": _list_array(cat, start, stop),
        "click": pa.array((r["rating"].to_numpy() >= 4).astype(np.int8)),
        "timestamp": pa.array(ts),
        "rating": pa.array(r["rating"].to_numpy(np.float64)),
    })
    if (cat < 0).any():  # an unknown movie's genre is missing (null), and so is its history element
        hist_cat = table.column("hist_category_id").combine_chunks()
        flat = hist_cat.values.to_numpy(zero_copy_only=False)
        table = table.set_column(table.schema.get_field_index("hist_category_id"), "hist_category_id",
                                 pa.ListArray.from_arrays(hist_cat.offsets, pa.array(flat, mask=flat < 0)))
    # within a partition: time order
    order = np.lexsort((user, ts, label))
    table, label = table.take(pa.array(order)), label[order]
    bounds = np.flatnonzero(np.r_[True, label[1:] != label[:-1], True])
    out.mkdir(parents=True, exist_ok=True)
    for a, b in zip(bounds[:-1], bounds[1:]):
        folder = out / f"{DAY_PREFIX}{label[a]}"
        folder.mkdir(exist_ok=True)
        pq.write_table(table.slice(a, b - a), folder / "part-0.parquet", row_group_size=65_536)

    schema = Schema(
        fields=(
            SparseField("user_id", int(user.max()) + 1, role="user"),
            SparseField("item_id", len(movie_ids), table="item", role="item"),
            SparseField("category_id", len(categories), table="category"),
            SequenceField("hist_item_id", table="item", max_len=max_len),
            SequenceField("hist_category_id", table="category", max_len=max_len),
        ),
        labels=("click",),
        extra={
            "source": "MovieLens ml-latest-small (GroupLens), converted by ctrlens.data.movielens",
            "license": f"GroupLens usage license: research, non-commercial; see {LICENSE_FILE}",
            "citation": "Harper & Konstan 2015, ACM TiiS 5(4):19, doi:10.1145/2827872",
            "partition": partition,
            "categories": categories,
            PASSTHROUGH_KEY: ["timestamp", "rating"],
        },
    )
    schema.save(out)
    titles = movies.set_index("movieId").reindex(movie_ids)
    pq.write_table(pa.table({
        "item_id": pa.array(np.arange(len(movie_ids), dtype=np.int64)),
        "movieId": pa.array(movie_ids.astype(np.int64)),
        "title": pa.array(titles["title"].astype(object).where(titles["title"].notna(), None).tolist(),
                          type=pa.string()),
        "category_id": pa.array(item_cat, mask=item_cat < 0),
    }), out / "items.parquet")
    if (src / LICENSE_FILE).exists():
        shutil.copyfile(src / LICENSE_FILE, out / LICENSE_FILE)
    days = [str(label[a]) for a in bounds[:-1]]
    return ConvertInfo(out, len(r), int(len(np.unique(user))), len(movie_ids), len(days),
                       float((r["rating"].to_numpy() >= 4).mean()), days[0], days[-1])


__all__ = ["ConvertInfo", "convert", "partition_labels"]
