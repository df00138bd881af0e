"""Issue 14's first "Done when", end to end: a user's own PyTorch model, their own daily training,
``ctrlens nightly`` with a ``loader:`` for 10 days, SQLite and PostgreSQL, a planted broken bag field
alerted and named, and the dashboard showing the model in real Chromium.

* the data: a synthetic world with the bag field ``item_tags`` (own ``tag`` table) whose label is
  renamed ``purchase`` (no ``click`` column at all), and on day 9 every row's tags stuck to one value;
* the model: ``tests/own_model.py`` -- plain PyTorch, imports nothing from ``reference_models``:
  EmbeddingBag groups (``hist_category_id``, ``item_tags``), one item table shared by ``item_id`` and
  ``hist_item_id``, one ReLU reused, a head ``buy`` on the label ``purchase``;
* each day, as cron would: train on yesterday (warm start), write ``own-<today>.pt`` (served from
  today, by the config's ``checkpoint_pattern``), then ``ctrlens nightly --day today`` (SQLite);
  PostgreSQL gets the same 10 days as one backfill, and must hold the same numbers.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

import own_model
from ctrlens.data import DailyDataset
from ctrlens.store import Store
from cli_fixtures import exit_code as run

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
LOADER = str(ROOT / "tests" / "own_model.py") + ":load"
WORLD = dict(days=12, rows_per_day=2500, seed=5, n_users=500, n_items=200, n_categories=10, n_shops=30,
             new_items_per_day=5, importance_rows=1000, image_size=8, item_tags=20, max_tags=3)  # fmt: skip
BROKEN = 9  # day index whose tags are all stuck to one row's tags
WATCHED = range(1, 11)  # 10 days, each with the checkpoint trained through the day before
ROWS = {"neurons": 2000, "probes": 600, "saliency": 400}


def day(i: int) -> str:
    return (dt.date(2026, 1, 1) + dt.timedelta(days=i)).isoformat()


def relabel(root: Path, label: str = "purchase") -> None:
    """The world's ``click`` column becomes ``label`` (``conversion`` dropped): data whose label is not click."""
    from ctrlens.data import Schema

    for p in sorted(root.glob("day=*/part-*.parquet")):
        t = pq.read_table(p)
        t = t.drop_columns([c for c in ("conversion",) if c in t.column_names])
        pq.write_table(t.rename_columns([label if c == "click" else c for c in t.column_names]), p)
    d = json.loads((root / "schema.json").read_text())
    d["labels"] = [label]
    Schema.from_dict(d).save(root)


