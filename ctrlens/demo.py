"""The main job on the embedded default, end to end (what ``./demo.sh`` / ``ctrlens demo`` runs).

1. generate a synthetic world of ``days`` days with planted incidents (:mod:`ctrlens.synth`);
2. train the reference models on the first ``train_days`` days (DDP over all GPUs when there are
   several, one process otherwise) (:mod:`ctrlens.train`);
3. run the nightly job for every following day into SQLite (:mod:`ctrlens.monitor`): statistics,
   probes, saliency, drift tests, diagnosis, daily reports;
4. print what was found against what was planted, and serve the dashboard on 127.0.0.1.

Every step is skipped when its output is already there, so a re-run goes straight to the dashboard
(``--fresh`` starts over).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from ctrlens.errors import InputError

#: incidents planted by default: (day index, kind, field). Each is one the nightly job should name.
DEFAULT_INCIDENTS: tuple[str, ...] = (
    "14:stuck_value:category_id",
    "19:oov_surge:item_id",
    "24:ctr_level_shift",
)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. The defaults run in a few minutes on a 2-core CPU machine."""

    out: Path = Path("demo-out")
    days: int = 30
    rows_per_day: int = 20_000
    train_days: int = 7
    models: tuple[str, ...] = ("din",)
    incidents: tuple[str, ...] = DEFAULT_INCIDENTS
    seed: int = 1
    epochs: int = 2
    device: str = "cpu"
    nproc: int | None = None  # None: one process per GPU when several, else 1
    rows_neurons: int = 8_000
    rows_probes: int = 6_000
    rows_saliency: int = 2_000
    n_users: int | None = None  # world size options (None: the generator's defaults)
    n_items: int | None = None


@dataclass
class DemoResult:
    out: Path
    db_url: str
    world: Path
    checkpoints: dict[str, Path]
    nightly: dict = field(default_factory=dict)
    planted: list[dict] = field(default_factory=list)
    found: list[dict] = field(default_factory=list)

    @property
    def detected(self) -> list[tuple[dict, dict | None]]:
        """Each planted incident with the first alert on its day or the next about its field (or None)."""
        out = []
        for inc in self.planted:
            d0 = dt.date.fromisoformat(inc["date"])
            days = {d0.isoformat(), (d0 + dt.timedelta(days=1)).isoformat()}
            hits = [a for a in self.found if a["day"] in days and (inc.get("field") is None or a["subject"] == inc["field"])]
            out.append((inc, hits[0] if hits else None))
        return out


def _log(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]==>[/] {msg}")


