"""Plotly figures of the dashboard: pure functions of the store's DataFrames.

Nothing here touches the database or Dash, so every figure is unit-testable without a browser:
hand a frame in (the shape the store's query API returns), get a ``plotly.graph_objects.Figure``.
A few pure computations the views need live here too (reference bands, top movers, neuron shifts).

Speed (every callback has a 300 ms budget on a year of history): figures are collected as plain
dicts by :class:`_Plot` and validated once by ``go.Figure`` at the end -- plotly's incremental API
(``add_trace(row=...)``, ``add_vline``, ``make_subplots``, named templates) costs 5-30 ms per call.
Subplot grids come from ``make_subplots`` once per shape (cached). Large matrices go to the
browser as float32 typed arrays (plotly encodes numpy arrays as base64): a 512-neuron x 365-day
heat map is about 1 MB and serialises in milliseconds.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ctrlens.distances import psi, standardised_shift

SEVERITY_CODE = {"ok": 0, "info": 1, "warning": 2, "critical": 3}
SEVERITY_COLOR = {"ok": "#4caf50", "info": "#64b5f6", "warning": "#ff9800", "critical": "#e53935"}
NO_RUN_COLOR = "#eceff1"
CLICK_COLORS = {0: "#90a4ae", 1: "#ef6c00"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
DAY_MS = 86_400_000
MARKER_LINE = dict(color="#455a64", width=1, dash="dot")

# A small template made once: plotly's named templates ("plotly_white") are deep-copied into every
# figure, which costs ~15 ms a figure.
_AXIS = dict(gridcolor="#eceff1", zerolinecolor="#cfd8dc", linecolor="#cfd8dc", automargin=True)
TEMPLATE = go.layout.Template(layout=dict(plot_bgcolor="white", paper_bgcolor="white", xaxis=_AXIS, yaxis=_AXIS, hovermode="closest",
                                          colorway=list(PALETTE)))  # fmt: skip
# legends go under the plot: above it they collide with titles and subplot titles
LAYOUT = dict(template=TEMPLATE, margin=dict(l=60, r=20, t=50, b=50), font=dict(size=12),
              legend=dict(orientation="h", yanchor="top", y=-0.15, x=0))  # fmt: skip


def _palette(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _title(text: str) -> dict[str, Any]:
    return dict(text=text, font=dict(size=13))


@functools.lru_cache(maxsize=32)
def _grid_layout(rows: int, cols: int, n_titles: int, **kw: Any) -> dict[str, Any]:
    """Axes and title annotations of a ``make_subplots`` grid, computed once per shape."""
    from plotly.subplots import make_subplots

    titles = tuple(f"\x00{i}" for i in range(n_titles)) or None
    lay = make_subplots(rows=rows, cols=cols, subplot_titles=titles, **kw).layout.to_plotly_json()
    lay.pop("template", None)
    return lay


class _Plot:
    """Traces, shapes and layout as plain dicts; :meth:`figure` validates them once."""

    def __init__(self, height: int, *, title: str | None = None, grid: tuple[int, int] = (1, 1), titles: Sequence[str] = (),
                 grid_kw: dict[str, Any] | None = None, **layout: Any) -> None:  # fmt: skip
        self.rows, self.cols = grid
        self.data: list[dict[str, Any]] = []
        self.shapes: list[dict[str, Any]] = []
        self.layout: dict[str, Any] = {**LAYOUT, "height": height, **layout}
        if title:
            self.layout["title"] = _title(title)
        if grid != (1, 1) or titles:
            g = copy.deepcopy(_grid_layout(self.rows, self.cols, len(titles), **(grid_kw or {})))
            for ann, text in zip(g.get("annotations", []), titles):
                ann["text"] = text
            self.layout.update(g)

    def _n(self, row: int, col: int) -> int:
        return (row - 1) * self.cols + col

    def ref(self, axis: str, row: int = 1, col: int = 1) -> str:
        """``"x"``, ``"y2"`` ... of subplot (row, col)."""
        n = self._n(row, col)
        return axis if n == 1 else f"{axis}{n}"

    def add(self, trace: dict[str, Any], row: int = 1, col: int = 1) -> None:
        if (row, col) != (1, 1):
            trace = {**trace, "xaxis": self.ref("x", row, col), "yaxis": self.ref("y", row, col)}
        self.data.append(trace)

    def axis(self, axis: str, row: int = 1, col: int = 1, **props: Any) -> None:
        key = axis + "axis" + ("" if self._n(row, col) == 1 else str(self._n(row, col)))
        self.layout[key] = {**self.layout.get(key, {}), **props}

    def all_axes(self, axis: str, **props: Any) -> None:
        for r in range(1, self.rows + 1):
            for c in range(1, self.cols + 1):
                self.axis(axis, r, c, **props)

    def vline(self, x: Any, row: int = 1, col: int = 1, line: dict[str, Any] | None = None) -> None:
        self.shapes.append(dict(type="line", x0=x, x1=x, y0=0, y1=1, xref=self.ref("x", row, col), yref=self.ref("y", row, col) + " domain",
                                line=line or MARKER_LINE))  # fmt: skip

    def hline(self, y: Any, row: int = 1, col: int = 1, line: dict[str, Any] | None = None) -> None:
        self.shapes.append(dict(type="line", y0=y, y1=y, x0=0, x1=1, yref=self.ref("y", row, col), xref=self.ref("x", row, col) + " domain",
                                line=line or MARKER_LINE))  # fmt: skip

    def row_box(self, y: float, row: int = 1, col: int = 1) -> None:
        """An outline around heat-map row ``y`` (its index on a category axis): the selected row."""
        self.shapes.append(dict(type="rect", x0=0, x1=1, y0=y - 0.5, y1=y + 0.5, xref=self.ref("x", row, col) + " domain",
                                yref=self.ref("y", row, col), line=dict(color="#ff1744", width=2), fillcolor="rgba(0,0,0,0)"))  # fmt: skip

    def day_marker(self, day: str | None) -> None:
        """A dotted line at the day looked at, in every subplot."""
        if day:
            for r in range(1, self.rows + 1):
                for c in range(1, self.cols + 1):
                    self.vline(day, r, c)

    def days(self, days: Any) -> None:
        """Day ticks (with a few days plotly would tick hours)."""
        n = len(set(days)) if days is not None else 0
        if 0 < n <= 14:
            self.all_axes("x", dtick=DAY_MS, tickformat="%b %d")

    def figure(self) -> go.Figure:
        return go.Figure(data=self.data, layout={**self.layout, "shapes": self.shapes} if self.shapes else self.layout)


def _fig(height: int = 320, **layout: Any) -> go.Figure:
    return go.Figure(layout={**LAYOUT, "height": height, **layout})


def empty(message: str, height: int = 260) -> go.Figure:
    """A blank figure that says why it is blank (no data, a bad selection)."""
    return _fig(height, xaxis=dict(visible=False), yaxis=dict(visible=False), annotations=[
        dict(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=14, color="#555"))])  # fmt: skip


def _ordered(order: Sequence[str], present: Any) -> list[str]:
    """The values of ``present`` in the given ``order``, then the others sorted."""
    have = set(present)
    return [x for x in order if x in have] + sorted(have - set(order))


def _f32(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)


# ------------------------------------------------------------------------------ overview


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


# ------------------------------------------------------------------------------ features


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


# ------------------------------------------------------------------------------ neurons


def layer_fractions(ls: pd.DataFrame, day: str | None = None, highlight: str | None = None) -> go.Figure:
    """Dead and saturated fractions per layer over days (``series("layer_stats", ...)`` frame)."""
    if ls.empty:
        return empty("No layer statistics for this selection.")
    p = _Plot(320, grid=(1, 2), grid_kw=dict(horizontal_spacing=0.08), titles=("dead fraction", "saturated fraction"))
    for i, (la, g) in enumerate(ls.sort_values("day").groupby("layer", sort=False)):
        line = dict(width=3 if la == highlight else 1.5, color=_palette(i))
        x = g["day"].tolist()
        p.add(dict(type="scatter", x=x, y=_f32(g["dead_fraction"]), name=la, legendgroup=la, mode="lines", line=line))
        p.add(dict(type="scatter", x=x, y=_f32(g["saturated_fraction"]), name=la, legendgroup=la, showlegend=False, mode="lines", line=line),
              1, 2)  # fmt: skip
    p.all_axes("y", tickformat=".0%", rangemode="tozero")
    for col, c in (("dead_fraction", 1), ("saturated_fraction", 2)):
        if ls[col].isna().all():  # e.g. saturation of ReLU layers: not defined
            p.axis("y", 1, c, range=[0, 1])
    p.day_marker(day)
    p.days(ls["day"])
    return p.figure()


def neuron_heatmap(hm: pd.DataFrame, *, statistic: str, layer: str, neuron: int | None = None, day: str | None = None) -> go.Figure:
    """Neurons x days of one statistic (``Store.heatmap`` frame). Click a cell to pick that neuron."""
    if hm.empty:
        return empty(f"No neuron statistics for layer {layer}.")
    p = _Plot(max(300, min(700, 120 + 2 * len(hm.index))), title=f"{layer}: {statistic} per neuron and day (click a cell to pick a neuron)",
              margin=dict(l=60, r=20, t=40, b=40), yaxis=dict(title=dict(text="neuron"), autorange="reversed"))  # fmt: skip
    p.add(dict(type="heatmap", z=hm.to_numpy(dtype=np.float32), x=list(hm.columns), y=hm.index.to_numpy(np.int32), colorscale="Viridis",
               hovertemplate="neuron %{y}, %{x}: %{z:.4g}<extra></extra>", colorbar=dict(thickness=12)))  # fmt: skip
    if neuron is not None:
        p.row_box(neuron)
    p.day_marker(day)
    p.days(hm.columns)
    return p.figure()


def bin_labels(edges: Sequence[float]) -> list[str]:
    """``[a, b)`` labels of histogram bins (``-inf`` / ``inf`` ends as under/overflow)."""

    def f(x: float) -> str:
        return "-inf" if x == -math.inf else "inf" if x == math.inf else f"{x:.3g}"

    return [f"[{f(a)}, {f(b)})" for a, b in zip(edges[:-1], edges[1:])]


def neuron_histograms(h: pd.DataFrame, edges: Sequence[float] | None, *, layer: str, neuron: int, day: str | None = None) -> go.Figure:
    """One neuron's activation histograms across days: days x bins of proportions.
    ``h``: day, hist_json (counts over the layer's ``edges``: ``len(edges) == bins + 1``, or the
    finite edges only with under/overflow counts at both ends, as :mod:`ctrlens.neurons` writes)."""
    h = h[h["hist_json"].map(lambda v: isinstance(v, (list, tuple)) and len(v) > 0)] if len(h) else h
    if h.empty:
        return empty(f"No histograms for neuron {neuron} of {layer}.")
    h = h.sort_values("day")
    k = max(len(v) for v in h["hist_json"])
    mat = np.zeros((len(h), k), dtype=np.float64)
    for i, v in enumerate(h["hist_json"]):
        mat[i, : len(v)] = v
    tot = mat.sum(1, keepdims=True)
    prop = np.divide(mat, tot, out=np.zeros_like(mat), where=tot > 0).astype(np.float32)
    if edges is not None and len(edges) == k - 1:  # ctrlens.neurons: [underflow, bins..., overflow] over finite edges
        edges = [-math.inf, *edges, math.inf]
    labels = bin_labels(edges) if edges is not None and len(edges) == k + 1 else [f"bin {i}" for i in range(k)]
    days = h["day"].tolist()
    p = _Plot(max(300, min(620, 140 + 6 * len(h))), title=f"{layer} neuron {neuron}: activation histogram per day (share of rows)",
              yaxis=dict(autorange="reversed", type="category"))  # fmt: skip
    p.add(dict(type="heatmap", z=prop, x=labels, y=days, colorscale="Blues", zmin=0, hovertemplate="%{y} %{x}: %{z:.1%}<extra></extra>",
               colorbar=dict(thickness=12, tickformat=".0%")))  # fmt: skip
    if day and day in days:
        p.row_box(days.index(day))
    return p.figure()


def projection(proj: dict[str, Any] | None, *, layer: str, day: str) -> go.Figure:
    """The stored 2-D projection (PCA sample) of a layer's activations, coloured by the click label."""
    if not isinstance(proj, dict) or not proj.get("x"):
        return empty(f"No 2-D projection stored for {layer} on {day}.")
    x, y = _f32(proj["x"]), _f32(proj["y"])
    lab = np.asarray(proj.get("label") or [0] * len(x))
    p = _Plot(360, title=f"{layer} on {day}: 2-D projection of activations, coloured by click")
    for v in sorted(set(lab.tolist())):
        m = lab == v
        p.add(dict(type="scatter", x=x[m], y=y[m], mode="markers", name="click" if v == 1 else "no click" if v == 0 else str(v),
                   marker=dict(size=5, opacity=0.7, color=CLICK_COLORS.get(v))))  # fmt: skip
    return p.figure()


