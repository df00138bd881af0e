"""Turn the ``model`` and ``data`` arguments of :func:`ctrlens.saliency.report` into a view and rows."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from ctrlens.data.batch import Batch
from ctrlens.errors import InputError
from ctrlens.models.interface import ModelView, as_view, checkpoint_of


@dataclass
class Rows:
    """The rows to analyse: ``batches`` of at most ``batch_size`` rows, ``rows`` in all."""

    batches: list[Batch]
    rows: int
    day: str | None
    source: str | None  # dataset root, when the data came from one
    schema: Any = None  # ctrlens.data.schema.Schema when known


def resolve_model(model: Any, schema: Any = None, loader: Any = None) -> tuple[ModelView, str | None]:
    """``(view, checkpoint path or None)`` for a reference model, a ModelView or a checkpoint path
    (loaded with ``loader``, default: the reference models' loader)."""
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.exists():
            raise InputError(f"checkpoint {path}: file not found")
        if schema is None and loader is None:  # a ctrlens checkpoint carries its own schema
            from ctrlens.models.checkpoint import checkpoint_schema

            schema = checkpoint_schema(path)
        if schema is None:
            raise InputError(f"checkpoint {path}: a loader needs the data's schema; pass a dataset")
        from ctrlens.models.loader import load_model

        return load_model(path, schema, loader), str(path)
    view = as_view(model)
    return view, getattr(checkpoint_of(view), "path", None)


def model_version(view: ModelView) -> str | None:
    """The checkpoint's weights / content hash (the store's model version), when the model came from one."""
    return getattr(checkpoint_of(view), "version", None)


def _is_dataset(data: Any) -> bool:
    return hasattr(data, "iter_batches") and hasattr(data, "days")


def open_dataset(data: Any) -> Any:
    """A DailyDataset for a dataset root, or ``data`` itself."""
    if isinstance(data, (str, Path)):
        root = Path(data)
        if not root.exists():
            raise InputError(f"data {root}: no such dataset root")
        from ctrlens.data import DailyDataset  # type: ignore[attr-defined]

        return DailyDataset(root)
    return data


def pick_day(dataset: Any, day: str | None) -> str:
    days = list(dataset.days())
    where = getattr(dataset, "root", "the dataset")
    if not days:
        raise InputError(f"data {where}: has no days")
    if day is None:
        return days[-1]  # the latest day: what a daily job looks at
    if day not in days:
        raise InputError(f"day {day!r} is not in {where}; days: {days[0]} .. {days[-1]} ({len(days)} days)")
    return day


def load_rows(data: Any, day: str | None, *, max_rows: int, batch_size: int, seed: int) -> Rows:
    """At most ``max_rows`` rows of ``day`` from a DailyDataset / dataset root / Batch / iterable of
    Batch, in batches of at most ``batch_size`` rows. From a dataset the rows are a seeded shuffle
    of the day (a random sample, not its first hour)."""
    if max_rows < 1 or batch_size < 1:
        raise InputError(f"max_rows and batch_size must be >= 1, got {max_rows} and {batch_size}")
    data = open_dataset(data)
    source = schema = None
    if _is_dataset(data):
        day = pick_day(data, day)
        source, schema = str(getattr(data, "root", "")) or None, getattr(data, "schema", None)
        it: Iterable[Any] = data.iter_batches(day, batch_size=batch_size, shuffle=True, seed=seed, limit=max_rows)
    elif isinstance(data, Batch):
        if len(data) > max_rows:  # a seeded random subset, kept in row order
            g = torch.Generator().manual_seed(seed)
            idx = torch.randperm(len(data), generator=g)[:max_rows].sort().values
            data = data.select(idx)
        it = [data]
    elif isinstance(data, Iterable):
        it = data
    else:
        raise InputError(
            f"data: expected a DailyDataset, a dataset root, a Batch or an iterable of Batch, got {type(data).__name__}"
        )
    out: list[Batch] = []
    n = 0
    for i, b in enumerate(it):
        if not isinstance(b, Batch):
            raise InputError(f"data: item #{i} is a {type(b).__name__}, expected a ctrlens Batch")
        for chunk in (b.split(batch_size) if len(b) > batch_size else [b]):
            take = min(len(chunk), max_rows - n)
            if take <= 0:
                break
            out.append(chunk if take == len(chunk) else chunk.select(slice(0, take)))
            n += take
        if n >= max_rows:
            break
    if n == 0:
        where = f" of {source}" if source else ""
        raise InputError(f"day {day!r}{where} has no rows" if day else "data has no rows")
    return Rows(out, n, day, source, schema)


@contextmanager
def evaluating(view: ModelView, device: torch.device) -> Iterator[None]:
    """Move the model to ``device`` and put it in eval mode (attributions must not update batch
    statistics or use dropout); its training mode is restored afterwards."""
    if view.device != device:
        view.model.to(device)
    was_training = view.model.training
    view.model.eval()
    try:
        yield
    finally:
        view.model.train(was_training)
