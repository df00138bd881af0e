"""Target attention over a behaviour sequence: DIN's local activation unit and DICM's poolings.

Every unit scores each behaviour ``k_j`` against a query ``q`` (the candidate ad) with a small
MLP, then sums the behaviours weighted by the scores. Padding never changes the output: padded
positions get weight exactly 0 (and are excluded from Dice's batch statistics).

Normalisation: by default the weights are **not** softmax-normalised, as in the DIN paper (the
sum keeps the intensity of the user's interest); ``softmax=True`` gives the official code's
normalised weights (without its ``1/sqrt(H)`` scaling).
"""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import torch
from torch import Tensor, nn

from ctrlens.errors import InputError
from ctrlens.models.blocks.mlp import MLP
from ctrlens.models.interface import LayerSpec
from ctrlens.models.taps import accepts_packed

_NEG = -1e9  # finite, so a row with no real behaviour gives zeros, not NaN gradients


class AttentionPooling(nn.Module):
    """Weights ``keys`` by ``score(MLP(interaction(q, k_j)))`` and sums them.

    Args:
        query_dim: width ``Dq`` of the query.
        key_dim: width ``Dk`` of each behaviour.
        hidden: widths of the attention MLP's hidden layers.
        activation: their activation (``prelu``, ``dice``, ``sigmoid``, ...).
        interaction: ``"din"`` -- MLP input ``[q, k, q - k, q * k]`` (needs ``Dq == Dk``);
            ``"concat"`` -- ``[q, k]`` (DICM's AttentivePooling).
        softmax: normalise the weights over real positions.

    Shapes: ``query [B, Dq]``, ``keys [B, L, Dk]``, ``mask`` bool ``[B, L]`` ->
    ``(pooled [B, Dk], weights [B, L])``; the hidden layers are ``[B, L, H_i]``.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        hidden: Sequence[int] = (80, 40),
        activation: str = "prelu",
        interaction: Literal["din", "concat"] = "din",
        softmax: bool = False,
    ):
        super().__init__()
        if interaction == "din" and query_dim != key_dim:
            raise InputError(f"DIN attention needs query and key of the same width, got {query_dim} and {key_dim}")
        if interaction not in ("din", "concat"):
            raise InputError(f"attention interaction must be 'din' or 'concat', got {interaction!r}")
        self.interaction = interaction
        self.softmax = softmax
        in_dim = 4 * key_dim if interaction == "din" else query_dim + key_dim
        self.mlp = MLP(in_dim, hidden, activation)
        self.score = nn.Linear(self.mlp.out_dim, 1)

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self._factored():
            if self._packable(mask):
                s = self._packed_scores(query, keys, mask)
            else:
                s = self.score(self.mlp.forward_after_first(self._din_first_layer(query, keys), mask)).squeeze(-1)
        else:
            q = query.unsqueeze(1).expand(-1, keys.shape[1], -1)
            if self.interaction == "din":
                x = torch.cat([q, keys, q - keys, q * keys], dim=-1)
            else:
                x = torch.cat([q, keys], dim=-1)
            s = self.score(self.mlp(x, mask)).squeeze(-1)  # [B, L]
        if self.softmax:
            w = torch.softmax(s.masked_fill(~mask, _NEG), dim=1)
        else:
            w = s
        w = w * mask.to(w.dtype)
        pooled = (w.unsqueeze(-1) * keys).sum(1)
        return pooled, w

    def _factored(self) -> bool:
        """Inference (eval, no gradients) of the ``din`` interaction, with nothing watching the first
        ``Linear`` itself: its input need not be built (see :meth:`_din_first_layer`)."""
        if self.interaction != "din" or self.training or torch.is_grad_enabled() or not len(self.mlp.linears):
            return False
        lin = self.mlp.linears[0]
        return not (lin._forward_hooks or lin._forward_pre_hooks)

    def _packable(self, mask: Tensor) -> bool:
        """Whether the scores may be computed on the real positions only (:meth:`_packed_scores`):
        whatever watches the unit's inner layers accepts their real positions ``[n, H]`` instead of
        ``[B, L, H]`` (:func:`~ctrlens.models.taps.accepts_packed`; neuron statistics do), no
        normalisation between them, and enough padding to be worth the gather."""
        mods = [*self.mlp.modules(), *self.score.modules()]
        if not all(accepts_packed(m) for m in mods):
            return False
        if not all(isinstance(n, nn.Identity) for n in self.mlp.norms):
            return False
        return mask.numel() > 0 and float(mask.sum()) < 0.85 * mask.numel()

    def _packed_scores(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """Scores ``[B, L]`` of the real positions (``mask``), 0 at padding, computed on the real
        positions alone: the attention MLP's rows are independent, and padding's scores are zeroed
        anyway. Behaviour logs are mostly padding (DIN's synthetic world: ~55%), so inference runs
        the unit on about half the rows; the same values as the padded computation."""
        b, l_, d = keys.shape
        idx = mask.reshape(-1).nonzero().squeeze(1)  # real positions of the flattened [B * L]
        row = idx // l_
        k = keys.reshape(-1, d).index_select(0, idx)  # [N, D]
        lin = self.mlp.linears[0]
        w = lin.weight
        wq, wk, wd, wp = w[:, :d], w[:, d:2 * d], w[:, 2 * d:3 * d], w[:, 3 * d:]
        per_row = nn.functional.linear(query, wq + wd, lin.bias)  # [B, H]
        h = nn.functional.linear(torch.cat([k, query.index_select(0, row) * k], dim=-1), torch.cat([wk - wd, wp], dim=1))
        h = h + per_row.index_select(0, row)
        s = self.score(self.mlp.forward_after_first(h)).squeeze(-1)  # [N]
        return torch.zeros(b * l_, dtype=s.dtype, device=s.device).index_copy_(0, idx, s).view(b, l_)

    def _din_first_layer(self, query: Tensor, keys: Tensor) -> Tensor:
        """The first ``Linear`` of ``[q, k, q - k, q * k]`` without building that ``[B, L, 4D]`` input:
        ``W [q, k, q-k, q*k] = (W_q + W_d) q + [W_k - W_d, W_p] [k, q*k]``, the query's part once per
        row instead of once per behaviour. Equal up to float rounding; ~1.4x faster DIN inference."""
        lin = self.mlp.linears[0]
        d = keys.shape[-1]
        w = lin.weight
        wq, wk, wd, wp = w[:, :d], w[:, d:2 * d], w[:, 2 * d:3 * d], w[:, 3 * d:]
        per_row = nn.functional.linear(query, wq + wd, lin.bias)  # [B, H]
        per_key = nn.functional.linear(torch.cat([keys, query.unsqueeze(1) * keys], dim=-1), torch.cat([wk - wd, wp], dim=1))
        return per_key + per_row.unsqueeze(1)  # [B, L, H]

    def layer_specs(self, prefix: str, mask: str) -> list[LayerSpec]:
        """``<prefix>.<i>``: the attention MLP's ``i``-th hidden layer ``[B, L, H_i]``, masked by ``mask``."""
        return self.mlp.layer_specs(prefix, "attention", mask)


class LocalActivationUnit(AttentionPooling):
    """DIN's local activation unit: MLP over ``[q, k, q - k, q * k]``; see :class:`AttentionPooling`.

    The default hidden sizes ``(80, 40)`` are the official code's; the paper's figure shows one
    hidden layer of 36 (``DINConfig.paper()``).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (80, 40), activation: str = "prelu", softmax: bool = False):
        super().__init__(dim, dim, hidden, activation, "din", softmax)


class AttentivePooling(AttentionPooling):
    """DICM's AttentivePooling (Fig. 3c): MLP over ``[q, k]``, hidden ``(64, 16)`` as in the figure."""

    def __init__(
        self, query_dim: int, key_dim: int, hidden: Sequence[int] = (64, 16), activation: str = "prelu", softmax: bool = False
    ):
        super().__init__(query_dim, key_dim, hidden, activation, "concat", softmax)


class MultiQueryAttentivePooling(nn.Module):
    """DICM's MultiQueryAttentivePooling (Fig. 3d): one :class:`AttentivePooling` channel per query.

    Unlike multi-head attention each channel has a *different* query -- in DICM one is the ad's
    image embedding, the other the ad's id embeddings -- and the pooled outputs are concatenated.

    Args:
        key_dim: width ``Dk`` of each behaviour (image) embedding.
        query_dims: channel name -> query width, in output order (e.g. ``{"image": 12, "id": 16}``).

    Shapes: ``queries`` channel -> ``[B, Dq_c]``, ``keys [B, L, Dk]``, ``mask [B, L]`` ->
    ``(pooled [B, C * Dk], weights: channel -> [B, L])``.
    """

    def __init__(
        self,
        key_dim: int,
        query_dims: Mapping[str, int],
        hidden: Sequence[int] = (64, 16),
        activation: str = "prelu",
        softmax: bool = False,
    ):
        super().__init__()
        if not query_dims:
            raise InputError("MultiQueryAttentivePooling needs at least one query channel")
        self.channels = nn.ModuleDict(
            {c: AttentivePooling(d, key_dim, hidden, activation, softmax) for c, d in query_dims.items()}
        )
        self.out_dim = key_dim * len(query_dims)

    def forward(self, queries: Mapping[str, Tensor], keys: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        pooled, weights = [], {}
        for c, unit in self.channels.items():
            p, w = unit(queries[c], keys, mask)
            pooled.append(p)
            weights[c] = w
        return torch.cat(pooled, dim=-1), weights

    def layer_specs(self, prefix: str, mask: str) -> list[LayerSpec]:
        """``<prefix>.<channel>.<i>`` for each channel's hidden layers, in channel order."""
        out: list[LayerSpec] = []
        for c, unit in self.channels.items():
            out += unit.layer_specs(f"{prefix}.{c}", mask)
        return out