def embedding_health(e: pd.DataFrame, day: str | None = None) -> go.Figure:
    """Embedding tables over days: effective rank (collapse shows as a fall) and the share of seen
    rows never updated since initialisation. ``e``: day, table, effective_rank, never_updated_frac."""
    if e.empty:
        return empty("No embedding-table health results for this selection.")
    p = _Plot(320, grid=(1, 2), grid_kw=dict(horizontal_spacing=0.08), titles=("effective rank", "never-updated share of seen rows"))
    for i, (t, g) in enumerate(e.sort_values("day").groupby("table", sort=False)):
        x, line = g["day"].tolist(), dict(color=_palette(i))
        p.add(dict(type="scatter", x=x, y=_f32(g["effective_rank"]), name=t, legendgroup=t, line=line))
        p.add(dict(type="scatter", x=x, y=_f32(g["never_updated_frac"]), name=t, legendgroup=t, showlegend=False, line=line), 1, 2)
    p.axis("y", 1, 2, tickformat=".0%", rangemode="tozero")
    if e["never_updated_frac"].isna().all():
        p.axis("y", 1, 2, range=[0, 1])
    p.day_marker(day)
    p.days(e["day"])
    return p.figure()


# ------------------------------------------------------------------------------ probes


def probe_by_layer(p: pd.DataFrame, order: Sequence[str], *, group: str = "day", head: str = "") -> go.Figure:
    """Probe AUC by layer (x in model order), one line per ``group`` value (a day or a checkpoint
    label); dashed: the model's own AUC. ``p``: group, layer, auc, model_auc."""
    if p.empty:
        return empty("No probe results for this selection.")
    layers = _ordered(order, p["layer"])
    out = _Plot(380, title=f"Probe AUC by layer ({head}): how much click signal each layer carries linearly",
                xaxis=dict(type="category", categoryorder="array", categoryarray=layers),
                yaxis=dict(title=dict(text="AUC (dashed: the model's)")))  # fmt: skip
    groups = list(dict.fromkeys(p[group].tolist()))
    for i, gv in enumerate(groups):
        g = p[p[group] == gv].drop_duplicates("layer").set_index("layer").reindex(layers)
        out.add(dict(type="scatter", x=layers, y=_f32(g["auc"]), name=str(gv), mode="lines+markers",
                     line=dict(color=_palette(i), width=2.5 if i == len(groups) - 1 else 1.2)))  # fmt: skip
        m = g["model_auc"].dropna()
        if len(m):
            out.add(dict(type="scatter", x=[layers[0], layers[-1]], y=[float(m.iloc[0])] * 2, mode="lines", showlegend=False,
                         line=dict(color=_palette(i), dash="dash", width=1), hovertemplate=f"model AUC {gv}: %{{y:.4f}}<extra></extra>"))  # fmt: skip
    return out.figure()


