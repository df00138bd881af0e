"""Drift statistics and thresholds against hand computation (no model, no store)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ctrlens.monitor.config import Thresholds
from ctrlens.monitor.drift import (
    DriftSuite,
    History,
    auc_se,
    band,
    judge,
    js,
    neuron_layer_test,
    pooled,
    psi,
    reference_distances,
    wasserstein_norm,
)
from ctrlens.results import Result


def test_psi_by_hand() -> None:
    # p = (.5, .5), q = (.9, .1): (.4) ln(1.8) + (-.4) ln(.2)
    want = 0.4 * math.log(1.8) + 0.4 * math.log(5.0)
    assert psi([50, 50], [90, 10]) == pytest.approx(want, rel=1e-12)
    assert psi([90, 10], [50, 50]) == pytest.approx(want, rel=1e-12)  # symmetric
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(want, rel=1e-12)  # proportions work too
    assert psi([3, 7], [30, 70]) == pytest.approx(0.0, abs=1e-15)
    # an empty bin is floored at 1e-4 rather than making PSI infinite
    want0 = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert psi([100, 0], [50, 50]) == pytest.approx(want0, rel=1e-12)
    # rows of a matrix: one PSI per neuron
    out = psi(np.array([[50, 50], [3, 7]]), np.array([[90, 10], [30, 70]]))
    assert out.shape == (2,) and out[0] == pytest.approx(want) and out[1] == pytest.approx(0.0, abs=1e-15)
    assert math.isnan(psi([0, 0], [1, 1]))


def test_js_by_hand() -> None:
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    m = (p + q) / 2
    kl = lambda a, b: float((a * np.log2(a / b)).sum())  # noqa: E731
    want = math.sqrt(0.5 * kl(p, m) + 0.5 * kl(q, m))
    assert js([50, 50], [90, 10]) == pytest.approx(want, rel=1e-9)
    assert want == pytest.approx(0.38312, abs=1e-4)
    assert js([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint: the maximum, base 2
    assert js([2, 2], [5, 5]) == pytest.approx(0.0, abs=1e-12)


def test_wasserstein_by_hand() -> None:
    edges = [0.0, 1.0, 2.0, 3.0]
    # all mass moves from the first bin centre (0.5) to the last (2.5): distance 2, in units of scale 2 -> 1
    assert wasserstein_norm(edges, [1, 0, 0], [0, 0, 1], scale=2.0) == pytest.approx(1.0)
    # half the mass moves by 2 -> 1, in units of scale 0.5 -> 2
    assert wasserstein_norm(edges, [1, 0, 1], [0, 0, 2], scale=0.5) == pytest.approx(2.0)
    assert math.isnan(wasserstein_norm(edges, [1, 0, 0], [0, 0, 1], scale=0.0))


def test_pooled_and_reference_distances() -> None:
    hs = [np.array([10.0, 0.0]), np.array([0.0, 30.0]), np.array([5.0, 5.0])]
    assert pooled(hs[:2]).tolist() == [0.5, 0.5]  # each day weighs the same, whatever its rows
    loo = reference_distances(hs, psi, "loo")
    pre = reference_distances(hs, psi, "prequential")
    assert len(loo) == 3 and len(pre) == 2
    assert loo[2] == pytest.approx(psi([0.5, 0.5], [5, 5]), abs=1e-12) == pytest.approx(0.0, abs=1e-12)
    assert pre[0] == pytest.approx(psi([10, 0], [0, 30]))  # day 1 against day 0 only
    assert pre[1] == pytest.approx(psi([0.5, 0.5], [5, 5]), abs=1e-12)


def test_band_and_judge_by_hand() -> None:
    b = band([1.0, 2.0, 3.0, 4.0], k=4.0, floor=0.1)
    sd = float(np.std([1, 2, 3, 4], ddof=1))
    assert (b.center, b.std, b.spread) == (2.5, pytest.approx(sd), pytest.approx(sd))
    assert b.upper == pytest.approx(2.5 + 4 * sd) and b.lower == pytest.approx(2.5 - 4 * sd)
    o = judge(8.0, b)
    assert o.direction == "above" and o.exceeded and o.threshold == pytest.approx(2.5 + 4 * sd)
    assert o.severity == pytest.approx((8.0 - 2.5) / (4 * sd))
    o2 = judge(-3.0, b)
    assert o2.direction == "below" and o2.exceeded
    assert not judge(3.0, b).exceeded
    # a perfectly flat reference: the floor, not zero, sets the band
    flat = band([0.2, 0.2, 0.2], k=4.0, floor=0.05)
    assert flat.std == pytest.approx(0.0, abs=1e-12) and flat.upper == pytest.approx(0.4) and flat.lower == pytest.approx(0.0)
    assert not judge(0.38, flat).exceeded and judge(0.41, flat).exceeded
    # relative floor: distances must grow by (1 + k * rel) times their usual value
    rel = band([0.10, 0.10, 0.10], k=4.0, floor=0.0, rel_floor=0.5)
    assert rel.upper == pytest.approx(0.3)
    assert band([1.0], k=4, floor=0.1) is None  # one value is no band


def _weekly_days(n: int, start: str = "2026-01-05") -> list[str]:
    import datetime as dt

    d0 = dt.date.fromisoformat(start)
    return [(d0 + dt.timedelta(i)).isoformat() for i in range(n)]


def test_weekly_band_by_hand() -> None:
    """Level + one weekly harmonic, by least squares; the band's centre is the fit at today's weekday
    and its spread the prediction's standard error. No cycle (or too few days): ``None``."""
    from scipy import stats

    from ctrlens.monitor.drift.bands import weekly_band

    rng = np.random.default_rng(3)
    days = _weekly_days(9)  # a Monday onwards; 8 reference days, today the 9th (a Tuesday)
    w = np.array([np.datetime64(d).astype("datetime64[D]").item().weekday() for d in days], dtype=float)
    y = 0.13 + 0.015 * np.cos(2 * np.pi * (w - 6) / 7) + rng.normal(0, 0.001, len(days))
    b = weekly_band(y[:8], days[:8], days[8], k=4.0, floor=1e-4)
    # brute force: the same regression written out, its prediction and prediction error
    X = np.column_stack([np.ones(8), np.cos(2 * np.pi * w[:8] / 7), np.sin(2 * np.pi * w[:8] / 7)])
    beta = np.linalg.solve(X.T @ X, X.T @ y[:8])
    x0 = np.array([1.0, np.cos(2 * np.pi * w[8] / 7), np.sin(2 * np.pi * w[8] / 7)])
    s2 = ((y[:8] - X @ beta) ** 2).sum() / 5
    assert b is not None and b.weekly
    assert b.center == pytest.approx(float(x0 @ beta), rel=1e-9)
    assert b.std == pytest.approx(float(np.sqrt(s2 * (1 + x0 @ np.linalg.inv(X.T @ X) @ x0))), rel=1e-9)
    assert "weekly-cycle fit" in b.describe("trailing 7d")
    # the plain band over the same week is several times wider: the cycle counted as noise
    assert band(y[:8], k=4.0, floor=1e-4).spread > 4 * b.spread
    # a 30 % loss of labels today: outside the weekly band, inside the plain one
    assert judge(0.7 * y[8], b).exceeded and not judge(0.7 * y[8], band(y[:8], k=4.0, floor=1e-4)).exceeded
    # no cycle: the F-test keeps the plain band (None here) on most references, at its level
    flat = [weekly_band(rng.normal(0.13, 0.002, 7), days[:7], days[7], k=4.0, floor=1e-4) for _ in range(400)]
    assert np.mean([f is not None for f in flat]) < 0.05 + 3 * np.sqrt(0.05 * 0.95 / 400)
    assert stats.f.ppf(0.95, 2, 4) > 6  # the F critical value the test uses at n = 7
    # fewer than 7 values or 5 weekdays: no fit
    assert weekly_band(y[:6], days[:6], days[8], k=4.0, floor=1e-4) is None
    assert weekly_band(list(y[:4]) * 2, days[:4] * 2, days[8], k=4.0, floor=1e-4) is None


