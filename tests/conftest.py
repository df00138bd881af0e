"""Shared test set-up.

* Threads: the suite runs with pytest-xdist on small machines; one torch thread per worker avoids
  oversubscription.
* Shared data: ``../shared/data`` holds small real datasets; tests using it skip with a reason when
  it is absent (a user's machine), never in CI.
* Session-scoped, disk-cached artefacts (a tiny synthetic world, trained reference models) are built
  once per machine-run and shared by xdist workers through a file lock.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"

sys.path.insert(0, str(Path(__file__).parent))

try:  # keep each xdist worker to one thread
    import torch

    torch.set_num_threads(1)
except Exception:  # pragma: no cover
    pass


def require_or_skip(ok: bool, reason: str) -> None:
    """Skip locally when an external part is missing; fail in CI, where it must be there."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        require_or_skip(False, f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


# Area fixtures live beside their tests; import them so every test module can use them.
for _mod in ("store_fixtures", "world_fixtures"):
    try:
        _m = __import__(_mod)
        globals().update({k: v for k, v in vars(_m).items() if not k.startswith("_")})
    except ModuleNotFoundError as _e:
        if _e.name != _mod:
            raise
