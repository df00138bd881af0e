"""Ranking the day's findings into the ``alert`` result: one row per finding and subject, best first."""

from __future__ import annotations

import pandas as pd

from ctrlens.monitor.diagnosis.actions import ACTIONS
from ctrlens.monitor.diagnosis.base import PAGING, Context, Finding
from ctrlens.results import COLUMNS, Result, jsonable


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
