"""Figures of the Compare page: neuron and layer shifts, saliency, probes and scores side by side."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ctrlens.distances import psi, standardised_shift
from ctrlens.dashboard.figures.base import _Plot, _f32, empty
from ctrlens.dashboard.figures.probes import probe_by_layer


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


__all__ = ["compare_layers", "compare_neuron_scatter", "compare_probes", "compare_saliency", "layer_shift", "neuron_shift", "score_distribution"]
