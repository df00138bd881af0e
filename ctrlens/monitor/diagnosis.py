"""From drift rows to findings: rules that name the likely cause first.

A drift test says *what* moved; the diagnosis combines the day's moved statistics into
**findings**, each with a subject (a field, layer, head or ``position``), a severity, the evidence
numbers with links into the dashboard, and a suggested action -- ranked so that the root cause
comes before its symptoms. The rules (see ``docs/alerts.md`` for what each finding means):

=========================  =====================================================================  =====
finding                    fires when                                                             score
=========================  =====================================================================  =====
``image_pipeline_broken``  an image field's brightness / coverage moved, or an image field's      100+
                           importance or saliency collapsed
``broken_feature``         a field collapsed to (nearly) one value, lost its values (coverage),   100+
                           or -- with an unchanged distribution -- lost its importance (shuffled)
``oov_surge``              a field's out-of-vocabulary rate rose                                  95+
``dead_neurons``           a layer's dead / saturated share rose with a **new checkpoint**        90+
``overfitting``            a new checkpoint's train-vs-test neuron fluctuation or AUC gap is big  88+
``position_bias_change``   the observed CTR-by-position slope (or PAL's gap to its seen curve)    85+
``distribution_shift``     a field's distribution moved (PSI / JS / Wasserstein), not collapsed   80+
``new_items``              the item field's cardinality rose without OOV                          70+
``calibration_drift``      calibration, mean pCTR or the label rate moved (the pCTR/CTR score     60+
                           distribution joins as evidence)
``quality_drop``           a head's AUC fell; names the fields most likely responsible            50+
``saliency_shift``         a field's saliency share moved while its input did not                 40+
``probe_drop``             a layer's probe AUC fell (alone: pages at twice its threshold, or with  35+
                           a second layer of the head)
``neuron_drift``           more of a layer's neurons moved than on the reference days             30+
=========================  =====================================================================  =====

Within a finding, ``+`` is the (capped) severity of its strongest drift: how many thresholds away.
Symptoms explained by a root-cause finding of the same day are kept as ``info`` (recorded, not
paged). Everything here is pure: drift rows and context in, ``Result("alert")`` out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from ctrlens.results import COLUMNS, Result, jsonable

ROOT_FINDINGS = (
    "image_pipeline_broken", "broken_feature", "oov_surge", "dead_neurons", "overfitting",
    "position_bias_change", "distribution_shift", "new_items", "embedding_corruption", "exploding_activations",
    "saturated_neurons", "model_regression", "fields_swapped", "unit_change", "sequence_truncated", "label_pipeline",
)  # fmt: skip
BASE_SCORE = {
    "image_pipeline_broken": 100, "broken_feature": 100, "oov_surge": 95, "dead_neurons": 90, "saturated_neurons": 90,
    "overfitting": 94, "position_bias_change": 85, "distribution_shift": 80, "new_items": 70, "calibration_drift": 60,
    "quality_drop": 50, "saliency_shift": 40, "probe_drop": 35, "neuron_drift": 30,
    "embedding_corruption": 96, "exploding_activations": 93, "fields_swapped": 101, "unit_change": 99,
    "sequence_truncated": 99, "label_pipeline": 65, "gradual_drift": 45, "model_regression": 87, "checkpoint_change": 5,
}  # fmt: skip
#: Paging severities: an ``info`` finding is recorded and shown, but is not a new alert for cron.
PAGING = ("critical", "warning")

ACTIONS = {
    "broken_feature": "Check the pipeline that logs this field (joins, defaults, a stuck upstream value) for this day; "
    "until fixed, consider serving the previous model or a fallback value. Compare the field's top values with the "
    "reference days in the dashboard.",
    "image_pipeline_broken": "Check the image pipeline (CDN, decoder, image table refresh) for this day: blank or "
    "missing images reach the model. Compare image brightness and the image fields' saliency with the reference days.",
    "oov_surge": "New ids that the model's vocabulary does not know: check for an id re-mapping upstream, or retrain / "
    "extend the vocabulary if these are genuinely new entities.",
    "new_items": "Many ids the model saw rarely or never: expect weaker predictions for them until the next retrain; "
    "retrain sooner if the share keeps growing.",
    "distribution_shift": "The population changed (campaign, traffic source, season). If it is real, watch quality and "
    "calibration and retrain on recent days; if not, check the upstream source of this field.",
    "dead_neurons": "The new checkpoint has more dead (or saturated) units in this layer: check the learning rate, "
    "initialisation and input scaling of this training run; consider rolling back to the previous checkpoint.",
    "saturated_neurons": "The new checkpoint has more saturated units in this layer: check input scaling and the "
    "learning rate; consider rolling back to the previous checkpoint.",
    "overfitting": "The checkpoint behaves very differently on its training days and on new days: it is fitting its "
    "training data too closely. Use fewer epochs, more regularisation or more days; prefer an earlier checkpoint.",
    "position_bias_change": "Users examine positions differently (a layout or UI change?). Retrain the position "
    "(ProbSeen / position-bias) part on recent days; pCTR rankings may be biased until then.",
    "calibration_drift": "Predicted and observed CTR disagree more than usual (a CTR level shift, holiday or "
    "promotion?). Recalibrate (e.g. isotonic / Platt on recent days) or retrain; bids and ranking thresholds that use "
    "pCTR are affected.",
    "quality_drop": "Ranking quality fell. Look at the attributed fields first; if none is broken, the world moved "
    "away from the model: retrain on recent days.",
    "saliency_shift": "The model leans on this field differently than before without a change in the field itself: "
    "check whether the checkpoint changed or another field broke.",
    "probe_drop": "A layer carries less linearly readable signal than usual: look for dead or saturated units and "
    "for input fields that broke upstream of it.",
    "embedding_corruption": "Rows of this embedding table were re-initialised or overwritten in the new checkpoint "
    "(a bad partial restore, a sharded save that lost a shard, an id re-mapping applied to the weights): roll back to "
    "the previous checkpoint and check how the table is saved, restored and re-sized.",
    "exploding_activations": "The new checkpoint's activations in this layer are an order of magnitude larger than "
    "its predecessor's on the same rows: a training run that diverged (learning rate too high, no gradient clipping, "
    "bad input scaling). Roll back to the previous checkpoint and check the run's learning rate and loss curve.",
    "model_regression": "The new checkpoint ranks the same rows worse than the checkpoint it replaced: do not keep "
    "serving it; roll back and check the training run (learning rate, days, data of the run).",
    "fields_swapped": "Two columns were exchanged (or one was filled from another) upstream: check the join / "
    "column mapping that produced this day's rows (a schema change, a positional join). Until fixed, the model sees "
    "one field's values as another's: consider serving a fallback.",
    "unit_change": "The field's values arrive in another unit or scale (cents vs euros, ms vs s, a missing "
    "normalisation): fix the conversion upstream or rescale the input; the model's learned weights assume the old scale.",
    "sequence_truncated": "Behaviour histories arrive shorter than usual: check the upstream length cap, the "
    "history store's retention and the join window for this day.",
    "label_pipeline": "Labels fell while inputs and the model did not change: check the label pipeline first (late or "
    "missing click / conversion logs, the join window of labels to impressions). If labels are complete, users "
    "really behave differently: recalibrate. Do not train on these days until the labels are confirmed.",
    "gradual_drift": "A slow trend: the field moved away from the anchor period a little every day, so the trailing "
    "reference followed it. If it is a real change of the population, retrain on recent days; if not, find the "
    "upstream change that started it (the dashboard's drift view shows when).",
    "checkpoint_change": "Informational: what changed between the previous and the new checkpoint on the same rows.",
    "neuron_drift": "Many neurons of this layer see different inputs than on the reference days; usually a symptom of "
    "an input change -- look at the input fields.",
}


@dataclass
class Context:
    """What the rules need besides the drift rows.

    Attributes:
        model, day: the model name and day (for titles and links).
        version_id: today's model version id; new_version: it differs from the reference days'.
        heads: head -> label (``click``, ``conversion`` ...).
        field_kinds: input field -> kind (``sparse``, ``dense``, ``image`` ...).
        item_fields: fields with the ``item`` role.
        image_sources: image field -> the id field whose items it shows.
        item_tables: embedding table -> the item field that uses it (for ``new_items``).
        compare: the most recent reference day (the dashboard's ``compare=`` parameter).
        extra: evidence numbers the rules may quote (``position``: CTR by position and slopes;
            ``checkpoint_check``: train-vs-test numbers).
    """

    model: str
    day: str
    version_id: int | None = None
    new_version: bool = False
    heads: dict[str, str | None] = field(default_factory=dict)
    field_kinds: dict[str, str] = field(default_factory=dict)
    item_fields: set[str] = field(default_factory=set)
    compare: str | None = None
    image_sources: dict[str, str] = field(default_factory=dict)
    item_tables: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def link(path: str, ctx: Context, **params: Any) -> str:
    """A dashboard URL path, e.g. ``/features?model=din&day=2026-01-12&field=price&compare=2026-01-11``."""
    q = {"model": ctx.model, "day": ctx.day, **{k: v for k, v in params.items() if v is not None}}
    if ctx.compare and "compare" not in params:
        q["compare"] = ctx.compare
    return f"{path}?{urlencode(q)}"


def _sym(r: Any) -> dict[str, Any]:
    def num(x: Any) -> float | None:
        return None if x is None or not np.isfinite(x) else round(float(x), 6)

    return {"kind": r.subject_kind, "subject": r.subject, "statistic": r.statistic, "value": num(r.value),
            "reference": num(r.reference), "threshold": num(r.threshold), "direction": r.direction,
            "severity": num(getattr(r, "severity", 0.0))}  # fmt: skip


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.1%}" if pct else f"{x:.4g}"


class _Finding:
    def __init__(self, finding: str, subject: str, severity: str, strength: float, title: str,
                 symptoms: list[Any], links: list[dict[str, str]], numbers: dict[str, Any] | None = None,
                 base: float | None = None):  # fmt: skip
        self.finding, self.subject, self.severity = finding, subject, severity
        self.base = BASE_SCORE.get(finding, 10) if base is None else base
        self.strength = strength
        self.title = title
        self.symptoms = [_sym(s) for s in symptoms]
        self.links = links
        self.numbers = numbers or {}

    @property
    def score(self) -> float:
        return self.base + min(max(self.strength, 0.0), 9.9)


def diagnose(drift: pd.DataFrame, ctx: Context) -> Result:
    """Findings of one model-day from its drift rows (with the ``severity`` column of
    :meth:`~ctrlens.monitor.drift.DriftSuite.frame`). Returns ``Result("alert")``, best first."""
    d = with_severity(drift)
    a = d[d["alert"].fillna(False).astype(bool)]
    findings: list[_Finding] = []
    by_field: dict[str, pd.DataFrame] = {s: g for s, g in a[a["subject_kind"] == "field"].groupby("subject")}
    imp = _per_field(d, "importance")
    sal = _per_field(a, "saliency")
    quality_alerts = a[(a["subject_kind"] == "quality") & (a["statistic"] == "auc") & (a["direction"] == "below")]
    quality_dropped = not quality_alerts.empty

    def stats(g: pd.DataFrame, names: Iterable[str], direction: str | None = None) -> pd.DataFrame:
        sel = g[g["statistic"].isin(list(names))]
        return sel if direction is None else sel[sel["direction"] == direction]

    def strength(rows: pd.DataFrame) -> float:
        return float(rows["severity"].max()) if len(rows) else 0.0

    # importance is in nats of log loss: a day with fewer clicks shrinks every field's. A field's own
    # collapse is a fall well beyond the head's typical fall (half of the median ratio or less)
    typical = _typical_importance_ratio(d)

    def importance_collapsed(f: str) -> tuple[bool, list[Any]]:
        rows = imp.get(f)
        if rows is None:
            return False, []
        hit = rows[rows["alert"].fillna(False).astype(bool) & (rows["direction"] == "below")]
        keep = [r for r in hit.itertuples(index=False)
                if not (r.reference > 0 and np.isfinite(r.value)) or r.value / r.reference <= 0.5 * typical.get(r.subject.split("/", 1)[0], 1.0)]  # fmt: skip
        return bool(keep), keep

    decoupled, pair_rows = _decoupled(a, imp)
    labels_moved = bool((a["subject_kind"] == "label").any())
    explained_fields: set[str] = set()
    findings += _swap_findings(a, ctx, explained_fields)
    # -- input fields (image fields last: their source field may explain them) -----------------------
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
        for h in {s.split("/", 1)[0] for s in sal_rows["subject"]} | {r.subject.split("/", 1)[0] for r in imp_rows}:
            links.append({"label": f"saliency {h}", "url": link("/saliency", ctx, head=h, field=f)})
        if kind == "image":
            if len(shape) or len(missing) or len(collapse) or imp_down or len(sal_rows[sal_rows["direction"] == "below"]):
                syms = list(shape.itertuples(index=False)) + list(missing.itertuples(index=False)) + imp_rows + \
                    list(sal_rows.itertuples(index=False))
                src = ctx.image_sources.get(f)
                if src in explained_fields:  # the ids broke, the pictures follow them
                    findings.append(_Finding(
                        "image_pipeline_broken", f, "info", 0.0,
                        f"Images of {f} changed because their source field {src} did: " + _describe(syms), syms, links,
                        base=BASE_SCORE["saliency_shift"],
                    ))  # fmt: skip
                    continue
                # rank by how far the mean brightness fell when it did: the field whose images went blank
                # outranks the other image field that merely shares some of those items
                mz = shape[shape["statistic"] == "mean_z"]
                power = strength(mz) if len(mz) else max(strength(shape), strength(missing), strength(sal_rows))
                findings.append(_Finding(
                    "image_pipeline_broken", f, "critical", max(power, 1.0),
                    f"Images of {f} look broken: " + _describe(syms), syms, links,
                ))  # fmt: skip
                explained_fields.add(f)
            continue
        named = _named_field_cause(f, kind, d[(d["subject_kind"] == "field") & (d["subject"] == f)], g, links,
                                   quality_dropped or imp_down)  # fmt: skip
        if named is not None:
            findings.append(named)
            explained_fields.add(f)
            continue
        if len(oov):
            syms = list(oov.itertuples(index=False)) + list(shape.itertuples(index=False)) + imp_rows
            r0 = oov.iloc[0]
            sev = "critical" if (r0["value"] >= 0.1 or quality_dropped) else "warning"
            findings.append(_Finding(
                "oov_surge", f, sev, strength(oov),
                f"Out-of-vocabulary surge in {f}: {_fmt(r0['value'], True)} of values unknown (usually {_fmt(r0['reference'], True)})",
                syms, links,
            ))  # fmt: skip
            explained_fields.add(f)
            continue
        if len(collapse) or len(missing):
            what = []
            if len(missing):
                r0 = missing.iloc[0]
                what.append(f"coverage {_fmt(r0['value'], True)} (usually {_fmt(r0['reference'], True)})")
            if len(collapse):
                what.append("collapsed to (nearly) one value" + _collapse_numbers(collapse))
            syms = list(collapse.itertuples(index=False)) + list(missing.itertuples(index=False)) + imp_rows + \
                list(sal_rows.itertuples(index=False)) + list(shape.itertuples(index=False))
            sev = "critical" if (imp_down or quality_dropped or len(sal_rows)) else "warning"
            findings.append(_Finding(
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
                findings.append(_Finding(
                    "saliency_shift", f, "info", max([r.severity for r in imp_rows] + [1.0]),
                    f"The permutation importance of {f} fell on a day the labels moved" + _imp_text(imp_rows), syms, links,
                ))  # fmt: skip
                continue
            findings.append(_Finding(
                "broken_feature", f, "critical" if (quality_dropped or imp_down) else "warning",
                max([r.severity for r in imp_rows + prs] + [1.0]),
                f"Field {f} no longer matches its rows although its distribution did not change (shuffled or "
                f"mis-joined values?)" + (f"; it lost its dependence on {', '.join(partners[:4])}" if partners else "")
                + _imp_text(imp_rows), syms, links,
            ))  # fmt: skip
            explained_fields.add(f)
            continue
        if len(shape):
            syms = list(shape.itertuples(index=False)) + imp_rows + list(sal_rows.itertuples(index=False))
            top = shape.sort_values("severity", ascending=False).iloc[0]
            findings.append(_Finding(
                "distribution_shift", f, "warning", strength(shape),
                f"Distribution of {f} shifted: {top['statistic']} {_fmt(top['value'])} (usually {_fmt(top['reference'])}, "
                f"threshold {_fmt(top['threshold'])})", syms, links,
            ))  # fmt: skip
            explained_fields.add(f)
            continue
        if len(card_up) and f in ctx.item_fields:
            r0 = card_up.iloc[0]
            findings.append(_Finding(
                "new_items", f, "info", strength(card_up),
                f"Many new {f} values: {math.exp(r0['value']):.0f} distinct (usually {math.exp(r0['reference']):.0f})",
                list(card_up.itertuples(index=False)), links,
            ))  # fmt: skip
            explained_fields.add(f)
            continue
        if len(sal_rows):
            findings.append(_Finding(
                "saliency_shift", f, "info", strength(sal_rows),
                f"The model's saliency on {f} moved: " + _describe(list(sal_rows.itertuples(index=False))),
                list(sal_rows.itertuples(index=False)), links,
            ))  # fmt: skip

    # -- slow trends: today against the anchor period, when the trailing reference moved along -------
    anc = a[a["subject_kind"] == "anchor"]
    for f, g in anc.groupby("subject"):
        if f in explained_fields or f in by_field or not _convincing(g):
            continue
        top = g.sort_values("severity", ascending=False).iloc[0]
        findings.append(_Finding(
            "gradual_drift", f, "info", strength(g),
            f"{f} drifted slowly: {top['statistic']} {_fmt(top['value'])} against the anchor period (usually "
            f"{_fmt(top['reference'])}, threshold {_fmt(top['threshold'])}) while each day stayed close to the days before it",
            list(g.itertuples(index=False)), [{"label": f"field {f}", "url": link("/features", ctx, field=f)}],
        ))  # fmt: skip

    # -- ids the model never learned: rows of the item table looked up today but never trained ------------
    emb = a[(a["subject_kind"] == "embedding") & (a["statistic"] == "never_updated_frac") & (a["direction"] == "above")]
    for r in emb.itertuples(index=False):
        f = ctx.item_tables.get(r.subject)
        if f is None or f in explained_fields:
            continue
        findings.append(_Finding(
            "new_items", f, "warning" if r.value >= 0.1 else "info", r.severity,
            f"{_fmt(r.value, True)} of the {r.subject} embedding rows looked up today were never trained "
            f"(usually {_fmt(r.reference, True)}): new {f} values the model knows nothing about",
            [r], [{"label": f"field {f}", "url": link("/features", ctx, field=f)}],
        ))  # fmt: skip

    # -- position bias -----------------------------------------------------------------------------
    pos = a[a["subject_kind"] == "position"]
    if len(pos):
        pinfo = ctx.extra.get("position", {})
        r0 = pos.sort_values("severity", ascending=False).iloc[0]
        title = (f"Position bias changed: observed CTR falls with position with slope {_fmt(pinfo.get('ctr_slope'))} "
                 f"(usually {_fmt(pos[pos['statistic'] == 'ctr_slope']['reference'].mean())})")
        if "seen_slope" in pinfo:
            title += f"; the model's seen curve has slope {_fmt(pinfo['seen_slope'])}"
        findings.append(_Finding(
            "position_bias_change", "position", "warning", strength(pos), title, list(pos.itertuples(index=False)),
            [{"label": "position", "url": link("/features", ctx, field="position")}],
            {"ctr_by_position": pinfo.get("ctr_by_position"), "seen_curve": pinfo.get("seen_curve")},
        ))  # fmt: skip

    # -- checkpoint change report: the old and the new checkpoint on the same rows --------------------
    findings += _checkpoint_change_findings(d, a, ctx)
    changed = bool(ctx.extra.get("checkpoint_change"))

    # -- checkpoint: dead / saturated units, over-fitting --------------------------------------------
    lay = a[a["subject_kind"] == "layer"]
    for la, g in lay.groupby("subject"):
        for stat, finding in (("dead_fraction", "dead_neurons"), ("saturated_fraction", "saturated_neurons")):
            rows = g[(g["statistic"] == stat) & (g["direction"] == "above")]
            if rows.empty or not ctx.new_version:
                continue
            r0 = rows.iloc[0]
            sev = "critical" if r0["value"] - r0["reference"] >= 0.25 else "warning"
            findings.append(_Finding(
                finding, la, sev, strength(rows),
                f"New checkpoint: {_fmt(r0['value'], True)} of layer {la}'s units are "
                f"{'dead' if finding == 'dead_neurons' else 'saturated'} (usually {_fmt(r0['reference'], True)})",
                list(rows.itertuples(index=False)), [{"label": f"layer {la}", "url": link("/neurons", ctx, layer=la)}],
            ))  # fmt: skip
    ck = a[a["subject_kind"] == "checkpoint"]
    if len(ck) and not changed:  # with a previous checkpoint, the calibrated excess gap decides (above)
        info = ctx.extra.get("checkpoint_check", {})
        heads = [h for h in ck["subject"] if h in ctx.heads] or list(ctx.heads)[:1] or ["model"]
        worst = ck.sort_values("severity", ascending=False).iloc[0]
        auc = info.get("auc", {})
        nums = "; ".join(f"{h} AUC {_fmt(v['train'])} on {info.get('train_day')} vs {_fmt(v['today'])} today" for h, v in auc.items())
        # no previous checkpoint to calibrate the gap against: a memorising recipe (ids seen in training)
        # has a big train-vs-test gap by design, so the uncalibrated check is recorded, not paged
        findings.append(_Finding(
            "overfitting", heads[0], "info", strength(ck),
            f"The checkpoint fits its training day much better than new days (not calibrated: no previous checkpoint "
            f"to compare with): {worst['statistic']} {_fmt(worst['value'])} for {worst['subject']}"
            + (f" ({nums})" if nums else ""),
            list(ck.itertuples(index=False)),
            [{"label": f"layer {s}", "url": link("/neurons", ctx, layer=s, compare=info.get("train_day"))}
             for s in ck["subject"] if s not in ctx.heads],
            {"train_day": info.get("train_day"), "fluctuation": info.get("fluctuation"), "auc": auc},
        ))  # fmt: skip

    # -- labels moved while inputs and model did not: the label pipeline ------------------------------
    if not [f for f in findings if f.finding in ROOT_FINDINGS]:
        for r in a[(a["subject_kind"] == "label") & (a["direction"] == "below")].itertuples(index=False):
            rel = (r.reference - r.value) / r.reference if r.reference and r.reference > 0 else float("nan")
            findings.append(_Finding(
                "label_pipeline", r.subject, "critical" if rel >= 0.2 else "warning", r.severity,
                f"{r.subject} labels fell to {_fmt(r.value, True)} of rows (usually {_fmt(r.reference, True)}, "
                f"{_fmt(rel, True)} fewer) while the inputs and the model did not change: labels lost in the pipeline "
                f"(a late or incomplete label join?)", [r],
                [{"label": f"field {r.subject}", "url": link("/features", ctx, field=r.subject)}],
                {"relative_drop": rel},
            ))  # fmt: skip

    # -- heads: calibration, quality ------------------------------------------------------------------
    root = [f for f in findings if f.finding in ROOT_FINDINGS]
    cal = a[(a["subject_kind"] == "quality") & a["statistic"].isin(["calibration", "log_mean_pred"])]
    lab = a[a["subject_kind"] == "label"]
    cal_heads: dict[str, list[Any]] = {}
    for r in cal.itertuples(index=False):
        cal_heads.setdefault(r.subject, []).append(r)
    for r in lab.itertuples(index=False):
        for h, label in ctx.heads.items():
            if label == r.subject or (label == "click*conversion" and r.subject in ("click", "conversion")):
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
            parts.append(f"calibration (pCTR sum / clicks) {_fmt(c.value)} (usually {_fmt(c.reference)})")
        if rate is not None:
            parts.append(f"{rate.subject} rate {_fmt(rate.value, True)} (usually {_fmt(rate.reference, True)})")
        if not parts:
            parts.append(_describe(rows))
        big = c is not None and c.value > 0 and c.reference > 0 and abs(math.log(c.value / c.reference)) > 0.2
        explained = bool(root)
        findings.append(_Finding(
            "calibration_drift", h, "info" if explained else ("critical" if big else "warning"),
            max(r.severity for r in rows), f"Calibration of {h} drifted: " + "; ".join(parts), rows,
            [{"label": f"quality {h}", "url": link("/quality", ctx, head=h)}],
        ))  # fmt: skip
    for r in quality_alerts.itertuples(index=False):
        attribution = attribute(d, r.subject)
        top = attribution[0]["field"] if attribution else None
        findings.append(_Finding(
            "quality_drop", r.subject, "info" if root else "warning", r.severity,
            f"AUC of {r.subject} fell to {_fmt(r.value)} (usually {_fmt(r.reference)})"
            + (f"; most likely cause: field {top}" if top else ""),
            [r], [{"label": f"quality {r.subject}", "url": link("/quality", ctx, head=r.subject)}]
            + ([{"label": f"field {top}", "url": link("/features", ctx, field=top)}] if top else []),
            {"attribution": attribution[:5]},
        ))  # fmt: skip

    # -- symptoms inside the model ---------------------------------------------------------------------
    symptom_sev = "info" if (root or cal_heads or not quality_alerts.empty) else "warning"
    pr = a[(a["subject_kind"] == "probe") & (a["direction"] == "below")]
    per_head = pr["subject"].str.split("/").str[0].value_counts().to_dict() if len(pr) else {}
    for r in pr.itertuples(index=False):
        h, la = r.subject.split("/", 1) if "/" in r.subject else ("", r.subject)
        # one probe on a few hundred held-out rows is noisy: alone it pages only when far off
        sev = symptom_sev if (r.severity >= 2.0 or per_head.get(h, 0) >= 2) else "info"
        findings.append(_Finding(
            "probe_drop", r.subject, sev, r.severity,
            f"Probe AUC of layer {la} ({h}) fell to {_fmt(r.value)} (usually {_fmt(r.reference)})", [r],
            [{"label": f"layer {la}", "url": link("/probes", ctx, layer=la, head=h or None)}],
        ))  # fmt: skip
    nd = lay[lay["statistic"] == "neuron_drift_share"]
    for r in nd.itertuples(index=False):
        findings.append(_Finding(
            "neuron_drift", r.subject, symptom_sev, r.severity,
            f"{_fmt(r.value, True)} of layer {r.subject}'s neurons moved (usually {_fmt(r.reference, True)})", [r],
            [{"label": f"layer {r.subject}", "url": link("/neurons", ctx, layer=r.subject)}],
        ))  # fmt: skip

    return _result(findings, ctx)


def _checkpoint_change_findings(d: pd.DataFrame, a: pd.DataFrame, ctx: Context) -> list[_Finding]:
    """Findings of the checkpoint change report (``checkpoint_change`` rows, see
    :func:`ctrlens.monitor.compute.checkpoint_change`): the model axis, judged on the same rows for
    both checkpoints, so no input change can cause them."""
    info = ctx.extra.get("checkpoint_change") or {}
    if not info:
        return []
    out: list[_Finding] = []
    ch = a[a["subject_kind"] == "checkpoint_change"]
    prev = info.get("previous_version_id")

    def nlink(layer: str | None = None) -> list[dict[str, str]]:
        return [{"label": f"layer {layer}" if layer else "neurons", "url": link("/neurons", ctx, layer=layer)}]

    heads = info.get("heads", {})
    for r in ch.itertuples(index=False):
        st, subj = r.statistic, r.subject
        if st == "excess_train_test_gap":
            o = info.get("overfit", {}).get(subj, {})
            out.append(_Finding(
                "overfitting", subj, "critical", r.severity,
                f"The new checkpoint is over-fitted: its {subj} AUC gap between its training day {o.get('new_train_day')} "
                f"and today is {_fmt(o.get('new_gap'))}, against {_fmt(o.get('old_gap'))} for the previous checkpoint "
                f"(its own training day {o.get('old_train_day')})", [r], nlink(),
                {"overfit": o, "previous_version_id": prev},
            ))  # fmt: skip
        elif st == "auc_delta":
            h = heads.get(subj, {})
            out.append(_Finding(
                "model_regression", subj, "critical", r.severity,
                f"The new checkpoint ranks worse than the previous one on the same {info.get('rows')} rows: {subj} AUC "
                f"{_fmt(h.get('auc_new'))} vs {_fmt(h.get('auc_old'))} (logit correlation {_fmt(h.get('logit_corr'))})",
                [r], [{"label": f"quality {subj}", "url": link("/quality", ctx, head=subj)}],
                {"head": h, "previous_version_id": prev},
            ))  # fmt: skip
        elif st == "log_mean_abs_ratio":
            la = info.get("layers", {}).get(subj, {})
            out.append(_Finding(
                "exploding_activations", subj, "critical", r.severity,
                f"New checkpoint: layer {subj} ({la.get('activation')}) has a mean |activation| of "
                f"{_fmt(la.get('mean_abs_new'))} on the same rows, {math.exp(r.value):.3g}x the previous checkpoint's "
                f"{_fmt(la.get('mean_abs_old'))}", [r], nlink(subj), {"layer": la, "previous_version_id": prev},
            ))  # fmt: skip
        elif st in ("dead_fraction_delta", "saturated_fraction_delta"):
            la = info.get("layers", {}).get(subj, {})
            dead = st == "dead_fraction_delta"
            new_v, old_v = (la.get("dead_new"), la.get("dead_old")) if dead else (la.get("saturated_new"), la.get("saturated_old"))
            out.append(_Finding(
                "dead_neurons" if dead else "saturated_neurons", subj, "critical" if r.value >= 0.25 else "warning", r.severity,
                f"New checkpoint: {_fmt(new_v, True)} of layer {subj}'s units are {'dead' if dead else 'saturated'} on the "
                f"same rows (previous checkpoint {_fmt(old_v, True)}; {la.get('activation')})", [r], nlink(subj),
                {"layer": la, "previous_version_id": prev},
            ))  # fmt: skip
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
        what = (f"{_fmt(ti.get('reinit_frac'), True)} of today's {ti.get('rows')} looked-up rows were replaced (direction "
                f"or size no longer the previous checkpoint's) while the rest is as before (median cosine "
                f"{_fmt(ti.get('cos_median'))}): re-initialised or overwritten rows") if partial else \
            f"its looked-up rows collapsed: effective rank x{_fmt(ti.get('rank_ratio'))} of the previous checkpoint's"
        out.append(_Finding(
            "embedding_corruption", t, "critical", strength_of(g),
            f"Embedding table {t} is damaged in the new checkpoint: {what}; median row norm x{_fmt(ti.get('norm_ratio'))}",
            list(g.itertuples(index=False)),
            [{"label": f"field {f}", "url": link("/features", ctx, field=f)} for tb, f in ctx.item_tables.items() if tb == t]
            or nlink(), {"table": ti, "previous_version_id": prev},
        ))  # fmt: skip
    # over-training on a few rows moves exactly the rows it trained on: the table finding follows it
    if any(f.finding == "overfitting" for f in out):
        for f in out:
            if f.finding == "embedding_corruption":
                f.base = BASE_SCORE["model_regression"] - 1
                f.title += " (the checkpoint is also over-fitted: its training moved these rows)"
    # a worse ranking is what a dead / exploding layer, a damaged table or over-fitting does: it follows them
    if any(f.finding != "model_regression" and f.severity in PAGING for f in out):
        for f in out:
            if f.finding == "model_regression":
                f.base = BASE_SCORE["quality_drop"]
    # the report itself: recorded every time the serving checkpoint changes
    parts = [f"{h} AUC {_fmt(v.get('auc_old'))} -> {_fmt(v.get('auc_new'))}, logit correlation {_fmt(v.get('logit_corr'))}"
             for h, v in heads.items()]  # fmt: skip
    out.append(_Finding(
        "checkpoint_change", "model", "info", 0.0,
        f"The serving checkpoint changed (previous: {str(info.get('previous_checkpoint', '?')).rsplit('/', 1)[-1]}); "
        f"on the same {info.get('rows')} rows: " + "; ".join(parts),
        list(ch.itertuples(index=False)), nlink(), {"report": info},
    ))  # fmt: skip
    return out


def _swap_findings(a: pd.DataFrame, ctx: Context, explained: set[str]) -> list[_Finding]:
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
        out.append(_Finding(
            "fields_swapped", x, "critical", max(r.severity, 1.0),
            what + f" (distance {_fmt(r.value)} to {y}'s reference, {_fmt(r.reference)} to its own)", syms, links,
            {"looks_like": y, "swapped": both},
        ))  # fmt: skip
        explained.add(x)
        if both:
            explained.add(y)
    return out


def _named_field_cause(f: str, kind: str, rows: pd.DataFrame, alerted: pd.DataFrame, links: list[dict[str, str]],
                       hurts: bool) -> _Finding | None:  # fmt: skip
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
            return _Finding(
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
            return _Finding(
                "sequence_truncated", f, "critical" if hurts else "warning", max(float(alerted["severity"].max()), 1.0),
                f"Lists of {f} look truncated: mean length x{k_len:.2f}, length spread x{k_std:.2f}, while the values "
                f"in them are as usual -- a length cap or cut upstream", syms, links,
                {"length_factor": k_len, "length_std_factor": k_std},
            )  # fmt: skip
    return None


def strength_of(rows: pd.DataFrame) -> float:
    return float(rows["severity"].max()) if len(rows) else 0.0


def _decoupled(a: pd.DataFrame, imp: dict[str, pd.DataFrame]) -> tuple[set[str], dict[str, list[Any]]]:
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


def _typical_importance_ratio(d: pd.DataFrame) -> dict[str, float]:
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


def with_severity(drift: pd.DataFrame) -> pd.DataFrame:
    """``drift`` with a ``severity`` column: ``|value - reference| / |threshold - reference|`` (1 at
    the threshold) for rows that crossed it, else 0 -- recomputed from stored rows when absent."""
    d = drift.copy()
    if "severity" in d:
        return d
    v, ref, thr = (d[c].astype(float).to_numpy() for c in ("value", "reference", "threshold"))
    with np.errstate(divide="ignore", invalid="ignore"):
        sev = np.abs(v - ref) / np.abs(thr - ref)
    crossed = np.where(d["direction"].to_numpy() == "above", v > thr, v < thr)
    d["severity"] = np.where(crossed & np.isfinite(sev), sev, np.where(crossed, 1.0, 0.0))
    return d


def _per_field(d: pd.DataFrame, subject_kind: str) -> dict[str, pd.DataFrame]:
    """``head/field`` subjects of one kind, grouped by field."""
    s = d[d["subject_kind"] == subject_kind]
    if s.empty:
        return {}
    fields = s["subject"].str.split("/", n=1).str[-1]
    return {f: g for f, g in s.groupby(fields)}


def _convincing(shape: pd.DataFrame) -> bool:
    """A distribution change is believed when two different statistics see it, or one sees it at
    twice its threshold distance: one borderline distance alone is noise more often than not."""
    return bool(shape["statistic"].nunique() >= 2 or (len(shape) and shape["severity"].max() >= 2.0))


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
            out.append(f"top value {_fmt(r.value, True)} of rows (usually {_fmt(r.reference, True)})")
        elif r.statistic == "log_cardinality":
            out.append(f"{math.exp(r.value):.0f} distinct values (usually {math.exp(r.reference):.0f})")
        elif r.statistic == "log_std":
            out.append(f"std {math.exp(r.value):.3g} (usually {math.exp(r.reference):.3g})")
    return f" ({', '.join(out)})" if out else ""


def _imp_text(rows: list[Any]) -> str:
    if not rows:
        return ""
    r = rows[0]
    return f"; permutation importance {_fmt(r.value)} (usually {_fmt(r.reference)})"


def _describe(rows: Iterable[Any]) -> str:
    return ", ".join(f"{r.statistic} of {r.subject} {_fmt(r.value)} (usually {_fmt(r.reference)})" for r in list(rows)[:3])


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
    decoupled, per = _decoupled(d[d["alert"].fillna(False).astype(bool)], _per_field(d, "importance"))
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


def _result(findings: list[_Finding], ctx: Context) -> Result:
    best: dict[tuple[str, str], _Finding] = {}
    for f in findings:  # one row per (finding, subject): the strongest
        k = (f.finding, f.subject)
        if k not in best or f.score > best[k].score:
            best[k] = f
    # ties of the capped score: the stronger drift first (e.g. all candidate images blank vs a few in histories)
    ranked = sorted(best.values(), key=lambda f: (-f.score, -f.strength, f.finding, f.subject))
    rows = []
    for f in ranked:
        evidence = {"model": ctx.model, "day": ctx.day, "version_id": ctx.version_id, "new_version": ctx.new_version,
                    "symptoms": f.symptoms[:12], "links": f.links, **f.numbers}  # fmt: skip
        rows.append({"finding": f.finding, "subject": f.subject, "severity": f.severity, "score": round(f.score, 4),
                     "title": f.title[:500], "evidence_json": jsonable(evidence), "action": ACTIONS.get(f.finding, "")})  # fmt: skip
    frame = pd.DataFrame(rows, columns=list(COLUMNS["alert"]))
    return Result("alert", frame, {"model": ctx.model, "day": ctx.day, "rules": "ctrlens.monitor.diagnosis",
                                   "paging": list(PAGING)})  # fmt: skip


__all__ = ["ACTIONS", "BASE_SCORE", "Context", "PAGING", "ROOT_FINDINGS", "attribute", "diagnose", "link", "with_severity"]
