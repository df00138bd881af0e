"""The reference models' loader: ``ctrlens train`` checkpoints -> :class:`~ctrlens.models.interface.ModelView`.

It is ctrlens' default loader (``ctrlens.models.loader.DEFAULT_LOADER = "reference_models.loader:load"``),
one loader among others: ctrlens itself never imports ``reference_models``; it resolves this module by
name, exactly as it resolves a user's ``loader: "my_package.my_module:load"``.
"""

from __future__ import annotations

from pathlib import Path

from ctrlens.data.schema import Schema
from ctrlens.models.checkpoint import load_checkpoint
from ctrlens.models.interface import ModelView

from reference_models import MODEL_NAMES, build

__all__ = ["MODEL_NAMES", "build", "load"]


def load(checkpoint: Path, schema: Schema) -> ModelView:
    """Rebuild the reference model a checkpoint names (``reference_models.build``), load its weights
    (refused, naming the differing fields, when ``schema`` is not the checkpoint's), and return its view
    with ``view.checkpoint`` set to the checkpoint's :class:`~ctrlens.models.checkpoint.CheckpointInfo`."""
    model = load_checkpoint(checkpoint, schema, builder=build)
    view = model.lens()
    view.checkpoint = model.ctrlens_checkpoint
    return view
