"""Drift tests: distances between histograms and bands calibrated on the reference days.

At production volumes every p-value is tiny, so ctrlens never tests "is today's distribution
*exactly* the reference's?". It measures *how far* today is (a distance or a plain statistic) and
asks whether that is unusual compared with how far the reference days are from each other:

* **distances** on the stored histograms -- :func:`psi` (population stability index),
  :func:`js` (Jensen-Shannon distance, base 2, in ``[0, 1]``) and :func:`wasserstein_norm`
  (earth mover's distance between binned distributions over bin centres, divided by the
  reference's standard deviation, for ordered values: dense fields, position, image brightness);
* **statistics** -- coverage, OOV rate, cardinality, top-value share, mean, std, saliency share,
  permutation importance, probe AUC, model AUC, calibration, mean pCTR, dead fraction, ...

A :class:`Band` is ``center +- k * spread``: ``center`` and ``std`` are the reference days' mean and
standard deviation of the statistic (for a distance: each reference day's distance to the other
reference days), and ``spread = max(std, floor)`` -- a floor per statistic, so a perfectly flat
reference does not alert on sampling noise. ``k = 4`` by default (popmon's yellow traffic light;
NannyML's default band is 3 standard deviations). Every drift row carries the ``method`` (how the
band was made), the ``threshold`` it was compared with and the ``direction`` that alerts.

Thousands of neurons: :func:`neuron_layer_test` gives each neuron its own PSI band from the
reference days, counts the layer's neurons that leave it, and alerts on the *layer* only when that
share exceeds what the reference days themselves show (false-discovery control by calibration).

Everything here is pure (numpy / pandas in, rows out); :mod:`ctrlens.monitor.job` reads the history
from the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from ctrlens.distances import PSI_FLOOR, js, proportions, psi, wasserstein_norm
from ctrlens.monitor.config import Thresholds
from ctrlens.results import COLUMNS, Result

# The distances themselves (psi, js, wasserstein_norm, proportions) live in ctrlens.distances, shared
# with the neuron comparisons and the dashboard.

# -------------------------------------------------------------------------------- pooling

def pooled(histograms: Iterable[Sequence[float]]) -> np.ndarray:
    """The mean of several histograms' proportions (each day weighs the same, whatever its rows)."""
    ps = [proportions(h) for h in histograms]
    ps = [p for p in ps if np.isfinite(p).all()]
    if not ps:
        return np.zeros(0)
    return np.mean(ps, axis=0)


def reference_distances(histograms: Sequence[Sequence[float]], metric, scheme: str = "loo") -> list[float]:
    """How far each reference day is from the others, with the same ``metric(reference, current)``.

    ``scheme="loo"`` (a fixed baseline window): day ``i`` against the pool of all other days.
    ``scheme="prequential"`` (a trailing window): day ``i`` against the pool of the days *before*
    it -- the geometry of "today against the days before today", so a slow trend is part of the
    normal distance rather than an alert.
    """
    hs = [np.asarray(h, dtype=np.float64) for h in histograms]
    out: list[float] = []
    for i, h in enumerate(hs):
        others = hs[:i] + hs[i + 1 :] if scheme == "loo" else hs[:i]
        if not others:
            continue
        v = metric(pooled(others), h)
        if np.isfinite(v):
            out.append(float(v))
    return out


# -------------------------------------------------------------------------------- bands


@dataclass(frozen=True)
class Band:
    """``center +- k * spread``, with ``spread = max(std, floor)``, from ``n`` reference values."""

    center: float
    std: float
    floor: float
    k: float
    n: int

    @property
    def spread(self) -> float:
        s = self.std if np.isfinite(self.std) else 0.0
        return max(s, self.floor)

    @property
    def upper(self) -> float:
        return self.center + self.k * self.spread

    @property
    def lower(self) -> float:
        return self.center - self.k * self.spread

    def describe(self, ref: str) -> str:
        return f"mean+-{self.k:g}sd (sd floor {self.floor:.3g}; {ref}, n={self.n})"


