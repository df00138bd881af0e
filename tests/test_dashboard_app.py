"""The dashboard app over HTTP (Flask test client, no browser): pages, URL validation, the
read-only store, alert state, refresh, access control and the CLI."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from ctrlens.dashboard import create_app
from ctrlens.dashboard.data import DashboardData
from ctrlens.dashboard.pages.alerts import _safe_link
from dashboard_testing import CallbackClient, PageSession
from ctrlens.store import Store

from dashboard_fixtures import DAYS, dashboard_db, dashboard_db_template  # noqa: F401


def _figures(results: dict) -> dict:
    return {k: v for k, v in results.items() if k.endswith(".figure")}


def _annotation(fig: dict) -> str:
    return " ".join(a.get("text", "") for a in fig.get("layout", {}).get("annotations", []) or [])


def _alert_id(url: str, finding: str) -> int:
    with Store(url) as s:
        a = s.alerts()
    return int(a.loc[a["finding"] == finding, "alert_id"].iloc[0])


PAGES = [("/", ""), ("/features", "?model=din"), ("/neurons", "?model=din&layer=mlp.1"), ("/probes", "?model=esmm"),
         ("/compare", "?model=din"), ("/alerts", "")]  # fmt: skip


def test_every_page_fills_its_figures_from_the_store(dashboard_db):
    app = create_app(dashboard_db)
    s = PageSession(app)
    version = app.ctrlens_data.data_version()
    seen = {}
    for path, search in PAGES:
        res = s.load(path, search, version)
        assert "friendly-error" not in json.dumps(s.page), (path, search)
        figs = _figures(res)
        if path != "/alerts":
            assert figs, path
        for name, fig in figs.items():
            assert fig["data"], f"{path}: {name} is empty: {_annotation(fig)}"
        seen[path] = res
    # overview: 2 models x 12 days; din turns critical on day 6 (the broken field), esmm stays ok
    hm = seen["/"]["ov-health.figure"]["data"][0]
    z = _decode(hm["z"])
    assert list(hm["y"]) == ["din", "esmm"] and z.shape == (2, 12)
    assert (z[0, :6] == 0).all() and (z[0, 6:] == 3).all() and (z[1] == 0).all()
    assert "Field shop_id looks broken" in json.dumps(seen["/"]["ov-alerts.children"])
    # features: shop_id's PSI is far over its threshold from day 6 on
    drift = seen["/features"]["ft-drift.figure"]["data"][0]
    dz = _decode(drift["z"])
    row = list(drift["y"]).index("shop_id")
    assert (dz[row, 6:] > 1).all() and (np.delete(dz, row, axis=0)[:, :8] < 1).all()
    # neurons: mlp.1 has 12 neurons; half of them die with the checkpoint of day 10
    assert _decode(seen["/neurons"]["nr-heatmap.figure"]["data"][0]["z"]).shape == (12, 12)
    dead = next(t for t in seen["/neurons"]["nr-layers.figure"]["data"] if t["name"] == "mlp.1")
    assert _decode(dead["y"])[-1] == pytest.approx(0.5) and _decode(dead["y"])[0] == 0


def _decode(v):
    """A plotly array from JSON: a list or a base64 typed array."""
    if isinstance(v, dict):
        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = [int(x) for x in str(v.get("shape", len(arr))).split(",")]
        return arr.reshape(shape)
    return np.asarray(v, dtype=float)


def test_an_alert_shows_its_diagnosis_evidence_and_links(dashboard_db):
    app = create_app(dashboard_db)
    aid = _alert_id(dashboard_db, "broken_feature")
    s = PageSession(app)
    res = s.load("/alerts", f"?alert={aid}", app.ctrlens_data.data_version())
    detail = json.dumps(res["al-detail.children"])
    assert "Field shop_id looks broken" in detail and "Suggested action" in detail
    assert "/features?model=din&day=2026-01-12&compare=2026-01-11&field=shop_id" in detail  # the evidence link
    assert '"psi"' in detail and "2.5" in detail  # the symptom row with its number
    assert f"alert={aid}" in json.dumps(res["al-list.children"])


def test_evidence_links_must_stay_inside_the_dashboard():
    assert _safe_link("/neurons?model=din&layer=mlp.1") == "/neurons?model=din&layer=mlp.1"
    assert _safe_link("/saliency?head=ctr") == "/saliency?head=ctr"
    for bad in ("https://evil.example/features", "//evil.example/features", "javascript:alert(1)", "/admin", None, 3):
        assert _safe_link(bad) is None


BAD_URLS = [
    ("/neurons", "?model=nope", "Unknown model 'nope'"),
    ("/neurons", "?model=din&day=2026-02-30", "not a calendar date"),
    ("/neurons", "?model=din&day=yesterday", "expected YYYY-MM-DD"),
    ("/neurons", "?model=din&day=2030-01-01", "No results for model 'din' on 2030-01-01"),
    ("/neurons", "?model=din&layer=nope", "Unknown layer 'nope' for model 'din'"),
    ("/neurons", "?model=din&layer=mlp.1&neuron=99", "has neurons 0 .. 11, not 99"),
    ("/neurons", "?model=din&neuron=abc", "neuron='abc' is not a number"),
    ("/features", "?model=din&field=price%27;DROP TABLE runs;--", "Unknown field"),
    ("/features", "?model=din&stat=bogus", "Unknown drift statistic 'bogus'"),
    ("/probes", "?model=din&head=cvr", "Unknown head 'cvr' of model 'din'"),
    ("/alerts", "?alert=9999", "Alert #9999 not found"),
    ("/compare", "?model=din&compare=v99", "unknown checkpoint v99"),
    ("/compare", "?model=din&compare=last+week", "expected a day (2026-01-05), a checkpoint (v3)"),
    ("/nowhere", "", "There is no page '/nowhere'"),
]


@pytest.mark.parametrize("path,search,expected", BAD_URLS)
def test_bad_url_parameters_give_a_friendly_message(dashboard_db, path, search, expected):
    client = CallbackClient(create_app(dashboard_db))
    out = client.call("page.children", {"url.pathname": path, "url.search": search})
    text = json.dumps(out)
    assert "friendly-error" in text and expected in text
    for leak in ("Traceback", "SELECT", "sqlalchemy", "File \\\""):
        assert leak not in text


def test_the_store_is_read_only_except_alert_state(dashboard_db):
    from sqlalchemy.exc import OperationalError

    data = DashboardData(dashboard_db)
    with pytest.raises(OperationalError, match="readonly"):
        with data.store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM alerts")
    aid = _alert_id(dashboard_db, "oov_surge")
    assert data.set_alert_state(aid, "acknowledged", by="alice") is True
    with Store(dashboard_db) as s:
        assert len(s.alerts()) > 0 and s.alerts().set_index("alert_id").loc[aid, "state"] == "acknowledged"
    data.close()


def test_acknowledge_and_resolve_record_who_and_when_only_on_a_click(dashboard_db):
    app = create_app(dashboard_db)
    c = CallbackClient(app)
    aid = _alert_id(dashboard_db, "broken_feature")
    base = {"al-selected.data": aid, "al-note.value": "looking at the logging job"}
    # rendering the buttons (n_clicks None) must not write anything
    assert c.call("al-action-msg.children", {**base, "al-ack.n_clicks": None}, trigger="al-ack.n_clicks") is None
    out = c.call("al-action-msg.children", {**base, "al-ack.n_clicks": 1}, trigger="al-ack.n_clicks")
    assert "now acknowledged (by local)" in out["al-action-msg"]["children"]
    out = c.call("al-action-msg.children", {**base, "al-resolve.n_clicks": 1, "al-note.value": None}, trigger="al-resolve.n_clicks")
    assert "now resolved" in out["al-action-msg"]["children"]
    with Store(dashboard_db) as s:
        a = s.alerts().set_index("alert_id").loc[aid]
        ev = s.alert_events(aid)
    assert a["state"] == "resolved" and a["state_changed_by"] == "local" and a["state_changed_at"] is not None
    assert ev["event"].tolist() == ["opened", "acknowledged", "resolved"]
    assert ev["actor"].tolist()[1:] == ["local", "local"] and ev["note"].tolist()[1] == "looking at the logging job"


def test_controls_write_the_selection_into_the_url_keeping_other_parameters(dashboard_db):
    c = CallbackClient(create_app(dashboard_db))
    key = next(k for k in c.app.callback_map if "url.search@" in k and c.app.callback_map[k]["inputs"][0]["id"] == "nr-model")
    vals = {"nr-model.value": "din", "nr-day.value": "2026-01-05", "nr-window.value": 90, "nr-layer.value": "mlp.1",
            "nr-stat.value": "frac_zero", "nr-neuron.value": 3, "url.pathname": "/neurons", "url.search": "?model=din&compare=2026-01-02"}  # fmt: skip
    out = c.call(key, vals, trigger="nr-layer.value")
    search = out["url"]["search"]
    assert search == "?model=din&day=2026-01-05&layer=mlp.1&neuron=3&compare=2026-01-02&stat=frac_zero"
    assert out["synced"]["data"] == "/neurons" + search


def test_refresh_picks_up_a_new_day_without_reloading(dashboard_db):
    from dashboard_sample import SampleSpec, write_history

    app = create_app(dashboard_db, refresh_s=1)
    c = CallbackClient(app)
    v0 = app.ctrlens_data.data_version()
    assert c.call("data-version.data", {"refresh.n_intervals": 1, "data-version.data": v0}) is None  # nothing new
    with Store(dashboard_db) as s:  # the nightly job writes day 13 while the page is open
        write_history(s, SampleSpec(models=("din",), days=13, retrain_every=5, seed=7), progress=None)
    out = c.call("data-version.data", {"refresh.n_intervals": 2, "data-version.data": v0})
    v1 = out["data-version"]["data"]
    assert v1 != v0
    old_options = [{"label": d, "value": d} for d in DAYS[::-1]]
    out = c.call("nr-day.value", {"nr-model.value": "din", "data-version.data": v1, "nr-day.value": DAYS[-1], "nr-day.options": old_options},
                 trigger="data-version.data")  # fmt: skip
    assert out["nr-day"]["value"] == "2026-01-13" and out["nr-day"]["options"][0]["value"] == "2026-01-13"
    # a view of an older day stays on that day
    out = c.call("nr-day.value", {"nr-model.value": "din", "data-version.data": v1, "nr-day.value": DAYS[3], "nr-day.options": old_options},
                 trigger="data-version.data")  # fmt: skip
    assert "value" not in out["nr-day"] and out["nr-day"]["options"][0]["value"] == "2026-01-13"  # value unchanged


def test_the_nightly_jobs_link_paths_open_their_views(dashboard_db):
    client = CallbackClient(create_app(dashboard_db))
    for path, search, page in (("/saliency", "?model=din&head=ctr&field=shop_id", "page-ft"), ("/quality", "?model=din&head=ctr", "page-ov")):
        out = json.dumps(client.call("page.children", {"url.pathname": path, "url.search": search}))
        assert page in out and "friendly-error" not in out


# ------------------------------------------------------------------------------ access control


def test_local_mode_answers_only_requests_addressed_to_localhost(dashboard_db):
    client = create_app(dashboard_db).server.test_client()
    assert client.get("/", headers={"Host": "127.0.0.1:8050"}).status_code == 200
    assert client.get("/", headers={"Host": "localhost:8050"}).status_code == 200
    r = client.get("/_dash-layout", headers={"Host": "attacker.example:8050"})  # DNS rebinding
    assert r.status_code == 403 and b"localhost" in r.data


def test_token_mode_needs_the_token_then_keeps_a_cookie(dashboard_db):
    client = create_app(dashboard_db, token="s3cret-token").server.test_client()
    assert client.get("/").status_code == 401
    assert client.get("/?token=wrong").status_code == 401
    assert client.get("/_dash-layout", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    r = client.get("/neurons?model=din&token=s3cret-token")
    assert r.status_code == 303 and r.headers["Location"].endswith("/neurons?model=din")  # the token leaves the address bar
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "s3cret-token" not in cookie
    assert client.get("/neurons?model=din").status_code == 200  # the cookie now does it


def test_basic_auth_mode_records_the_user_on_alert_changes(dashboard_db):
    app = create_app(dashboard_db, basic_auth="alice:pw")
    good = {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"alice:nope").decode()}
    client = app.server.test_client()
    r = client.get("/")
    assert r.status_code == 401 and "Basic" in r.headers["WWW-Authenticate"]
    assert client.get("/", headers=bad).status_code == 401
    assert client.get("/", headers=good).status_code == 200
    aid = _alert_id(dashboard_db, "dead_neurons")
    out = CallbackClient(app, headers=good).call("al-action-msg.children", {"al-selected.data": aid, "al-ack.n_clicks": 1},
                                                  trigger="al-ack.n_clicks")  # fmt: skip
    assert "by alice" in out["al-action-msg"]["children"]
    with Store(dashboard_db) as s:
        assert s.alert_events(aid)["actor"].tolist()[-1] == "alice"


def test_cli_refuses_a_public_interface_without_auth(dashboard_db, capsys):
    from ctrlens.cli import main

    with pytest.raises(SystemExit) as e:
        main(["dashboard", "--db", dashboard_db, "--host", "0.0.0.0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "refusing to serve the dashboard on 0.0.0.0" in err and "--token" in err
    with pytest.raises(SystemExit) as e:
        main(["dashboard", "--db", dashboard_db, "--host", "10.1.2.3", "--basic-auth", "alice"])
    assert e.value.code == 2 and "user:password" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["dashboard", "--db", dashboard_db.replace(".sqlite", "-missing.sqlite")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_both_backends_serve_pages_read_only_with_alert_writes(store_url):
    """SQLite and PostgreSQL: pages fill, the reading connection refuses writes, alert buttons work."""
    from sqlalchemy.exc import DBAPIError

    from dashboard_sample import Incident, SampleSpec, write_history

    with Store(store_url, create=True) as s:
        write_history(s, SampleSpec(models=("din",), days=6, retrain_every=3, incidents=(Incident(4, "broken_feature", "shop_id"),)))
    app = create_app(store_url)
    session = PageSession(app)
    version = app.ctrlens_data.data_version()
    for path, search in (("/", ""), ("/neurons", "?layer=mlp.1"), ("/features", ""), ("/compare", "")):
        for name, fig in _figures(session.load(path, search, version)).items():
            assert fig["data"], f"{path}: {name}: {_annotation(fig)}"
    with pytest.raises(DBAPIError, match="(?i)read.?only"):
        with app.ctrlens_data.store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM alerts")
    aid = _alert_id(store_url, "broken_feature")
    out = CallbackClient(app).call("al-action-msg.children", {"al-selected.data": aid, "al-resolve.n_clicks": 1},
                                   trigger="al-resolve.n_clicks")  # fmt: skip
    assert "now resolved" in out["al-action-msg"]["children"]
    with Store(store_url) as s:
        assert s.alerts().set_index("alert_id").loc[aid, "state"] == "resolved"
    app.ctrlens_data.close()
