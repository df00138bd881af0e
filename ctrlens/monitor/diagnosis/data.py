"""Data-side findings: what the input fields, the item ids and the positions say.

``image_pipeline_broken``, ``broken_feature``, ``oov_surge``, ``distribution_shift``, ``new_items``,
``saliency_shift`` (per field, the named causes first: :mod:`.causes`), ``gradual_drift`` (against the
anchor period) and ``position_bias_change``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ctrlens.monitor.diagnosis.causes import named_field_cause
from ctrlens.monitor.diagnosis.base import BASE_SCORE, Context, describe, Finding, fmt, link, per_field, strength_of, with_severity


@dataclass
class Day:
    """One model-day's drift rows as the rules read them (computed once by :func:`day_view`).

    Attributes:
        d: every drift row with its ``severity``; a: the rows that alerted.
        by_field: alerted ``field`` rows per field; imp: importance rows per field (all);
        sal: alerted saliency rows per field.
        quality_alerts: alerted AUC falls; quality_dropped: there is one.
        typical: per head, the median ratio today / reference of the fields' importance.
        decoupled: fields that came apart from their rows; pair_rows: their fallen ``pair`` rows.
        labels_moved: a label rate alerted.
    """

    d: pd.DataFrame
    a: pd.DataFrame
    by_field: dict[str, pd.DataFrame]
    imp: dict[str, pd.DataFrame]
    sal: dict[str, pd.DataFrame]
    quality_alerts: pd.DataFrame
    quality_dropped: bool
    typical: dict[str, float]
    decoupled: set[str]
    pair_rows: dict[str, list[Any]]
    labels_moved: bool

    def importance_collapsed(self, f: str) -> tuple[bool, list[Any]]:
        """Whether field ``f``'s permutation importance fell well beyond its head's typical fall
        (importance is in nats of log loss: a day with fewer clicks shrinks every field's), and the rows."""
        rows = self.imp.get(f)
        if rows is None:
            return False, []
        typical = self.typical
        hit = rows[rows["alert"].fillna(False).astype(bool) & (rows["direction"] == "below")]
        keep = [r for r in hit.itertuples(index=False)
                if not (r.reference > 0 and np.isfinite(r.value)) or r.value / r.reference <= 0.5 * typical.get(r.subject.split("/", 1)[0], 1.0)]  # fmt: skip
        return bool(keep), keep


def day_view(drift: pd.DataFrame) -> Day:
    """The :class:`Day` of ``drift`` rows (``severity`` recomputed when absent)."""
    d = with_severity(drift)
    a = d[d["alert"].fillna(False).astype(bool)]
    imp = per_field(d, "importance")
    quality_alerts = a[(a["subject_kind"] == "quality") & (a["statistic"] == "auc") & (a["direction"] == "below")]
    decoupled, pair_rows = decoupled_fields(a, imp)
    return Day(
        d=d, a=a, by_field={s: g for s, g in a[a["subject_kind"] == "field"].groupby("subject")}, imp=imp,
        sal=per_field(a, "saliency"), quality_alerts=quality_alerts, quality_dropped=not quality_alerts.empty,
        typical=typical_importance_ratio(d), decoupled=decoupled, pair_rows=pair_rows,
        labels_moved=bool((a["subject_kind"] == "label").any()),
    )  # fmt: skip


def stats(g: pd.DataFrame, names: Iterable[str], direction: str | None = None) -> pd.DataFrame:
    """The rows of ``g`` with one of the statistics ``names`` (and ``direction``)."""
    sel = g[g["statistic"].isin(list(names))]
    return sel if direction is None else sel[sel["direction"] == direction]


def field_findings(day: Day, ctx: Context, explained_fields: set[str]) -> list[Finding]:
    """Per input field, the first rule that explains its rows (image fields last: their source field may
    explain them); adds the fields it names to ``explained_fields``."""
    d, by_field, imp, sal = day.d, day.by_field, day.imp, day.sal
    quality_dropped, decoupled, pair_rows, labels_moved = day.quality_dropped, day.decoupled, day.pair_rows, day.labels_moved
    importance_collapsed, strength = day.importance_collapsed, strength_of
    findings: list[Finding] = []
    candidates_f = set(by_field) | {f for f in imp if importance_collapsed(f)[0]} | set(sal) | decoupled
    order = sorted(candidates_f, key=lambda f: (ctx.field_kinds.get(f, "") == "image", f))
    for f in order:
        if f in explained_fields:  # named already (swapped fields)
            continue
        g = by_field.get(f, d.iloc[0:0])
        kind = ctx.field_kinds.get(f, "")
        candidates = pd.concat([stats(g, ["log_cardinality", "log_std"], "below"), stats(g, ["top1_share"], "above")])
        collapse = candidates[[_is_collapse(r) for r in candidates.itertuples(index=False)]]
        missing = stats(g, ["coverage"], "below")
        oov = stats(g, ["oov_rate"], "above")
        shape = pd.concat([stats(g, ["psi", "js", "wasserstein_norm", "mean_z"]), candidates.drop(collapse.index)])
        if not _convincing(shape):
            shape = shape.iloc[0:0]
        card_up = stats(g, ["log_cardinality"], "above")
        imp_down, imp_rows = importance_collapsed(f)
        sal_rows = sal.get(f, d.iloc[0:0])
        links = [{"label": f"field {f}", "url": link("/features", ctx, field=f)}]
        for h in sorted({s.split("/", 1)[0] for s in sal_rows["subject"]} | {r.subject.split("/", 1)[0] for r in imp_rows}):
            links.append({"label": f"saliency {h}", "url": link("/saliency", ctx, head=h, field=f)})
        if kind == "image":
            if len(shape) or len(missing) or len(collapse) or imp_down or len(sal_rows[sal_rows["direction"] == "below"]):
                syms = list(shape.itertuples(index=False)) + list(missing.itertuples(index=False)) + imp_rows + \
                    list(sal_rows.itertuples(index=False))
                src = ctx.image_sources.get(f)
                if src in explained_fields:  # the ids broke, the pictures follow them
                    findings.append(Finding(
                        "image_pipeline_broken", f, "info", 0.0,
                        f"Images of {f} changed because their source field {src} did: " + describe(syms), syms, links,
                        base=BASE_SCORE["saliency_shift"],
                    ))  # fmt: skip
                    continue
                # rank by how far the mean brightness fell when it did: the field whose images went blank
                # outranks the other image field that merely shares some of those items
                mz = shape[shape["statistic"] == "mean_z"]
                power = strength(mz) if len(mz) else max(strength(shape), strength(missing), strength(sal_rows))
                findings.append(Finding(
                    "image_pipeline_broken", f, "critical", max(power, 1.0),
                    f"Images of {f} look broken: " + describe(syms), syms, links,
                ))  # fmt: skip
                explained_fields.add(f)
            continue
        named = named_field_cause(f, kind, d[(d["subject_kind"] == "field") & (d["subject"] == f)], g, links,
                                   quality_dropped or imp_down)  # fmt: skip
        if named is not None:
            findings.append(named)
            explained_fields.add(f)
            continue
        if len(oov):
            syms = list(oov.itertuples(index=False)) + list(shape.itertuples(index=False)) + imp_rows
            r0 = oov.iloc[0]
            sev = "critical" if (r0["value"] >= 0.1 or quality_dropped) else "warning"
            findings.append(Finding(
                "oov_surge", f, sev, strength(oov),
                f"Out-of-vocabulary surge in {f}: {fmt(r0['value'], True)} of values unknown (usually {fmt(r0['reference'], True)})",
                syms, links,
            ))  # fmt: skip
            explained_fields.add(f)
            continue
        if len(collapse) or len(missing):
            what = []
            if len(missing):
                r0 = missing.iloc[0]
                what.append(f"coverage {fmt(r0['value'], True)} (usually {fmt(r0['reference'], True)})")
            if len(collapse):
                what.append("collapsed to (nearly) one value" + _collapse_numbers(collapse))
            syms = list(collapse.itertuples(index=False)) + list(missing.itertuples(index=False)) + imp_rows + \
                list(sal_rows.itertuples(index=False)) + list(shape.itertuples(index=False))
            sev = "critical" if (imp_down or quality_dropped or len(sal_rows)) else "warning"
            findings.append(Finding(
                "broken_feature", f, sev, max(strength(collapse), strength(missing)) + (1.0 if imp_down else 0.0),
                f"Field {f} looks broken: " + "; ".join(what) + (_imp_text(imp_rows) if imp_down else ""), syms, links,
            ))  # fmt: skip
            explained_fields.add(f)
            continue
        if (imp_down or f in decoupled) and not len(shape):
            # the distribution is as usual, but the values no longer belong to their rows: shuffled / mis-joined
            prs = pair_rows.get(f, [])
            syms = prs + imp_rows + list(sal_rows.itertuples(index=False))
            partners = [p.subject.replace(f, "").strip("~") for p in prs]
            if labels_moved and f not in decoupled:
                # importance is a loss against the labels: on a day the labels moved, a fall of importance
                # alone (the field still depends on its partners) is no evidence of a broken field
                findings.append(Finding(
                    "saliency_shift", f, "info", max([r.severity for r in imp_rows] + [1.0]),
                    f"The permutation importance of {f} fell on a day the labels moved" + _imp_text(imp_rows), syms, links,
                ))  # fmt: skip
                continue
            findings.append(Finding(
                "broken_feature", f, "critical" if (quality_dropped or imp_down) else "warning",
                max([r.severity for r in imp_rows + prs] + [1.0]),
                f"Field {f} no longer matches its rows although its distribution did not change (shuffled or "
                f"mis-joined values?)" + (f"; it lost its dependence on {', '.join(partners[:4])}" if partners else "")
                + _imp_text(imp_rows), syms, links, {"evidence": "dependence" if f in decoupled else "importance"},
            ))  # fmt: skip
            explained_fields.add(f)
            continue
        if len(shape):
            syms = list(shape.itertuples(index=False)) + imp_rows + list(sal_rows.itertuples(index=False))
            top = shape.sort_values("severity", ascending=False).iloc[0]
            findings.append(Finding(
                "distribution_shift", f, "warning", strength(shape),
                f"Distribution of {f} shifted: {top['statistic']} {fmt(top['value'])} (usually {fmt(top['reference'])}, "
                f"threshold {fmt(top['threshold'])})", syms, links,
            ))  # fmt: skip
            explained_fields.add(f)
            continue
        if len(card_up) and f in ctx.item_fields:
            r0 = card_up.iloc[0]
            findings.append(Finding(
                "new_items", f, "info", strength(card_up),
                f"Many new {f} values: {math.exp(r0['value']):.0f} distinct (usually {math.exp(r0['reference']):.0f})",
                list(card_up.itertuples(index=False)), links,
            ))  # fmt: skip
            explained_fields.add(f)
            continue
        if len(sal_rows):
            findings.append(Finding(
                "saliency_shift", f, "info", strength(sal_rows),
                f"The model's saliency on {f} moved: " + describe(list(sal_rows.itertuples(index=False))),
                list(sal_rows.itertuples(index=False)), links,
            ))  # fmt: skip
    return findings


def anchor_findings(day: Day, ctx: Context, explained_fields: set[str]) -> list[Finding]:
    """Slow trends: today against the anchor period, when the trailing reference moved along."""
    a, by_field, strength = day.a, day.by_field, strength_of
    findings: list[Finding] = []
    anc = a[a["subject_kind"] == "anchor"]
    for f, g in anc.groupby("subject"):
        if f in explained_fields or f in by_field or not _convincing(g):
            continue
        top = g.sort_values("severity", ascending=False).iloc[0]
        findings.append(Finding(
            "gradual_drift", f, "info", strength(g),
            f"{f} drifted slowly: {top['statistic']} {fmt(top['value'])} against the anchor period (usually "
            f"{fmt(top['reference'])}, threshold {fmt(top['threshold'])}) while each day stayed close to the days before it",
            list(g.itertuples(index=False)), [{"label": f"field {f}", "url": link("/features", ctx, field=f)}],
        ))  # fmt: skip
    return findings


def unseen_item_findings(day: Day, ctx: Context, explained_fields: set[str]) -> list[Finding]:
    """Ids the model never learned: rows of the item table looked up today but never trained."""
    a = day.a
    findings: list[Finding] = []
    emb = a[(a["subject_kind"] == "embedding") & (a["statistic"] == "never_updated_frac") & (a["direction"] == "above")]
    for r in emb.itertuples(index=False):
        f = ctx.item_tables.get(r.subject)
        if f is None or f in explained_fields:
            continue
        findings.append(Finding(
            "new_items", f, "warning" if r.value >= 0.1 else "info", r.severity,
            f"{fmt(r.value, True)} of the {r.subject} embedding rows looked up today were never trained "
            f"(usually {fmt(r.reference, True)}): new {f} values the model knows nothing about",
            [r], [{"label": f"field {f}", "url": link("/features", ctx, field=f)}],
        ))  # fmt: skip
    return findings


def position_findings(day: Day, ctx: Context) -> list[Finding]:
    """Position bias: the observed CTR-by-position slope (or PAL's gap to its seen curve) moved."""
    a, strength = day.a, strength_of
    findings: list[Finding] = []
    pos = a[a["subject_kind"] == "position"]
    if len(pos):
        pinfo = ctx.extra.get("position", {})
        title = (f"Position bias changed: observed CTR falls with position with slope {fmt(pinfo.get('ctr_slope'))} "
                 f"(usually {fmt(pos[pos['statistic'] == 'ctr_slope']['reference'].mean())})")
        if "seen_slope" in pinfo:
            title += f"; the model's seen curve has slope {fmt(pinfo['seen_slope'])}"
        findings.append(Finding(
            "position_bias_change", "position", "warning", strength(pos), title, list(pos.itertuples(index=False)),
            [{"label": "position", "url": link("/features", ctx, field="position")}],
            {"ctr_by_position": pinfo.get("ctr_by_position"), "seen_curve": pinfo.get("seen_curve")},
        ))  # fmt: skip
    return findings


def decoupled_fields(a: pd.DataFrame, imp: dict[str, pd.DataFrame]) -> tuple[set[str], dict[str, list[Any]]]:
    """Fields whose dependence on other fields fell (``pair`` drifts): each fallen pair ``a~b`` counts
    for both fields; the field in the most fallen pairs is the one that came apart from its row
    (a tie between two partners of a single pair is broken by the larger loss of importance)."""
    rows = a[(a["subject_kind"] == "pair") & (a["direction"] == "below")]
    count: dict[str, int] = {}
    per: dict[str, list[Any]] = {}
    for r in rows.itertuples(index=False):
        for f in r.subject.split("~"):
            count[f] = count.get(f, 0) + 1
            per.setdefault(f, []).append(r)
    out = set()
    for f, n in count.items():
        partners = [p for r in per[f] for p in r.subject.split("~") if p != f]
        if all(n > count.get(p, 0) for p in partners):
            out.add(f)
        elif all(n >= count.get(p, 0) for p in partners):
            lost = {x: _importance_lost(imp.get(x)) for x in [f, *partners]}
            if lost[f] >= max(lost.values()) and lost[f] > 0:
                out.add(f)
    return out, per


def typical_importance_ratio(d: pd.DataFrame) -> dict[str, float]:
    """Per head: the median over fields of today's / the reference's permutation importance (fields
    that matter: reference above 10% of the head's largest)."""
    s = d[(d["subject_kind"] == "importance") & (d["statistic"] == "importance")]
    out: dict[str, float] = {}
    if s.empty:
        return out
    heads = s["subject"].str.split("/", n=1).str[0]
    for h, g in s.groupby(heads):
        ref = g["reference"].astype(float)
        big = g[(ref > 0.1 * ref.max()) & np.isfinite(g["value"].astype(float))]
        if len(big) >= 3:
            r = (big["value"].astype(float) / big["reference"].astype(float)).median()
            out[str(h)] = float(min(max(r, 0.0), 1.0))
    return out


def _importance_lost(rows: pd.DataFrame | None) -> float:
    if rows is None or rows.empty:
        return 0.0
    v = (rows["reference"] - rows["value"]).to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else 0.0


#: A PSI that no other statistic confirms must also be material: below this (the usual "no significant
#: change" line of PSI, and Evidently's default drift threshold) it is not believed alone.
PSI_MATERIAL = 0.1


def _convincing(shape: pd.DataFrame) -> bool:
    """A distribution change is believed when two different statistics see it, or one sees it at
    twice its threshold distance: one borderline distance alone is noise more often than not. A
    lone PSI must also reach :data:`PSI_MATERIAL`: on a histogram with sparse buckets it swells
    while JS and Wasserstein (the same two histograms) do not move."""
    if shape["statistic"].nunique() >= 2:
        return True
    if not len(shape):
        return False
    top = shape.loc[shape["severity"].idxmax()]
    if top["severity"] < 2.0:
        return False
    return not (top["statistic"] == "psi" and np.isfinite(top["value"]) and top["value"] < PSI_MATERIAL)


def _is_collapse(r: Any) -> bool:
    """A collapse, not a mere concentration: the top value holds 90% of the rows or more, or the
    number of distinct values (or the spread) fell tenfold. (A campaign that sends half the traffic
    to one age group concentrates a field; a stuck default fills it.)"""
    if r.statistic == "top1_share":
        return bool(r.value >= 0.9)
    return bool(np.isfinite(r.value) and np.isfinite(r.reference) and r.value - r.reference <= -math.log(10.0))


def _collapse_numbers(rows: pd.DataFrame) -> str:
    out = []
    for r in rows.itertuples(index=False):
        if r.statistic == "top1_share":
            out.append(f"top value {fmt(r.value, True)} of rows (usually {fmt(r.reference, True)})")
        elif r.statistic == "log_cardinality":
            out.append(f"{math.exp(r.value):.0f} distinct values (usually {math.exp(r.reference):.0f})")
        elif r.statistic == "log_std":
            out.append(f"std {math.exp(r.value):.3g} (usually {math.exp(r.reference):.3g})")
    return f" ({', '.join(out)})" if out else ""


def _imp_text(rows: list[Any]) -> str:
    if not rows:
        return ""
    r = rows[0]
    return f"; permutation importance {fmt(r.value)} (usually {fmt(r.reference)})"
