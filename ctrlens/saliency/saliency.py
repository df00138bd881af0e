"""Gradient magnitude: ``|d target / d embedding|`` per field (captum ``Saliency``)."""

from __future__ import annotations

from typing import ClassVar

from captum.attr import Saliency as _CaptumSaliency
from torch import Tensor

from ctrlens.saliency.base import FieldAttribution, _Substitute


class Saliency(FieldAttribution):
    """Absolute gradient of the head's target w.r.t. every field's embedding output.

    The founding paper's "saliency scores from back-propagated gradients". One forward and one
    backward per batch for all fields. It measures *sensitivity* at the input: a field stuck at
    one value keeps its gradient, and a field the model reacts to strongly but that rarely varies
    ranks high; to rank fields by use and watch broken ones use :class:`InputXGradient` with
    ``baseline="mean"``, the default of :func:`ctrlens.saliency.report` (see docs/saliency.md).
    """

    name: ClassVar[str] = "saliency"

    def _attribute(
        self, forward: _Substitute, inputs: tuple[Tensor, ...], baselines: tuple[Tensor, ...]
    ) -> tuple[tuple[Tensor, ...], Tensor | None, Tensor]:
        attrs = _CaptumSaliency(forward.summed).attribute(tuple(x.detach().requires_grad_() for x in inputs), abs=True)
        assert forward.last is not None
        return tuple(attrs), None, forward.last