def band(values: Sequence[float], *, k: float, floor: float, rel_floor: float = 0.0) -> Band | None:
    """The band of reference ``values`` (NaNs dropped); ``None`` with fewer than 2 values.

    ``floor``: absolute floor of the spread; ``rel_floor``: floor relative to ``|center|``.
    """
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size < 2:
        return None
    c = float(v.mean())
    sd = float(v.std(ddof=1))
    return Band(c, sd, max(floor, rel_floor * abs(c)), k, int(v.size))


@dataclass(frozen=True)
class Outcome:
    """One test: which side, the threshold, whether it was crossed and by how much.

    ``severity`` is ``|value - center| / (k * spread)``: 1 at the threshold, 2 at twice the distance.
    """

    direction: str
    threshold: float
    exceeded: bool
    severity: float


def judge(value: float, b: Band, *, sides: str = "both") -> Outcome:
    """Compare ``value`` with band ``b``. ``sides``: ``both``, ``above`` or ``below``."""
    if not np.isfinite(value):
        return Outcome("above" if sides != "below" else "below", b.upper if sides != "below" else b.lower, False, 0.0)
    up = sides == "above" or (sides == "both" and value >= b.center)
    thr = b.upper if up else b.lower
    exceeded = value > thr if up else value < thr
    dist = abs(value - b.center) / (b.k * b.spread) if b.spread > 0 else (math.inf if value != b.center else 0.0)
    return Outcome("above" if up else "below", thr, bool(exceeded), float(dist))


def exceeded(value: float, threshold: float, direction: str) -> bool:
    """Whether a stored drift row crossed its threshold (recomputed for persistence)."""
    if value is None or threshold is None or not (np.isfinite(value) and np.isfinite(threshold)):
        return False
    return value > threshold if direction == "above" else value < threshold


# -------------------------------------------------------------------------------- neurons


