"""Figures of the Probes page: probe AUC by layer, over days, decay."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import plotly.graph_objects as go

from ctrlens.dashboard.figures.base import _Plot, _f32, _ordered, _palette, empty


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


__all__ = ["probe_by_layer", "probe_decay", "probe_trend"]
