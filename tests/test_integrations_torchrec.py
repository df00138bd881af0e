"""torchrec's own DLRM, unmodified, read by ctrlens (ctrlens.integrations.torchrec): the KJT built from a
Batch, per-feature saliency against autograd on the KeyedTensor, neuron statistics and embedding health
(a table shared by two features counted once) against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from integrations_fixtures import day_batch, need


@pytest.fixture(scope="module")
def tr():
    need("ctrlens.integrations.torchrec")
    from ctrlens.integrations import torchrec as tr

    return tr


@pytest.fixture(scope="module")
def dlrm(tr, tiny_world):
    from ctrlens.data import DailyDataset

    schema = DailyDataset(tiny_world.root).schema
    model = tr.make_dlrm(schema, dim=8, dense_arch=(16,), over_arch=(12,), seed=0).eval()
    # move off the initialisation a little so gradients are not degenerate
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, schema, tr.attach_dlrm(model, schema)


def test_kjt_from_batch_drops_padding_and_missing(tr) -> None:
    from ctrlens.data.batch import Batch

    b = Batch(
        features={"a": torch.tensor([3, 0, 5]), "h": torch.tensor([[4, 6, 0], [0, 0, 0], [7, 0, 0]])},
        masks={"h": torch.tensor([[True, True, False], [False, False, False], [True, False, False]])},
    )
    kjt = tr.kjt_from_batch(b, ["a", "h"])
    assert kjt.keys() == ["a", "h"]
    d = kjt.to_dict()
    assert d["a"].lengths().tolist() == [1, 0, 1] and d["a"].values().tolist() == [3, 5]
    assert d["h"].lengths().tolist() == [2, 0, 1] and d["h"].values().tolist() == [4, 6, 7]
    assert kjt.weights_or_none() is None
    w = tr.kjt_from_batch(b, ["a", "h"], weights={"h": torch.tensor([[0.5, 2.0, 9.0], [9.0, 9.0, 9.0], [3.0, 9.0, 9.0]])})
    assert w.to_dict()["h"].weights().tolist() == [0.5, 2.0, 3.0] and w.to_dict()["a"].weights().tolist() == [1.0, 1.0]
    from ctrlens.errors import InputError

    with pytest.raises(InputError, match="field 'x': not in the batch"):
        tr.kjt_from_batch(b, ["x"])


def test_view_fields_tables_layers(dlrm) -> None:
    model, schema, view = dlrm
    ebc = model.sparse_arch.embedding_bag_collection
    keys = [k for c in ebc.embedding_bag_configs() for k in c.feature_names]
    assert set(view.fields) == set(keys) == {f.name for f in schema.fields if f.kind in ("sparse", "sequence")}
    # item_id and hist_item_id share the schema's `item` table: one torchrec table, one health row
    assert set(view.tables) == {"user_id", "item", "category", "shop_id", "user_age_bucket", "user_gender", "hour"}
    assert view.fields["item_id"].tap.module is view.fields["hist_item_id"].tap.module is ebc.embedding_bags["item"]
    assert (view.fields["item_id"].tap.call, view.fields["hist_item_id"].tap.call) == (0, 1)
    assert list(view.layers) == ["dense_arch.0", "dense_arch.1", "interaction", "over_arch.0", "logit.ctr"]
    assert view.layers["dense_arch.0"].activation == "relu" and view.layers["logit.ctr"].kind == "logit"
    assert view.fields["hist_item_id"].kind == "sequence" and view.fields["user_id"].kind == "sparse"


def _manual(model, tr, batch, keys, dense=("price",)):
    """DLRM's forward by hand from the KeyedTensor, with its values as an autograd leaf."""
    from torchrec.sparse.jagged_tensor import KeyedTensor

    kjt = tr.kjt_from_batch(batch, keys, weighted=model.sparse_arch.embedding_bag_collection.is_weighted())
    kt = model.sparse_arch.embedding_bag_collection(kjt)
    leaf = kt.values().detach().requires_grad_()
    kt2 = KeyedTensor(keys=kt.keys(), length_per_key=kt.length_per_key(), values=leaf)
    d = kt2.to_dict()
    sparse = torch.stack([d[k] for k in model.sparse_arch.sparse_feature_names], dim=1)  # [B, F, D]
    dense = tr.dense_from_batch(batch, list(dense))
    outs = {}
    x = dense
    for i, p in enumerate(model.dense_arch.model._mlp):
        x = outs[f"dense_arch.{i}"] = p(x)
    x = outs["interaction"] = model.inter_arch(dense_features=x, sparse_features=sparse)
    for i, p in enumerate(model.over_arch.model[0]._mlp):
        x = outs[f"over_arch.{i}"] = p(x)
    z = outs["logit.ctr"] = model.over_arch.model[1](x)
    return kt2, leaf, outs, z.reshape(-1)


