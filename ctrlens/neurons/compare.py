"""Comparing two neuron summaries: train vs test day, day vs day, checkpoint vs checkpoint.

Per neuron (``a`` is the reference side):

* ``shift`` = ``(mean_b - mean_a) / std_a`` -- the mean shift in reference standard deviations
  (``std_a`` floored at ``1e-6 * (1 + |mean_a|)`` so constant neurons do not divide by 0);
* ``std_ratio`` = ``std_b / std_a`` -- the *fluctuation* ratio. The founding paper (Guo et al.
  2018) reads over-fitting from neuron-state fluctuation: before over-fitting, neurons fluctuate
  alike on train and test data; a layer whose test fluctuation departs from its train fluctuation
  (``fluctuation = mean |log std_ratio|`` well above its value at earlier checkpoints) is fitting
  the training days too closely;
* ``psi`` -- population stability index of the histograms, ``sum (q - p) ln(q / p)`` over the
  bins including under/overflow, proportions floored at ``1e-4``. Needs both summaries to share
  edges (summarise the second with ``reference=`` the first); NaN otherwise;
* ``selectivity_a/b`` = ``(mean_click - mean_noclick) / std`` -- how much the neuron separates
  clicks from non-clicks on each side.

Per layer: the change in dead fraction, mean / max ``|shift|``, mean / max PSI, the median
``std_ratio`` and the fluctuation score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ctrlens.distances import floor_std, psi, standardised_shift
from ctrlens.neurons.stats import LayerStats
from ctrlens.neurons.summary import NeuronSummary
from ctrlens.results import COLUMNS, Result

def _selectivity(s: LayerStats) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (s.class_mean("click") - s.class_mean("noclick")) / floor_std(s.std, s.mean)


@dataclass
class NeuronComparison:
    """Neuron- and layer-level differences between summary ``a`` (reference) and ``b``.

    Attributes:
        neurons: one row per (layer, neuron) of the layers both summaries have.
        layers: one row per such layer.
        meta: the names of both sides and notes (layers missing on one side, edges that differ).
    """

    neurons: pd.DataFrame
    layers: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def to_drift(
        self,
        *,
        psi_threshold: float = 0.2,
        shift_threshold: float = 3.0,
        dead_threshold: float = 0.1,
        fluctuation_threshold: float = 0.5,
        neurons: bool = False,
    ) -> Result:
        """``Result("drift")`` rows per layer (and per neuron PSI with ``neurons=True``).

        Fixed rule-of-thumb thresholds (PSI 0.2 is the usual "significant shift"); the nightly
        monitor learns its own from a reference period.
        """
        rows = []

        def add(kind, subject, stat, method, value, ref, thr):
            ok = np.isfinite(value)
            rows.append(
                {
                    "subject_kind": kind,
                    "subject": subject,
                    "statistic": stat,
                    "method": method,
                    "value": float(value) if ok else float("nan"),
                    "reference": float(ref),
                    "threshold": float(thr),
                    "direction": "above",
                    "alert": bool(ok and value > thr),
                }
            )

        for r in self.layers.itertuples(index=False):
            add("layer", r.layer, "psi_max", f"fixed psi>{psi_threshold}", r.psi_max, 0.0, psi_threshold)
            add("layer", r.layer, "abs_shift_max", f"fixed |shift|>{shift_threshold} ref std", r.abs_shift_max, 0.0, shift_threshold)
            add(
                "layer", r.layer, "dead_fraction_delta", f"fixed delta>{dead_threshold}", r.dead_fraction_delta, 0.0, dead_threshold
            )
            add("layer", r.layer, "fluctuation", f"fixed mean|log std ratio|>{fluctuation_threshold}", r.fluctuation, 0.0, fluctuation_threshold)
        if neurons:
            for r in self.neurons.itertuples(index=False):
                add("neuron", f"{r.layer}/{r.neuron}", "psi", f"fixed psi>{psi_threshold}", r.psi, 0.0, psi_threshold)
        frame = pd.DataFrame(rows, columns=list(COLUMNS["drift"]))
        return Result("drift", frame, dict(self.meta))


def compare(a: NeuronSummary, b: NeuronSummary, *, names: tuple[str, str] = ("a", "b")) -> NeuronComparison:
    """Compare ``b`` against the reference ``a`` (see the module docstring for every column)."""
    common = [k for k in a.stats if k in b.stats]
    notes: list[str] = []
    only_a = [k for k in a.stats if k not in b.stats]
    only_b = [k for k in b.stats if k not in a.stats]
    if only_a or only_b:
        notes.append(f"layers only in {names[0]}: {only_a}; only in {names[1]}: {only_b}")
    nparts, lrows = [], []
    for name in common:
        sa, sb = a.stats[name], b.stats[name]
        if sa.n_neurons != sb.n_neurons:
            notes.append(f"layer {name!r}: {sa.n_neurons} vs {sb.n_neurons} neurons, not compared")
            continue
        ma, mb, sda, sdb = sa.mean, sb.mean, sa.std, sb.std
        shift, ratio = standardised_shift(ma, sda, mb, sdb)
        same_edges = (sa.lo, sa.hi, sa.bins) == (sb.lo, sb.hi, sb.bins)
        if same_edges:
            p = psi(sa.hist, sb.hist)
        else:
            p = np.full(sa.n_neurons, np.nan)
            notes.append(f"layer {name!r}: histogram edges differ, PSI not computed (summarise {names[1]} with reference={names[0]})")
        da, db = sa.dead, sb.dead
        nparts.append(
            pd.DataFrame(
                {
                    "layer": name,
                    "neuron": np.arange(sa.n_neurons),
                    "mean_a": ma,
                    "mean_b": mb,
                    "std_a": sda,
                    "std_b": sdb,
                    "shift": shift,
                    "std_ratio": ratio,
                    "psi": p,
                    "frac_zero_a": sa.frac_zero,
                    "frac_zero_b": sb.frac_zero,
                    "dead_a": da,
                    "dead_b": db,
                    "selectivity_a": _selectivity(sa),
                    "selectivity_b": _selectivity(sb),
                }
            )
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            logr = np.abs(np.log(ratio))
        lrows.append(
            {
                "layer": name,
                "n_neurons": sa.n_neurons,
                "count_a": sa.count,
                "count_b": sb.count,
                "dead_fraction_a": sa.dead_fraction,
                "dead_fraction_b": sb.dead_fraction,
                "dead_fraction_delta": sb.dead_fraction - sa.dead_fraction,
                "saturated_fraction_a": sa.saturated_fraction,
                "saturated_fraction_b": sb.saturated_fraction,
                "abs_shift_mean": _nanstat(np.nanmean, np.abs(shift)),
                "abs_shift_max": _nanstat(np.nanmax, np.abs(shift)),
                "psi_mean": _nanstat(np.nanmean, p),
                "psi_max": _nanstat(np.nanmax, p),
                "std_ratio_median": _nanstat(np.nanmedian, ratio),
                "fluctuation": _nanstat(np.nanmean, logr),
            }
        )
    neurons = pd.concat(nparts, ignore_index=True) if nparts else pd.DataFrame()
    layers = pd.DataFrame(lrows)
    return NeuronComparison(neurons, layers, {"a": names[0], "b": names[1], "notes": notes})


def _nanstat(fn, x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(fn(x)) if np.isfinite(x).any() else float("nan")
