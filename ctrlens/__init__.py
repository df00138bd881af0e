"""ctrlens: make the inside of deep CTR models visible and watched, per model x checkpoint x day.

Data flows one way: data -> model -> hooks -> results -> store -> monitor -> dashboard.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ctrlens.errors import CtrlensError, InputError  # noqa: E402
from ctrlens.models.interface import (  # noqa: E402
    FieldSpec,
    HeadSpec,
    InterfaceError,
    LayerSpec,
    ModelView,
    Tap,
    as_view,
    attach,
)

__all__ = [
    "__version__",
    "CtrlensError",
    "InputError",
    "FieldSpec",
    "HeadSpec",
    "InterfaceError",
    "LayerSpec",
    "ModelView",
    "Tap",
    "as_view",
    "attach",
]
