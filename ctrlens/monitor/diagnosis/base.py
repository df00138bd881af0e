"""What every rule shares: the finding names and scores, the day's context, a finding, links, numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urlencode

import numpy as np
import pandas as pd

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


def symptom_row(r: Any) -> dict[str, Any]:
    def num(x: Any) -> float | None:
        return None if x is None or not np.isfinite(x) else round(float(x), 6)

    return {"kind": r.subject_kind, "subject": r.subject, "statistic": r.statistic, "value": num(r.value),
            "reference": num(r.reference), "threshold": num(r.threshold), "direction": r.direction,
            "severity": num(getattr(r, "severity", 0.0))}  # fmt: skip


def fmt(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.1%}" if pct else f"{x:.4g}"


class Finding:
    def __init__(self, finding: str, subject: str, severity: str, strength: float, title: str,
                 symptoms: list[Any], links: list[dict[str, str]], numbers: dict[str, Any] | None = None,
                 base: float | None = None):  # fmt: skip
        self.finding, self.subject, self.severity = finding, subject, severity
        self.base = BASE_SCORE.get(finding, 10) if base is None else base
        self.strength = strength
        self.title = title
        self.symptoms = [symptom_row(s) for s in symptoms]
        self.links = links
        self.numbers = numbers or {}

    @property
    def score(self) -> float:
        return self.base + min(max(self.strength, 0.0), 9.9)


def strength_of(rows: pd.DataFrame) -> float:
    return float(rows["severity"].max()) if len(rows) else 0.0


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


def per_field(d: pd.DataFrame, subject_kind: str) -> dict[str, pd.DataFrame]:
    """``head/field`` subjects of one kind, grouped by field."""
    s = d[d["subject_kind"] == subject_kind]
    if s.empty:
        return {}
    fields = s["subject"].str.split("/", n=1).str[-1]
    return {f: g for f, g in s.groupby(fields)}


def describe(rows: Iterable[Any]) -> str:
    return ", ".join(f"{r.statistic} of {r.subject} {fmt(r.value)} (usually {fmt(r.reference)})" for r in list(rows)[:3])
