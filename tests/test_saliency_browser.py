"""The standalone saliency page renders in a real (headless) Chromium, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctrlens.saliency import report

from browser_fixtures import chromium
from saliency_fixtures import UserModel, attach_user_model, random_batch, train

#: The docs' picture of the report is rewritten only on request (CTRLENS_WRITE_SCREENSHOTS=1), so a test run
#: leaves the checkout clean.
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "saliency-report.png"


@pytest.mark.browser
def test_html_report_renders_in_chromium(tmp_path):
    m = UserModel(seed=0)
    view = attach_user_model(m)
    train(m, view, [random_batch(512, seed=s) for s in range(4)], steps=120, lr=0.01)
    day = [random_batch(400, seed=100)]
    rep = report(view, day, day="2026-01-09", method="input_x_gradient", baseline="mean")
    ref = report(view, [random_batch(400, seed=101)], day="2026-01-08", method="input_x_gradient", baseline="mean")
    page = rep.to_html(tmp_path / "saliency.html", reference=ref)

    driver = chromium(tmp_path / "chromium-profile")
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
        shot = DOCS_SCREENSHOT if os.environ.get("CTRLENS_WRITE_SCREENSHOTS") == "1" else tmp_path / "saliency-report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()
