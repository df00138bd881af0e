"""2-process gloo DDP on CPU equals one process with the same global batch.

The tiny model has no batch-statistics layers (BatchNorm/Dice): under DDP those normalise with each
rank's half batch, so they would legitimately differ from one process (see docs/training.md).
"""

from __future__ import annotations

import pytest
import torch

from ctrlens.errors import InputError
from ctrlens.models.checkpoint import checkpoint_info, read_checkpoint
from ctrlens.train import train
from train_fixtures import FakeDays, build_tiny

DAYS = ["2026-01-01", "2026-01-02"]


@pytest.mark.slow
def test_ddp_two_ranks_equals_single_process(tmp_path) -> None:
    # the evaluation day has a row count that 2 ranks cannot split evenly: no row may be dropped
    ds = FakeDays([*DAYS, "2026-01-03"], rows={"2026-01-01": 256, "2026-01-02": 256, "2026-01-03": 259}, seed=3)
    kw = dict(batch_size=64, lr=0.05, builder=build_tiny, checkpoint_every=4, eval_days=["2026-01-02", "2026-01-03"])
    one = train("tiny", ds, DAYS, out_dir=tmp_path / "one", **kw)
    two = train("tiny", ds, DAYS, out_dir=tmp_path / "two", nproc=2, **kw)
    assert two.world_size == 2 and two.step == one.step == 8
    assert [checkpoint_info(p).step for p in two.checkpoints] == [4, 8]
    a, b = read_checkpoint(one.final)["state_dict"], read_checkpoint(two.final)["state_dict"]
    moved = max(float((a[k] - read_checkpoint(one.checkpoints[0])["state_dict"][k]).abs().max()) for k in a)
    assert moved > 1e-2  # the parameters did move
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    # per-step losses (mean over ranks) match too, and sharded evaluation equals single-process
    torch.testing.assert_close(torch.tensor(one.losses), torch.tensor(two.losses), rtol=1e-5, atol=1e-6)
    qa, qb = one.eval["2026-01-02"].frame, two.eval["2026-01-02"].frame
    assert int(qb["rows"][0]) == 256
    assert float(qa["auc"][0]) == pytest.approx(float(qb["auc"][0]), abs=1e-6)
    qa, qb = one.eval["2026-01-03"].frame, two.eval["2026-01-03"].frame
    assert int(qa["rows"][0]) == int(qb["rows"][0]) == 259
    for col in ("auc", "logloss", "mean_pred"):
        if col in qa:
            assert float(qa[col][0]) == pytest.approx(float(qb[col][0]), abs=1e-6), col
    # rank 0 saved every rank's RNG state
    assert len(read_checkpoint(two.final)["rng"]) == 2


@pytest.mark.slow
def test_ddp_nan_in_one_rank_stops_all(tmp_path) -> None:
    ds = FakeDays(DAYS, rows=256, poison={("2026-01-01", 2, 1)})  # rank 1 only
    with pytest.raises(InputError, match="loss is nan at step 3;.*day 2026-01-01, batch 2 of the day.*ckpt-step000000002.pt"):
        train("tiny", ds, DAYS, out_dir=tmp_path, batch_size=64, builder=build_tiny, checkpoint_every=2, nproc=2)
