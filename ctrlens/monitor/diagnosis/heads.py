"""Head findings: ``calibration_drift`` and ``quality_drop`` (with the fields most likely responsible)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ctrlens.monitor.diagnosis.base import Context, describe, Finding, fmt, link, per_field, with_severity
from ctrlens.monitor.diagnosis.data import decoupled_fields


def head_findings(a: pd.DataFrame, d: pd.DataFrame, quality_alerts: pd.DataFrame, ctx: Context, root: list[Finding]) -> tuple[list[Finding], dict[str, list[Any]]]:
    """Calibration and quality per head (``info`` when a root finding explains them); also returns the
    heads whose calibration moved."""
    findings: list[Finding] = []
    cal = a[(a["subject_kind"] == "quality") & a["statistic"].isin(["calibration", "log_mean_pred"])]
    lab = a[a["subject_kind"] == "label"]
    cal_heads: dict[str, list[Any]] = {}
    for r in cal.itertuples(index=False):
        cal_heads.setdefault(r.subject, []).append(r)
    for r in lab.itertuples(index=False):
        for h, label in ctx.heads.items():
            if label is not None and r.subject in str(label).split("*"):  # the label, or a factor of a product label
                cal_heads.setdefault(h, []).append(r)
    # the pCTR / actual-CTR histogram moves with every wobble of the day's click rate: evidence, never alone
    score = a[(a["subject_kind"] == "quality") & (a["statistic"] == "score_psi")]
    for r in score.itertuples(index=False):
        if r.subject in cal_heads:
            cal_heads[r.subject].append(r)
    for h, rows in cal_heads.items():
        c = next((r for r in rows if r.statistic == "calibration"), None)
        rate = next((r for r in rows if r.subject_kind == "label"), None)
        parts = []
        if c is not None:
            label = ctx.heads.get(h) or h  # the schema's own label (a product such as click*conversion included)
            parts.append(f"calibration (sum of predictions / {label} positives) {fmt(c.value)} (usually {fmt(c.reference)})")
        if rate is not None:
            parts.append(f"{rate.subject} rate {fmt(rate.value, True)} (usually {fmt(rate.reference, True)})")
        if not parts:
            parts.append(describe(rows))
        big = c is not None and c.value > 0 and c.reference > 0 and abs(math.log(c.value / c.reference)) > 0.2
        explained = bool(root)
        findings.append(Finding(
            "calibration_drift", h, "info" if explained else ("critical" if big else "warning"),
            max(r.severity for r in rows), f"Calibration of {h} drifted: " + "; ".join(parts), rows,
            [{"label": f"quality {h}", "url": link("/quality", ctx, head=h)}],
        ))  # fmt: skip
    for r in quality_alerts.itertuples(index=False):
        attribution = attribute(d, r.subject)
        top = attribution[0]["field"] if attribution else None
        findings.append(Finding(
            "quality_drop", r.subject, "info" if root else "warning", r.severity,
            f"AUC of {r.subject} fell to {fmt(r.value)} (usually {fmt(r.reference)})"
            + (f"; most likely cause: field {top}" if top else ""),
            [r], [{"label": f"quality {r.subject}", "url": link("/quality", ctx, head=r.subject)}]
            + ([{"label": f"field {top}", "url": link("/features", ctx, field=top)}] if top else []),
            {"attribution": attribution[:5]},
        ))  # fmt: skip
    return findings, cal_heads


def attribute(drift: pd.DataFrame, head: str) -> list[dict[str, Any]]:
    """Fields ranked by how likely they explain a quality drop of ``head``.

    A field scores ``importance lost + saliency x input drift``: the permutation importance it lost
    (reference - today, as a share of the head's total reference importance), plus how much the
    model leans on it (its reference saliency share, or its change if larger) times how far its
    input moved (the strongest severity of its field drift rows and of the dependence pairs it is in,
    capped at 5).
    """
    d = with_severity(drift)
    imp = d[(d["subject_kind"] == "importance") & d["subject"].str.startswith(f"{head}/")]
    sal = d[(d["subject_kind"] == "saliency") & d["subject"].str.startswith(f"{head}/")]
    fld = d[d["subject_kind"] == "field"]
    total_ref = float(imp["reference"].clip(lower=0).sum()) if len(imp) else 0.0
    scores: dict[str, dict[str, float]] = {}
    for r in imp.itertuples(index=False):
        f = r.subject.split("/", 1)[1]
        lost = (r.reference - r.value) / total_ref if total_ref > 0 and np.isfinite(r.reference) and np.isfinite(r.value) else 0.0
        scores.setdefault(f, {})["importance_lost"] = max(float(lost), 0.0)
    for r in sal.itertuples(index=False):
        f = r.subject.split("/", 1)[1]
        ref = r.reference if np.isfinite(r.reference) else 0.0
        chg = abs(r.value - ref) if np.isfinite(r.value) else 0.0
        scores.setdefault(f, {})["saliency"] = max(float(ref), float(chg))
    for f, g in fld.groupby("subject"):
        sev = g["severity"].fillna(0).clip(upper=5).max() if g["alert"].fillna(False).astype(bool).any() else 0.0
        scores.setdefault(f, {})["input_drift"] = float(sev)
    # a lost dependence is input drift of the field that came apart from its rows (see _decoupled)
    decoupled, per = decoupled_fields(d[d["alert"].fillna(False).astype(bool)], per_field(d, "importance"))
    for f in decoupled:
        sev = max((float(r.severity) for r in per[f] if np.isfinite(r.severity)), default=0.0)
        cur = scores.setdefault(f, {}).get("input_drift", 0.0)
        scores[f]["input_drift"] = max(cur, min(sev, 5.0))
    out = []
    for f, s in scores.items():
        score = s.get("importance_lost", 0.0) + s.get("saliency", 0.0) * s.get("input_drift", 0.0)
        if score > 0:
            out.append({"field": f, "score": round(score, 6), **{k: round(v, 6) for k, v in s.items()}})
    return sorted(out, key=lambda x: -x["score"])
