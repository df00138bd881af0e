"""DeepCTR-Torch's own DIN, DeepFM and xDeepFM read by ctrlens (ctrlens.integrations.deepctr): X built from
a Batch, per-field saliency against autograd on the plain model (table-weight and X gradients), neuron
statistics of the layers found in the model's own modules, and shared tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from integrations_fixtures import day_batch, need

HIST = ["item_id", "category_id"]


@pytest.fixture(scope="module")
def dc():
    need("ctrlens.integrations.deepctr")
    from ctrlens.integrations import deepctr as dc

    return dc


@pytest.fixture(scope="module")
def schema(tiny_world):
    from ctrlens.data import DailyDataset

    return DailyDataset(tiny_world.root).schema


def build(dc, schema, kind: str):
    """A small DeepCTR-Torch model of ``kind`` on the tiny world's fields, off its initialisation."""
    from deepctr_torch.models import DIN, DeepFM, xDeepFM

    if kind == "din":
        cols = dc.feature_columns(schema, 8)
        m = DIN(cols, HIST, dnn_hidden_units=(16, 8), att_hidden_size=(8, 4), seed=0)
    elif kind == "deepfm":
        cols = dc.feature_columns(schema, 8)
        m = DeepFM(cols, cols, dnn_hidden_units=(16, 8), seed=0)
    else:  # DeepCTR's CIN counts fields by tables, so xDeepFM gets fields with their own tables (no histories)
        cols = dc.feature_columns(schema, 8, [f.name for f in schema.fields if f.kind in ("sparse", "dense")])
        m = xDeepFM(cols, cols, dnn_hidden_units=(16, 8), cin_layer_size=(8, 8), seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # DeepCTR initialises embeddings at std 1e-4: move them so gradients differ
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return m.eval()


@pytest.mark.parametrize("kind", ["din", "deepfm", "xdeepfm"])
def test_view_outputs_and_saliency_equal_autograd_on_the_plain_model(dc, schema, tiny_world, kind) -> None:
    from ctrlens.saliency import Saliency
    from ctrlens.saliency.base import _Substitute

    m = build(dc, schema, kind)
    view = dc.attach(m, schema)
    batch = day_batch(tiny_world, 0, 64)
    # the plain model on X built from the batch: what DeepCTR-Torch itself computes
    X = dc.x_from_batch(batch, m)
    p_plain = m(X).reshape(-1)
    out = view(batch)
    np.testing.assert_allclose(out["ctr"].detach().numpy(), p_plain.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(torch.sigmoid(out["ctr_logit"]).detach().numpy(), p_plain.detach().numpy(), rtol=1e-5, atol=1e-7)

    sal = Saliency(view, target="probability").attribute(batch, "ctr")
    # signed gradients through the view (Saliency is their absolute value)
    fields = list(view.fields)
    cap = Saliency(view).capture(batch)
    xs = tuple(cap.embeddings[f].clone().requires_grad_() for f in fields)
    fn = _Substitute(view, batch, fields, view.heads["ctr"], "probability")
    grads = dict(zip(fields, torch.autograd.grad(fn(*xs).sum(), xs)))
    for f in fields:
        g = grads[f]
        if f in cap.masks:
            g = g * cap.masks[f].unsqueeze(-1)
        np.testing.assert_allclose(sal.attributions[f].numpy(), g.abs().numpy(), rtol=1e-6, atol=1e-9, err_msg=f)
    lin = getattr(m.linear_model, "embedding_dict", {})
    dnn_dim = {t: e.embedding_dim for t, e in m.embedding_dict.items()}
    # row by row: d p_i / d (table row r) of the plain model = sum of the row's field gradients at id r
    for i in range(8):
        row = batch.select(slice(i, i + 1))
        Xi = dc.x_from_batch(row, m).requires_grad_()
        m.zero_grad()
        m(Xi).sum().backward()
        sub = _Substitute(view, row, fields, view.heads["ctr"], "probability")
        xi = tuple(cap.embeddings[f][i : i + 1].clone().requires_grad_() for f in fields)
        gi = dict(zip(fields, torch.autograd.grad(sub(*xi).sum(), xi)))
        want_dnn = {t: torch.zeros_like(e.weight) for t, e in m.embedding_dict.items()}
        want_lin = {t: torch.zeros_like(e.weight) for t, e in lin.items()}
        for f in fields:
            spec = m.feature_index[f]
            if view.fields[f].kind == "dense":
                np.testing.assert_allclose(gi[f].reshape(-1).numpy(), Xi.grad[0, spec[0] : spec[1]].numpy(), rtol=1e-4, atol=1e-8)
                continue
            ids = row.features[f].reshape(-1)
            g = gi[f].reshape(ids.shape[0], -1)
            if f in cap.masks:
                keep = cap.masks[f][i]
                ids, g = ids[keep], g[keep]
            t = next(c.embedding_name for c in m.dnn_feature_columns if c.name == f)
            want_dnn[t].index_add_(0, ids, g[:, : dnn_dim[t]])
            if t in want_lin:
                want_lin[t].index_add_(0, ids, g[:, dnn_dim[t] :])
        for t, e in m.embedding_dict.items():
            got = e.weight.grad if e.weight.grad is not None else torch.zeros_like(e.weight)
            np.testing.assert_allclose(want_dnn[t][2:].numpy(), got[2:].numpy(), rtol=1e-4, atol=1e-8, err_msg=f"{kind} row {i} table {t}")
        for t, e in lin.items():
            got = e.weight.grad if e.weight.grad is not None else torch.zeros_like(e.weight)
            np.testing.assert_allclose(want_lin[t][2:].numpy(), got[2:].numpy(), rtol=1e-4, atol=1e-8, err_msg=f"{kind} linear {t}")


@pytest.mark.parametrize("kind", ["din", "deepfm", "xdeepfm"])
def test_fields_tables_layers_and_neuron_stats(dc, schema, tiny_world, kind) -> None:
    from ctrlens.data.batch import Batch
    from ctrlens.neurons import NeuronMonitor, embedding_health

    m = build(dc, schema, kind)
    view = dc.attach(m, schema)
    want_layers = {"din": ["attention.0", "attention.1", "dnn.0", "dnn.1"], "deepfm": ["fm", "dnn.0", "dnn.1"],
                   "xdeepfm": ["cin", "dnn.0", "dnn.1"]}[kind]  # fmt: skip
    assert list(view.layers) == want_layers
    assert view.fields["price"].kind == "dense"
    if kind != "xdeepfm":
        assert view.fields["hist_item_id"].kind == "sequence" and view.fields["hist_item_id"].tap.mask == "hist_item_id"
        assert "item" in view.tables and "hist_item_id" not in view.tables  # shared with item_id: one table
    if kind == "din":
        assert view.layers["attention.0"].activation == "dice" and view.layers["attention.0"].kind == "attention"
    assert view.layers["dnn.0"].activation == "relu"
    batches = list(day_batch(tiny_world, 1, 300).split(100))
    s = NeuronMonitor(view, sample_size=20).run(batches)
    # brute force: the layer modules' outputs on the plain model (no ctrlens taps), padding dropped
    raw: dict[str, list] = {k: [] for k in view.layers}
    for b in batches:
        hs = []
        for name, spec in view.layers.items():
            def hook(mod, args, out, name=name, spec=spec, b=b):
                x = out.detach().clone()
                if spec.tap.mask:
                    x = x[b.masks[spec.tap.mask]]
                raw[name].append(x.reshape(-1, x.shape[-1]))
            hs.append(spec.tap.module.register_forward_hook(hook))
        with torch.no_grad():
            m(dc.x_from_batch(b, m))
        for h in hs:
            h.remove()
    for name in view.layers:
        x = torch.cat(raw[name]).double().numpy()
        assert s[name].n_neurons == x.shape[1], name
        np.testing.assert_allclose(s[name].mean, x.mean(0), rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(s[name].std, x.std(0), rtol=1e-4, atol=1e-6, err_msg=name)
    allb = Batch.concat(batches)
    if kind != "xdeepfm":
        # DeepCTR looks padding up too (its tables have no padding_idx): row 0 is seen, as the model reads it
        item = torch.cat([allb.features["item_id"], allb.features["hist_item_id"].reshape(-1)])
        assert (allb.features["hist_item_id"] == 0).any()
        np.testing.assert_array_equal(s.seen["item"], np.unique(item.numpy()))
    h = embedding_health(view, s.seen).frame
    assert sorted(h["table"]) == sorted(m.embedding_dict)


def test_lookup_of_an_unknown_column_is_refused(dc, schema, tiny_world) -> None:
    from deepctr_torch.models import DeepFM

    from ctrlens.models.interface import InterfaceError

    cols = dc.feature_columns(schema, 4, ["user_id", "item_id", "price"])
    m = DeepFM(cols, cols, dnn_hidden_units=(4,), seed=0).eval()
    view = dc.attach(m, schema)
    orig = m.forward

    def hashed(X):  # a model that looks ids up after changing them: no field's column
        m.embedding_dict["user_id"](X[:, :1].long() + 1)
        return orig(X)

    m.forward = hashed
    with pytest.raises(InterfaceError, match="table 'user_id' with ids of shape \\[64, 1\\] that are no field's column"):
        view(day_batch(tiny_world, 0, 64))
