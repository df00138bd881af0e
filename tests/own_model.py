"""A plain PyTorch CTR model that ctrlens did not write, its own training loop and its loaders.

Nothing here imports ``reference_models``: this is what a user's code looks like. The model has

* an ``nn.Embedding`` per id field, with **one item table shared** by the candidate ``item`` field
  and the history (a sequence or a bag borrowing the item table): two calls per forward;
* ``nn.EmbeddingBag`` groups (flat ids + offsets, optional per-id weights) for multi-valued fields;
* a ``Linear`` over the dense features;
* an MLP that reuses **one** ``nn.ReLU`` object after both hidden layers;
* one head predicting whatever label the config names (``click``, ``purchase``...).

Its checkpoint is a plain ``torch.save({"config": ..., "state_dict": ...})`` file; :func:`load` is
its ctrlens loader (``--loader tests/own_model.py:load``). The other ``load_*`` functions are broken
loaders, for the error tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

import ctrlens
from ctrlens.models.interface import HeadSpec


def model_config(schema: Any, *, user: str, item: str, history: str, groups: Iterable[str], dense: Iterable[str],
                 label: str, head: str = "ctr", dim: int = 8, hidden: tuple[int, int] = (16, 8)) -> dict[str, Any]:  # fmt: skip
    """The model's config (stored in its checkpoint): which schema fields feed which part, table sizes."""
    groups = list(groups)
    return {
        "user": user, "item": item, "history": history, "groups": groups, "dense": list(dense), "label": label,
        "head": head, "dim": dim, "hidden": list(hidden),
        "rows": {"user": schema.table_of(user).num_embeddings, "item": schema.table_of(item).num_embeddings,
                 **{g: schema.table_of(g).num_embeddings for g in groups}},
    }  # fmt: skip


class OwnCTR(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        d, (h1, h2) = cfg["dim"], cfg["hidden"]
        rows = cfg["rows"]
        self.user = nn.Embedding(rows["user"], d)
        self.item = nn.Embedding(rows["item"], d)  # the candidate item and the history: one table
        self.groups = nn.ModuleDict({g: nn.EmbeddingBag(rows[g], d, mode="sum") for g in cfg["groups"]})
        self.dense = nn.Linear(len(cfg["dense"]), d)
        self.act = nn.ReLU()  # one object, used after both hidden layers
        n_in = d * (3 + len(cfg["groups"]) + 1)
        self.fc1, self.fc2, self.out = nn.Linear(n_in, h1), nn.Linear(h1, h2), nn.Linear(h2, 1)

    def forward(self, user: torch.Tensor, item: torch.Tensor, hist: torch.Tensor, hist_mask: torch.Tensor,
                groups: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]], dense: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """``user``/``item`` ``[B]``, ``hist``/``hist_mask`` ``[B, L]``, groups: flat ids, offsets ``[B]``,
        weights; ``dense`` ``[B, n_dense]``. Returns the logit ``[B]``."""
        u, i = self.user(user), self.item(item)  # the item table's first call: the candidate [B, D]
        h = self.item(hist) * hist_mask[..., None]  # its second call: the history [B, L, D]
        h = h.sum(1) / hist_mask.sum(1, keepdim=True).clamp_min(1)
        parts = [u, i, h]
        parts += [self.groups[g](ids, off, per_sample_weights=w) for g, (ids, off, w) in groups.items()]
        parts.append(self.dense(dense))
        z = self.act(self.fc1(torch.cat(parts, -1)))
        z = self.act(self.fc2(z))
        return self.out(z).squeeze(-1)


