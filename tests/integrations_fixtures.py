"""Shared helpers of the torchrec / DeepCTR-Torch integration tests.

The libraries are optional extras (``ctrlens[torchrec]``, ``ctrlens[deepctr]``); scripts/env.sh installs
them, so in CI (CI=true) a missing one fails the test instead of skipping it.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from conftest import require_or_skip


def need(module: str) -> Any:
    """Import ``module`` (e.g. ``"torchrec"``), or skip locally / fail in CI when it is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except ImportError as e:
        require_or_skip(False, f"{module} is not installed ({e}); scripts/env.sh installs the integration extras")


def day_batch(world: Any, day_index: int = 0, rows: int = 512) -> Any:
    """The first ``rows`` rows of a day of ``world`` as one Batch."""
    from ctrlens.data import DailyDataset

    ds = DailyDataset(world.root)
    return ds.load_day(ds.days()[day_index], limit=rows)
