"""Store round trips and queries on SQLite and PostgreSQL (fixture ``store_url``, tests/store_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from ctrlens.errors import InputError
from ctrlens.results import COLUMNS, Result
from ctrlens.store import LockHeld, Store
from ctrlens.store.codec import dumps
from ctrlens.store.models import RESULT_MODELS, Run
from store_fixtures import make_results

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-05"]


def _same_result(back: Result, want: Result) -> None:
    assert back.kind == want.kind
    assert back.meta == want.meta
    assert list(back.frame.columns) == list(COLUMNS[want.kind])
    assert len(back.frame) == len(want.frame)
    for col, t in COLUMNS[want.kind].items():
        got, exp = back.frame[col].tolist(), want.frame[col].tolist()
        if t == "json":  # NaN / inf inside JSON: compare the canonical text
            assert [dumps(v) for v in got] == [dumps(v) for v in exp], (want.kind, col)
        elif t == "float":
            np.testing.assert_array_equal(np.asarray(got, dtype=float), np.asarray(exp, dtype=float), err_msg=f"{want.kind}.{col}")
        else:
            norm = lambda xs: [None if (x is None or (isinstance(x, float) and np.isnan(x))) else x for x in xs]  # noqa: E731
            assert norm(got) == norm(exp), (want.kind, col)


def _count(store: Store, kind: str, run_id: int) -> int:
    t = RESULT_MODELS[kind].__table__
    with store.engine.connect() as c:
        return c.execute(select(func.count()).select_from(t).where(t.c.run_id == run_id)).scalar_one()


def test_round_trip_every_result_kind(store_url: str) -> None:
    with Store(store_url, create=True) as store:
        vid = store.register_model("din", "ck-a", "schema-1", {"dims": [16, 8], "lr": 1e-3})
        results = make_results(seed=3)
        assert {r.kind for r in results} == set(COLUMNS)
        run_id = store.write_day(vid, "2026-01-02", "nightly", results, params={"batch": 4096})
        for r in results:
            _same_result(store.read(vid, "2026-01-02", r.kind), r)
        day = store.read_day(vid, "2026-01-02")
        assert set(day) == set(COLUMNS)
        assert store.read(vid, "2026-01-03", "quality") is None
        runs = store.runs(model="din")
        assert runs.run_id.tolist() == [run_id] and runs.params[0] == {"batch": 4096} and runs.status[0] == "complete"
        assert sorted(runs.kinds[0]) == sorted(COLUMNS)
        v = store.versions("din")
        assert v.config[0] == {"dims": [16, 8], "lr": 1e-3} and v.checkpoint_hash[0] == "ck-a"


def test_rerun_replaces_and_never_duplicates(store_url: str) -> None:
    with Store(store_url, create=True) as store:
        vid = store.register_model("din", "ck-a", "schema-1")
        first = make_results(seed=1, layers={"mlp.0": 8, "mlp.1": 8})
        second = make_results(seed=2, layers={"mlp.0": 3})
        run1 = store.write_day(vid, "2026-01-02", "nightly", first)
        other = store.write_day(vid, "2026-01-02", "analysis", first)  # another run kind: its own slot
        run2 = store.write_day(vid, "2026-01-02", "nightly", second)
        run3 = store.write_day(vid, "2026-01-02", "nightly", second)
        assert run1 == run2 == run3 != other
        for r in second:
            _same_result(store.read(vid, "2026-01-02", r.kind, run_kind="nightly"), r)
            assert _count(store, r.kind, run1) == len(r.frame)
        assert _count(store, "neuron_stats", other) == 16
        # the alert rows of one day were written three times: still one alert per (finding, subject)
        assert len(store.alerts()) == 2
        # replace="kinds": only the kinds written are replaced
        new_quality = [r for r in first if r.kind == "quality"]
        store.write_day(vid, "2026-01-02", "nightly", new_quality, replace="kinds")
        _same_result(store.read(vid, "2026-01-02", "quality", run_kind="nightly"), new_quality[0])
        assert _count(store, "neuron_stats", run1) == 3
        # default replace="run": kinds not written again are gone
        store.write_day(vid, "2026-01-02", "nightly", new_quality)
        assert store.read(vid, "2026-01-02", "neuron_stats", run_kind="nightly") is None
        assert _count(store, "neuron_stats", run1) == 0
        with store.engine.connect() as c:
            assert c.execute(select(func.count()).select_from(Run)).scalar_one() == 2


def _history(store: Store) -> tuple[dict, dict]:
    """Two versions of "din" (a retrain on day 3) and one of "esmm" over DAYS; returns the results."""
    v1 = store.register_model("din", "ck-1", "s")
    v2 = store.register_model("din", "ck-2", "s")
    v3 = store.register_model("esmm", "ck-9", "s")
    written: dict = {}
    for i, day in enumerate(DAYS):
        for vid, seed in ((v1 if i < 2 else v2, i), (v3, 100 + i)):
            res = make_results(seed=seed, layers={"mlp.0": 5, "mlp.1": 3})
            if vid == v3 and i == 1:
                res = [r for r in res if r.kind != "alert"]  # an alert-free day
            store.write_day(vid, day, "nightly", res)
            written[(vid, day)] = {r.kind: r for r in res}
    return {"v1": v1, "v2": v2, "v3": v3}, written


def test_series_heatmap_and_catalogue_match_what_was_written(store_url: str) -> None:
    with Store(store_url, create=True) as store:
        ids, written = _history(store)
        din_vid = {d: (ids["v1"] if i < 2 else ids["v2"]) for i, d in enumerate(DAYS)}

        s = store.series("neuron_stats", "mean", model="din", layer="mlp.0", neuron=3)
        assert s.day.tolist() == DAYS and s.version_id.tolist() == [din_vid[d] for d in DAYS]
        ns = lambda vid, d: written[(vid, d)]["neuron_stats"].frame  # noqa: E731
        want = [ns(din_vid[d], d).query("layer == 'mlp.0' and neuron == 3")["mean"].item() for d in DAYS]
        np.testing.assert_array_equal(s["mean"].to_numpy(), want)

        q = store.series("quality", ["auc", "score_hist_json"], model="din", head="ctr", days=("2026-01-02", None))
        assert q.day.tolist() == DAYS[1:]
        want = [written[(din_vid[d], d)]["quality"].frame.set_index("head").loc["ctr", "auc"] for d in DAYS[1:]]
        np.testing.assert_array_equal(q.auc.to_numpy(), want)
        assert q.score_hist_json[0]["edges"][-1] == np.inf
        assert store.series("quality", "auc", model="din", head="ctr", days=3).day.tolist() == DAYS[-2:]  # calendar days
        assert store.series("quality", "auc", version=ids["v1"], head=["ctr", "cvr"]).shape[0] == 4
        sal = store.series("saliency", "share", model="esmm", field="f1", method="integrated_gradients")
        assert sorted(set(sal["head"])) == ["ctr", "cvr"] and len(sal) == 2 * len(DAYS)

        hm = store.heatmap("mlp.0", "mean", model="din")
        assert hm.shape == (5, len(DAYS)) and list(hm.columns) == DAYS and hm.index.tolist() == [0, 1, 2, 3, 4]
        brute = np.array([ns(din_vid[d], d).query("layer == 'mlp.0'").sort_values("neuron")["mean"].to_numpy() for d in DAYS]).T
        np.testing.assert_array_equal(hm.to_numpy(), brute)
        nc = store.heatmap("mlp.0", "mean_noclick", version=ids["v2"], days=[DAYS[3]])
        assert np.isnan(nc.loc[1, DAYS[3]]) and not np.isnan(nc.loc[0, DAYS[3]])

        assert store.days(model="din") == DAYS and store.days(model="din", kind="alert") == DAYS
        assert store.days(model="esmm", kind="alert") == [DAYS[0], DAYS[2], DAYS[3]]
        assert store.latest_day("din") == DAYS[-1] and store.latest_day("nope") is None
        latest = store.latest_days()
        assert latest.model.tolist() == ["din", "esmm"] and latest.day.tolist() == [DAYS[-1]] * 2
        assert latest.version_id.tolist() == [ids["v2"], ids["v3"]]
        m = store.models().set_index("model")
        assert m.loc["din", "n_versions"] == 2 and m.loc["din", "n_days"] == 4 and m.loc["esmm", "first_day"] == DAYS[0]

        health = store.health_matrix()
        assert health.index.tolist() == ["din", "esmm"] and list(health.columns) == DAYS
        assert health.loc["din"].tolist() == ["critical"] * 4
        assert health.loc["esmm", DAYS[1]] == "ok"
        num = store.health_matrix(models=["esmm"], numeric=True)
        assert num.loc["esmm"].tolist() == [3.0, 0.0, 3.0, 3.0]

        # a layer that grew between checkpoints: the matrix has every neuron, NaN where absent
        vx = store.register_model("grow", "ck", "s")
        small = make_results(seed=1, layers={"mlp.0": 3})
        big = make_results(seed=2, layers={"mlp.0": 5})
        store.write_day(vx, DAYS[0], "nightly", small)
        store.write_day(vx, DAYS[1], "nightly", big)
        g = store.heatmap("mlp.0", "std", model="grow")
        assert g.shape == (5, 2) and np.isnan(g.loc[[3, 4], DAYS[0]]).all()
        np.testing.assert_array_equal(g[DAYS[1]].to_numpy(), big[1].frame["std"].to_numpy())
        assert store.heatmap("mlp.9", "std", model="grow").shape == (0, 0)

        with pytest.raises(InputError, match=r"statistic \['nope'\] not in result 'quality'"):
            store.series("quality", "nope", model="din")
        with pytest.raises(InputError, match=r"subject filter \['layer'\] not in result 'quality'"):
            store.series("quality", "auc", model="din", layer="x")
        with pytest.raises(InputError, match="heatmap statistic 'hist_json'"):
            store.heatmap("mlp.0", "hist_json", model="din")


def test_alert_states_ranking_and_history(store_url: str) -> None:
    with Store(store_url, create=True) as store:
        vid = store.register_model("din", "ck-1", "s")
        res = make_results(seed=0)
        store.write_day(vid, "2026-01-01", "nightly", res)
        alerts = store.open_alerts()
        assert alerts.severity.tolist() == ["critical", "warning"]  # ranked
        assert alerts.evidence[0] == {"psi": 0.3, "link": "/fields/f0"}
        crit, warn = (int(a) for a in alerts.alert_id)
        token = store.data_version()
        assert store.acknowledge(crit, by="alice", note="on it") is True
        assert store.data_version() != token  # pollers see state changes...
        assert store.acknowledge(crit, by="alice") is False  # already acknowledged: nothing recorded
        token = store.data_version()
        store.write_day(vid, "2026-01-02", "nightly", res)
        assert store.data_version() != token  # ... and new days
        a = store.alerts().set_index("alert_id")
        assert a.loc[crit, "state"] == "acknowledged" and a.loc[crit, "state_changed_by"] == "alice"
        assert (a.loc[crit, "first_seen"], a.loc[crit, "last_seen"]) == ("2026-01-01", "2026-01-02")
        store.resolve(crit, by="bob", note="pipeline fixed")
        assert store.open_alerts().alert_id.tolist() == [warn]
        assert store.open_alerts(include_acknowledged=False, severity="warning").alert_id.tolist() == [warn]
        store.write_day(vid, "2026-01-02", "nightly", res)  # rerun of a seen day: stays resolved
        assert store.alerts(states=["resolved"]).alert_id.tolist() == [crit]
        store.write_day(vid, "2026-01-03", "nightly", res)  # seen again later: reopened
        assert store.alerts(states=["open"]).alert_id.tolist() == [crit, warn]
        ev = store.alert_events(crit)
        assert ev.event.tolist() == ["opened", "acknowledged", "resolved", "reopened"]
        assert ev.actor.tolist() == ["ctrlens", "alice", "bob", "ctrlens"]
        assert ev.note.tolist()[1:3] == ["on it", "pipeline fixed"]
        # rewriting the only day of an untouched alert removes it
        vid2 = store.register_model("pal", "ck", "s")
        store.write_day(vid2, "2026-01-01", "nightly", res)
        assert len(store.alerts(model="pal")) == 2
        store.write_day(vid2, "2026-01-01", "nightly", [r for r in res if r.kind != "alert"])
        assert len(store.alerts(model="pal")) == 0
        with pytest.raises(InputError, match="alert id 999 not found"):
            store.resolve(999, by="x")
        with pytest.raises(InputError, match="alert state 'closed'"):
            store.set_alert_state(crit, "closed", by="x")
        with pytest.raises(InputError, match="must name who"):
            store.resolve(crit, by=" ")


def test_bad_input_is_refused_before_anything_is_written(store_url: str) -> None:
    with Store(store_url, create=True) as store:
        with pytest.raises(InputError, match=r"model version 999 is not registered .*register_model"):
            store.write_day(999, "2026-01-01", "nightly", make_results(0))
        assert store.runs().empty
        vid = store.register_model("din", "ck", "s", {"a": 1})
        assert store.register_model("din", "ck", "s", {"a": 1}) == vid  # idempotent
        assert store.version_id("din", "ck", "s") == vid
        with pytest.raises(InputError, match="already registered as version .* different config"):
            store.register_model("din", "ck", "s", {"a": 2})
        with pytest.raises(InputError, match="YYYY-MM-DD"):
            store.write_day(vid, "01/02/2026", "nightly", [])
        with pytest.raises(InputError, match="run kind 'Nightly run'"):
            store.write_day(vid, "2026-01-01", "Nightly run", [])
        alert = next(r for r in make_results(0) if r.kind == "alert")
        alert.frame.loc[1, "severity"] = "high"
        with pytest.raises(InputError, match=r"'alert', column 'severity', row 1: 'high'"):
            store.write_day(vid, "2026-01-01", "nightly", [alert])
        with pytest.raises(InputError, match="not JSON-serialisable"):
            store.write_day(vid, "2026-01-01", "nightly", [Result("quality", make_results(0)[6].frame, {"f": object()})])
        assert store.runs().empty


def test_failed_rerun_keeps_the_last_complete_results(store_url: str) -> None:
    with Store(store_url, create=True) as store:
        vid = store.register_model("din", "ck", "s")
        res = make_results(0)
        run_id = store.write_day(vid, "2026-01-01", "nightly", res)
        assert store.record_failure(vid, "2026-01-01", "nightly", "CUDA out of memory") == run_id
        runs = store.runs()
        assert runs.status.tolist() == ["failed"] and runs.error[0] == "CUDA out of memory"
        _same_result(store.read(vid, "2026-01-01", "quality"), res[6])
        assert store.days(model="din") == ["2026-01-01"]
        store.record_failure(vid, "2026-01-02", "nightly", "input missing")  # a first attempt that failed
        assert store.days(model="din") == ["2026-01-01"] and store.read(vid, "2026-01-02", "quality") is None
        store.write_day(vid, "2026-01-02", "nightly", res)
        assert store.runs(days="2026-01-02").status.tolist() == ["complete"]


def test_locks(store_url: str) -> None:
    with Store(store_url, create=True) as store:
        tok = store.acquire("din", "2026-01-02")
        assert tok is not None
        assert store.acquire("din", "2026-01-02") is None  # held
        assert store.acquire("din", "2026-01-03") is not None  # another day: another lock
        with pytest.raises(LockHeld, match=r"nightly of model 'din' day 2026-01-02 is locked by .*:\d+:"):
            with store.locked("din", "2026-01-02"):
                pass
        assert store.refresh("din", "2026-01-02", tok)
        assert not store.release("din", "2026-01-02", "someone-else")
        assert store.release("din", "2026-01-02", tok)
        with store.locked("din", "2026-01-02") as t2:
            assert store.acquire("din", "2026-01-02") is None
        assert store.acquire("din", "2026-01-02") not in (None, t2)  # released by the context manager
        stale = store.acquire("esmm", "2026-01-02", ttl_s=-1)  # a crashed holder: already expired
        took = store.acquire("esmm", "2026-01-02")
        assert stale is not None and took is not None and took != stale
        assert not store.release("esmm", "2026-01-02", stale)