def probe_trend(f: pd.DataFrame, order: Sequence[str], *, head: str = "", day: str | None = None, layer: str | None = None) -> go.Figure:
    """Each layer's probe AUC over days (``f``: day, layer, auc -- fresh probes, one per day)."""
    if f.empty:
        return empty("No probe results for this selection.")
    p = _Plot(360, title=f"Probe AUC per layer over days ({head})")
    for i, la in enumerate(_ordered(order, f["layer"])):
        g = f[f["layer"] == la].sort_values("day")
        p.add(dict(type="scatter", x=g["day"].tolist(), y=_f32(g["auc"]), name=la, mode="lines",
                   line=dict(color=_palette(i), width=3 if la == layer else 1.5)))  # fmt: skip
    p.day_marker(day)
    p.days(f["day"])
    return p.figure()


def probe_decay(p: pd.DataFrame, order: Sequence[str], *, train_day: str, head: str = "", layer: str | None = None) -> go.Figure:
    """The decay protocol: probes fitted on ``train_day`` scored on later days (one line per layer).
    ``p``: layer, train_day, eval_day, auc."""
    d = p[p["train_day"] == train_day] if len(p) else p
    if d.empty or d["eval_day"].nunique() < 2:
        return empty(f"No decay runs: probes fitted on {train_day} were not scored on later days.")
    out = _Plot(360, title=f"Decay ({head}): probes fitted on {train_day}, scored on later days", yaxis=dict(title=dict(text="probe AUC")))
    for i, la in enumerate(_ordered(order, d["layer"])):
        g = d[d["layer"] == la].sort_values("eval_day")
        out.add(dict(type="scatter", x=g["eval_day"].tolist(), y=_f32(g["auc"]), name=la, mode="lines+markers", marker=dict(size=4),
                     line=dict(color=_palette(i), width=3 if la == layer else 1.5)))  # fmt: skip
    out.days(d["eval_day"])
    return out.figure()


