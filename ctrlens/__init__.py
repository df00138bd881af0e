"""ctrlens: make the inside of deep CTR models visible and watched, per model x checkpoint x day.

Data flows one way: data -> model -> hooks -> results -> store -> monitor -> dashboard.

Top-level names are imported lazily, so ``import ctrlens`` (and the CLI's ``--help``, the store
and the dashboard) do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from ctrlens.errors import CtrlensError, InputError  # noqa: E402  (light)

_LAZY = {
    "FieldSpec": "ctrlens.models.interface",
    "HeadSpec": "ctrlens.models.interface",
    "InterfaceError": "ctrlens.models.interface",
    "LayerSpec": "ctrlens.models.interface",
    "ModelView": "ctrlens.models.interface",
    "Tap": "ctrlens.models.interface",
    "as_view": "ctrlens.models.interface",
    "attach": "ctrlens.models.interface",
}

__all__ = ["__version__", "CtrlensError", "InputError", *_LAZY]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'ctrlens' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value