def _flat(batch: Any, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A ``[B, L]`` padded field as EmbeddingBag input: flat ids, offsets ``[B]``, flat weights or None."""
    mask = batch.masks[name]
    ids = batch.features[name][mask]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long, device=mask.device), mask.sum(1).cumsum(0)[:-1]])
    w = batch.weights.get(name) if hasattr(batch, "weights") else None
    return ids, offsets, (w[mask] if w is not None else None)


def outputs(model: OwnCTR, batch: Any) -> dict[str, torch.Tensor]:
    """``forward(model, batch)`` for ctrlens: ``{head: probability [B], head_logit: logit [B]}``."""
    cfg = model.cfg
    h = cfg["history"]
    dense = torch.stack([batch.features[n].float() for n in cfg["dense"]], -1)
    logit = model(batch.features[cfg["user"]], batch.features[cfg["item"]], batch.features[h], batch.masks[h],
                  {g: _flat(batch, g) for g in cfg["groups"]}, dense)  # fmt: skip
    return {cfg["head"]: torch.sigmoid(logit), f"{cfg['head']}_logit": logit}


def build(cfg: dict[str, Any], seed: int = 0) -> OwnCTR:
    torch.manual_seed(seed)
    m = OwnCTR(cfg)
    m.cfg = cfg
    return m


def view_of(model: OwnCTR, name: str = "own-ctr") -> Any:
    """The model described for ctrlens (layer kinds inferred from the names: ``logit.*`` is a logit)."""
    cfg = model.cfg
    head = cfg["head"]
    fields: dict[str, Any] = {cfg["user"]: model.user, cfg["item"]: (model.item, 0),
                              cfg["history"]: (model.item, 1, cfg["history"])}  # fmt: skip
    fields.update({g: model.groups[g] for g in cfg["groups"]})
    if len(cfg["dense"]) == 1:
        fields[cfg["dense"][0]] = model.dense
    return ctrlens.attach(
        model,
        forward=outputs,
        fields=fields,
        layers={"mlp.0": (model.act, 0), "mlp.1": (model.act, 1), f"logit.{head}": model.out},
        heads={head: HeadSpec(head, head, cfg["label"], logit=f"{head}_logit")},
        tables={"user": model.user, "item": model.item, **{g: model.groups[g] for g in cfg["groups"]}},
        name=name,
    )


# -- its own training loop and checkpoint files ------------------------------------------------------


def train_day(model: OwnCTR, batches: Iterable[Any], *, lr: float = 0.01, epochs: int = 1) -> float:
    """Plain Adam on BCE over ``batches``; returns the last loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    loss = torch.zeros(())
    batches = list(batches)
    for _ in range(epochs):
        for b in batches:
            out = outputs(model, b)
            loss = F.binary_cross_entropy_with_logits(out[f"{model.cfg['head']}_logit"], b.labels[model.cfg["label"]])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return float(loss.detach())


def save(model: OwnCTR, path: str | Path) -> Path:
    """The user's checkpoint format: a plain dict, no ctrlens header."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.cfg, "state_dict": model.state_dict()}, p)
    return p


# -- loaders ---------------------------------------------------------------------------------------


def _read(checkpoint: Path) -> OwnCTR:
    ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    m = build(ck["config"])
    m.load_state_dict(ck["state_dict"])
    return m.eval()


def load(checkpoint: Path, schema: Any) -> Any:
    """The ctrlens loader of this model: ``(checkpoint path, schema) -> ModelView``."""
    return view_of(_read(checkpoint))


def load_raises(checkpoint: Path, schema: Any) -> Any:
    raise RuntimeError(f"cannot open {checkpoint.name}: unexpected key 'emb.weight'")


def load_module(checkpoint: Path, schema: Any) -> Any:
    return _read(checkpoint)  # the bare module, not a view


def load_wrong_field(checkpoint: Path, schema: Any) -> Any:
    m = _read(checkpoint)
    v = view_of(m)
    v.fields["user_idd"] = v.fields.pop(m.cfg["user"])  # a typo in a field name
    return v


def load_wrong_label(checkpoint: Path, schema: Any) -> Any:
    m = _read(checkpoint)
    m.cfg = {**m.cfg, "label": "purchase"}
    return view_of(m)
