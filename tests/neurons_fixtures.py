"""Small models and batches for the neuron-statistics tests (no reference models needed)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ctrlens.data.batch import Batch
from ctrlens.models.interface import HeadSpec, LayerSpec, ModelView, Tap

V_ITEM, V_USER, L, D = 50, 30, 6, 4


class TinyCTR(nn.Module):
    """user/item embeddings, a masked history "attention" layer [B, L, 5] and an MLP.

    Layers: ``att.0`` (ReLU over history positions, masked), ``mlp.0`` (ReLU), ``mlp.1`` (tanh),
    ``gate`` (sigmoid), ``logit.ctr``.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.user = nn.Embedding(V_USER, D, padding_idx=0)
        self.item = nn.Embedding(V_ITEM, D, padding_idx=0)
        self.att_lin = nn.Linear(2 * D, 5)
        self.att_act = nn.ReLU()
        self.l0 = nn.Linear(3 * D, 16)
        self.a0 = nn.ReLU()
        self.l1 = nn.Linear(16, 8)
        self.a1 = nn.Tanh()
        self.lg = nn.Linear(8, 3)
        self.ag = nn.Sigmoid()
        self.out = nn.Linear(3, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            self.user.weight[0].zero_()
            self.item.weight[0].zero_()

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        u = self.user(batch.features["user_id"])
        it = self.item(batch.features["item_id"])
        hist_ids = batch.features["hist_item_id"]
        m = batch.masks["hist_item_id"].unsqueeze(-1).float()
        h = self.item(hist_ids)  # second call of the shared table
        q = it.unsqueeze(1).expand_as(h)
        a = self.att_act(self.att_lin(torch.cat([q, h], -1)))  # [B, L, 5]
        pooled = (h * a.mean(-1, keepdim=True) * m).sum(1)
        x = self.a0(self.l0(torch.cat([u, it, pooled], -1)))
        x = self.a1(self.l1(x))
        x = self.ag(self.lg(x))
        logit = self.out(x).squeeze(-1)
        return {"ctr": torch.sigmoid(logit), "ctr_logit": logit}

    def lens(self) -> ModelView:
        layers = {
            "att.0": LayerSpec("att.0", Tap(self.att_act, None, "hist_item_id"), "attention", "relu"),
            "mlp.0": LayerSpec("mlp.0", Tap(self.a0), "hidden", "relu"),
            "mlp.1": LayerSpec("mlp.1", Tap(self.a1), "hidden", "tanh"),
            "gate": LayerSpec("gate", Tap(self.ag), "hidden", "sigmoid"),
            "logit.ctr": LayerSpec("logit.ctr", Tap(self.out), "logit", "identity"),
        }
        return ModelView(
            self,
            lambda m, b: m(b),
            {},
            layers,
            {"ctr": HeadSpec("ctr", "ctr", "click", "all", "ctr_logit")},
            "tiny",
            {"user": self.user, "item": self.item},
        )


def make_batches(n_rows: int = 600, batch_size: int = 128, seed: int = 0, labels: bool = True) -> list[Batch]:
    """Random batches for :class:`TinyCTR` with right-padded histories and global row numbers."""
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(1, V_USER, (n_rows,), generator=g)
    item = torch.randint(1, V_ITEM, (n_rows,), generator=g)
    lens = torch.randint(0, L + 1, (n_rows,), generator=g)
    mask = torch.arange(L).unsqueeze(0) < lens.unsqueeze(1)
    hist = torch.randint(1, V_ITEM, (n_rows, L), generator=g) * mask
    click = (torch.rand(n_rows, generator=g) < 0.3).float()
    whole = Batch(
        features={"user_id": user, "item_id": item, "hist_item_id": hist},
        masks={"hist_item_id": mask},
        labels={"click": click} if labels else {},
        row=torch.arange(n_rows),
    )
    return list(whole.split(batch_size))


def capture(view: ModelView, batches: list[Batch]) -> dict[str, list[np.ndarray]]:
    """Brute force: raw outputs of every layer (masked positions dropped), with labels, in float64."""
    raw: dict[str, list] = {k: [] for k in view.layers}
    labels: dict[str, list] = {k: [] for k in view.layers}
    for b in batches:
        outs: dict[str, torch.Tensor] = {}
        calls: dict[int, int] = {}
        handles = []
        for name, spec in view.layers.items():
            def hook(mod, args, out, name=name, spec=spec):
                i = calls.get(id(mod), 0)
                want = spec.tap.call or 0
                if i == want:
                    outs[name] = out.detach().clone()
            handles.append(spec.tap.module.register_forward_hook(hook))
            # count calls once per module
        counter = {}

        def count(mod, args, out):
            calls[id(mod)] = calls.get(id(mod), 0) + 1

        for spec in view.layers.values():
            if id(spec.tap.module) not in counter:
                counter[id(spec.tap.module)] = spec.tap.module.register_forward_hook(count)
        with torch.no_grad():
            view(b)
        for h in handles + list(counter.values()):
            h.remove()
        click = b.labels["click"].numpy() if "click" in b.labels else np.full(len(b), np.nan)
        for name, spec in view.layers.items():
            o = outs[name].double().numpy()
            if o.ndim == 1:
                o = o[:, None]
            if o.ndim == 3:
                lab = np.repeat(click, o.shape[1])
                o2 = o.reshape(-1, o.shape[-1])
                if spec.tap.mask:
                    keep = b.masks[spec.tap.mask].numpy().reshape(-1)
                    o2, lab = o2[keep], lab[keep]
                raw[name].append(o2)
                labels[name].append(lab)
            else:
                raw[name].append(o)
                labels[name].append(click)
    return {k: (np.concatenate(raw[k]), np.concatenate(labels[k])) for k in raw}  # type: ignore[misc]


class UserCTR(nn.Module):
    """A model ctrlens did not write: a ModuleDict of embeddings, an EmbeddingBag over the history
    (flat ids + offsets) and an nn.Sequential MLP that reuses one ReLU object (as in docs/own-model.md)."""

    def __init__(self, n_users: int = V_USER, n_items: int = V_ITEM, dim: int = D):
        super().__init__()
        self.emb = nn.ModuleDict({"user_id": nn.Embedding(n_users, dim), "item_id": nn.Embedding(n_items, dim)})
        self.hist = nn.EmbeddingBag(n_items, dim, mode="mean")
        self.relu = nn.ReLU()
        self.mlp = nn.Sequential(nn.Linear(3 * dim, 12), self.relu, nn.Linear(12, 6), self.relu, nn.Linear(6, 1))

    def forward(self, user, item, hist_ids, offsets):
        x = torch.cat([self.emb["user_id"](user), self.emb["item_id"](item), self.hist(hist_ids, offsets)], dim=-1)
        return self.mlp(x).squeeze(-1)


def user_forward(m: UserCTR, b: Batch) -> dict[str, torch.Tensor]:
    """Batch -> the user's call convention: flat history ids with offsets."""
    mask = b.masks["hist_item_id"]
    flat = b.features["hist_item_id"][mask]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), mask.sum(1).cumsum(0)[:-1]])
    logit = m(b.features["user_id"], b.features["item_id"], flat, offsets)
    return {"ctr": torch.sigmoid(logit), "ctr_logit": logit}
