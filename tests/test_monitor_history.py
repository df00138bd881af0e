"""The nightly job's history stays true (issue 17): leases with owners and heartbeats, takeover of a
dead job's lock, provenance of every stored day (a day computed on a reference that changed since is
computed again), reproducible ``--force``, reports written again when missing, no ``runs`` row for a
failed day, and exit 2 with a clear message for bad names, dates, references and database files.

Job tests replay days on copies of the shared snapshot (days 6-10 done by a clean run) and compare
with the shared full database (days 6-19 by a clean run), see tests/monitor_fixtures.py."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor_fixtures import ROOT, NightlyWorld, copy_db, day, nightly_world, run_cli  # noqa: F401
from store_fixtures import _skip_or_fail, pg_bindir, store_url  # noqa: F401

KINDS = ("field_stats", "quality", "neuron_stats", "layer_stats", "embedding_health", "probe", "saliency", "drift", "alert")


def _store(db: Path):
    from ctrlens.store import Store

    return Store(f"sqlite:///{db}")


def _day_frames(db: Path, d: str) -> dict:
    """Every result frame of the (single-version) nightly run of day ``d``."""
    with _store(db) as s:
        r = s.runs(model="pal", days=d, run_kind="nightly")
        r = r[r["status"] == "complete"]
        assert len(r) == 1, r
        return {k: v.frame for k, v in s.read_day(int(r.iloc[0]["version_id"]), d, run_kind="nightly").items()}


def _assert_same_day(db: Path, clean: Path, d: str) -> None:
    import pandas as pd

    got, want = _day_frames(db, d), _day_frames(clean, d)
    assert set(got) == set(want) == set(KINDS), (set(got), set(want))
    for k in KINDS:
        pd.testing.assert_frame_equal(got[k].reset_index(drop=True), want[k].reset_index(drop=True), check_exact=False,
                                      rtol=1e-9, obj=f"{d} {k}")  # fmt: skip


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ------------------------------------------------------------------------------------------------ leases


def test_lease_takeover_of_dead_or_expired_owners(store_url: str, caplog) -> None:
    """A killed job's lock (same host, dead pid) is taken at once, an expired heartbeat from another
    host too, each with a log line; a live owner's lock is not."""
    import socket

    from ctrlens.store import Store

    with Store(store_url, create=True) as s:
        dead = f"{socket.gethostname()}:{_dead_pid()}:12345:deadbeef"
        assert s.acquire("m", "2026-01-01", owner=dead, ttl_s=3600) == dead  # as a killed job leaves it: an hour left
        with caplog.at_level(logging.WARNING, logger="ctrlens.store"):
            tok = s.acquire("m", "2026-01-01", ttl_s=60)
        assert tok is not None and tok != dead
        assert any("took over lock nightly:m:2026-01-01" in r.message and "no longer exists" in r.message for r in caplog.records)
        # another host, heartbeat expired
        assert s.acquire("m", "2026-01-02", owner="far-host:7:1:x", ttl_s=-1)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ctrlens.store"):
            assert s.acquire("m", "2026-01-02", ttl_s=60) is not None
        assert any("heartbeat expired" in r.message and "far-host:7:1:x" in r.message for r in caplog.records)
        # another host, heartbeat fresh: not ours to take
        assert s.acquire("m", "2026-01-03", owner="far-host:8:1:y", ttl_s=3600)
        assert s.acquire("m", "2026-01-03", ttl_s=60) is None
        # a live process on this host (this one): not taken either
        mine = f"{socket.gethostname()}:{os.getpid()}:0:other-job"
        assert s.acquire("m", "2026-01-04", owner=mine, ttl_s=3600)
        assert s.acquire("m", "2026-01-04", ttl_s=60) is None


