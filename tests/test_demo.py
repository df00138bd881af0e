"""The README's first command, end to end at a reduced size: world -> training -> nightly -> SQLite.

Checks that the database holds every kind of result and that the planted incidents were alerted
on their day (issue 11's "Done when")."""

from __future__ import annotations

import pytest

from ctrlens.demo import DemoConfig, print_summary, run_demo
from ctrlens.results import COLUMNS

pytestmark = pytest.mark.slow


def test_demo_end_to_end_small(tmp_path, capsys):
    cfg = DemoConfig(out=tmp_path / "demo", days=14, rows_per_day=3_000, train_days=4, epochs=2,
                     incidents=("10:stuck_value:category_id", "12:oov_surge:item_id"),
                     rows_neurons=3_000, rows_probes=1_500, rows_saliency=800, n_users=2_000, n_items=500)
    res = run_demo(cfg, log=lambda msg: None)

    from ctrlens.store import Store

    with Store(res.db_url) as store:
        runs = store.runs(model="din")
        assert len(runs) == cfg.days - cfg.train_days, runs
        vid = int(runs["version_id"].iloc[0])
        kinds_seen = set()
        for day in runs["day"].astype(str).str[:10]:
            kinds_seen |= {k for k, r in store.read_day(vid, day).items() if r is not None and len(r) > 0}
    # every kind of result the analyses produce is in the database (alerts at least on incident days)
    assert kinds_seen >= set(COLUMNS), f"missing result kinds: {sorted(set(COLUMNS) - kinds_seen)}"

    detected = dict((inc["kind"], hit) for inc, hit in res.detected)
    assert detected["stuck_value"] is not None and detected["stuck_value"]["subject"] == "category_id", res.found
    assert detected["oov_surge"] is not None and detected["oov_surge"]["subject"] == "item_id", res.found

    print_summary(res, url="http://127.0.0.1:8050/")
    out = capsys.readouterr().out
    assert "stuck_value" in out and "not alerted" not in out and "Dashboard" in out
    # a re-run reuses what is there (idempotent: no duplicate runs)
    run_demo(cfg, log=lambda msg: None)
    with Store(res.db_url) as store:
        assert len(store.runs(model="din")) == cfg.days - cfg.train_days