def neuron_layer_test(
    today: np.ndarray, reference: np.ndarray, *, k: float, fraction: float, floor: float = 0.01, rel_floor: float = 0.25,
    layer_k: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Per-neuron PSI bands and the layer's share of moving neurons, calibrated on the reference.

    Args:
        today: int ``[N, K]`` histogram counts of the layer's ``N`` neurons today.
        reference: ``[n, N, K]`` the same on ``n >= 3`` reference days (same edges).
        k: per-neuron band width; floor / rel_floor: the per-neuron spread floors.
        fraction: the layer alerts only if its moving share exceeds the reference share by this much.
        layer_k: band width of the layer's share (default ``k``).

    Returns a dict: ``psi`` ``[N]`` today's PSI to the pooled reference, ``threshold`` ``[N]``,
    ``moving`` bool ``[N]``, ``share`` today's moving share, ``reference_shares`` ``[n]`` (each
    reference day's share with bands built without that day), ``layer_threshold``, ``alert``.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(today, dtype=np.float64)
    n = ref.shape[0]
    if n < 3:
        raise ValueError(f"neuron_layer_test needs >= 3 reference days, got {n}")
    props = proportions(ref)  # [n, N, K]
    pool = props.mean(0)
    value = psi(pool, cur)  # [N]
    # each reference day against the pool of the others
    loo = np.stack([psi((pool * n - props[i]) / (n - 1), ref[i]) for i in range(n)])  # [n, N]

    def thresholds(r: np.ndarray) -> np.ndarray:
        c = r.mean(0)
        s = np.maximum(r.std(0, ddof=1), np.maximum(floor, rel_floor * np.abs(c)))
        return c + k * s

    thr = thresholds(loo)
    moving = value > thr
    shares = np.array([np.mean(loo[i] > thresholds(np.delete(loo, i, axis=0))) for i in range(n)])
    lk = k if layer_k is None else layer_k
    m, sd = float(shares.mean()), float(shares.std(ddof=1))
    layer_thr = m + max(lk * sd, fraction)
    share = float(moving.mean())
    return {
        "psi": value,
        "threshold": thr,
        "moving": moving,
        "share": share,
        "reference_shares": shares,
        "reference_share": m,
        "layer_threshold": layer_thr,
        "alert": bool(share > layer_thr),
    }


# -------------------------------------------------------------------------------- history


HISTORY_KINDS = ("field_stats", "quality", "saliency", "probe", "layer_stats", "embedding_health", "neuron_stats", "drift")


@dataclass
class History:
    """The reference days as long frames (``day``, ``version_id`` and the result columns), as
    :meth:`ctrlens.store.Store.series` returns them.

    Attributes:
        days: the reference days, ascending.
        label: how they were chosen, for the ``method`` text (``"trailing 7d"``).
        scheme: ``"prequential"`` (trailing window) or ``"loo"`` (fixed window).
        frames: result kind -> long frame of the reference days (``neuron_stats``: only days of
            today's model version, whose histograms share today's edges).
        recent: drift rows of the days just before today (``day`` + drift columns), for persistence.
        versions: reference day -> model version id.
    """

    days: list[str] = field(default_factory=list)
    label: str = "no reference"
    scheme: str = "prequential"
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    recent: pd.DataFrame = field(default_factory=pd.DataFrame)
    versions: dict[str, int] = field(default_factory=dict)

    def frame(self, kind: str) -> pd.DataFrame:
        f = self.frames.get(kind)
        return f if f is not None else pd.DataFrame(columns=["day", *COLUMNS.get(kind, {})])

    def alerted(self) -> set[tuple[str, str, str]]:
        """``(day, subject_kind, subject)`` of reference days on which that subject alerted."""
        d = self.frame("drift")
        if d.empty or "alert" not in d:
            return set()
        a = d[d["alert"].fillna(False).astype(bool)]
        return set(zip(a["day"], a["subject_kind"], a["subject"]))


# -------------------------------------------------------------------------------- the suite

#: Default absolute floors of the spread per statistic (see docs/nightly.md, "Thresholds").
FLOORS: dict[str, float] = {
    "psi": 0.01,
    "js": 0.01,
    "wasserstein_norm": 0.02,
    "coverage": 0.005,
    "oov_rate": 0.005,
    "log_cardinality": 0.05,
    "top1_share": 0.01,
    "mean_z": 0.05,
    "log_std": 0.05,
    "rate": 0.002,
    "share": 0.01,
    "importance": 0.002,
    "auc": 0.01,
    "probe_auc": 0.015,
    "calibration": 0.03,
    "log_mean_pred": 0.03,
    "score_psi": 0.02,
    "dead_fraction": 0.02,
    "saturated_fraction": 0.02,
    "log_mean_abs": 0.1,
    "log_effective_rank": 0.02,
    "log_norm_mean": 0.02,
    "ctr_slope": 0.05,
    "seen_gap": 0.05,
    "fluctuation": 0.05,
    "train_test_auc_gap": 0.02,
    "dependence": 0.05,
    "never_updated_frac": 0.01,
}
#: Relative floors (of ``|center|``) per statistic; distances use ``Thresholds.rel_floor``.
REL_FLOORS: dict[str, float] = {"share": 0.15, "importance": 0.25}
DISTANCES = ("psi", "js", "wasserstein_norm", "score_psi")


class DriftSuite:
    """Builds the ``drift`` rows of one model-day: today's results against a :class:`History`.

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
            sides: str = "both", floor: float | None = None, rel_floor: float | None = None) -> dict[str, Any]:  # fmt: skip
        """Test one statistic against its reference values and record the row."""
        fl = self.floor(statistic) if floor is None else floor
        rel = REL_FLOORS.get(statistic, self.t.rel_floor if statistic in DISTANCES else 0.0) if rel_floor is None else rel_floor
        b = band(ref_values, k=self.t.k, floor=fl, rel_floor=rel) if len(ref_values) >= max(self.min_days - (1 if statistic in DISTANCES else 0), 2) else None
        value = float(value) if value is not None and np.isfinite(value) else float("nan")
        if b is None:
            row = {"subject_kind": subject_kind, "subject": subject, "statistic": statistic,
                   "method": f"recorded only: {len(ref_values)} reference value(s) < {self.min_days} ({self.h.label})",
                   "value": value, "reference": float(np.nanmean(ref_values)) if len(ref_values) else float("nan"),
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
        sel = self._ref_rows(kind, subject_kind, subject, mask_fn)
        if sel is None:
            return []
        vals = sel[col].to_numpy(dtype=np.float64)
        return list(transform(vals)) if transform is not None else list(vals)

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
            if edges is not None and not _same_edges(h.get("edges"), edges):
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

    # -- the tests per result kind ---------------------------------------------------------------
    def fields(self, today: Result | None) -> None:
        """Input fields and labels (``field_stats``)."""
        if today is None:
            return
        for r in today.frame.itertuples(index=False):
            f = r.field
            if r.kind == "label":
                self.add("label", f, "rate", r.mean, self.ref_values("field_stats", "label", f, _eq("field", f), "mean"),
                         floor=max(self.floor("rate"), _binom(r.mean, r.rows)))
                continue
            sk = "field"
            is_f = _eq("field", f)
            hist = r.hist_json if isinstance(r.hist_json, dict) else {}
            counts = hist.get("counts")
            edges = hist.get("edges")
            if counts is not None:
                refs = self.ref_hists("field_stats", sk, f, is_f, edges=edges)
                self.add_distance(sk, f, "psi", counts, refs, psi)
                self.add_distance(sk, f, "js", counts, refs, js)
                if r.kind in ("dense", "position", "image"):
                    scale = _nanmean(self.ref_values("field_stats", sk, f, is_f, "std"))
                    wm = lambda p, q, e=edges, s=scale: wasserstein_norm(e, p, q, s)  # noqa: E731
                    self.add_distance(sk, f, "wasserstein_norm", counts, refs, wm)
            if r.kind != "position":
                cov_ref = self.ref_values("field_stats", sk, f, is_f, "coverage")
                self.add(sk, f, "coverage", r.coverage, cov_ref, floor=max(self.floor("coverage"), _binom(r.coverage, r.rows)))
            if r.kind in ("sparse", "sequence", "bag"):
                self.add(sk, f, "oov_rate", r.oov_rate, self.ref_values("field_stats", sk, f, is_f, "oov_rate"),
                         floor=max(self.floor("oov_rate"), _binom(r.oov_rate, r.rows)))
                self.add(sk, f, "log_cardinality", _log(r.cardinality),
                         self.ref_values("field_stats", sk, f, is_f, "cardinality", _log))
                self.add(sk, f, "top1_share", _top1(r.top_json),
                         [_top1(t) for t in self._ref_col("field_stats", sk, f, is_f, "top_json")])
            if r.kind in ("dense", "sequence", "bag", "position", "image"):
                stds = self.ref_values("field_stats", sk, f, is_f, "std")
                scale = _nanmean(stds)
                if np.isfinite(scale) and scale > 0:
                    mz = lambda v, c=scale: (np.asarray(v) / c)  # noqa: E731
                    self.add(sk, f, "mean_z", r.mean / scale, self.ref_values("field_stats", sk, f, is_f, "mean", mz))
                if r.kind in ("dense", "sequence", "bag"):
                    self.add(sk, f, "log_std", _log(r.std), self.ref_values("field_stats", sk, f, is_f, "std", _log))

    def swaps(self, today: Result | None) -> None:
        """Fields that hold another field's values: today's ``A`` far from the reference's ``A`` and close
        to the reference's ``B`` (same kind). Rows ``subject_kind="swap"``, subject ``"A<-B"``, statistic
        ``cross_distance``: value = distance(today A, reference B), reference = distance(today A,
        reference A). Distances: id fields the larger of (the share of today's top values absent from
        the reference's top values) and (the total variation between today's top-value shares and the
        reference's shares of the same values); dense fields ``|mean - mean_B| / std_B + |log(std / std_B)|``.
        Alerts when the cross distance is small and under a third of the own distance."""
        if today is None:
            return
        ref = self.h.frame("field_stats")
        if ref.empty or len(set(ref["day"])) < max(self.min_days, 2):
            return
        t = today.frame.set_index("field")
        sigs = {}
        for f, g in ref.groupby("field"):
            if f in t.index:
                sigs[f] = _signature(g)
        for a in t.index:
            ka = t.loc[a, "kind"]
            if ka not in ("sparse", "sequence", "dense") or a not in sigs:
                continue
            now = _signature_row(t.loc[a])
            own = _sig_distance(ka, now, sigs[a])
            cut = SWAP_CUT[ka]
            if not (np.isfinite(own) and own > 2 * cut):
                continue
            for b, sb in sigs.items():
                if b == a or t.loc[b, "kind"] != ka:
                    continue
                cross = _sig_distance(ka, now, sb)
                if np.isfinite(cross) and cross <= cut and cross * 3 <= own:
                    self.rows.append({
                        "subject_kind": "swap", "subject": f"{a}<-{b}", "statistic": "cross_distance",
                        "method": f"today's {a} vs the reference's {b} ({'top-value overlap' if ka != 'dense' else 'mean/std'}"
                                  f" distance); alert <= {cut:g} and <= 1/3 of the distance to its own reference ({self.h.label})",
                        "value": float(cross), "reference": float(own), "threshold": cut, "direction": "below",
                        "alert": True, "severity": float(min(own / max(cross, 1e-3) / 3.0, 9.9)),
                    })  # fmt: skip

    def _ref_col(self, kind: str, subject_kind: str, subject: str, mask_fn, col: str) -> list[Any]:
        f = self.h.frame(kind)
        if f.empty:
            return []
        sel = f[mask_fn(f)]
        days = self._usable(subject_kind, subject, self.h.days)
        return list(sel[sel["day"].isin(days)].sort_values("day")[col])

    def quality(self, today: Result | None) -> None:
        """Model quality per head: AUC, calibration, mean pCTR, normalised-score distribution."""
        if today is None:
            return
        for r in today.frame.itertuples(index=False):
            h = r.head
            m = _eq("head", h)
            self.add("quality", h, "auc", r.auc, self.ref_values("quality", "quality", h, m, "auc"),
                     floor=max(self.floor("auc"), auc_se(r.auc, r.positives, r.rows - r.positives)))
            # the click count is Poisson: calibration (sum pCTR / clicks) carries a relative noise 1/sqrt(clicks)
            cal_noise = abs(r.calibration) / math.sqrt(r.positives) if r.positives and np.isfinite(r.calibration) else 0.0
            self.add("quality", h, "calibration", r.calibration, self.ref_values("quality", "quality", h, m, "calibration"),
                     floor=max(self.floor("calibration"), cal_noise))
            self.add("quality", h, "log_mean_pred", _log(r.mean_pred), self.ref_values("quality", "quality", h, m, "mean_pred", _log))
            sh = r.score_hist_json if isinstance(r.score_hist_json, dict) else {}
            if sh.get("counts"):
                refs = self.ref_hists("quality", "quality", h, m, "score_hist_json", edges=sh.get("edges"))
                self.add_distance("quality", h, "score_psi", sh["counts"], refs, psi)

    def saliency(self, today: Result | None) -> None:
        """Saliency share per head and field (gradient rows) and permutation importance (``permutation`` rows)."""
        if today is None:
            return
        for r in today.frame.itertuples(index=False):
            subj = f"{r.head}/{r.field}"
            m = lambda f, h=r.head, fl=r.field, me=r.method: (f["head"] == h) & (f["field"] == fl) & (f["method"] == me)  # noqa: E731
            if r.method == "permutation":
                self.add("importance", subj, "importance", r.mean, self.ref_values("saliency", "importance", subj, m, "mean"))
            else:
                self.add("saliency", subj, "share", r.share, self.ref_values("saliency", "saliency", subj, m, "share"))

    def probes(self, today: Result | None, day: str, rates: dict[str, float] | None = None) -> None:
        """Probe AUC per head and layer on the day's held-out rows (``logit.*`` pseudo-layers are the
        model's own AUC, tested with the quality metrics). ``rates``: head -> positive rate, for the
        AUC's sampling-noise floor."""
        if today is None:
            return
        f = today.frame
        for r in f[f["eval_day"] == day].itertuples(index=False):
            if str(r.layer).startswith("logit."):
                continue
            subj = f"{r.head}/{r.layer}"
            m = lambda fr, h=r.head, la=r.layer: (fr["head"] == h) & (fr["layer"] == la) & (fr["eval_day"] == fr["day"])  # noqa: E731
            rate = (rates or {}).get(r.head, float("nan"))
            pos = r.n_eval * rate if np.isfinite(rate) else float("nan")
            self.add("probe", subj, "probe_auc", r.auc, self.ref_values("probe", "probe", subj, m, "auc"),
                     floor=max(self.floor("probe_auc"), auc_se(r.auc, pos, r.n_eval - pos)))

    def layers(self, layer_stats: Result | None, neuron_stats: Result | None) -> None:
        """Layer summaries (any version: a new checkpoint's dead units show here) and neuron histograms
        (same version only), with false-discovery control across the layer's neurons."""
        if layer_stats is not None:
            for r in layer_stats.frame.itertuples(index=False):
                la = r.layer
                m = _eq("layer", la)
                nfloor = 1.0 / max(int(r.n_neurons), 1)
                self.add("layer", la, "dead_fraction", r.dead_fraction, self.ref_values("layer_stats", "layer", la, m, "dead_fraction"),
                         floor=max(self.floor("dead_fraction"), nfloor))
                if np.isfinite(r.saturated_fraction):
                    self.add("layer", la, "saturated_fraction", r.saturated_fraction,
                             self.ref_values("layer_stats", "layer", la, m, "saturated_fraction"),
                             floor=max(self.floor("saturated_fraction"), nfloor))
                self.add("layer", la, "log_mean_abs", _log(r.mean_abs), self.ref_values("layer_stats", "layer", la, m, "mean_abs", _log))
        if neuron_stats is None or neuron_stats.frame.empty:
            return
        ref = self.h.frame("neuron_stats")
        for la, g in neuron_stats.frame.groupby("layer", sort=False):
            g = g.sort_values("neuron")
            today = np.asarray([np.asarray(h, dtype=np.float64) for h in g["hist_json"]])
            if today.ndim != 2 or today.shape[1] < 2:
                continue
            days = self._usable("layer", la, self.h.days)
            stack = []
            if not ref.empty:
                rl = ref[(ref["layer"] == la) & ref["day"].isin(days)]
                for _, gd in rl.groupby("day", sort=True):
                    gd = gd.sort_values("neuron")
                    arr = np.asarray([np.asarray(h, dtype=np.float64) for h in gd["hist_json"]])
                    if arr.shape == today.shape:
                        stack.append(arr)
            if len(stack) < max(self.min_days, 3):
                self.add("layer", la, "neuron_drift_share", float("nan"), [])
                continue
            res = neuron_layer_test(today, np.stack(stack), k=self.t.neuron_k, fraction=self.t.neuron_fraction,
                                    floor=self.floor("psi"), rel_floor=self.t.rel_floor, layer_k=self.t.k)
            self.neurons[la] = res
            key = ("layer", la, "neuron_drift_share")
            sev = (res["share"] - res["reference_share"]) / max(res["layer_threshold"] - res["reference_share"], 1e-9)
            alert = res["alert"] and self._persistent(key, sev)
            self.rows.append({
                "subject_kind": "layer", "subject": la, "statistic": "neuron_drift_share",
                "method": f"share of neurons with PSI above their own mean+-{self.t.neuron_k:g}sd band; layer band "
                          f"mean+max({self.t.k:g}sd, {self.t.neuron_fraction:g}) ({self.h.label}, n={len(stack)})",
                "value": res["share"], "reference": res["reference_share"], "threshold": res["layer_threshold"],
                "direction": "above", "alert": bool(alert), "severity": float(sev) if res["alert"] else 0.0,
            })  # fmt: skip
            # per-neuron rows only for the neurons that moved (thousands of quiet neurons stay out of the store)
            for i in np.flatnonzero(res["moving"]):
                self.rows.append({
                    "subject_kind": "neuron", "subject": f"{la}/{int(g['neuron'].iloc[i])}", "statistic": "psi",
                    "method": f"own band mean+-{self.t.neuron_k:g}sd; alerts only with its layer ({self.h.label})",
                    "value": float(res["psi"][i]), "reference": float("nan"), "threshold": float(res["threshold"][i]),
                    "direction": "above", "alert": bool(alert), "severity": 0.0,
                })  # fmt: skip

    def embeddings(self, today: Result | None) -> None:
        """Embedding tables: effective rank and mean row norm (they move with checkpoints)."""
        if today is None:
            return
        for r in today.frame.itertuples(index=False):
            m = _eq("table", r.table)
            self.add("embedding", r.table, "log_effective_rank", _log(r.effective_rank),
                     self.ref_values("embedding_health", "embedding", r.table, m, "effective_rank", _log))
            self.add("embedding", r.table, "log_norm_mean", _log(r.norm_mean),
                     self.ref_values("embedding_health", "embedding", r.table, m, "norm_mean", _log))
            if np.isfinite(r.never_updated_frac):  # needs the step-0 checkpoint next to the model's
                self.add("embedding", r.table, "never_updated_frac", r.never_updated_frac,
                         self.ref_values("embedding_health", "embedding", r.table, m, "never_updated_frac"),
                         sides="above", floor=max(self.floor("never_updated_frac"), _binom(r.never_updated_frac, r.seen_rows)))

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
                                  "alert": bool(ex), "severity": _fixed_severity(v, thr, side) if ex else 0.0})  # fmt: skip
                continue
            self.add(sk, subj, st, o["value"], ref, sides=o.get("sides", "both"), floor=o.get("floor"))


