"""Shared artefacts of the model-axis tests: a small *clean* synthetic world served by a checkpoint
retrained every day, as production CTR models are.

World: 12 days x 3000 rows (``2026-01-01`` .. ``2026-01-12``), no incident. PAL is trained on days
0-3, then warm-started (``init_from``) on each following day, one epoch: the checkpoint that serves
day ``k`` (k >= 4) has seen days 0 .. k-1. All checkpoints sit in one ``checkpoint_dir``; the nightly
job picks, per day, the one trained only on earlier days, so **every day is served by a new
checkpoint**. The job runs days 4-11 (trailing 7-day reference, warm with 3 days from day 7 on). A
database snapshot after day 9 lets tests deploy another checkpoint on day 10.

Built once per test session and shared by xdist workers (a file lock, like monitor_fixtures).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor_fixtures import build_once, copy_db, day, shared_folder  # every test world starts on 2026-01-01

WORLD = dict(days=12, rows_per_day=3000, seed=5, n_users=1_500, n_items=400, n_categories=16, n_shops=60,
             new_items_per_day=10, importance_rows=1_000, image_size=8)  # fmt: skip
FIRST_TRAIN_DAYS = 4
RECIPE = dict(epochs=1, batch_size=256, lr=3e-3, model_config={"mlp": [64, 32]})
ROWS = {"neurons": 3000, "probes": 1200, "saliency": 800}


@dataclass(frozen=True)
class RetrainWorld:
    root: Path
    data: Path
    ckpt_dir: Path  # every daily checkpoint
    db: Path  # nightly run over days 4-11
    snapshot: Path  # the same after day 9
    summary: dict

    def checkpoint_for(self, i: int) -> Path:
        """The daily checkpoint that serves day ``i`` (trained on days 0 .. i-1)."""
        serves = json.loads((self.root / "serves.json").read_text())
        return self.ckpt_dir / serves[day(i)]

    def config(self, folder: Path, *, db: Path | None = None, checkpoint: Path | None = None,
               checkpoint_dir: Path | None = None, **extra) -> Path:  # fmt: skip
        import yaml

        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "ctrlens.sqlite"
        if db is not None:
            copy_db(db, target)
        m = {"name": "pal", "rows": dict(ROWS)}
        if checkpoint is not None:
            m["checkpoint"] = str(checkpoint)
        else:
            m["checkpoint_dir"] = str(checkpoint_dir or self.ckpt_dir)
        cfg = {"db": str(target), "data": str(self.data), "report_dir": "",
               "reference": {"kind": "trailing", "days": 7, "min_days": 3}, "models": [m], **extra}  # fmt: skip
        p = folder / "nightly.yaml"
        p.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return p


def _build(root: Path) -> RetrainWorld:
    import torch

    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob
    from ctrlens.synth import generate
    from ctrlens.train import train

    torch.set_num_threads(1)
    world = generate(root / "world", overwrite=True, **WORLD)
    ck_dir = root / "ckpts"
    ck_dir.mkdir()
    r = train("pal", world.root, f"{day(0)}:{day(FIRST_TRAIN_DAYS - 1)}", out_dir=root / "t0", **RECIPE)
    prev = Path(r.final_info.path)
    shutil.copyfile(prev, ck_dir / prev.name)  # names keep their step: ckpt-step<N>.pt, N growing
    serves = {day(FIRST_TRAIN_DAYS): prev.name}
    for k in range(FIRST_TRAIN_DAYS, WORLD["days"] - 1):
        r = train("pal", world.root, day(k), out_dir=root / f"t{k}", init_from=prev, **RECIPE)
        prev = Path(r.final_info.path)
        shutil.copyfile(prev, ck_dir / prev.name)
        serves[day(k + 1)] = prev.name
    (root / "serves.json").write_text(json.dumps(serves))
    nw = RetrainWorld(root, world.root, ck_dir, root / "full" / "ctrlens.sqlite", root / "snapshot" / "ctrlens.sqlite", {})
    job = NightlyJob(load_config(nw.config(root / "full")))
    first = job.run(start=day(FIRST_TRAIN_DAYS), end=day(9))
    copy_db(nw.db, nw.snapshot)
    rest = job.run(start=day(10), end=day(WORLD["days"] - 1))
    summary = {"outcomes": [o.to_dict() for o in first.outcomes + rest.outcomes]}
    (root / "summary.json").write_text(json.dumps(summary, default=str))
    (root / "DONE").write_text("ok")
    return RetrainWorld(nw.root, nw.data, nw.ckpt_dir, nw.db, nw.snapshot, summary)


def build_retrain_world(shared: Path) -> RetrainWorld:
    root, built = build_once(shared, "ctrlens-retrain-world", _build)
    if built is not None:
        return built
    summary = json.loads((root / "summary.json").read_text())
    return RetrainWorld(root, root / "world", root / "ckpts", root / "full" / "ctrlens.sqlite",
                        root / "snapshot" / "ctrlens.sqlite", summary)  # fmt: skip


@pytest.fixture(scope="session")
def retrain_world(tmp_path_factory) -> RetrainWorld:
    """The shared daily-retrained world (built once; see the module docstring)."""
    return build_retrain_world(shared_folder(tmp_path_factory))


def outcome(summary: dict, i: int) -> dict:
    return next(o for o in summary["outcomes"] if o["day"] == day(i))


def paging(o: dict) -> list[dict]:
    return [f for f in o["findings"] if f["severity"] in ("critical", "warning")]
