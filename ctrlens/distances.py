"""Distances between two histograms: the one definition of each, used by every stage.

Drift tests (:mod:`ctrlens.monitor.drift`), neuron comparisons (:mod:`ctrlens.neurons.compare`) and
the dashboard's figures all compare histograms stored per day. They must agree to the last digit
(the dashboard shows the number the alert was raised on), so each distance lives here once.
numpy/scipy only: the dashboard imports this without torch.

* :func:`psi` -- population stability index ``sum (q - p) ln(q / p)``, proportions floored at
  :data:`PSI_FLOOR` (an empty bin would make it infinite);
* :func:`js` -- Jensen-Shannon *distance* (square root of the divergence, base 2, in ``[0, 1]``);
* :func:`wasserstein_norm` -- earth mover's distance over bin centres, in reference standard
  deviations (for ordered values).
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


__all__ = ["PSI_FLOOR", "js", "proportions", "psi", "wasserstein_norm"]
