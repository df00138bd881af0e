"""Drift tests of the input side: fields, labels and fields that hold another field's values.

Checkpoint-free: the same rows whichever model serves the day.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ctrlens.distances import js, psi, wasserstein_norm
from ctrlens.monitor.drift.bands import binom_sd
from ctrlens.monitor.drift.core import SuiteCore, eq, log_safe, nanmean
from ctrlens.results import Result


class InputTests(SuiteCore):
    """``fields`` (``field_stats``: distances, coverage, OOV, cardinality, top share, mean, std; label
    rates) and ``swaps`` (today's A against the reference's B)."""

    def fields(self, today: Result | None) -> None:
        """Input fields and labels (``field_stats``)."""
        if today is None:
            return
        for r in today.frame.itertuples(index=False):
            f = r.field
            if r.kind == "label":
                days, vals = self.ref_series("field_stats", "label", f, eq("field", f), "mean")
                self.add("label", f, "rate", r.mean, vals, floor=max(self.floor("rate"), binom_sd(r.mean, r.rows)), ref_days=days)
                continue
            sk = "field"
            is_f = eq("field", f)
            hist = r.hist_json if isinstance(r.hist_json, dict) else {}
            counts = hist.get("counts")
            edges = hist.get("edges")
            if counts is not None:
                refs = self.ref_hists("field_stats", sk, f, is_f, edges=edges)
                self.add_distance(sk, f, "psi", counts, refs, psi)
                self.add_distance(sk, f, "js", counts, refs, js)
                if r.kind in ("dense", "position", "image"):
                    scale = nanmean(self.ref_values("field_stats", sk, f, is_f, "std"))
                    wm = lambda p, q, e=edges, s=scale: wasserstein_norm(e, p, q, s)  # noqa: E731
                    self.add_distance(sk, f, "wasserstein_norm", counts, refs, wm)
            if r.kind != "position":
                cov_ref = self.ref_values("field_stats", sk, f, is_f, "coverage")
                self.add(sk, f, "coverage", r.coverage, cov_ref, floor=max(self.floor("coverage"), binom_sd(r.coverage, r.rows)))
            if r.kind in ("sparse", "sequence", "bag"):
                self.add(sk, f, "oov_rate", r.oov_rate, self.ref_values("field_stats", sk, f, is_f, "oov_rate"),
                         floor=max(self.floor("oov_rate"), binom_sd(r.oov_rate, r.rows)))
                self.add(sk, f, "log_cardinality", log_safe(r.cardinality),
                         self.ref_values("field_stats", sk, f, is_f, "cardinality", log_safe))
                self.add(sk, f, "top1_share", _top1(r.top_json),
                         [_top1(t) for t in self._ref_col("field_stats", sk, f, is_f, "top_json")])
            if r.kind in ("dense", "sequence", "bag", "position", "image"):
                stds = self.ref_values("field_stats", sk, f, is_f, "std")
                scale = nanmean(stds)
                if np.isfinite(scale) and scale > 0:
                    mz = lambda v, c=scale: (np.asarray(v) / c)  # noqa: E731
                    self.add(sk, f, "mean_z", r.mean / scale, self.ref_values("field_stats", sk, f, is_f, "mean", mz))
                if r.kind in ("dense", "sequence", "bag"):
                    self.add(sk, f, "log_std", log_safe(r.std), self.ref_values("field_stats", sk, f, is_f, "std", log_safe))

    def swaps(self, today: Result | None) -> None:
        """Fields that hold another field's values: today's ``A`` far from the reference's ``A`` and close
        to the reference's ``B`` (same kind). Rows ``subject_kind="swap"``, subject ``"A<-B"``, statistic
        ``cross_distance``: value = distance(today A, reference B), reference = distance(today A,
        reference A). Distances: id fields the larger of (the share of today's top values absent from
        the reference's top values) and (the total variation between today's top-value shares and the
        reference's shares of the same values); dense fields ``|mean - mean_B| / std_B + |log(std / std_B)|``.
        Alerts when the cross distance is small and under a third of the own distance."""
        if today is None:
            return
        ref = self.h.frame("field_stats")
        if ref.empty or len(set(ref["day"])) < max(self.min_days, 2):
            return
        t = today.frame.set_index("field")
        sigs = {}
        for f, g in ref.groupby("field"):
            if f in t.index:
                sigs[f] = _signature(g)
        for a in t.index:
            ka = t.loc[a, "kind"]
            if ka not in ("sparse", "sequence", "dense") or a not in sigs:
                continue
            now = _signature_row(t.loc[a])
            own = _sig_distance(ka, now, sigs[a])
            cut = SWAP_CUT[ka]
            if not (np.isfinite(own) and own > 2 * cut):
                continue
            for b, sb in sigs.items():
                if b == a or t.loc[b, "kind"] != ka:
                    continue
                cross = _sig_distance(ka, now, sb)
                if np.isfinite(cross) and cross <= cut and cross * 3 <= own:
                    self.rows.append({
                        "subject_kind": "swap", "subject": f"{a}<-{b}", "statistic": "cross_distance",
                        "method": f"today's {a} vs the reference's {b} ({'top-value overlap' if ka != 'dense' else 'mean/std'}"
                                  f" distance); alert <= {cut:g} and <= 1/3 of the distance to its own reference ({self.h.label})",
                        "value": float(cross), "reference": float(own), "threshold": cut, "direction": "below",
                        "alert": True, "severity": float(min(own / max(cross, 1e-3) / 3.0, 9.9)),
                    })  # fmt: skip


#: Largest distance at which today's field "looks like" another field's reference (see DriftSuite.swaps).
SWAP_CUT = {"sparse": 0.3, "sequence": 0.3, "dense": 0.3}


def _top_shares(top: Any) -> dict[Any, float]:
    if not isinstance(top, list):
        return {}
    return {str(k): float(v) for k, v in (tuple(x) for x in top if isinstance(x, (list, tuple)) and len(x) == 2)
            if k != "__other__"}  # fmt: skip


def _signature(ref: pd.DataFrame) -> dict[str, Any]:
    """A field's reference signature: mean top-value shares over the days, mean of means and stds."""
    shares: dict[Any, float] = {}
    n = 0
    for top in ref["top_json"]:
        d = _top_shares(top)
        if d:
            n += 1
            for k, v in d.items():
                shares[k] = shares.get(k, 0.0) + v
    return {"top": {k: v / n for k, v in shares.items()} if n else {},
            "mean": nanmean(ref["mean"].astype(float)), "std": nanmean(ref["std"].astype(float))}


def _signature_row(r: Any) -> dict[str, Any]:
    return {"top": _top_shares(r["top_json"]), "mean": float(r["mean"]), "std": float(r["std"])}


def _sig_distance(kind: str, a: dict[str, Any], b: dict[str, Any]) -> float:
    if kind == "dense":
        if not (np.isfinite(a["mean"]) and np.isfinite(b["mean"]) and a["std"] > 0 and b["std"] > 0):
            return float("nan")
        return float(abs(a["mean"] - b["mean"]) / b["std"] + abs(math.log(a["std"] / b["std"])))
    p, q = a["top"], b["top"]
    mass = sum(p.values())
    if not p or not q or mass <= 0:
        return float("nan")
    # today's top values that the reference never had among its top values ...
    unknown = 1.0 - sum(v for k, v in p.items() if k in q) / mass
    # ... and, over today's top values, how differently they are shared (total variation)
    qr = np.array([q.get(k, 0.0) for k in p])
    pr = np.array(list(p.values())) / mass
    tv = 0.5 * float(np.abs(pr - qr / qr.sum()).sum()) if qr.sum() > 0 else 1.0
    return float(max(unknown, tv))


def _top1(top: Any) -> float:
    """Share of the most frequent value (``top_json``'s first entry that is not ``__other__``)."""
    if not isinstance(top, list) or not top:
        return float("nan")
    first = top[0]
    if not isinstance(first, (list, tuple)) or len(first) < 2 or first[0] == "__other__":
        return float("nan")
    return float(first[1])
