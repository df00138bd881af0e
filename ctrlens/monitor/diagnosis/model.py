"""Model-side findings: the checkpoint change report, dead / saturated / exploding layers, damaged
embedding tables, regression, over-fitting, and the symptoms inside the model (probes, neurons)."""

from __future__ import annotations

import math
import pandas as pd

from ctrlens.monitor.diagnosis.base import BASE_SCORE, PAGING, Context, Finding, fmt, link, strength_of


def layer_findings(a: pd.DataFrame, ctx: Context, changed: bool) -> list[Finding]:
    """A new checkpoint's dead / saturated units against the reference days, and the uncalibrated
    over-fitting check (only without a previous checkpoint: with one, the change report decides)."""
    strength = strength_of
    findings: list[Finding] = []
    lay = a[a["subject_kind"] == "layer"]
    for la, g in lay.groupby("subject"):
        for stat, finding in (("dead_fraction", "dead_neurons"), ("saturated_fraction", "saturated_neurons")):
            rows = g[(g["statistic"] == stat) & (g["direction"] == "above")]
            if rows.empty or not ctx.new_version:
                continue
            r0 = rows.iloc[0]
            sev = "critical" if r0["value"] - r0["reference"] >= 0.25 else "warning"
            findings.append(Finding(
                finding, la, sev, strength(rows),
                f"New checkpoint: {fmt(r0['value'], True)} of layer {la}'s units are "
                f"{'dead' if finding == 'dead_neurons' else 'saturated'} (usually {fmt(r0['reference'], True)})",
                list(rows.itertuples(index=False)), [{"label": f"layer {la}", "url": link("/neurons", ctx, layer=la)}],
            ))  # fmt: skip
    ck = a[a["subject_kind"] == "checkpoint"]
    if len(ck) and not changed:  # with a previous checkpoint, the calibrated excess gap decides (above)
        info = ctx.extra.get("checkpoint_check", {})
        heads = [h for h in ck["subject"] if h in ctx.heads] or list(ctx.heads)[:1] or ["model"]
        worst = ck.sort_values("severity", ascending=False).iloc[0]
        auc = info.get("auc", {})
        nums = "; ".join(f"{h} AUC {fmt(v['train'])} on {info.get('train_day')} vs {fmt(v['today'])} today" for h, v in auc.items())
        # no previous checkpoint to calibrate the gap against: a memorising recipe (ids seen in training)
        # has a big train-vs-test gap by design, so the uncalibrated check is recorded, not paged
        findings.append(Finding(
            "overfitting", heads[0], "info", strength(ck),
            f"The checkpoint fits its training day much better than new days (not calibrated: no previous checkpoint "
            f"to compare with): {worst['statistic']} {fmt(worst['value'])} for {worst['subject']}"
            + (f" ({nums})" if nums else ""),
            list(ck.itertuples(index=False)),
            [{"label": f"layer {s}", "url": link("/neurons", ctx, layer=s, compare=info.get("train_day"))}
             for s in ck["subject"] if s not in ctx.heads],
            {"train_day": info.get("train_day"), "fluctuation": info.get("fluctuation"), "auc": auc},
        ))  # fmt: skip
    return findings


def symptom_findings(a: pd.DataFrame, ctx: Context, symptom_sev: str) -> list[Finding]:
    """Symptoms inside the model: probe AUC falls and layers whose neurons moved."""
    lay = a[a["subject_kind"] == "layer"]
    findings: list[Finding] = []
    pr = a[(a["subject_kind"] == "probe") & (a["direction"] == "below")]
    per_head = pr["subject"].str.split("/").str[0].value_counts().to_dict() if len(pr) else {}
    for r in pr.itertuples(index=False):
        h, la = r.subject.split("/", 1) if "/" in r.subject else ("", r.subject)
        # one probe on a few hundred held-out rows is noisy: alone it pages only when far off
        sev = symptom_sev if (r.severity >= 2.0 or per_head.get(h, 0) >= 2) else "info"
        findings.append(Finding(
            "probe_drop", r.subject, sev, r.severity,
            f"Probe AUC of layer {la} ({h}) fell to {fmt(r.value)} (usually {fmt(r.reference)})", [r],
            [{"label": f"layer {la}", "url": link("/probes", ctx, layer=la, head=h or None)}],
        ))  # fmt: skip
    nd = lay[lay["statistic"] == "neuron_drift_share"]
    for r in nd.itertuples(index=False):
        findings.append(Finding(
            "neuron_drift", r.subject, symptom_sev, r.severity,
            f"{fmt(r.value, True)} of layer {r.subject}'s neurons moved (usually {fmt(r.reference, True)})", [r],
            [{"label": f"layer {r.subject}", "url": link("/neurons", ctx, layer=r.subject)}],
        ))  # fmt: skip
    return findings


