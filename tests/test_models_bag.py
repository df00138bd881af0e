"""Bag fields in the reference models: pooling against a hand computation, saliency of a bag field
against plain autograd on its pooled output, and a label not called ``click`` through train and metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import reference_models
from ctrlens.data import BagField, Batch, DailyDataset, Schema, SparseField, random_batch
from ctrlens.models.checkpoint import load_checkpoint
from ctrlens.models.blocks.embedding import FieldEmbedding, FieldLinear, module_key, pool_bag
from ctrlens.saliency import InputXGradient, Saliency

from bag_fixtures import bag_schema, random_rows, write_day


def small_schema() -> Schema:
    return Schema(
        fields=(
            SparseField("item", 6, table="item", embedding_dim=3),
            BagField("tags", 4, max_len=3, weights="tag_w", embedding_dim=3),  # sum, weighted
            BagField("mtags", table="tags", max_len=3, pooling="mean"),  # shares the tags table, mean
            BagField("items", table="item", max_len=2, pooling="mean", weights="item_w"),  # weighted mean
        ),
        labels=("purchase",),
    )


def test_pooling_matches_hand_computation():
    s = small_schema()
    torch.manual_seed(0)
    emb = FieldEmbedding(s, ["item", "tags", "mtags", "items"])
    b = random_batch(s, 9, seed=3)
    b.masks["items"][0] = False  # an empty bag pools to 0 (also under mean)
    b.features["items"][0] = 0
    b.weights["items"][0] = 0
    out = emb(b)
    T = emb.tables["tags"].weight.detach()
    Ti = emb.tables[module_key("item")].weight.detach()
    for r in range(9):
        ids, w = b.features["tags"][r].tolist(), b.weights["tags"][r].tolist()
        want = sum((w[j] * T[ids[j]] for j in range(3) if ids[j] != 0), torch.zeros(3))
        torch.testing.assert_close(out["tags"][r], want)
        ids = [i for i in b.features["mtags"][r].tolist() if i != 0]
        want = sum((T[i] for i in ids), torch.zeros(3)) / max(len(ids), 1)
        torch.testing.assert_close(out["mtags"][r], want)
        ids, w = b.features["items"][r].tolist(), b.weights["items"][r].tolist()
        num = sum((w[j] * Ti[ids[j]] for j in range(2) if ids[j] != 0), torch.zeros(3))
        den = sum(w[j] for j in range(2) if ids[j] != 0)
        torch.testing.assert_close(out["items"][r], num / den if den else torch.zeros(3))
    assert out["items"][0].abs().sum() == 0
    # the linear part pools its per-id weights the same way
    lin = FieldLinear(s, ["tags", "mtags"])
    with torch.no_grad():
        lin.tables["tags"].weight.copy_(torch.arange(6, dtype=torch.float32)[:, None] * 0.5)
        lin.tables["tags"].weight[0] = 0
    W = lin.tables["tags"].weight.detach().squeeze(1)
    got = lin(b).squeeze(1)
    for r in range(9):
        ids, w = b.features["tags"][r], b.weights["tags"][r]
        m_ids = [i for i in b.features["mtags"][r].tolist() if i != 0]
        want = float((W[ids] * w).sum()) + (sum(float(W[i]) for i in m_ids) / max(len(m_ids), 1))
        assert got[r].item() == pytest.approx(want, abs=1e-6)
    # padding ids never matter: garbage under the mask changes nothing
    g = Batch(dict(b.features), dict(b.masks), dict(b.labels), weights=dict(b.weights))
    g.features["tags"] = torch.where(b.masks["tags"], b.features["tags"], torch.full_like(b.features["tags"], 3))
    torch.testing.assert_close(emb(g)["tags"], out["tags"])


def test_pool_bag_sum_is_embedding_bag():
    torch.manual_seed(1)
    bag = torch.nn.EmbeddingBag(10, 4, mode="sum", padding_idx=0)
    ids = torch.tensor([[2, 5, 0], [0, 0, 0], [9, 9, 1]])
    w = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 3.0]])
    torch.testing.assert_close(pool_bag(bag.weight, ids, w, "sum"), bag(ids, per_sample_weights=w))


@pytest.mark.parametrize("name", ["base", "xdeepfm", "din"])
def test_bag_saliency_equals_autograd_on_pooled_output(name):
    s = small_schema()
    torch.manual_seed(0)
    model = reference_models.build(name, s, embedding_dim=3).eval()
    view = model.lens()
    assert view.fields["tags"].kind == "bag" and view.fields["tags"].tap.mask is None
    b = random_batch(s, 16, seed=7)
    # plain autograd: the model written from the pooled field vectors on
    with torch.no_grad():
        fields = model.embed.pooled(model.embed(b), b)
    x = {k: v.clone().requires_grad_() for k, v in fields.items()}
    if name == "base":
        logit = model.logit(model.mlp(torch.cat(list(x.values()), -1))).squeeze(-1)
    else:  # xdeepfm/din: swap the pooled outputs in through the field taps, run the real forward
        hooks = [model.embed.taps[module_key(k)].register_forward_hook(lambda m, i, o, k=k: x[k]) for k in x]
        try:
            logit = model(b)["ctr_logit"]
        finally:
            for h in hooks:
                h.remove()
    grads = dict(zip(x, torch.autograd.grad(logit.sum(), list(x.values()))))
    sal = Saliency(view).attribute(b, "ctr")
    ixg = InputXGradient(view).attribute(b, "ctr")
    for f in ("tags", "mtags", "items"):
        assert sal.attributions[f].shape == (16, 3)
        torch.testing.assert_close(sal.attributions[f], grads[f].abs())
        torch.testing.assert_close(ixg.attributions[f], grads[f] * fields[f])
        assert grads[f].abs().sum() > 0


def test_label_with_another_name_trains_and_is_measured(tmp_path):
    """``income`` is 1 exactly when the bag (its first ``max_len`` ids) holds tag ``a``: the base model
    learns it from the bag alone."""
    from ctrlens.metrics import evaluate
    from ctrlens.train import train

    rng = np.random.default_rng(0)
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    for d in days:
        rows = random_rows(1200, rng)
        rows["income"] = [int("a" in [x for x in (t or []) if x is not None][:3]) for t in rows["tags"]]
        write_day(tmp_path / "ds", bag_schema(), [rows], day=d)
    res = train("base", tmp_path / "ds", days[:2], out_dir=tmp_path / "run", epochs=4, batch_size=128, lr=0.01,
                eval_days=[days[2]], model_config={"mlp": (16,), "embedding_dim": 4})
    q = res.eval[days[2]].frame.set_index("head")
    assert list(q.index) == ["ctr"]
    assert q.loc["ctr", "auc"] > 0.95
    # the checkpoint rebuilds with the label head; metrics from the view agree with the trainer's
    model = load_checkpoint(res.final).eval()
    assert model.head_specs()["ctr"].label == "income"
    ds = DailyDataset(tmp_path / "ds")
    y = ds.load_day(days[2]).labels["income"]
    assert 0.2 < float(y.mean()) < 0.8
    q2 = evaluate(model, ds, day=days[2]).frame.set_index("head")
    assert q2.loc["ctr", "auc"] == pytest.approx(q.loc["ctr", "auc"], abs=1e-9)


def test_neuron_classes_follow_a_label_not_called_click():
    from ctrlens.neurons import NeuronMonitor

    s = small_schema()
    torch.manual_seed(0)
    view = reference_models.build("base", s, embedding_dim=3, mlp=(8,)).lens()
    b = random_batch(s, 64, seed=2, click_rate=0.3)
    b.labels = {"purchase": b.labels["purchase"]}
    clicked = Batch(b.features, b.masks, {"click": b.labels["purchase"]}, row=b.row, weights=b.weights)
    a = NeuronMonitor(view, sample_size=0).run([b]).to_frame()
    c = NeuronMonitor(view, sample_size=0).run([clicked]).to_frame()
    assert int(a["count_click"].iloc[0]) == int(b.labels["purchase"].sum()) > 0
    pd.testing.assert_frame_equal(a, c)
