"""Distances between two histograms: the one definition of each, used by every stage.

Drift tests (:mod:`ctrlens.monitor.drift`), neuron comparisons (:mod:`ctrlens.neurons.compare`) and
the dashboard's figures all compare histograms stored per day. They must agree to the last digit
(the dashboard shows the number the alert was raised on), so each distance lives here once.
numpy/scipy only: the dashboard imports this without torch.

* :func:`psi` -- population stability index ``sum (q - p) ln(q / p)``, proportions floored at
  :data:`PSI_FLOOR` (an empty bin would make it infinite);
* :func:`js` -- Jensen-Shannon *distance* (square root of the divergence, base 2, in ``[0, 1]``);
* :func:`wasserstein_norm` -- earth mover's distance over bin centres, in reference standard
  deviations (for ordered values);
* :func:`standardised_shift` -- a neuron's (or any unit's) mean shift in reference standard
  deviations and its ratio of standard deviations (the founding paper's "fluctuation").
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

#: Proportions are floored at this before PSI's logarithm (empty bins would make it infinite).
PSI_FLOOR = 1e-4


def proportions(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    """``counts / counts.sum()`` along the last axis (float64; NaN where a row has no counts)."""
    c = np.asarray(counts, dtype=np.float64)
    s = c.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s > 0, c / np.where(s > 0, s, 1.0), np.nan)


def psi(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray, floor: float = PSI_FLOOR) -> Any:
    """Population stability index of two histograms (counts or proportions) along the last axis.

    ``reference`` and ``current``: ``[K]`` -> a float, or ``[N, K]`` -> ``[N]`` (one PSI per row, e.g.
    per neuron). ``p`` = reference proportions, ``q`` = current, both floored at ``floor``. Symmetric
    in its arguments. NaN where either side has no counts.
    """
    p, q = proportions(reference), proportions(current)
    p, q = np.maximum(p, floor), np.maximum(q, floor)  # NaN (no counts) propagates through maximum
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ((q - p) * np.log(q / p)).sum(-1)
    return float(out) if np.ndim(out) == 0 else out


def js(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray) -> float:
    """Jensen-Shannon *distance* (square root of the divergence, base 2, in ``[0, 1]``) of two histograms."""
    p, q = proportions(reference), proportions(current)
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        return float("nan")
    return float(jensenshannon(p, q, base=2.0))


def wasserstein_norm(edges: Sequence[float], reference: Sequence[float], current: Sequence[float], scale: float) -> float:
    """Earth mover's distance between two histograms on the same ``edges`` (mass at bin centres),
    divided by ``scale`` (the reference's standard deviation): "how many standard deviations the
    mass moved". NaN when a histogram is empty or ``scale`` is not positive."""
    e = np.asarray(edges, dtype=np.float64)
    p, q = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if len(e) != len(p) + 1 or len(p) != len(q) or p.sum() <= 0 or q.sum() <= 0 or not scale > 0:
        return float("nan")
    centres = (e[:-1] + e[1:]) / 2.0
    return float(wasserstein_distance(centres, centres, p, q) / scale)


def floor_std(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``std`` floored at ``1e-6 * (1 + |mean|)``: a constant unit must not divide by zero."""
    return np.maximum(std, 1e-6 * (1.0 + np.abs(mean)))


def standardised_shift(mean_a: np.ndarray, std_a: np.ndarray, mean_b: np.ndarray,
                       std_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(shift, std_ratio)`` of side B against the reference side A, elementwise over ``[N]`` units:
    ``shift = (mean_b - mean_a) / std_a`` and ``std_ratio = std_b / std_a``, both standard
    deviations floored by :func:`floor_std`."""
    ma, mb = np.asarray(mean_a, dtype=np.float64), np.asarray(mean_b, dtype=np.float64)
    fa = floor_std(np.asarray(std_a, dtype=np.float64), ma)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (mb - ma) / fa, floor_std(np.asarray(std_b, dtype=np.float64), mb) / fa


__all__ = ["PSI_FLOOR", "floor_std", "js", "proportions", "psi", "standardised_shift", "wasserstein_norm"]