def test_lease_heartbeat_and_fenced_write(store_url: str) -> None:
    """The heartbeat keeps a lease through work longer than its TTL; a write fenced by a lease that
    was taken over writes nothing."""
    from sqlalchemy import update

    from ctrlens.store import LeaseLost, Store
    from ctrlens.store.models import Lock
    from store_fixtures import make_results

    with Store(store_url, create=True) as s:
        vid = s.register_model("m", "ck", "sch")
        with s.lease("m", "2026-01-01", ttl_s=0.8) as lease:
            time.sleep(2.5)  # three TTLs of work
            assert s.acquire("m", "2026-01-01", owner="far-host:1:1:z", ttl_s=60) is None  # renewed: still held
            assert lease.renewals >= 3 and not lease.lost
            s.write_day(vid, "2026-01-01", "nightly", make_results(0), lease=lease)
        assert s.days(model="m") == ["2026-01-01"]
        with s.lease("m", "2026-01-02", ttl_s=60) as lease:
            with s._write() as conn:  # another job took it over (as after a stall longer than the TTL)
                conn.execute(update(Lock).where(Lock.name == lease.name).values(owner="far-host:2:2:w"))
            with pytest.raises(LeaseLost, match="taken over by far-host:2:2:w"):
                s.write_day(vid, "2026-01-02", "nightly", make_results(1), lease=lease)
        assert s.days(model="m") == ["2026-01-01"]  # nothing of day 2


# ------------------------------------------------------------------------------------------------ the job

