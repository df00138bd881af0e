"""The fully connected stack every reference model ends with."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from ctrlens.models.blocks.activations import make_activation
from ctrlens.models.interface import LayerKind, LayerSpec, Tap


class MLP(nn.Module):
    """``Linear -> [BatchNorm] -> activation -> [Dropout]`` per hidden layer.

    Each hidden layer's activation is its own module, called once per forward, so it is the tap
    for that layer's post-activation output (see :meth:`layer_specs`).

    Args:
        in_dim: input width.
        hidden: hidden widths, e.g. ``(256, 128, 64, 32)``; empty means the identity.
        activation: ``relu``, ``prelu``, ``dice``, ``sigmoid``, ``tanh`` or ``identity``.
        batch_norm: batch normalisation before each activation (``[B, N]`` inputs only).
        dropout: dropout probability after each activation (0 = none).

    Shape: ``[..., in_dim] -> [..., hidden[-1]]``; ``mask`` (``[B, L]`` for ``[B, L, N]`` inputs)
    reaches Dice so its batch statistics skip padding.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        activation: str = "relu",
        batch_norm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.activation = activation
        dims = [in_dim, *hidden]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(b) if batch_norm else nn.Identity() for b in hidden)
        self.acts = nn.ModuleList(make_activation(activation, b) for b in hidden)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_dim = dims[-1]

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for lin, norm, act in zip(self.linears, self.norms, self.acts):
            x = self.dropout(act(norm(lin(x)), mask))
        return x

    def forward_after_first(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        """:meth:`forward` given the first ``Linear``'s output ``h`` (computed another way by the
        caller); every activation module still runs, so taps see the same layers."""
        for i, (norm, act) in enumerate(zip(self.norms, self.acts)):
            h = self.dropout(act(norm(h if i == 0 else self.linears[i](h)), mask))
        return h

    def layer_specs(self, prefix: str, kind: LayerKind = "hidden", mask: str | None = None) -> list[LayerSpec]:
        """``<prefix>.<i>`` -> the ``i``-th post-activation output ``[B, N_i]`` (``[B, L, N_i]`` with ``mask``)."""
        return [
            LayerSpec(f"{prefix}.{i}", Tap(act, None, mask), kind, self.activation)  # type: ignore[arg-type]
            for i, act in enumerate(self.acts)
        ]
