"""Ranking the day's findings into the ``alert`` result: one row per finding and subject, best first."""

from __future__ import annotations

import pandas as pd

from ctrlens.monitor.diagnosis.actions import ACTIONS
from ctrlens.monitor.diagnosis.base import BASE_SCORE, PAGING, Context, Finding
from ctrlens.results import COLUMNS, Result, jsonable

#: Findings that rest on the field's *own* input rows (checkpoint-free evidence).
INPUT_EVIDENCE = ("broken_feature", "oov_surge", "unit_change", "fields_swapped", "sequence_truncated",
                  "distribution_shift", "image_pipeline_broken")  # fmt: skip


def demote_secondary(findings: list[Finding]) -> None:
    """A ``broken_feature`` that rests on permutation importance alone (the field's distribution and
    its dependence on other fields as usual) is a symptom when another field's own inputs broke the
    same day: the model reads fields together (DIN's attention is queried by the candidate's
    category; a cross layer mixes them), so one broken input lowers the importance of the fields it
    interacts with. Kept as ``info`` under the input finding (in place; nothing else changes)."""
    primary = [f for f in findings if f.finding in INPUT_EVIDENCE and f.severity in PAGING
               and f.numbers.get("evidence") != "importance"]  # fmt: skip
    if not primary:
        return
    top = max(primary, key=lambda f: f.score)
    for f in findings:
        if _importance_only(f) and f.subject != top.subject:
            _keep_under(f, top, f"probably a symptom of {top.finding} on {top.subject}: the model reads them together")


#: Findings of the checkpoint's own training run: a new checkpoint that diverged or over-fitted.
TRAINING_RUN = ("exploding_activations", "dead_neurons", "saturated_neurons", "model_regression", "overfitting")


def demote_to_checkpoint(findings: list[Finding], ctx: Context) -> None:
    """On a day served by a new checkpoint whose change report pages (a layer blew up or died, it
    ranks worse than the previous one on the same rows, it over-fitted), a ``broken_feature`` that
    rests on permutation importance alone is the new checkpoint's doing: a diverged model's
    importances are noise (permuting a field can even raise its AUC), and the field's own inputs
    did not move. Kept as ``info`` under the checkpoint's finding (in place)."""
    if not ctx.new_version:
        return
    model = [f for f in findings if f.finding in TRAINING_RUN and f.severity in PAGING]
    if not model:
        return
    top = max(model, key=lambda f: f.score)
    for f in findings:
        if _importance_only(f) and f.severity in PAGING:
            _keep_under(f, top, f"probably the new checkpoint ({top.finding} on {top.subject}), not the field's data")


def _importance_only(f: Finding) -> bool:
    """A ``broken_feature`` resting on permutation importance alone (the field's own rows as usual)."""
    return f.finding == "broken_feature" and f.numbers.get("evidence") == "importance"


def _keep_under(f: Finding, top: Finding, why: str) -> None:
    """Keep ``f`` as an ``info`` symptom of ``top`` (in place): ranked as a saliency shift, ``why`` in
    its title, ``top`` named in its evidence (``secondary_to``)."""
    f.severity = "info"
    f.base = BASE_SCORE["saliency_shift"]
    f.numbers["secondary_to"] = {"finding": top.finding, "subject": top.subject}
    f.title += f" -- {why}"


def ranked(findings: list[Finding], ctx: Context) -> Result:
    best: dict[tuple[str, str], Finding] = {}
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
