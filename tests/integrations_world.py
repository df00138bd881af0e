"""The shared artefact of the integration end-to-end tests: a small synthetic world with a stuck feature,
torchrec's DLRM, DeepCTR-Torch's DIN and DeepFM (trained a little by their own loops, saved as their own
state_dicts) and a reference model, all watched by ``ctrlens nightly`` from one YAML.

World: 10 days x 2,500 rows from ``2026-01-01``; ``category_id`` is stuck on day 9. Models train on days
0-2; the job runs days 3-9 with a trailing 5-day reference, warm (4 days) from day 7.

Built once (monitor_fixtures.build_once: a file lock, so xdist workers share it) under ``.tmp/test-cache``,
keyed by the code it depends on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor_fixtures import build_once, day  # every test world starts on 2026-01-01
from world_fixtures import CACHE, ROOT, _code_hash

WORLD = dict(days=10, rows_per_day=2_500, seed=5, n_users=1_000, n_items=300, n_categories=20, n_shops=60,
             new_items_per_day=10, importance_rows=1_000, image_size=8)  # fmt: skip
STUCK_DAY, STUCK_FIELD = 9, "category_id"
TRAIN_DAYS = 3
OWN = ("dlrm", "din", "deepfm")
REFERENCE = "reference-base"
ROWS = {"neurons": 2500, "probes": 1000, "saliency": 500}
MODELS_PY = Path(__file__).with_name("integrations_models.py")


@dataclass(frozen=True)
class IntegrationWorld:
    root: Path
    data: Path
    config: Path  # the nightly YAML
    db: Path
    summary: dict  # `ctrlens nightly --json` output


def run_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    code = "import sys; from ctrlens.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env)


def write_config(root: Path, data: Path, checkpoints: dict[str, Path], db: Path) -> Path:
    import yaml

    models = [{"name": k, "loader": f"{MODELS_PY}:load_{k}", "checkpoint": str(checkpoints[k]), "rows": dict(ROWS)} for k in OWN]
    models.append({"name": REFERENCE, "checkpoint": str(checkpoints[REFERENCE]), "rows": dict(ROWS)})
    cfg = {"db": str(db), "data": str(data), "report_dir": "", "reference": {"kind": "trailing", "days": 5, "min_days": 4},
           "models": models}  # fmt: skip
    p = root / "nightly.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


def _build(root: Path) -> IntegrationWorld:
    import torch

    from ctrlens.synth import Incident, generate
    from ctrlens.train import train

    sys.path.insert(0, str(MODELS_PY.parent))
    from integrations_models import train_and_save

    torch.set_num_threads(1)
    world = generate(root / "world", incidents=[Incident(STUCK_DAY, "stuck_value", STUCK_FIELD)], overwrite=True, **WORLD)
    days = [day(i) for i in range(TRAIN_DAYS)]
    ck = {k: train_and_save(k, world.root, days, root / "models" / f"{k}.pt") for k in OWN}
    res = train("base", world.root, f"{days[0]}:{days[-1]}", out_dir=root / "base", epochs=2, batch_size=256, lr=3e-3,
                model_config={"mlp": [32, 16]})  # fmt: skip
    ck[REFERENCE] = Path(res.final_info.path)
    cfg = write_config(root, world.root, ck, root / "ctrlens.sqlite")
    r = run_cli("nightly", "--config", str(cfg), "--from", day(TRAIN_DAYS), "--to", day(9), "--json", "--quiet")
    if r.returncode not in (0, 1):
        raise RuntimeError(f"ctrlens nightly failed ({r.returncode}):\n{r.stderr[-4000:]}")
    summary = json.loads(r.stdout)
    (root / "summary.json").write_text(json.dumps(summary))
    (root / "DONE").write_text("ok")
    return IntegrationWorld(root, world.root, cfg, root / "ctrlens.sqlite", summary)


@pytest.fixture(scope="session")
def integration_world() -> IntegrationWorld:
    """The world, models, nightly YAML and filled SQLite store (see the module docstring)."""
    key = _code_hash("ctrlens", "reference_models") + "-" + __import__("hashlib").sha256(
        MODELS_PY.read_bytes() + Path(__file__).read_bytes()).hexdigest()[:8]  # fmt: skip
    CACHE.mkdir(parents=True, exist_ok=True)
    root, built = build_once(CACHE, f"integrations-{key}", _build)
    if built is not None:
        return built
    return IntegrationWorld(root, root / "world", root / "nightly.yaml", root / "ctrlens.sqlite",
                            json.loads((root / "summary.json").read_text()))  # fmt: skip
