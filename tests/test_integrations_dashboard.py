"""The torchrec and DeepCTR-Torch models on the dashboard, next to the reference model, in a real headless
Chromium: the health matrix lists all four, their features / neurons / probes pages draw their own fields
and layers, and the stuck-feature alert links to its evidence."""

from __future__ import annotations

import shutil

import pytest

from integrations_fixtures import need
from integrations_world import OWN, REFERENCE, STUCK_FIELD, integration_world  # noqa: F401
from browser_fixtures import GRAPHS_READY, browser, open_page, wait  # noqa: F401 - browser is a fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(integration_world, tmp_path_factory):
    need("ctrlens.integrations.torchrec")
    from ctrlens.dashboard import create_app
    from dashboard_testing import ServerThread

    db = tmp_path_factory.mktemp("integrations-dashboard") / "ctrlens.sqlite"
    shutil.copyfile(integration_world.db, db)  # the job is done: no WAL to carry
    app = create_app(f"sqlite:///{db}", refresh_s=60)
    with ServerThread(app) as url:
        yield url


PAGES = {  # page -> what it must show
    "/features?model=dlrm&field=hist_item_id": "hist_item_id",
    "/neurons?model=dlrm&layer=over_arch.0": "over_arch.0",
    "/neurons?model=din&layer=attention.0": "attention.0",
    "/features?model=din&field=price": "price",
}
#: every figure drawn with data, except the probe decay curve (the nightly job runs no decay protocol)
DRAWN = GRAPHS_READY.replace("#page .dash-graph'", "#page .dash-graph:not(#pb-decay)'").replace(
    "#page .js-plotly-plot'", "#page .dash-graph:not(#pb-decay) .js-plotly-plot'")


def test_overview_shows_the_library_models_next_to_the_reference(browser, served) -> None:
    open_page(browser, served + "/")
    wait(browser, lambda d: d.execute_script(GRAPHS_READY), "the overview figures")
    ys = browser.execute_script("const g = document.querySelector('#ov-health .js-plotly-plot'); return g.data[0].y;")
    assert set(ys) == {*OWN, REFERENCE}
    text = wait(browser, lambda d: d.find_element("id", "ov-alert-list").text, "the open alerts")
    for m in (*OWN, REFERENCE):
        assert f"{m} / broken_feature / {STUCK_FIELD}" in text, m


@pytest.mark.parametrize("path", list(PAGES))
def test_pages_of_the_library_models_draw_their_own_fields_and_layers(browser, served, path) -> None:
    open_page(browser, served + path)
    wait(browser, lambda d: d.execute_script(GRAPHS_READY), f"{path}: every figure drawn with data")
    assert not browser.find_elements("id", "friendly-error"), path
    assert PAGES[path] in browser.find_element("id", "page").text, path


def test_probe_auc_by_layer_of_deepfm_lists_its_layers(browser, served) -> None:
    open_page(browser, served + "/probes?model=deepfm")
    wait(browser, lambda d: d.execute_script(DRAWN), "the probe figures")
    names = browser.execute_script("const g = document.querySelector('#pb-by-layer .js-plotly-plot'); "
                                   "return g.data.flatMap(t => [].concat(t.x || [], t.y || [], [t.name || '']));")  # fmt: skip
    assert {"fm", "dnn.0", "dnn.1"} <= {str(n) for n in names}


def test_the_stuck_feature_alert_of_dlrm_opens_its_evidence(browser, served) -> None:
    open_page(browser, served + "/alerts?model=dlrm")
    link = wait(browser, lambda d: next((a for a in d.find_elements("css selector", "#al-table a")
                                          if f"{STUCK_FIELD} looks broken" in a.text), None), "the broken-field alert")  # fmt: skip
    link.click()
    wait(browser, lambda d: d.find_elements("css selector", "#al-evidence td"), "the alert's evidence table")
    assert STUCK_FIELD in browser.find_element("id", "al-evidence").text
