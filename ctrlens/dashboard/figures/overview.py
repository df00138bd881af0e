"""Figures of the Overview page: health matrix, quality over time with its bands."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ctrlens.dashboard.figures.base import NO_RUN_COLOR, SEVERITY_CODE, SEVERITY_COLOR, _Plot, _f32, empty


def health_matrix(hm: pd.DataFrame, height: int | None = None) -> go.Figure:
    """Models x days, colour = worst alert severity of the day (``Store.health_matrix()`` frame:
    index models, columns days, values ``critical``/``warning``/``info``/``ok``/None)."""
    if hm.empty:
        return empty("No runs in the database yet.")
    labels = hm.to_numpy(dtype=object)
    code = np.vectorize(lambda v: SEVERITY_CODE.get(v, np.nan) if isinstance(v, str) else np.nan, otypes=[np.float32])
    z = code(labels)
    text = np.where(pd.isna(labels), "no run", labels).astype(str)
    cs = []
    for i, name in enumerate(("ok", "info", "warning", "critical")):
        cs += [[i / 4, SEVERITY_COLOR[name]], [(i + 1) / 4, SEVERITY_COLOR[name]]]
    p = _Plot(height or 120 + 34 * len(hm.index), plot_bgcolor=NO_RUN_COLOR, margin=dict(l=90, r=20, t=30, b=40))
    p.add(dict(type="heatmap", z=z, x=list(hm.columns), y=list(hm.index), text=text, zmin=-0.5, zmax=3.5, colorscale=cs, xgap=1, ygap=2,
               hovertemplate="%{y} %{x}: %{text}<extra></extra>",
               colorbar=dict(tickvals=[0, 1, 2, 3], ticktext=["ok", "info", "warning", "critical"], len=0.9, thickness=12)))  # fmt: skip
    p.axis("y", autorange="reversed", type="category")
    p.days(hm.columns)
    return p.figure()


def reference_band(values: Sequence[float] | pd.Series, window: int = 14, k: float = 3.0, min_periods: int = 5) -> pd.DataFrame:
    """Trailing reference band per point: mean +- k std of the previous ``window`` points (the point
    itself excluded, so an outlier cannot widen its own band). NaN until ``min_periods`` points.

    Returns a frame with columns center, lower, upper (same length as ``values``).
    """
    s = pd.Series(np.asarray(values, dtype=np.float64))
    prev = s.shift(1).rolling(window, min_periods=min_periods)
    center, std = prev.mean(), prev.std(ddof=1)
    return pd.DataFrame({"center": center, "lower": center - k * std, "upper": center + k * std})


def _band(p: _Plot, x: Sequence[str], lower: Any, upper: Any, row: int, name: str, first: bool) -> None:
    p.add(dict(type="scatter", x=x, y=_f32(upper), mode="lines", line=dict(width=0), hoverinfo="skip", showlegend=False), row)
    p.add(dict(type="scatter", x=x, y=_f32(lower), mode="lines", line=dict(width=0), fill="tonexty", fillcolor="rgba(96,125,139,0.18)",
               name=name, legendgroup=name, showlegend=first, hoverinfo="skip"), row)  # fmt: skip


def quality_over_time(q: pd.DataFrame, *, drift: pd.DataFrame | None = None, day: str | None = None, window: int = 14,
                      k: float = 3.0, title: str | None = None) -> go.Figure:  # fmt: skip
    """AUC and GAUC, calibration, pCTR vs actual CTR of one head over days, with reference bands.

    ``q``: day, auc, gauc, calibration, mean_pred, actual_rate (one row per day). ``drift``: the
    nightly job's drift rows of this head (day, statistic, value, reference, threshold, alert).
    Where the job tested a statistic (AUC, calibration), the band is its own: reference +- the
    distance to its alert threshold -- exactly what alerted. Elsewhere (actual CTR, days without a
    test) it is the trailing ``window``-day mean +- ``k`` sd, leaving out days that alerted so an
    incident does not widen its own reference. Red x: the job's test alerted that day.
    """
    if q.empty:
        return empty("No quality metrics for this selection.")
    q = q.sort_values("day")
    x = q["day"].tolist()
    drift = drift if drift is not None else pd.DataFrame(columns=["day", "statistic", "value", "reference", "threshold", "alert"])
    alerted = drift[drift["alert"].fillna(False).astype(bool)] if len(drift) else drift
    bad_days = set(alerted["day"])
    p = _Plot(620, title=title, grid=(3, 1), grid_kw=dict(shared_xaxes=True, vertical_spacing=0.07),
              titles=("AUC and GAUC", "Calibration (sum pCTR / clicks)", "Mean pCTR and actual CTR"), margin=dict(l=60, r=20, t=70, b=90))  # fmt: skip
    panels = [(1, "auc", "AUC", "#1e88e5"), (1, "gauc", "GAUC", "#8e24aa"), (2, "calibration", "calibration", "#00897b"),
              (3, "mean_pred", "mean pCTR", "#f4511e"), (3, "actual_rate", "actual CTR", "#546e7a")]  # fmt: skip
    job_band, trailing = "nightly job's band (reference +- distance to its threshold)", f"trailing {window}d mean +- {k:g} sd"
    shown: set[str] = set()
    for row, col, name, color in panels:
        if col not in q or q[col].isna().all():
            continue
        if col in ("auc", "calibration", "actual_rate"):
            tested = drift[(drift["statistic"] == col) & drift["threshold"].notna()] if len(drift) else drift
            if len(tested):
                r = tested.drop_duplicates("day").set_index("day").reindex(x)
                half = (r["reference"] - r["threshold"]).abs()
                _band(p, x, r["reference"] - half, r["reference"] + half, row, job_band, job_band not in shown)
                shown.add(job_band)
            else:
                b = reference_band(q[col].where(~q["day"].isin(bad_days)), window, k)
                if b["center"].notna().any():
                    _band(p, x, b["lower"], b["upper"], row, trailing, trailing not in shown)
                    shown.add(trailing)
        p.add(dict(type="scatter", x=x, y=_f32(q[col]), name=name, mode="lines+markers", marker=dict(size=4), line=dict(color=color)), row)
    rows = {"auc": 1, "gauc": 1, "calibration": 2, "log_mean_pred": 3, "mean_pred": 3}
    by_day = q.set_index("day")
    for stat, g in alerted.groupby("statistic") if len(alerted) else ():
        row = rows.get(stat)
        col = {"log_mean_pred": "mean_pred"}.get(stat, stat)
        if row is None or col not in q:
            continue
        p.add(dict(type="scatter", x=g["day"].tolist(), y=_f32(by_day.reindex(g["day"])[col]), mode="markers", name=f"{stat} alert",
                   marker=dict(symbol="x", size=11, color=SEVERITY_COLOR["critical"])), row)  # fmt: skip
    p.day_marker(day)
    p.days(x)
    return p.figure()


__all__ = ["health_matrix", "quality_over_time", "reference_band"]