def checkpoint_change_findings(d: pd.DataFrame, a: pd.DataFrame, ctx: Context) -> list[Finding]:
    """Findings of the checkpoint change report (``checkpoint_change`` rows, see
    :func:`ctrlens.monitor.compute.checkpoint_change`): the model axis, judged on the same rows for
    both checkpoints, so no input change can cause them."""
    info = ctx.extra.get("checkpoint_change") or {}
    if not info:
        return []
    out: list[Finding] = []
    ch = a[a["subject_kind"] == "checkpoint_change"]
    prev = info.get("previous_version_id")

    def nlink(layer: str | None = None) -> list[dict[str, str]]:
        return [{"label": f"layer {layer}" if layer else "neurons", "url": link("/neurons", ctx, layer=layer)}]

    heads, layers = info.get("heads", {}), info.get("layers", {})
    for r in ch.itertuples(index=False):
        st, subj = r.statistic, r.subject

        def report(finding: str, title: str, links: list[dict[str, str]], key: str, value: object,
                   severity: str = "critical", r: object = r, subj: str = subj) -> None:  # fmt: skip
            out.append(Finding(finding, subj, severity, r.severity, title, [r], links,  # type: ignore[attr-defined]
                               {key: value, "previous_version_id": prev}))  # fmt: skip

        if st == "excess_train_test_gap":
            o = info.get("overfit", {}).get(subj, {})
            report("overfitting",
                   f"The new checkpoint is over-fitted: its {subj} AUC gap between its training day {o.get('new_train_day')} "
                   f"and today is {fmt(o.get('new_gap'))}, against {fmt(o.get('old_gap'))} for the previous checkpoint "
                   f"(its own training day {o.get('old_train_day')})", nlink(), "overfit", o)  # fmt: skip
        elif st == "auc_delta":
            h = heads.get(subj, {})
            report("model_regression",
                   f"The new checkpoint ranks worse than the previous one on the same {info.get('rows')} rows: {subj} AUC "
                   f"{fmt(h.get('auc_new'))} vs {fmt(h.get('auc_old'))} (logit correlation {fmt(h.get('logit_corr'))})",
                   [{"label": f"quality {subj}", "url": link("/quality", ctx, head=subj)}], "head", h)  # fmt: skip
        elif st == "log_mean_abs_ratio":
            la = layers.get(subj, {})
            report("exploding_activations",
                   f"New checkpoint: layer {subj} ({la.get('activation')}) has a mean |activation| of "
                   f"{fmt(la.get('mean_abs_new'))} on the same rows, {math.exp(r.value):.3g}x the previous checkpoint's "
                   f"{fmt(la.get('mean_abs_old'))}", nlink(subj), "layer", la)  # fmt: skip
        elif st in ("dead_fraction_delta", "saturated_fraction_delta"):
            la = layers.get(subj, {})
            what = "dead" if st == "dead_fraction_delta" else "saturated"
            report("dead_neurons" if what == "dead" else "saturated_neurons",
                   f"New checkpoint: {fmt(la.get(what + '_new'), True)} of layer {subj}'s units are {what} on the same rows "
                   f"(previous checkpoint {fmt(la.get(what + '_old'), True)}; {la.get('activation')})", nlink(subj),
                   "layer", la, "critical" if r.value >= 0.25 else "warning")  # fmt: skip
    # a layer that died or blew up takes the layers after it along: the first one (in the model's
    # order) is the root, the later ones are recorded as its symptoms
    order = {la: i for i, la in enumerate(info.get("layers", {}))}
    layer_f = sorted([f for f in out if f.finding in ("dead_neurons", "saturated_neurons", "exploding_activations")],
                     key=lambda f: order.get(f.subject, len(order)))  # fmt: skip
    for f in layer_f[1:]:
        if order.get(f.subject, -1) > order.get(layer_f[0].subject, -1):
            f.severity = "info"
            f.base = BASE_SCORE["neuron_drift"]
            f.title += f" (downstream of layer {layer_f[0].subject})"
    tabs = ch[ch["statistic"].isin(["reinit_frac", "log_rank_ratio"])]
    for t, g in tabs.groupby("subject"):
        ti = info.get("tables", {}).get(t, {})
        collapsed = (g["statistic"] == "log_rank_ratio").any()
        # every row moving is the training run (see exploding_activations / overfitting), not a partial overwrite
        partial = bool(ti.get("bulk_unchanged")) and (g["statistic"] == "reinit_frac").any()
        if not (partial or collapsed):
            continue
        what = (f"{fmt(ti.get('reinit_frac'), True)} of today's {ti.get('rows')} looked-up rows were replaced (direction "
                f"or size no longer the previous checkpoint's) while the rest is as before (median cosine "
                f"{fmt(ti.get('cos_median'))}): re-initialised or overwritten rows") if partial else \
            f"its looked-up rows collapsed: effective rank x{fmt(ti.get('rank_ratio'))} of the previous checkpoint's"
        out.append(Finding(
            "embedding_corruption", t, "critical", strength_of(g),
            f"Embedding table {t} is damaged in the new checkpoint: {what}; median row norm x{fmt(ti.get('norm_ratio'))}",
            list(g.itertuples(index=False)),
            [{"label": f"field {f}", "url": link("/features", ctx, field=f)} for tb, f in ctx.item_tables.items() if tb == t]
            or nlink(), {"table": ti, "previous_version_id": prev, "pattern": "partial" if partial else "collapsed"},
        ))  # fmt: skip
    # over-training on a few rows moves exactly the rows it trained on, and a diverged run (a layer that
    # blew up or died) collapses whole tables: the table finding follows the training run's finding.
    # A partial overwrite (the rest of the table as before) is no training run's doing: it stays first.
    overfit = [f for f in out if f.finding == "overfitting"]
    diverged = [f for f in out if f.finding in ("exploding_activations", "dead_neurons", "saturated_neurons") and f.severity in PAGING]
    lead = max(overfit + diverged, key=lambda f: f.score, default=None)
    for f in out:
        if lead is None or f.finding != "embedding_corruption" or not (overfit or (diverged and f.numbers["pattern"] == "collapsed")):
            continue
        # below the training run's finding whatever the strengths (a score adds up to 9.9 of strength)
        f.base = min(BASE_SCORE["model_regression"] - 1, lead.score - 10.0)
        f.title += (" (the checkpoint is also over-fitted: its training moved these rows)" if overfit else
                    f" (the training run diverged: {diverged[0].finding} in layer {diverged[0].subject})")
    # a worse ranking is what a dead / exploding layer, a damaged table or over-fitting does: it follows them
    if any(f.finding != "model_regression" and f.severity in PAGING for f in out):
        for f in out:
            if f.finding == "model_regression":
                f.base = BASE_SCORE["quality_drop"]
    # the report itself: recorded every time the serving checkpoint changes
    parts = [f"{h} AUC {fmt(v.get('auc_old'))} -> {fmt(v.get('auc_new'))}, logit correlation {fmt(v.get('logit_corr'))}"
             for h, v in heads.items()]  # fmt: skip
    out.append(Finding(
        "checkpoint_change", "model", "info", 0.0,
        f"The serving checkpoint changed (previous: {str(info.get('previous_checkpoint', '?')).rsplit('/', 1)[-1]}); "
        f"on the same {info.get('rows')} rows: " + "; ".join(parts),
        list(ch.itertuples(index=False)), nlink(), {"report": info},
    ))  # fmt: skip
    return out