# -------------------------------------------------------------------------------- two axes

#: Drift subject kinds whose statistics depend on the checkpoint (plus PAL's ``position``/``seen_gap``).
MODEL_SUBJECT_KINDS = frozenset({"importance", "saliency", "probe", "quality", "layer", "neuron", "embedding"})


def is_model_row(subject_kind: str, statistic: str) -> bool:
    """Whether a drift row's statistic depends on the checkpoint (input fields, labels, dependence
    and the observed position slope do not)."""
    return subject_kind in MODEL_SUBJECT_KINDS or (subject_kind, statistic) == ("position", "seen_gap")


def both_axes(served: DriftSuite, backtested: DriftSuite) -> DriftSuite:
    """Combine the drift rows of a day served by a new checkpoint.

    ``served``: today against the reference days as they were served (each by its own checkpoint,
    on days it had not trained on). ``backtested``: today against today's checkpoint scored on the
    same reference days (:func:`ctrlens.monitor.job.backtest`). A checkpoint-dependent statistic
    alerts only when **both** see it: against the served days alone, a new checkpoint would read as a
    data change; against the back-test alone, the new checkpoint's own training days (in-sample:
    higher AUC, memorised ids more important) would make every ordinary new day look broken. A data
    change moves today against both. Checkpoint-free rows are the same in both suites.

    Returns ``backtested`` with its rows updated (severity: the smaller of the two).
    """
    index = {(r["subject_kind"], r["subject"], r["statistic"]): r for r in served.rows}
    for r in backtested.rows:
        if not is_model_row(r["subject_kind"], r["statistic"]):
            continue
        s = index.get((r["subject_kind"], r["subject"], r["statistic"]))
        ok = s is not None and bool(s["alert"])
        if r["alert"] and not ok:
            r["alert"], r["severity"] = False, 0.0
        elif r["alert"]:
            r["severity"] = float(min(r["severity"], s["severity"]))  # type: ignore[index]
        if s is not None and np.isfinite(s["threshold"]):
            r["method"] = f"{r['method']}; and against the served reference (threshold {s['threshold']:.4g})"
    return backtested


