"""Dashboard speed on SQLite: every page's callbacks on a year of history for 5 models.

1. History: 365 days x 5 models (about 2,000 neurons over 8 layers, 40 fields, 1-3 heads, a new
   checkpoint every 30 days, three incidents with their alerts), written through ``Store.write_day``
   (``ctrlens.dashboard.sample``; a few minutes; ``--keep PATH`` reuses the file next time).
2. Each page is loaded the way a browser does it -- the router's layout, then every callback that
   fills the page -- through HTTP (``/_dash-update-component`` on the Flask test client, so Dash's
   dispatch and the JSON serialisation of the figures are included), for several models, days and
   layers, with the longest history window (365 days), and with the dashboard's few-second query
   cache emptied before every callback (each pays all its queries). Then interactions: another
   day, layer, neuron, statistic. p50 / p95 per page over all its callback calls, p95 per callback.
   Target: every callback's p95 < 300 ms.
3. The obvious way to draw the neuron heat map (``series`` of every neuron-day row, a pandas pivot,
   plotly with plain JSON lists) against the dashboard's (``Store.heatmap`` + float32 typed arrays).

    .venv/bin/python benchmarks/dashboard_speed.py            # 365 days
    .venv/bin/python benchmarks/dashboard_speed.py --quick    # 60 days

The last line printed is one JSON object with the figures, the target and "met".
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# The fabricated history lives with the tests: 365 days x 5 models x 2,000 neurons is a shape the
# nightly job cannot produce on this machine in a benchmark's time.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ctrlens.store import Store  # noqa: E402
from dashboard_sample import BIG_LAYERS, Incident, SampleSpec, many_fields, write_history  # noqa: E402

MODELS = ("din", "dicm", "esmm", "pal", "xdeepfm")
TARGET_MS = 300.0


def spec(days: int) -> SampleSpec:
    return SampleSpec(
        models=MODELS, days=days, layers=dict(BIG_LAYERS), fields=many_fields(40), retrain_every=30, projection_points=200,
        heads={"esmm": ("ctr", "cvr", "ctcvr"), "pal": ("ctr", "click")}, seed=1,
        incidents=(Incident(int(days * 0.55), "broken_feature", "shop_id"), Incident(int(days * 0.8), "oov_surge", "item_id"),
                   Incident((int(days * 0.9) // 30) * 30, "dead_neurons", "mlp.1")),
    )  # fmt: skip


def build(path: Path, days: int) -> float:
    t = time.perf_counter()
    with Store(f"sqlite:///{path}", create=True) as store:
        total = days * len(MODELS)

        def progress(done: int, n: int) -> None:
            if done % (len(MODELS) * 30) == 0 or done == n:
                print(f"  history: {done}/{total} model-days, {time.perf_counter() - t:.0f} s", flush=True)

        write_history(store, spec(days), progress=progress)
    return time.perf_counter() - t


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def run_pages(app: Any, days: list[str], repeats: int) -> dict[str, dict[str, list[float]]]:
    """page -> callback -> seconds per call."""
    from dashboard_testing import PageSession

    data = app.ctrlens_data
    version = data.data_version()
    mid, late = days[len(days) // 2], days[-1]
    w = "&window=365"
    urls = {
        "overview": [("/", f"?model={m}{w}") for m in ("din", "esmm")] + [("/", f"?model=pal&day={mid}{w}")],
        "alerts": [("/alerts", ""), ("/alerts", "?model=din")] + [("/alerts", f"?alert={a}") for a in data.alerts(limit=3)["alert_id"]],
        "features": [("/features", f"?model={m}{w}") for m in ("din", "xdeepfm")] + [("/features", f"?model=esmm&day={mid}&head=cvr{w}")],
        "neurons": [("/neurons", f"?model={m}&layer={la}{w}") for m, la in (("din", "mlp.0"), ("dicm", "mlp.1"), ("pal", "cin.0"))]
        + [("/neurons", f"?model=din&layer=mlp.1&day={mid}&neuron=7{w}")],
        "probes": [("/probes", f"?model={m}{w}") for m in ("din", "esmm")] + [("/probes", f"?model=esmm&head=ctcvr&day={mid}{w}")],
        "compare": [("/compare", f"?model={m}") for m in ("din", "xdeepfm")] + [("/compare", f"?model=din&compare={mid}&layer=mlp.0")],
    }
    out: dict[str, dict[str, list[float]]] = {}
    for page, targets in urls.items():
        s = PageSession(app, cold=True)  # every callback pays its queries: no help from the 5 s cache
        for _ in range(repeats):
            for path, search in targets:
                s.load(path, search, version)
        # interactions after a load: the controls people touch most
        s.load(*targets[0], version)
        prefix = {"overview": "ov", "features": "ft", "neurons": "nr", "probes": "pb", "compare": "cp", "alerts": "al"}[page]
        for _ in range(repeats):
            if page == "neurons":
                s.update("nr-heatmap.figure", {"nr-stat.value": "frac_zero"})
                s.update("nr-heatmap.figure", {"nr-neuron.value": 11})
                s.update("nr-hist.figure", {"nr-neuron.value": 11})
                s.update("nr-heatmap.figure", {"nr-layer.value": "mlp.1"})
            if page in ("overview", "features", "neurons", "probes", "compare"):
                s.update(f"{prefix}-day.value", {f"{prefix}-prev.n_clicks": 1})  # the day picker
                for cb in s.content_callbacks(prefix):
                    if f"{prefix}-day.value" in s.client.inputs(cb):
                        s.update(cb, {f"{prefix}-day.value": late if s.values.get(f"{prefix}-day.value") != late else mid})
        out[page] = s.timings
    return out


def obvious_heatmap(store: Store, model: str, layer: str) -> tuple[float, float]:
    """Seconds for the obvious heat map (series + pivot + JSON lists) vs the dashboard's (heatmap + typed arrays)."""
    import plotly.graph_objects as go
    from plotly.io.json import to_json_plotly

    from ctrlens.dashboard import figures

    def obvious() -> str:
        s = store.series("neuron_stats", "mean", model=model, layer=layer)
        wide = s.pivot_table(index="neuron", columns="day", values="mean")
        fig = go.Figure(go.Heatmap(z=wide.to_numpy().tolist(), x=list(wide.columns), y=list(wide.index)))
        return to_json_plotly(fig)

    def ours() -> str:
        hm = store.heatmap(layer, "mean", model=model)
        return to_json_plotly(figures.neuron_heatmap(hm, statistic="mean", layer=layer))

    res = []
    for fn in (obvious, ours):
        fn()
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        res.append(statistics.median(ts))
    return res[0], res[1]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 days instead of 365")
    ap.add_argument("--days", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None, help="loads of each URL (default 3; quick 2)")
    ap.add_argument("--keep", type=Path, default=None, help="SQLite file for the history: reused when it exists")
    args = ap.parse_args(argv)
    days = args.days or (60 if args.quick else 365)
    repeats = args.repeats or (2 if args.quick else 3)

    tmp = None
    path = args.keep
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="ctrlens-dashboard-bench-")
        path = Path(tmp.name) / "history.sqlite"
    build_s = None
    if not path.exists():
        print(f"writing {days} days x {len(MODELS)} models of history to {path} ...", flush=True)
        build_s = build(path, days)
    url = f"sqlite:///{path}"
    with Store(url) as store:
        all_days = store.days()
        info = store.info()
        n_neurons = sum(BIG_LAYERS.values())
        print(f"history: {len(all_days)} days, {len(store.models())} models, {n_neurons} neurons per model, "
              f"{info['rows'].get('neuron_stats', 0):,} neuron rows; file {path.stat().st_size / 1e6:.0f} MB", flush=True)  # fmt: skip
        t_obvious, t_ours = obvious_heatmap(store, "din", "mlp.0")

    from ctrlens.dashboard import create_app

    app = create_app(url)
    timings = run_pages(app, all_days, repeats)
    app.ctrlens_data.close()

    pages: dict[str, Any] = {}
    print(f"\n{'page':<10} {'calls':>6} {'p50 ms':>8} {'p95 ms':>8}   slowest callback (p95 ms)")
    for page, cbs in timings.items():
        calls = [t for ts in cbs.values() for t in ts]
        worst = max(cbs, key=lambda k: pct(cbs[k], 95))
        pages[page] = {"calls": len(calls), "p50_ms": round(pct(calls, 50), 1), "p95_ms": round(pct(calls, 95), 1),
                       "worst_callback": worst, "worst_callback_p95_ms": round(pct(cbs[worst], 95), 1),
                       "callbacks": {k: round(pct(v, 95), 1) for k, v in cbs.items()}}  # fmt: skip
        print(f"{page:<10} {len(calls):>6} {pages[page]['p50_ms']:>8.1f} {pages[page]['p95_ms']:>8.1f}   {worst} ({pages[page]['worst_callback_p95_ms']:.1f})")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    max_p95 = max(p["p95_ms"] for p in pages.values())
    worst_cb = max(p["worst_callback_p95_ms"] for p in pages.values())  # the target is per callback
    print(f"\nneuron heat map (din mlp.0, 512 neurons x {len(all_days)} days): obvious series+pivot+JSON lists "
          f"{t_obvious * 1000:.0f} ms, dashboard {t_ours * 1000:.0f} ms ({t_obvious / t_ours:.1f}x)")  # fmt: skip
    print(f"slowest callback p95 {worst_cb:.0f} ms (target < {TARGET_MS:.0f} ms); peak memory {peak_mb:.0f} MB")
    result = {
        "benchmark": "dashboard_speed", "backend": "sqlite", "days": len(all_days), "models": len(MODELS), "neurons_per_model": n_neurons,
        "history_write_s": None if build_s is None else round(build_s, 1), "repeats": repeats,
        "pages": {k: {kk: vv for kk, vv in v.items() if kk != "callbacks"} for k, v in pages.items()},
        "callback_p95_ms": {k: v["callbacks"] for k, v in pages.items()},
        "max_page_p95_ms": max_p95, "max_callback_p95_ms": worst_cb, "target_p95_ms": TARGET_MS, "met": bool(worst_cb < TARGET_MS),
        "heatmap_obvious_ms": round(t_obvious * 1000, 1), "heatmap_dashboard_ms": round(t_ours * 1000, 1),
        "heatmap_speedup": round(t_obvious / t_ours, 2), "peak_memory_mb": round(peak_mb),
    }  # fmt: skip
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
