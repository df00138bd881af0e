"""Chaos test of the nightly job's history: SIGKILL at random points, restart, overlapping jobs.

On a tiny synthetic world (a planted incident, PAL trained on its first days, a cheap config) and
on each backend (SQLite, and a private PostgreSQL server started as tests/store_fixtures.py does):

1. one **clean** range run on a fresh store: its content hash is the truth;
2. **kills**: a fresh store, a range job SIGKILLed at a random point -- during the compute (after
   the day's analyses, before its write), inside the write (all rows inserted, not committed),
   right after the commit, during the report (between its two files), or after a random delay --
   restarted at once (no waiting for lock expiry) until it completes;
3. **overlapping pairs**: two range jobs started together on a fresh store (the same range, or one
   starting later in it: the second then computes days before the first has written the days
   they depend on).

After each trial the content hash of every results table -- rows keyed by (model, checkpoint,
day, run kind) instead of run ids, timestamps and timings left out, alert states and events
included -- is compared with the clean run's, and every day's report must exist. The job is the
real one (:class:`ctrlens.monitor.job.NightlyJob`) in a forked child process; the fault points are
``CTRLENS_FAULT=<point>:<n>`` (``ctrlens.store.store.fault_point``).

    .venv/bin/python benchmarks/chaos.py                       # 20 kills + 5 pairs per backend
    .venv/bin/python benchmarks/chaos.py --kills 4 --pairs 1 --backends sqlite

Prints ``identical: k/N`` per backend and kind; the last line is one JSON object with the figures,
targets and ``"met"`` (every trial identical, at least 20 kills and 5 pairs per backend).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
POINTS = ("job.computed", "store.write_day", "job.committed", "report.write", "timer")
START = "2026-01-01"
TRAIN_DAYS = 2
WORLD = dict(days=6, rows_per_day=300, seed=5, n_users=200, n_items=80, n_categories=8, n_shops=12, new_items_per_day=4,
             importance_rows=200, image_size=8)  # fmt: skip
ROWS = {"neurons": 300, "probes": 100, "saliency": 50}
#: columns that identify a write rather than its content
SKIP_COLUMNS = {"id", "run_id", "alert_id", "event_id", "model_id", "model_version_id", "host", "ctrlens_version",
                "params_json", "error"}  # fmt: skip


def day(i: int) -> str:
    import datetime as dt

    return (dt.date.fromisoformat(START) + dt.timedelta(days=i)).isoformat()


# ------------------------------------------------------------------------------------- the world


def build_world(root: Path) -> tuple[Path, Path]:
    """(dataset root, checkpoint) of the tiny world: ``WORLD["days"]`` days, a stuck category_id on the last."""
    import torch

    from ctrlens.synth import Incident, generate
    from ctrlens.train import train

    torch.set_num_threads(1)
    last = WORLD["days"] - 1
    w = generate(root / "world", incidents=[Incident(last, "stuck_value", "category_id")], overwrite=True, **WORLD)
    r = train("pal", w.root, f"{day(0)}:{day(TRAIN_DAYS - 1)}", out_dir=root / "run", epochs=1, batch_size=128, lr=3e-3,
              model_config={"mlp": [16, 8]})  # fmt: skip
    return Path(w.root), Path(r.final_info.path)


def _build_child(work: str) -> None:
    data, ck = build_world(Path(work))
    (Path(work) / "world.json").write_text(json.dumps([str(data), str(ck)]))


REPORTS = True  # --no-reports: the small version in the test suite skips them (the slowest step on a tiny world)


def write_config(folder: Path, db: str, data: Path, checkpoint: Path) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"db": db, "data": str(data), "report_dir": str(folder / "reports") if REPORTS else "", "lock_ttl_s": 5, "lock_wait_s": 120,
           "reference": {"kind": "trailing", "days": 3, "min_days": 2},
           "models": [{"name": "pal", "checkpoint": str(checkpoint), "rows": dict(ROWS), "permutation": True}]}  # fmt: skip
    p = folder / "nightly.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


# ------------------------------------------------------------------------------------- jobs


def _child(cfg_path: str, start: str, end: str, fault: str | None) -> None:
    """A nightly job in a forked child (SIGKILLed by its fault point or by the parent)."""
    import logging

    import torch

    logging.disable(logging.WARNING)  # takeover / recompute log lines: expected here
    torch.set_num_threads(1)
    if fault:
        os.environ["CTRLENS_FAULT"] = fault
    else:
        os.environ.pop("CTRLENS_FAULT", None)
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob

    res = NightlyJob(load_config(cfg_path)).run(start=start, end=end)
    os._exit(10 + res.exit_code)  # 10..13: the job's exit code; -9: killed


def start_job(cfg: Path, start: str, end: str, fault: str | None = None) -> Any:
    p = mp.get_context("fork").Process(target=_child, args=(str(cfg), start, end, fault))
    p.start()
    return p


def finish(p: Any, timeout: float = 600) -> int:
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        raise RuntimeError("a nightly job did not finish in time")
    return p.exitcode if p.exitcode < 0 else p.exitcode - 10


# ------------------------------------------------------------------------------------- content hash


def content_hash(url: str) -> tuple[str, dict[str, str]]:
    """A hash of every results table's content (rows keyed by model / checkpoint / day / run kind
    instead of ids; no timestamps, hosts or timings) and the per-table hashes."""
    from sqlalchemy import select

    from ctrlens.store import Store
    from ctrlens.store.models import Base, Model, ModelVersion, Run

    per: dict[str, str] = {}
    with Store(url) as s, s.engine.connect() as conn:
        key_of = {r.id: (r.name, r.checkpoint_hash, r.day.isoformat(), r.run_kind, r.status) for r in conn.execute(
            select(Run.id, Model.name, ModelVersion.checkpoint_hash, Run.day, Run.run_kind, Run.status)
            .join(ModelVersion, ModelVersion.id == Run.model_version_id).join(Model, Model.id == ModelVersion.model_id))}  # fmt: skip
        alert_key = {}
        for t in sorted(Base.metadata.tables.values(), key=lambda t: t.name):
            if t.name in ("locks", "alembic_version"):
                continue
            rows = []
            for r in conn.execute(select(t)):
                m = r._mapping
                if t.name == "alerts":
                    alert_key[m["id"]] = (m["finding"], m["subject"])
                row = []
                for c in t.columns:
                    if c.name in SKIP_COLUMNS or c.name.endswith("_at") or c.name == "at":
                        continue
                    v = m[c.name]
                    if c.name == "meta_json" and v:
                        v = {k: x for k, x in json.loads(v).items() if "second" not in k and "time" not in k}
                    row.append(repr(v) if not isinstance(v, float) else repr(round(v, 12)))
                if "run_id" in m:
                    row.insert(0, repr(key_of.get(m["run_id"])))
                if t.name == "runs":
                    row.insert(0, repr(key_of.get(m["id"])))
                if t.name == "alert_events":
                    row.insert(0, repr(m["alert_id"]))  # resolved to (finding, subject) below
                rows.append(row)
            if t.name == "alert_events":
                rows = [[repr(alert_key.get(int(eval(r[0])))), *r[1:]] for r in rows]  # noqa: S307 - our own repr of an int
            rows.sort()
            per[t.name] = hashlib.sha256("\n".join("|".join(r) for r in rows).encode()).hexdigest()[:16]
    total = hashlib.sha256(json.dumps(per, sort_keys=True).encode()).hexdigest()[:16]
    return total, per


def reports_ok(folder: Path, days: list[str]) -> bool:
    if not REPORTS:
        return True
    d = folder / "reports" / "pal"
    return all((d / f"{x}.{ext}").is_file() and (d / f"{x}.{ext}").stat().st_size > 0 for x in days for ext in ("html", "md"))


# ------------------------------------------------------------------------------------- backends


class Backend:
    """Fresh, already migrated stores: SQLite files copied from a template, PostgreSQL databases
    created from a template database."""

    def __init__(self, name: str, work: Path):
        self.name, self.work, self.n = name, work, 0
        self.server = None
        if name == "sqlite":
            self.template = work / "template.sqlite"
            from ctrlens.store import Store

            Store(f"sqlite:///{self.template}", create=True).close()
        else:
            sys.path.insert(0, str(ROOT / "tests"))
            from store_fixtures import _PgServer, pg_bindir  # the tests' private server

            bindir = pg_bindir()
            if bindir is None:
                raise SystemExit("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin)")
            self.server = _PgServer(bindir)
            self.admin = self.server.start()
            self._sql("CREATE DATABASE chaos_template")
            from ctrlens.store import Store
            from ctrlens.store.engine import normalize_url

            self.base = normalize_url(self.admin)
            Store(self._url("chaos_template"), create=True).close()

    def _url(self, db: str) -> str:
        return self.base.set(database=db).render_as_string(hide_password=False)

    def _sql(self, sql: str) -> None:
        import psycopg

        from ctrlens.store.engine import normalize_url

        u = normalize_url(self.admin)
        with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname="postgres", autocommit=True) as c:
            c.execute(sql)

    def fresh(self) -> str:
        self.n += 1
        if self.name == "sqlite":
            p = self.work / f"store-{self.n}.sqlite"
            shutil.copyfile(self.template, p)
            return f"sqlite:///{p}"
        self._sql(f"CREATE DATABASE chaos_{self.n} TEMPLATE chaos_template")
        return self._url(f"chaos_{self.n}")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


# ------------------------------------------------------------------------------------- trials


def run_backend(name: str, work: Path, data: Path, ck: Path, n_kills: int, n_pairs: int, rng: random.Random,
                say: Callable[[str], None], points: tuple[str, ...] = POINTS, offset: int = 0) -> dict[str, Any]:  # fmt: skip
    be = Backend(name, work / name)
    days = [day(i) for i in range(TRAIN_DAYS, WORLD["days"])]
    first, last = days[0], days[-1]
    try:
        folder = work / name / "clean"
        cfg = write_config(folder, be.fresh(), data, ck)
        t0 = time.perf_counter()
        rc = finish(start_job(cfg, first, last))
        t_clean = time.perf_counter() - t0
        truth, truth_per = content_hash(_db(cfg))
        say(f"[{name}] clean run: exit {rc}, {t_clean:.1f} s, content {truth}")
        assert rc in (0, 1), rc
        kills = []
        for i in range(n_kills):
            point = points[(i + offset) % len(points)]
            folder = work / name / f"kill-{i}"
            cfg = write_config(folder, be.fresh(), data, ck)
            if point == "timer":
                p = start_job(cfg, first, last)
                time.sleep(rng.uniform(0.2, max(0.3, t_clean)))
                if p.is_alive():
                    os.kill(p.pid, signal.SIGKILL)
                killed = finish(p) == -signal.SIGKILL
                where = "timer"
            else:
                n = rng.randint(1, len(days))
                killed = finish(start_job(cfg, first, last, f"{point}:{n}")) == -signal.SIGKILL
                where = f"{point}#{n}"
            rc2 = finish(start_job(cfg, first, last))  # restart at once: the dead job's lease is taken over
            h, per = content_hash(_db(cfg))
            same = h == truth and reports_ok(folder, days) and rc2 in (0, 1)
            diff = [t for t in per if per[t] != truth_per.get(t)]
            kills.append({"point": where, "killed": killed, "restart_exit": rc2, "identical": same, "differs": diff})
            say(f"[{name}] kill {i + 1}/{n_kills} at {where}: killed={killed} restart exit {rc2} -> "
                f"{'identical' if same else 'DIFFERENT ' + str(diff)}")  # fmt: skip
        pairs = []
        for i in range(n_pairs):
            folder = work / name / f"pair-{i}"
            cfg = write_config(folder, be.fresh(), data, ck)
            second = first if i % 2 == 0 else days[rng.randint(1, len(days) - 2)]  # same range / a later start
            a, b = start_job(cfg, first, last), start_job(cfg, second, last)
            ra, rb = finish(a), finish(b)
            # exit 3 is allowed (not required): a job that computed a day while the other still held an
            # earlier one says so; the other job, behind it, then computes that day again
            h, per = content_hash(_db(cfg))
            same = h == truth and reports_ok(folder, days) and ra in (0, 1, 3) and rb in (0, 1, 3)
            diff = [t for t in per if per[t] != truth_per.get(t)]
            pairs.append({"ranges": [[first, last], [second, last]], "exits": [ra, rb], "identical": same, "differs": diff})
            say(f"[{name}] pair {i + 1}/{n_pairs} {first}..{last} + {second}..{last}: exits {ra}, {rb} -> "
                f"{'identical' if same else 'DIFFERENT ' + str(diff)}")  # fmt: skip
    finally:
        be.close()
    k_same = sum(k["identical"] for k in kills)
    p_same = sum(p["identical"] for p in pairs)
    say(f"[{name}] kills identical: {k_same}/{len(kills)}")
    say(f"[{name}] overlapping pairs identical: {p_same}/{len(pairs)}")
    return {"clean_s": round(t_clean, 2), "kills": len(kills), "kills_identical": k_same, "pairs": len(pairs),
            "pairs_identical": p_same, "killed_at": sorted({k["point"].split("#")[0] for k in kills if k["killed"]}),
            "failures": [k for k in kills if not k["identical"]] + [p for p in pairs if not p["identical"]]}  # fmt: skip


def _db(cfg: Path) -> str:
    import yaml

    return yaml.safe_load(cfg.read_text())["db"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="killed-and-restarted runs per backend")
    ap.add_argument("--pairs", type=int, default=5, help="overlapping job pairs per backend")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--days", type=int, default=WORLD["days"], help="days of the tiny world (the first 2 train the model)")
    ap.add_argument("--points", default=",".join(POINTS), help=f"kill points, in turn (of {', '.join(POINTS)})")
    ap.add_argument("--no-reports", action="store_true", help="no daily reports (and no report kill point)")
    ap.add_argument("--min-kills", type=int, default=20, help="kills per backend the target asks for")
    ap.add_argument("--min-pairs", type=int, default=5, help="overlapping pairs per backend the target asks for")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    global REPORTS
    REPORTS = not args.no_reports
    WORLD["days"] = args.days
    points = tuple(x.strip() for x in args.points.split(",") if x.strip())
    unknown = set(points) - set(POINTS) | ({"report.write"} & set(points) if args.no_reports else set())
    if unknown or args.days < TRAIN_DAYS + 2:
        raise SystemExit(f"--points: unknown {sorted(unknown)}" if unknown else f"--days: at least {TRAIN_DAYS + 2}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="ctrlens-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    say = lambda s: print(s, flush=True)  # noqa: E731
    # imports once, here; every job runs in a forked child of this process, which never runs torch
    # itself (a parent's OpenMP threads do not survive fork) -- so the world is built in a child too
    import ctrlens.monitor.compute  # noqa: F401
    import ctrlens.monitor.job  # noqa: F401

    try:
        p = mp.get_context("fork").Process(target=_build_child, args=(str(work),))
        p.start()
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"building the tiny world failed (exit {p.exitcode})")
        data, ck = (Path(x) for x in json.loads((work / "world.json").read_text()))
        say(f"tiny world: {WORLD['days']} days x {WORLD['rows_per_day']} rows, PAL trained on {TRAIN_DAYS} days "
            f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip
        out: dict[str, Any] = {}
        for j, b in enumerate([x.strip() for x in args.backends.split(",") if x.strip()]):
            out[b] = run_backend(b, work, data, ck, args.kills, args.pairs, rng, say, points, offset=j)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for b, r in out.items():
        print(f"identical ({b}): {r['kills_identical'] + r['pairs_identical']}/{r['kills'] + r['pairs']}")
    n = sum(r["kills"] + r["pairs"] for r in out.values())
    k = sum(r["kills_identical"] + r["pairs_identical"] for r in out.values())
    print(f"identical: {k}/{n}")
    met = bool(out) and all(r["kills_identical"] == r["kills"] >= args.min_kills and r["pairs_identical"] == r["pairs"] >= args.min_pairs
                            for r in out.values())  # fmt: skip
    summary = {"identical": k, "trials": n, "backends": {b: {x: v for x, v in r.items() if x != "failures"} for b, r in out.items()},
               "failures": {b: r["failures"] for b, r in out.items() if r["failures"]},
               "targets": {"kills_per_backend": args.min_kills, "pairs_per_backend": args.min_pairs, "identical": "all"},
               "seconds": round(time.perf_counter() - t0, 1),
               "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "met": met}  # fmt: skip
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
