"""Shared ``--checkpoint`` / ``--loader`` handling of the commands that read a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

LOADER_HELP = (
    "Your model's loader, 'package.module:function' or 'path/to/file.py:function': function(checkpoint path, schema) "
    "-> ctrlens ModelView (docs/own-model.md). Default: the reference models' loader (ctrlens train checkpoints)."
)
CHECKPOINT_HELP = "Model checkpoint: a ctrlens train output, or any file (or folder) your --loader reads."


def loader_option() -> Any:
    return typer.Option(None, "--loader", help=LOADER_HELP)


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


DB_HELP = ("Also write the results to this store (sqlite:///path or postgresql://...), run kind 'analysis', under the "
           "model version worked out from the checkpoint (no hashes to give).")
MODEL_HELP = "Model name in the store (with --db; default: the view's name)."


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
