"""``ctrlens nightly`` under torch.distributed (gloo on CPU): the ranks store what one process stores.

One incident day of the shared nightly world (its reference from the snapshot), whole-day mode in
small batches so every rank gets several: 1 process (in this process), ``--nproc 2``, ``--nproc 3``
and ``torchrun --nproc_per_node 2`` must store the same results for every stored kind -- counts,
samples, AUC / GAUC and every non-float column exactly, floats to 1e-6 relative (summation order).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctrlens.monitor import load_config
from ctrlens.monitor.job import NightlyJob
from ctrlens.store import Store
from monitor_fixtures import ROOT, NightlyWorld, copy_db, day, nightly_world, run_cli  # noqa: F401

DAY = day(12)  # "price" shuffled: permutation importance and field dependences find it
ROWS = {"neurons": 0, "probes": 400, "saliency": 200}  # the whole day: 4000 rows
#: 3 batches (1536, 1536, 928 rows), each forward in pieces of 1024 rows on CPU, 2 permutation chunks
EXTRA = {"batch_size": 1536}
#: "pal" has its reference (and frozen neuron edges) in the snapshot; "fresh" starts afresh: its
#: histogram edges come from the day's first forward
MODELS = ("pal", "fresh")
#: columns that must be equal exactly whatever the number of ranks (beyond counts, which are ints)
EXACT = {"auc", "gauc", "model_auc", "positives", "rows", "count", "hist_json", "top_json"}
#: provenance and timing columns: they differ between any two runs
VOLATILE = {"run_id", "computed_at", "alert_id", "first_seen", "last_seen", "created_at", "updated_at", "evidence_json"}


def make_config(nw: NightlyWorld, folder: Path) -> Path:
    m = [{"name": name, "checkpoint": str(nw.checkpoint), "rows": dict(ROWS)} for name in MODELS]
    return nw.config(folder, db=nw.snapshot, models=m, **EXTRA)


def stored(db: Path) -> dict[str, pd.DataFrame]:
    """Every result kind stored for DAY, per model (volatile columns dropped)."""
    s = Store(f"sqlite:///{db}")
    try:
        out = {}
        for model in MODELS:
            vid = int(s.versions(model=model)["version_id"].iloc[0])
            for kind, r in s.read_day(vid, DAY, run_kind="nightly").items():
                out[f"{model}/{kind}"] = r.frame.drop(columns=[c for c in r.frame.columns if c in VOLATILE])
        return out
    finally:
        s.close()


def assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame], what: str) -> None:
    assert sorted(a) == sorted(b), what
    for kind in a:
        x, y = a[kind], b[kind]
        assert list(x.columns) == list(y.columns) and len(x) == len(y), f"{what}: {kind}"
        for c in x.columns:
            u, v = x[c], y[c]
            if pd.api.types.is_float_dtype(u) and c not in EXACT:
                np.testing.assert_allclose(u.to_numpy(float), v.to_numpy(float), rtol=1e-6, atol=1e-12, equal_nan=True,
                                           err_msg=f"{what}: {kind}.{c}")  # fmt: skip
            else:
                same = [(p == q) or (p != p and q != q) for p, q in zip(u.tolist(), v.tolist())]
                assert all(same), f"{what}: {kind}.{c} differs: {u[~np.array(same)].head(3).tolist()} vs {v[~np.array(same)].head(3).tolist()}"


@pytest.fixture(scope="module")
def one_rank(nightly_world: NightlyWorld, tmp_path_factory) -> dict[str, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("one-rank")
    s = NightlyJob(load_config(make_config(nightly_world, folder))).run(day=DAY)
    assert [o.status for o in s.outcomes] == ["ok", "ok"], [o.error for o in s.outcomes]
    return stored(folder / "ctrlens.sqlite")


@pytest.mark.parametrize("nproc", [2, 3])
def test_nproc_stores_what_one_process_stores(nightly_world: NightlyWorld, one_rank, tmp_path: Path, nproc: int) -> None:
    cfg = make_config(nightly_world, tmp_path)
    r = run_cli("nightly", "--config", str(cfg), "--day", DAY, "--nproc", str(nproc), "--json", "--quiet")
    out = json.loads(r.stdout)
    assert out["ranks"] == nproc and out["rank_error"] is None, r.stderr[-3000:]
    assert [o["status"] for o in out["outcomes"]] == ["ok", "ok"], [o["error"] for o in out["outcomes"]]
    assert r.returncode == out["exit_code"] == 1  # the shuffled column pages
    assert_same(one_rank, stored(tmp_path / "ctrlens.sqlite"), f"{nproc} ranks")


def test_torchrun_stores_what_one_process_stores(nightly_world: NightlyWorld, one_rank, tmp_path: Path) -> None:
    cfg = make_config(nightly_world, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ctrlens.cli",
           "nightly", "--config", str(cfg), "--day", DAY, "--json", "--quiet"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, r.stdout[-2000:] + r.stderr[-3000:]  # rank 0 alone reports
    out = json.loads(lines[0])
    assert out["ranks"] == 2 and [o["status"] for o in out["outcomes"]] == ["ok", "ok"], r.stderr[-3000:]
    assert out["exit_code"] == 1 and r.returncode != 0  # every rank exits with the job's code; torchrun fails on it
    assert_same(one_rank, stored(tmp_path / "ctrlens.sqlite"), "torchrun")


def test_a_failing_rank_fails_the_day_with_nothing_written(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    cfg = make_config(nightly_world, tmp_path)
    before = stored_days(tmp_path / "ctrlens.sqlite")
    env_fault = {"CTRLENS_FAULT": "nightly.rank1:1"}  # rank 1 is killed as it starts its share
    r = run_cli_env(env_fault, "nightly", "--config", str(cfg), "--day", DAY, "--nproc", "2", "--json", "--quiet")
    out = json.loads(r.stdout)
    assert r.returncode == out["exit_code"] == 3, r.stderr[-3000:]
    # the first model-day fails where rank 1 died, the next one because the group is gone
    assert [o["status"] for o in out["outcomes"]] == ["failed", "failed"], out["outcomes"]
    assert all("rank" in o["error"] for o in out["outcomes"]), out["outcomes"]
    assert stored_days(tmp_path / "ctrlens.sqlite") == before and DAY not in before
    assert out["rank_error"] is not None  # the parent saw its rank die


def stored_days(db: Path) -> list[str]:
    s = Store(f"sqlite:///{db}")
    try:
        return s.days(run_kind="nightly")
    finally:
        s.close()


def run_cli_env(extra: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}
    code = "import sys; from ctrlens.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env=env)


def test_ranks_and_workers_do_not_combine(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    cfg = make_config(nightly_world, tmp_path)
    r = run_cli("nightly", "--config", str(cfg), "--day", DAY, "--nproc", "2", "--workers", "2", "--quiet")
    assert r.returncode == 2 and "--workers" in r.stderr and "--nproc" in r.stderr, r.stderr[-2000:]
    assert DAY not in stored_days(tmp_path / "ctrlens.sqlite")


def test_backtests_are_shared_by_the_ranks(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    """A checkpoint the reference days never saw is back-tested on them: under ``--nproc 2`` every
    back-test day is computed by both ranks (as today is) and the day stores what one process stores."""
    import torch

    from ctrlens.models.checkpoint import load_checkpoint, save_checkpoint

    model = load_checkpoint(nightly_world.checkpoint)
    with torch.no_grad():
        next(model.parameters()).mul_(1.01)  # new weights: a new version, served from day 11 on
    ck = save_checkpoint(tmp_path / "retrained.pt", model, step=1).path
    cfgs = {}
    for name in ("one", "two"):
        m = [{"name": "pal", "checkpoint": str(ck), "rows": dict(ROWS)}]
        cfgs[name] = nightly_world.config(tmp_path / name, db=nightly_world.snapshot, models=m, **EXTRA,
                                          reference={"kind": "trailing", "days": 2, "min_days": 2})  # fmt: skip
    job = NightlyJob(load_config(cfgs["one"]))
    s = job.run(day=day(11))
    assert [o.status for o in s.outcomes] == ["ok"], [o.error for o in s.outcomes]
    assert sorted(d for _, d in job._backtests) == [day(9), day(10)]  # the reference days, back-tested
    r = run_cli("nightly", "--config", str(cfgs["two"]), "--day", day(11), "--nproc", "2", "--json", "--quiet")
    out = json.loads(r.stdout)
    assert out["ranks"] == 2 and [o["status"] for o in out["outcomes"]] == ["ok"], r.stderr[-3000:]
    a, b = (_stored_day(tmp_path / n / "ctrlens.sqlite", day(11)) for n in ("one", "two"))
    assert "drift" in a  # compared with the back-tests: their numbers reach the stored drift tests
    assert_same(a, b, "back-tests on 2 ranks")
    # rank 1 takes part in each back-test day: killed as it starts its second, the day fails unwritten
    cfg = nightly_world.config(tmp_path / "killed", db=nightly_world.snapshot, models=m, **EXTRA,
                               reference={"kind": "trailing", "days": 2, "min_days": 2})  # fmt: skip
    r = run_cli_env({"CTRLENS_FAULT": "nightly.rank1:2"}, "nightly", "--config", str(cfg), "--day", day(11), "--nproc",
                    "2", "--json", "--quiet")  # fmt: skip
    out = json.loads(r.stdout)
    assert [o["status"] for o in out["outcomes"]] == ["failed"] and "rank" in out["outcomes"][0]["error"], r.stderr[-3000:]
    assert day(11) not in stored_days(tmp_path / "killed" / "ctrlens.sqlite")


def _stored_day(db: Path, d: str) -> dict[str, pd.DataFrame]:
    s = Store(f"sqlite:///{db}")
    try:
        vid = int(s.versions(model="pal")["version_id"].max())
        return {k: r.frame.drop(columns=[c for c in r.frame.columns if c in VOLATILE])
                for k, r in s.read_day(vid, d, run_kind="nightly").items()}  # fmt: skip
    finally:
        s.close()
