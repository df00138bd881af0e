"""The nightly job against planted incidents: each kind is found on its day, named first, and the
clean days stay quiet. One shared world (tests/monitor_fixtures.py), PAL trained once."""

from __future__ import annotations

import math

import pytest

from monitor_fixtures import EXPECTED, INCIDENTS, NightlyWorld, day, nightly_world, outcome, paging  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("i", sorted(INCIDENTS))
def test_incident_is_found_and_named_first(nightly_world: NightlyWorld, i: int) -> None:
    o = outcome(nightly_world.summary, i)
    assert o["status"] == "ok", o["error"]
    found = paging(o)
    kind, field = INCIDENTS[i]
    finding, subjects = EXPECTED[i]
    assert found, f"{kind}:{field} on {day(i)} raised no paging finding; findings: {o['findings']}"
    top = found[0]
    assert top["finding"] == finding and top["subject"] in subjects, (
        f"{kind}:{field} on {day(i)}: top finding {top['finding']}:{top['subject']}, want {finding}:{subjects}; "
        f"all: {[(f['finding'], f['subject'], f['severity']) for f in found]}"
    )


def test_quiet_days_stay_quiet(nightly_world: NightlyWorld) -> None:
    # days 6..10 (warming up, then clean) and the clean day 19
    for i in [*range(6, 11), 19]:
        o = outcome(nightly_world.summary, i)
        assert o["status"] == "ok", o["error"]
        assert not paging(o), f"clean day {day(i)} paged: {paging(o)}"


def test_findings_carry_evidence_links_and_actions(nightly_world: NightlyWorld) -> None:
    from ctrlens.store import Store

    with Store(f"sqlite:///{nightly_world.db}") as s:
        a = s.alerts(model="pal")
        runs = s.runs(model="pal")
        vid = int(runs["version_id"].iloc[0])
        stuck = s.read(vid, day(11), "alert").frame
        drift = s.read(vid, day(11), "drift").frame
    # the store keeps one stateful alert per (finding, subject), opened on its first day
    row = a[(a["finding"] == "broken_feature") & (a["subject"] == "category_id")].iloc[0]
    assert row["state"] == "open" and row["first_seen"] == day(11)
    top = stuck.iloc[0]
    ev = top["evidence_json"]
    assert top["finding"] == "broken_feature" and top["action"]
    urls = [l["url"] for l in ev["links"]]
    assert any(u.startswith("/features?model=pal&day=2026-01-12&field=category_id") for u in urls), urls
    assert "compare=2026-01-11" in urls[0]
    # the evidence quotes the drift rows it rests on: category_id collapsed to one value
    sym = {(s["statistic"]): s for s in ev["symptoms"]}
    assert sym["top1_share"]["value"] == pytest.approx(1.0) and sym["top1_share"]["direction"] == "above"
    assert math.exp(sym["log_cardinality"]["value"]) == pytest.approx(1.0)
    # every drift row states its method, threshold and direction; distances are never p-values
    assert set(drift["direction"]) <= {"above", "below"}
    assert not drift["method"].str.contains("p-value").any()
    psi = drift[(drift["subject_kind"] == "field") & (drift["subject"] == "category_id") & (drift["statistic"] == "psi")].iloc[0]
    assert psi["alert"] and psi["value"] > psi["threshold"] > 0 and psi["method"].startswith("mean+-4sd")


def test_quality_drop_is_attributed_to_the_broken_field(nightly_world: NightlyWorld) -> None:
    from ctrlens.monitor.diagnosis import attribute
    from ctrlens.store import Store

    with Store(f"sqlite:///{nightly_world.db}") as s:
        vid = int(s.runs(model="pal")["version_id"].iloc[0])
        drift = s.read(vid, day(12), "drift").frame  # price shuffled: its importance collapses
    ranked = attribute(drift, "click")  # severities recomputed from the stored rows
    assert ranked and ranked[0]["field"] == "price", ranked[:3]
    assert ranked[0]["input_drift"] >= 1.0  # its dependence on item, category and shop fell


def test_position_bias_numbers(nightly_world: NightlyWorld) -> None:
    o = outcome(nightly_world.summary, 18)
    top = paging(o)[0]
    assert top["finding"] == "position_bias_change"
    # the world's examination exponent eta doubles (0.7 -> 1.4): the observed slope rises accordingly
    from ctrlens.store import Store

    with Store(f"sqlite:///{nightly_world.db}") as s:
        d = s.series("drift", ["value", "reference"], model="pal", subject_kind="position")
    slope = d[d["statistic"] == "ctr_slope"].set_index("day")["value"]
    assert 0.4 < slope[day(17)] < 1.0
    assert slope[day(18)] > slope[day(17)] + 0.3


def test_report_html_and_markdown(nightly_world: NightlyWorld, tmp_path, capsys) -> None:
    from ctrlens.cli import main

    main(["report", "--db", f"sqlite:///{nightly_world.db}", "--model", "pal", "--day", day(11), "--out", str(tmp_path)])
    assert str(tmp_path / f"{day(11)}.html") in capsys.readouterr().out
    html = (tmp_path / f"{day(11)}.html").read_text()
    md = (tmp_path / f"{day(11)}.md").read_text()
    assert "<script" in html and "plotly" in html.lower()  # standalone: plotly inline
    assert "broken_feature" in html and "category_id" in html and "/alerts?alert=" in html
    assert "`broken_feature` · **category_id**" in md and "## Input drift per field" in md
    assert "ALERT" in md
    with pytest.raises(SystemExit) as e:
        main(["report", "--db", f"sqlite:///{nightly_world.db}", "--model", "pal", "--day", "2025-01-01", "--out", str(tmp_path)])
    assert e.value.code == 2 and "no complete nightly run of model 'pal' on 2025-01-01" in capsys.readouterr().err