# ------------------------------------------------------------------------------ compare


def neuron_shift(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per neuron, side B against side A (definitions of :mod:`ctrlens.neurons.compare`):
    ``shift = (mean_b - mean_a) / std_a``, ``std_ratio = std_b / std_a`` (the founding paper's
    fluctuation), ``psi`` of the histograms (NaN if their bins differ), dead on each side
    (``frac_zero > 0.99``). ``a``, ``b``: neuron_stats frames (``hist_json`` optional: PSI is NaN without)."""
    cols = ["layer", "neuron", "mean", "std", "frac_zero"] + (["hist_json"] if "hist_json" in a and "hist_json" in b else [])
    m = a[cols].merge(b[cols], on=["layer", "neuron"], suffixes=("_a", "_b"))
    if m.empty:
        return pd.DataFrame(columns=["layer", "neuron", "mean_a", "mean_b", "shift", "std_ratio", "psi", "dead_a", "dead_b"])
    ma, mb = m["mean_a"].to_numpy(np.float64), m["mean_b"].to_numpy(np.float64)
    sa, sb = m["std_a"].to_numpy(np.float64), m["std_b"].to_numpy(np.float64)
    shift, ratio = standardised_shift(ma, sa, mb, sb)
    ps = np.full(len(m), np.nan)
    ha = m["hist_json_a"].tolist() if "hist_json_a" in m else [None] * len(m)
    hb = m["hist_json_b"].tolist() if "hist_json_b" in m else [None] * len(m)
    same = [i for i in range(len(m)) if isinstance(ha[i], list) and isinstance(hb[i], list) and len(ha[i]) == len(hb[i]) > 0]
    if same:
        # group by histogram length so each group is one vectorised PSI
        by_len: dict[int, list[int]] = {}
        for i in same:
            by_len.setdefault(len(ha[i]), []).append(i)
        for idx in by_len.values():
            ps[idx] = psi([ha[i] for i in idx], [hb[i] for i in idx])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = pd.DataFrame({
            "layer": m["layer"], "neuron": m["neuron"], "mean_a": ma, "mean_b": mb, "shift": shift,
            "std_ratio": ratio, "psi": ps, "dead_a": m["frac_zero_a"].to_numpy(np.float64) > 0.99,
            "dead_b": m["frac_zero_b"].to_numpy(np.float64) > 0.99,
        })  # fmt: skip
    return out


def layer_shift(ns: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Per layer from :func:`neuron_shift`: mean / max |shift|, fluctuation = mean |log std_ratio|,
    mean PSI, dead fraction on each side."""
    cols = ["layer", "n", "mean_abs_shift", "max_abs_shift", "fluctuation", "mean_psi", "dead_a", "dead_b"]
    if ns.empty:
        return pd.DataFrame(columns=cols)
    g = ns.assign(abs_shift=ns["shift"].abs(), log_ratio=np.abs(np.log(ns["std_ratio"].astype(float)))).groupby("layer", sort=False)
    out = pd.DataFrame({
        "n": g.size(), "mean_abs_shift": g["abs_shift"].mean(), "max_abs_shift": g["abs_shift"].max(),
        "fluctuation": g["log_ratio"].mean(), "mean_psi": g["psi"].mean(), "dead_a": g["dead_a"].mean(), "dead_b": g["dead_b"].mean(),
    }).reset_index()  # fmt: skip
    if order is not None:
        rank = {la: i for i, la in enumerate(order)}
        out = out.sort_values("layer", key=lambda s: s.map(lambda x: rank.get(x, len(rank))), kind="stable").reset_index(drop=True)
    return out[cols]


def compare_layers(ls: pd.DataFrame, a_label: str, b_label: str) -> go.Figure:
    """Per layer (``ls`` from :func:`layer_shift`, side A = the reference): mean |mean shift| in the
    reference's sd, fluctuation |log std ratio|, mean PSI; dead fractions of both sides."""
    if ls.empty:
        return empty("The two sides share no neurons (different layers or no neuron statistics).")
    p = _Plot(360, grid=(1, 2), grid_kw=dict(horizontal_spacing=0.08), titles=(f"neuron shifts, {b_label} vs {a_label}", "dead fraction"),
              barmode="group")  # fmt: skip
    x = ls["layer"].tolist()
    for col, name, color in (("mean_abs_shift", "mean |shift| (in reference sd)", "#1e88e5"), ("fluctuation", "fluctuation |log std ratio|", "#8e24aa"),
                             ("mean_psi", "mean PSI", "#fb8c00")):  # fmt: skip
        p.add(dict(type="bar", x=x, y=_f32(ls[col]), name=name, marker=dict(color=color)))
    p.add(dict(type="bar", x=x, y=_f32(ls["dead_a"]), name=f"dead, {a_label}", marker=dict(color="#90a4ae")), 1, 2)
    p.add(dict(type="bar", x=x, y=_f32(ls["dead_b"]), name=f"dead, {b_label}", marker=dict(color="#e53935")), 1, 2)
    p.axis("y", 1, 2, tickformat=".0%")
    return p.figure()


def compare_neuron_scatter(ns: pd.DataFrame, layer: str, a_label: str, b_label: str) -> go.Figure:
    """Each neuron of ``layer``: mean on side A vs side B (the diagonal = unchanged)."""
    d = ns[ns["layer"] == layer] if len(ns) else ns
    if d.empty:
        return empty(f"No neurons of {layer} on both sides.")
    lo = float(np.nanmin([d["mean_a"].min(), d["mean_b"].min()]))
    hi = float(np.nanmax([d["mean_a"].max(), d["mean_b"].max()]))
    p = _Plot(360, title=f"{layer}: neuron mean activation, {a_label} (x) vs {b_label} (y)")
    p.add(dict(type="scatter", x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="#b0bec5", dash="dash"), showlegend=False,
               hoverinfo="skip"))  # fmt: skip
    p.add(dict(type="scatter", x=_f32(d["mean_a"]), y=_f32(d["mean_b"]), mode="markers", name="neurons", customdata=d["neuron"].to_numpy(np.int32),
               marker=dict(size=6, color=_f32(d["shift"].abs().clip(upper=5)), colorscale="Viridis", showscale=True,
                           colorbar=dict(title=dict(text="|shift|"), thickness=12)),
               hovertemplate="neuron %{customdata}: %{x:.3g} -> %{y:.3g}<extra></extra>"))  # fmt: skip
    return p.figure()


