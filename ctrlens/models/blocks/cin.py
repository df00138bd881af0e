"""xDeepFM's Compressed Interaction Network (Lian et al. 2018, Eqs. 6-7)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ctrlens.errors import InputError
from ctrlens.models.blocks.activations import make_activation
from ctrlens.models.interface import LayerSpec, Tap


class CIN(nn.Module):
    """Vector-wise explicit interactions of field embeddings.

    Layer ``k`` (Eq. 6): ``X^k_h = sum_{i, j} W^{k,h}_{ij} (X^{k-1}_i * X^0_j)`` (Hadamard product
    over the embedding axis), i.e. the outer product ``Z [B, H_{k-1} * m, D]`` filtered by a 1x1
    convolution into ``H_k`` feature maps; then an element-wise activation. Each layer's maps are
    sum-pooled over ``D`` (Eq. 7) into ``p^k`` and the ``p^k`` are concatenated into ``p+``.

    Defaults follow the paper: identity activation, no bias, every map both feeds the next layer and
    is pooled to the output. ``split_half=True`` is the official code's variant (and DeepCTR-Torch's
    default): in every layer but the last, half of the maps feed the next layer and the other half
    go to the output; combine it with ``activation="relu"`` for that variant.

    Args:
        num_fields: ``m``, the number of field embeddings.
        layer_sizes: ``(H_1, ..., H_T)``.
        activation: element-wise: ``identity``, ``relu``, ``sigmoid`` or ``tanh``.
        split_half: see above (every ``H_k`` but the last must be even).

    Shape: ``x0 [B, m, D]`` -> ``p+ [B, out_dim]``. ``forward`` also returns the maps ``X^k``
    ``[B, H_k, D]``. Tap ``taps[k]`` sees the pooled ``p^k`` ``[B, H_k]`` (``H_k / 2`` when split):
    exactly the part of layer ``k`` that reaches the output.
    """

    def __init__(
        self, num_fields: int, layer_sizes: Sequence[int] = (100, 100, 100), activation: str = "identity", split_half: bool = False
    ):
        super().__init__()
        if activation not in ("identity", "relu", "sigmoid", "tanh"):
            raise InputError(f"CIN activation must be element-wise (identity, relu, sigmoid, tanh), got {activation!r}")
        self.num_fields = num_fields
        self.layer_sizes = tuple(layer_sizes)
        self.split_half = split_half
        self.activation = activation
        self.convs = nn.ModuleList()
        self.acts = nn.ModuleList()
        self.taps = nn.ModuleList()
        prev, out_dim = num_fields, 0
        for k, h in enumerate(self.layer_sizes):
            last = k == len(self.layer_sizes) - 1
            if split_half and not last and h % 2:
                raise InputError(f"CIN split_half needs even layer sizes (except the last), got {self.layer_sizes}")
            self.convs.append(nn.Conv1d(prev * num_fields, h, kernel_size=1, bias=False))
            self.acts.append(make_activation(activation, h))
            self.taps.append(nn.Identity())
            nxt = h // 2 if split_half and not last else h
            out_dim += h - nxt if split_half and not last else h
            prev = nxt
        self.out_dim = out_dim

    def forward(self, x0: Tensor) -> tuple[Tensor, list[Tensor]]:
        b, m, d = x0.shape
        x, pooled, maps = x0, [], []
        for k, (conv, act, tap) in enumerate(zip(self.convs, self.acts, self.taps)):
            z = torch.einsum("bhd,bmd->bhmd", x, x0).reshape(b, -1, d)  # [B, H_{k-1} * m, D]
            xk = act(conv(z))  # [B, H_k, D]
            maps.append(xk)
            if self.split_half and k < len(self.convs) - 1:
                x, direct = torch.split(xk, [xk.shape[1] // 2, xk.shape[1] - xk.shape[1] // 2], dim=1)
            else:
                x, direct = xk, xk
            pooled.append(tap(direct.sum(-1)))
        return torch.cat(pooled, dim=-1), maps

    def layer_specs(self, prefix: str = "cin") -> list[LayerSpec]:
        """``<prefix>.<k>`` -> pooled ``p^k`` ``[B, H_k]`` of layer ``k`` (0-based)."""
        return [
            LayerSpec(f"{prefix}.{k}", Tap(t), "interaction", self.activation)  # type: ignore[arg-type]
            for k, t in enumerate(self.taps)
        ]
