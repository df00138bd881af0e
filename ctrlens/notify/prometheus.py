"""The store's headline numbers as Prometheus metrics (OpenMetrics text, no client library needed).

Served by the dashboard at ``/metrics`` (behind the dashboard's own auth) and written by the
nightly job as a node_exporter textfile (``metrics: {textfile: ...}``; atomic: a temporary file in
the same folder, then a rename, so the collector never reads half a file). Metrics (all gauges):

=============================================  ============================================================
``ctrlens_open_alerts{model,severity}``          alerts in state ``open`` (acknowledged ones are not counted)
``ctrlens_auc{model,head}``                      AUC of the head on the model's latest day
``ctrlens_calibration{model,head}``              sum(pCTR) / clicks on the latest day (1 = calibrated)
``ctrlens_mean_pctr{model,head}``                mean predicted CTR on the latest day
``ctrlens_field_drift_score{model,field}``       the field's top drift score on the latest day:
                                                 max over its tests of ``|value - reference| /
                                                 |threshold - reference|`` (1 = at the alert threshold)
``ctrlens_latest_day_timestamp_seconds{model}``  the latest day with results (midnight UTC)
``ctrlens_last_success_timestamp_seconds{model}``  when the latest complete run finished
``ctrlens_notify_failing_deliveries{channel}``   open alerts whose last delivery attempt failed
=============================================  ============================================================
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
SEVERITIES = ("critical", "warning", "info")

_HELP = {
    "ctrlens_open_alerts": "Alerts in state open (not acknowledged, not resolved).",
    "ctrlens_auc": "AUC of the head on the model's latest day.",
    "ctrlens_calibration": "Calibration (sum of pCTR / clicks) of the head on the model's latest day; 1 is calibrated.",
    "ctrlens_mean_pctr": "Mean predicted CTR of the head on the model's latest day.",
    "ctrlens_field_drift_score": "Top drift score of the field on the model's latest day; 1 is at the alert threshold.",
    "ctrlens_latest_day_timestamp_seconds": "The latest day with results (midnight UTC, unix seconds).",
    "ctrlens_last_success_timestamp_seconds": "When the model's latest complete run finished (unix seconds).",
    "ctrlens_notify_failing_deliveries": "Open alerts whose latest delivery attempt on the channel failed.",
}


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _epoch(x: Any) -> float:
    if isinstance(x, str):
        x = dt.datetime.fromisoformat(x)
    if isinstance(x, dt.date) and not isinstance(x, dt.datetime):
        x = dt.datetime(x.year, x.month, x.day)
    return float(calendar.timegm(x.timetuple())) + getattr(x, "microsecond", 0) / 1e6  # naive UTC


def samples(store: Any, *, run_kind: str | None = None) -> dict[str, list[tuple[dict[str, str], float]]]:
    """metric name -> [(labels, value)], read from ``store`` (latest day per model)."""
    from ctrlens.store import deliveries

    out: dict[str, list[tuple[dict[str, str], float]]] = {k: [] for k in _HELP}
    latest = store.latest_days(run_kind=run_kind)
    models = sorted(set(store.models()["model"]))
    alerts = store.alerts(states=("open",))
    for m in models:
        a = alerts[alerts["model"] == m]
        for s in SEVERITIES:
            out["ctrlens_open_alerts"].append(({"model": m, "severity": s}, float((a["severity"] == s).sum())))
    for r in latest.itertuples(index=False):
        out["ctrlens_latest_day_timestamp_seconds"].append(({"model": r.model}, _epoch(r.day)))
        q = store.read(int(r.version_id), r.day, "quality", run_kind=run_kind)
        if q is not None:
            for row in q.frame.itertuples(index=False):
                for name, col in (("ctrlens_auc", "auc"), ("ctrlens_calibration", "calibration"), ("ctrlens_mean_pctr", "mean_pred")):
                    v = getattr(row, col)
                    if v is not None and math.isfinite(float(v)):
                        out[name].append(({"model": r.model, "head": str(row.head)}, float(v)))
        d = store.read(int(r.version_id), r.day, "drift", run_kind=run_kind)
        if d is not None and len(d.frame):
            f = d.frame[d.frame["subject_kind"] == "field"]
            v, ref, thr = (f[c].astype(float).to_numpy() for c in ("value", "reference", "threshold"))
            with np.errstate(divide="ignore", invalid="ignore"):
                score = np.abs(v - ref) / np.abs(thr - ref)
            best: dict[str, float] = {}
            for field, sc in zip(f["subject"], score):
                if math.isfinite(sc):
                    best[field] = max(best.get(field, 0.0), float(sc))
            for field in sorted(best):
                out["ctrlens_field_drift_score"].append(({"model": r.model, "field": field}, best[field]))
    runs = store.runs(run_kind=run_kind)
    if len(runs):
        ok = runs[(runs["status"] == "complete") & runs["finished_at"].notna()]
        for m, g in ok.groupby("model"):
            out["ctrlens_last_success_timestamp_seconds"].append(({"model": str(m)}, _epoch(max(g["finished_at"]))))
    for r in deliveries.failing(store).itertuples(index=False):
        out["ctrlens_notify_failing_deliveries"].append(({"channel": r.channel}, float(r.failing)))
    return out


def render(store: Any, *, run_kind: str | None = None) -> str:
    """The metrics of ``store`` in the OpenMetrics text format (ends with ``# EOF``)."""
    return format_samples(samples(store, run_kind=run_kind))


def format_samples(data: dict[str, Iterable[tuple[dict[str, str], float]]]) -> str:
    lines = []
    for name, rows in data.items():
        lines.append(f"# HELP {name} {_HELP.get(name, name)}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in rows:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {repr(float(value))}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def write_textfile(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, then a rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # node_exporter usually runs as another user
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


__all__ = ["CONTENT_TYPE", "format_samples", "render", "samples", "write_textfile"]