# -------------------------------------------------------------------------------- helpers


def _fixed_severity(value: float, threshold: float, side: str) -> float:
    """How far past a fixed threshold: ``value / threshold`` for thresholds away from zero on the
    alerting side (2 at twice the threshold), at least 1."""
    if threshold == 0 or not np.isfinite(threshold):
        return 1.0
    return float(max(value / threshold, 1.0))


#: Largest distance at which today's field "looks like" another field's reference (see DriftSuite.swaps).
SWAP_CUT = {"sparse": 0.3, "sequence": 0.3, "dense": 0.3}


def _top_shares(top: Any) -> dict[Any, float]:
    if not isinstance(top, list):
        return {}
    return {str(k): float(v) for k, v in (tuple(x) for x in top if isinstance(x, (list, tuple)) and len(x) == 2)
            if k != "__other__"}  # fmt: skip


def _signature(ref: pd.DataFrame) -> dict[str, Any]:
    """A field's reference signature: mean top-value shares over the days, mean of means and stds."""
    shares: dict[Any, float] = {}
    n = 0
    for top in ref["top_json"]:
        d = _top_shares(top)
        if d:
            n += 1
            for k, v in d.items():
                shares[k] = shares.get(k, 0.0) + v
    return {"top": {k: v / n for k, v in shares.items()} if n else {},
            "mean": _nanmean(ref["mean"].astype(float)), "std": _nanmean(ref["std"].astype(float))}


