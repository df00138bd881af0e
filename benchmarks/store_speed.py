"""Store speed on SQLite: writing one day, and the dashboard's queries over a year of history.

1. One day's results for 5 models (about 2,000 neurons each over 8 layers, 40 fields, 3 heads:
   ~4,500 rows per model) written with ``Store.write_day`` vs the obvious ORM loop (one
   ``session.add`` per row, one commit per model like write_day's one transaction per model)
   into an identical database; best of 5. Targets: >= 10x, < 1 s.
2. 365 days x 5 models of history (a new checkpoint every 30 days), then each dashboard query
   timed (median of 5 runs after a warm-up). Target: < 100 ms each.

    .venv/bin/python benchmarks/store_speed.py            # full: 365 days (a few minutes)
    .venv/bin/python benchmarks/store_speed.py --quick    # 60 days

The last line printed is one JSON object with the figures, targets and "met" booleans.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ctrlens.results import COLUMNS, Result
from ctrlens.store import Store
from ctrlens.store.models import RESULT_MODELS, Run

MODELS = ["din", "dicm", "esmm", "pal", "xdeepfm"]
LAYERS = {"mlp.0": 512, "mlp.1": 512, "mlp.2": 256, "mlp.3": 256, "attention.hist_item_id.0": 256, "cin.0": 128,
          "mlp.4": 64, "mlp.5": 16}  # fmt: skip
FIELDS = [f"field_{i:02d}" for i in range(40)]
HEADS = ["ctr", "cvr", "ctcvr"]
METHODS = ["saliency", "input_x_gradient", "integrated_gradients"]
TABLES = ["item", "category", "shop", "user", "hour", "age", "gender", "position"]
FINDINGS = ["distribution_shift", "oov_surge", "dead_neurons", "auc_drop", "saliency_shift"]


def day_results(rng: np.random.Generator, day: str) -> list[Result]:
    """One model-day of realistic results (the shapes the analyses hand over)."""
    nf, nl = len(FIELDS), len(LAYERS)
    out = [
        Result("field_stats", pd.DataFrame({
            "field": FIELDS, "kind": "sparse", "rows": 1_000_000, "coverage": rng.random(nf), "missing_rate": rng.random(nf),
            "oov_rate": rng.random(nf) / 10, "cardinality": rng.integers(10, 100_000, nf), "mean": np.nan, "std": np.nan,
            "top_json": [[[int(v), float(s)] for v, s in zip(rng.integers(2, 1000, 10), rng.random(10) / 10)] for _ in FIELDS],
            "hist_json": [{"edges": None, "counts": rng.integers(0, 1000, 32).tolist()} for _ in FIELDS],
        }), {"day": day}),  # fmt: skip
    ]
    layer = np.repeat(list(LAYERS), list(LAYERS.values()))
    neuron = np.concatenate([np.arange(w) for w in LAYERS.values()])
    n = len(layer)
    stats = rng.normal(size=(8, n))
    out.append(Result("neuron_stats", pd.DataFrame({
        "layer": layer, "neuron": neuron, "count": 1_000_000, "mean": stats[0], "std": np.abs(stats[1]), "min": stats[2] - 3,
        "max": stats[3] + 3, "frac_zero": rng.random(n), "frac_saturated": rng.random(n) / 100, "mean_click": stats[4],
        "mean_noclick": stats[5], "hist_json": [h.tolist() for h in rng.integers(0, 5000, (n, 20))],
    })))  # fmt: skip
    out.append(Result("layer_stats", pd.DataFrame({
        "layer": list(LAYERS), "activation": "relu", "n_neurons": list(LAYERS.values()), "count": 1_000_000,
        "dead_fraction": rng.random(nl) / 10, "saturated_fraction": 0.0, "mean_abs": rng.random(nl),
        "edges_json": [np.linspace(-4, 4, 21).tolist()] * nl,
        "projection_json": [{"x": rng.random(200).round(4).tolist(), "y": rng.random(200).round(4).tolist(),
                             "label": rng.integers(0, 2, 200).tolist()} for _ in LAYERS],
    })))  # fmt: skip
    nt = len(TABLES)
    out.append(Result("embedding_health", pd.DataFrame({
        "table": TABLES, "rows": 100_000, "dim": 16, "seen_rows": rng.integers(1000, 100_000, nt), "never_updated_frac": rng.random(nt),
        "norm_mean": rng.random(nt), "norm_p50": rng.random(nt), "norm_p99": rng.random(nt), "effective_rank": rng.random(nt) * 16,
        "info_abundance": rng.random(nt) * 16, "hist_json": [rng.integers(0, 100, 20).tolist() for _ in TABLES],
    })))  # fmt: skip
    probes = [(lay, h) for lay in LAYERS for h in HEADS]
    out.append(Result("probe", pd.DataFrame({
        "layer": [p[0] for p in probes], "head": [p[1] for p in probes], "train_day": day, "eval_day": day, "n_train": 50_000,
        "n_eval": 50_000, "auc": rng.random(len(probes)), "logloss": rng.random(len(probes)), "model_auc": 0.75,
        "gap": rng.random(len(probes)),
    })))  # fmt: skip
    sal = [(f, h, m) for f in FIELDS for h in HEADS for m in METHODS]
    ns = len(sal)
    out.append(Result("saliency", pd.DataFrame({
        "field": [s[0] for s in sal], "head": [s[1] for s in sal], "method": [s[2] for s in sal], "rows": 4096,
        "mean": rng.random(ns), "std": rng.random(ns), "p50": rng.random(ns), "p90": rng.random(ns), "share": rng.random(ns) / nf,
        "delta": rng.random(ns) / 100,
    })))  # fmt: skip
    out.append(Result("quality", pd.DataFrame({
        "head": HEADS, "rows": 1_000_000, "positives": 30_000, "auc": 0.7 + rng.random(3) / 10, "gauc": 0.6 + rng.random(3) / 10,
        "logloss": rng.random(3), "ne": rng.random(3), "calibration": 1 + rng.normal(size=3) / 20, "mean_pred": rng.random(3) / 10,
        "actual_rate": rng.random(3) / 10, "score_hist_json": [{"edges": np.linspace(0, 3, 31).tolist(),
                                                                "counts": rng.integers(0, 1000, 30).tolist()} for _ in HEADS],
    })))  # fmt: skip
    subjects = [("field", f, "psi") for f in FIELDS] + [("neuron", f"{lay}/{i}", "js") for lay, i in zip(layer, neuron)]
    nd = len(subjects)
    value = rng.random(nd) / 5
    out.append(Result("drift", pd.DataFrame({
        "subject_kind": [s[0] for s in subjects], "subject": [s[1] for s in subjects], "statistic": [s[2] for s in subjects],
        "method": "ref_mean+4std(trailing 14d)", "value": value, "reference": value / 2, "threshold": 0.18, "direction": "above",
        "alert": value > 0.18,
    })))  # fmt: skip
    out.append(alert_result(rng))
    return out


def alert_result(rng: np.random.Generator) -> Result:
    """0-5 alerts on a few subjects (so alerts persist, reappear and vanish over days)."""
    k = int(rng.integers(0, 6))
    picks = sorted({(FINDINGS[int(rng.integers(0, 5))], FIELDS[int(rng.integers(0, 8))]) for _ in range(k)})
    return Result("alert", pd.DataFrame({
        "finding": [p[0] for p in picks], "subject": [p[1] for p in picks],
        "severity": [["critical", "warning", "info"][int(rng.integers(0, 3))] for _ in picks], "score": rng.random(len(picks)),
        "title": [f"{f} on {s}" for f, s in picks], "evidence_json": [{"psi": float(rng.random()), "link": f"/fields/{s}"} for _, s in picks],
        "action": "check the upstream pipeline",
    }, columns=list(COLUMNS["alert"])))  # fmt: skip


def vary(r: Result, rng: np.random.Generator) -> Result:
    """A day's copy of a template result: the numbers the queries read move, the rest is reused."""
    if r.kind == "neuron_stats":
        return Result(r.kind, r.frame.assign(mean=r.frame["mean"] + rng.normal() / 10), r.meta)
    if r.kind == "quality":
        return Result(r.kind, r.frame.assign(auc=r.frame["auc"] + rng.normal() / 100), r.meta)
    if r.kind == "alert":
        return alert_result(rng)
    return r


