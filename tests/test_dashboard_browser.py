"""The dashboard in a real headless Chromium (Selenium), served on 127.0.0.1 from the store that the
real nightly job wrote (tests/monitor_fixtures.py: PAL watched for 14 days, eight planted incidents).

Skips with the reason when Chromium / chromedriver are missing -- and fails instead when CI=true.
"""

from __future__ import annotations

import pytest

from ctrlens.store import Store

from browser_fixtures import GRAPHS_READY, browser, open_page, wait  # noqa: F401 - browser is a fixture
from monitor_fixtures import TRAIN_DAYS, copy_db, day, nightly_world  # noqa: F401 - a fixture

DAYS = [day(i) for i in range(TRAIN_DAYS, 20)]  # the days the nightly job watched


@pytest.fixture(scope="module")
def served(nightly_world, tmp_path_factory: pytest.TempPathFactory):
    """(base URL, store URL) of a dashboard serving a copy of the store the real nightly job wrote
    (PAL over 14 days with planted incidents, see monitor_fixtures), refreshing every second."""
    from ctrlens.dashboard import create_app
    from dashboard_testing import ServerThread

    path = tmp_path_factory.mktemp("dashboard-browser") / "ctrlens.sqlite"
    copy_db(nightly_world.db, path)
    db = f"sqlite:///{path}"
    app = create_app(db, refresh_s=1)
    with ServerThread(app) as url:
        yield url, db


#: page -> (figures, figures with data). The probes page's decay figure is empty: the nightly job scores
#: each day's probes on that day only (no later-day decay runs), and the page says so.
PAGES = {"/": (2, 2), "/features?model=pal": (4, 4), "/neurons?model=pal&layer=mlp.1": (5, 5), "/probes?model=pal": (3, 2),
         "/compare?model=pal": (5, 5)}  # fmt: skip

DRAWN = """
const gs = Array.from(document.querySelectorAll('#page .dash-graph'));
const plots = Array.from(document.querySelectorAll('#page .js-plotly-plot'));
if (gs.length === 0 || plots.length !== gs.length || !plots.every(p => p.data && p.querySelector('.main-svg'))) return null;
return [plots.length, plots.filter(p => p.data.length > 0).length];
"""


def test_every_page_loads_with_data(browser, served, tmp_path):
    url, _ = served
    for path, (n, n_data) in PAGES.items():
        open_page(browser, url + path)
        drawn = wait(browser, lambda d: d.execute_script(DRAWN), f"{path}: every figure drawn")
        assert drawn == [n, n_data], path
        assert not browser.find_elements("id", "friendly-error"), path
        browser.save_screenshot(str(tmp_path / f"{path.strip('/').split('?')[0] or 'overview'}.png"))
    open_page(browser, url + "/alerts")
    wait(browser, lambda d: len(d.find_elements("css selector", "#al-table tbody tr")) >= 4, "the alert list")
    text = browser.find_element("id", "al-table").text
    assert "Field category_id looks broken" in text and "Out-of-vocabulary surge in item_id" in text


def test_click_on_an_alert_opens_its_evidence_then_its_view(browser, served):
    url, _ = served
    open_page(browser, url + "/alerts")
    link = wait(browser, lambda d: next((a for a in d.find_elements("css selector", "#al-table a") if "category_id looks broken" in a.text), None),
                 "the broken-field alert in the list")  # fmt: skip
    link.click()
    wait(browser, lambda d: d.find_elements("css selector", "#al-evidence td"), "the alert's evidence table")
    assert "Field category_id looks broken" in browser.find_element("id", "al-title").text
    assert "alert=" in browser.current_url
    evidence = browser.find_element("id", "al-evidence").text
    assert "category_id" in evidence and "log_cardinality" in evidence and "psi" in evidence  # what collapsed, with numbers
    browser.find_element("link text", "field category_id").click()
    wait(browser, lambda d: "/features" in d.current_url and d.execute_script(GRAPHS_READY), "the Features view of the field")
    assert "field=category_id" in browser.current_url and f"day={day(11)}" in browser.current_url
    assert "category_id" in browser.find_element("id", "ft-field").text  # the field is selected


def _title(driver, graph_id: str) -> str:
    return driver.execute_script(f"const g = document.querySelector('#{graph_id} .js-plotly-plot'); "
                                 "return g && g.layout && g.layout.title ? g.layout.title.text : '';")  # fmt: skip