def test_label_rate_with_a_weekly_cycle_alerts_on_a_lost_third_and_not_on_sunday() -> None:
    """The suite bands a label rate by its weekly cycle when the reference shows one: a Sunday peak
    (+13 %) passes; labels 30 % down on an ordinary day alert, which the plain band missed."""
    rng = np.random.default_rng(11)
    days = _weekly_days(8 + 7)

    def rate(d: str) -> float:
        wd = np.datetime64(d).astype("datetime64[D]").item().weekday()
        return 0.135 * (1 + 0.13 * np.cos(2 * np.pi * (wd - 6) / 7)) + rng.normal(0, 0.0015)

    rates = {d: rate(d) for d in days}

    def run(today: str, value: float) -> dict:
        ref = [d for d in days if d < today][-7:]
        h = _history({d: [_fs_row("click", 1.0, [1, 1], kind="label", mean=rates[d], rows=50_000)] for d in ref})
        h.today = today
        s = DriftSuite(Thresholds(), h, min_days=5)
        s.fields(Result("field_stats", pd.DataFrame([_fs_row("click", 1.0, [1, 1], kind="label", mean=value, rows=50_000)])))
        return s.rows[-1]

    sunday = next(d for d in days[7:] if np.datetime64(d).astype("datetime64[D]").item().weekday() == 6)
    ok = run(sunday, rates[sunday])
    assert not ok["alert"] and ok["method"].startswith("weekly-cycle fit")
    for d in days[7:]:
        assert not run(d, rates[d])["alert"], d
        lost = run(d, 0.7 * rates[d])
        assert lost["alert"] and lost["direction"] == "below", (d, lost)
    # the same without a day to fit (History.today unknown): the plain band, which misses the loss
    h = _history({d: [_fs_row("click", 1.0, [1, 1], kind="label", mean=rates[d], rows=50_000)] for d in days[:7]})
    s = DriftSuite(Thresholds(), h, min_days=5)
    s.fields(Result("field_stats", pd.DataFrame([_fs_row("click", 1.0, [1, 1], kind="label", mean=0.7 * rates[days[7]], rows=50_000)])))
    assert s.rows[-1]["method"].startswith("mean+-") and not s.rows[-1]["alert"]


