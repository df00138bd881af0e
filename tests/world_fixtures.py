"""Session fixtures shared across test areas: a tiny synthetic world and reference models trained on it.

Both are cached on disk under ``.tmp/test-cache/`` keyed by a hash of the code that produces them,
and built under a file lock, so the xdist workers of one run (and re-runs on the same checkout)
build each artefact once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".tmp" / "test-cache"

#: the tiny world: 8 days, clean (no incidents); analyses train on days 0-3 and look at 4-7.
TINY_WORLD = dict(days=8, rows_per_day=4_000, seed=3, n_users=2_000, n_items=600, n_categories=20, n_shops=100,
                  new_items_per_day=20, importance_rows=2_000)
TRAIN_DAYS = 4


def _code_hash(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        for p in sorted((ROOT / part).rglob("*.py")):
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def cached_world(name: str = "tiny", **overrides):
    """Generate (once) and return a :class:`ctrlens.synth.SynthWorld`."""
    from ctrlens.synth import SynthWorld, generate

    cfg = {**TINY_WORLD, **overrides}
    key = hashlib.sha256(repr(sorted(cfg.items())).encode()).hexdigest()[:8]
    root = CACHE / f"world-{name}-{key}-{_code_hash('ctrlens/synth')}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if not (root / "ground_truth.json").exists():
            generate(root, overwrite=True, **cfg)
        return SynthWorld.open(root)


def cached_checkpoint(model: str, world, *, days: int = TRAIN_DAYS, epochs: int = 2, **train_kw) -> Path:
    """Train ``model`` (once) on the first ``days`` days of ``world``; return the final checkpoint path."""
    from ctrlens.models.checkpoint import latest_checkpoint
    from ctrlens.train import train

    key = hashlib.sha256(repr((model, str(world.root), days, epochs, sorted(train_kw.items()))).encode()).hexdigest()[:8]
    out = CACHE / f"ckpt-{model}-{key}-{_code_hash('ctrlens/models', 'ctrlens/train', 'reference_models')}"
    with FileLock(str(out) + ".lock"):
        ckpt = latest_checkpoint(out) if out.exists() else None
        if ckpt is None:
            all_days = sorted(p.name.split("=", 1)[1] for p in world.root.glob("day=*"))
            train(model, world.root, all_days[:days], out_dir=out, epochs=epochs, batch_size=512, lr=3e-3, seed=0,
                  **train_kw)
            ckpt = latest_checkpoint(out)
        assert ckpt is not None, f"training {model} wrote no checkpoint in {out}"
        return ckpt


@pytest.fixture(scope="session")
def tiny_world():
    """A clean 8-day synthetic world of 4,000 rows a day (see :data:`TINY_WORLD`)."""
    return cached_world()


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_world):
    """``trained_checkpoint(name) -> Path``: a reference model trained on the tiny world's first 4 days."""
    return lambda name, **kw: cached_checkpoint(name, tiny_world, **kw)
