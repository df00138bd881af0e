"""Screenshots of every dashboard page for docs/dashboard.md (docs/img/dashboard-<page>.png).

Photographs the store the demo's real nightly job wrote (``./demo.sh --no-serve --model din
--model pal`` first: synthetic world, trained models, planted incidents), served on 127.0.0.1, in
headless Chromium. The views shown (model, alert, day, layer) are picked from what the store holds::

    .venv/bin/python scripts/screenshots.py [--db sqlite:///demo-out/ctrlens.sqlite] [--out docs/img]
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
    ap.add_argument("--db", default=f"sqlite:///{ROOT / 'demo-out' / 'ctrlens.sqlite'}", help="store written by the demo")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--width", type=int, default=1400)
    args = ap.parse_args(argv)

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    from ctrlens.dashboard import create_app
    from ctrlens.store import Store

    sys.path.insert(0, str(ROOT / "tests"))
    from dashboard_testing import ServerThread

    url = args.db
    with Store(url) as store:
        alerts = store.alerts()
        if alerts.empty:
            print(f"{url}: no alerts stored; run ./demo.sh --no-serve first", file=sys.stderr)
            return 2
        critical = alerts[alerts["severity"] == "critical"].sort_values("day")
        first = (critical if not critical.empty else alerts).iloc[0]
        model, alert_day = str(first["model"]), str(first["day"])
        days = sorted(str(d) for d in store.days(model=model))
        layers = store.read_day(int(store.versions(model)["version_id"].iloc[-1]), days[-1])["layer_stats"].frame["layer"].tolist()
        field_alerts = alerts[(alerts["model"] == model) & alerts["finding"].isin(["broken_feature", "oov_surge", "distribution_shift"])]
    layer = "mlp.1" if "mlp.1" in layers else layers[min(1, len(layers) - 1)]
    i = days.index(alert_day) if alert_day in days else len(days) - 1
    field = str(field_alerts.iloc[0]["subject"]) if not field_alerts.empty else ""
    fday = str(field_alerts.iloc[0]["day"]) if not field_alerts.empty else alert_day
    tmp = Path(tempfile.mkdtemp(prefix="ctrlens-screenshots-"))
    try:
        pages = {
            "overview": f"/?model={model}",
            "alerts": f"/alerts?alert={int(first['alert_id'])}",
            "features": f"/features?model={model}&day={fday}" + (f"&field={field}&compare={days[max(days.index(fday) - 1, 0)]}" if field else ""),
            "neurons": f"/neurons?model={model}&day={alert_day}&layer={layer}&neuron=5",
            "probes": f"/probes?model={model}&day={days[-1]}",
            "compare": f"/compare?model={model}&day={alert_day}&compare={days[max(i - 1, 0)]}&layer={layer}",
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
