"""The training loop with a tiny model: learning, checkpoints, exact resume, warm start, NaN, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from ctrlens.errors import InputError
from ctrlens.models.checkpoint import checkpoint_info, checkpoint_path, latest_checkpoint, load_checkpoint, read_checkpoint
from ctrlens.train import TrainingError, train
from train_fixtures import OTHER_SCHEMA, FakeDays, build_tiny

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]


def _train(ds, out, days="2026-01-01:2026-01-02", **kw):
    kw.setdefault("batch_size", 64)
    kw.setdefault("lr", 0.05)
    return train("tiny", ds, days, out_dir=out, builder=build_tiny, **kw)


def test_trains_checkpoints_and_evaluates(tmp_path) -> None:
    ds = FakeDays(DAYS, rows=512)
    seen = []
    res = _train(ds, tmp_path, epochs=2, checkpoint_every=10, eval_days=["2026-01-03"], callback=seen.append, save_initial=True)
    assert res.steps_run == 2 * 2 * 8 == res.step
    assert [checkpoint_info(p).step for p in res.checkpoints] == [0, 10, 20, 30, 32]
    assert checkpoint_info(res.checkpoints[0]).days_seen == ()
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 32) == type(latest_checkpoint(tmp_path))(res.final)
    info = checkpoint_info(res.final)
    assert info.days_seen == ("2026-01-01", "2026-01-02") and info.extra["final"] is True
    assert info.extra["position"] == {"epoch": 2, "day_index": 0, "batch": 0}
    assert [s.step for s in seen] == list(range(1, 33)) and seen[-1].total_steps == 32
    q = res.eval["2026-01-03"].frame.set_index("head")
    assert q.loc["ctr", "rows"] == 512
    assert q.loc["ctr", "auc"] > 0.7  # the signal is learnable
    assert q.loc["ctr", "ne"] < 0.95
    assert sum(res.losses[-8:]) < sum(res.losses[:8])
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["step"] == 32 and summary["config"]["model"] == "tiny"
    assert summary["eval"]["2026-01-03"]["kind"] == "quality"


def test_resume_is_exact(tmp_path) -> None:
    ds = FakeDays(DAYS, rows=256)  # 4 batches of 64 per day
    kw = dict(epochs=2, checkpoint_every=3, model_config={"dropout": 0.3})  # dropout: RNG state must resume too
    full = _train(ds, tmp_path / "full", **kw)
    assert full.step == 16
    for k in (3, 6, 9):  # mid-day, mid-day 2, second epoch
        res = _train(ds, tmp_path / f"resume{k}", resume_from=checkpoint_path(tmp_path / "full", k), **kw)
        assert res.step == 16 and res.steps_run == 16
        assert checkpoint_info(res.final).version == checkpoint_info(full.final).version, k
    a = read_checkpoint(full.final)["optimizer"]["state"]
    b = read_checkpoint(res.final)["optimizer"]["state"]
    assert all(torch.equal(a[i]["exp_avg"], b[i]["exp_avg"]) for i in a)


def test_warm_start_continues_on_new_day(tmp_path) -> None:
    ds = FakeDays(DAYS, rows=256)
    d1 = _train(ds, tmp_path / "d1", days="2026-01-01")
    d2 = _train(ds, tmp_path / "d2", days="2026-01-02", init_from=d1.final, lr=0.01)
    i2 = checkpoint_info(d2.final)
    assert i2.days_seen == ("2026-01-01", "2026-01-02")
    assert (d2.step, d2.steps_run) == (8, 4)
    assert read_checkpoint(d2.final)["optimizer"]["param_groups"][0]["lr"] == 0.01
    # it started from yesterday's weights, not from scratch
    cold = _train(ds, tmp_path / "cold", days="2026-01-02", lr=0.01)
    assert checkpoint_info(cold.final).version != i2.version


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path) -> None:
    ds = FakeDays(DAYS, rows=256, poison={("2026-01-02", 1)})  # global step 6
    with pytest.raises(TrainingError) as e:
        _train(ds, tmp_path, checkpoint_every=2)
    msg = str(e.value)
    assert "loss is nan at step 6" in msg and "day 2026-01-02" in msg and "batch 1 of the day" in msg
    assert "ckpt-step000000004.pt (step 4), kept untouched" in msg
    good = checkpoint_path(tmp_path, 4)
    assert latest_checkpoint(tmp_path) == good
    m = load_checkpoint(good, builder=build_tiny)
    assert all(torch.isfinite(p).all() for p in m.parameters())
    assert not (tmp_path / "train.json").exists()


def test_huge_lr_diverges_cleanly(tmp_path) -> None:
    ds = FakeDays(DAYS, rows=256)
    with pytest.raises(TrainingError, match=r"(loss is (nan|inf)|is not finite).*Lower --lr \(now 1e\+30\)"):
        _train(ds, tmp_path, lr=1e30, optimizer="sgd", checkpoint_every=1)
    assert all(torch.isfinite(p).all() for p in load_checkpoint(latest_checkpoint(tmp_path), builder=build_tiny).parameters())


def test_bad_inputs(tmp_path) -> None:
    ds = FakeDays(DAYS, rows=128)
    with pytest.raises(InputError, match=r"day\(s\) 2026-01-04 not in the dataset; available days: 2026-01-01, 2026-01-02, 2026-01-03"):
        _train(ds, tmp_path, days="2026-01-02:2026-01-04")
    with pytest.raises(InputError, match="--eval-days: day.*2027-01-01"):
        _train(ds, tmp_path, eval_days="2027-01-01")
    with pytest.raises(InputError, match=r"--model 'dinn': no such model; valid models: .*din"):
        train("dinn", ds, "2026-01-01", out_dir=tmp_path)
    with pytest.raises(InputError, match="divisible"):
        _train(ds, tmp_path, batch_size=63, nproc=2)
    first = _train(ds, tmp_path / "a", days="2026-01-01")
    with pytest.raises(InputError, match="the run's days differ"):
        _train(ds, tmp_path / "b", days="2026-01-02", resume_from=first.final)
    with pytest.raises(InputError, match=r"already holds 1 checkpoint\(s\) of another run .*--resume.*--overwrite"):
        _train(ds, tmp_path / "a", days="2026-01-01")
    again = _train(ds, tmp_path / "a", days="2026-01-02", overwrite=True)
    assert [checkpoint_info(p).days_seen for p in again.checkpoints] == [("2026-01-02",)]
    first = _train(ds, tmp_path / "a2", days="2026-01-01")
    with pytest.raises(InputError, match="not both"):
        _train(ds, tmp_path / "b", resume_from=first.final, init_from=first.final)
    other = FakeDays(DAYS, rows=128, schema=OTHER_SCHEMA)
    with pytest.raises(InputError, match=r"trained on schema [0-9a-f]{16}, but the data's schema is [0-9a-f]{16}: field 'item_id' changed"):
        _train(other, tmp_path / "c", init_from=first.final)
    with pytest.raises(InputError, match="file not found"):
        _train(ds, tmp_path / "c", init_from=tmp_path / "a" / "nope.pt")