def _signature_row(r: Any) -> dict[str, Any]:
    return {"top": _top_shares(r["top_json"]), "mean": float(r["mean"]), "std": float(r["std"])}


def _sig_distance(kind: str, a: dict[str, Any], b: dict[str, Any]) -> float:
    if kind == "dense":
        if not (np.isfinite(a["mean"]) and np.isfinite(b["mean"]) and a["std"] > 0 and b["std"] > 0):
            return float("nan")
        return float(abs(a["mean"] - b["mean"]) / b["std"] + abs(math.log(a["std"] / b["std"])))
    p, q = a["top"], b["top"]
    mass = sum(p.values())
    if not p or not q or mass <= 0:
        return float("nan")
    # today's top values that the reference never had among its top values ...
    unknown = 1.0 - sum(v for k, v in p.items() if k in q) / mass
    # ... and, over today's top values, how differently they are shared (total variation)
    qr = np.array([q.get(k, 0.0) for k in p])
    pr = np.array(list(p.values())) / mass
    tv = 0.5 * float(np.abs(pr - qr / qr.sum()).sum()) if qr.sum() > 0 else 1.0
    return float(max(unknown, tv))


def _eq(col: str, value: Any):
    return lambda f: f[col] == value


def _same_edges(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if len(a) != len(b):
        return False
    return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=1e-9, atol=1e-12))


