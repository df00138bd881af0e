"""Notifications against real local servers: Slack / JSON webhooks checked field by field, a flaky
webhook retried and delivered once, a channel that is down retried with backoff on a later call,
the e-mail digest through an SMTP server with login, a command fed on stdin, reopened alerts sent
again and rewritten days not; ``/metrics`` parsed by prometheus_client behind the dashboard's auth."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboard_fixtures import dashboard_db, dashboard_db_template  # noqa: F401
from notify_fixtures import Hook, Mailbox, hook  # noqa: F401
from store_fixtures import make_results

BASE = "https://ctrlens.example.com/team"
EVIDENCE = {
    "model": "din", "day": "2026-01-02",
    "symptoms": [
        {"kind": "field", "subject": "f0", "statistic": "psi", "value": 0.83, "reference": 0.02, "threshold": 0.2, "direction": "above"},
        {"kind": "field", "subject": "f0", "statistic": "top1_share", "value": 0.97, "reference": 0.1, "threshold": 0.3, "direction": "above"},
        {"kind": "field", "subject": "f0", "statistic": "coverage", "value": 1.0, "reference": 1.0, "threshold": 0.9, "direction": "below"},
        {"kind": "field", "subject": "f0", "statistic": "mean", "value": 5.0, "reference": 1.0, "threshold": 2.0, "direction": "above"},
    ],
    "links": [{"label": "field f0", "url": "/features?model=din&day=2026-01-02&field=f0&compare=2026-01-01"}],
    "ratio": float("nan"),
}  # fmt: skip


def alerts_result(rows: list[tuple[str, str, str, float]], evidence: dict | None = None):
    """Result("alert") of (finding, subject, severity, score) rows."""
    from ctrlens.results import Result

    return Result("alert", pd.DataFrame({
        "finding": [r[0] for r in rows], "subject": [r[1] for r in rows], "severity": [r[2] for r in rows],
        "score": [r[3] for r in rows], "title": [f"{r[1]} looks broken: {r[0]}" for r in rows],
        "evidence_json": [evidence or EVIDENCE for _ in rows], "action": [f"check {r[1]}" for r in rows],
    }))  # fmt: skip


def write_day(store, model: str, day: str, rows, evidence=None) -> int:
    vid = store.register_model(model, f"ck-{model}", "sh", {})
    res = [r for r in make_results() if r.kind != "alert"] + [alerts_result(rows, evidence)]
    store.write_day(vid, day, "nightly", res)
    return vid


def notifier(channels, *, env=None, sleeps=None, now=None, max_age_days=None, **retry):
    from ctrlens.notify import parse_notify
    from ctrlens.notify.deliver import Notifier

    cfg = parse_notify({"base_url": BASE + "/", "retry": {"attempts": 3, "backoff_s": 0.5, **retry}, "channels": channels,
                        "max_age_days": max_age_days})  # fmt: skip
    kw = {"now": now} if now else {}
    return Notifier(cfg, env=env or {}, sleep=(sleeps.append if sleeps is not None else (lambda s: None)), **kw)


def _store(url):
    from ctrlens.store import Store

    return Store(url, create=True)


# ------------------------------------------------------------------------------------- webhooks


def test_slack_and_json_webhooks_field_by_field_then_nothing_new(store_url: str, hook) -> None:
    from ctrlens.store import deliveries

    with _store(store_url) as s:
        write_day(s, "din", "2026-01-02", [("broken_feature", "f0", "critical", 105.5), ("neuron_drift", "mlp.1", "warning", 31.0),
                                          ("saliency_shift", "f1", "info", 40.0)])  # fmt: skip
        write_day(s, "esmm", "2026-01-02", [("quality_drop", "ctr", "critical", 55.0)])
        n = notifier([
            {"name": "slack", "type": "webhook", "format": "slack", "url_env": "HOOK_URL", "models": ["din"]},
            {"name": "json", "type": "webhook", "format": "json", "url": hook.url + "/json", "min_severity": "critical",
             "headers_env": {"X-Token": "HOOK_TOKEN"}},
        ], env={"HOOK_URL": hook.url + "/slack", "HOOK_TOKEN": "tok-123"})  # fmt: skip
        out = n.deliver(s)
        assert out.ok
        stored = s.alerts().set_index(["model", "finding", "subject"])
        # Slack: din only, warning and up: the critical and the warning alert, one message each
        slack = hook.ok_posts("/slack")
        assert len(slack) == 2
        msg = next(p["json"] for p in slack if "broken_feature" in p["json"]["text"])
        a = stored.loc[("din", "broken_feature", "f0")]
        assert msg["text"] == "CRITICAL din 2026-01-02: broken_feature f0 -- f0 looks broken: broken_feature"
        header, section, evidence, context, actions = msg["blocks"]
        assert header == {"type": "header", "text": {"type": "plain_text", "text": "CRITICAL · broken_feature · f0"}}
        assert section["text"] == {"type": "mrkdwn", "text": "f0 looks broken: broken_feature"}
        assert [f["text"] for f in section["fields"]] == ["*Severity*\ncritical", "*Model*\ndin", "*Day*\n2026-01-02", "*Score*\n105.5"]
        # the top three evidence numbers, in the stored order
        assert evidence["text"]["text"] == ("*Evidence*\n• f0 psi 0.83 (usual 0.02, threshold 0.2)\n"
                                            "• f0 top1_share 0.97 (usual 0.1, threshold 0.3)\n• f0 coverage 1 (usual 1, threshold 0.9)")  # fmt: skip
        assert context["elements"][0]["text"] == "*Action:* check f0"
        assert [(b["text"]["text"], b["url"]) for b in actions["elements"]] == [
            ("Open in ctrlens", f"{BASE}/alerts?model=din&alert={a.alert_id}"),
            ("field f0", f"{BASE}/features?model=din&day=2026-01-02&field=f0&compare=2026-01-01"),
        ]
        # JSON: critical only, every model; the alert rows as stored
        js = hook.ok_posts("/json")
        assert sorted(p["json"]["alerts"][0]["model"] for p in js) == ["din", "esmm"]
        assert all(p["headers"]["X-Token"] == "tok-123" for p in js)
        doc = next(p["json"] for p in js if p["json"]["alerts"][0]["model"] == "esmm")
        assert doc["source"] == "ctrlens" and doc["channel"] == "json" and len(doc["alerts"]) == 1
        row = doc["alerts"][0]
        st = stored.loc[("esmm", "quality_drop", "ctr")]
        for k in ("severity", "score", "title", "action", "day", "first_seen", "last_seen"):
            assert row[k] == st[k], k
        assert row["alert_id"] == st.alert_id and row["finding"] == "quality_drop" and row["subject"] == "ctr" and row["episode"] == 0
        want = {k: v for k, v in st.evidence.items()}
        assert math.isnan(want.pop("ratio")) and row["evidence"].pop("ratio") is None  # NaN -> null, JSON stays valid
        assert row["evidence"] == want
        assert row["url"] == f"{BASE}/alerts?model=esmm&alert={st.alert_id}"
        assert row["links"][1]["url"] == f"{BASE}/features?model=din&day=2026-01-02&field=f0&compare=2026-01-01"
        # the log: one delivered attempt per alert and channel
        log = deliveries.log(s)
        assert sorted(zip(log["channel"], log["status"], log["attempt"])) == [("json", "delivered", 1)] * 2 + [("slack", "delivered", 1)] * 2
        # again: nothing new; the same day rewritten (as --force does): nothing new either
        n_posts = len(hook.posts)
        again = n.deliver(s)
        assert [c.already for c in again.channels] == [2, 2] and not any(c.sent for c in again.channels)
        write_day(s, "din", "2026-01-02", [("broken_feature", "f0", "critical", 105.5), ("neuron_drift", "mlp.1", "warning", 31.0)])
        assert not any(c.sent for c in n.deliver(s).channels)
        assert len(hook.posts) == n_posts


def test_flaky_webhook_is_retried_and_delivered_once(store_url: str) -> None:
    from ctrlens.store import deliveries

    h = Hook(plan=[500, 503])
    try:
        with _store(store_url) as s:
            write_day(s, "din", "2026-01-02", [("broken_feature", "f0", "critical", 105.0)])
            sleeps: list[float] = []
            n = notifier([{"name": "hook", "type": "webhook", "format": "json", "url": h.url}], sleeps=sleeps)
            out = n.deliver(s)
            assert out.ok and out.channels[0].sent == [1] and out.channels[0].tries == 3
            assert [p["status"] for p in h.posts] == [500, 503, 200]
            assert sleeps == [0.5, 1.0]  # exponential backoff between tries
            log = deliveries.log(s).sort_values("attempt")
            assert log["attempt"].tolist() == [1, 2, 3] and log["status"].tolist() == ["failed", "failed", "delivered"]
            assert log["error"].tolist()[:2] == ["webhook answered HTTP 500 Internal Server Error", "webhook answered HTTP 503 Service Unavailable"]
            assert n.deliver(s).channels[0].sent == [] and len(h.posts) == 3
    finally:
        h.close()


def test_channel_down_fails_softly_then_a_later_call_delivers(store_url: str) -> None:
    from notify_fixtures import free_port

    from ctrlens.store import deliveries

    port = free_port()  # nothing listens there (yet)
    clock = [dt.datetime(2026, 1, 3, 3, 0)]
    with _store(store_url) as s:
        write_day(s, "din", "2026-01-02", [("broken_feature", "f0", "critical", 105.0)])
        n = notifier([{"name": "hook", "type": "webhook", "format": "slack", "url_env": "URL"}], env={"URL": f"http://127.0.0.1:{port}/x"},
                     now=lambda: clock[0], attempts=2, backoff_s=60)  # fmt: skip
        out = n.deliver(s)
        assert not out.ok and out.channels[0].failed == [1]
        assert "webhook unreachable" in out.channels[0].errors[0] and str(port) not in out.channels[0].errors[0]  # no URL (a secret)
        log = deliveries.log(s).sort_values("attempt")
        assert log["status"].tolist() == ["failed", "failed"]
        assert log["next_attempt_at"].iloc[-1] == clock[0] + dt.timedelta(seconds=120)  # 60 s doubled after the 2nd try
        assert deliveries.failing(s).to_dict("records") == [{"channel": "hook", "failing": 1}]
        # a later call within the backoff: waits, does not hammer the channel
        clock[0] += dt.timedelta(seconds=30)
        w = n.deliver(s)
        assert w.channels[0].waiting == [1] and w.channels[0].tries == 0 and w.ok
        # the channel is back, the backoff has passed: delivered, as attempt 3
        h = Hook()
        h.server.server_close()
        from http.server import ThreadingHTTPServer

        h.server = ThreadingHTTPServer(("127.0.0.1", port), h.server.RequestHandlerClass)
        import threading

        threading.Thread(target=h.server.serve_forever, daemon=True).start()
        try:
            clock[0] += dt.timedelta(seconds=120)
            ok = n.deliver(s)
            assert ok.ok and ok.channels[0].sent == [1] and len(h.posts) == 1
            assert deliveries.log(s).sort_values("attempt")["status"].tolist() == ["failed", "failed", "delivered"]
            assert deliveries.failing(s).empty
        finally:
            h.close()


def test_two_senders_at_once_deliver_each_alert_once(store_url: str) -> None:
    """The nightly job and a person's `ctrlens alerts notify` at the same moment: the claims in the
    log let one of them send each alert."""
    import threading
    import time

    from ctrlens.store import Store, deliveries

    h = Hook()
    slow = h.server.RequestHandlerClass.do_POST

    def do_post(self):  # a slow endpoint keeps the first sender in flight while the second looks
        time.sleep(0.2)
        slow(self)

    h.server.RequestHandlerClass.do_POST = do_post
    try:
        with _store(store_url) as s:
            write_day(s, "din", "2026-01-02", [("broken_feature", "f0", "critical", 105.0), ("oov_surge", "f2", "warning", 95.0),
                                              ("dead_neurons", "mlp.1", "critical", 90.0)])  # fmt: skip
        outs = []

        def send() -> None:
            with Store(store_url) as st:  # each sender its own connection pool, as two processes would have
                outs.append(notifier([{"name": "hook", "type": "webhook", "format": "json", "url": h.url}]).deliver(st))

        threads = [threading.Thread(target=send) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(o.ok for o in outs)
        sent = sorted(a for o in outs for a in o.channels[0].sent)
        assert sent == [1, 2, 3] and len(h.posts) == 3  # each alert once, whoever sent it
        with _store(store_url) as s:
            assert sorted(deliveries.log(s)["alert_id"]) == [1, 2, 3]
    finally:
        h.close()


def test_a_backfill_of_old_days_pages_nobody_with_max_age_days(tmp_path: Path, hook) -> None:
    with _store(f"sqlite:///{tmp_path / 's.sqlite'}") as s:
        write_day(s, "din", "2026-01-02", [("broken_feature", "f0", "critical", 105.0)])  # last month
        write_day(s, "din", "2026-02-01", [("oov_surge", "f2", "warning", 95.0)])  # last night
        clock = lambda: dt.datetime(2026, 2, 2, 3, 30)  # noqa: E731
        out = notifier([{"name": "hook", "type": "webhook", "format": "json", "url": hook.url}], now=clock, max_age_days=3).deliver(s)
        assert out.channels[0].sent == [2] and [p["json"]["alerts"][0]["subject"] for p in hook.posts] == ["f2"]


def test_reopened_alert_is_sent_again(store_url: str, hook) -> None:
    with _store(store_url) as s:
        write_day(s, "din", "2026-01-02", [("broken_feature", "f0", "critical", 105.0)])
        n = notifier([{"name": "hook", "type": "webhook", "format": "json", "url": hook.url}])
        assert n.deliver(s).channels[0].sent == [1]
        s.resolve(1, by="ana", note="fixed upstream")
        write_day(s, "din", "2026-01-03", [("oov_surge", "f2", "warning", 95.0)])
        assert n.deliver(s).channels[0].sent == [2]  # the resolved one stays quiet
        write_day(s, "din", "2026-01-04", [("broken_feature", "f0", "critical", 106.0)])  # seen again: reopened
        out = n.deliver(s)
        assert out.channels[0].sent == [1]
        assert [p["json"]["alerts"][0]["episode"] for p in hook.posts] == [0, 0, 1]
        assert hook.posts[-1]["json"]["alerts"][0]["day"] == "2026-01-04"


# ------------------------------------------------------------------------------------- e-mail, command


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_email_digest_with_login_one_message_ranked(tmp_path: Path) -> None:
    box = Mailbox(login=("ctrlens", "pw-s3cret"))
    try:
        with _store(f"sqlite:///{tmp_path / 's.sqlite'}") as s:
            write_day(s, "din", "2026-01-02", [("neuron_drift", "mlp.1", "warning", 31.0), ("broken_feature", "f0", "critical", 105.0)])
            write_day(s, "esmm", "2026-01-02", [("calibration_drift", "ctr", "warning", 62.0)])
            rep = tmp_path / "reports" / "din"
            rep.mkdir(parents=True)
            (rep / "2026-01-02.md").write_text("# din · 2026-01-02\n")
            ch = {"name": "mail", "type": "email", "from": "ctrlens@example.com", "to": ["oncall@example.com", "ml@example.com"],
                  "smtp": {"host": "127.0.0.1", "port": box.port, "security": "none", "username": "ctrlens", "password_env": "SMTP_PW"}}  # fmt: skip
            n = notifier([ch], env={"SMTP_PW": "pw-s3cret"})
            out = n.deliver(s, reports=[rep / "2026-01-02.md"])
            assert out.ok and sorted(out.channels[0].sent) == [1, 2, 3] and out.channels[0].tries == 1
            assert len(box.messages) == 1  # one digest for the run
            m = box.messages[0]
            assert sorted(box.envelopes[0].rcpt_tos) == ["ml@example.com", "oncall@example.com"]
            assert m["Subject"] == "[ctrlens] 3 new alerts (1 critical, 2 warning): din, esmm"
            assert m["From"] == "ctrlens@example.com"
            body = m.get_body(("plain",)).get_content()
            lines = [x for x in body.splitlines() if x[:2] in ("1.", "2.", "3.")]
            # ranked as the daily report ranks findings: by score
            assert [x.split("  ")[3] for x in lines] == ["broken_feature · f0", "calibration_drift · ctr", "neuron_drift · mlp.1"]
            assert f"Open: {BASE}/alerts?model=din&alert=2" in body
            assert "f0 psi 0.83 (usual 0.02, threshold 0.2)" in body
            assert [a.get_filename() for a in m.iter_attachments()] == ["din-2026-01-02.md"]
            assert "pw-s3cret" not in json.dumps(out.to_dict())
            assert n.deliver(s).channels[0].sent == [] and len(box.messages) == 1
    finally:
        box.close()


def test_command_gets_the_payload_on_stdin(tmp_path: Path) -> None:
    out_file = tmp_path / "got.json"
    prog = f"import sys, pathlib; pathlib.Path({str(out_file)!r}).write_bytes(sys.stdin.buffer.read())"
    with _store(f"sqlite:///{tmp_path / 's.sqlite'}") as s:
        write_day(s, "din", "2026-01-02", [("broken_feature", "f0", "critical", 105.0)])
        n = notifier([{"name": "cmd", "type": "command", "command": [sys.executable, "-c", prog]},
                      {"name": "broken", "type": "command", "command": [sys.executable, "-c", "import sys; print('no route', file=sys.stderr); sys.exit(3)"]}],
                     attempts=1)  # fmt: skip
        out = n.deliver(s)
        doc = json.loads(out_file.read_text())
        assert doc["channel"] == "cmd" and doc["alerts"][0]["finding"] == "broken_feature" and doc["alerts"][0]["alert_id"] == 1
        assert out.channels[0].sent == [1]
        assert out.channels[1].failed == [1] and out.channels[1].errors == [f"command {sys.executable!r} exited with 3: no route"]


# ------------------------------------------------------------------------------------- config, CLI


@pytest.mark.parametrize("notify, message", [
    ({"channels": [{"name": "a", "type": "pager"}]}, "notify.channels[0].type: expected one of ['webhook', 'email', 'command'], got 'pager'"),
    ({"channels": [{"name": "a", "type": "webhook", "url": "http://x", "url_env": "U"}]}, "give exactly one of url or url_env"),
    ({"channels": [{"name": "a", "type": "webhook", "url_env": "https://hooks.slack.com/x"}]}, "notify.channels[0].url_env: expected the NAME of an environment variable"),
    ({"channels": [{"name": "a", "type": "webhook", "url": "http://x", "min_severity": "high"}]}, "notify.channels[0].min_severity: expected one of ['info', 'warning', 'critical']"),
    ({"channels": [{"name": "a", "type": "email", "from": "a@b", "to": ["c@d"], "smtp": {"host": "h", "password": "x"}}]}, "notify.channels[0].smtp: unknown key(s) ['password']"),
    ({"channels": [{"name": "a", "type": "webhook", "url": "http://x"}] * 2}, "duplicate channel name(s) ['a']"),
    ({"base_url": "dashboard"}, "notify.base_url: expected the dashboard's address"),
    ({"chanels": []}, "notify: unknown key(s) ['chanels']"),
    ({"channels": [{"name": "a", "type": "command", "command": ["x"], "models": ["n"]}]}, "notify.channels[0].models: unknown model(s) ['n']; watched models: ['m']"),
])  # fmt: skip
def test_bad_notify_config_names_the_key(tmp_path: Path, notify, message, capsys) -> None:
    import yaml

    from ctrlens.cli import main
    from ctrlens.errors import InputError
    from ctrlens.monitor.config import parse_config

    d = {"db": str(tmp_path / "x.sqlite"), "data": str(tmp_path), "models": [{"name": "m", "checkpoint": "a.pt"}], "notify": notify}
    with pytest.raises(InputError) as e:
        parse_config(d, source="config t.yaml")
    assert message in str(e.value)
    p = tmp_path / "n.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(SystemExit) as ex:
        main(["alerts", "notify", "--config", str(p), "--dry-run"])
    assert ex.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.sqlite").exists()


def test_cli_dry_run_shows_and_sends_nothing_then_notify_sends(tmp_path: Path, hook, capsys, monkeypatch) -> None:
    import yaml

    from ctrlens.cli import main
    from ctrlens.store import Store, deliveries

    db = tmp_path / "s.sqlite"
    with _store(f"sqlite:///{db}") as s:
        write_day(s, "din", "2026-01-02", [("broken_feature", "f0", "critical", 105.0)])
    cfg = {"db": str(db), "data": str(tmp_path), "report_dir": "", "models": [{"name": "din", "checkpoint": "a.pt"}],
           "notify": {"base_url": BASE, "channels": [{"name": "team", "type": "webhook", "url_env": "CTRLENS_TEST_HOOK"}]}}  # fmt: skip
    p = tmp_path / "nightly.yaml"
    p.write_text(yaml.safe_dump(cfg))

    def run(*args):
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        return code, capsys.readouterr()

    monkeypatch.delenv("CTRLENS_TEST_HOOK", raising=False)
    code, out = run("alerts", "notify", "--config", str(p), "--dry-run")
    assert code == 0
    assert "team (webhook -> $CTRLENS_TEST_HOOK): would send 1 alert(s) in 1 message(s)" in out.out
    assert "environment variable(s) not set: CTRLENS_TEST_HOOK" in out.out
    assert "CRITICAL · broken_feature · f0" in out.out and f"{BASE}/alerts?model=din&alert=1" in out.out
    with Store(f"sqlite:///{db}") as s:
        assert deliveries.log(s).empty  # a dry run writes nothing
    assert hook.posts == []
    code, out = run("alerts", "notify", "--config", str(p))
    assert code == 4 and "CTRLENS_TEST_HOOK is not set" in out.err  # failed, recorded, retried later
    monkeypatch.setenv("CTRLENS_TEST_HOOK", hook.url + "/secret-path")
    code, out = run("alerts", "notify", "--config", str(p), "--json")
    assert code == 0 and json.loads(out.out)["channels"][0]["sent"] == [1]
    assert "secret-path" not in out.out
    code, out = run("alerts", "deliveries", "--config", str(p))
    lines = out.out.splitlines()
    assert code == 0 and len(lines) == 2 and "team             delivered try 2  alert #1" in lines[0] and lines[0].endswith("[critical]")
    assert "failed    try 1" in lines[1] and lines[1].endswith("environment variable CTRLENS_TEST_HOOK is not set")
    assert "secret-path" not in out.out


# ------------------------------------------------------------------------------------- metrics


def _families(text: str) -> dict:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    return {f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples} for f in text_string_to_metric_families(text)}


def test_metrics_endpoint_behind_auth_matches_the_store(dashboard_db: str) -> None:
    from ctrlens.dashboard.app import create_app
    from ctrlens.store import Store

    client = create_app(dashboard_db, token="s3cret-token").server.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    r = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/openmetrics-text")
    fam = _families(r.get_data(as_text=True))
    with Store(dashboard_db) as s:
        a = s.alerts(states=("open",))
        latest = s.latest_days()
        for m in ("din", "esmm"):
            for sev in ("critical", "warning", "info"):
                want = int(((a["model"] == m) & (a["severity"] == sev)).sum())
                assert fam["ctrlens_open_alerts"][(("model", m), ("severity", sev))] == want
        assert sum(fam["ctrlens_open_alerts"].values()) == len(a) > 0
        for r_ in latest.itertuples(index=False):
            q = s.read(r_.version_id, r_.day, "quality").frame
            for row in q.itertuples(index=False):
                key = (("head", row.head), ("model", r_.model))
                assert fam["ctrlens_auc"][key] == pytest.approx(row.auc)
                assert fam["ctrlens_calibration"][key] == pytest.approx(row.calibration)
                assert fam["ctrlens_mean_pctr"][key] == pytest.approx(row.mean_pred)
            d = s.read(r_.version_id, r_.day, "drift").frame
            f = d[d["subject_kind"] == "field"]
            for field, g in f.groupby("subject"):  # brute force: the max over the field's tests
                sc = [abs(v - ref) / abs(t - ref) for v, ref, t in zip(g["value"], g["reference"], g["threshold"])
                      if np.isfinite(abs(v - ref) / abs(t - ref))]  # fmt: skip
                if sc:
                    assert fam["ctrlens_field_drift_score"][(("field", field), ("model", r_.model))] == pytest.approx(max(sc))
            day0 = dt.datetime.fromisoformat(r_.day).replace(tzinfo=dt.timezone.utc).timestamp()
            assert fam["ctrlens_latest_day_timestamp_seconds"][(("model", r_.model),)] == day0
            runs = s.runs(model=r_.model)
            last = max(runs[runs["status"] == "complete"]["finished_at"]).replace(tzinfo=dt.timezone.utc).timestamp()
            assert fam["ctrlens_last_success_timestamp_seconds"][(("model", r_.model),)] == pytest.approx(last)
    # basic auth and local mode guard it too
    basic = create_app(dashboard_db, basic_auth="ops:pw").server.test_client()
    assert basic.get("/metrics").status_code == 401
    import base64

    ok = basic.get("/metrics", headers={"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()})
    assert ok.status_code == 200 and "ctrlens_auc" in ok.get_data(as_text=True)
    local = create_app(dashboard_db).server.test_client()
    assert local.get("/metrics", headers={"Host": "metrics.example.com"}).status_code == 403
    assert local.get("/metrics").status_code == 200


def test_textfile_is_written_atomically_and_parses(tmp_path: Path, dashboard_db: str, capsys) -> None:
    from ctrlens.cli import main

    target = tmp_path / "textfile" / "ctrlens.prom"
    main(["alerts", "metrics", "--db", dashboard_db, "--textfile", str(target)])
    assert capsys.readouterr().out.strip() == f"wrote {target}"
    fam = _families(target.read_text())
    assert set(fam) >= {"ctrlens_open_alerts", "ctrlens_auc", "ctrlens_field_drift_score", "ctrlens_last_success_timestamp_seconds"}
    assert [p.name for p in target.parent.iterdir()] == ["ctrlens.prom"]  # no temporary file left behind
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_grafana_dashboard_reads_the_exported_metrics() -> None:
    import re

    from ctrlens.notify.prometheus import _HELP

    doc = json.loads((Path(__file__).resolve().parents[1] / "docs" / "grafana" / "ctrlens-dashboard.json").read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"ctrlens_[a-z_]+", e)}
    assert used == set(_HELP)  # every panel reads a metric we export, and every metric has a panel
    assert doc["templating"]["list"][0]["query"]["query"] == "label_values(ctrlens_open_alerts, model)"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_email_over_starttls_and_tls_with_login_verifies_the_server(tmp_path: Path, security: str) -> None:
    from notify_fixtures import self_signed

    cert = self_signed(tmp_path)
    box = Mailbox(login=("ctrlens", "pw-s3cret"), tls=security, cert=cert)
    try:
        with _store(f"sqlite:///{tmp_path / 's.sqlite'}") as s:
            write_day(s, "din", "2026-01-02", [("broken_feature", "f0", "critical", 105.0)])
            smtp = {"host": "127.0.0.1", "port": box.port, "security": security, "username": "ctrlens", "password_env": "PW",
                    "timeout_s": 10}  # fmt: skip
            ch = {"name": "mail", "type": "email", "from": "ctrlens@example.com", "to": ["oncall@example.com"], "smtp": smtp}
            # the server's certificate is not signed by a CA we trust: refused, nothing sent
            untrusted = notifier([ch], env={"PW": "pw-s3cret"}, attempts=1).deliver(s)
            assert not untrusted.ok and "CERTIFICATE_VERIFY_FAILED" in untrusted.channels[0].errors[0] and box.messages == []
            trusted = notifier([{**ch, "smtp": {**smtp, "ca_file": cert[0]}}], env={"PW": "pw-s3cret"}, attempts=1).deliver(s, retry_now=True)
            assert trusted.ok and trusted.channels[0].sent == [1]
            assert len(box.messages) == 1 and box.messages[0]["Subject"] == "[ctrlens] 1 new alert (1 critical): din"
    finally:
        box.close()


def test_a_malformed_secret_url_fails_without_quoting_it(tmp_path: Path) -> None:
    from ctrlens.store import deliveries

    with _store(f"sqlite:///{tmp_path / 's.sqlite'}") as s:
        write_day(s, "din", "2026-01-02", [("broken_feature", "f0", "critical", 105.0)])
        for bad in ("hooks.slack.com/services/T0/B0/s3cret", "http://127.0.0.1:s3cret/x"):
            out = notifier([{"name": "hook", "type": "webhook", "url_env": "U"}], env={"U": bad}, attempts=1).deliver(s, retry_now=True)
            assert not out.ok and "s3cret" not in json.dumps(out.to_dict())
        assert "s3cret" not in deliveries.log(s).to_string()