def compare_saliency(a: pd.DataFrame | None, b: pd.DataFrame | None, a_label: str, b_label: str, top: int = 15) -> go.Figure:
    """Saliency shares of the two sides, side by side (``a``, ``b``: field, share)."""
    if a is None or b is None or a.empty or b.empty:
        return empty("No saliency results on one of the two sides.")
    m = pd.merge(a[["field", "share"]], b[["field", "share"]], on="field", how="outer", suffixes=("_a", "_b")).fillna(0.0)
    m = m.assign(k=m[["share_a", "share_b"]].max(axis=1)).sort_values("k", ascending=False).head(top)
    p = _Plot(360, title="Saliency share per field", barmode="group", yaxis=dict(tickformat=".0%"))
    p.add(dict(type="bar", x=m["field"].tolist(), y=_f32(m["share_a"]), name=a_label, marker=dict(color="#90a4ae")))
    p.add(dict(type="bar", x=m["field"].tolist(), y=_f32(m["share_b"]), name=b_label, marker=dict(color="#1e88e5")))
    return p.figure()


def compare_probes(a: pd.DataFrame | None, b: pd.DataFrame | None, order: Sequence[str], a_label: str, b_label: str,
                   head: str = "") -> go.Figure:  # fmt: skip
    """Probe AUC by layer of the two sides (each: layer, auc, model_auc)."""
    frames = [f.assign(side=lab) for f, lab in ((a, a_label), (b, b_label)) if f is not None and len(f)]
    if not frames:
        return empty("No probe results on either side.")
    return probe_by_layer(pd.concat(frames, ignore_index=True), order, group="side", head=head)


