"""The standalone saliency page renders in a real (headless) Chromium, offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ctrlens.saliency import report

from saliency_fixtures import UserModel, attach_user_model, random_batch, train

CHROMIUM = os.environ.get("CTRLENS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CTRLENS_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "saliency-report.png"


def _browser_or_skip():
    have = Path(CHROMIUM).exists() and (Path(CHROMEDRIVER).exists() or shutil.which("chromedriver"))
    if not have:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"headless Chromium is required in CI: {CHROMIUM} / {CHROMEDRIVER} not found")
        pytest.skip(f"headless Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}); apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-dev-shm-usage", "--window-size=1200,1400"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")), options=opts)


@pytest.mark.browser
def test_html_report_renders_in_chromium(tmp_path):
    m = UserModel(seed=0)
    view = attach_user_model(m)
    train(m, view, [random_batch(512, seed=s) for s in range(4)], steps=120, lr=0.01)
    day = [random_batch(400, seed=100)]
    rep = report(view, day, day="2026-01-09", method="input_x_gradient", baseline="mean")
    ref = report(view, [random_batch(400, seed=101)], day="2026-01-08", method="input_x_gradient", baseline="mean")
    page = rep.to_html(tmp_path / "saliency.html", reference=ref)

    driver = _browser_or_skip()
    try:
        driver.get(page.as_uri())
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#saliency-chart .main-svg"))
        assert driver.find_elements(By.CSS_SELECTOR, ".plotly")
        bars = driver.find_elements(By.CSS_SELECTOR, "#saliency-chart g.point")
        assert len(bars) == len(view.fields)  # one bar per field, drawn by plotly.js
        assert driver.find_elements(By.CSS_SELECTOR, "#saliency-compare .main-svg")
        assert "user_model" in driver.title and "2026-01-09" in driver.page_source
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()
