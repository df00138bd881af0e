"""Named causes: a unit change, two swapped fields, truncated histories, lost labels -- each from the
pattern of its drift rows, on hand-made rows and on a real world's day with the incident planted."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ctrlens.monitor.diagnosis import Context, diagnose
from ctrlens.results import Result


def row(kind: str, subject: str, stat: str, value: float, ref: float, thr: float, alert: bool = True) -> dict:
    direction = "above" if thr >= ref else "below"
    sev = abs(value - ref) / abs(thr - ref) if alert else 0.0
    return {"subject_kind": kind, "subject": subject, "statistic": stat, "method": "mean+-4sd", "value": value,
            "reference": ref, "threshold": thr, "direction": direction, "alert": alert, "severity": sev}  # fmt: skip


CTX = dict(model="din", day="2026-01-12", version_id=3, heads={"ctr": "click"},
           field_kinds={"price": "dense", "hist_item_id": "sequence", "category_id": "sparse", "shop_id": "sparse"})  # fmt: skip


def findings(rows: list[dict]) -> pd.DataFrame:
    return diagnose(pd.DataFrame(rows), Context(**CTX)).frame


def test_unit_change_names_the_factor() -> None:
    f = findings([
        row("field", "price", "log_std", math.log(0.76 * 100), math.log(0.76), math.log(0.76) + 0.2),
        row("field", "price", "mean_z", 4.7 * 100, 4.7, 4.9),
        row("field", "price", "psi", 8.0, 0.01, 0.05),
    ])  # fmt: skip
    top = f.iloc[0]
    assert (top["finding"], top["subject"], top["severity"]) == ("unit_change", "price", "critical")
    assert "std x100" in top["title"] and "mean x100" in top["title"] and "x1e2" in top["title"]
    assert "unit" in top["action"]
    # a 1.5x price rise (a real shift: mean up, spread as usual) stays a distribution shift
    g = findings([
        row("field", "price", "mean_z", 4.7 * 1.5, 4.7, 4.9), row("field", "price", "psi", 0.8, 0.01, 0.05),
        row("field", "price", "log_std", math.log(0.76 * 1.5), math.log(0.76), math.log(0.76) + 0.2),
    ])  # fmt: skip
    assert g.iloc[0]["finding"] == "distribution_shift"


def test_truncated_histories_are_not_a_collapse() -> None:
    rows = [
        row("field", "hist_item_id", "mean_z", 5.0 / 5.5, 9.2 / 5.5, 1.4),
        row("field", "hist_item_id", "log_std", math.log(0.4), math.log(5.5), math.log(5.5) - 0.2),
        row("field", "hist_item_id", "psi", 0.3, 0.01, 0.05),
        row("field", "hist_item_id", "top1_share", 0.03, 0.02, 0.025),
    ]
    top = findings(rows).iloc[0]
    assert (top["finding"], top["subject"]) == ("sequence_truncated", "hist_item_id")
    assert "mean length x0.54" in top["title"]
    # every history the same list: a stuck value, still a broken feature
    stuck = rows[:3] + [row("field", "hist_item_id", "top1_share", 1.0, 0.02, 0.025)]
    assert findings(stuck).iloc[0]["finding"] == "broken_feature"


def test_lost_labels_with_unchanged_inputs_are_the_label_pipeline() -> None:
    rows = [row("label", "click", "rate", 0.07, 0.117, 0.105), row("quality", "ctr", "calibration", 1.6, 1.0, 1.12)]
    f = findings(rows)
    top = f.iloc[0]
    assert (top["finding"], top["subject"], top["severity"]) == ("label_pipeline", "click", "critical")
    assert "40.2% fewer" in top["title"] and "join window of labels" in top["action"]
    assert f.set_index("finding").loc["calibration_drift", "severity"] == "info"
    # labels up (a holiday): calibration drift as before
    up = findings([row("label", "click", "rate", 0.2, 0.117, 0.13), row("quality", "ctr", "calibration", 0.6, 1.0, 0.88)])
    assert up.iloc[0]["finding"] == "calibration_drift"
    # labels down *and* a broken input: the input explains it
    both = findings(rows + [row("field", "category_id", "top1_share", 1.0, 0.2, 0.25)])
    assert both.iloc[0]["finding"] == "broken_feature" and "label_pipeline" not in set(both["finding"])
    # clicks lost with their conversions: one loss, named by the click labels however the bands rank them
    conv = {**row("label", "conversion", "rate", 0.0071, 0.0118, 0.0112), "severity": 9.0}  # a narrow band
    f2 = findings(rows + [conv]).set_index(["finding", "subject"])
    assert f2.iloc[0].name == ("label_pipeline", "click") and f2.iloc[0]["severity"] == "critical"
    assert f2.loc[("label_pipeline", "conversion"), "severity"] == "info"
    # only conversions lost (clicks as usual), or lost at a very different share: conversions are named
    only = findings([conv]).iloc[0]
    assert (only["finding"], only["subject"], only["severity"]) == ("label_pipeline", "conversion", "critical")
    apart = findings(rows + [row("label", "conversion", "rate", 0.0012, 0.0118, 0.0112)])
    assert set(apart[apart["finding"] == "label_pipeline"]["severity"]) == {"critical"}


def _fs(day: str, fields: dict[str, tuple[str, list, float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"day": day, "field": f, "kind": k, "top_json": top, "mean": m, "std": s, "rows": 1000,
                          "coverage": 1.0, "missing_rate": 0.0, "oov_rate": 0.0, "cardinality": len(top), "hist_json": None}
                         for f, (k, top, m, s) in fields.items()])  # fmt: skip


def test_swapped_fields_from_the_reference_signatures() -> None:
    from ctrlens.monitor.config import Thresholds
    from ctrlens.monitor.drift import DriftSuite, History

    rng = np.random.default_rng(0)

    def top(values: np.ndarray) -> list:
        v, c = np.unique(values, return_counts=True)
        o = np.argsort(-c)[:20]
        return [[int(v[i]), c[i] / len(values)] for i in o]

    def day_fields(swap: bool = False) -> dict:
        cat = rng.choice(20, 1000, p=np.r_[0.3, np.full(19, 0.7 / 19)]) + 1
        shop = rng.choice(100, 1000) + 200
        price, cents = rng.lognormal(1.2, 0.2, 1000), rng.lognormal(4.0, 0.3, 1000)
        f = {"category_id": ("sparse", top(cat), np.nan, np.nan), "shop_id": ("sparse", top(shop), np.nan, np.nan),
             "price": ("dense", [], price.mean(), price.std()), "weight": ("dense", [], cents.mean(), cents.std())}  # fmt: skip
        if swap:
            f["category_id"], f["shop_id"] = (f["shop_id"][0], f["shop_id"][1], np.nan, np.nan), (
                f["category_id"][0], f["category_id"][1], np.nan, np.nan)
        return f

    days = [f"2026-01-0{i}" for i in range(1, 8)]
    h = History(days=days, label="trailing 7d", frames={"field_stats": pd.concat([_fs(d, day_fields()) for d in days])})
    for swap, want in ((False, set()), (True, {"category_id<-shop_id", "shop_id<-category_id"})):
        s = DriftSuite(Thresholds(), h)
        s.swaps(Result("field_stats", _fs("2026-01-08", day_fields(swap)).drop(columns="day"), {}))
        got = {r["subject"] for r in s.rows if r["alert"]}
        assert got == want, s.rows
    f = diagnose(s.frame(), Context(**CTX)).frame
    top_ = f.iloc[0]
    assert top_["finding"] == "fields_swapped" and top_["subject"] in {"category_id", "shop_id"}
    assert "look swapped" in top_["title"] and top_["evidence_json"]["swapped"] is True


def test_slow_ramp_is_reported_as_gradual_drift_against_the_anchor() -> None:
    """One category's share rises 5x over the days (a little each day): the trailing window follows it,
    the anchor period does not."""
    from ctrlens.monitor.config import Thresholds
    from ctrlens.monitor.drift import DriftSuite, History
    from ctrlens.monitor.job import with_anchor

    rng = np.random.default_rng(3)
    K, n = 10, 5000

    def day_row(i: int) -> dict:
        share = 0.05 * (1 + 4 * max(i - 7, 0) / 13)  # flat for the anchor days, then 0.05 -> 0.25
        p = np.r_[share, np.full(K - 1, (1 - share) / (K - 1))]
        c = rng.multinomial(n, p)
        return {"day": f"2026-01-{i:02d}", "field": "category_id", "kind": "sparse", "rows": n, "coverage": 1.0,
                "missing_rate": 0.0, "oov_rate": 0.0, "cardinality": K, "mean": np.nan, "std": np.nan,
                "top_json": [[int(k), c[k] / n] for k in np.argsort(-c)],
                "hist_json": {"edges": list(range(K + 1)), "counts": c.tolist()}}  # fmt: skip

    rows = {i: day_row(i) for i in range(1, 21)}
    hist = lambda days, label, scheme: History(  # noqa: E731
        days=[rows[i]["day"] for i in days], label=label, scheme=scheme,
        frames={"field_stats": pd.DataFrame([rows[i] for i in days])})
    today = Result("field_stats", pd.DataFrame([rows[20]]).drop(columns="day"), {})
    trailing = DriftSuite(Thresholds(), hist(range(13, 20), "trailing 7d", "prequential"))
    trailing.fields(today)
    assert not any(r["alert"] for r in trailing.rows), [r for r in trailing.rows if r["alert"]]  # missed so far
    anchor = DriftSuite(Thresholds(), hist(range(1, 8), "anchor", "loo"))
    anchor.fields(today)
    with_anchor(trailing, anchor)
    f = diagnose(trailing.frame(), Context(**CTX)).frame
    assert list(f["finding"]) == ["gradual_drift"] and f.iloc[0]["subject"] == "category_id"
    assert f.iloc[0]["severity"] == "info" and "anchor period" in f.iloc[0]["title"]


def test_importance_fall_on_a_day_the_labels_moved_is_no_broken_field() -> None:
    imp = row("importance", "ctr/shop_id", "importance", 0.0001, 0.004, 0.002)
    others = [row("importance", f"ctr/{f}", "importance", v, v, v / 2, alert=False) for f, v in (("item_id", 0.02), ("category_id", 0.01), ("hour", 0.005))]
    alone = findings([imp, *others])
    assert (alone.iloc[0]["finding"], alone.iloc[0]["subject"]) == ("broken_feature", "shop_id")  # shuffled?
    lost = findings([imp, *others, row("label", "click", "rate", 0.07, 0.117, 0.105)])
    assert (lost.iloc[0]["finding"], lost.iloc[0]["subject"]) == ("label_pipeline", "click")
    assert lost.set_index("subject").loc["shop_id", "severity"] == "info"
