"""A model we did not write, attached in a few lines (docs/own-model.md), and embedding-table health."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ctrlens
from ctrlens.models.taps import TapError
from ctrlens.neurons import NeuronMonitor, effective_rank, embedding_health, information_abundance, snapshot_tables
from neurons_fixtures import UserCTR, capture, make_batches, user_forward


def _view(model: UserCTR, **layers):
    return ctrlens.attach(
        model,
        forward=user_forward,
        fields={"user_id": model.emb["user_id"], "item_id": model.emb["item_id"], "hist_item_id": model.hist},
        layers=layers or {"mlp.0": (model.relu, 0), "mlp.1": (model.relu, 1), "logit.ctr": model.mlp[4]},
        tables={"user": model.emb["user_id"], "item": model.emb["item_id"], "hist": model.hist},
        name="user-ctr",
    )


def test_user_model_per_call_taps_match_brute_force() -> None:
    torch.manual_seed(0)
    model = UserCTR().eval()
    view = _view(model)
    assert view.layers["mlp.0"].activation == "relu" and view.layers["logit.ctr"].activation == "identity"
    batches = make_batches(300, 64, seed=1)
    s = NeuronMonitor(view, sample_size=20).run(batches)
    raw = capture(view, batches)
    for name, (x, _) in raw.items():
        assert s[name].n_neurons == x.shape[1]
        np.testing.assert_allclose(s[name].mean, x.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s[name].std, x.std(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(s[name].zeros, (x == 0).sum(0))
    assert s["mlp.0"].n_neurons == 12 and s["mlp.1"].n_neurons == 6  # the two calls were not mixed
    # the EmbeddingBag's seen rows come from its flat input
    hist_ids = torch.cat([b.features["hist_item_id"][b.masks["hist_item_id"]] for b in batches])
    np.testing.assert_array_equal(s.seen["hist"], np.unique(hist_ids.numpy()))


def test_reused_module_without_call_index_is_refused() -> None:
    model = UserCTR().eval()
    view = _view(model, **{"mlp": model.relu})
    with pytest.raises(TapError, match=r"tap 'mlp': module ReLU was called 2 times in one forward.*'mlp#0'"):
        NeuronMonitor(view).run(make_batches(64, 64))


def test_embedding_health_never_updated_rows_and_rank() -> None:
    torch.manual_seed(1)
    model = UserCTR()
    view = _view(model)
    initial = snapshot_tables(view)  # at model build
    train = make_batches(64, 64, seed=2)[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = torch.nn.functional.binary_cross_entropy(user_forward(model, train)["ctr"], train.labels["click"])
    loss.backward()
    opt.step()
    day = make_batches(200, 100, seed=3)
    s = NeuronMonitor(view, sample_size=0).run(day)
    res = embedding_health(view, s.seen, initial=initial)
    assert res.kind == "embedding_health"
    f = res.frame.set_index("table")
    seen_items = set(torch.cat([b.features["item_id"] for b in day]).tolist())
    trained_items = set(train.features["item_id"].tolist())
    want = len(seen_items - trained_items) / len(seen_items)
    assert f.loc["item", "seen_rows"] == len(seen_items)
    assert f.loc["item", "never_updated_frac"] == pytest.approx(want)
    assert 0 < want < 1
    # a state_dict works as the initial weights too (keys found by the table's module path)
    sd = {f"emb.item_id.weight": initial["item"], "emb.user_id.weight": initial["user"], "hist.weight": initial["hist"]}
    f2 = embedding_health(view, s.seen, initial=sd).frame.set_index("table")
    assert f2.loc["item", "never_updated_frac"] == pytest.approx(want)
    assert np.isnan(embedding_health(view, s.seen).frame.set_index("table").loc["item", "never_updated_frac"])
    w = model.emb["item_id"].weight.detach().double().numpy()
    sv = np.linalg.svd(w, compute_uv=False)
    assert f.loc["item", "effective_rank"] == pytest.approx(effective_rank(sv), rel=1e-6)
    assert f.loc["item", "info_abundance"] == pytest.approx(sv.sum() / sv.max(), rel=1e-6)
    norms = np.linalg.norm(w, axis=1)
    assert f.loc["item", "norm_p50"] == pytest.approx(np.percentile(norms, 50), rel=1e-5)
    assert sum(f.loc["item", "hist_json"]["counts"]) == w.shape[0]


def test_effective_rank_and_information_abundance_known_values() -> None:
    assert effective_rank(np.array([3.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(np.ones(8)) == pytest.approx(8.0)
    assert information_abundance(np.array([4.0, 2.0, 2.0])) == pytest.approx(2.0)
    collapsed = torch.randn(500, 1) @ torch.randn(1, 8)  # rank one table
    emb = torch.nn.Embedding.from_pretrained(collapsed)
    view = ctrlens.attach(torch.nn.Sequential(emb), forward=lambda m, b: {}, fields={}, tables={"t": emb})
    f = embedding_health(view).frame.iloc[0]
    assert f["effective_rank"] < 1.01 and f["info_abundance"] < 1.01
    assert f["seen_rows"] == 0 and np.isnan(f["never_updated_frac"])
