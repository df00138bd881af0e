"""A real headless Chromium (Selenium) for the dashboard tests, and waiting on Dash pages in it.

Missing Chromium / chromedriver skips with the reason locally and fails in CI (conftest.require_or_skip).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import require_or_skip

CHROMIUM = os.environ.get("CTRLENS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CTRLENS_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT_S = 30

#: True once every figure of ``#page`` has been drawn with data.
GRAPHS_READY = """
const gs = Array.from(document.querySelectorAll('#page .dash-graph'));
const plots = Array.from(document.querySelectorAll('#page .js-plotly-plot'));
return gs.length > 0 && plots.length === gs.length && plots.every(p => p.data && p.data.length > 0 && p.querySelector('.main-svg'));
"""


def chromium(profile: Path) -> Any:
    """A headless Chromium webdriver (1400 x 1800) with its own profile folder; the caller quits it."""
    driver_path = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")
    require_or_skip(bool(Path(CHROMIUM).exists() and driver_path),
                    f"headless Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}); apt-get install chromium chromium-driver")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
              "--window-size=1400,1800", f"--user-data-dir={profile}"):  # fmt: skip
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver_path), options=opts)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium per test module."""
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, cond: Callable[[Any], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``cond(driver)`` until truthy; on timeout an AssertionError saying ``what`` and showing the page."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        # Dash re-renders panels: an element found a moment ago may be replaced while we poll.
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(lambda d: cond(d))
    except Exception:  # noqa: BLE001 - say what we were waiting for
        raise AssertionError(f"timed out waiting for {what}; page: {driver.current_url}\n{driver.find_element('tag name', 'body').text[:1500]}")


def open_page(driver: Any, url: str) -> None:
    """Load ``url`` and wait until the Dash page container has content."""
    driver.get(url)
    wait(driver, lambda d: d.find_elements("css selector", "#page > div"), f"the page at {url}")