def test_auc_standard_error_hanley_mcneil() -> None:
    q1, q2 = 0.8 / 1.2, 2 * 0.64 / 1.8
    want = math.sqrt((0.16 + 49 * (q1 - 0.64) + 49 * (q2 - 0.64)) / 2500)
    assert auc_se(0.8, 50, 50) == pytest.approx(want) == pytest.approx(0.0445, abs=1e-4)
    assert auc_se(0.8, 5000, 5000) < auc_se(0.8, 50, 50) / 9
    assert auc_se(float("nan"), 10, 10) == 0.0


def _neuron_days(rng, n_days: int, N: int, K: int, rows: int, probs: np.ndarray) -> np.ndarray:
    return np.stack([np.stack([rng.multinomial(rows, probs[i]) for i in range(N)]) for _ in range(n_days)])


def test_neuron_layer_test_controls_false_discoveries() -> None:
    rng = np.random.default_rng(0)
    N, K, rows = 300, 12, 2000
    probs = rng.dirichlet(np.ones(K) * 5, size=N)
    ref = _neuron_days(rng, 7, N, K, rows, probs)
    clean = _neuron_days(rng, 1, N, K, rows, probs)[0]
    res = neuron_layer_test(clean, ref, k=4.0, fraction=0.1)
    # a clean day: a few neurons may leave their own band by chance, the layer does not alert
    assert res["share"] < 0.05 and not res["alert"]
    assert res["reference_shares"].shape == (7,) and res["reference_share"] < 0.05
    # 60 of 300 neurons (20 %) see a shifted input: mass moves to the last bins
    moved = probs.copy()
    moved[:60] = np.roll(probs[:60], 4, axis=1)
    today = _neuron_days(rng, 1, N, K, rows, moved)[0]
    res2 = neuron_layer_test(today, ref, k=4.0, fraction=0.1)
    assert res2["alert"] and res2["share"] == pytest.approx(0.2, abs=0.02)
    assert res2["moving"][:60].mean() > 0.95 and res2["moving"][60:].mean() < 0.02
    assert res2["layer_threshold"] >= res2["reference_share"] + 0.1
    with pytest.raises(ValueError, match=">= 3 reference days"):
        neuron_layer_test(today, ref[:2], k=4.0, fraction=0.1)


def _fs_row(field: str, coverage: float, counts: list[int], kind: str = "sparse", **kw) -> dict:
    row = {"field": field, "kind": kind, "rows": 10_000, "coverage": coverage, "missing_rate": 1 - coverage, "oov_rate": 0.0,
           "cardinality": 50, "mean": float("nan"), "std": float("nan"), "top_json": [[1, 0.1], ["__other__", 0.9]],
           "hist_json": {"kind": "hashed", "edges": list(range(len(counts) + 1)), "counts": counts}}  # fmt: skip
    row.update(kw)
    return row


def _history(rows_by_day: dict[str, list[dict]], **frames) -> History:
    fs = pd.concat([pd.DataFrame(r).assign(day=d, version_id=1) for d, r in rows_by_day.items()], ignore_index=True)
    return History(days=sorted(rows_by_day), label="trailing 7d", scheme="prequential", frames={"field_stats": fs, **frames})


