"""Merging neuron summaries across ``torch.distributed`` ranks.

Each rank summarises its shard; :func:`all_gather_summary` gathers the ranks' states
(``all_gather_object``: moments, extremes, histograms and samples travel together, so nothing is
merged approximately) and merges them in rank order on every rank. The result equals the summary
one process computes over rank 0's batches, then rank 1's, ... up to float64 rounding; samples and
histogram subsamples are identical because they depend only on row keys.
"""

from __future__ import annotations

from ctrlens.neurons.summary import NeuronSummary


def all_gather_summary(summary: NeuronSummary, group=None) -> NeuronSummary:
    """The merge of every rank's ``summary`` (same result on all ranks); a no-op without a group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return summary
    parts: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, summary, group=group)  # pickled numpy state
    merged = NeuronSummary.merge_all(parts)
    merged.meta = {**summary.meta, "world_size": len(parts)}
    return merged