@pytest.mark.slow
def test_killed_jobs_lock_is_taken_over_and_later_days_match_a_clean_run(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    import socket

    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob

    cfg = load_config(nightly_world.config(tmp_path, db=nightly_world.snapshot))  # lock_ttl_s: default
    db = tmp_path / "ctrlens.sqlite"
    with _store(db) as s:  # what a job SIGKILLed on day 11 leaves: its lock, an hour of TTL left
        s.acquire("pal", day(11), owner=f"{socket.gethostname()}:{_dead_pid()}:1:killed", ttl_s=3600)
    res = NightlyJob(cfg).run(start=day(11), end=day(12))
    assert [o.status for o in res.outcomes] == ["ok", "ok"], [(o.status, o.error) for o in res.outcomes]
    assert "no longer exists" in res.outcomes[0].took_over
    assert res.exit_code == 1  # day 11's planted incident, nothing partial
    for d in (day(11), day(12)):
        _assert_same_day(db, nightly_world.db, d)


@pytest.mark.slow
def test_stored_days_do_not_depend_on_the_interpreters_hash_seed(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    """Two cron runs of the same days under different ``PYTHONHASHSEED`` store the same rows as the clean
    run (built in another process): nothing stored follows the iteration order of a set of strings
    (an alert's evidence links once did, which made a re-run day differ from its first run)."""
    for seed in ("0", "6"):  # two seeds that iterate {"click", "ctr"} in opposite orders
        cfg = nightly_world.config(tmp_path / seed, db=nightly_world.snapshot)
        r = run_cli("nightly", "--config", str(cfg), "--from", day(11), "--to", day(12), "--quiet",
                    env={"PYTHONHASHSEED": seed})  # fmt: skip
        assert r.returncode == 1, r.stderr  # day 11's planted incident
        for d in (day(11), day(12)):
            _assert_same_day(tmp_path / seed / "ctrlens.sqlite", nightly_world.db, d)


@pytest.mark.slow
def test_heartbeat_keeps_the_lease_while_a_day_computes(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob

    cfg = load_config(nightly_world.config(tmp_path, db=nightly_world.snapshot, lock_ttl_s=1))
    seen: list = []

    def progress(event: str, **info) -> None:
        if event == "step" and info.get("step") == "probes" and not seen:
            time.sleep(3.0)  # a day that takes three times the TTL
            with _store(tmp_path / "ctrlens.sqlite") as other:
                seen.append(other.acquire("pal", day(11), owner="far-host:9:9:second-job", ttl_s=60))

    res = NightlyJob(cfg, progress=progress).run(day=day(11))
    assert seen == [None]  # the second job could not take it
    assert res.outcomes[0].status == "ok", res.outcomes[0].error


@pytest.mark.slow
def test_force_over_a_range_reproduces_a_clean_run(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    """Day 6 is the checkpoint's first day: its checkpoint checks (overfitting, neuron fluctuation)
    must come back when it is forced while later days are stored."""
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob

    cfg = load_config(nightly_world.config(tmp_path, db=nightly_world.snapshot))
    before = _day_frames(tmp_path / "ctrlens.sqlite", day(6))["drift"]
    assert (before["subject_kind"] == "checkpoint").any()
    res = NightlyJob(cfg).run(start=day(6), end=day(7), force=True)
    assert [o.status for o in res.outcomes] == ["ok", "ok"]
    for d in (day(6), day(7)):
        _assert_same_day(tmp_path / "ctrlens.sqlite", nightly_world.snapshot, d)


@pytest.mark.slow
def test_day_whose_reference_changed_is_computed_again(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    """Day 12 computed before day 11 lacks it in its reference: the next run over both computes 12
    again (its provenance no longer matches) and ends where a clean run ends."""
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob

    cfg = load_config(nightly_world.config(tmp_path, db=nightly_world.snapshot))
    first = NightlyJob(cfg).run(day=day(12))
    assert first.outcomes[0].status == "ok"
    res = NightlyJob(cfg).run(start=day(11), end=day(12))
    o11, o12 = res.outcomes
    assert o11.status == "ok" and o12.status == "ok", [(o.status, o.error) for o in res.outcomes]
    assert "changed" in o12.recomputed and day(11) in o12.recomputed
    for d in (day(11), day(12)):
        _assert_same_day(tmp_path / "ctrlens.sqlite", nightly_world.db, d)
    again = NightlyJob(cfg).run(start=day(11), end=day(12))  # now true: skipped
    assert [o.status for o in again.outcomes] == ["skipped", "skipped"]


@pytest.mark.slow
def test_missing_report_is_written_again(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob

    cfg = load_config(nightly_world.config(tmp_path, db=nightly_world.snapshot, report_dir=str(tmp_path / "reports")))
    res = NightlyJob(cfg).run(day=day(10))  # stored, but its report was never written (job killed after the commit)
    o = res.outcomes[0]
    assert o.status == "skipped"
    files = sorted(Path(p).name for p in o.reports)
    assert files == [f"{day(10)}.html", f"{day(10)}.md"]
    assert "<html" in (tmp_path / "reports" / "pal" / f"{day(10)}.html").read_text()[:200].lower()
    assert NightlyJob(cfg).run(day=day(10)).outcomes[0].reports == []  # present now: not rewritten


@pytest.mark.slow
def test_failed_model_day_leaves_no_runs_row(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob

    data = tmp_path / "data"
    data.mkdir()
    for p in nightly_world.data.iterdir():
        if p.name != f"day={day(12)}":
            (data / p.name).symlink_to(p)
    bad = data / f"day={day(12)}"
    shutil.copytree(nightly_world.data / f"day={day(12)}", bad)
    for f in bad.glob("*.parquet"):
        f.write_bytes(b"PAR1 this is not parquet PAR1")
    cfg = load_config(nightly_world.config(tmp_path / "job", db=nightly_world.snapshot, data=data))
    res = NightlyJob(cfg).run(start=day(12), end=day(12))
    assert res.outcomes[0].status == "failed"
    with _store(tmp_path / "job" / "ctrlens.sqlite") as s:
        assert day(12) not in set(s.runs(model="pal")["day"])


@pytest.mark.slow
def test_empty_fixed_reference_is_refused_before_anything_is_written(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    cfg = nightly_world.config(tmp_path, reference={"kind": "fixed", "days": ["2025-06-01", "2025-06-02"], "min_days": 2})
    r = run_cli("nightly", "--config", str(cfg), "--day", day(11), "--quiet")
    assert r.returncode == 2, r.stderr
    assert "reference.days: 0 of the fixed reference days ['2025-06-01', '2025-06-02'] are in the data" in r.stderr
    assert not (tmp_path / "ctrlens.sqlite").exists()


@pytest.mark.slow
def test_checkpoint_with_a_config_of_the_wrong_type(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    import torch

    ck = torch.load(nightly_world.checkpoint, weights_only=False)
    ck["config"]["mlp"] = "sixty-four"
    torch.save(ck, tmp_path / "bad.pt")
    r = run_cli("neurons", "--checkpoint", str(tmp_path / "bad.pt"), "--data", str(nightly_world.data), "--day", day(11))
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"checkpoint {tmp_path / 'bad.pt'}" in r.stderr and "'mlp': 'sixty-four'" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------------ config


def _write_yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "nightly.yaml"
    p.write_text(text)
    return p


def test_model_names_cannot_leave_report_dir(tmp_path: Path) -> None:
    from ctrlens.monitor.config import ConfigError, parse_config
    from ctrlens.monitor.job import model_slug

    for name in ("../../../etc", "a/b", "..", "x y", ""):
        with pytest.raises(ConfigError, match=r"models\[0\]\.name"):
            parse_config({"db": "x.sqlite", "data": "d", "models": [{"name": name, "checkpoint": "c.pt"}]})
    assert parse_config({"db": "x.sqlite", "data": "d", "models": [{"name": "din-prod.v2_eu", "checkpoint": "c.pt"}]})
    for name in ("../../../etc", "a/b", "..", "/abs"):
        slug = model_slug(name)
        assert "/" not in slug and slug not in ("", ".", "..")


def test_reference_that_can_never_alert_and_impossible_dates(tmp_path: Path, capsys) -> None:
    from ctrlens.cli import main
    from ctrlens.monitor.config import ConfigError, parse_config

    base = {"db": "x.sqlite", "data": "d", "models": [{"name": "m", "checkpoint": "c.pt"}]}
    with pytest.raises(ConfigError, match=r"reference\.min_days: 8 is more than the 7 reference day"):
        parse_config({**base, "reference": {"kind": "trailing", "days": 7, "min_days": 8}})
    with pytest.raises(ConfigError, match=r"reference\.min_days: 3 is more than the 2 reference day"):
        parse_config({**base, "reference": {"kind": "fixed", "days": ["2026-01-01", "2026-01-02"], "min_days": 3}})
    p = _write_yaml(tmp_path, f"db: {tmp_path / 'x.sqlite'}\ndata: {tmp_path}\nreference:\n  kind: fixed\n"
                              "  days: [2026-02-27, 2026-02-30]\n  min_days: 2\nmodels:\n  - {name: m, checkpoint: c.pt}\n")  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(["nightly", "--config", str(p)])
    assert e.value.code == 2
    assert "reference.days: '2026-02-30' is not a day (expected YYYY-MM-DD)" in capsys.readouterr().err
    assert not (tmp_path / "x.sqlite").exists()


# ------------------------------------------------------------------------------------------------ database files


def _cli(capsys, *args: str) -> tuple[int, str]:
    from ctrlens.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def test_damaged_database_files_exit_2(tmp_path: Path, capsys) -> None:
    from ctrlens.dashboard import create_app
    from ctrlens.errors import InputError
    from ctrlens.store import Store

    good = tmp_path / "good.sqlite"
    Store(f"sqlite:///{good}", create=True).close()
    raw = good.read_bytes()
    bad, trunc = tmp_path / "notdb.sqlite", tmp_path / "trunc.sqlite"
    bad.write_bytes(b"this is a text file, not a database" * 20)
    trunc.write_bytes(raw[: len(raw) // 2])
    for f, what in ((bad, "is not a SQLite database"), (trunc, "is damaged (truncated or corrupted)")):
        for cmd in (["db", "info"], ["db", "current"]):
            code, err = _cli(capsys, *cmd, "--db", str(f))
            assert code == 2 and f"database file {f} {what}" in err and "Traceback" not in err, (cmd, err)
        with pytest.raises(InputError, match=re.escape(f"database file {f} {what}")):
            create_app(f"sqlite:///{f}")
        with pytest.raises(InputError, match=re.escape(f"database file {f} {what}")):  # as the nightly job opens it
            Store(f"sqlite:///{f}", create=True)


@pytest.mark.slow
def test_nightly_on_a_damaged_database_exits_2(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    cfg = nightly_world.config(tmp_path, db=nightly_world.snapshot)
    db = tmp_path / "ctrlens.sqlite"
    for p in tmp_path.glob("ctrlens.sqlite-*"):
        p.unlink()
    db.write_bytes(db.read_bytes()[:40_000])
    r = run_cli("nightly", "--config", str(cfg), "--day", day(11), "--quiet")
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"database file {db} is damaged" in r.stderr and "Traceback" not in r.stderr


def _without_dac(code: str) -> subprocess.CompletedProcess:
    """Run python ``code`` as this user without the root override of file permissions."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file permissions cannot be made to bite")
        cmd = [setpriv, "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_read_only_database_file_and_folder(tmp_path: Path) -> None:
    from ctrlens.store import Store

    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "store.sqlite"
    with Store(f"sqlite:///{db}", create=True) as s:
        s.register_model("m", "ck", "sch")
    for p in (db, *folder.glob("store.sqlite-*")):
        p.chmod(0o444)
    folder.chmod(0o555)
    try:
        # the dashboard only reads: it opens the store in a folder it cannot write
        r = _without_dac(f"from ctrlens.dashboard import create_app; from ctrlens.store import Store\n"
                         f"s = Store('sqlite:///{db}'); print(list(s.models()['model']), s.readonly)\n"
                         f"create_app('sqlite:///{db}'); print('dashboard ok')")  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        assert "['m'] True" in r.stdout and "dashboard ok" in r.stdout
        # a writer gets exit 2 and a message naming the file
        r = _without_dac(f"import sys; from ctrlens.cli import main; from ctrlens.store import Store\n"
                         f"try:\n    Store('sqlite:///{db}').register_model('m2', 'a', 'b')\n"
                         f"except Exception as e:\n    print(type(e).__name__, e)")  # fmt: skip
        assert f"StorageError database file {db} is read-only" in r.stdout, (r.stdout, r.stderr[-2000:])
    finally:
        folder.chmod(0o755)


def test_ids_above_int64_exit_2(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ctrlens.synth import generate

    w = generate(tmp_path / "w", days=1, rows_per_day=60, n_users=30, n_items=20, n_categories=4, n_shops=4,
                 importance_rows=100, image_size=8, overwrite=True)  # fmt: skip
    f = next(Path(w.root).glob("day=*/*.parquet"))
    t = pq.read_table(f)
    col = t.column("user_id").to_numpy().astype(np.uint64)
    col[3] = np.uint64(2**63 + 5)
    pq.write_table(t.set_column(t.schema.get_field_index("user_id"), "user_id", pa.array(col, type=pa.uint64())), f)
    d = f.parent.name.split("=", 1)[1]
    for args in (["data", "validate", str(w.root)], ["data", "stats", str(w.root), "--day", d]):
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr[-2000:])
        assert f"{f}: column 'user_id': row 3: id 9223372036854775813 is above the int64 range" in r.stderr, r.stderr


# ------------------------------------------------------------------------------------------------ chaos


@pytest.mark.slow
@pytest.mark.postgres
def test_chaos_small(tmp_path: Path) -> None:
    """A small benchmarks/chaos.py: a 5-day world, no reports, per backend one SIGKILL (SQLite: inside
    the write; PostgreSQL: right after the commit) restarted at once, and one overlapping pair -- each
    must end with the clean run's content hash."""
    if pg_bindir() is None:
        _skip_or_fail("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--days", "5", "--kills", "1", "--pairs", "1",
                        "--points", "store.write_day,job.committed", "--min-kills", "1", "--min-pairs", "1", "--no-reports",
                        "--work", str(tmp_path / "chaos")], capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "identical: 4/4" in r.stdout, r.stdout
    assert out["met"] and out["backends"]["sqlite"]["killed_at"] == ["store.write_day"]
    assert out["backends"]["postgresql"]["killed_at"] == ["job.committed"]
