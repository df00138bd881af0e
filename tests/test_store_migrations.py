"""Schema revisions and bad databases, on SQLite and PostgreSQL: upgrade from empty and from the
previous revision with data present, refusing older / newer / foreign / unreachable databases
(clear message; the CLI exits 2)."""

from __future__ import annotations

import datetime as dt
import socket

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from ctrlens.cli import main
from ctrlens.errors import InputError
from ctrlens.store import Store, head_revision, migrate
from ctrlens.store.engine import make_engine, normalize_url
from ctrlens.store.models import Base


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_upgrade_from_empty_database(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match=r"(has no ctrlens tables|does not exist): run `ctrlens db upgrade --db "):
        Store(store_url)
    code, out, err = _cli(capsys, "db", "upgrade", "--db", store_url)
    assert code == 0, err
    assert f"empty -> {head_revision()}" in out
    code, out, _ = _cli(capsys, "db", "upgrade", "--db", store_url)
    assert code == 0 and "already at revision" in out
    code, out, _ = _cli(capsys, "db", "current", "--db", store_url)
    assert code == 0 and "up to date" in out
    with Store(store_url) as store:
        # the migrations build exactly the tables the models describe
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert store.info()["revision"] == head_revision()
    code, out, _ = _cli(capsys, "db", "info", "--db", store_url)
    assert code == 0 and "neuron_stats" in out and f"revision {head_revision()}" in out


def _fill_revision_0001(url: str) -> None:
    """Data written by a ctrlens at revision 0001 (plain SQL against that schema)."""
    engine = make_engine(normalize_url(url))
    migrate.upgrade(engine, "0001")
    now = dt.datetime(2026, 1, 3, 12, 0)
    with engine.begin() as c:
        c.execute(text("INSERT INTO models (id, name, created_at) VALUES (1, 'din', :t)"), {"t": now})
        c.execute(
            text("INSERT INTO model_versions (id, model_id, checkpoint_hash, schema_hash, config_json, created_at) "
                 "VALUES (1, 1, 'ck', 'sh', '{\"lr\": 0.001}', :t)"), {"t": now})  # fmt: skip
        for run_id, day in ((1, dt.date(2026, 1, 1)), (2, dt.date(2026, 1, 2))):
            c.execute(
                text("INSERT INTO runs (id, model_version_id, day, run_kind, status, started_at, finished_at, ctrlens_version, "
                     "host, params_json) VALUES (:id, 1, :day, 'nightly', 'complete', :t, :t, '0.0.9', 'h', '{}')"),
                {"id": run_id, "day": day, "t": now},
            )  # fmt: skip
            c.execute(text("INSERT INTO run_results VALUES (:id, 'neuron_stats', 2, '{}'), (:id, 'embedding_health', 1, '{}')"),
                      {"id": run_id})  # fmt: skip
            for n in range(2):
                c.execute(
                    text("INSERT INTO neuron_stats (run_id, layer, neuron, pos, count, mean, std, min, max, frac_zero, "
                         "frac_saturated, mean_click, mean_noclick, hist_json) "
                         "VALUES (:id, 'mlp.0', :n, :n, 10, :mean, 1, 0, 1, 0.5, 0, 0.1, 0.2, '[1,2]')"),
                    {"id": run_id, "n": n, "mean": run_id + n / 10},
                )  # fmt: skip
            c.execute(
                text('INSERT INTO embedding_health (run_id, "table", pos, rows, dim, seen_rows, never_updated_frac, norm_mean, '
                     "norm_p50, norm_p99, effective_rank, hist_json) VALUES (:id, 'item', 0, 100, 8, 50, 0.1, 1, 1, 2, 6.5, NULL)"),
                {"id": run_id},
            )  # fmt: skip
        c.execute(
            text("INSERT INTO alerts (id, model_id, model_version_id, finding, subject, severity, score, title, evidence_json, "
                 "action, day, first_seen, last_seen, state, state_changed_by, state_changed_at, created_at) VALUES "
                 "(1, 1, 1, 'dead_neurons', 'mlp.0', 'warning', 0.5, 't', '{}', 'a', :d2, :d1, :d2, 'acknowledged', "
                 "'alice', :t, :t)"),
            {"d1": dt.date(2026, 1, 1), "d2": dt.date(2026, 1, 2), "t": now},
        )  # fmt: skip
    engine.dispose()


