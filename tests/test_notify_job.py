"""The nightly job with notifications, as cron runs it: a webhook that is down does not fail the
job (exit 4, results stored, deliveries retried by the next run), the e-mail digest goes out once,
a rerun and ``--force`` send nothing new, the textfile holds the metrics, no secret is stored.

Days replayed here start from the shared snapshot (days 6-10 done, see tests/monitor_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor_fixtures import NightlyWorld, day, nightly_world, run_cli  # noqa: F401
from notify_fixtures import Hook, Mailbox

pytestmark = pytest.mark.slow


def test_nightly_notifies_once_through_a_down_channel_a_rerun_and_force(nightly_world: NightlyWorld, tmp_path: Path,
                                                                       monkeypatch) -> None:  # fmt: skip
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob
    from ctrlens.store import Store, deliveries

    hook = Hook(plan=[503] * 50)  # down during the first run
    box = Mailbox()
    monkeypatch.setenv("CTRLENS_TEST_HOOK", hook.url + "/s3cret-hook")
    prom = tmp_path / "textfile" / "ctrlens.prom"
    try:
        cfg_path = nightly_world.config(
            tmp_path, db=nightly_world.snapshot, report_dir=str(tmp_path / "reports"),
            notify={"base_url": "http://dash.example:8050", "retry": {"attempts": 2, "backoff_s": 0},
                    "channels": [{"name": "team-hook", "type": "webhook", "format": "json", "url_env": "CTRLENS_TEST_HOOK"},
                                 {"name": "oncall-mail", "type": "email", "from": "ctrlens@example.com", "to": ["oncall@example.com"],
                                  "smtp": {"host": "127.0.0.1", "port": box.port, "security": "none"}}]},
            metrics={"textfile": str(prom)},
        )  # fmt: skip
        # 1. the day with a broken category_id; the webhook answers 503: exit 4, results stored
        r = run_cli("nightly", "--config", str(cfg_path), "--day", day(11), "--json", "--quiet")
        assert r.returncode == 4, r.stderr
        out = json.loads(r.stdout)
        assert out["exit_code"] == 4 and out["outcomes"][0]["status"] == "ok"
        new = {a["alert_id"] for a in out["new_alerts"]}
        assert new and out["new_alerts"][0]["subject"] == "category_id"
        hook_sum = next(c for c in out["notify"]["channels"] if c["channel"] == "team-hook")
        assert set(hook_sum["failed"]) == new and hook_sum["sent"] == [] and "HTTP 503" in hook_sum["errors"][0]
        # 2 tries each right after the day, 2 more at the end of the run (backoff 0 here: due again at once)
        assert all(p["status"] == 503 for p in hook.posts) and len(hook.posts) == 4 * len(new)
        assert "s3cret-hook" not in r.stdout + r.stderr
        with Store(f"sqlite:///{tmp_path / 'ctrlens.sqlite'}") as s:
            assert day(11) in s.days(model="pal", run_kind="nightly")  # the results are there
            params = json.dumps(s.runs(model="pal", days=day(11))["params"].iloc[0])
            assert "CTRLENS_TEST_HOOK" in params and "s3cret-hook" not in params  # the variable's name, not the secret
        # the digest went out once, the alerts ranked as in the report, the report attached
        assert len(box.messages) == 1
        m = box.messages[0]
        body = m.get_body(("plain",)).get_content()
        first = next(x for x in body.splitlines() if x.startswith("1. "))
        assert "broken_feature · category_id" in first and "pal" in first and day(11) in first
        assert "Open: http://dash.example:8050/alerts?model=pal&alert=" in body
        assert sorted(a.get_filename() for a in m.iter_attachments()) == [f"pal-{day(11)}.html", f"pal-{day(11)}.md"]
        fam = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
        opened = {tuple(sorted(s.labels.items())): s.value for s in fam["ctrlens_open_alerts"].samples}
        with Store(f"sqlite:///{tmp_path / 'ctrlens.sqlite'}") as s:
            a = s.alerts(states=("open",))
            for sev in ("critical", "warning", "info"):
                assert opened[(("model", "pal"), ("severity", sev))] == (a["severity"] == sev).sum()
            assert sum(opened.values()) == len(a) >= len(new)
        failing = {s.labels["channel"]: s.value for s in fam["ctrlens_notify_failing_deliveries"].samples}
        assert failing == {"team-hook": len(new)}

        # 2. the webhook is back; a rerun of the day (skipped) delivers what failed, once
        hook.plan.clear()
        cfg = load_config(cfg_path)
        again = NightlyJob(cfg).run(day=day(11))
        assert again.outcomes[0].status == "skipped" and again.exit_code == 0
        ok = hook.ok_posts("/s3cret-hook")
        assert {p["json"]["alerts"][0]["alert_id"] for p in ok} == new and len(ok) == len(new)
        assert len(box.messages) == 1
        # 3. --force recomputes the day (the alert rows are rewritten): nothing is sent again
        forced = NightlyJob(cfg).run(day=day(11), force=True)
        assert forced.outcomes[0].status == "ok" and forced.exit_code == 0
        assert len(hook.ok_posts()) == len(new) and len(box.messages) == 1
        with Store(f"sqlite:///{tmp_path / 'ctrlens.sqlite'}") as s:
            log = deliveries.log(s)
            assert (log[log["status"] == "delivered"].groupby(["channel", "alert_id"]).size() == 1).all()
            assert set(log[(log["channel"] == "team-hook") & (log["status"] == "delivered")]["alert_id"]) == new
            assert deliveries.failing(s).empty
    finally:
        hook.close()
        box.close()
