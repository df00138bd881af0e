"""Shared artefacts of the nightly-job tests: one small synthetic world with eight planted incidents,
PAL trained once on its first days, and the nightly job run once over the rest.

Built once per test session and shared by xdist workers (a file lock in pytest's shared temporary
folder); tests copy the database before writing to it.

World: 20 days x 4000 rows (``2026-01-01`` .. ``2026-01-20``). PAL is trained on days 0-5; the job
runs days 6-19 with a trailing 7-day reference that is warm (5 days) from day 11 on. Incidents, one
per day: see :data:`INCIDENTS`; day 19 is clean. A database snapshot after day 10 (before any
incident) lets tests replay single days.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
START = "2026-01-01"
WORLD = dict(days=20, rows_per_day=4000, seed=11, n_users=2_000, n_items=600, n_categories=20, n_shops=100,
             new_items_per_day=20, importance_rows=2_000, image_size=8)  # fmt: skip
TRAIN_DAYS = 6
#: day index -> (kind, field): what the job must find on that day
INCIDENTS = {
    11: ("stuck_value", "category_id"),
    12: ("shuffled", "price"),
    13: ("missing_spike", "shop_id"),
    14: ("oov_surge", "item_id"),
    15: ("blank_images", "item_image"),
    16: ("distribution_shift", "hour"),
    17: ("ctr_level_shift", None),
    18: ("position_bias_change", None),
}
EXPECTED = {  # day index -> (finding, acceptable subjects)
    11: ("broken_feature", {"category_id"}),
    12: ("broken_feature", {"price"}),
    13: ("broken_feature", {"shop_id"}),
    14: ("oov_surge", {"item_id"}),
    15: ("image_pipeline_broken", {"item_image"}),
    16: ("distribution_shift", {"hour"}),
    17: ("calibration_drift", {"ctr", "click"}),
    18: ("position_bias_change", {"position"}),
}
ROWS = {"neurons": 4000, "probes": 1500, "saliency": 1000}


def day(i: int) -> str:
    return (dt.date.fromisoformat(START) + dt.timedelta(days=i)).isoformat()


@dataclass(frozen=True)
class NightlyWorld:
    """Paths of the shared artefacts (read-only for tests)."""

    root: Path  # the folder holding everything
    data: Path  # the world (dataset root)
    checkpoint: Path  # PAL trained on days 0-5
    db: Path  # nightly run over days 6-19
    snapshot: Path  # the same after day 10 only
    summary: dict  # JobSummary.to_dict() of the full run

    def config(self, folder: Path, *, db: Path | None = None, data: Path | None = None, checkpoint: Path | None = None,
               **extra) -> Path:  # fmt: skip
        """Write a nightly.yaml into ``folder`` (database copied from ``db`` when given) and return it."""
        import yaml

        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "ctrlens.sqlite"
        if db is not None:
            copy_db(db, target)
        cfg = {
            "db": str(target), "data": str(data or self.data), "report_dir": "",
            "reference": {"kind": "trailing", "days": 7, "min_days": 5},
            "models": [{"name": "pal", "checkpoint": str(checkpoint or self.checkpoint), "rows": dict(ROWS)}],
        }  # fmt: skip
        for k, v in extra.items():
            cfg[k] = v
        p = folder / "nightly.yaml"
        p.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return p


def copy_db(src: Path, dst: Path) -> None:
    """Copy a SQLite database with its WAL files (a consistent copy while nobody writes)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        s, d = Path(str(src) + suffix), Path(str(dst) + suffix)
        if s.exists():
            shutil.copyfile(s, d)
        elif d.exists():
            d.unlink()


def run_cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m ctrlens.cli ...`` in a subprocess (exit codes as cron sees them); ``env`` adds variables."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    code = "import sys; from ctrlens.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env)


def _build(root: Path) -> NightlyWorld:
    import torch

    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob
    from ctrlens.synth import Incident, generate
    from ctrlens.train import train

    torch.set_num_threads(1)
    incidents = [Incident(i, k, f) for i, (k, f) in INCIDENTS.items()]
    world = generate(root / "world", incidents=incidents, overwrite=True, **WORLD)
    res = train("pal", world.root, f"{day(0)}:{day(TRAIN_DAYS - 1)}", out_dir=root / "run", epochs=1, batch_size=256,
                lr=3e-3, model_config={"mlp": [64, 32]})  # fmt: skip
    nw = NightlyWorld(root, world.root, Path(res.final_info.path), root / "full" / "ctrlens.sqlite",
                      root / "snapshot" / "ctrlens.sqlite", {})  # fmt: skip
    cfg_path = nw.config(root / "full")
    job = NightlyJob(load_config(cfg_path))
    first = job.run(start=day(TRAIN_DAYS), end=day(10))
    copy_db(nw.db, nw.snapshot)
    rest = job.run(start=day(11), end=day(19))
    summary = {"outcomes": [o.to_dict() for o in first.outcomes + rest.outcomes]}
    (root / "summary.json").write_text(json.dumps(summary, default=str))
    (root / "DONE").write_text("ok")
    return NightlyWorld(nw.root, nw.data, nw.checkpoint, nw.db, nw.snapshot, summary)


def shared_folder(tmp_path_factory) -> Path:
    """This test run's temporary folder common to every xdist worker."""
    base = tmp_path_factory.getbasetemp()
    # xdist workers each get <run>/popen-gwN: their parent is this run's folder, common to all of them
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(shared: Path, name: str, build: Callable[[Path], T]) -> tuple[Path, T | None]:
    """``(shared/name, build(shared/name))`` the first time, ``(shared/name, None)`` once a complete
    build (its ``DONE`` file, which ``build`` writes last) is there. One builder at a time across
    xdist workers (a file lock); an incomplete earlier build is cleared first."""
    root = shared / name
    root.mkdir(exist_ok=True)
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (root / "DONE").exists():
                for p in root.iterdir():
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                return root, build(root)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return root, None


@pytest.fixture(scope="session")
def nightly_world(tmp_path_factory) -> NightlyWorld:
    """The shared world, checkpoint and databases (built once; see the module docstring)."""
    root, built = build_once(shared_folder(tmp_path_factory), "ctrlens-monitor-world", _build)
    if built is not None:
        return built
    summary = json.loads((root / "summary.json").read_text())
    ck = sorted((root / "run").glob("ckpt-step*.pt"))[-1]
    return NightlyWorld(root, root / "world", ck, root / "full" / "ctrlens.sqlite", root / "snapshot" / "ctrlens.sqlite", summary)


def outcome(summary: dict, i: int) -> dict:
    """The full run's outcome of day index ``i``."""
    return next(o for o in summary["outcomes"] if o["day"] == day(i))


def paging(o: dict) -> list[dict]:
    return [f for f in o["findings"] if f["severity"] in ("critical", "warning")]
