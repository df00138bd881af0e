"""The six reference CTR models, built from ``ctrlens.models.blocks`` (see ``docs/models.md``).

Example::

    import reference_models
    model = reference_models.build("din", schema, mlp=(64, 32))
    outputs = model(batch)                 # {"ctr": [B], "ctr_logit": [B], "attention.hist_item_id": [B, L]}
    loss = model.loss(outputs, batch)
    view = model.lens()                    # fields, layers, heads for ctrlens' analyses

Names: ``base``, ``din``, ``dicm``, ``esmm``, ``pal``, ``xdeepfm``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ctrlens.data.schema import Schema
from ctrlens.errors import InputError
from ctrlens.models.base import CTRModel, ModelConfig

from reference_models.base import BaseConfig, BaseModel
from reference_models.dicm import DICMConfig, DICMModel
from reference_models.din import DINConfig, DINModel
from reference_models.esmm import ESMMConfig, ESMMModel
from reference_models.pal import PALConfig, PALModel
from reference_models.xdeepfm import XDeepFMConfig, XDeepFMModel

MODELS: dict[str, type[CTRModel]] = {
    "base": BaseModel,
    "din": DINModel,
    "dicm": DICMModel,
    "esmm": ESMMModel,
    "pal": PALModel,
    "xdeepfm": XDeepFMModel,
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
PRESETS = ("default", "paper")


def _model_class(name: str) -> type[CTRModel]:
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; reference models are {list(MODEL_NAMES)}")
    return MODELS[name]


def config_class(name: str) -> type[ModelConfig]:
    """The frozen config dataclass of model ``name`` (``.paper()`` gives the paper's sizes)."""
    return _model_class(name).config_class


def make_config(name: str, preset: str = "default", **overrides: Any) -> ModelConfig:
    """Model ``name``'s config: the ``default`` or ``paper`` preset with ``overrides`` applied.

    Lists are turned into tuples (configs read back from JSON), and unknown keys are refused with
    the list of valid ones.
    """
    cls = config_class(name)
    if preset not in PRESETS:
        raise InputError(f"unknown config preset {preset!r} for model {name!r}; presets are {list(PRESETS)}")
    base = cls.paper() if preset == "paper" else cls()
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise InputError(f"model {name!r} has no config option(s) {unknown}; options are {valid}")
    return dataclasses.replace(base, **{k: _tuples(v) for k, v in overrides.items()})


def build(name: str, schema: Schema, *, preset: str = "default", **overrides: Any) -> CTRModel:
    """Build reference model ``name`` for ``schema``.

    Args:
        name: one of :data:`MODEL_NAMES`.
        schema: the dataset schema.
        preset: ``"default"`` (small sizes for our data; CPU friendly) or ``"paper"``.
        **overrides: config fields to change, e.g. ``mlp=(64, 32)``, ``embedding_dim=8``.
    """
    cls = _model_class(name)
    return cls(schema, make_config(name, preset, **overrides))


def _tuples(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    return v


__all__ = [
    "MODELS",
    "MODEL_NAMES",
    "PRESETS",
    "BaseConfig",
    "BaseModel",
    "DICMConfig",
    "DICMModel",
    "DINConfig",
    "DINModel",
    "ESMMConfig",
    "ESMMModel",
    "PALConfig",
    "PALModel",
    "XDeepFMConfig",
    "XDeepFMModel",
    "build",
    "config_class",
    "make_config",
]