def config(folder: Path, db: str, data: Path, ckdir: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "nightly.yaml"
    p.write_text(yaml.safe_dump({
        "db": db, "data": str(data), "report_dir": str(folder / "reports"),
        "reference": {"kind": "trailing", "days": 7, "min_days": 3},
        "models": [{"name": "own", "loader": LOADER, "checkpoint_dir": str(ckdir),
                    "checkpoint_pattern": "own-{served_from}.pt", "rows": ROWS}],
    }, sort_keys=False))  # fmt: skip
    return p


@pytest.fixture(scope="module")
def watched(tmp_path_factory, pg_admin_url):
    """Everything the tests look at: the data, the checkpoints, both stores, the nightly exit codes."""
    from ctrlens.synth import generate
    from store_fixtures import drop_pg_database, new_pg_database

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("own-e2e")
    world = generate(base / "world", incidents=[f"{BROKEN}:stuck_value:item_tags"], **WORLD)
    relabel(world.root)
    ds = DailyDataset(world.root)
    assert ds.schema.labels == ("purchase",) and ds.schema["item_tags"].kind == "bag"
    cfg = own_model.model_config(ds.schema, user="user_id", item="item_id", history="hist_item_id",
                                 groups=["hist_category_id", "item_tags"], dense=["price"], label="purchase", head="buy")  # fmt: skip
    model = own_model.build(cfg)
    ckdir = base / "checkpoints"
    sqlite = f"sqlite:///{base / 'sqlite' / 'ctrlens.sqlite'}"
    cfg_sqlite = config(base / "sqlite", sqlite, world.root, ckdir)
    codes = {}
    for i in WATCHED:  # the user's cron: retrain on yesterday, then watch today
        own_model.train_day(model, ds.iter_batches(day(i - 1), 256, shuffle=True, seed=i, images=False), lr=0.01)
        own_model.save(model, ckdir / f"own-{day(i)}.pt")
        codes[day(i)] = run(["nightly", "-c", cfg_sqlite, "--day", day(i), "-q"])
    pg = new_pg_database(pg_admin_url)
    cfg_pg = config(base / "pg", pg, world.root, ckdir)
    codes["pg"] = run(["nightly", "-c", cfg_pg, "--from", day(WATCHED[0]), "--to", day(WATCHED[-1]), "-q"])
    try:
        yield {"ds": ds, "ckdir": ckdir, "sqlite": sqlite, "pg": pg, "codes": codes, "base": base}
    finally:
        drop_pg_database(pg_admin_url, pg)


def test_ten_days_of_an_own_model_in_sqlite_and_postgresql(watched) -> None:
    codes, ckdir = watched["codes"], watched["ckdir"]
    assert all(codes[day(i)] in (0, 1) for i in WATCHED), codes  # ran (1: new alerts, mailed by cron)
    assert codes[day(BROKEN)] == 1 and codes["pg"] == 1
    per_store = {}
    for url in (watched["sqlite"], watched["pg"]):
        with Store(url) as store:
            runs = store.runs(model="own", run_kind="nightly").sort_values("day")
            assert list(runs["day"]) == [day(i) for i in WATCHED] and set(runs["status"]) == {"complete"}
            v = store.versions("own").sort_values("first_day")
            # a new checkpoint every day: 10 versions, each the content hash of the file that served the day
            import hashlib

            want = [hashlib.sha256((ckdir / f"own-{day(i)}.pt").read_bytes()).hexdigest()[:16] for i in WATCHED]
            assert list(v["checkpoint_hash"]) == want and list(v["first_day"]) == [day(i) for i in WATCHED]
            assert set(v["schema_hash"]) == {watched["ds"].schema.hash}
            for r in runs.itertuples():  # the file that served each day
                assert r.params["checkpoint"].endswith(f"own-{r.day}.pt") and r.params["config"]["models"][0]["loader"] == LOADER
            q = store.series("quality", "auc", model="own", run_kind="nightly").sort_values("day")
            assert set(q["head"]) == {"buy"} and len(q) == 10 and q["auc"].between(0.5, 1).all()
            layers = store.series("layer_stats", "dead_fraction", model="own", run_kind="nightly")
            assert set(layers["layer"]) == {"mlp.0", "mlp.1", "logit.buy"}
            sal = store.series("saliency", "share", model="own", run_kind="nightly")
            assert {"item_tags", "hist_category_id", "item_id", "hist_item_id", "user_id", "price"} <= set(sal["field"])
            probes = store.series("probe", ["auc", "model_auc"], model="own", run_kind="nightly")
            assert {"embedding", "mlp.0", "mlp.1", "logit.buy"} <= set(probes["layer"])
            per_store[url] = (q["auc"].to_numpy(), sal.sort_values(["day", "field"])["share"].to_numpy())
    (qa, sa), (qb, sb) = per_store.values()
    np.testing.assert_allclose(qa, qb, rtol=1e-9)  # same seeds, same rows: the same numbers in both stores
    np.testing.assert_allclose(sa, sb, rtol=1e-6)


def test_the_broken_bag_is_alerted_and_named(watched) -> None:
    for url in (watched["sqlite"], watched["pg"]):
        with Store(url) as store:
            a = store.alerts(model="own")
            on_tags = a[(a["subject"] == "item_tags") & a["severity"].isin(["critical", "warning"])]
            assert len(on_tags), a[["day", "finding", "subject", "severity", "title"]].to_string()
            assert set(on_tags["first_seen"]) == {day(BROKEN)}, on_tags[["first_seen", "finding", "title"]].to_string()
            assert on_tags["title"].str.contains("item_tags").all()
            # the day's own findings rank it first among the paging ones
            vid = int(store.runs(model="own", days=day(BROKEN), run_kind="nightly")["version_id"].iloc[0])
            f = store.read_day(vid, day(BROKEN), run_kind="nightly")["alert"].frame
            paging = f[f["severity"].isin(["critical", "warning"])]
            assert paging["subject"].iloc[0] == "item_tags", paging[["finding", "subject", "severity", "title"]].to_string()


def test_report_of_a_checkpoint_through_its_loader(watched, tmp_path) -> None:
    from ctrlens.monitor.report import write_report

    ck = watched["ckdir"] / f"own-{day(5)}.pt"
    assert run(["report", "--db", watched["sqlite"], "--model", "own", "--checkpoint", ck, "--loader", LOADER,
                "--data", watched["ds"].root, "--out", tmp_path / "cli"]) == 0  # fmt: skip
    with Store(watched["sqlite"]) as store:
        write_report(store, "own", day(5), tmp_path / "py")
    assert (tmp_path / "cli" / f"{day(5)}.md").read_text() == (tmp_path / "py" / f"{day(5)}.md").read_text()
    assert "buy" in (tmp_path / "cli" / f"{day(5)}.md").read_text()


def test_dashboard_shows_the_own_model(watched, tmp_path) -> None:
    from ctrlens.dashboard import create_app
    from dashboard_testing import ServerThread
    from browser_fixtures import GRAPHS_READY, chromium, open_page, wait

    pytest.importorskip("selenium")
    drv = chromium(tmp_path / "profile")
    try:
        with ServerThread(create_app(watched["pg"], refresh_s=60)) as url:
            open_page(drv, url + "/")
            wait(drv, lambda d: "own" in d.find_element("id", "page").text, "the model on the overview")
            open_page(drv, url + f"/neurons?model=own&layer=mlp.1&day={day(BROKEN)}")
            wait(drv, lambda d: d.execute_script(GRAPHS_READY), "the neuron figures of the own model")
            assert not drv.find_elements("id", "friendly-error")
            open_page(drv, url + "/alerts")
            wait(drv, lambda d: "item_tags" in d.find_element("id", "al-table").text, "the broken bag's alert")
            drv.save_screenshot(str(tmp_path / "alerts.png"))
    finally:
        drv.quit()