def _log(x: Any) -> Any:
    a = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(np.maximum(a, 1e-12))
    out = np.where(np.isfinite(a), out, np.nan)
    return float(out) if out.ndim == 0 else out


def _top1(top: Any) -> float:
    """Share of the most frequent value (``top_json``'s first entry that is not ``__other__``)."""
    if not isinstance(top, list) or not top:
        return float("nan")
    first = top[0]
    if not isinstance(first, (list, tuple)) or len(first) < 2 or first[0] == "__other__":
        return float("nan")
    return float(first[1])


def auc_se(auc: float, n_pos: float, n_neg: float) -> float:
    """Standard error of an AUC measured on ``n_pos`` positives and ``n_neg`` negatives (Hanley &
    McNeil 1982): the sampling noise no reference band should be narrower than. 0 when unknown."""
    if not (np.isfinite(auc) and np.isfinite(n_pos) and np.isfinite(n_neg)) or n_pos < 1 or n_neg < 1:
        return 0.0
    a = min(max(float(auc), 1e-6), 1 - 1e-6)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def _binom(p: float, n: int) -> float:
    """Standard deviation of a proportion ``p`` measured on ``n`` rows (sampling noise)."""
    if not (n and np.isfinite(p)):
        return 0.0
    p = min(max(float(p), 0.0), 1.0)
    return math.sqrt(max(p * (1 - p), 1.0 / n) / n)


def _nanmean(v: Sequence[float]) -> float:
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


__all__ = [
    "Band",
    "DriftSuite",
    "auc_se",
    "both_axes",
    "is_model_row",
    "FLOORS",
    "History",
    "Outcome",
    "band",
    "exceeded",
    "judge",
    "js",
    "neuron_layer_test",
    "pooled",
    "proportions",
    "psi",
    "reference_distances",
    "wasserstein_norm",
]
