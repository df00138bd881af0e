"""A tiny model and an in-memory daily dataset for the training tests (picklable, for DDP spawns).

``TinyModel`` follows the reference-model interface (``name``, ``config``, ``schema``, ``forward``
-> dict of heads and logits, ``lens()``, ``loss(outputs, batch)``) without batch statistics, so a
2-process DDP run can be compared exactly with one process. ``FakeDays`` implements the loader's
``iter_batches`` contract: with ``rank``/``world_size``, rank ``r``'s ``i``-th batch is the ``r``-th
slice of the ``i``-th global batch -- what a one-process run with the global batch sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ctrlens.data.batch import Batch
from ctrlens.data.schema import DenseField, Schema, SparseField
from ctrlens.errors import InputError
from ctrlens.models.interface import FieldSpec, HeadSpec, LayerSpec, ModelView, Tap

N_USERS, N_ITEMS = 40, 30
SCHEMA = Schema(
    fields=(
        SparseField("user_id", N_USERS, embedding_dim=4, role="user"),
        SparseField("item_id", N_ITEMS, embedding_dim=4, role="item"),
        DenseField("price"),
    )
)
OTHER_SCHEMA = Schema(
    fields=(
        SparseField("user_id", N_USERS, embedding_dim=4, role="user"),
        SparseField("item_id", N_ITEMS + 5, embedding_dim=4, role="item"),
        DenseField("price"),
    )
)


@dataclass(frozen=True)
class TinyConfig:
    hidden: int = 8
    dropout: float = 0.0


def _call(m: nn.Module, b: Batch) -> dict:
    return m(b)


class TinyModel(nn.Module):
    """Embeddings of user and item, a dense input, one hidden ReLU layer, a logistic head."""

    name = "tiny"

    def __init__(self, schema: Schema, config: TinyConfig | None = None):
        super().__init__()
        self.schema, self.config = schema, config or TinyConfig()
        self.user = nn.Embedding(schema["user_id"].num_embeddings, 4)
        self.item = nn.Embedding(schema["item_id"].num_embeddings, 4)
        self.hidden = nn.Sequential(nn.Linear(9, self.config.hidden), nn.ReLU(), nn.Dropout(self.config.dropout))
        self.out = nn.Linear(self.config.hidden, 1)

    def forward(self, b: Batch) -> dict[str, torch.Tensor]:
        x = torch.cat([self.user(b.features["user_id"]), self.item(b.features["item_id"]), b.features["price"][:, None]], -1)
        z = self.out(self.hidden(x)).squeeze(-1)
        return {"ctr": torch.sigmoid(z), "ctr_logit": z}

    def loss(self, outputs: dict, b: Batch) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(outputs["ctr_logit"], b.labels["click"])

    def lens(self) -> ModelView:
        return ModelView(
            self, _call,
            {"user_id": FieldSpec("user_id", Tap(self.user), "sparse"), "item_id": FieldSpec("item_id", Tap(self.item), "sparse")},
            {"mlp.0": LayerSpec("mlp.0", Tap(self.hidden), "hidden", "relu")},
            {"ctr": HeadSpec("ctr", "ctr", "click", logit="ctr_logit")}, "tiny",
        )


def build_tiny(name: str, schema: Schema, **config) -> nn.Module:
    """A ``reference_models.build``-like builder knowing only ``"tiny"``."""
    if name != "tiny":
        raise InputError(f"unknown model {name!r}; valid: tiny")
    return TinyModel(schema, TinyConfig(**config))


class FakeDays:
    """Days of synthetic rows in memory. Click depends on user, item and price (learnable).

    Args:
        days: day strings; rows: rows per day (an int, or a dict day -> rows); poison: {(day, global batch index)}
            or {(day, index, rank)} whose price is NaN.
    """

    def __init__(self, days: list[str], rows: int | dict[str, int] = 512, seed: int = 0, poison: set | None = None,
                 schema: Schema = SCHEMA):
        self.schema = schema
        self._days = list(days)
        self.rows = rows
        self.seed = seed
        self.poison = set(poison or ())
        rng = np.random.default_rng(seed)
        self.u_eff = rng.normal(size=N_USERS)
        self.i_eff = rng.normal(size=N_ITEMS)

    def days(self) -> list[str]:
        return list(self._days)

    def num_rows(self, day: str) -> int:
        return self.rows[day] if isinstance(self.rows, dict) else self.rows

    def load_day(self, day: str, limit: int | None = None) -> Batch:
        if day not in self._days:
            raise InputError(f"day {day} not in dataset; available: {self._days}")
        rng = np.random.default_rng([self.seed, int(day.replace("-", ""))])
        n = self.num_rows(day) if limit is None else min(limit, self.num_rows(day))
        u = rng.integers(0, N_USERS, n)
        i = rng.integers(0, N_ITEMS, n)
        price = rng.normal(size=n).astype(np.float32)
        logit = self.u_eff[u] + self.i_eff[i] + 0.8 * price - 0.5
        click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
        return Batch(
            features={"user_id": torch.tensor(u + 2), "item_id": torch.tensor(i + 2), "price": torch.tensor(price)},
            labels={"click": torch.tensor(click)},
            user=torch.tensor(u),
            row=torch.arange(n),
        )

    def iter_batches(self, day: str, batch_size: int = 4096, *, shuffle: bool = False, seed: int = 0, rank: int = 0,
                     world_size: int = 1, limit: int | None = None, remainder: str = "drop"):
        full = self.load_day(day, limit)
        n = len(full)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
        if remainder == "exact":  # the loader's contract: a contiguous part, every row exactly once
            part = order[rank * n // world_size : (rank + 1) * n // world_size]
            for s in range(0, len(part), batch_size):
                yield full.select(part[s : s + batch_size])
            return
        g = batch_size * world_size
        for k, s in enumerate(range(0, n, g)):
            idx = order[s : s + g]
            per = len(idx) // world_size
            if per == 0:
                break
            b = full.select(idx[rank * per : (rank + 1) * per])
            if (day, k) in self.poison or (day, k, rank) in self.poison:
                b = b.with_features(price=torch.full_like(b.features["price"], float("nan")))
            yield b
