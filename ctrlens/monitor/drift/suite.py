"""The suite that runs every test of a model-day, and the combination of the data and model axes."""

from __future__ import annotations

import numpy as np

from ctrlens.monitor.drift.inputs import InputTests
from ctrlens.monitor.drift.model import ModelTests


class DriftSuite(InputTests, ModelTests):
    """Builds the ``drift`` rows of one model-day: today's results against a
    :class:`~ctrlens.monitor.drift.history.History` (call ``fields``, ``swaps``, ``quality``,
    ``saliency``, ``probes``, ``layers``, ``embeddings``, ``observations``, then ``result``).

    Args:
        thresholds: the configured :class:`~ctrlens.monitor.config.Thresholds`.
        min_days: fewer usable reference days than this: values are recorded, nothing alerts.
    """


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