def test_upgrade_from_previous_revision_keeps_the_data(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _fill_revision_0001(store_url)
    with pytest.raises(InputError, match=rf"schema revision 0001, older than this ctrlens \({head_revision()}\): run `ctrlens db upgrade --db "):
        Store(store_url)
    code, out, _ = _cli(capsys, "db", "current", "--db", store_url)
    assert code == 1 and "older" in out and "ctrlens db upgrade" in out

    code, out, err = _cli(capsys, "db", "upgrade", "--db", store_url)
    assert code == 0, err
    assert f"0001 -> {head_revision()}" in out
    with Store(store_url) as store:
        hm = store.heatmap("mlp.0", "mean", model="din")
        np.testing.assert_allclose(hm.to_numpy(), [[1.0, 2.0], [1.1, 2.1]])
        eh = store.read(1, "2026-01-02", "embedding_health").frame
        assert eh["table"].tolist() == ["item"] and np.isnan(eh["info_abundance"][0])  # column added by 0002
        assert store.versions().config[0] == {"lr": 0.001}
        # the alert history was back-filled from the alert's state
        ev = store.alert_events(1)
        assert ev.event.tolist() == ["opened", "acknowledged"] and ev.actor.tolist() == ["ctrlens", "alice"]
        assert store.open_alerts().state.tolist() == ["acknowledged"]
        # new code paths work on the migrated data
        assert store.acquire("din", "2026-01-03") is not None
        store.resolve(1, by="bob")
        assert store.alert_events(1).event.tolist()[-1] == "resolved"
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_store_upgrade_flag_migrates_an_older_database(store_url: str) -> None:
    _fill_revision_0001(store_url)
    with Store(store_url, upgrade=True) as store:
        assert store.info()["revision"] == head_revision()
        assert store.days(model="din") == ["2026-01-01", "2026-01-02"]


def test_newer_schema_is_refused(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    Store(store_url, create=True).close()
    engine = make_engine(normalize_url(store_url))
    with engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(InputError, match=r"schema revision 0099, newer than this ctrlens knows .*upgrade ctrlens"):
        Store(store_url)
    code, _, err = _cli(capsys, "db", "upgrade", "--db", store_url)
    assert code == 2 and "newer than this ctrlens knows" in err and len(err.strip().splitlines()) == 1


def test_sqlite_connection_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Store(tmp_path / "s.sqlite", create=True) as store:  # a bare path means SQLite
        with store.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000


def test_foreign_database_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'other.sqlite'}"
    engine = make_engine(normalize_url(url))
    with engine.begin() as c:
        c.execute(text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(InputError, match="not a ctrlens store"):
        Store(url, create=True)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_database_gives_a_clear_message(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    url = f"postgresql://ctrlens:s3cret@127.0.0.1:{_closed_port()}/ctrlens"
    with pytest.raises(InputError, match=r"cannot reach database postgresql\+psycopg://ctrlens:\*\*\*@127.0.0.1:\d+/ctrlens: .*is PostgreSQL running"):
        Store(url)
    for cmd in ("info", "current", "upgrade"):
        code, out, err = _cli(capsys, "db", cmd, "--db", url)
        assert code == 2, (cmd, out, err)
        assert err.startswith("ctrlens: error: cannot reach database") and len(err.strip().splitlines()) == 1
        assert "s3cret" not in err
    # SQLite: a missing file is not created behind your back; a path that cannot be a file is named
    missing = tmp_path / "nope" / "store.sqlite"
    with pytest.raises(InputError, match="does not exist: run `ctrlens db upgrade"):
        Store(f"sqlite:///{missing}")
    assert not missing.parent.exists()
    (tmp_path / "adir.sqlite").mkdir()
    with pytest.raises(InputError, match=r"cannot open SQLite database .*adir.sqlite"):
        Store(f"sqlite:///{tmp_path / 'adir.sqlite'}")
    code, _, err = _cli(capsys, "db", "info", "--db", f"sqlite:///{missing}")
    assert code == 2 and "does not exist" in err
