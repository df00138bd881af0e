"""ProbeSuite on a hand-made model: streamed features vs brute force, sampling, heads, results,
diagnostics and bad input."""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from probes_fixtures import TinyDIN, brute_features, make_batch, sampled_rows, tiny_view, train_tiny
from sklearn.metrics import roc_auc_score

from ctrlens.errors import InputError
from ctrlens.models.interface import HeadSpec, InterfaceError, Tap, attach
from ctrlens.probes import FINDING_COLUMNS, ProbeSuite, ProbeWarning
from ctrlens.probes.features import StreamConfig, resolve_layers, row_keys, stream
from ctrlens.results import COLUMNS, Result


@pytest.fixture(scope="module")
def trained():
    day = make_batch(4000, seed=1)
    return train_tiny(TinyDIN(), day, steps=150), day


def test_streamed_features_equal_brute_force(trained):
    m, day = trained
    v = tiny_view(m)
    layers = resolve_layers(v, v.head("ctr"), None)
    assert [pl.name for pl in layers] == ["embedding", "attention.hist.0", "mlp.0", "mlp.1", "logit.ctr"]
    cfg = StreamConfig(5, {"train": (900, lambda k, u: u >= 0.3), "holdout": (300, lambda k, u: u < 0.3)})
    got = stream(v, layers, v.head("ctr"), day.split(333), cfg, store_device=torch.device("cpu"))
    want = brute_features(m, day)
    tr, ho = sampled_rows(len(day), 5, 900, 0.3)
    ho = ho[:300]
    for part, rows in (("train", tr), ("holdout", ho)):
        s = got[part]
        assert len(s) == len(rows) and s.rows == len(day)
        for name, x in want.items():  # masked-mean pooling of the attention MLP included
            np.testing.assert_allclose(s.x[name].numpy(), x[rows], rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(s.y.numpy(), day.labels["click"].numpy()[rows])
        np.testing.assert_allclose(s.p.numpy(), m(day)["ctr"].detach().numpy()[rows], rtol=1e-5)
    assert m.training is False and not m.act0._forward_hooks  # eval mode kept, hooks removed


def test_sample_does_not_depend_on_batching_or_order(trained):
    m, day = trained
    a = ProbeSuite(tiny_view(m), max_rows=1500, seed=1).fit(day.split(97))
    perm = torch.randperm(len(day), generator=torch.Generator().manual_seed(0))
    b = ProbeSuite(tiny_view(m), max_rows=1500, seed=1).fit(day.select(perm).split(1000))
    c = ProbeSuite(tiny_view(m), max_rows=1500, seed=2).fit(day.split(1000))
    for layer in a.layers_:
        np.testing.assert_allclose(a.coef_[layer], b.coef_[layer], atol=1e-5)
    assert not np.allclose(a.coef_["mlp.0"], c.coef_["mlp.0"], atol=1e-5)  # another seed, another sample
    pd.testing.assert_frame_equal(a.score(), b.score(), atol=1e-6)


def test_pseudo_layers_for_an_attached_model_without_embedding_or_logit_layers(trained):
    m, day = trained
    v = attach(
        m,
        forward=lambda mod, b: mod(b),
        fields={"user": m.user, "item": (m.item, 0), "hist": Tap(m.item, 1, mask="hist"), "price": m.price},
        layers={"mlp.0": m.act0, "mlp.1": m.act1},
        heads={"ctr": HeadSpec("ctr", "ctr", "click", logit="ctr_logit")},
    )
    suite = ProbeSuite(v, max_rows=2000, seed=0).fit(day.split(500), day="d1")
    assert suite.layers_ == ["embedding", "mlp.0", "mlp.1", "logit.ctr"]
    assert suite.coef_["embedding"].shape == (4 + 4 + 4 + 2,)  # user, item, masked-mean hist, price
    s = suite.score()
    a = s.set_index("layer")["auc"]
    # a 1-d probe on the model's own logit ranks rows exactly as the model does
    assert a["logit.ctr"] == pytest.approx(s["model_auc"].iloc[0], abs=1e-12)
    with torch.no_grad():
        f = day.features
        emb = torch.cat([m.user(f["user"]), m.item(f["item"]),
                         (m.item(f["hist"]) * day.masks["hist"][..., None]).sum(1)
                         / day.masks["hist"].sum(1, keepdim=True).clamp_min(1), m.price(f["price"][:, None])], 1)
    tr, _ = sampled_rows(len(day), 0, 2000, 0.2)
    np.testing.assert_allclose(suite.mean_["embedding"], emb[tr].double().mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_scoring_the_training_day_leaves_training_rows_out(trained):
    m, day = trained
    suite = ProbeSuite(tiny_view(m), max_rows=1000, seed=0).fit(day.split(500), day="d1")
    same = suite.score(day.split(800), day="d1")
    assert same["n_eval"].iloc[0] == len(day) - suite.n_train_
    other = suite.score(day.split(800), day="another label")
    assert other["n_eval"].iloc[0] == len(day)
    # all rows of the pass went to training or holdout: the same-day score is the holdout score
    small = ProbeSuite(tiny_view(m), max_rows=10**6, holdout=0.25, seed=0).fit(day.split(500), day="d1")
    pd.testing.assert_frame_equal(small.score(day.split(800), day="d1"), small.score())


def test_conversion_head_on_clicked_rows(trained):
    m, day = trained
    suite = ProbeSuite(tiny_view(m), head="cvr", max_rows=10**6, holdout=0.3, seed=0).fit(day.split(700), day="d1")
    clicked = day.labels["click"].numpy() > 0.5
    assert suite.n_train_ + suite.n_holdout_ == clicked.sum()
    assert "logit.cvr" in suite.layers_  # the cvr head's own logit as reference
    s = suite.score(make_batch(3000, seed=9).split(1000), day="d2")
    b = make_batch(3000, seed=9)
    c = b.labels["click"].numpy() > 0.5
    want = roc_auc_score(b.labels["conversion"].numpy()[c], m(b)["cvr"].detach().numpy()[c])
    assert s["model_auc"].iloc[0] == pytest.approx(want, abs=1e-9) and (s["n_eval"] == c.sum()).all()
    # the ctr head's logit is another head's output: not on the cvr head's path
    assert suite.predecessors() == {"mlp.0": "embedding", "mlp.1": "mlp.0", "logit.cvr": "mlp.1"}


def test_depth_and_dead_layer_finding(trained):
    m, day = trained
    healthy = ProbeSuite(tiny_view(m), max_rows=3000, seed=0).fit(day.split(1000), day="d1")
    a = healthy.score().set_index("layer")["auc"]
    assert a["embedding"] < a["mlp.0"] < a["mlp.1"] + 0.005 and a["mlp.1"] > a["embedding"] + 0.01
    assert abs(a["mlp.1"] - a["logit.ctr"]) < 0.01
    assert healthy.predecessors() == {"mlp.0": "embedding", "mlp.1": "mlp.0", "logit.ctr": "mlp.1"}
    assert healthy.findings().empty

    dead = copy.deepcopy(m)
    with torch.no_grad():  # a collapsed layer: every ReLU of mlp.1 pushed below zero
        dead.fc1.weight.zero_()
        dead.fc1.bias.fill_(-1.0)
    s = ProbeSuite(tiny_view(dead), max_rows=3000, seed=0).fit(day.split(1000), day="d1")
    f = s.findings(tol=0.01)
    assert list(f.columns) == FINDING_COLUMNS
    assert f["layer"].tolist() == ["mlp.1"] and f["previous"].iloc[0] == "mlp.0"
    assert f["auc"].iloc[0] == pytest.approx(0.5) and f["drop"].iloc[0] > 0.2


def test_probe_auc_falls_as_the_world_drifts(trained):
    m, day = trained
    suite = ProbeSuite(tiny_view(m), layers=["mlp.*"], max_rows=3000, seed=0).fit(day.split(1000), day="d0")
    aucs = []
    for k, shift in enumerate([0.0, 0.5, 1.0]):
        s = suite.score(make_batch(3000, seed=20 + k, shift=shift).split(1000), day=f"d{k + 1}")
        aucs.append(s.set_index("layer").loc["mlp.1", "auc"])
    assert aucs[0] > aucs[1] + 0.03 > aucs[2] + 0.06


def test_to_result_contract_and_decay(trained):
    m, day = trained

    class Days:  # the DailyDataset surface the suite uses
        def __init__(self):
            self.data = {"2026-01-01": day, "2026-01-02": make_batch(2000, seed=4), "2026-01-03": make_batch(2000, seed=5, shift=0.8)}

        def days(self):
            return list(self.data)

        def iter_batches(self, d, batch_size=4096, **kw):
            return self.data[d].split(batch_size)

    ds = Days()
    suite = ProbeSuite(tiny_view(m), max_rows=2000, seed=0, batch_size=700).fit(ds, day="2026-01-01")
    frame = suite.decay(ds, ["2026-01-02", "2026-01-03"])
    suite.score(ds, day="2026-01-03")  # re-scored: to_result keeps the latest once
    r = suite.to_result(model_version="tiny@1", checkpoint="ckpt-1")
    assert isinstance(r, Result) and r.kind == "probe" and list(r.frame.columns) == list(COLUMNS["probe"])
    assert len(r) == 3 * len(suite.layers_) == len(frame)
    assert set(r.frame["eval_day"]) == {"2026-01-01", "2026-01-02", "2026-01-03"}
    assert (r.frame["train_day"] == "2026-01-01").all() and (r.frame["head"] == "ctr").all()
    assert r.meta["model_version"] == "tiny@1" and r.meta["dims"]["mlp.0"] == 16 and r.meta["C"] == 1.0
    back = Result.from_dict(r.to_dict())
    pd.testing.assert_frame_equal(back.frame, r.frame, check_dtype=False)
    only = suite.to_result(eval_days=["2026-01-02"])
    assert set(only.frame["eval_day"]) == {"2026-01-02"}
    with pytest.raises(InputError, match=r"day '2026-02-01' is not in the dataset; days: \['2026-01-01'"):
        suite.score(ds, day="2026-02-01")
    with pytest.raises(InputError, match="which day of the dataset"):
        ProbeSuite(tiny_view(m)).fit(ds)


def test_bad_layer_and_head_names_list_what_exists(trained):
    m, _ = trained
    with pytest.raises(InterfaceError, match=r"no layer matching 'mlp\.7'; layers: \['embedding', 'attention\.hist\.0', 'mlp\.0'"):
        ProbeSuite(tiny_view(m), layers=["mlp.0", "mlp.7"])
    with pytest.raises(InterfaceError, match=r"has no head 'ctcvr'; heads: \['ctr', 'cvr'\]"):
        ProbeSuite(tiny_view(m), head="ctcvr")
    assert ProbeSuite(tiny_view(m), layers="mlp.*")._layers[0].name == "mlp.0"
    with pytest.raises(InputError, match="holdout must be in"):
        ProbeSuite(tiny_view(m), holdout=1.0)
    with pytest.raises(InputError, match="not fitted yet"):
        ProbeSuite(tiny_view(m)).score()


def test_single_class_day(trained):
    m, day = trained
    no_clicks = make_batch(600, seed=3)
    no_clicks.labels["click"] = torch.zeros(600)
    no_clicks.labels["conversion"] = torch.zeros(600)
    with pytest.raises(InputError, match=r"day '2026-01-05', head 'ctr': all \d+ sampled training rows have click=0 "
                                         r"\(0 positives in 600 rows of the pass\); a probe needs both classes"):
        ProbeSuite(tiny_view(m)).fit(no_clicks, day="2026-01-05")
    with pytest.raises(InputError, match=r"head 'cvr': no rows to train on \(0 rows offered, clicked rows only\)"):
        ProbeSuite(tiny_view(m), head="cvr").fit(no_clicks)
    suite = ProbeSuite(tiny_view(m), max_rows=1000).fit(day.split(1000), day="d1")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = suite.score(no_clicks, day="2026-01-05")
    assert s["auc"].isna().all() and s["model_auc"].isna().all() and s["gap"].isna().all()
    assert np.isfinite(s["logloss"]).all() and (s["n_eval"] == 600).all()
    assert any(issubclass(x.category, ProbeWarning) and "all 600 evaluation rows of 2026-01-05 have click=0" in str(x.message) for x in w)


def test_features_are_copied_before_in_place_ops_of_the_model():
    class InPlace(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(62, 3)
            self.fc = torch.nn.Linear(3, 4)
            self.out = torch.nn.Linear(4, 1)

        def forward(self, b):
            h = self.fc(self.emb(b.features["user"]))
            torch.relu_(h)  # mutates the tapped output after the hook ran
            return {"ctr": torch.sigmoid(self.out(h).squeeze(-1))}

    m = InPlace()
    v = attach(m, forward=lambda mod, b: mod(b), fields={"user": m.emb}, layers={"fc": m.fc})
    b = make_batch(500, seed=0)
    layers = resolve_layers(v, v.head("ctr"), ["fc"])
    s = stream(v, layers, v.head("ctr"), [b], StreamConfig(0, {"all": (10**6, lambda k, u: u >= 0)}),
               store_device=torch.device("cpu"))["all"]
    with torch.no_grad():
        pre = m.fc(m.emb(b.features["user"]))
    order = np.argsort(row_keys(np.arange(500), 0)[0])  # kept rows come sorted by key
    np.testing.assert_allclose(s.x["fc"].numpy(), pre.numpy()[order], rtol=1e-6)
    assert (s.x["fc"] < 0).any()  # pre-activation values survived the in-place ReLU


@pytest.mark.parametrize("k", [1, 7, 50, 1000])
def test_bottom_k_equals_sorting_everything(k):
    from ctrlens.probes.features import BottomK

    g = torch.Generator().manual_seed(k)
    keys = torch.rand(600, generator=g, dtype=torch.float64)
    vals = torch.randn(600, 3, generator=g)
    bk = BottomK(k)
    for s in range(0, 600, 37):
        bk.add(keys[s : s + 37], {"v": vals[s : s + 37], "i": torch.arange(s, min(s + 37, 600))})
    got_keys, got = bk.result()
    want = torch.argsort(keys)[:k]
    assert torch.equal(got["i"], want) and torch.equal(got_keys, keys[want]) and torch.equal(got["v"], vals[want])
