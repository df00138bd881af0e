"""Named causes: patterns of drift rows that identify what happened upstream.

``fields_swapped`` (today's A looks like the reference's B), ``unit_change``, ``sequence_truncated``
and ``label_pipeline`` (labels moved while inputs and model did not).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ctrlens.monitor.diagnosis.base import BASE_SCORE, PAGING, ROOT_FINDINGS, Context, Finding, fmt, link


def swap_findings(a: pd.DataFrame, ctx: Context, explained: set[str]) -> list[Finding]:
    """``swap`` rows (:meth:`ctrlens.monitor.drift.DriftSuite.swaps`): today's A looks like the
    reference's B. Both directions: two fields swapped; one: A holds B's values (mis-joined)."""
    rows = a[(a["subject_kind"] == "swap") & (a["statistic"] == "cross_distance")]
    pairs = {}
    for r in rows.itertuples(index=False):
        x, y = r.subject.split("<-", 1)
        pairs[(x, y)] = r
    out = []
    for (x, y), r in sorted(pairs.items(), key=lambda kv: -kv[1].severity):
        if x in explained:
            continue
        both = (y, x) in pairs
        links = [{"label": f"field {x}", "url": link("/features", ctx, field=x)},
                 {"label": f"field {y}", "url": link("/features", ctx, field=y)}]  # fmt: skip
        syms = [r] + ([pairs[(y, x)]] if both else [])
        what = (f"Fields {x} and {y} look swapped: today's {x} looks like the usual {y} and today's {y} like the usual {x}"
                if both else f"Field {x} holds another field's values: today's {x} looks like the usual {y} (mis-joined?)")
        out.append(Finding(
            "fields_swapped", x, "critical", max(r.severity, 1.0),
            what + f" (distance {fmt(r.value)} to {y}'s reference, {fmt(r.reference)} to its own)", syms, links,
            {"looks_like": y, "swapped": both},
        ))  # fmt: skip
        explained.add(x)
        if both:
            explained.add(y)
    return out


def named_field_cause(f: str, kind: str, rows: pd.DataFrame, alerted: pd.DataFrame, links: list[dict[str, str]],
                       hurts: bool) -> Finding | None:  # fmt: skip
    """Causes a field's drift rows identify by their pattern (checked before the generic findings):

    * ``unit_change`` (dense): mean and std scaled by the same factor >= 3x (or <= 1/3) -- the values
      are the usual ones in another unit (cents vs euros, ms vs s);
    * ``sequence_truncated`` (sequence): the list length's mean and spread fell while the values in the
      lists are as usual (no collapse to one value) -- histories cut shorter upstream.
    """
    if alerted.empty:
        return None
    val = {r.statistic: r for r in rows.itertuples(index=False)}
    ls, mz = val.get("log_std"), val.get("mean_z")
    if kind == "dense" and ls is not None and np.isfinite(ls.value) and np.isfinite(ls.reference):
        k_std = math.exp(ls.value - ls.reference)
        k_mean = mz.value / mz.reference if mz is not None and np.isfinite(mz.value) and abs(mz.reference) >= 0.3 else float("nan")
        consistent = not np.isfinite(k_mean) or (k_mean > 0 and abs(math.log(k_mean / k_std)) <= 0.25)
        if (k_std >= 3.0 or k_std <= 1 / 3.0) and consistent:
            power = round(math.log10(k_std))
            factor = f" (about x1e{power})" if power and abs(math.log10(k_std) - power) < 0.15 else ""
            syms = [r for r in (ls, mz) if r is not None] + list(alerted.itertuples(index=False))
            return Finding(
                "unit_change", f, "critical", max(float(alerted["severity"].max()), 1.0),
                f"Field {f} looks rescaled: std x{k_std:.3g}" + (f", mean x{k_mean:.3g}" if np.isfinite(k_mean) else "")
                + f"{factor}, shape as usual -- a unit or scale change upstream", syms, links,
                {"std_factor": k_std, "mean_factor": k_mean},
            )  # fmt: skip
    if kind == "sequence" and ls is not None and mz is not None and np.isfinite(mz.reference) and mz.reference > 0:
        k_len = mz.value / mz.reference
        k_std = math.exp(ls.value - ls.reference) if np.isfinite(ls.value) and np.isfinite(ls.reference) else float("nan")
        top1 = val.get("top1_share")
        card = val.get("log_cardinality")
        collapsed = (top1 is not None and top1.value >= 0.9) or (card is not None and card.value - card.reference <= -math.log(10.0))
        if k_len <= 0.8 and np.isfinite(k_std) and k_std <= 0.7 and not collapsed:
            syms = [ls, mz] + list(alerted.itertuples(index=False))
            return Finding(
                "sequence_truncated", f, "critical" if hurts else "warning", max(float(alerted["severity"].max()), 1.0),
                f"Lists of {f} look truncated: mean length x{k_len:.2f}, length spread x{k_std:.2f}, while the values "
                f"in them are as usual -- a length cap or cut upstream", syms, links,
                {"length_factor": k_len, "length_std_factor": k_std},
            )  # fmt: skip
    return None


def label_pipeline_findings(a: pd.DataFrame, ctx: Context, findings: list[Finding]) -> list[Finding]:
    """Labels fell while the inputs and the model did not change (no root finding so far): the label pipeline."""
    out: list[Finding] = []
    if not [f for f in findings if f.finding in ROOT_FINDINGS and f.severity in PAGING]:
        for r in a[(a["subject_kind"] == "label") & (a["direction"] == "below")].itertuples(index=False):
            rel = (r.reference - r.value) / r.reference if r.reference and r.reference > 0 else float("nan")
            out.append(Finding(
                "label_pipeline", r.subject, "critical" if rel >= 0.2 else "warning", r.severity,
                f"{r.subject} labels fell to {fmt(r.value, True)} of rows (usually {fmt(r.reference, True)}, "
                f"{fmt(rel, True)} fewer) while the inputs and the model did not change: labels lost in the pipeline "
                f"(a late or incomplete label join?)", [r],
                [{"label": f"field {r.subject}", "url": link("/features", ctx, field=r.subject)}],
                {"relative_drop": rel, "reference_rate": float(r.reference)},
            ))  # fmt: skip
    # rows whose labels were lost lose all of them: every label falls by the same share (conversions
    # with their clicks). Such a common loss is named once, by the most frequent label (the one the
    # rarer labels are observed under, and measured on the most events); the others are kept as info
    out.sort(key=lambda f: -f.numbers["reference_rate"])
    for f in out[1:]:
        p, rel = out[0], f.numbers["relative_drop"]
        if out[0].severity in PAGING and np.isfinite(rel) and 2 / 3 <= rel / p.numbers["relative_drop"] <= 1.5:
            f.severity = "info"
            f.base = BASE_SCORE["saliency_shift"]
            f.title += f" -- the same share as {p.subject}: lost with those rows' {p.subject} labels"
            f.numbers["secondary_to"] = {"finding": p.finding, "subject": p.subject}
    return out
