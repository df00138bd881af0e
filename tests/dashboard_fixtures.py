"""Dashboard test fixtures: SQLite stores filled through the store with a fabricated history.

The browser tests (tests/test_dashboard_browser.py) run on the store the real nightly job wrote
(tests/monitor_fixtures.py). This fabricated history is kept for the callback-level tests, which need
shapes one small nightly run cannot produce (a multi-head ESMM, dead units on a new checkpoint,
probe decay runs, several models), and for the speed benchmark's year of 5 models.

The history (``dashboard_sample``) has two models (``din`` with one head, ``esmm`` with
three), a new checkpoint every 5 days, and on ``din``: a broken field (``shop_id``, day 6), dead
units in ``mlp.1`` on the checkpoint of day 10, and an OOV surge in ``item_id`` (day 8) -- with the
alerts the nightly job emits for them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dashboard_sample import Incident, SampleSpec

SPEC = SampleSpec(
    models=("din", "esmm"), days=12, retrain_every=5, seed=7,
    incidents=(Incident(6, "broken_feature", "shop_id"), Incident(8, "oov_surge", "item_id"), Incident(10, "dead_neurons", "mlp.1")),
)  # fmt: skip
DAYS = [SPEC.day(i) for i in range(SPEC.days)]


def build_store(path: Path, spec: SampleSpec = SPEC) -> str:
    """Write ``spec``'s history into a new SQLite store at ``path``; returns its URL."""
    from dashboard_sample import write_history
    from ctrlens.store import Store

    url = f"sqlite:///{path}"
    with Store(url, create=True) as store:
        write_history(store, spec)
    return url


@pytest.fixture(scope="session")
def dashboard_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dashboard") / "template.sqlite"
    build_store(path)
    return path


@pytest.fixture
def dashboard_db(dashboard_db_template: Path, tmp_path: Path) -> str:
    """A fresh copy of the filled store per test (tests may acknowledge alerts)."""
    path = tmp_path / "ctrlens.sqlite"
    shutil.copyfile(dashboard_db_template, path)
    return f"sqlite:///{path}"