def run_demo(cfg: DemoConfig, *, fresh: bool = False, log: Callable[[str], None] = _log) -> DemoResult:
    """Run steps 1-3 (everything but serving); see the module docstring."""
    import torch

    from ctrlens.models.checkpoint import latest_checkpoint
    from ctrlens.monitor.config import load_config
    from ctrlens.monitor.job import run_nightly
    from ctrlens.store import Store
    from ctrlens.synth import SynthWorld, generate
    from ctrlens.train import train

    if cfg.train_days < 2 or cfg.days < cfg.train_days + 3:
        raise InputError(f"demo: need days >= train_days + 3 and train_days >= 2 (got days={cfg.days}, "
                         f"train_days={cfg.train_days})")
    out = cfg.out.resolve()
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    world_dir = out / "world"

    # 1. the world
    if (world_dir / "ground_truth.json").exists():
        world = SynthWorld.open(world_dir)
        log(f"synthetic world already at {world_dir} ({len(world.days)} days)")
    else:
        log(f"generating a synthetic world: {cfg.days} days x {cfg.rows_per_day:,} impressions, incidents "
            f"{', '.join(cfg.incidents) or 'none'}")
        sizes = {k: v for k, v in (("n_users", cfg.n_users), ("n_items", cfg.n_items)) if v is not None}
        world = generate(world_dir, days=cfg.days, rows_per_day=cfg.rows_per_day, seed=cfg.seed,
                         incidents=cfg.incidents, overwrite=True, **sizes)
    days = list(world.days)
    train_days, watch_days = days[: cfg.train_days], days[cfg.train_days:]

    # 2. training
    nproc = cfg.nproc
    if nproc is None:
        nproc = torch.cuda.device_count() if cfg.device == "cuda" and torch.cuda.device_count() > 1 else 1
    ckpts: dict[str, Path] = {}
    for name in cfg.models:
        run_dir = out / "checkpoints" / name
        ckpt = latest_checkpoint(run_dir) if run_dir.exists() else None
        if ckpt is None:
            log(f"training {name} on {train_days[0]}..{train_days[-1]} ({'DDP x' + str(nproc) if nproc > 1 else '1 process'}, "
                f"{cfg.device})")
            train(name, world_dir, train_days, out_dir=run_dir, epochs=cfg.epochs, batch_size=1024, lr=2e-3,
                  seed=cfg.seed, device=cfg.device, nproc=nproc, show_progress=True,
                  checkpoint_every=max(1, cfg.rows_per_day * cfg.train_days // 1024 // 2))
            ckpt = latest_checkpoint(run_dir)
        else:
            log(f"{name}: using {ckpt}")
        assert ckpt is not None
        ckpts[name] = ckpt

    # 3. the nightly job over the days after training
    db_path = out / "ctrlens.sqlite"
    db_url = f"sqlite:///{db_path}"
    conf = {
        "db": db_url,
        "data": str(world_dir),
        "reference": {"kind": "trailing", "days": 7},
        "report_dir": str(out / "reports"),
        "device": cfg.device,
        "models": [
            {"name": name, "checkpoint": str(ckpts[name]),
             "rows": {"neurons": cfg.rows_neurons, "probes": cfg.rows_probes, "saliency": cfg.rows_saliency}}
            for name in cfg.models
        ],
    }
    conf_path = out / "nightly.yaml"
    conf_path.write_text(yaml.safe_dump(conf, sort_keys=False))
    log(f"nightly job over {watch_days[0]}..{watch_days[-1]} into {db_url} (config: {conf_path})")
    summary = run_nightly(load_config(conf_path), start=watch_days[0], end=watch_days[-1])

    res = DemoResult(out=out, db_url=db_url, world=world_dir, checkpoints=ckpts, nightly=summary.to_dict())
    gt = json.loads((world_dir / "ground_truth.json").read_text())
    for inc in gt.get("incidents", []):
        res.planted.append({"date": days[int(inc["day"])] if isinstance(inc["day"], int) else inc["day"],
                            "kind": inc["kind"], "field": inc.get("field")})
    with Store(db_url) as store:
        alerts = store.alerts()
    for r in alerts.to_dict("records"):
        res.found.append({"id": r.get("alert_id"), "day": str(r.get("day"))[:10], "finding": r.get("finding"),
                          "subject": r.get("subject"), "severity": r.get("severity"), "title": r.get("title"),
                          "model": r.get("model")})
    return res


def print_summary(res: DemoResult, *, url: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title="Planted incidents and what ctrlens said")
    for c in ("day", "planted", "field", "first alert on its day or the next"):
        t.add_column(c)
    for inc, hit in res.detected:
        t.add_row(inc["date"], inc["kind"], str(inc.get("field") or "-"),
                  f"[green]{hit['finding']}[/] on {hit['subject']} ({hit['severity']})" if hit else "[red]not alerted[/]")
    con.print(t)
    n_alerts = len(res.found)
    con.print(f"{n_alerts} alert(s) in {res.db_url}; daily reports in {res.out / 'reports'}")
    if url:
        con.print(f"\n[bold]Dashboard:[/] {url}\n  Overview: the health matrix shows the incident days; open Alerts, click one "
                  "to see its evidence and follow its links to Features / Neurons / Probes.")
