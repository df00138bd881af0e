"""Integrated Gradients per field (captum ``IntegratedGradients``), memory-bounded."""

from __future__ import annotations

from typing import Any, ClassVar, Iterable

from captum.attr import IntegratedGradients as _CaptumIG
from torch import Tensor

from ctrlens.saliency.base import FieldAttribution, _Substitute


class IntegratedGradients(FieldAttribution):
    """``(x - baseline) * mean gradient along the straight path``, for every field at once.

    Completeness: the attributions of all fields of a row sum to ``f(x) - f(baseline)`` up to
    captum's convergence delta, which is returned per row (``FieldAttributions.delta``).

    Args:
        n_steps: path steps (Gauss-Legendre); 16 is usually enough on the logit.
        internal_batch_size: most rows per forward/backward. captum stacks ``n_steps`` copies of
            the batch, the classic out-of-memory trap (captum #245, #538); the default -- the
            batch's own size -- runs one step of the whole batch per pass, so memory is that of
            one gradient pass whatever ``n_steps`` is.
    """

    name: ClassVar[str] = "integrated_gradients"
    uses_baseline: ClassVar[bool] = True

    def __init__(
        self,
        model: Any,
        *,
        fields: Iterable[str] | None = None,
        target: str = "logit",
        n_steps: int = 16,
        internal_batch_size: int | None = None,
    ):
        super().__init__(model, fields=fields, target=target)
        if n_steps < 1:
            from ctrlens.errors import InputError

            raise InputError(f"n_steps must be >= 1, got {n_steps}")
        self.n_steps = int(n_steps)
        self.internal_batch_size = internal_batch_size

    def _attribute(
        self, forward: _Substitute, inputs: tuple[Tensor, ...], baselines: tuple[Tensor, ...]
    ) -> tuple[tuple[Tensor, ...], Tensor | None, Tensor]:
        rows = int(inputs[0].shape[0])
        ibs = max(rows, self.internal_batch_size or rows)
        attrs, delta = _CaptumIG(forward).attribute(
            tuple(x.detach().requires_grad_() for x in inputs),
            baselines=baselines,
            n_steps=self.n_steps,
            method="gausslegendre",
            internal_batch_size=ibs,
            return_convergence_delta=True,
        )
        assert forward.last is not None
        return tuple(attrs), delta, forward.last

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "n_steps": self.n_steps, "internal_batch_size": self.internal_batch_size}
