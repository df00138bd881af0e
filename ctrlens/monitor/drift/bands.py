"""Bands and thresholds: how far a statistic may move before it alerts, calibrated on the reference days.

Pooled reference histograms and each reference day's distance to the others, the ``center +- k *
spread`` :class:`Band` with its per-statistic floors (:data:`FLOORS`), the judgement of one value
(:func:`judge`), per-neuron bands with false-discovery control across a layer
(:func:`neuron_layer_test`) and the sampling-noise floors (:func:`auc_se`, :func:`binom_sd`).
Pure numpy; no store, no model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ctrlens.distances import proportions, psi

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
    weekly: bool = False  # centred on a weekly-cycle fit (:func:`weekly_band`)

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
        if self.weekly:
            return f"weekly-cycle fit +-{self.k:g}sd (sd floor {self.floor:.3g}; {ref}, n={self.n})"
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


#: Statistics that follow the calendar (a click rate is higher on Sundays, the model's calibration
#: with it): banded by :func:`weekly_band` when the reference shows a weekly cycle.
CALENDAR_STATISTICS = frozenset({"rate", "calibration", "log_mean_pred"})


def weekly_band(values: Sequence[float], days: Sequence[str], today: str, *, k: float, floor: float,
                rel_floor: float = 0.0, alpha: float = 0.05) -> Band | None:  # fmt: skip
    """The band of a statistic with a **weekly cycle**: ``None`` unless the reference shows one.

    Click rates of ads and feeds rise and fall with the day of the week (weekends differ by 5-30 %);
    a plain band over a 7-day window counts that cycle as noise and becomes too wide to see a 30 %
    loss of labels. Here the reference values are fitted with a level plus one weekly harmonic
    (``a + b cos(2 pi w / 7) + c sin(2 pi w / 7)``, ``w`` the weekday), and the cycle is kept only if
    it is significant (F-test of ``b = c = 0`` at level ``alpha``; needs >= 7 values on >= 5
    weekdays). The band is centred on the fit's prediction for today's weekday and its spread is the
    prediction's standard error (residual sd times ``sqrt(1 + leverage)``), floored as :func:`band`.
    Without a cycle (or with too few days) the caller keeps the plain band.
    """
    import datetime as dt

    from scipy import stats as sstats

    def harmonic(day: str) -> list[float]:  # the design row of a day: level, cos and sin of its weekday
        a = 2 * np.pi * dt.date.fromisoformat(str(day)[:10]).weekday() / 7
        return [1.0, math.cos(a), math.sin(a)]

    pairs = [(d, float(v)) for d, v in zip(days, values) if v is not None and np.isfinite(v)]
    if len(pairs) < 7 or len({dt.date.fromisoformat(str(d)[:10]).weekday() for d, _ in pairs}) < 5:
        return None
    y = np.array([v for _, v in pairs])
    x = np.array([harmonic(d) for d, _ in pairs])
    n, p = x.shape
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    rss = float(((y - x @ coef) ** 2).sum())
    tss = float(((y - y.mean()) ** 2).sum())
    dof = n - p
    if tss <= 0:
        return None
    f = ((tss - rss) / (p - 1)) / (rss / dof) if rss > 0 else np.inf
    if not f > sstats.f.ppf(1 - alpha, p - 1, dof):
        return None
    x0 = np.array(harmonic(today))
    lev = float(x0 @ np.linalg.pinv(x.T @ x) @ x0)
    sd = math.sqrt(rss / dof) * math.sqrt(1.0 + lev)
    c = float(x0 @ coef)
    return Band(c, sd, max(floor, rel_floor * abs(c)), k, n, weekly=True)


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


# -------------------------------------------------------------------------------- floors

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


# -------------------------------------------------------------------------------- noise

def fixed_severity(value: float, threshold: float, side: str) -> float:
    """How far past a fixed threshold: ``value / threshold`` for thresholds away from zero on the
    alerting side (2 at twice the threshold), at least 1."""
    if threshold == 0 or not np.isfinite(threshold):
        return 1.0
    return float(max(value / threshold, 1.0))


def auc_se(auc: float, n_pos: float, n_neg: float) -> float:
    """Standard error of an AUC measured on ``n_pos`` positives and ``n_neg`` negatives (Hanley &
    McNeil 1982): the sampling noise no reference band should be narrower than. 0 when unknown."""
    if not (np.isfinite(auc) and np.isfinite(n_pos) and np.isfinite(n_neg)) or n_pos < 1 or n_neg < 1:
        return 0.0
    a = min(max(float(auc), 1e-6), 1 - 1e-6)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def binom_sd(p: float, n: int) -> float:
    """Standard deviation of a proportion ``p`` measured on ``n`` rows (sampling noise)."""
    if not (n and np.isfinite(p)):
        return 0.0
    p = min(max(float(p), 0.0), 1.0)
    return math.sqrt(max(p * (1 - p), 1.0 / n) / n)
