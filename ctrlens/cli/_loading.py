"""Shared handling of ``--checkpoint`` / ``--loader`` (load the view) and ``--db`` (store the results) of the
commands that read a model; the options themselves are in :mod:`ctrlens.cli._options`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def load_view(checkpoint: Path, schema: Any, loader: Optional[str], device: str = "cpu") -> Any:
    """The checked :class:`~ctrlens.models.interface.ModelView` of ``checkpoint`` (``view.checkpoint``
    carries its version); every problem is an InputError naming the flag."""
    from ctrlens.errors import InputError
    from ctrlens.models.loader import load_model, resolve_loader

    if not checkpoint.exists():
        raise InputError(f"--checkpoint {checkpoint}: no such file")
    try:
        ld = resolve_loader(loader)
    except InputError as e:
        raise InputError(f"--loader: {e}") from None
    return load_model(checkpoint, schema, ld, device=device)


def store_results(db: Optional[str], name: Optional[str], view: Any, day: str, results: list[Any], params: dict[str, Any]) -> Optional[str]:
    """Write ``results`` for ``day`` under ``view``'s model version (registered if new); the kinds
    written replace only themselves, so neurons, probes and saliency of one day can share a run.
    Returns a one-line description of what was written, or ``None`` without ``--db``."""
    if db is None:
        return None
    from ctrlens.store import Store

    model = name or view.name
    with Store(db, create=True) as store:
        vid = store.register_view(model, view)
        store.write_day(vid, day, "analysis", results, params=params, replace="kinds")
        where = store.url_text
    kinds = ", ".join(sorted({r.kind for r in results}))
    return f"wrote {kinds} of {day} to {where}: model {model!r} version #{vid} ({view.version})"


def open_inputs(checkpoint: Path, data: Path, device: str, days: dict[str, Optional[str]]) -> tuple[Any, list[str]]:
    """``(dataset, its days)`` of ``--data`` after the cheap checks, in this order: ``--checkpoint``
    exists, every day flag given (``{"--day": "2026-01-03", "--compare": None}``) is a day of the
    dataset, ``--device`` is usable. Each failure is an InputError naming the flag."""
    from ctrlens.cli._options import check_device
    from ctrlens.data import DailyDataset
    from ctrlens.errors import InputError

    if not checkpoint.exists():
        raise InputError(f"--checkpoint {checkpoint}: no such file")
    ds = DailyDataset(data)
    known = list(ds.days())
    for flag, d in days.items():
        if d is not None and d not in known:
            raise InputError(f"{flag} {d!r} is not a day of {data}; days: {known}")
    check_device(device)
    return ds, known


def split_layers(layers: Optional[str]) -> Optional[list[str]]:
    """``--layers 'embedding, mlp.*'`` -> ``["embedding", "mlp.*"]``; ``None`` (all layers) when not given."""
    return [s.strip() for s in layers.split(",") if s.strip()] if layers else None


def print_json(obj: Any) -> None:
    """Print ``obj`` as one line of strict JSON (NaN/inf as null, see :func:`ctrlens.results.jsonable`;
    anything else JSON cannot hold as its ``str``)."""
    import json

    from ctrlens.results import jsonable

    print(json.dumps(jsonable(obj), default=str))
