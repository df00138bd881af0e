"""Under DDP each rank summarises its shard; merged by collectives they equal one process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ctrlens.neurons import NeuronMonitor, NeuronSummary
from neurons_fixtures import TinyCTR, make_batches

WORLD = 2


def _setup():
    model = TinyCTR(seed=21).eval()
    batches = make_batches(n_rows=400, batch_size=50, seed=22)  # 8 batches; rank r takes r, r+2, ...
    return model, batches


def _worker(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        model, batches = _setup()
        shard = batches[rank::WORLD]
        edges = json.loads(Path(out, "edges.json").read_text())
        s = NeuronMonitor(model, sample_size=25, seed=9, edges=edges).run(shard)  # syncs: distributed by default
        free = NeuronMonitor(model, sample_size=0).run(shard)  # no edges given: ranks agree on the first batch
        Path(out, f"rank{rank}.json").write_text(json.dumps(s.to_dict()))
        Path(out, f"free{rank}.json").write_text(json.dumps({k: [v.lo, v.hi] for k, v in free.stats.items()}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_rank_gloo_merge_equals_single_process(tmp_path: Path) -> None:
    model, batches = _setup()
    ref = NeuronMonitor(model, sample_size=0).run(batches[:1])
    edges = {k: [v.lo, v.hi] for k, v in ref.stats.items()}
    (tmp_path / "edges.json").write_text(json.dumps(edges))
    mp.spawn(_worker, args=(f"file://{tmp_path / 'store'}", str(tmp_path)), nprocs=WORLD, join=True)

    # one process over rank 0's shard, then rank 1's: the order the ranks are merged in
    single = NeuronSummary.merge_all(
        NeuronMonitor(model, sample_size=25, seed=9, edges=edges, distributed=False).run(batches[r::WORLD]) for r in range(WORLD)
    )
    whole = NeuronMonitor(model, sample_size=25, seed=9, edges=edges, distributed=False).run(batches)
    ranks = [NeuronSummary.from_dict(json.loads((tmp_path / f"rank{r}.json").read_text())) for r in range(WORLD)]
    for got in ranks:  # every rank holds the merged result
        assert got.meta.get("world_size") == WORLD
        for name in single:
            a, b, w = got[name], single[name], whole[name]
            assert a.counts.tolist() == b.counts.tolist() == w.counts.tolist()
            np.testing.assert_allclose(a.means, b.means, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(a.m2, b.m2, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(a.std, w.std, rtol=1e-9, atol=1e-12)
            np.testing.assert_array_equal(a.minimum, w.minimum)
            np.testing.assert_array_equal(a.maximum, w.maximum)
            np.testing.assert_array_equal(a.zeros, w.zeros)
            np.testing.assert_array_equal(a.hist, w.hist)
            np.testing.assert_array_equal(a.sample_key, w.sample_key)  # row-keyed sample: shard-invariant
            np.testing.assert_array_equal(a.sample, w.sample)
        for t in whole.seen:
            np.testing.assert_array_equal(got.seen[t], whole.seen[t])
    free = [json.loads((tmp_path / f"free{r}.json").read_text()) for r in range(WORLD)]
    assert free[0] == free[1]  # first-batch edges agreed across ranks (min/max all_reduce)
    assert os.path.exists(tmp_path / "rank1.json")