def orm_write(store: Store, vids: list[int], day: str, results: dict[int, list[Result]]) -> None:
    """The obvious approach: one ORM object and ``session.add`` per row (``to_dict("records")``,
    JSON columns through ``json.dumps``), one commit per model -- the same unit of work as
    ``write_day`` (one transaction per model version and day)."""
    from sqlalchemy.orm import Session

    for vid in vids:
        with Session(store.engine) as session:
            now = dt.datetime.now()
            run = Run(model_version_id=vid, day=dt.date.fromisoformat(day), run_kind="nightly", status="complete",
                      started_at=now, finished_at=now, ctrlens_version="x", host="h", params_json="{}")  # fmt: skip
            session.add(run)
            session.flush()
            for r in results[vid]:
                cls = RESULT_MODELS[r.kind]
                json_cols = [c for c, t in COLUMNS[r.kind].items() if t == "json"]
                for pos, rec in enumerate(r.frame.to_dict("records")):
                    for c in json_cols:
                        rec[c] = json.dumps(rec[c])
                    session.add(cls(run_id=run.id, pos=pos, **rec))
            session.commit()


def timed(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    out = fn()  # warm-up (compiles statements, fills the page cache)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 days of history instead of 365")
    ap.add_argument("--days", type=int, default=None, help="days of history (default 365, --quick 60)")
    ap.add_argument("--write-only", action="store_true", help="only part 1 (writing one day)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the history database in this folder")
    args = ap.parse_args()
    n_days = args.days or (60 if args.quick else 365)
    tmp = Path(tempfile.mkdtemp(prefix="ctrlens-store-bench-"))
    rng = np.random.default_rng(0)
    day0 = "2026-01-01"
    try:
        # ---------------------------------------------------------------- 1. one day: ours vs ORM loop
        results = {i: day_results(rng, day0) for i in range(len(MODELS))}
        n_rows = sum(len(r) for rs in results.values() for r in rs)
        fast = Store(f"sqlite:///{tmp / 'fast.sqlite'}", create=True)
        slow = Store(f"sqlite:///{tmp / 'orm.sqlite'}", create=True)
        vids_fast = [fast.register_model(m, "ck-0", "schema") for m in MODELS]
        vids_slow = [slow.register_model(m, "ck-0", "schema") for m in MODELS]
        # best of 5 (a new day each time) for both: the machine may be shared
        # (CPU seconds too: on a busy machine they show the work done, not the waiting)
        write_ts, orm_ts, rewrite_ts, write_cpu, orm_cpu = [], [], [], [], []
        for rep in range(5):
            day = f"2026-01-0{rep + 1}"
            t0, c0 = time.perf_counter(), time.process_time()
            for i, vid in enumerate(vids_fast):
                fast.write_day(vid, day, "nightly", results[i])
            write_ts.append(time.perf_counter() - t0)
            write_cpu.append(time.process_time() - c0)
            t0, c0 = time.perf_counter(), time.process_time()
            orm_write(slow, vids_slow, day, {vid: results[i] for i, vid in enumerate(vids_slow)})
            orm_ts.append(time.perf_counter() - t0)
            orm_cpu.append(time.process_time() - c0)
            t0 = time.perf_counter()
            for i, vid in enumerate(vids_fast):  # a rerun replaces the day: the idempotent path
                fast.write_day(vid, day, "nightly", results[i])
            rewrite_ts.append(time.perf_counter() - t0)
        write_s, orm_s, rewrite_s = min(write_ts), min(orm_ts), min(rewrite_ts)
        fast.close()
        slow.close()
        cpu_ratio = min(orm_cpu) / min(write_cpu)
        print(f"one day, 5 models, {n_rows:,} rows (best of 5): write_day {write_s * 1000:.0f} ms (rerun "
              f"{rewrite_s * 1000:.0f} ms), ORM session.add loop {orm_s * 1000:.0f} ms -> {orm_s / write_s:.1f}x faster "
              f"(CPU time: {min(write_cpu) * 1000:.0f} vs {min(orm_cpu) * 1000:.0f} ms, {cpu_ratio:.1f}x)")  # fmt: skip

        if args.write_only:
            print(json.dumps({"benchmark": "store_speed", "write_day_s": round(write_s, 3), "orm_loop_s": round(orm_s, 3),
                              "speedup_vs_orm": round(orm_s / write_s, 1), "speedup_vs_orm_cpu": round(cpu_ratio, 1),
                              "load_avg_1m": round(os.getloadavg()[0], 1),
                              "met": {"speedup_vs_orm": orm_s / write_s >= 10, "speedup_vs_orm_cpu": cpu_ratio >= 10,
                                      "write_day_s": write_s < 1.0}}))  # fmt: skip
            return

        # ---------------------------------------------------------------- 2. history + dashboard queries
        hist_path = (args.keep or tmp) / "history.sqlite"
        hist_path.parent.mkdir(parents=True, exist_ok=True)
        hist_path.unlink(missing_ok=True)
        store = Store(f"sqlite:///{hist_path}", create=True)
        days = [(dt.date.fromisoformat(day0) + dt.timedelta(days=i)).isoformat() for i in range(n_days)]
        t0 = time.perf_counter()
        template = {i: day_results(rng, day0) for i in range(len(MODELS))}
        for d_i, day in enumerate(days):
            for m_i, model in enumerate(MODELS):
                vid = store.register_model(model, f"ck-{d_i // 30}", "schema")
                res = [vary(r, rng) for r in template[m_i]]
                store.write_day(vid, day, "nightly", res)
            if (d_i + 1) % 60 == 0:
                print(f"  history: {d_i + 1}/{n_days} days written ({time.perf_counter() - t0:.0f} s)", flush=True)
        fill_s = time.perf_counter() - t0
        size_mb = hist_path.stat().st_size / 1e6
        print(f"history: {n_days} days x {len(MODELS)} models written in {fill_s:.0f} s "
              f"({fill_s / (n_days * len(MODELS)) * 1000:.0f} ms per model-day), database {size_mb:.0f} MB")  # fmt: skip

        vid_last = store.versions("din").version_id.iloc[-1]
        queries: dict[str, Callable[[], Any]] = {
            "series_neuron_mean_365d": lambda: store.series("neuron_stats", "mean", model="din", layer="mlp.1", neuron=17),
            "series_quality_auc_all_heads": lambda: store.series("quality", "auc", model="din"),
            "series_saliency_share_40_fields": lambda: store.series("saliency", "share", model="din", head="ctr",
                                                                     method="integrated_gradients"),  # fmt: skip
            "series_field_oov_40_fields": lambda: store.series("field_stats", "oov_rate", model="din"),
            "heatmap_512_neurons_all_days": lambda: store.heatmap("mlp.0", "mean", model="din"),
            "heatmap_256_neurons_all_days": lambda: store.heatmap("mlp.2", "frac_zero", model="din"),
            "heatmap_512_neurons_90d": lambda: store.heatmap("mlp.0", "mean", model="din", days=90),
            "read_neuron_stats_one_day": lambda: store.read(int(vid_last), days[-1], "neuron_stats"),
            "read_day_all_kinds": lambda: store.read_day(int(vid_last), days[-1]),
            "latest_days": lambda: store.latest_days(),
            "open_alerts": lambda: store.open_alerts(),
            "health_matrix_5_models": lambda: store.health_matrix(),
            "models": lambda: store.models(),
            "days_of_model": lambda: store.days(model="din"),
        }
        q_ms: dict[str, float] = {}
        for name, fn in queries.items():
            s, out = timed(fn)
            q_ms[name] = round(s * 1000, 1)
            shape = getattr(out, "shape", None) or (len(out) if hasattr(out, "__len__") else "")
            print(f"  {name:<34} {s * 1000:8.1f} ms   {shape}")
        store.close()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ratio = orm_s / write_s
        out = {
            "benchmark": "store_speed",
            "backend": "sqlite",
            "history_days": n_days,
            "models": len(MODELS),
            "rows_one_day": n_rows,
            "write_day_s": round(write_s, 3),
            "rewrite_day_s": round(rewrite_s, 3),
            "orm_loop_s": round(orm_s, 3),
            "speedup_vs_orm": round(ratio, 1),
            "write_day_cpu_s": round(min(write_cpu), 3),
            "orm_loop_cpu_s": round(min(orm_cpu), 3),
            "speedup_vs_orm_cpu": round(cpu_ratio, 1),
            "history_fill_s": round(fill_s, 1),
            "db_mb": round(size_mb, 1),
            "query_ms": q_ms,
            "max_query_ms": max(q_ms.values()),
            "peak_rss_mb": round(peak_mb, 1),
            "load_avg_1m": round(os.getloadavg()[0], 1),  # a shared machine: context for the timings
            "targets": {"speedup_vs_orm": 10, "write_day_s": 1.0, "query_ms": 100},
            "met": {
                "speedup_vs_orm": ratio >= 10,
                "speedup_vs_orm_cpu": cpu_ratio >= 10,
                "write_day_s": write_s < 1.0,
                "queries_under_100ms": all(v < 100 for v in q_ms.values()),
            },
        }
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # (--keep puts the history database elsewhere)


if __name__ == "__main__":
    sys.exit(main())
