"""Small models and batches for the saliency tests (no dependency on reference_models or the loader).

* :class:`UserModel` -- how a user writes a CTR model: an ``nn.ModuleDict`` of embeddings, an
  ``nn.EmbeddingBag`` for a multi-valued field, one item table shared by the candidate and the
  history (two calls per forward), DIN-style attention; attached with :func:`ctrlens.attach`.
* :class:`HandModel` -- two fields, a logit whose gradient is written by hand.
* :class:`EsmmToy` -- three heads (``ctr``, ``cvr``, ``ctcvr = ctr * cvr``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import ctrlens
from ctrlens.data.batch import Batch
from ctrlens.data.schema import DenseField, Schema, SequenceField, SparseField
from ctrlens.models.interface import HeadSpec, ModelView

D = 8
L = 6


def toy_schema() -> Schema:
    return Schema(
        fields=(
            SparseField("user_id", 50, D, role="user"),
            SparseField("item_id", 40, D, table="item", role="item"),
            SparseField("category_id", 6, D, table="category"),
            SequenceField("hist_item_id", "item", L),
            SequenceField("hist_category_id", "category", L),
            DenseField("price"),
        ),
        labels=("click", "conversion"),
    )


def random_batch(n: int = 64, seed: int = 0, *, min_len: int = 0) -> Batch:
    """``n`` rows of :func:`toy_schema` data with planted labels (see :func:`planted_logit`)."""
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(2, 52, (n,), generator=g)
    item = torch.randint(2, 42, (n,), generator=g)
    cat = (item % 6) + 2
    lens = torch.randint(min_len, L + 1, (n,), generator=g)
    mask = torch.arange(L)[None, :] < lens[:, None]
    hist = torch.randint(2, 42, (n, L), generator=g) * mask
    hist_cat = ((hist % 6) + 2) * mask
    price = torch.rand(n, generator=g)
    b = Batch(
        features={
            "user_id": user,
            "item_id": item,
            "category_id": cat,
            "hist_item_id": hist,
            "hist_category_id": hist_cat,
            "price": price,
        },
        masks={"hist_item_id": mask, "hist_category_id": mask.clone()},
        row=torch.arange(n),
    )
    p = torch.sigmoid(planted_logit(b))
    click = (torch.rand(n, generator=g) < p).float()
    conv = click * (torch.rand(n, generator=g) < 0.5).float()
    b.labels = {"click": click, "conversion": conv}
    return b


def planted_logit(b: Batch) -> Tensor:
    """Clicks depend strongly on the item, a little on the user, not at all on the price."""
    item_eff = torch.linspace(-3, 3, 42)[b.features["item_id"]]
    user_eff = 0.3 * torch.cos(b.features["user_id"].float())
    match = (b.features["hist_item_id"] == b.features["item_id"][:, None]).any(1).float()
    return item_eff + user_eff + 1.0 * match - 0.5


class UserModel(nn.Module):
    """A user's DIN-ish model: ``forward(features, masks) -> (logit [B], attention [B, L])``."""

    def __init__(self, seed: int = 0, leak_padding: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.ModuleDict({"user_id": nn.Embedding(52, D), "category_id": nn.Embedding(8, D, padding_idx=0)})
        self.item_table = nn.Embedding(42, D, padding_idx=0)  # shared: candidate (call 0) and history (call 1)
        self.cat_bag = nn.EmbeddingBag(8, D, mode="sum", padding_idx=0)
        self.price = nn.Linear(1, D)
        self.mlp = nn.Sequential(nn.Linear(6 * D, 32), nn.ReLU(), nn.Linear(32, 1))
        self.leak_padding = leak_padding

    def embed(self, f: dict[str, Tensor]) -> dict[str, Tensor]:
        return {
            "user_id": self.emb["user_id"](f["user_id"]),
            "item_id": self.item_table(f["item_id"]),
            "category_id": self.emb["category_id"](f["category_id"]),
            "hist_item_id": self.item_table(f["hist_item_id"]),
            "hist_category_id": self.cat_bag(f["hist_category_id"]),
            "price": self.price(f["price"][:, None]),
        }

    def head(self, e: dict[str, Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
        """The model from field embeddings on (for brute-force gradients in tests)."""
        hist, cand = e["hist_item_id"], e["item_id"]
        score = (hist * cand[:, None, :]).sum(-1)
        if not self.leak_padding:
            score = score.masked_fill(~mask, -1e9)
        att = torch.softmax(score, dim=1) * (mask.any(1, keepdim=True)).float()
        pooled = (att[..., None] * hist).sum(1)
        x = torch.cat([e["user_id"], cand, e["category_id"], pooled, e["hist_category_id"], e["price"]], dim=1)
        return self.mlp(x).squeeze(-1), att

    def forward(self, features: dict[str, Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.embed(features), mask)


def attach_user_model(model: UserModel) -> ModelView:
    def fwd(m: UserModel, batch: Batch) -> dict[str, Tensor]:
        logit, att = m(batch.features, batch.masks["hist_item_id"])
        return {"ctr": torch.sigmoid(logit), "ctr_logit": logit, "attention.hist_item_id": att}

    return ctrlens.attach(
        model,
        forward=fwd,
        fields={
            "user_id": model.emb["user_id"],
            "item_id": (model.item_table, 0),
            "category_id": model.emb["category_id"],
            "hist_item_id": (model.item_table, 1, "hist_item_id"),
            "hist_category_id": model.cat_bag,
            "price": model.price,
        },
        layers={"mlp.0": model.mlp[1]},
        heads={"ctr": HeadSpec("ctr", "ctr", "click", logit="ctr_logit")},
        name="user_model",
    )


def train(model: nn.Module, view: ModelView, batches: list[Batch], steps: int = 150, lr: float = 0.03) -> None:
    """A few Adam steps on click (enough for the planted signal)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for i in range(steps):
        b = batches[i % len(batches)]
        out = view(b)
        loss = nn.functional.binary_cross_entropy(out["ctr"].clamp(1e-6, 1 - 1e-6), b.labels["click"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


class HandModel(nn.Module):
    """``logit = w.a + v.b + a.b`` over two 3-d field embeddings: ``d/da = w + b``, ``d/db = v + a``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a = nn.Embedding(10, 3)
        self.b = nn.Embedding(10, 3)
        self.w = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
        self.v = nn.Parameter(torch.tensor([1.5, 0.25, -0.75]))

    def forward(self, fa: Tensor, fb: Tensor) -> Tensor:
        a, b = self.a(fa), self.b(fb)
        return a @ self.w + b @ self.v + (a * b).sum(1)


def attach_hand_model(model: HandModel) -> ModelView:
    def fwd(m: HandModel, batch: Batch) -> dict[str, Tensor]:
        z = m(batch.features["a"], batch.features["b"])
        return {"ctr": torch.sigmoid(z), "ctr_logit": z}

    return ctrlens.attach(
        model,
        forward=fwd,
        fields={"a": model.a, "b": model.b},
        heads={"ctr": HeadSpec("ctr", "ctr", "click", logit="ctr_logit")},
        name="hand",
    )


class EsmmToy(nn.Module):
    """Shared embeddings, a CTR tower and a CVR tower; ``ctcvr = ctr * cvr`` (no logit of its own)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.emb = nn.ModuleDict({k: nn.Embedding(52, D) for k in ("user_id", "item_id", "category_id")})
        self.ctr = nn.Sequential(nn.Linear(3 * D, 16), nn.ReLU(), nn.Linear(16, 1))
        self.cvr = nn.Sequential(nn.Linear(3 * D, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, f: dict[str, Tensor]) -> dict[str, Tensor]:
        x = torch.cat([self.emb[k](f[k]) for k in ("user_id", "item_id", "category_id")], 1)
        zc, zv = self.ctr(x).squeeze(-1), self.cvr(x).squeeze(-1)
        ctr, cvr = torch.sigmoid(zc), torch.sigmoid(zv)
        return {"ctr": ctr, "ctr_logit": zc, "cvr": cvr, "cvr_logit": zv, "ctcvr": ctr * cvr}


def attach_esmm(model: EsmmToy) -> ModelView:
    return ctrlens.attach(
        model,
        forward=lambda m, b: m(b.features),
        fields={k: model.emb[k] for k in ("user_id", "item_id", "category_id")},
        heads={
            "ctr": HeadSpec("ctr", "ctr", "click", logit="ctr_logit"),
            "cvr": HeadSpec("cvr", "cvr", "conversion", rows="clicked", logit="cvr_logit"),
            "ctcvr": HeadSpec("ctcvr", "ctcvr", "click*conversion"),
        },
        name="esmm_toy",
    )
