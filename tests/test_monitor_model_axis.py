"""The model axis apart from the data axis: a checkpoint retrained every day is no incident; a bad
checkpoint is a model finding (from the checkpoint change report: the old and the new checkpoint on the
same rows), never a data finding. Shared daily-retrained clean world: tests/retrain_fixtures.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from retrain_fixtures import RECIPE, RetrainWorld, day, outcome, paging, retrain_world  # noqa: F401

pytestmark = pytest.mark.slow

#: findings about the input data: none of them may page because only the checkpoint changed
DATA_FINDINGS = {"broken_feature", "oov_surge", "distribution_shift", "new_items", "image_pipeline_broken",
                 "calibration_drift", "position_bias_change"}  # fmt: skip


def test_daily_retrained_clean_run_pages_nothing(retrain_world: RetrainWorld) -> None:
    outs = retrain_world.summary["outcomes"]
    assert [o["day"] for o in outs] == [day(i) for i in range(4, 12)]
    versions = [o["version_id"] for o in outs]
    assert len(set(versions)) == len(versions)  # a new checkpoint every day
    for o in outs:
        assert o["status"] == "ok", o["error"]
        assert not paging(o), f"daily retrained clean day {o['day']} paged: {paging(o)}"
    # from the second day on, every day carries the checkpoint change report (recorded, not paged)
    for o in outs[1:]:
        rep = [f for f in o["findings"] if f["finding"] == "checkpoint_change"]
        assert rep and rep[0]["severity"] == "info", o["findings"]


def test_backtest_reproduces_the_nightly_numbers_of_the_serving_checkpoint(retrain_world: RetrainWorld) -> None:
    """The back-test of a checkpoint on a day it served is that day's nightly result: same seeded rows,
    whatever the store holds."""
    from ctrlens.data import DailyDataset
    from ctrlens.models.checkpoint import load_checkpoint
    from ctrlens.models.interface import as_view
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import backtest
    from ctrlens.store import Store

    cfg = load_config(retrain_world.config(retrain_world.root / "bt-check"))
    ds = DailyDataset(retrain_world.data)
    view = as_view(load_checkpoint(retrain_world.checkpoint_for(8), ds.schema))
    out, edges = backtest(view, ds, cfg.models[0], [day(8)], cfg, neuron_edges=None)
    assert edges  # the first back-test day's histogram ranges, for the others and today
    q = out[day(8)].results["quality"].frame.set_index("head")
    with Store(f"sqlite:///{retrain_world.db}") as s:
        stored = s.series("quality", ["auc", "calibration"], model="pal", days=day(8), run_kind="nightly").set_index("head")
        imp = s.series("saliency", ["mean"], model="pal", days=day(8), run_kind="nightly")
    for h in stored.index:
        assert q.loc[h, "auc"] == pytest.approx(stored.loc[h, "auc"], abs=1e-9)
        assert q.loc[h, "calibration"] == pytest.approx(stored.loc[h, "calibration"], rel=1e-6)
    sal = out[day(8)].results["saliency"].frame
    mine = sal[sal["method"] == "permutation"].set_index(["head", "field"])["mean"]
    theirs = imp[imp["method"] == "permutation"].set_index(["head", "field"])["mean"]
    assert np.allclose(mine.sort_index().to_numpy(), theirs.sort_index().to_numpy(), atol=1e-9)


def _deploy(rw: RetrainWorld, folder: Path, ck: Path) -> dict:
    """Serve day 10 with checkpoint ``ck`` instead of the daily one (days 4-9 as in the clean run)."""
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob

    cfg = load_config(rw.config(folder, db=rw.snapshot, checkpoint=ck))
    res = NightlyJob(cfg).run(day=day(10))
    o = res.outcomes[0]
    assert o.status == "ok", o.error
    return o.to_dict()


def _no_data_findings(o: dict) -> None:
    bad = [(f["finding"], f["subject"]) for f in paging(o) if f["finding"] in DATA_FINDINGS]
    assert not bad, f"a new checkpoint on clean data paged data findings: {bad}"


def test_normal_new_checkpoint_on_a_fixed_config_pages_nothing(retrain_world: RetrainWorld, tmp_path: Path) -> None:
    o = _deploy(retrain_world, tmp_path, retrain_world.checkpoint_for(10))
    assert not paging(o), paging(o)
    rep = next(f for f in o["findings"] if f["finding"] == "checkpoint_change")
    assert "logit correlation" in rep["title"]


def test_learning_rate_far_too_high_is_a_model_finding(retrain_world: RetrainWorld, tmp_path: Path) -> None:
    from ctrlens.train import train

    r = train("pal", retrain_world.data, day(9), out_dir=tmp_path / "t", init_from=retrain_world.checkpoint_for(9),
              **{**RECIPE, "lr": 0.3})  # fmt: skip
    o = _deploy(retrain_world, tmp_path / "job", Path(r.final_info.path))
    top = paging(o)
    assert top and top[0]["finding"] in {"exploding_activations", "dead_neurons", "model_regression"}, top
    assert top[0]["severity"] == "critical"
    found = {f["finding"] for f in top}
    assert "model_regression" in found  # it ranks the same rows worse than its predecessor
    _no_data_findings(o)


def test_overtrained_checkpoint_is_overfitting(retrain_world: RetrainWorld, tmp_path: Path) -> None:
    from ctrlens.train import train

    r = train("pal", retrain_world.data, day(9), out_dir=tmp_path / "t", init_from=retrain_world.checkpoint_for(9),
              **{**RECIPE, "epochs": 25, "limit": 1500, "lr": 1e-2})  # fmt: skip
    o = _deploy(retrain_world, tmp_path / "job", Path(r.final_info.path))
    top = paging(o)
    assert top and top[0]["finding"] == "overfitting" and top[0]["severity"] == "critical", top
    assert day(9) in top[0]["title"] and "previous checkpoint" in top[0]["title"]
    _no_data_findings(o)


def _corrupt(src: Path, dst: Path, table: str, frac: float) -> Path:
    from ctrlens.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
    from ctrlens.models.interface import as_view

    model = load_checkpoint(src)
    ck = read_checkpoint(src)
    w = as_view(model).tables[table].weight
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(w.shape[0], generator=g)[: int(frac * w.shape[0])]
    with torch.no_grad():
        w[idx] = torch.randn(len(idx), w.shape[1], generator=g) * 0.01  # re-initialised rows
    return Path(save_checkpoint(dst, model, step=ck["step"] + 1, days_seen=ck["days_seen"]).path)


def test_corrupted_embedding_rows(retrain_world: RetrainWorld, tmp_path: Path) -> None:
    ck = _corrupt(retrain_world.checkpoint_for(10), tmp_path / "c" / "ckpt-step000099999.pt", "item", 0.2)
    o = _deploy(retrain_world, tmp_path / "job", ck)
    top = paging(o)
    assert top and (top[0]["finding"], top[0]["subject"]) == ("embedding_corruption", "item"), top
    assert not [f for f in top if f["finding"] == "embedding_corruption" and f["subject"] != "item"], top
    _no_data_findings(o)


# ------------------------------------------------------------------------------- pure parts


def test_embedding_change_against_brute_force() -> None:
    from ctrlens.monitor.compute import bulk_unchanged, embedding_change

    class V:
        def __init__(self, w: torch.Tensor):
            self.tables = {"t": torch.nn.Embedding.from_pretrained(w.clone())}

    g = torch.Generator().manual_seed(1)
    old = torch.randn(200, 8, generator=g)
    new = old + 0.05 * torch.randn(200, 8, generator=g)
    new[:30] = 0.01 * torch.randn(30, 8, generator=g)  # 30 rows re-initialised
    seen = {"t": np.arange(0, 200, 2)}  # 100 rows looked up, 15 of them re-initialised
    f = embedding_change(V(old), V(new), seen).iloc[0]
    a, b = old[::2].double(), new[::2].double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    ratio = b.norm(dim=1) / a.norm(dim=1)
    assert f["rows"] == 100 and f["reinit_rows"] == int(((cos < 0.3) | (ratio < 1 / 3)).sum()) == 15
    assert f["reinit_frac"] == pytest.approx(0.15)
    assert f["norm_ratio"] == pytest.approx(float(ratio.median()))
    assert bulk_unchanged(f["cos_median"], f["norm_ratio"])
    moved = embedding_change(V(old), V(3.0 * torch.randn(200, 8, generator=g)), seen).iloc[0]
    assert not bulk_unchanged(moved["cos_median"], moved["norm_ratio"])  # a whole run moving is no partial overwrite


def test_both_axes_alert_only_when_both_references_agree() -> None:
    from ctrlens.monitor.config import Thresholds
    from ctrlens.monitor.drift import DriftSuite, History, both_axes

    def suite(rows: list[tuple]) -> DriftSuite:
        s = DriftSuite(Thresholds(), History())
        for sk, subj, st, alert, sev in rows:
            s.rows.append({"subject_kind": sk, "subject": subj, "statistic": st, "method": "m", "value": 1.0,
                           "reference": 0.0, "threshold": 0.5, "direction": "above", "alert": alert, "severity": sev})  # fmt: skip
        return s

    served = suite([("importance", "ctr/user_id", "importance", True, 3.0), ("quality", "ctr", "auc", False, 0.0),
                    ("field", "price", "psi", True, 2.0), ("importance", "ctr/price", "importance", True, 1.5)])  # fmt: skip
    bt = suite([("importance", "ctr/user_id", "importance", False, 0.0), ("quality", "ctr", "auc", True, 2.0),
                ("field", "price", "psi", True, 2.0), ("importance", "ctr/price", "importance", True, 4.0)])  # fmt: skip
    rows = {(r["subject"], r["statistic"]): r for r in both_axes(served, bt).rows}
    assert not rows[("ctr/user_id", "importance")]["alert"]  # only the served reference: the checkpoint changed
    assert not rows[("ctr", "auc")]["alert"]  # only the back-test: in-sample reference days
    assert rows[("price", "psi")]["alert"]  # input statistics are checkpoint-free
    both = rows[("ctr/price", "importance")]
    assert both["alert"] and both["severity"] == 1.5 and "served reference" in both["method"]


def test_uncalibrated_overfitting_check_is_recorded_not_paged() -> None:
    """A first checkpoint (no predecessor to calibrate against) with a big train-vs-test gap -- the demo
    recipe memorising user ids -- is info; with a predecessor, the excess over its gap pages."""
    from ctrlens.monitor.diagnosis import Context, diagnose

    gap = {"subject_kind": "checkpoint", "subject": "ctr", "statistic": "train_test_auc_gap", "method": "fixed", "value": 0.3,
           "reference": math.nan, "threshold": 0.1, "direction": "above", "alert": True, "severity": 3.0}  # fmt: skip
    ctx = Context(model="din", day="2026-01-08", heads={"ctr": "click"},
                  extra={"checkpoint_check": {"train_day": "2026-01-07", "auc": {"ctr": {"train": 0.9, "today": 0.6}}}})  # fmt: skip
    f = diagnose(pd.DataFrame([gap]), ctx).frame
    assert list(f["finding"]) == ["overfitting"] and f.iloc[0]["severity"] == "info"
    excess = {**gap, "subject_kind": "checkpoint_change", "statistic": "excess_train_test_gap", "value": 0.25, "threshold": 0.05}
    ctx2 = Context(model="din", day="2026-01-08", heads={"ctr": "click"},
                   extra={"checkpoint_change": {"rows": 100, "heads": {}, "overfit": {"ctr": {"new_gap": 0.3, "old_gap": 0.05}}}})  # fmt: skip
    g = diagnose(pd.DataFrame([gap, excess]), ctx2).frame
    top = g.iloc[0]
    assert (top["finding"], top["severity"]) == ("overfitting", "critical") and "0.05" in top["title"]


def test_a_diverged_run_outranks_the_tables_it_collapsed() -> None:
    """A learning rate far too high blows up a layer *and* collapses embedding tables: the layer (the
    training run) comes first. A partial overwrite (the rest of the table as before) stays first."""
    from ctrlens.monitor.diagnosis import Context, diagnose

    def ch(subject: str, statistic: str, value: float, threshold: float, sev: float) -> dict:
        return {"subject_kind": "checkpoint_change", "subject": subject, "statistic": statistic, "method": "fixed",
                "value": value, "reference": 0.0, "threshold": threshold, "direction": "above", "alert": True, "severity": sev}  # fmt: skip

    boom = ch("mlp.0", "log_mean_abs_ratio", math.log(40.0), math.log(4.0), 2.0)
    rank = {**ch("shop", "log_rank_ratio", -1.5, -0.5, 6.0), "direction": "below"}
    reinit = ch("item", "reinit_frac", 0.2, 0.05, 4.0)
    info = {"rows": 500, "heads": {}, "layers": {"mlp.0": {"activation": "PReLU", "mean_abs_old": 0.5, "mean_abs_new": 20.0}},
            "tables": {"shop": {"rank_ratio": 0.2, "bulk_unchanged": False}, "item": {"reinit_frac": 0.2, "bulk_unchanged": True}}}

    def run(rows: list[dict]) -> pd.DataFrame:
        ctx = Context(model="din", day="2026-01-08", heads={"ctr": "click"}, new_version=True, extra={"checkpoint_change": info})
        f = diagnose(pd.DataFrame(rows), ctx).frame
        return f[f["severity"].isin(["critical", "warning"])]

    f = run([boom, rank])
    assert list(zip(f["finding"], f["subject"]))[:2] == [("exploding_activations", "mlp.0"), ("embedding_corruption", "shop")]
    assert "training run diverged" in f.iloc[1]["title"]
    # whatever the strengths: a table far past its threshold still follows a layer just past its own
    strong = run([{**boom, "severity": 1.1}, {**rank, "severity": 40.0}])
    assert list(zip(strong["finding"], strong["subject"]))[:2] == [("exploding_activations", "mlp.0"), ("embedding_corruption", "shop")]
    alone = run([rank])  # no layer finding: the collapsed table itself is the finding
    assert (alone.iloc[0]["finding"], alone.iloc[0]["subject"]) == ("embedding_corruption", "shop")
    partial = run([boom, reinit])  # re-initialised rows are nobody's training: first even beside a blown-up layer
    assert (partial.iloc[0]["finding"], partial.iloc[0]["subject"]) == ("embedding_corruption", "item")


def test_importance_only_field_findings_of_a_diverged_new_checkpoint_are_its_symptoms() -> None:
    """A new checkpoint that blew up scores noise as permutation importance (a field's importance
    even goes negative): with the change report paging, an importance-only ``broken_feature`` is
    kept as info under the checkpoint's finding; the same fall under an unchanged checkpoint, or a
    field whose own inputs moved, still pages."""
    from ctrlens.monitor.diagnosis import Context, diagnose

    boom = {"subject_kind": "checkpoint_change", "subject": "embedding", "statistic": "log_mean_abs_ratio", "method": "fixed",
            "value": math.log(20.0), "reference": 0.0, "threshold": math.log(4.0), "direction": "above", "alert": True,
            "severity": 2.2}  # fmt: skip
    imp = {"subject_kind": "importance", "subject": "ctr/user_gender", "statistic": "importance", "method": "mean+-4sd",
           "value": -0.0107, "reference": 0.0008, "threshold": -0.0074, "direction": "below", "alert": True, "severity": 1.37}  # fmt: skip
    stuck = [{"subject_kind": "field", "subject": "category_id", "statistic": s, "method": "mean+-4sd", "value": v,
              "reference": r, "threshold": t, "direction": "above", "alert": True, "severity": (v - r) / (t - r)}
             for s, v, r, t in [("top1_share", 1.0, 0.18, 0.25), ("psi", 6.0, 0.02, 0.06)]]  # fmt: skip
    info = {"rows": 3000, "heads": {}, "layers": {"embedding": {"activation": "identity", "mean_abs_old": 0.12, "mean_abs_new": 2.4}},
            "tables": {}}  # fmt: skip

    def run(rows: list[dict], new: bool = True, extra: dict | None = None) -> pd.DataFrame:
        ctx = Context(model="pal", day="2026-01-15", heads={"ctr": "click"}, new_version=new,
                      field_kinds={"user_gender": "sparse", "category_id": "sparse"},
                      extra={"checkpoint_change": info} if extra is None else extra)  # fmt: skip
        return diagnose(pd.DataFrame(rows), ctx).frame.set_index(["finding", "subject"])

    f = run([boom, imp])
    assert f.iloc[0].name == ("exploding_activations", "embedding") and f.iloc[0]["severity"] == "critical"
    g = f.loc[("broken_feature", "user_gender")]
    assert g["severity"] == "info" and "probably the new checkpoint" in g["title"]
    assert g["evidence_json"]["secondary_to"] == {"finding": "exploding_activations", "subject": "embedding"}
    # no checkpoint change: the importance fall is the shuffled-field finding, paged
    assert run([imp], new=False, extra={}).loc[("broken_feature", "user_gender"), "severity"] == "critical"
    # a field whose own inputs broke the same day still pages beside the diverged checkpoint
    both = run([boom, imp, *stuck])
    assert both.loc[("broken_feature", "category_id"), "severity"] in ("critical", "warning")
