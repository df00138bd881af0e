"""The dashboard's figure builders and computations, without a browser or a database."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctrlens.dashboard import figures
from ctrlens.dashboard.pages.probes import decay_rows, decay_train_day, fresh, pick_days


def test_reference_band_is_the_trailing_mean_and_sd_of_previous_points():
    rng = np.random.default_rng(0)
    x = rng.normal(0.7, 0.01, 40)
    x[30] = 0.5  # an outlier must not widen its own band
    b = figures.reference_band(x, window=14, k=3.0, min_periods=5)
    assert b["center"].iloc[:5].isna().all() and np.isfinite(b["center"].iloc[5])
    for i in (5, 17, 30, 39):
        prev = x[max(0, i - 14) : i]
        assert b["center"].iloc[i] == pytest.approx(prev.mean())
        assert b["upper"].iloc[i] == pytest.approx(prev.mean() + 3 * prev.std(ddof=1))
        assert b["lower"].iloc[i] == pytest.approx(prev.mean() - 3 * prev.std(ddof=1))
    assert x[30] < b["lower"].iloc[30]  # the outlier falls outside the band built before it
    assert b["upper"].iloc[31] - b["lower"].iloc[31] > b["upper"].iloc[30] - b["lower"].iloc[30]


def test_psi_matches_the_formula_and_is_nan_without_counts():
    p = np.array([[10, 20, 30, 40], [5, 0, 0, 5], [0, 0, 0, 0]], dtype=float)
    q = np.array([[40, 30, 20, 10], [5, 0, 0, 5], [1, 1, 1, 1]], dtype=float)
    out = figures.psi(p, q)
    pp, qq = np.maximum(p[0] / p[0].sum(), 1e-4), np.maximum(q[0] / q[0].sum(), 1e-4)
    assert out[0] == pytest.approx(float(((qq - pp) * np.log(qq / pp)).sum()))
    assert out[1] == pytest.approx(0.0)
    assert np.isnan(out[2])


def _field_stats(coverage: dict[str, float], hists: dict[str, list[int]]) -> pd.DataFrame:
    fields = list(coverage)
    return pd.DataFrame({"field": fields, "coverage": [coverage[f] for f in fields], "oov_rate": 0.01,
                         "hist_json": [{"edges": None, "counts": hists[f]} for f in fields]})  # fmt: skip


def test_top_movers_ranks_the_field_that_changed_first():
    base = {"a": [100, 100, 100], "b": [50, 150, 100], "c": [300, 0, 0]}
    a = _field_stats({"a": 0.99, "b": 0.98, "c": 0.97}, base)
    b = _field_stats({"a": 0.99, "b": 0.98, "c": 0.20}, {**base, "c": [0, 0, 300]})  # c collapsed elsewhere
    sal_a = pd.DataFrame({"field": ["a", "b", "c"], "share": [0.3, 0.3, 0.4]})
    sal_b = pd.DataFrame({"field": ["a", "b", "c"], "share": [0.45, 0.45, 0.1]})
    m = figures.top_movers(a, b, sal_a, sal_b)
    assert m["field"].tolist()[0] == "c"
    row = m.set_index("field").loc["c"]
    assert row["d_share"] == pytest.approx(-0.3)
    assert row["coverage_a"] == 0.97 and row["coverage_b"] == 0.20
    assert row["psi"] == pytest.approx(figures.psi([[300, 0, 0]], [[0, 0, 300]])[0])
    assert m.set_index("field").loc["a", "psi"] == pytest.approx(0.0)
    fig = figures.movers_figure(m, "A", "B")
    assert len(fig.data) == 2 and list(fig.data[0].y)[-1] == "c"  # bars bottom-up: the top mover last


def test_top_movers_of_histograms_with_different_bins_is_nan_not_an_error():
    a = _field_stats({"a": 1.0}, {"a": [1, 2, 3]})
    b = _field_stats({"a": 1.0}, {"a": [1, 2]})
    assert np.isnan(figures.top_movers(a, b)["psi"].iloc[0])
    assert figures.top_movers(None, b).empty


def _neurons(means: list[float], stds: list[float], zero: list[float], layer: str = "mlp.0") -> pd.DataFrame:
    n = len(means)
    return pd.DataFrame({"layer": layer, "neuron": np.arange(n), "mean": means, "std": stds, "frac_zero": zero,
                         "hist_json": [[10, 20, 30]] * n})  # fmt: skip


def test_neuron_shift_and_layer_fluctuation_follow_their_definitions():
    a = _neurons([0.0, 1.0, 2.0, 0.0], [1.0, 0.5, 2.0, 0.0], [0.1, 0.2, 0.0, 1.0])
    b = _neurons([0.5, 1.0, 0.0, 0.0], [2.0, 0.5, 1.0, 0.0], [1.0, 0.2, 0.0, 1.0])
    ns = figures.neuron_shift(a, b)
    assert ns["shift"].tolist()[:3] == pytest.approx([0.5, 0.0, -1.0])
    assert ns["std_ratio"].tolist()[:3] == pytest.approx([2.0, 1.0, 0.5])
    assert ns["std_ratio"].iloc[3] == pytest.approx(1.0) and ns["shift"].iloc[3] == 0.0  # constant neuron: floored, no inf
    assert ns["psi"].tolist() == pytest.approx([0.0] * 4)
    ls = figures.layer_shift(ns)
    assert ls.loc[0, "fluctuation"] == pytest.approx(np.mean(np.abs(np.log([2.0, 1.0, 0.5, 1.0]))))
    assert ls.loc[0, "mean_abs_shift"] == pytest.approx(1.5 / 4)
    assert ls.loc[0, "dead_a"] == pytest.approx(0.25) and ls.loc[0, "dead_b"] == pytest.approx(0.5)
    fig = figures.compare_layers(ls, "A", "B")
    assert {t.name for t in fig.data} >= {"dead, A", "dead, B"}


def test_health_matrix_codes_severities_and_leaves_missing_runs_empty():
    hm = pd.DataFrame([["ok", "critical", None], ["info", "warning", "ok"]], index=pd.Index(["din", "esmm"], name="model"),
                      columns=["2026-01-01", "2026-01-02", "2026-01-03"], dtype=object)  # fmt: skip
    z = np.asarray(figures.health_matrix(hm).data[0].z, dtype=float)
    assert z[0, :2].tolist() == [0, 3] and np.isnan(z[0, 2])
    assert z[1].tolist() == [1, 2, 0]
    assert "No runs" in figures.health_matrix(hm.iloc[0:0]).layout.annotations[0].text


def test_drift_heatmap_colours_by_distance_to_the_threshold_both_directions():
    d = pd.DataFrame({
        "day": ["2026-01-01", "2026-01-01", "2026-01-02", "2026-01-02"], "subject": ["a", "b", "a", "b"],
        "value": [0.05, 0.9, 0.4, 0.45], "threshold": [0.1, 0.9, 0.1, 0.9], "direction": ["above", "below", "above", "below"],
        "alert": [False, False, True, True], "method": "m",
    })  # fmt: skip
    fig = figures.drift_heatmap(d, statistic="psi", order=["b", "a"])
    z = np.asarray(fig.data[0].z, dtype=float)
    assert list(fig.data[0].y) == ["b", "a"]
    assert z[1].tolist() == pytest.approx([0.5, 4.0])  # a: value / threshold
    assert z[0].tolist() == pytest.approx([1.0, 2.0])  # b ("below"): threshold / value, > 1 = alert
    assert list(fig.data[1].x) == ["2026-01-02", "2026-01-02"]  # the two alerts are outlined


def test_saliency_area_keeps_top_fields_and_sums_the_rest():
    days = ["2026-01-01", "2026-01-02"]
    s = pd.DataFrame([(d, f"f{i}", share) for d in days for i, share in enumerate([0.4, 0.3, 0.2, 0.06, 0.04])],
                     columns=["day", "field", "share"])  # fmt: skip
    fig = figures.saliency_area(s, top=3)
    names = [t.name for t in fig.data]
    assert names == ["f0", "f1", "f2", "other (2)"]
    assert np.asarray(fig.data[-1].y, dtype=float) == pytest.approx([0.1, 0.1])
    assert "f4" in [t.name for t in figures.saliency_area(s, top=3, highlight="f4").data]


def test_neuron_histograms_are_shares_per_day_with_bin_labels():
    h = pd.DataFrame({"day": ["2026-01-02", "2026-01-01"], "hist_json": [[0, 10, 30], [5, 5, 0]]})
    fig = figures.neuron_histograms(h, [-np.inf, 0.0, 1.0, np.inf], layer="mlp.0", neuron=3)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert list(fig.data[0].y) == ["2026-01-01", "2026-01-02"]
    np.testing.assert_allclose(z, [[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]])
    assert list(fig.data[0].x) == ["[-inf, 0)", "[0, 1)", "[1, inf)"]


def test_score_distribution_and_empty_figures_say_why():
    fig = figures.score_distribution({"edges": [0, 1, 2], "counts": [1, 3]}, None, "A", "B")
    assert len(fig.data) == 1 and np.asarray(fig.data[0].y, dtype=float) == pytest.approx([0.25, 0.75])
    assert "No score distribution" in figures.score_distribution(None, None, "A", "B").layout.annotations[0].text
    assert "No 2-D projection" in figures.projection(None, layer="x", day="d").layout.annotations[0].text


def test_big_heatmaps_travel_as_float32_typed_arrays():
    hm = pd.DataFrame(np.random.default_rng(0).normal(size=(512, 365)), columns=[f"d{i}" for i in range(365)])
    fig = figures.neuron_heatmap(hm, statistic="mean", layer="mlp.0")
    js = fig.to_plotly_json()["data"][0]["z"]
    assert isinstance(js, dict) and js["dtype"] == "f4"  # base64, not 187k JSON numbers


def test_probe_helpers_pick_the_decay_protocol_rows():
    rows = []
    for day in ["2026-01-01", "2026-01-02", "2026-01-03"]:
        for la in ["l0", "l1"]:
            rows.append((day, la, day, day, 0.7))
            if day != "2026-01-01":
                rows.append((day, la, "2026-01-01", day, 0.69))
    p = pd.DataFrame(rows, columns=["day", "layer", "train_day", "eval_day", "auc"])
    assert len(fresh(p)) == 6 and (fresh(p)["train_day"] == fresh(p)["eval_day"]).all()
    assert decay_train_day(p, "2026-01-03") == "2026-01-01"
    d = decay_rows(p, "2026-01-03")
    assert sorted(d["eval_day"].unique()) == ["2026-01-01", "2026-01-02", "2026-01-03"] and len(d) == 6
    fig = figures.probe_decay(d, ["l0", "l1"], train_day="2026-01-01")
    assert [t.name for t in fig.data] == ["l0", "l1"]
    assert pick_days([f"d{i:02d}" for i in range(30)], "d29", 6)[-1] == "d29"
    assert len(pick_days([f"d{i:02d}" for i in range(30)], "d29", 6)) == 6


def test_quality_bands_are_the_nightly_jobs_where_it_tested_and_ignore_alerted_days_elsewhere():
    days = [f"2026-01-{i:02d}" for i in range(1, 21)]
    auc = np.full(20, 0.70)
    auc[15:] = 0.60  # an incident from day 16
    rate = np.linspace(0.050, 0.052, 20)
    rate[15:] = 0.09
    q = pd.DataFrame({"day": days, "auc": auc, "gauc": auc - 0.05, "calibration": 1.0, "mean_pred": rate, "actual_rate": rate})
    drift = pd.DataFrame({"day": days, "statistic": "auc", "value": auc, "reference": 0.70, "threshold": 0.68, "alert": auc < 0.68})
    fig = figures.quality_over_time(q, drift=drift)
    band = [t for t in fig.data if t.name and t.name.startswith("nightly job's band")]
    assert len(band) == 1  # AUC: the job's band, reference +- |reference - threshold|
    lower, upper = np.asarray(band[0].y, dtype=float), np.asarray(fig.data[list(fig.data).index(band[0]) - 1].y, dtype=float)
    np.testing.assert_allclose(lower, 0.68, rtol=1e-6)
    np.testing.assert_allclose(upper, 0.72, rtol=1e-6)
    trailing = [t for t in fig.data if t.name and t.name.startswith("trailing")]
    assert trailing  # calibration and actual CTR have no test here: trailing bands
    # the actual-CTR band after the incident still describes the days before it (alerted days left out)
    ctr_band = np.asarray(trailing[-1].y, dtype=float)
    ref = rate[5:15]  # the 14 days before the last one, minus the 4 that alerted
    assert ctr_band[-1] == pytest.approx(ref.mean() - 3 * ref.std(ddof=1), rel=1e-4)
    alerts = [t for t in fig.data if t.name == "auc alert"]
    assert list(alerts[0].x) == days[15:]


def test_neuron_histograms_accept_the_neuron_summaries_under_and_overflow_layout():
    # ctrlens.neurons stores the finite edges and counts [underflow, bins..., overflow]
    h = pd.DataFrame({"day": ["2026-01-01"], "hist_json": [[1, 2, 3, 4]]})
    fig = figures.neuron_histograms(h, [0.0, 0.5, 1.0], layer="mlp.0", neuron=0)
    assert list(fig.data[0].x) == ["[-inf, 0)", "[0, 0.5)", "[0.5, 1)", "[1, inf)"]
