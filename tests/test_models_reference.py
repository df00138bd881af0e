"""Reference models: outputs, canonical names, taps, masking, heads, losses, training, registry."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

import reference_models as rm
from ctrlens.data.schema import Schema, SparseField
from ctrlens.errors import InputError
from ctrlens.models.taps import TapSession
from models_fixtures import HIST_LEN, random_batch, with_padding_garbage, world_schema

ID_FIELDS = [
    "user_id", "item_id", "category_id", "shop_id", "price", "hist_item_id", "hist_category_id",
    "user_age_bucket", "user_gender", "hour",
]  # fmt: skip
SMALL = {  # tiny sizes keep the suite fast; names do not depend on widths
    "base": dict(mlp=(32, 16, 16, 8)),
    "din": dict(mlp=(16, 8), attention=(8, 4)),
    "dicm": dict(mlp=(16, 8), attention=(8, 4), image_channels=(4, 8), image_hidden=(8,), image_attention=(8, 4)),
    "esmm": dict(tower=(32, 16, 8)),
    "pal": dict(mlp=(32, 16), seen_hidden=(4,)),
    "xdeepfm": dict(cin=(6, 6, 4), dnn=(16, 8)),
}
# The documented canonical names (docs/models.md) for the world's schema, in forward order.
LAYERS = {
    "base": ["embedding", "mlp.0", "mlp.1", "mlp.2", "mlp.3", "logit.ctr"],
    "din": ["attention.hist_item_id.0", "attention.hist_item_id.1", "embedding", "mlp.0", "mlp.1", "logit.ctr"],
    "dicm": [
        "attention.hist_item_id.0", "attention.hist_item_id.1",
        "attention.hist_image.image.0", "attention.hist_image.image.1",
        "attention.hist_image.id.0", "attention.hist_image.id.1",
        "embedding", "mlp.0", "mlp.1", "logit.ctr",
    ],  # fmt: skip
    "esmm": [
        "embedding", "tower.ctr.mlp.0", "tower.ctr.mlp.1", "tower.ctr.mlp.2", "logit.ctr",
        "tower.cvr.mlp.0", "tower.cvr.mlp.1", "tower.cvr.mlp.2", "logit.cvr",
    ],  # fmt: skip
    "pal": ["embedding", "mlp.0", "mlp.1", "logit.ctr", "tower.seen.mlp.0", "logit.seen"],
    "xdeepfm": ["embedding", "cin.0", "cin.1", "cin.2", "mlp.0", "mlp.1", "logit.ctr"],
}
FIELDS = {
    "base": ID_FIELDS,
    "din": ID_FIELDS,
    "dicm": ID_FIELDS + ["item_image", "hist_image"],
    "esmm": ID_FIELDS,
    "pal": ID_FIELDS + ["position"],
    "xdeepfm": ID_FIELDS,
}
HEADS = {"esmm": ["ctr", "cvr", "ctcvr"], "pal": ["ctr", "seen", "click"]}


@pytest.fixture(scope="module")
def schema():
    return world_schema()


def small(name, schema, **kw):
    torch.manual_seed(0)
    return rm.build(name, schema, **{**SMALL[name], **kw})


@pytest.mark.parametrize("name", rm.MODEL_NAMES)
def test_outputs_heads_and_loss(name, schema):
    m = small(name, schema)
    b = random_batch(schema, 12)
    out = m(b)
    view = m.lens()
    assert list(view.heads) == HEADS.get(name, ["ctr"])
    for h in view.heads.values():
        p = out[h.output]
        assert p.shape == (12,) and ((p > 0) & (p < 1)).all()
        if h.logit:
            torch.testing.assert_close(torch.sigmoid(out[h.logit]), p)
    loss = m.loss(out, b)
    assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("name", rm.MODEL_NAMES)
def test_lens_names_and_every_tap_fires_once_in_order(name, schema):
    m = small(name, schema)
    view = m.lens()
    assert view.name == name
    assert list(view.layers) == LAYERS[name]
    assert sorted(view.fields) == sorted(FIELDS[name])
    assert set(view.tables) == {"user_id", "item", "category", "shop_id", "user_age_bucket", "user_gender", "hour"}
    b = random_batch(schema, 10)
    events = []
    with TapSession(view, {**view.fields, **view.layers}, lambda e: events.append((e.name, e.output.shape, e.mask))) as s:
        s.forward(b)
        s.forward(b)  # hooks count per forward
    names = [e[0] for e in events]
    once = names[: len(names) // 2]
    assert sorted(once) == sorted([*view.fields, *view.layers]) and names[len(once):] == once
    assert [n for n in once if n in view.layers] == list(view.layers)  # layers in forward order
    shapes = {n: sh for n, sh, _ in events}
    for n, spec in view.layers.items():
        sh = shapes[n]
        assert sh[0] == 10 and len(sh) == (3 if spec.tap.mask else 2), (n, sh)
        if spec.tap.mask:
            assert sh[1] == HIST_LEN
    for n in view.fields:
        if view.fields[n].tap.mask:
            assert len(shapes[n]) == 3 and [e[2] for e in events if e[0] == n][0] is not None
    assert all(shapes[n][-1] == 1 for n in view.layers if n.startswith("logit."))
    assert {s.kind for s in view.layers.values()} <= {"embedding", "hidden", "attention", "interaction", "logit"}


@pytest.mark.parametrize("name", rm.MODEL_NAMES)
def test_replacing_a_field_tap_changes_the_prediction(name, schema):
    """Saliency substitutes field embeddings through the taps; the model must read them."""
    m = small(name, schema).eval()
    view = m.lens()
    b = random_batch(schema, 8)
    base = m(b)["ctr"]
    for field in ("item_id", "hist_item_id"):
        with TapSession(view, {field: view.fields[field]}, lambda e: torch.randn_like(e.output)) as s:
            out = s.forward(b)["ctr"]
        assert not torch.allclose(out, base), field


@pytest.mark.parametrize("name", ["base", "din", "dicm", "xdeepfm"])
@pytest.mark.parametrize("train", [False, True])
def test_padding_never_changes_outputs(name, schema, train):
    kw = dict(activation="dice", attention_activation="dice") if name in ("din", "dicm") else {}
    m = small(name, schema, **kw)
    m.train(train)
    b = random_batch(schema, 12)
    garbage = with_padding_garbage(b)
    assert not torch.equal(garbage.features["hist_item_id"], b.features["hist_item_id"])
    # two identical copies, one sees garbage at padding (in train mode Dice's statistics too)
    m1, m2 = copy.deepcopy(m), copy.deepcopy(m)
    a, c = m1(b), m2(garbage)
    for k in a:
        torch.testing.assert_close(c[k], a[k], msg=k)


def test_din_attention_weights_zero_at_padding_and_unnormalised(schema):
    m = small("din", schema).eval()
    b = random_batch(schema, 12)
    w = m(b)["attention.hist_item_id"]
    mask = b.masks["hist_item_id"]
    assert w.shape == (12, HIST_LEN) and (w[~mask] == 0).all()
    assert not torch.allclose(w[mask.any(1)].sum(1), torch.ones(int(mask.any(1).sum())))
    ms = small("din", schema, softmax=True).eval()
    ws = ms(b)["attention.hist_item_id"]
    torch.testing.assert_close(ws[mask.any(1)].sum(1), torch.ones(int(mask.any(1).sum())))


def test_din_groups_aligned_sequences_and_accepts_explicit_groups(schema):
    m = small("din", schema)
    assert m.groups == [("hist_item_id", "hist_category_id")]
    assert m.queries["hist_item_id"] == ("item_id", "category_id")
    sep = small("din", schema, attention_groups=(("hist_item_id",), ("hist_category_id",)))
    assert [n for n in sep.lens().layers if n.startswith("attention")] == [
        "attention.hist_item_id.0", "attention.hist_item_id.1", "attention.hist_category_id.0", "attention.hist_category_id.1",
    ]  # fmt: skip
    assert set(sep(random_batch(schema, 4))) >= {"attention.hist_item_id", "attention.hist_category_id"}
    none = small("din", schema, attention_groups=())
    assert not [n for n in none.lens().layers if n.startswith("attention")]
    with pytest.raises(InputError, match="'user_id' is not an embedded sequence field"):
        small("din", schema, attention_groups=(("user_id",),))


def test_dicm_encodes_each_unique_image_once(schema):
    m = small("dicm", schema)
    b = random_batch(schema, 12)
    calls = []
    m.images.encoder.register_forward_hook(lambda mod, a, o: calls.append(a[0].shape[0]))
    m(b)
    assert calls == [b.images.shape[0]]
    assert b.images.shape[0] < 12 * (1 + HIST_LEN)  # fewer images than references
    no_img = world_schema(images=False)
    with pytest.raises(InputError, match="dicm needs image fields"):
        rm.build("dicm", no_img)
    for agg in ("attentive", "sum"):
        mm = small("dicm", schema, aggregator=agg)
        assert mm(b)["ctr"].shape == (12,)
    assert [n for n in small("dicm", schema, aggregator="sum").lens().layers if "image" in n] == []


def test_pal_serving_ignores_position(schema):
    m = small("pal", schema).eval()
    b = random_batch(schema, 12)
    out = m(b)
    moved = b.with_features(position=(b.features["position"] % 6) + 1)
    out2 = m(moved)
    torch.testing.assert_close(out2["ctr"], out["ctr"])
    assert not torch.allclose(out2["seen"], out["seen"])
    torch.testing.assert_close(out["click"], out["seen"] * out["ctr"])
    serving = type(b)(features={k: v for k, v in b.features.items() if k != "position"}, masks=b.masks)
    served = m(serving)
    assert set(served) == {"ctr", "ctr_logit"}
    torch.testing.assert_close(served["ctr"], out["ctr"])
    want = F.binary_cross_entropy(out["seen"] * out["ctr"], b.labels["click"])
    torch.testing.assert_close(m.loss(out, b), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="needs the 'position' feature"):
        m.loss(served, b)
    # seen depends on position only
    same_pos = b.with_features(item_id=torch.full_like(b.features["item_id"], 3))
    torch.testing.assert_close(m(same_pos)["seen"], out["seen"])
    din = small("pal", schema, ctr_net="din")
    assert "attention.hist_item_id.0" in din.lens().layers
    with pytest.raises(InputError, match="pal needs a position field"):
        rm.build("pal", schema, exclude_fields=("position",))


def test_pal_trains_both_towers_jointly(schema):
    m = small("pal", schema)
    b = random_batch(schema, 16)
    m.loss(m(b), b).backward()
    assert m.seen_logit.weight.grad.abs().sum() > 0
    assert m.ctr_net.logit.weight.grad.abs().sum() > 0


def test_esmm_ctcvr_is_product_and_loss_has_no_cvr_term(schema):
    m = small("esmm", schema)
    b = random_batch(schema, 16)
    out = m(b)
    torch.testing.assert_close(out["ctcvr"], out["ctr"] * out["cvr"])
    click, conv = b.labels["click"], b.labels["conversion"]
    want = F.binary_cross_entropy(out["ctr"], click) + F.binary_cross_entropy(out["ctcvr"], click * conv)
    torch.testing.assert_close(m.loss(out, b), want, rtol=1e-5, atol=1e-6)
    heads = m.lens().heads
    assert (heads["cvr"].label, heads["cvr"].rows) == ("conversion", "clicked")
    assert (heads["ctcvr"].label, heads["ctcvr"].rows) == ("click*conversion", "all")
    y, rows = heads["cvr"].target(b)
    assert rows is not None and len(y) == int(click.sum())
    m.loss(out, b).backward()  # the CVR tower learns through CTCVR only
    assert m.logits["cvr"].weight.grad.abs().sum() > 0
    with pytest.raises(InputError, match="esmm needs the 'conversion' label"):
        rm.build("esmm", world_schema(conversion=False))


def test_xdeepfm_parts_sum_to_logit_and_ablation(schema):
    m = small("xdeepfm", schema)
    out = m(random_batch(schema, 8))
    torch.testing.assert_close(out["ctr_logit"], out["linear_logit"] + out["cin_logit"] + out["dnn_logit"])
    assert out["cin_maps.0"].shape == (8, 6, 8)
    dnn_only = small("xdeepfm", schema, use_linear=False, use_cin=False)
    assert list(dnn_only.lens().layers) == ["embedding", "mlp.0", "mlp.1", "logit.ctr"]
    mixed = Schema((SparseField("a", 5, 4), SparseField("b", 5, 6)))
    with pytest.raises(InputError, match=r"one embedding width for all fields \(CIN\); the schema's differ \[4, 6\]"):
        rm.build("xdeepfm", mixed, embedding_dim=None)
    assert rm.build("xdeepfm", mixed).dim == 8  # the default config sets one width


@pytest.mark.parametrize("name", rm.MODEL_NAMES)
def test_a_few_steps_reduce_the_loss(name, schema):
    m = small(name, schema)
    b = random_batch(schema, 32, seed=3)
    opt = torch.optim.Adam(m.parameters(), lr=0.03)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = m.loss(m(b), b)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_mini_batch_aware_regularisation_by_hand(schema):
    m = small("din", schema, mba_lambda=0.5)
    b = random_batch(schema, 8)
    item = m.embedding_tables()["item"]
    ids = torch.cat([b.features["item_id"], b.features["hist_item_id"][b.masks["hist_item_id"]]])
    uniq, cnt = torch.unique(ids, return_counts=True)
    reg = m.regularization(b)
    parts = {}
    for t, table in m.embedding_tables().items():
        fs = m.embed.fields_of_table(t)
        xs = torch.cat([b.features[f][b.masks[f]] if f in b.masks else b.features[f] for f in fs])
        u, c = torch.unique(xs, return_counts=True)
        parts[t] = (table.weight[u].pow(2).sum(1) / c).sum()
    torch.testing.assert_close(reg, 0.5 * sum(parts.values()))
    counts = torch.arange(1.0, item.num_embeddings + 1)
    m.set_feature_frequency("item", counts)
    parts["item"] = (item.weight[uniq].pow(2).sum(1) / counts[uniq]).sum()
    torch.testing.assert_close(m.regularization(b), 0.5 * sum(parts.values()))
    assert "mba_freq_item" not in m.state_dict()  # data statistics, not model state
    out = m(b)  # the penalty is part of loss()
    torch.testing.assert_close(m.loss(out, b) - m.regularization(b), F.binary_cross_entropy_with_logits(out["ctr_logit"], b.labels["click"]))
    assert float(small("din", schema).regularization(b)) == 0.0
    with pytest.raises(InputError, match="expected 32 counts"):
        m.set_feature_frequency("item", torch.ones(5))
    with pytest.raises(InputError, match="no embedding table 'nope'"):
        m.set_feature_frequency("nope", torch.ones(5))


def test_registry_presets_overrides_and_errors(schema):
    assert rm.MODEL_NAMES == ("base", "din", "dicm", "esmm", "pal", "xdeepfm")
    assert rm.config_class("din") is rm.DINConfig
    assert rm.make_config("base", "paper").embedding_dim == 8
    assert rm.make_config("esmm", "paper").embedding_dim == 18
    assert rm.make_config("esmm").tower == (360, 200, 80)
    assert rm.make_config("din", "paper").attention == (36,)
    assert rm.make_config("xdeepfm", "paper") == rm.XDeepFMConfig(embedding_dim=10, cin=(200, 200, 200), dnn=(400, 400))
    assert rm.make_config("din").softmax is False
    c = rm.make_config("dicm", mlp=[32, 16])
    assert c.mlp == (32, 16) and c.image_dim == 12
    with pytest.raises(InputError, match=r"unknown model 'dien'; reference models are \['base'"):
        rm.build("dien", schema)
    with pytest.raises(InputError, match=r"no config option\(s\) \['hiden'\]"):
        rm.build("base", schema, hiden=(3,))
    with pytest.raises(InputError, match="unknown config preset"):
        rm.build("base", schema, preset="large")
    with pytest.raises(InputError, match="exclude_fields names 'nope'"):
        rm.build("base", schema, exclude_fields=("nope",))


@pytest.mark.parametrize("name", rm.MODEL_NAMES)
def test_config_round_trips_through_json_and_state_dict(name, schema):
    m = small(name, schema)
    d = json.loads(json.dumps(m.config_dict()))
    again = rm.build(name, schema, **d)
    assert again.config == m.config
    again.load_state_dict(m.state_dict())  # same parameter names and shapes
    b = random_batch(schema, 6)
    m.eval(), again.eval()
    torch.testing.assert_close(again(b)["ctr"], m(b)["ctr"])
    assert dataclasses.is_dataclass(m.config) and m.name == name


def test_base_position_as_a_feature(schema):
    m = small("base", schema, use_position=True)
    assert "position" in m.lens().fields
    b = random_batch(schema, 8)
    assert not torch.allclose(m(b)["ctr"], m(b.with_features(position=torch.ones(8, dtype=torch.long)))["ctr"])
    assert "position" not in small("base", schema).lens().fields
