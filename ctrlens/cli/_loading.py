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
