"""The nightly job as cron runs it: exit codes, idempotent reruns, backfill, the lock, missing days,
a checkpoint of another schema, a killed job, and checkpoint-level findings (dead units, over-fitting).

Days replayed here start from the shared snapshot (days 6-10 done, see tests/monitor_fixtures.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor_fixtures import ROOT, NightlyWorld, day, nightly_world, paging, run_cli  # noqa: F401

pytestmark = pytest.mark.slow

ALL_KINDS = {"field_stats", "quality", "neuron_stats", "layer_stats", "embedding_health", "probe", "saliency", "drift", "alert"}


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``ctrlens ARGS`` in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from ctrlens.cli import main

    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _store(db: Path):
    from ctrlens.store import Store

    return Store(f"sqlite:///{db}")


def _counts(db: Path) -> dict:
    with _store(db) as s:
        return s.info()["rows"]


def test_exit_codes_new_alert_then_rerun_skips(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    cfg = nightly_world.config(tmp_path, db=nightly_world.snapshot)
    # day 11: category_id stuck -> a new alert -> exit 1
    r = run_cli("nightly", "--config", str(cfg), "--day", day(11), "--json", "--quiet")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["exit_code"] == 1 and out["outcomes"][0]["status"] == "ok"
    new = out["new_alerts"]
    assert new and new[0]["finding"] == "broken_feature" and new[0]["subject"] == "category_id"
    # the same day again: already done -> skipped, nothing new -> exit 0
    r2 = run_cli("nightly", "--config", str(cfg), "--day", day(11), "--json", "--quiet")
    assert r2.returncode == 0, r2.stderr
    assert json.loads(r2.stdout)["outcomes"][0]["status"] == "skipped"


def test_exit_on_alert_false_and_human_summary(nightly_world: NightlyWorld, tmp_path: Path, capsys) -> None:
    cfg = nightly_world.config(tmp_path, db=nightly_world.snapshot, exit_on_alert=False)
    code, out, err = cli(capsys, "nightly", "--config", str(cfg), "--day", day(11), "--quiet")
    assert code == 0, err
    assert "broken_feature" in out and "new alert" in out and "category_id" in out


def test_force_rerun_is_idempotent(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob

    cfg = load_config(nightly_world.config(tmp_path, db=nightly_world.snapshot))
    first = NightlyJob(cfg).run(day=day(11))
    before = _counts(tmp_path / "ctrlens.sqlite")
    with _store(tmp_path / "ctrlens.sqlite") as s:
        vid = first.outcomes[0].version_id
        a1 = s.read_day(vid, day(11))
        alerts1 = s.alerts(model="pal")
    again = NightlyJob(cfg).run(day=day(11), force=True)
    assert again.outcomes[0].status == "ok" and again.exit_code == 0  # the alert is already open: not new
    after = _counts(tmp_path / "ctrlens.sqlite")
    for table in ("field_stats", "neuron_stats", "drift", "alert_results", "alerts", "runs", "quality"):
        assert after[table] == before[table], table
    with _store(tmp_path / "ctrlens.sqlite") as s:
        a2 = s.read_day(vid, day(11))
        alerts2 = s.alerts(model="pal")
    assert set(a1) == set(a2) == ALL_KINDS
    # same seed, same rows: the same numbers
    assert a1["quality"].frame["auc"].tolist() == pytest.approx(a2["quality"].frame["auc"].tolist())
    assert a1["alert"].frame[["finding", "subject"]].values.tolist() == a2["alert"].frame[["finding", "subject"]].values.tolist()
    assert alerts1["alert_id"].tolist() == alerts2["alert_id"].tolist()


def test_backfill_skips_done_days_unless_forced(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob

    cfg = load_config(nightly_world.config(tmp_path, db=nightly_world.snapshot))
    s = NightlyJob(cfg).run(start=day(9), end=day(12))  # 9, 10 done in the snapshot; 11, 12 new
    assert [o.status for o in s.outcomes] == ["skipped", "skipped", "ok", "ok"]
    assert s.exit_code == 1
    with _store(tmp_path / "ctrlens.sqlite") as st:
        assert st.days(model="pal", run_kind="nightly")[-2:] == [day(11), day(12)]
        # day 12 saw day 11 in its reference
        params = st.runs(model="pal", days=day(12))["params"].iloc[0]
        assert day(11) in params["reference_days"]
    forced = NightlyJob(cfg).run(start=day(9), end=day(10), force=True)
    assert [o.status for o in forced.outcomes] == ["ok", "ok"] and forced.exit_code == 0


def test_lock_held_by_another_job(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    """A live job elsewhere holds day 11: this job waits lock_wait_s, reports it locked, and the later
    day it still computes is marked incomplete (exit 3); the next run redoes both."""
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import EXIT_PARTIAL, NightlyJob

    cfg = load_config(nightly_world.config(tmp_path, db=nightly_world.snapshot, lock_wait_s=0.5))
    with _store(tmp_path / "ctrlens.sqlite") as s:
        token = s.acquire("pal", day(11), purpose="nightly", owner="other-host:4242:job", ttl_s=3600)
        assert token
        res = NightlyJob(cfg, store=s).run(start=day(11), end=day(12))
        o11, o12 = res.outcomes
        assert o11.status == "locked" and "locked by other-host:4242:job" in o11.error
        assert o12.status == "ok" and o12.incomplete == [day(11)]  # the other days go on, and say so
        assert res.exit_code == EXIT_PARTIAL and res.to_dict()["incomplete"] == [f"pal {day(12)}"]
        assert day(11) not in s.days(model="pal", run_kind="nightly")
        assert s.release("pal", day(11), token, purpose="nightly")
        again = NightlyJob(cfg, store=s).run(start=day(11), end=day(12))
        assert [o.status for o in again.outcomes] == ["ok", "ok"], [(o.status, o.error) for o in again.outcomes]
        assert "missing" in again.outcomes[1].recomputed and not again.outcomes[1].incomplete
        params = s.runs(model="pal", days=day(12), run_kind="nightly").iloc[0]["params"]
        assert day(11) in params["reference_days"] and params["provenance"]["incomplete"] == []
        assert again.exit_code in (0, 1)


def test_missing_day_fails_alone_and_writes_nothing(nightly_world: NightlyWorld, tmp_path: Path, capsys) -> None:
    # a copy of the world without day 12 (symlinks: cheap)
    data = tmp_path / "data"
    data.mkdir()
    for p in nightly_world.data.iterdir():
        if p.name != f"day={day(12)}":
            (data / p.name).symlink_to(p)
    cfg = nightly_world.config(tmp_path / "job", db=nightly_world.snapshot, data=data)
    before = _counts(tmp_path / "job" / "ctrlens.sqlite")
    code, stdout, _ = cli(capsys, "nightly", "--config", str(cfg), "--from", day(11), "--to", day(13), "--json", "--quiet")
    out = json.loads(stdout)
    st = {o["day"]: o for o in out["outcomes"]}
    assert st[day(11)]["status"] == "ok" and st[day(13)]["status"] == "ok"
    assert st[day(12)]["status"] == "failed"
    assert f"day {day(12)} is not in the data at {data}" in st[day(12)]["error"]
    assert code == 3  # ran, but a day failed
    with _store(tmp_path / "job" / "ctrlens.sqlite") as s:
        runs = s.runs(model="pal")
        assert day(12) not in set(runs["day"])  # nothing stored for it, not even a failed run
        assert s.days(model="pal")[-2:] == [day(11), day(13)]
    after = _counts(tmp_path / "job" / "ctrlens.sqlite")
    assert after["runs"] == before["runs"] + 2
    # only the missing day asked for: bad input, nothing written, exit 2
    code2, _, err2 = cli(capsys, "nightly", "--config", str(cfg), "--day", day(12), "--quiet")
    assert code2 == 2 and f"day {day(12)} is not in the data" in err2
    assert _counts(tmp_path / "job" / "ctrlens.sqlite") == after


def test_checkpoint_of_another_schema(nightly_world: NightlyWorld, tmp_path: Path, capsys) -> None:
    import reference_models
    from ctrlens.models.checkpoint import save_checkpoint
    from ctrlens.synth import build_schema
    from ctrlens.synth.config import WorldConfig

    other = build_schema(WorldConfig(days=3, rows_per_day=10, n_users=50, n_items=40, n_categories=5, n_shops=5, image_size=8))
    ck = save_checkpoint(tmp_path / "other.pt", reference_models.build("pal", other, mlp=(8,)), step=0).path
    cfg = nightly_world.config(tmp_path / "job", checkpoint=Path(ck))
    code, _, err = cli(capsys, "nightly", "--config", str(cfg), "--day", day(11), "--quiet")
    assert code == 2
    assert "was trained on schema" in err and "field 'user_id' changed" in err
    assert not (tmp_path / "job" / "ctrlens.sqlite").exists()  # nothing written, not even an empty database


def test_bad_config_exit_2_nothing_written(tmp_path: Path, capsys) -> None:
    p = tmp_path / "nightly.yaml"
    p.write_text(f"db: {tmp_path / 'x.sqlite'}\ndata: {tmp_path}\nmodels:\n  - name: m\n    checkpoint: a.pt\n    rows: {{probes: many}}\n")
    code, _, err = cli(capsys, "nightly", "--config", str(p))
    assert code == 2
    assert "models[0].rows.probes: expected an integer, got 'many'" in err
    assert not (tmp_path / "x.sqlite").exists()
    code2, _, err2 = cli(capsys, "nightly", "--config", str(tmp_path / "missing.yaml"))
    assert code2 == 2 and "file not found" in err2
    code3, _, err3 = cli(capsys, "nightly", "--config", str(p), "--day", "2026-13-01")
    assert code3 == 2


def test_killed_job_leaves_nothing_partial(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob

    cfg_path = nightly_world.config(tmp_path, db=nightly_world.snapshot)
    db = tmp_path / "ctrlens.sqlite"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    code = "import sys; from ctrlens.cli import main; main(sys.argv[1:])"
    p = subprocess.Popen([sys.executable, "-c", code, "nightly", "--config", str(cfg_path), "--from", day(11), "--to", day(19),
                          "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    t0 = time.time()
    try:
        while time.time() - t0 < 240:  # kill it once the first new day is stored, mid-way through the next
            with _store(db) as s:
                if day(11) in s.days(model="pal", run_kind="nightly"):
                    break
            time.sleep(0.05)
        time.sleep(0.3)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    with _store(db) as s:
        runs = s.runs(model="pal")
        done = set(s.days(model="pal", run_kind="nightly"))
        assert done < {day(i) for i in range(6, 20)}  # stopped before the end
        for r in runs.itertuples(index=False):
            kinds = set(r.kinds)
            # every stored day holds every result kind; any other slot holds nothing at all
            assert kinds in (ALL_KINDS, set()), (r.day, r.status, kinds)
            assert (r.status == "complete") == (kinds == ALL_KINDS)
    # restarted at once: the killed job's lease (same host, dead pid) is taken over, no waiting for its TTL
    res = NightlyJob(load_config(cfg_path)).run(start=day(11), end=day(13))
    assert all(o.status in ("ok", "skipped") for o in res.outcomes), [(o.status, o.error) for o in res.outcomes]
    assert res.outcomes[0].status == "skipped"


def _dead_checkpoint(src: Path, dst: Path) -> Path:
    """The trained PAL with every unit of its second hidden layer dead (weights 0, bias -1)."""
    import torch

    from ctrlens.models.blocks import MLP
    from ctrlens.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

    model = load_checkpoint(src)
    ck = read_checkpoint(src)
    mlp = next(m for m in model.modules() if isinstance(m, MLP) and len(m.linears) == 2 and m.linears[0].in_features > 8)
    with torch.no_grad():
        mlp.linears[1].weight.zero_()
        mlp.linears[1].bias.fill_(-1.0)
    return Path(save_checkpoint(dst, model, step=ck["step"] + 1, days_seen=ck["days_seen"]).path)


def test_dead_neurons_in_a_new_checkpoint(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob

    ck = _dead_checkpoint(nightly_world.checkpoint, tmp_path / "run" / "ckpt-step000009999.pt")
    cfg = load_config(nightly_world.config(tmp_path / "job", db=nightly_world.snapshot, checkpoint=ck))
    res = NightlyJob(cfg).run(day=day(19))  # a clean day; only the checkpoint changed
    o = res.outcomes[0]
    assert o.status == "ok", o.error
    top = paging(o.to_dict())
    assert top and top[0]["finding"] == "dead_neurons" and top[0]["subject"] == "mlp.1", top
    assert top[0]["severity"] == "critical"  # 100 % of the layer, up from a few
    assert res.exit_code == 1


def test_overfitted_checkpoint(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob
    from ctrlens.train import train

    # memorise one day: a wide net, many epochs, on the day before the checked one
    r = train("pal", nightly_world.data, day(18), out_dir=tmp_path / "overfit", epochs=25, batch_size=128, lr=1e-2,
              limit=1500, model_config={"mlp": [128, 64]})  # fmt: skip
    # deployed after the trained PAL (days 6-10 in the snapshot): the over-fitting check is calibrated on
    # the previous checkpoint's own train-vs-test gap (with no predecessor it is recorded, not paged)
    cfg = load_config(nightly_world.config(tmp_path / "job", db=nightly_world.snapshot, checkpoint=Path(r.final_info.path)))
    res = NightlyJob(cfg).run(day=day(19))
    o = res.outcomes[0]
    assert o.status == "ok", o.error
    found = {(f["finding"], f["severity"]) for f in paging(o.to_dict())}
    assert ("overfitting", "critical") in found, o.findings
    over = next(f for f in o.findings if f["finding"] == "overfitting")
    assert "AUC" in over["title"] and day(18) in over["title"] and "previous checkpoint" in over["title"]


def test_checkpoint_dir_picks_the_checkpoint_trained_before_each_day(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    from ctrlens.monitor.config import ModelWatch
    from ctrlens.monitor.job import _Models
    from ctrlens.models.checkpoint import read_checkpoint, save_checkpoint

    import torch

    d = tmp_path / "runs"
    d.mkdir()
    src = read_checkpoint(nightly_world.checkpoint)
    shutil.copyfile(nightly_world.checkpoint, d / "ckpt-step000000001.pt")
    # a later checkpoint that has also seen day 12
    from ctrlens.models.checkpoint import load_checkpoint

    m = load_checkpoint(nightly_world.checkpoint)
    with torch.no_grad():
        next(iter(m.parameters())).add_(0.01)
    save_checkpoint(d / "ckpt-step000000002.pt", m, step=src["step"] + 1, days_seen=[*src["days_seen"], day(12)])
    ms = _Models(None, "cpu")
    w = ModelWatch("pal", checkpoint_dir=d)
    assert ms.path_for(w, day(12)).name == "ckpt-step000000001.pt"  # day 12 was served by the older one
    assert ms.path_for(w, day(13)).name == "ckpt-step000000002.pt"
    from ctrlens.errors import InputError

    with pytest.raises(InputError, match="no checkpoint in .* was trained only on days before 2026-01-02"):
        ms.path_for(w, day(1))
