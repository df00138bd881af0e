"""A fleet of models in one nightly invocation: worker processes give the same store as one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctrlens.errors import InputError
from ctrlens.monitor import load_config
from ctrlens.monitor.fleet import run_fleet
from ctrlens.store import Store
from monitor_fixtures import NightlyWorld, day, nightly_world, run_cli  # noqa: F401

ROWS = {"neurons": 800, "probes": 400, "saliency": 200}
KINDS = {
    "quality": ["auc", "gauc", "logloss", "mean_pred"],
    "field_stats": ["rows", "coverage", "mean", "cardinality"],
    "saliency": ["mean", "share"],
    "layer_stats": ["dead_fraction", "mean_abs"],
}


MODELS = ["pal", "pal-b"]  # "pal" has its reference days in the snapshot, "pal-b" starts afresh


def fleet_config(nw: NightlyWorld, folder: Path) -> Path:
    """Watches of the world's checkpoint under different names (independent models)."""
    m = [{"name": name, "checkpoint": str(nw.checkpoint), "rows": dict(ROWS)} for name in MODELS]
    return nw.config(folder, db=nw.snapshot, models=m)


def stored(db: Path, models: list[str], days: list[str]) -> dict[str, pd.DataFrame]:
    s = Store(f"sqlite:///{db}")
    try:
        out = {}
        for kind, stats in KINDS.items():
            f = pd.concat([s.series(kind, stats, model=m, days=days, run_kind="nightly") for m in models], ignore_index=True)
            keys = [c for c in f.columns if c not in stats and c not in ("version_id", "run_id", "computed_at")]
            out[kind] = f.drop(columns=[c for c in ("run_id", "computed_at") if c in f.columns]).sort_values(keys).reset_index(drop=True)
        return out
    finally:
        s.close()


def test_two_workers_store_what_one_process_stores(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    days = [day(11), day(12)]  # incidents: "pal" (warm reference) opens alerts, exit code 1
    seq_cfg = fleet_config(nightly_world, tmp_path / "seq")
    seq = run_fleet(load_config(seq_cfg), workers=1, start=days[0], end=days[1])
    par_cfg = fleet_config(nightly_world, tmp_path / "par")
    r = run_cli("nightly", "--config", str(par_cfg), "--from", days[0], "--to", days[1], "--workers", "2", "--json", "--quiet")
    par = json.loads(r.stdout)
    assert r.returncode == par["exit_code"] == seq.exit_code == 1, r.stderr[-2000:]
    # one summary: every model-day once, ordered by day then model, as the sequential job orders them
    key = lambda o: (o["model"], o["day"], o["status"], o["alerts"], len(o["new_alerts"]))  # noqa: E731
    assert [key(o) for o in par["outcomes"]] == [key(o.to_dict()) for o in seq.outcomes]
    assert len(par["outcomes"]) == 4 and all(o["status"] == "ok" for o in par["outcomes"])
    a = stored(tmp_path / "seq" / "ctrlens.sqlite", MODELS, days)
    b = stored(tmp_path / "par" / "ctrlens.sqlite", MODELS, days)
    for kind in KINDS:
        assert len(a[kind]) > 0 and len(a[kind]) == len(b[kind]), kind
        for c in KINDS[kind]:
            x, y = a[kind][c].to_numpy(dtype=float), b[kind][c].to_numpy(dtype=float)
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=f"{kind}.{c}")


def test_workers_check_input_first(nightly_world: NightlyWorld, tmp_path: Path) -> None:
    cfg = load_config(fleet_config(nightly_world, tmp_path / "bad"))
    with pytest.raises(InputError, match="--workers must be >= 1"):
        run_fleet(cfg, workers=0)
    with pytest.raises(InputError, match="not a day"):
        run_fleet(cfg, workers=2, day="2026-13-40")