def test_suite_coverage_band_and_method_text() -> None:
    days = {f"2026-01-0{i}": [_fs_row("shop_id", c, [500, 500])] for i, c in enumerate([0.99, 0.98, 0.99, 0.97, 0.98], 1)}
    h = _history(days)
    suite = DriftSuite(Thresholds(), h, min_days=5)
    today = Result("field_stats", pd.DataFrame([_fs_row("shop_id", 0.50, [250, 750])]))
    suite.fields(today)
    f = suite.frame().set_index("statistic")
    cov = f.loc["coverage"]
    ref = np.array([0.99, 0.98, 0.99, 0.97, 0.98])
    sd = ref.std(ddof=1)
    assert cov["reference"] == pytest.approx(ref.mean())
    assert cov["threshold"] == pytest.approx(ref.mean() - 4 * max(sd, 0.005))
    assert cov["direction"] == "below" and bool(cov["alert"])
    assert cov["method"] == f"mean+-4sd (sd floor {max(0.005, math.sqrt(0.25 / 10_000)):.3g}; trailing 7d, n=5)"
    # the histogram distance: today's PSI to the pooled reference, threshold from the days' own distances
    p = f.loc["psi"]
    assert p["value"] == pytest.approx(psi([0.5, 0.5], [250, 750])) and p["direction"] == "above" and bool(p["alert"])


def test_suite_warm_up_records_without_alerting() -> None:
    days = {f"2026-01-0{i}": [_fs_row("shop_id", 0.99, [500, 500])] for i in (1, 2)}
    suite = DriftSuite(Thresholds(), _history(days), min_days=5)
    suite.fields(Result("field_stats", pd.DataFrame([_fs_row("shop_id", 0.1, [10, 990])])))
    f = suite.frame()
    assert not f["alert"].any()
    cov = f.set_index("statistic").loc["coverage"]
    assert cov["value"] == 0.1 and cov["method"].startswith("recorded only: 2 reference value(s) < 5")


def test_suite_excludes_alerted_days_and_persistence() -> None:
    cov = [0.99, 0.99, 0.98, 0.30, 0.99, 0.98]  # day 4 was an incident
    days = {f"2026-01-0{i}": [_fs_row("shop_id", c, [500, 500])] for i, c in enumerate(cov, 1)}
    drift = pd.DataFrame([{"day": "2026-01-04", "subject_kind": "field", "subject": "shop_id", "statistic": "coverage",
                           "method": "m", "value": 0.30, "reference": 0.99, "threshold": 0.95, "direction": "below",
                           "alert": True}])  # fmt: skip
    h = _history(days, drift=drift)
    suite = DriftSuite(Thresholds(), h, min_days=5)
    suite.fields(Result("field_stats", pd.DataFrame([_fs_row("shop_id", 0.90, [500, 500])])))
    row = suite.frame().set_index("statistic").loc["coverage"]
    clean = np.array([0.99, 0.99, 0.98, 0.99, 0.98])  # the incident day is not part of the reference
    assert row["reference"] == pytest.approx(clean.mean()) and bool(row["alert"])
    # persistence 2: a first, moderate exceedance waits for a second day ...
    recent = pd.DataFrame([{"day": "2026-01-06", "subject_kind": "field", "subject": "shop_id", "statistic": "coverage",
                            "method": "m", "value": 0.98, "reference": 0.99, "threshold": 0.95, "direction": "below",
                            "alert": False}])  # fmt: skip
    h2 = _history(days, drift=drift)
    h2.recent = recent
    s2 = DriftSuite(Thresholds(persistence=2), h2, min_days=5)
    s2.fields(Result("field_stats", pd.DataFrame([_fs_row("shop_id", 0.955, [500, 500])])))
    r2 = s2.frame().set_index("statistic").loc["coverage"]
    assert r2["value"] < r2["threshold"] and not bool(r2["alert"])
    # ... unless it is severe (twice the threshold distance or more)
    s3 = DriftSuite(Thresholds(persistence=2), h2, min_days=5)
    s3.fields(Result("field_stats", pd.DataFrame([_fs_row("shop_id", 0.50, [500, 500])])))
    assert bool(s3.frame().set_index("statistic").loc["coverage", "alert"])
    # and with yesterday also beyond its threshold the moderate one alerts
    h2.recent = recent.assign(value=0.90)
    s4 = DriftSuite(Thresholds(persistence=2), h2, min_days=5)
    s4.fields(Result("field_stats", pd.DataFrame([_fs_row("shop_id", 0.955, [500, 500])])))
    assert bool(s4.frame().set_index("statistic").loc["coverage", "alert"])


def test_suite_result_columns_and_observation_fallback() -> None:
    suite = DriftSuite(Thresholds(), History(), min_days=5)
    suite.observations([{"subject_kind": "checkpoint", "subject": "ctr", "statistic": "train_test_auc_gap", "value": 0.2,
                         "sides": "above", "fixed_threshold": 0.1, "why": "AUC gap > 0.1"}])  # fmt: skip
    r = suite.result()
    assert list(r.frame.columns) == ["subject_kind", "subject", "statistic", "method", "value", "reference", "threshold",
                                     "direction", "alert"]  # fmt: skip
    row = r.frame.iloc[0]
    assert row["alert"] and row["threshold"] == 0.1 and row["method"].startswith("fixed threshold (no reference yet)")
