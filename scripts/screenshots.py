"""Screenshots of every dashboard page for docs/dashboard.md (docs/img/dashboard-<page>.png).

Fills a throw-away SQLite store with a synthetic history (``ctrlens.dashboard.sample``: 3 models,
45 days, a broken field, an OOV surge and a checkpoint with dead units), serves the dashboard on
127.0.0.1 and photographs each page in headless Chromium::

    .venv/bin/python scripts/screenshots.py [--out docs/img] [--width 1400]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CTRLENS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CTRLENS_CHROMEDRIVER", "/usr/bin/chromedriver")

READY = """
const gs = Array.from(document.querySelectorAll('#page .dash-graph'));
const plots = Array.from(document.querySelectorAll('#page .js-plotly-plot'));
return document.querySelector('#page > div') !== null && plots.length === gs.length &&
       plots.every(p => p.data && p.querySelector('.main-svg'));
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--width", type=int, default=1400)
    args = ap.parse_args(argv)

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    from ctrlens.dashboard import create_app
    from ctrlens.dashboard.sample import Incident, SampleSpec, write_history
    from ctrlens.dashboard.testing import ServerThread
    from ctrlens.store import Store

    spec = SampleSpec(models=("din", "dicm", "esmm"), days=45, retrain_every=14, seed=11,
                      incidents=(Incident(30, "broken_feature", "shop_id"), Incident(36, "oov_surge", "item_id"),
                                 Incident(42, "dead_neurons", "mlp.1")))  # fmt: skip
    day = spec.day
    tmp = Path(tempfile.mkdtemp(prefix="ctrlens-screenshots-"))
    try:
        url = f"sqlite:///{tmp / 'ctrlens.sqlite'}"
        with Store(url, create=True) as store:
            write_history(store, spec)
            alerts = store.alerts()
        broken = int(alerts.loc[alerts["finding"] == "broken_feature", "alert_id"].iloc[0])
        pages = {
            "overview": "/?model=din",
            "alerts": f"/alerts?alert={broken}",
            "features": f"/features?model=din&day={day(32)}&field=shop_id&compare={day(29)}",
            "neurons": f"/neurons?model=din&day={day(43)}&layer=mlp.1&neuron=5",
            "probes": f"/probes?model=esmm&day={day(40)}",
            "compare": f"/compare?model=din&day={day(43)}&compare={day(41)}&layer=mlp.1",
        }
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
                  "--hide-scrollbars", f"--window-size={args.width},1200", f"--user-data-dir={tmp / 'profile'}"):  # fmt: skip
            opts.add_argument(a)
        driver_path = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")
        driver = webdriver.Chrome(service=Service(driver_path), options=opts)
        args.out.mkdir(parents=True, exist_ok=True)
        try:
            with ServerThread(create_app(url)) as base:
                for name, path in pages.items():
                    driver.set_window_size(args.width, 1200)
                    driver.get(base + path)
                    WebDriverWait(driver, 60, poll_frequency=0.2).until(lambda d: d.execute_script(READY))
                    if name == "alerts":
                        WebDriverWait(driver, 30).until(lambda d: d.find_elements("css selector", "#al-evidence td"))
                    time.sleep(1.0)  # let plotly finish its transitions
                    height = driver.execute_script(
                        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
                    chrome = 1200 - driver.execute_script("return window.innerHeight")  # the window is taller than its viewport
                    driver.set_window_size(args.width, min(max(height, 800), 4000) + chrome)
                    time.sleep(0.8)
                    target = args.out / f"dashboard-{name}.png"
                    driver.save_screenshot(str(target))
                    print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: {path}")
        finally:
            driver.quit()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
