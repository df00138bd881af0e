"""Small hand-made CTR models and labelled batches for the probe tests (no other ctrlens part needed)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ctrlens.data.batch import Batch
from ctrlens.models.interface import HeadSpec, LayerSpec, Tap, attach

N_USERS, N_ITEMS, L = 60, 40, 5


class TinyDIN(nn.Module):
    """A DIN-shaped toy: user + item embeddings, a masked attention MLP over the history (shared item
    table), a dense price, an ``embedding`` concat, a 2-layer ReLU MLP and a logit.

    ``forward(batch) -> {"ctr": [B], "ctr_logit": [B], "cvr": [B]}``.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.user = nn.Embedding(N_USERS + 2, 4)
        self.item = nn.Embedding(N_ITEMS + 2, 4)
        self.price = nn.Linear(1, 2)
        self.att_fc = nn.Linear(8, 6)
        self.att_act = nn.ReLU()
        self.att_out = nn.Linear(6, 1)
        self.concat = nn.Identity()
        self.fc0, self.act0 = nn.Linear(14, 16), nn.ReLU()
        self.fc1, self.act1 = nn.Linear(16, 8), nn.ReLU()
        self.logit = nn.Linear(8, 1)
        self.cvr_logit = nn.Linear(8, 1)

    def forward(self, b: Batch) -> dict[str, torch.Tensor]:
        f, mask = b.features, b.masks["hist"]
        u, i, h = self.user(f["user"]), self.item(f["item"]), self.item(f["hist"])  # [B,4] [B,4] [B,L,4]
        a = self.att_act(self.att_fc(torch.cat([h, i[:, None, :].expand_as(h)], -1)))  # [B, L, 6]
        w = self.att_out(a).squeeze(-1).masked_fill(~mask, 0.0) * mask  # [B, L]
        pooled = (w[..., None] * h).sum(1)  # [B, 4]
        x = self.concat(torch.cat([u, i, pooled, self.price(f["price"][:, None])], -1))  # [B, 14]
        hid = self.act1(self.fc1(self.act0(self.fc0(x))))
        z = self.logit(hid).squeeze(-1)
        return {"ctr": torch.sigmoid(z), "ctr_logit": z, "cvr": torch.sigmoid(self.cvr_logit(hid).squeeze(-1))}


def tiny_view(m: TinyDIN):
    return attach(
        m,
        forward=lambda mod, b: mod(b),
        fields={"user": m.user, "item": (m.item, 0), "hist": Tap(m.item, 1, mask="hist"), "price": m.price},
        layers={
            "embedding": LayerSpec("embedding", Tap(m.concat), "embedding"),
            "attention.hist.0": LayerSpec("attention.hist.0", Tap(m.att_act, mask="hist"), "attention", "relu"),
            "mlp.0": LayerSpec("mlp.0", Tap(m.act0), "hidden", "relu"),
            "mlp.1": LayerSpec("mlp.1", Tap(m.act1), "hidden", "relu"),
            "logit.ctr": LayerSpec("logit.ctr", Tap(m.logit), "logit"),
        },
        heads={
            "ctr": HeadSpec("ctr", "ctr", "click", logit="ctr_logit"),
            "cvr": HeadSpec("cvr", "cvr", "conversion", rows="clicked"),
        },
        name="tiny_din",
    )