def test_per_feature_saliency_equals_autograd_on_keyed_tensor(dlrm, tr, tiny_world) -> None:
    from ctrlens.saliency import InputXGradient, Saliency

    model, schema, view = dlrm
    batch = day_batch(tiny_world, 0, 256)
    kt, leaf, _, z = _manual(model, tr, batch, list(view.fields))
    z.sum().backward()
    grads = dict(zip(kt.keys(), torch.split(leaf.grad, kt.length_per_key(), dim=1)))
    vals = dict(zip(kt.keys(), torch.split(leaf.detach(), kt.length_per_key(), dim=1)))
    sal = Saliency(view).attribute(batch, "ctr")
    ixg = InputXGradient(view).attribute(batch, "ctr")
    np.testing.assert_allclose(sal.output.numpy(), z.detach().numpy(), rtol=1e-5, atol=1e-6)
    for k in view.fields:
        assert grads[k].abs().sum() > 0, k
        np.testing.assert_allclose(sal.attributions[k].numpy(), grads[k].abs().numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ixg.attributions[k].numpy(), (grads[k] * vals[k]).numpy(), rtol=1e-5, atol=1e-7)


def test_neuron_stats_and_table_health_match_brute_force(dlrm, tr, tiny_world) -> None:
    from ctrlens.data.batch import Batch
    from ctrlens.neurons import NeuronMonitor, embedding_health

    model, schema, view = dlrm
    batches = list(day_batch(tiny_world, 1, 600).split(200))
    s = NeuronMonitor(view, sample_size=50).run(batches)
    with torch.no_grad():
        raw = [_manual(model, tr, b, list(view.fields))[2] for b in batches]
    for name in view.layers:
        x = torch.cat([r[name] for r in raw]).double().numpy()
        assert s[name].n_neurons == x.shape[1], name
        np.testing.assert_allclose(s[name].mean, x.mean(0), rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(s[name].std, x.std(0), rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(s[name].zeros, (x == 0).sum(0), err_msg=name)
    # the shared `item` table: rows looked up by item_id AND hist_item_id, counted in one table
    allb = Batch.concat(batches)
    item = torch.cat([allb.features["item_id"], allb.features["hist_item_id"][allb.masks["hist_item_id"]]])
    want = np.unique(item[item != 0].numpy())
    np.testing.assert_array_equal(s.seen["item"], want)
    only_cand = np.unique(allb.features["item_id"][allb.features["item_id"] != 0].numpy())
    assert len(want) > len(only_cand)
    h = embedding_health(view, s.seen).frame.set_index("table")
    assert list(h.index).count("item") == 1 and int(h.loc["item", "seen_rows"]) == len(want)
    assert int(h.loc["item", "rows"]) == schema["item_id"].vocab_size + 2


def test_bag_fields_weighted_and_shared_label_not_click(tr) -> None:
    """Bags are jagged features with their per-id weights (torchrec's weighted collection); a bag that
    borrows the item table shares it; the head predicts `income`."""
    from ctrlens.data.batch import Batch
    from ctrlens.data.schema import BagField, DenseField, Schema, SparseField
    from ctrlens.saliency import Saliency

    schema = Schema(
        fields=(SparseField("item", 30, table="item"), BagField("tags", 5, max_len=3, weights="tag_w"),
                BagField("also_items", table="item", max_len=2), DenseField("price")),
        labels=("income",),
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    B = 64
    tags_mask = torch.arange(3) < torch.randint(0, 4, (B, 1), generator=g)
    also_mask = torch.arange(2) < torch.randint(0, 3, (B, 1), generator=g)
    batch = Batch(
        features={"item": torch.randint(2, 32, (B,), generator=g),
                  "tags": torch.randint(2, 7, (B, 3), generator=g) * tags_mask,
                  "also_items": torch.randint(2, 32, (B, 2), generator=g) * also_mask,
                  "price": torch.rand(B, generator=g)},
        masks={"tags": tags_mask, "also_items": also_mask},
        labels={"income": torch.randint(0, 2, (B,), generator=g).float()},
        weights={"tags": torch.rand(B, 3, generator=g) * tags_mask},
    )  # fmt: skip
    model = tr.make_dlrm(schema, dim=4, dense_arch=(6,), over_arch=(6,), seed=1).eval()
    ebc = model.sparse_arch.embedding_bag_collection
    assert ebc.is_weighted()
    view = tr.attach_dlrm(model, schema, head="income_p", label="income")
    assert set(view.tables) == {"item", "tags"} and view.fields["tags"].kind == "bag"
    assert view.fields["also_items"].tap.module is view.fields["item"].tap.module
    # the pooled bag is the weighted sum of its rows: check the KJT carried the weights
    kjt = tr.kjt_from_batch(batch, ["tags"], weighted=True)
    pooled = ebc.embedding_bags["tags"](kjt.values(), kjt.offsets(), per_sample_weights=kjt.weights())
    w = ebc.embedding_bags["tags"].weight
    want = (w[batch.features["tags"]] * batch.weights["tags"].unsqueeze(-1)).sum(1)
    torch.testing.assert_close(pooled, want)
    kt, leaf, _, z = _manual(model, tr, batch, list(view.fields))
    z.sum().backward()
    grads = dict(zip(kt.keys(), torch.split(leaf.grad, kt.length_per_key(), dim=1)))
    sal = Saliency(view).attribute(batch, "income_p")
    for k in view.fields:
        np.testing.assert_allclose(sal.attributions[k].numpy(), grads[k].abs().numpy(), rtol=1e-5, atol=1e-7)
    assert view.heads["income_p"].target(batch)[0] is batch.labels["income"]


@pytest.mark.slow
def test_sharded_model_is_refused_and_unshard_gives_the_same_model(tr, tmp_path) -> None:
    """DistributedModelParallel, tables sharded table-wise over two gloo processes on CPU: attach refuses
    the sharded collection with a clear message; `unshard` gathers the weights into a plain DLRM whose
    forward equals the sharded one, and that copy is what ctrlens watches."""
    import json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = Path(__file__).with_name("integrations_dmp_worker.py")
    out = tmp_path / "dmp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), "2", str(port), str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]  # fmt: skip
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(x[-3000:] for x in logs)
    res = json.loads(out.read_text())
    assert set(res["sharding"].values()) == {"table_wise"}
    assert res["max_abs_diff"] < 1e-6
    assert "ShardedEmbeddingBagCollection" not in (res["refused"] or "") and "not supported" in res["refused"]
    assert res["tables"] == ["item", "user"] and res["fields"] == ["hist_item_id", "item_id", "user_id"]


def test_dlrm_dcn_variant_attaches(tr, dlrm, tiny_world) -> None:
    """torchrec's DLRM_DCN (a cross net as interaction) is read the same way."""
    from torchrec import EmbeddingBagCollection
    from torchrec.models.dlrm import DLRM_DCN

    from ctrlens.neurons import NeuronMonitor

    _, schema, _ = dlrm
    torch.manual_seed(0)
    ebc = EmbeddingBagCollection(tables=tr.embedding_bag_configs(schema, 8), device=torch.device("cpu"))
    m = DLRM_DCN(ebc, dense_in_features=1, dense_arch_layer_sizes=[8], over_arch_layer_sizes=[8, 1],
                 dcn_num_layers=2, dcn_low_rank_dim=4).eval()  # fmt: skip
    view = tr.attach_dlrm(m, schema)
    assert list(view.layers) == ["dense_arch.0", "interaction", "over_arch.0", "logit.ctr"]
    batch = day_batch(tiny_world, 0, 64)
    keys = [k for c in ebc.embedding_bag_configs() for k in c.feature_names]
    with torch.no_grad():
        z = m(tr.dense_from_batch(batch, ["price"]), tr.kjt_from_batch(batch, keys)).reshape(-1)
    torch.testing.assert_close(view(batch)["ctr_logit"], z)
    s = NeuronMonitor(view).run([batch])
    assert s["interaction"].n_neurons == 8 + 9 * 8  # the cross net keeps [dense | 9 pooled features]
