"""Figures of the Features page: drift heat map, field trends, saliency shares, top movers."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ctrlens.distances import psi
from ctrlens.dashboard.figures.base import _Plot, _f32, _ordered, empty


def drift_heatmap(d: pd.DataFrame, *, statistic: str, order: Sequence[str] | None = None, day: str | None = None) -> go.Figure:
    """Fields x days of one drift statistic, coloured by value / threshold (1 = the alert line).

    ``d``: day, subject (field), value, threshold, direction, alert -- the store's
    ``series("drift", ...)`` for ``subject_kind="field"``. For ``direction="below"`` statistics
    (coverage) the ratio is threshold / value, so > 1 always means "past the alert line". Cells
    that alerted get a black outline.
    """
    if d.empty:
        return empty(f"No input drift results ({statistic}) for this selection.")
    subj = pd.Categorical(d["subject"])  # codes instead of per-row dict lookups: a year is ~15k rows per statistic
    fields = _ordered(list(order) if order is not None else [], subj.categories)
    day_cat = pd.Categorical(d["day"])
    days = [str(x) for x in day_cat.categories]  # sorted
    r = np.asarray(subj.set_categories(fields).codes)
    c = np.asarray(day_cat.codes)
    val, thr = d["value"].to_numpy(np.float64), d["threshold"].to_numpy(np.float64)
    below = (d["direction"] == "below").to_numpy(bool) if "direction" in d else np.zeros(len(d), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(np.isfinite(thr) & (thr != 0), val / thr, np.nan)
        ratio = np.where(below, np.where(val != 0, thr / val, np.inf), ratio)
    z = np.full((len(fields), len(days)), np.nan, dtype=np.float32)
    z[r, c] = np.clip(ratio, 0, 5)
    raw = np.full((len(fields), len(days)), np.nan, dtype=np.float32)
    raw[r, c] = val
    p = _Plot(max(280, 110 + 18 * len(fields)), title=f"Input drift: {statistic} per field and day (colour: value / alert threshold)",
              margin=dict(l=150, r=20, t=40, b=40))  # fmt: skip
    p.add(dict(type="heatmap", z=z, x=days, y=fields, customdata=raw, zmin=0, zmax=2,
               colorscale=[[0, "#f7fbff"], [0.35, "#c6dbef"], [0.5, "#fdd49e"], [0.75, "#fc8d59"], [1, "#b30000"]],
               hovertemplate="%{y} on %{x}<br>" + statistic + " = %{customdata:.4g}<br>value / threshold = %{z:.2f}<extra></extra>",
               colorbar=dict(title=dict(text="/ threshold"), thickness=12)))  # fmt: skip
    al = d[d["alert"].fillna(False).astype(bool)] if "alert" in d else d.iloc[0:0]
    if len(al):
        p.add(dict(type="scatter", x=al["day"].tolist(), y=al["subject"].tolist(), mode="markers", name="alert", hoverinfo="skip",
                   marker=dict(symbol="square-open", size=12, color="#000", line=dict(width=2))))  # fmt: skip
    p.axis("y", autorange="reversed", type="category")
    p.day_marker(day)
    p.days(days)
    return p.figure()


def field_trends(fs: pd.DataFrame, field: str, day: str | None = None) -> go.Figure:
    """Coverage (left axis), missing and OOV rates (right axis) of one field over days
    (``series("field_stats", ...)`` frame)."""
    if fs.empty:
        return empty(f"No statistics for field {field!r}.")
    fs = fs.sort_values("day")
    x = fs["day"].tolist()
    p = _Plot(320, title=f"Field {field}: coverage, missing and OOV rates", margin=dict(l=60, r=70, t=50, b=50),
              yaxis=dict(title=dict(text="coverage"), tickformat=".2%"),
              yaxis2=dict(title=dict(text="missing / OOV"), tickformat=".2%", overlaying="y", side="right", showgrid=False))  # fmt: skip
    p.add(dict(type="scatter", x=x, y=_f32(fs["coverage"]), name="coverage", mode="lines+markers", marker=dict(size=4)))
    p.add(dict(type="scatter", x=x, y=_f32(fs["missing_rate"]), name="missing", mode="lines", line=dict(dash="dot"), yaxis="y2"))
    if "oov_rate" in fs and fs["oov_rate"].notna().any():
        p.add(dict(type="scatter", x=x, y=_f32(fs["oov_rate"]), name="OOV", mode="lines", yaxis="y2"))
    p.day_marker(day)
    p.days(x)
    return p.figure()


def saliency_area(s: pd.DataFrame, *, top: int = 10, day: str | None = None, highlight: str | None = None,
                  title: str = "Saliency share per field over days (stacked)") -> go.Figure:  # fmt: skip
    """Saliency share per field over days as a stacked area (the ``top`` fields by mean share, the
    rest summed as "other"). ``s``: day, field, share (one head and method)."""
    if s.empty or s["share"].isna().all():
        return empty("No saliency shares for this selection.")
    day_cat, field_cat = pd.Categorical(s["day"]), pd.Categorical(s["field"])
    mat = np.zeros((len(day_cat.categories), len(field_cat.categories)))
    mat[np.asarray(day_cat.codes), np.asarray(field_cat.codes)] = s["share"].fillna(0.0).to_numpy(np.float64)
    wide = pd.DataFrame(mat, index=[str(x) for x in day_cat.categories], columns=[str(x) for x in field_cat.categories])
    order = wide.mean().sort_values(ascending=False).index.tolist()
    keep = order[:top]
    if highlight and highlight in wide and highlight not in keep:
        keep = keep[:-1] + [highlight]
    x = wide.index.tolist()
    p = _Plot(380, title=title, yaxis=dict(tickformat=".0%"))
    for f in keep:
        p.add(dict(type="scatter", x=x, y=_f32(wide[f]), name=f, mode="lines", stackgroup="share", line=dict(width=3 if f == highlight else 0.5),
                   hovertemplate=f + " %{x}: %{y:.1%}<extra></extra>"))  # fmt: skip
    rest = [f for f in order if f not in keep]
    if rest:
        p.add(dict(type="scatter", x=x, y=_f32(wide[rest].sum(axis=1)), name=f"other ({len(rest)})", mode="lines", stackgroup="share",
                   line=dict(width=0.5, color="#cfd8dc")))  # fmt: skip
    p.day_marker(day)
    p.days(x)
    return p.figure()


def _counts(h: Any) -> list[float] | None:
    if isinstance(h, dict):
        h = h.get("counts")
    return list(h) if isinstance(h, (list, tuple)) and len(h) else None


def top_movers(a_fields: pd.DataFrame | None, b_fields: pd.DataFrame | None, a_sal: pd.DataFrame | None = None,
               b_sal: pd.DataFrame | None = None) -> pd.DataFrame:  # fmt: skip
    """Fields ranked by how much they moved between side A and side B.

    Inputs are ``field_stats`` frames (and ``saliency`` frames of one head and method). Columns:
    field, psi (of the stored histograms; NaN if their bins differ), coverage_a/_b, oov_a/_b,
    share_a/_b, d_share (B - A), score = psi + |d_share| * 10 + |d coverage| * 10 (a ranking only).
    """
    cols = ["field", "psi", "coverage_a", "coverage_b", "oov_a", "oov_b", "share_a", "share_b", "d_share", "score"]
    if a_fields is None or b_fields is None or a_fields.empty or b_fields.empty:
        return pd.DataFrame(columns=cols)
    a = a_fields.set_index("field")
    b = b_fields.set_index("field")
    fields = [f for f in a.index if f in b.index]
    out = pd.DataFrame({"field": fields})
    out["coverage_a"] = a.loc[fields, "coverage"].to_numpy(np.float64)
    out["coverage_b"] = b.loc[fields, "coverage"].to_numpy(np.float64)
    out["oov_a"] = a.loc[fields, "oov_rate"].to_numpy(np.float64)
    out["oov_b"] = b.loc[fields, "oov_rate"].to_numpy(np.float64)
    ps = []
    for f in fields:
        ca, cb = _counts(a.at[f, "hist_json"]), _counts(b.at[f, "hist_json"])
        ps.append(float(psi([ca], [cb])[0]) if ca is not None and cb is not None and len(ca) == len(cb) else np.nan)
    out["psi"] = ps
    share = {}
    for side, sal in (("a", a_sal), ("b", b_sal)):
        share[side] = sal.groupby("field")["share"].first() if sal is not None and len(sal) else pd.Series(dtype=float)
    out["share_a"] = out["field"].map(share["a"]).astype(float)
    out["share_b"] = out["field"].map(share["b"]).astype(float)
    out["d_share"] = out["share_b"] - out["share_a"]
    out["score"] = (out["psi"].fillna(0) + out["d_share"].abs().fillna(0) * 10
                    + (out["coverage_b"] - out["coverage_a"]).abs().fillna(0) * 10)  # fmt: skip
    return out.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)[cols]


def movers_figure(m: pd.DataFrame, a_label: str, b_label: str, n: int = 12) -> go.Figure:
    """The top movers as bars: PSI between the two sides and the change of saliency share."""
    if m.empty:
        return empty("Nothing to compare: pick two days (or checkpoints) that both have field statistics.")
    m = m.head(n).iloc[::-1]
    p = _Plot(max(260, 80 + 22 * len(m)), grid=(1, 2), grid_kw=dict(shared_yaxes=True, horizontal_spacing=0.04),
              titles=(f"input PSI, {a_label} -> {b_label}", "saliency share change"), showlegend=False,
              margin=dict(l=150, r=20, t=50, b=40))  # fmt: skip
    fields = m["field"].tolist()
    p.add(dict(type="bar", x=_f32(m["psi"]), y=fields, orientation="h", marker=dict(color="#fb8c00"), name="PSI",
               hovertemplate="%{y}: PSI %{x:.3g}<extra></extra>"))  # fmt: skip
    colors = np.where(m["d_share"].fillna(0) < 0, "#e53935", "#43a047").tolist()
    p.add(dict(type="bar", x=_f32(m["d_share"]), y=fields, orientation="h", marker=dict(color=colors), name="d share",
               hovertemplate="%{y}: %{x:+.2%}<extra></extra>"), 1, 2)  # fmt: skip
    p.axis("x", 1, 2, tickformat="+.1%")
    return p.figure()


__all__ = ["drift_heatmap", "field_trends", "movers_figure", "saliency_area", "top_movers"]
