"""Figures of the Neurons page: dead/saturated fractions, heat maps, histograms, projections, embedding health."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ctrlens.dashboard.figures.base import CLICK_COLORS, _Plot, _f32, _palette, empty


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


__all__ = ["bin_labels", "embedding_health", "layer_fractions", "neuron_heatmap", "neuron_histograms", "projection"]
