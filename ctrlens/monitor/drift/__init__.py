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

# The distances themselves live in ctrlens.distances (shared with the neuron comparisons and the
# dashboard); they are re-exported here for the drift tests' users.
from ctrlens.distances import js, proportions, psi, wasserstein_norm
from ctrlens.monitor.drift.bands import (
    DISTANCES,
    FLOORS,
    REL_FLOORS,
    Band,
    Outcome,
    auc_se,
    band,
    exceeded,
    judge,
    neuron_layer_test,
    pooled,
    reference_distances,
)
from ctrlens.monitor.drift.history import HISTORY_KINDS, History
from ctrlens.monitor.drift.inputs import SWAP_CUT
from ctrlens.monitor.drift.suite import MODEL_SUBJECT_KINDS, DriftSuite, both_axes, is_model_row

__all__ = [
    "DISTANCES",
    "HISTORY_KINDS",
    "MODEL_SUBJECT_KINDS",
    "REL_FLOORS",
    "SWAP_CUT",
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
