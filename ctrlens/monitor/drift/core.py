"""The suite's machinery: one statistic against its reference values, recorded as a drift row.

:class:`SuiteCore` owns the rows, the reference lookups (usable days: those on which the subject did
not alert), persistence across days and the observations computed by the job; the tests per result
kind build on it (:mod:`.inputs`, :mod:`.model`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ctrlens.monitor.config import Thresholds
from ctrlens.monitor.drift.bands import (CALENDAR_STATISTICS, DISTANCES, FLOORS, REL_FLOORS, band, exceeded, fixed_severity, judge,
                                         pooled, reference_distances, weekly_band)
from ctrlens.monitor.drift.history import History
from ctrlens.results import COLUMNS, Result

class SuiteCore:
    """The bookkeeping of a drift suite: bands per statistic, reference lookups, persistence, rows.

    Args:
        thresholds: the configured :class:`~ctrlens.monitor.config.Thresholds`.
        min_days: fewer usable reference days than this: values are recorded, nothing alerts.
    """

    def __init__(self, thresholds: Thresholds, history: History, *, min_days: int = 3):
        self.t = thresholds
        self.h = history
        self.min_days = min_days
        self.rows: list[dict[str, Any]] = []
        self.neurons: dict[str, dict[str, Any]] = {}  # layer -> neuron_layer_test output (for evidence)
        self._alerted = history.alerted()
        self._recent = self._recent_exceedances(history.recent)

    # -- bookkeeping -----------------------------------------------------------------------------
    @staticmethod
    def _recent_exceedances(recent: pd.DataFrame) -> dict[tuple[str, str, str], list[tuple[str, bool]]]:
        out: dict[tuple[str, str, str], list[tuple[str, bool]]] = {}
        if recent is None or recent.empty:
            return out
        for r in recent.itertuples(index=False):
            key = (r.subject_kind, r.subject, r.statistic)
            out.setdefault(key, []).append((r.day, exceeded(r.value, r.threshold, r.direction)))
        for v in out.values():
            v.sort()
        return out

    def _persistent(self, key: tuple[str, str, str], severity: float) -> bool:
        p = self.t.persistence
        if p <= 1 or severity >= 2.0:
            return True
        past = self._recent.get(key, [])[-(p - 1):]
        return len(past) == p - 1 and all(e for _, e in past)

    def _usable(self, subject_kind: str, subject: str, days: Sequence[str]) -> list[str]:
        """Reference days minus those on which this subject alerted -- unless that is half of them
        or more (a new regime: then the reference follows it)."""
        bad = [d for d in days if (d, subject_kind, subject) in self._alerted]
        if bad and len(bad) * 2 < len(days):
            return [d for d in days if d not in bad]
        return list(days)

    def floor(self, statistic: str) -> float:
        return self.t.floor(statistic, FLOORS.get(statistic, 0.0))

    def add(self, subject_kind: str, subject: str, statistic: str, value: float, ref_values: Sequence[float], *,
            sides: str = "both", floor: float | None = None, rel_floor: float | None = None,
            ref_days: Sequence[str] | None = None) -> dict[str, Any]:  # fmt: skip
        """Test one statistic against its reference values and record the row. ``ref_days``: the day of
        each reference value, for calendar statistics (:data:`CALENDAR_STATISTICS`: a weekly-cycle band
        when the reference shows a cycle, see :func:`weekly_band`)."""
        fl = self.floor(statistic) if floor is None else floor
        rel = REL_FLOORS.get(statistic, self.t.rel_floor if statistic in DISTANCES else 0.0) if rel_floor is None else rel_floor
        enough = len(ref_values) >= max(self.min_days - (1 if statistic in DISTANCES else 0), 2)
        b = band(ref_values, k=self.t.k, floor=fl, rel_floor=rel) if enough else None
        if b is not None and ref_days is not None and self.h.today and statistic in CALENDAR_STATISTICS:
            b = weekly_band(ref_values, ref_days, self.h.today, k=self.t.k, floor=fl, rel_floor=rel) or b
        value = float(value) if value is not None and np.isfinite(value) else float("nan")
        if b is None:
            row = {"subject_kind": subject_kind, "subject": subject, "statistic": statistic,
                   "method": f"recorded only: {len(ref_values)} reference value(s) < {self.min_days} ({self.h.label})",
                   "value": value, "reference": nanmean(ref_values),
                   "threshold": float("nan"), "direction": "above" if sides != "below" else "below", "alert": False,
                   "severity": 0.0}  # fmt: skip
        else:
            o = judge(value, b, sides=sides)
            alert = o.exceeded and self._persistent((subject_kind, subject, statistic), o.severity)
            row = {"subject_kind": subject_kind, "subject": subject, "statistic": statistic, "method": b.describe(self.h.label),
                   "value": value, "reference": b.center, "threshold": o.threshold, "direction": o.direction,
                   "alert": bool(alert), "severity": o.severity if o.exceeded else 0.0}  # fmt: skip
        self.rows.append(row)
        return row

    def _ref_rows(self, kind: str, subject_kind: str, subject: str, mask_fn):
        """The reference days' rows of ``kind`` selected by ``mask_fn(frame)`` (usable days only, in day
        order), or ``None`` when there is no history of that kind."""
        f = self.h.frame(kind)
        if f.empty:
            return None
        sel = f[mask_fn(f)]
        days = self._usable(subject_kind, subject, self.h.days)
        return sel[sel["day"].isin(days)].sort_values("day")

    def ref_values(self, kind: str, subject_kind: str, subject: str, mask_fn, col: str, transform=None) -> list[float]:
        """One column of the reference rows selected by ``mask_fn(frame)``, per usable day, in day order."""
        return self.ref_series(kind, subject_kind, subject, mask_fn, col, transform)[1]

    def ref_series(self, kind: str, subject_kind: str, subject: str, mask_fn, col: str,
                   transform=None) -> tuple[list[str], list[float]]:  # fmt: skip
        """``(days, values)``: :meth:`ref_values` with the day of each value."""
        sel = self._ref_rows(kind, subject_kind, subject, mask_fn)
        if sel is None:
            return [], []
        vals = sel[col].to_numpy(dtype=np.float64)
        return [str(d) for d in sel["day"]], list(transform(vals)) if transform is not None else list(vals)

    def ref_hists(self, kind: str, subject_kind: str, subject: str, mask_fn, col: str = "hist_json",
                  edges: Sequence[float] | None = None) -> list[np.ndarray]:  # fmt: skip
        """Reference histograms (counts) with today's bin layout, in day order."""
        sel = self._ref_rows(kind, subject_kind, subject, mask_fn)
        if sel is None:
            return []
        out = []
        for h in sel[col]:
            if not isinstance(h, dict) or "counts" not in h:
                continue
            if edges is not None and not same_edges(h.get("edges"), edges):
                continue
            out.append(np.asarray(h["counts"], dtype=np.float64))
        return out

    def add_distance(self, subject_kind: str, subject: str, statistic: str, today: Sequence[float], refs: list[np.ndarray],
                     metric) -> dict[str, Any] | None:  # fmt: skip
        """A distance of today's histogram to the pooled reference, banded by the reference's own distances."""
        t = np.asarray(today, dtype=np.float64)
        refs = [r for r in refs if r.shape == t.shape and r.sum() > 0]
        if t.sum() <= 0:
            return None
        value = metric(pooled(refs), t) if refs else float("nan")
        ref_d = reference_distances(refs, metric, self.h.scheme) if len(refs) >= 2 else []
        if len(refs) < self.min_days:
            ref_d = ref_d[:0]
        return self.add(subject_kind, subject, statistic, value, ref_d, sides="above")

    def result(self, meta: dict[str, Any] | None = None) -> Result:
        cols = list(COLUMNS["drift"])
        frame = pd.DataFrame(self.rows, columns=cols + ["severity"])
        frame = frame.drop_duplicates(["subject_kind", "subject", "statistic", "method"], keep="last")
        m = {"reference_days": list(self.h.days), "reference": self.h.label, "scheme": self.h.scheme,
             "k": self.t.k, "persistence": self.t.persistence, "severity": frame.set_index(
                 frame["subject_kind"] + "|" + frame["subject"] + "|" + frame["statistic"])["severity"].round(4).to_dict(),
             **(meta or {})}  # fmt: skip
        return Result("drift", frame[cols], m)

    def frame(self) -> pd.DataFrame:
        """All rows so far, with the extra ``severity`` column (for the diagnosis)."""
        return pd.DataFrame(self.rows, columns=list(COLUMNS["drift"]) + ["severity"])

    def _ref_col(self, kind: str, subject_kind: str, subject: str, mask_fn, col: str) -> list[Any]:
        f = self.h.frame(kind)
        if f.empty:
            return []
        sel = f[mask_fn(f)]
        days = self._usable(subject_kind, subject, self.h.days)
        return list(sel[sel["day"].isin(days)].sort_values("day")[col])

    def observations(self, obs: Sequence[dict[str, Any]]) -> None:
        """Extra statistics computed today (position CTR slope, checkpoint checks...); their history
        is the ``value`` of earlier drift rows with the same subject and statistic."""
        d = self.h.frame("drift")
        for o in obs:
            sk, subj, st = o["subject_kind"], o["subject"], o["statistic"]
            ref: list[float] = []
            if not d.empty and not o.get("fixed_only"):
                days = self._usable(sk, subj, self.h.days)
                sel = d[(d["subject_kind"] == sk) & (d["subject"] == subj) & (d["statistic"] == st) & d["day"].isin(days)]
                ref = list(sel.sort_values("day")["value"].astype(float))
            if o.get("fixed_threshold") is not None and (len(ref) < self.min_days or o.get("fixed_only")):
                thr = float(o["fixed_threshold"])
                side = o.get("sides", "above")
                v = float(o["value"])
                ex = bool(np.isfinite(v)) and ((v > thr) if side == "above" else (v < thr))
                how = "fixed threshold" if o.get("fixed_only") else "fixed threshold (no reference yet)"
                self.rows.append({"subject_kind": sk, "subject": subj, "statistic": st,
                                  "method": f"{how}: {o.get('why', '')}".strip(),
                                  "value": v, "reference": float("nan"), "threshold": thr, "direction": side,
                                  "alert": bool(ex), "severity": fixed_severity(v, thr, side) if ex else 0.0})  # fmt: skip
                continue
            self.add(sk, subj, st, o["value"], ref, sides=o.get("sides", "both"), floor=o.get("floor"))


# -------------------------------------------------------------------------------- helpers

def eq(col: str, value: Any):
    return lambda f: f[col] == value


def same_edges(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if len(a) != len(b):
        return False
    return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=1e-9, atol=1e-12))


def log_safe(x: Any) -> Any:
    a = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(np.maximum(a, 1e-12))
    out = np.where(np.isfinite(a), out, np.nan)
    return float(out) if out.ndim == 0 else out


def nanmean(v: Sequence[float]) -> float:
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")
