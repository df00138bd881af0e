"""Neuron-level statistics of CTR models, per model x checkpoint x day (see ``docs/neurons.md``).

* :class:`NeuronMonitor` -- hooks that reduce every watched layer to mergeable sufficient
  statistics while the model runs over a day's batches.
* :class:`NeuronSummary` -- the result: per-neuron / per-layer frames, ``to_results()`` for the
  store, ``merge`` (halves, days, DDP ranks) and ``to_dict`` / ``from_dict``.
* :func:`compare` -- train vs test day, day vs day, checkpoint vs checkpoint.
* :func:`embedding_health` -- row norms, never-updated rows, effective rank of embedding tables.
"""

from ctrlens.neurons.compare import NeuronComparison, compare, psi
from ctrlens.neurons.distributed import all_gather_summary
from ctrlens.neurons.embedding import (
    effective_rank,
    embedding_health,
    information_abundance,
    snapshot_tables,
)
from ctrlens.neurons.monitor import NeuronMonitor
from ctrlens.neurons.sketch import SketchConfig
from ctrlens.neurons.stats import CLASSES, LayerStats, NeuronStatsError
from ctrlens.neurons.summary import NeuronSummary

__all__ = [
    "CLASSES",
    "LayerStats",
    "NeuronComparison",
    "NeuronMonitor",
    "NeuronStatsError",
    "NeuronSummary",
    "SketchConfig",
    "all_gather_summary",
    "compare",
    "effective_rank",
    "embedding_health",
    "information_abundance",
    "psi",
    "snapshot_tables",
]
