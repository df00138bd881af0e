"""SaliencyReport: aggregates vs numpy, compare, stuck fields, JSON/HTML, explanations, bad input, CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ctrlens.errors import InputError
from ctrlens.models.interface import InterfaceError
from ctrlens.results import COLUMNS, Result
from ctrlens.saliency import InputXGradient, SaliencyReport, explain, mean_embeddings, report

from saliency_fixtures import UserModel, attach_user_model, random_batch, train


@pytest.fixture(scope="module")
def trained():
    """A user-style model trained on planted labels (clicks depend mostly on the item)."""
    m = UserModel(seed=0)
    view = attach_user_model(m)
    train(m, view, [random_batch(512, seed=s) for s in range(4)], steps=120, lr=0.01)
    return m, view


@pytest.fixture(scope="module")
def day():
    return [random_batch(300, seed=100 + s) for s in range(2)]


def test_aggregates_match_numpy(trained, day):
    """The default report (input x gradient against the analysed rows' mean embedding) = the
    per-row scores computed here with the method class and an explicit baseline."""
    _, view = trained
    rep = report(view, day, day="2026-01-05", batch_size=256)
    f = rep.to_frame()
    assert list(f.columns) == list(COLUMNS["saliency"])
    per = {k: [] for k in view.fields}
    mean = mean_embeddings(view, day)
    for b in day:
        for k, s in InputXGradient(view).attribute(b, "ctr", baselines=mean).field_scores().items():
            per[k].append(s.numpy())
    total = sum(np.concatenate(v).mean() for v in per.values())
    for k, v in per.items():
        v = np.concatenate(v)
        row = f[f["field"] == k].iloc[0]
        assert row["rows"] == 600
        assert row["mean"] == pytest.approx(v.mean(), rel=1e-6)
        assert row["std"] == pytest.approx(v.std(), rel=1e-5)
        assert row["p50"] == pytest.approx(np.percentile(v, 50), rel=1e-6)
        assert row["p90"] == pytest.approx(np.percentile(v, 90), rel=1e-6)
        assert row["share"] == pytest.approx(v.mean() / total, rel=1e-6)
        assert np.isnan(row["delta"])
    assert f["share"].is_monotonic_decreasing
    assert rep.meta["rows"] == 600 and rep.meta["day"] == "2026-01-05" and rep.meta["model"] == "user_model"
    # per-row scores do not depend on how rows are batched; max_rows caps the sample
    other = report(view, day, batch_size=77).to_frame().set_index("field")["mean"]
    assert other.sort_index().tolist() == pytest.approx(f.set_index("field")["mean"].sort_index().tolist(), rel=1e-5)
    assert report(view, day, max_rows=250, batch_size=100).meta["rows"] == 250
    # the planted signal: the candidate item dominates, price carries nothing
    top = rep.top(2)
    assert "item_id" in set(top["field"]) and rep.shares()["item_id"] > rep.shares()["price"]


def test_top_compare_and_result(trained, day):
    _, view = trained
    a = report(view, day, day="d1", method="input_x_gradient")
    # day 2: the price field is scaled up 5x -> its share must grow, and compare() says so
    day2 = [b.with_features(price=b.features["price"] * 5) for b in day]
    b = report(view, day2, day="d2", method="input_x_gradient")
    cmp = a.compare(b)
    assert list(cmp.columns) == ["head", "field", "share_a", "share_b", "delta", "ratio"]
    assert cmp.iloc[0]["field"] == "price" and cmp.iloc[0]["delta"] > 0
    assert cmp["delta"].abs().is_monotonic_decreasing
    r = cmp.set_index("field")
    np.testing.assert_allclose(r["delta"], r["share_b"] - r["share_a"])
    np.testing.assert_allclose(r["ratio"], r["share_b"] / r["share_a"])
    assert cmp.attrs["a"].endswith("d1 / input_x_gradient")
    assert a.top(3)["share"].is_monotonic_decreasing and len(a.top(3)) == 3
    res = a.to_result()
    assert isinstance(res, Result) and res.kind == "saliency" and len(res) == len(view.fields)


def test_stuck_field_share_collapses(trained, day):
    """A field stuck at one value for all rows carries no information: with the day's mean as baseline
    (input_x_gradient, integrated_gradients) its share falls to ~0; a normal day keeps it large."""
    _, view = trained
    stuck = [b.with_features(item_id=torch.full_like(b.features["item_id"], 7)) for b in day]
    for method in ("input_x_gradient", "integrated_gradients"):
        kw = dict(method=method, baseline="mean", n_steps=8)
        normal, broken = report(view, day, **kw), report(view, stuck, **kw)
        assert normal.shares()["item_id"] > 0.15
        assert broken.shares()["item_id"] < 0.01
        cmp = normal.compare(broken)
        assert cmp.iloc[0]["field"] == "item_id" and cmp.iloc[0]["ratio"] < 0.05


def test_integrated_gradients_report_has_delta_and_reference_baseline(trained, day):
    _, view = trained
    ref = mean_embeddings(view, day[:1])
    rep = report(view, day, method="integrated_gradients", baseline=ref, n_steps=16)
    f = rep.to_frame()
    assert f["delta"].notna().all() and f["delta"].nunique() == 1
    ig = rep.meta["ig"]["ctr"]
    assert ig["mean_abs_delta"] == pytest.approx(f["delta"].iloc[0])
    assert ig["relative_delta"] < 0.1
    assert rep.meta["baseline"].startswith("given") and rep.meta["n_steps"] == 16
    with pytest.raises(InputError, match=r"lacks field\(s\) \['price'\]"):
        report(view, day, method="integrated_gradients", baseline={k: v for k, v in ref.items() if k != "price"})
    with pytest.raises(InputError, match="unknown field"):
        report(view, day, method="input_x_gradient", baseline={**ref, "nope": torch.zeros(8)})
    with pytest.raises(InputError, match="does not broadcast"):
        report(view, day, method="input_x_gradient", baseline={**ref, "price": torch.zeros(3)})


def test_json_roundtrip_and_figure(trained, day, tmp_path):
    _, view = trained
    rep = report(view, day, day="d1")
    ref = report(view, day[:1], day="d0")
    p = tmp_path / "r.json"
    text = rep.to_json(p, reference=ref)
    d = json.loads(p.read_text())
    assert d["kind"] == "saliency_report" and text == p.read_text()
    assert {c["field"] for c in d["reference"]["changes"]} == set(view.fields)
    back = SaliencyReport.from_json(p)
    pd.testing.assert_frame_equal(back.to_frame(), rep.to_frame())
    assert back.meta["positions"]["ctr"]["hist_item_id"] == rep.meta["positions"]["ctr"]["hist_item_id"]
    fig = rep.figure()
    (bar,) = fig.data
    assert list(bar.x) == list(rep.to_frame()["field"]) and bar.error_y.array is not None


def test_html_is_standalone(trained, day, tmp_path):
    _, view = trained
    rep = report(view, day, day="2026-01-09")
    ref = report(view, day[:1], day="2026-01-08")
    p = rep.to_html(tmp_path / "out" / "r.html", reference=ref)
    page = p.read_text()
    assert "<script src=" not in page.replace("<script src=\"data:", "")  # plotly JS is inline: opens offline
    assert "plotly.js" in page.lower() or "Plotly" in page
    for want in ("user_model", "2026-01-09", "saliency", "ctr", "hist_item_id", "Change of share", "2026-01-08"):
        assert want in page
    assert len(re.findall(r"<table", page)) >= 3


def test_explain_one_row(trained):
    m, view = trained
    b = random_batch(20, seed=9, min_len=2)
    e = explain(view, b, row=4, method="integrated_gradients", n_steps=64)
    assert e.row == 4 and e.head == "ctr" and e.target == "logit"
    assert e.candidate == {"field": "item_id", "index": int(b.features["item_id"][4]), "raw_id": int(b.features["item_id"][4]) - 2}
    assert e.fields["score"].is_monotonic_decreasing and e.fields["share"].sum() == pytest.approx(1.0)
    # completeness: signed contributions add up to value - baseline_value (within captum's delta)
    assert e.fields["contribution"].sum() == pytest.approx(e.value - e.baseline_value, abs=abs(e.delta) + 1e-4)
    h = e.history["hist_item_id"]
    n_valid = int(b.masks["hist_item_id"][4].sum())
    assert list(h["position"]) == list(range(n_valid))
    assert list(h["index"]) == b.features["hist_item_id"][4, :n_valid].tolist()
    with torch.no_grad():
        _, att = m(b.features, b.masks["hist_item_id"])
    np.testing.assert_allclose(h["attention"], att[4, :n_valid].numpy(), rtol=1e-5)
    assert e.looked_at(k=1)["score"].iloc[0] == h["score"].max()
    with torch.no_grad():
        p = torch.sigmoid(m(b.features, b.masks["hist_item_id"])[0][4])
    assert e.probability == pytest.approx(float(p), rel=1e-5)
    assert "candidate item_id" in str(e) and "looked at" in str(e)
    json.dumps(e.to_dict(), default=str)
    with pytest.raises(InputError, match="row 99 is not in"):
        explain(view, b, row=99)


# -- bad input -------------------------------------------------------------------------------------
def test_bad_input_messages(trained, day):
    _, view = trained
    with pytest.raises(InterfaceError, match=r"no field 'nope'; fields: \['category_id', 'hist_category_id'"):
        report(view, day, fields=["item_id", "nope"])
    with pytest.raises(InterfaceError, match=r"no head 'cvr'; heads: \['ctr'\]"):
        report(view, day, head="cvr")
    with pytest.raises(InputError, match="unknown saliency method 'shap'; methods: \\['saliency', 'input_x_gradient', 'integrated_gradients'\\]"):
        report(view, day, method="shap")
    with pytest.raises(InputError, match="method 'saliency' takes no baseline"):
        report(view, day, method="saliency", baseline="mean")
    with pytest.raises(InputError, match="unknown baseline 'median'"):
        report(view, day, method="integrated_gradients", baseline="median")
    with pytest.raises(InputError, match="target must be one of"):
        report(view, day, target="odds")
    with pytest.raises(InputError, match="day '2026-02-01' has no rows"):
        report(view, [], day="2026-02-01")
    with pytest.raises(InputError, match="item #0 is a dict, expected a ctrlens Batch"):
        report(view, [{"user_id": 1}])


def test_a_day_with_no_rows_in_a_dataset(trained):
    _, view = trained

    class Empty:
        root = "/data/world"

        def days(self):
            return ["2026-01-01", "2026-01-02"]

        def iter_batches(self, day, batch_size=4096, **kw):
            return iter(())

    with pytest.raises(InputError, match="day '2026-01-02' of /data/world has no rows"):
        report(view, Empty())
    with pytest.raises(InputError, match=r"day '2026-03-01' is not in /data/world; days: 2026-01-01 .. 2026-01-02"):
        report(view, Empty(), day="2026-03-01")


def test_model_without_the_interface_says_how_to_attach(day):
    with pytest.raises(InterfaceError) as e:
        report(nn.Linear(3, 1), day)
    msg = str(e.value)
    assert "Linear does not expose the ctrlens interface" in msg
    assert "ctrlens.attach(model, forward=..., fields={...}" in msg and "docs/own-model.md" in msg


def test_a_field_tap_that_is_not_per_row_is_refused():
    """An image encoder runs on the batch's unique images [U, ...]; the field is the gathered [B, D]."""
    import ctrlens
    from ctrlens.data.batch import Batch

    class Img(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Linear(4, 3)

        def forward(self, b: Batch):
            z = self.enc(b.images)[b.image_index["img"]]
            return {"ctr": torch.sigmoid(z.sum(1))}

    m = Img()
    view = ctrlens.attach(m, forward=lambda mm, b: mm(b), fields={"img": m.enc})
    b = Batch(features={"x": torch.zeros(5)}, images=torch.rand(2, 4), image_index={"img": torch.tensor([0, 1, 1, 0, 1])})
    with pytest.raises(InterfaceError, match=r"field 'img': tapped output has shape \[2, 3\], expected \[5, ...\]"):
        report(view, b)


def test_cli_rejects_bad_out_suffix(tmp_path, capsys):
    from ctrlens.cli import main

    with pytest.raises(SystemExit) as e:
        main(["saliency", "--checkpoint", str(tmp_path / "c.pt"), "--data", str(tmp_path), "--out", str(tmp_path / "r.txt")])
    assert e.value.code == 2
    assert "expected a .html or .json file name" in capsys.readouterr().err


def test_result_round_trips_through_the_store(trained, day, tmp_path):
    """The report's Result("saliency") is what the SQL store persists (SQLite here)."""
    _, view = trained
    from ctrlens.store import Store

    rep = report(view, day, day="2026-01-05", method="integrated_gradients", n_steps=4)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", create=True)
    version = store.register_model("user_model", "abc123", "schemahash")
    store.write_day(version, "2026-01-05", "saliency", [rep.to_result()])
    back = store.read(version, "2026-01-05", "saliency")
    pd.testing.assert_frame_equal(back.to_frame(), rep.to_frame(), check_dtype=False)
    assert back.meta["method"] == "integrated_gradients" and back.meta["positions"] == rep.meta["positions"]