def make_batch(n: int, seed: int = 0, shift: float = 0.0, world_seed: int = 123) -> Batch:
    """``n`` impressions of a toy world whose click depends on user, item, history match and price.

    ``world_seed`` fixes the world's true effects; ``seed`` the impressions; ``shift`` in ``[0, 1]``
    blends the user/item effects towards a fresh, independent set (drift: 1 = a different world).
    """
    gw = np.random.default_rng(world_seed)
    ue, ie = gw.normal(0, 1.0, N_USERS), gw.normal(0, 1.0, N_ITEMS)
    ue2, ie2 = gw.normal(0, 1.0, N_USERS), gw.normal(0, 1.0, N_ITEMS)
    group = gw.integers(0, 4, N_ITEMS)
    ue = (1 - shift) * ue + shift * ue2
    ie = (1 - shift) * ie + shift * ie2
    g = np.random.default_rng(seed)
    user = g.integers(0, N_USERS, n)
    item = g.integers(0, N_ITEMS, n)
    hist = g.integers(0, N_ITEMS, (n, L))
    lens = g.integers(0, L + 1, n)
    mask = np.arange(L)[None, :] < lens[:, None]
    match = ((group[hist] == group[item][:, None]) & mask).sum(1)
    price = g.normal(0, 1, n).astype(np.float32)
    logit = ue[user] + ie[item] + 0.8 * match * (1 - shift) - 0.7 * price - 1.0
    click = (g.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    conv = click * (g.random(n) < 1 / (1 + np.exp(-(ie[item] - 0.5)))).astype(np.float32)
    return Batch(
        features={
            "user": torch.from_numpy(user + 2),
            "item": torch.from_numpy(item + 2),
            "hist": torch.from_numpy(np.where(mask, hist + 2, 0)),
            "price": torch.from_numpy(price),
        },
        masks={"hist": torch.from_numpy(mask)},
        labels={"click": torch.from_numpy(click), "conversion": torch.from_numpy(conv)},
        user=torch.from_numpy(user),
        row=torch.arange(n),
    )


def train_tiny(m: TinyDIN, batch: Batch, steps: int = 300, lr: float = 0.03, seed: int = 0) -> TinyDIN:
    """A few hundred full-batch Adam steps on click (and conversion on clicked rows)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    y, c = batch.labels["click"], batch.labels["conversion"]
    clicked = y > 0.5
    for _ in range(steps):
        out = m(batch)
        loss = nn.functional.binary_cross_entropy_with_logits(out["ctr_logit"], y)
        loss = loss + nn.functional.binary_cross_entropy(out["cvr"][clicked].clamp(1e-6, 1 - 1e-6), c[clicked])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def brute_features(m: TinyDIN, b: Batch) -> dict[str, np.ndarray]:
    """Every probed layer's features computed by hand (no hooks), ``[n, N]`` float64."""
    with torch.no_grad():
        f, mask = b.features, b.masks["hist"]
        u, i, h = m.user(f["user"]), m.item(f["item"]), m.item(f["hist"])
        a = m.att_act(m.att_fc(torch.cat([h, i[:, None, :].expand_as(h)], -1)))
        mf = mask.float()[..., None]
        att_pooled = (a * mf).sum(1) / mf.sum(1).clamp_min(1.0)
        w = m.att_out(a).squeeze(-1).masked_fill(~mask, 0.0) * mask
        x = torch.cat([u, i, (w[..., None] * h).sum(1), m.price(f["price"][:, None])], -1)
        h0 = m.act0(m.fc0(x))
        h1 = m.act1(m.fc1(h0))
        z = m.logit(h1)
    return {
        "embedding": x.double().numpy(),
        "attention.hist.0": att_pooled.double().numpy(),
        "mlp.0": h0.double().numpy(),
        "mlp.1": h1.double().numpy(),
        "logit.ctr": z.double().numpy(),
    }


def sampled_rows(n: int, seed: int, max_rows: int, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force the suite's row sample: ``(train rows, holdout rows)`` sorted by key."""
    from ctrlens.probes.features import row_keys

    key, u = row_keys(np.arange(n), seed)
    tr = np.nonzero(u >= holdout)[0]
    ho = np.nonzero(u < holdout)[0]
    n_hold = int(np.ceil(max_rows * holdout / (1 - holdout))) if holdout > 0 else 0
    tr = tr[np.argsort(key[tr], kind="stable")][:max_rows]
    ho = ho[np.argsort(key[ho], kind="stable")][:n_hold]
    return tr, ho