def score_distribution(a: Any, b: Any, a_label: str, b_label: str, head: str = "") -> go.Figure:
    """The founding paper's normalised score (pCTR / actual CTR) distribution of the two sides
    (``score_hist_json`` dicts: edges, counts), as shares of rows."""
    p = _Plot(320, title=f"Score distribution ({head}): pCTR / actual CTR, share of rows", yaxis=dict(tickformat=".0%"))
    for h, lab, color in ((a, a_label, "#90a4ae"), (b, b_label, "#1e88e5")):
        if not isinstance(h, dict) or not h.get("counts"):
            continue
        counts = np.asarray(h["counts"], dtype=np.float64)
        edges = np.asarray(h.get("edges") or np.arange(len(counts) + 1), dtype=np.float64)
        if len(edges) != len(counts) + 1:
            edges = np.arange(len(counts) + 1, dtype=np.float64)
        fin = np.where(np.isfinite(edges), edges, np.nan)
        with np.errstate(invalid="ignore"):
            centers = (fin[:-1] + fin[1:]) / 2
        # an open-ended last (or first) bin is drawn at the last finite edge
        centers = np.where(np.isfinite(centers), centers, np.nanmax(fin) if np.isfinite(fin).any() else 0.0)
        tot = counts.sum()
        p.add(dict(type="scatter", x=centers, y=counts / tot if tot else counts, name=lab, mode="lines", line=dict(shape="hvh", color=color),
                   fill="tozeroy", opacity=0.6))  # fmt: skip
    if not p.data:
        return empty("No score distribution stored on either side.")
    p.vline(1.0)
    return p.figure()


__all__ = [
    "bin_labels",
    "compare_layers",
    "compare_neuron_scatter",
    "compare_probes",
    "compare_saliency",
    "drift_heatmap",
    "embedding_health",
    "empty",
    "field_trends",
    "health_matrix",
    "layer_fractions",
    "layer_shift",
    "movers_figure",
    "neuron_heatmap",
    "neuron_histograms",
    "neuron_shift",
    "probe_by_layer",
    "probe_decay",
    "probe_trend",
    "projection",
    "psi",
    "quality_over_time",
    "reference_band",
    "saliency_area",
    "score_distribution",
    "top_movers",
]