def test_day_picker_changes_the_figures(browser, served):
    url, _ = served
    open_page(browser, url + "/neurons?model=pal&layer=mlp.1")
    wait(browser, lambda d: DAYS[-1] in _title(d, "nr-proj"), "the projection of the latest day")
    browser.find_element("id", "nr-day").click()  # the dropdown
    option = wait(browser, lambda d: d.find_element("xpath", f"//label[contains(@class,'dash-dropdown-option')][.//input[@value='{DAYS[4]}']]"),
                   "the day options")  # fmt: skip
    option.click()
    wait(browser, lambda d: DAYS[4] in _title(d, "nr-proj"), f"the projection of {DAYS[4]}")
    wait(browser, lambda d: f"day={DAYS[4]}" in d.current_url, "the day in the URL")
    browser.find_element("id", "nr-prev").click()  # the "previous day" button
    wait(browser, lambda d: DAYS[3] in _title(d, "nr-proj"), f"the projection of {DAYS[3]}")
    hm = browser.execute_script("const g = document.querySelector('#nr-heatmap .js-plotly-plot'); return g.data[0].x;")
    assert list(hm)[-1] == DAYS[3]  # the heat map's history now ends on the picked day


def test_invalid_url_parameter_shows_the_friendly_message(browser, served):
    url, _ = served
    open_page(browser, url + "/neurons?model=pal&layer=nope")
    box = wait(browser, lambda d: d.find_elements("id", "friendly-error"), "the friendly message")[0]
    assert "Unknown layer 'nope' for model 'pal'" in box.text and "mlp.1" in box.text
    assert "Traceback" not in browser.page_source
    open_page(browser, url + "/features?model=pal&day=2026-02-30")
    box = wait(browser, lambda d: d.find_elements("id", "friendly-error"), "the friendly message")[0]
    assert "not a calendar date" in box.text


def test_acknowledge_changes_the_state_in_the_database(browser, served):
    url, db = served
    with Store(db) as s:
        a = s.alerts()
    aid = int(a.loc[a["finding"] == "oov_surge", "alert_id"].iloc[0])
    open_page(browser, url + f"/alerts?alert={aid}")
    wait(browser, lambda d: d.find_elements("id", "al-current-state"), "the alert")
    assert browser.find_element("id", "al-current-state").text == "open"
    browser.find_element("id", "al-note").send_keys("checking the id mapping")
    browser.find_element("id", "al-ack").click()
    wait(browser, lambda d: "now acknowledged" in d.find_element("id", "al-action-msg").text, "the confirmation")
    wait(browser, lambda d: d.find_element("id", "al-current-state").text == "acknowledged", "the new state in the page")
    with Store(db) as s:
        row = s.alerts().set_index("alert_id").loc[aid]
        ev = s.alert_events(aid)
    assert row["state"] == "acknowledged" and row["state_changed_by"] == "local"
    assert ev["event"].tolist()[-1] == "acknowledged" and ev["note"].tolist()[-1] == "checking the id mapping"


def test_new_results_appear_without_reloading_the_page(browser, nightly_world, tmp_path):
    """The nightly job writes a day while the page is open: the page shows it without a reload."""
    from ctrlens.dashboard import create_app
    from ctrlens.monitor import load_config
    from ctrlens.monitor.job import NightlyJob
    from dashboard_testing import ServerThread

    cfg = nightly_world.config(tmp_path / "job", db=nightly_world.snapshot)  # the store as it was after day 10
    app = create_app(f"sqlite:///{tmp_path / 'job' / 'ctrlens.sqlite'}", refresh_s=1)
    with ServerThread(app) as url:
        open_page(browser, url + "/")
        wait(browser, lambda d: day(10) in d.find_element("id", "ov-summary").text, "the summary")
        browser.execute_script("window.__ctrlens_marker = 42;")
        summary = NightlyJob(load_config(cfg)).run(day=day(11))
        assert summary.exit_code in (0, 1), summary.to_dict()  # 1: it alerted (the stuck category_id)
        wait(browser, lambda d: day(11) in d.find_element("id", "ov-summary").text, "the new day in the summary", timeout=20)
        wait(browser, lambda d: d.execute_script(GRAPHS_READY), "the figures after the refresh")
        assert browser.execute_script("return window.__ctrlens_marker;") == 42  # same page: no reload
