import pandas as pd
import pytest
import torch
from torch import nn

import ctrlens
from ctrlens.data.batch import Batch
from ctrlens.models.interface import HeadSpec, InterfaceError, Tap, as_view, attach
from ctrlens.models.taps import TapError, TapSession
from ctrlens.results import COLUMNS, Result


def make_batch(n=6, L=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(2, 10, (n, L), generator=g)
    mask = torch.arange(L)[None, :] < torch.randint(1, L + 1, (n, 1), generator=g)
    seq = seq * mask
    return Batch(
        features={"u": torch.randint(2, 10, (n,), generator=g), "i": torch.randint(2, 10, (n,), generator=g), "h": seq},
        masks={"h": mask},
        labels={"click": torch.tensor([1.0, 0, 1, 0, 0, 1])[:n], "conversion": torch.tensor([1.0, 0, 0, 0, 0, 1])[:n]},
        images=torch.rand(3, 3, 2, 2),
        image_index={"img": torch.randint(0, 3, (n,), generator=g)},
        user=torch.arange(n),
        row=torch.arange(n),
    )


class Shared(nn.Module):
    """A user-style model: one table used by two fields, one ReLU object reused."""

    def __init__(self):
        super().__init__()
        self.user = nn.Embedding(10, 4)
        self.item = nn.Embedding(10, 4)  # candidate and history share it
        self.fc1, self.fc2, self.out = nn.Linear(12, 8), nn.Linear(8, 8), nn.Linear(8, 1)
        self.relu = nn.ReLU()

    def forward(self, f, mask):
        hist = (self.item(f["i"]), self.item(f["h"]))
        pooled = (hist[1] * mask[..., None]).sum(1)
        x = torch.cat([self.user(f["u"]), hist[0], pooled], -1)
        return torch.sigmoid(self.out(self.relu(self.fc2(self.relu(self.fc1(x)))))).squeeze(-1)


def view_of(m, **kw):
    return attach(
        m,
        forward=lambda mod, b: {"ctr": mod(b.features, b.masks["h"])},
        fields={"u": m.user, "i": (m.item, 0), "h": Tap(m.item, 1, mask="h")},
        **kw,
    )


def test_batch_select_split_concat_roundtrip():
    b = make_batch()
    parts = list(b.split(4))
    assert [len(p) for p in parts] == [4, 2]
    c = Batch.concat(parts)
    for k in b.features:
        assert torch.equal(c.features[k], b.features[k])
    # images are concatenated, indices re-based: every row still points at the same pixels
    for k in b.image_index:
        assert torch.equal(c.images[c.image_index[k]], b.images[b.image_index[k]])
    assert torch.equal(c.labels["click"], b.labels["click"])


def test_taps_per_call_and_masks():
    m = Shared()
    v = view_of(m, layers={"mlp.0": (m.relu, 0), "mlp.1": (m.relu, 1)})
    seen = {}

    def cb(ev):
        seen[ev.name] = (ev.output.shape, None if ev.mask is None else ev.mask.shape)

    b = make_batch()
    with TapSession(v, {**v.fields, **v.layers}, cb) as s:
        out = s.forward(b)
    assert out["ctr"].shape == (6,)
    assert seen["i"] == ((6, 4), None) and seen["h"] == ((6, 4, 4), (6, 4))
    assert seen["mlp.0"][0] == (6, 8) and v.layers["mlp.0"].activation == "relu"


def test_reused_module_without_call_index_is_refused():
    m = Shared()
    v = view_of(m, layers={"act": m.relu})
    with TapSession(v, v.layers, lambda ev: None) as s:
        with pytest.raises(TapError, match=r"tap 'act': module ReLU was called 2 times in one forward"):
            s.forward(make_batch())


def test_tap_that_never_fires_is_reported():
    m = Shared()
    v = view_of(m, layers={"ghost": nn.Linear(2, 2)})
    with TapSession(v, v.layers, lambda ev: None) as s:
        with pytest.raises(TapError, match="is the module on the forward path"):
            s.forward(make_batch())


def test_replacing_a_field_output_changes_prediction_and_hooks_are_removed():
    m = Shared()
    v = view_of(m)
    b = make_batch()
    base = v(b)["ctr"]
    with TapSession(v, {"u": v.fields["u"]}, lambda ev: torch.zeros_like(ev.output)) as s:
        zeroed = s.forward(b)["ctr"]
    expected = torch.sigmoid(
        m.out(m.relu(m.fc2(m.relu(m.fc1(torch.cat([torch.zeros(6, 4), m.item(b.features["i"]),
                                                   (m.item(b.features["h"]) * b.masks["h"][..., None]).sum(1)], -1))))))
    ).squeeze(-1)
    torch.testing.assert_close(zeroed, expected)
    assert torch.equal(v(b)["ctr"], base)  # hooks gone after the block
    assert not m.user._forward_hooks


def test_as_view_explains_how_to_attach():
    with pytest.raises(InterfaceError, match=r"ctrlens.attach\(model, forward=\.\.\."):
        as_view(nn.Linear(2, 2))
    v = view_of(Shared())
    assert as_view(v) is v
    with pytest.raises(InterfaceError, match=r"has no layer matching 'mlp\.\*'"):
        v.select_layers("mlp.*")


def test_head_targets():
    b = make_batch()
    y, m = HeadSpec("cvr", "cvr", "conversion", rows="clicked").target(b)
    assert m.tolist() == [True, False, True, False, False, True] and y.tolist() == [1.0, 0.0, 1.0]
    y, m = HeadSpec("ctcvr", "ctcvr", "click*conversion").target(b)
    assert m is None and y.tolist() == [1.0, 0, 0, 0, 0, 1]


def test_result_contract():
    cols = COLUMNS["probe"]
    row = {c: 0 for c in cols}
    r = Result("probe", pd.DataFrame([row]), {"seed": 1})
    assert list(r.to_frame().columns) == list(cols)
    assert Result.from_dict(r.to_dict()).to_frame().equals(r.to_frame())
    with pytest.raises(ValueError, match="missing columns"):
        Result("probe", pd.DataFrame([{"layer": "x"}]))
    with pytest.raises(ValueError, match="unknown result kind"):
        Result("nope", pd.DataFrame())
    assert ctrlens.attach is attach
