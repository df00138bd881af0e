"""Accuracy of the nightly job: does it find planted incidents, name them, and stay quiet otherwise?

For each seed: a synthetic world of 30 days (``ctrlens.synth``), PAL trained on its first 7 days, and
the nightly job run over the other 23 days (trailing 7-day reference, default thresholds). Then, for
every incident kind, the same world with one incident planted on one day (fields rotate across
seeds): the job runs that day and the next, starting from the clean run's database of the days before
(the worlds are identical up to the incident, so the clean history is reused).

Printed:

* **recall** -- the incident raised a paging finding (critical / warning) on its day or the next;
* **top-1 subject / kind** -- the first-ranked paging finding names the incident's field (or
  ``position`` / the head) and the expected finding kind;
* **false alerts per 100 clean model-days** -- paging findings on the clean world's days once the
  reference is warm;
* the same for the obvious approach, measured on the same runs: "alert when a field's PSI against the
  reference exceeds 0.2" (the usual rule of thumb), with the field of largest PSI as its diagnosis.

Thresholds and rules were tuned on seeds 101-104, then on seeds 1-8 (the calibration noise floor
came from false alerts seen on seed 1, "the score distribution is evidence only" from seed 7) and
clean seeds 13-20 ("a lone borderline probe does not page"); the reported seeds are 9-12, never
used while tuning (``--seeds`` to change), plus ``--clean-only --seeds 21,...,28`` for more clean
model-days. The last line is one JSON object with figures, targets and "met"
booleans.

    .venv/bin/python benchmarks/incident_detection.py            # 4 seeds, every kind  (~2-6 min, 2 cores)
    .venv/bin/python benchmarks/incident_detection.py --quick    # 1 seed
    .venv/bin/python benchmarks/incident_detection.py --clean-only --seeds 21,22,23,24,25,26,27,28
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from ctrlens.monitor.config import parse_config  # noqa: E402
from ctrlens.monitor.job import NightlyJob  # noqa: E402
from ctrlens.store import Store  # noqa: E402
from ctrlens.synth import Incident, generate  # noqa: E402
from ctrlens.train import train  # noqa: E402

WORLD = dict(days=30, rows_per_day=5000, n_users=2_000, n_items=600, n_categories=20, n_shops=100,
             new_items_per_day=20, importance_rows=2_000, image_size=8)  # fmt: skip
TRAIN_DAYS = 7
MIN_REF = 5
MODEL = "pal"
MODEL_CONFIG = {"mlp": [64, 32]}

#: incident kind -> fields to rotate over seeds (None: the kind takes no field)
KINDS: dict[str, list[str | None]] = {
    "stuck_value": ["category_id", "price", "hour", "hist_category_id"],
    "shuffled": ["category_id", "price", "hist_category_id", "item_id"],
    "missing_spike": ["price", "shop_id", "hist_category_id", "user_age_bucket"],
    "oov_surge": ["item_id", "shop_id", "user_id", "hist_item_id"],
    "blank_images": [None, "item_image", "hist_image"],
    "distribution_shift": ["price", "category_id", "hour", "user_age_bucket", "shop_id"],
    "ctr_level_shift": [None],
    "position_bias_change": [None],
}
EXPECTED_FINDING = {
    "stuck_value": "broken_feature", "shuffled": "broken_feature", "missing_spike": "broken_feature",
    "oov_surge": "oov_surge", "blank_images": "image_pipeline_broken", "distribution_shift": "distribution_shift",
    "ctr_level_shift": "calibration_drift", "position_bias_change": "position_bias_change",
}  # fmt: skip
PAGING = ("critical", "warning")


def expected_subjects(kind: str, field: str | None) -> set[str]:
    if kind == "blank_images":
        # the override is per item: blanking every history item of the day also blanks (nearly) every
        # candidate's image in these worlds (all items appear in some history) -- both image fields broke
        return {"item_image", "hist_image"}
    if kind == "ctr_level_shift":
        return {"ctr", "click"}  # PAL's two click heads
    if kind == "position_bias_change":
        return {"position"}
    return {field}  # type: ignore[arg-type]


def config(db: Path, data: Path, ckpt: str) -> object:
    return parse_config({
        "db": f"sqlite:///{db}", "data": str(data), "report_dir": "",
        "reference": {"kind": "trailing", "days": 7, "min_days": MIN_REF},
        "models": [{"name": MODEL, "checkpoint": ckpt, "rows": {"neurons": 5000, "probes": 2000, "saliency": 2000}}],
    }, source="benchmark")  # fmt: skip


def copy_db(src: Path, dst: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(src) + suffix)
        if p.exists():
            shutil.copyfile(p, Path(str(dst) + suffix))


def date(start: str, i: int) -> str:
    return (dt.date.fromisoformat(start) + dt.timedelta(days=i)).isoformat()


def naive(db: Path) -> dict[str, list[tuple[str, float]]]:
    """day -> fields with PSI > 0.2 against the reference (the rule of thumb), largest first."""
    with Store(f"sqlite:///{db}") as s:
        d = s.series("drift", ["value"], model=MODEL, run_kind="nightly", subject_kind="field")
    d = d[d["statistic"] == "psi"]  # (series' own `statistic` argument shadows a filter on the drift column)
    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for r in d.itertuples(index=False):
        if r.value == r.value and r.value > 0.2:
            out[r.day].append((r.subject, float(r.value)))
    for v in out.values():
        v.sort(key=lambda t: -t[1])
    return out


def run_seed(seed: int, index: int, work: Path, kinds: list[str], log, keep: bool = False) -> dict:
    t0 = time.perf_counter()
    start = "2026-01-01"
    inc_day = 15 + index % 4
    clean = generate(work / "clean", seed=seed, overwrite=True, **WORLD)
    res = train(MODEL, clean.root, f"{date(start, 0)}:{date(start, TRAIN_DAYS - 1)}", out_dir=work / "run", epochs=1,
                batch_size=256, lr=3e-3, model_config=MODEL_CONFIG)  # fmt: skip
    ckpt = res.final_info.path
    db = work / "clean.sqlite"
    job = NightlyJob(config(db, clean.root, ckpt))
    pre = job.run(start=date(start, TRAIN_DAYS), end=date(start, inc_day - 1))
    snap = work / "snapshot.sqlite"
    copy_db(db, snap)
    cases = []
    for kind in kinds:
        opts = KINDS[kind]
        field = opts[index % len(opts)]
        world = generate(work / "inc", seed=seed, overwrite=True, incidents=[Incident(inc_day, kind, field)], **WORLD)
        idb = work / f"inc-{kind}.sqlite"
        copy_db(snap, idb)
        s = NightlyJob(config(idb, world.root, ckpt)).run(start=date(start, inc_day), end=date(start, inc_day + 1))
        nv = naive(idb)
        days = [date(start, inc_day), date(start, inc_day + 1)]
        paging = {o.day: [f for f in o.findings if f["severity"] in PAGING] for o in s.outcomes}
        first = next((d for d in days if paging.get(d)), None)
        top = paging[first][0] if first else None
        want = expected_subjects(kind, field)
        nfirst = next((d for d in days if nv.get(d)), None)
        case = {
            "seed": seed, "kind": kind, "field": field, "day": days[0], "detected": first is not None,
            "detected_on": first, "top_finding": top["finding"] if top else None, "top_subject": top["subject"] if top else None,
            "subject_ok": bool(top and top["subject"] in want), "kind_ok": bool(top and top["finding"] == EXPECTED_FINDING[kind]),
            "naive_detected": nfirst is not None, "naive_subject_ok": bool(nfirst and nv[nfirst][0][0] in want),
            "findings": {d: [(f["finding"], f["subject"], f["severity"]) for f in paging.get(d, [])][:4] for d in days},
            "errors": [o.error for o in s.outcomes if o.error],
        }  # fmt: skip
        log(f"  seed {seed} {kind:<21} {str(field):<17} detected={case['detected']!s:<5} top={case['top_finding']}:"
            f"{case['top_subject']}  subject_ok={case['subject_ok']} kind_ok={case['kind_ok']}  naive={case['naive_detected']}")
        cases.append(case)
        if not keep:
            idb.unlink(missing_ok=True)
    post = job.run(start=date(start, inc_day), end=date(start, WORLD["days"] - 1))
    nv = naive(db)
    warm = date(start, TRAIN_DAYS + MIN_REF)
    clean_days = []
    for o in pre.outcomes + post.outcomes:
        if o.day < warm or o.status != "ok":
            continue
        pf = [(f["finding"], f["subject"], f["severity"]) for f in o.findings if f["severity"] in PAGING]
        clean_days.append({"day": o.day, "alerts": len(pf), "findings": pf, "naive_alerts": len(nv.get(o.day, [])),
                           "seconds": o.seconds})  # fmt: skip
        if pf:
            log(f"  seed {seed} clean {o.day}: {pf}")
    secs = [o.seconds for o in pre.outcomes + post.outcomes if o.status == "ok"]
    return {"seed": seed, "cases": cases, "clean": clean_days, "seconds": time.perf_counter() - t0,
            "seconds_per_model_day": sum(secs) / max(len(secs), 1),
            "errors": [o.error for o in pre.outcomes + post.outcomes if o.error]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one seed")
    ap.add_argument("--seeds", type=str, default=None, help="comma-separated seeds (default 9,10,11,12; --quick: 9)")
    ap.add_argument("--kinds", type=str, default=None, help="comma-separated incident kinds (default: all)")
    ap.add_argument("--work", type=str, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--clean-only", action="store_true", help="no incident worlds: only false alerts on clean worlds")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else ([9] if args.quick else [9, 10, 11, 12])
    kinds = [] if args.clean_only else (args.kinds.split(",") if args.kinds else list(KINDS))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        sys.exit(f"unknown kinds {unknown}; kinds: {list(KINDS)}")
    log = lambda s: print(s, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    base = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ctrlens-bench-"))
    results = []
    try:
        for i, s in enumerate(seeds):
            log(f"seed {s}: world {WORLD['days']} days x {WORLD['rows_per_day']} rows, {MODEL} trained on {TRAIN_DAYS} days")
            work = base / f"seed{s}"
            work.mkdir(parents=True, exist_ok=True)
            results.append(run_seed(s, i, work, kinds, log, keep=bool(args.work)))
            if not args.work:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if not args.work:
            shutil.rmtree(base, ignore_errors=True)
    cases = [c for r in results for c in r["cases"]]
    clean = [d for r in results for d in r["clean"]]
    n = len(cases)
    nan = float("nan")
    recall = sum(c["detected"] for c in cases) / n if n else nan
    subj = sum(c["subject_ok"] for c in cases) / n if n else float("nan")
    kind_ok = sum(c["kind_ok"] for c in cases) / n if n else float("nan")
    both = sum(c["subject_ok"] and c["kind_ok"] for c in cases) / n if n else float("nan")
    false_rate = 100.0 * sum(d["alerts"] for d in clean) / max(len(clean), 1)
    n_recall = sum(c["naive_detected"] for c in cases) / n if n else float("nan")
    n_subj = sum(c["naive_subject_ok"] for c in cases) / n if n else float("nan")
    n_false = 100.0 * sum(d["naive_alerts"] for d in clean) / max(len(clean), 1)
    per_kind = {}
    for k in kinds:
        ck = [c for c in cases if c["kind"] == k]
        per_kind[k] = {"runs": len(ck), "recall": sum(c["detected"] for c in ck) / len(ck),
                       "top1_subject": sum(c["subject_ok"] for c in ck) / len(ck),
                       "top1_kind": sum(c["kind_ok"] for c in ck) / len(ck),
                       "naive_recall": sum(c["naive_detected"] for c in ck) / len(ck)}  # fmt: skip
    print()
    print(f"{'kind':<22}{'runs':>5}{'recall':>8}{'top1 subj':>10}{'top1 kind':>10}{'naive recall':>13}")
    for k, v in per_kind.items():
        print(f"{k:<22}{v['runs']:>5}{v['recall']:>8.0%}{v['top1_subject']:>10.0%}{v['top1_kind']:>10.0%}{v['naive_recall']:>13.0%}")
    misses = [f"{c['kind']}:{c['field']} seed {c['seed']} -> {c['top_finding']}:{c['top_subject']}" for c in cases
              if not (c["detected"] and c["subject_ok"] and c["kind_ok"])]  # fmt: skip
    for m in misses:
        print("miss / wrong:", m)
    print(f"\nnightly job : recall {recall:.1%}, top-1 subject {subj:.1%}, top-1 kind {kind_ok:.1%}, both {both:.1%}, "
          f"false alerts {false_rate:.2f} per 100 clean model-days ({len(clean)} model-days)")
    print(f"PSI > 0.2   : recall {n_recall:.1%}, top-1 subject {n_subj:.1%}, false alerts {n_false:.2f} per 100 clean model-days")
    ratio_false = (n_false / false_rate) if false_rate > 0 else float("inf")
    print(f"ratios      : recall x{recall / n_recall if n_recall == n_recall and n_recall else float('inf'):.2f}, "
          f"false alerts naive/nightly {ratio_false:.1f}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_day = sum(r["seconds_per_model_day"] for r in results) / max(len(results), 1)
    print(f"peak memory {peak_mb:.0f} MB; {per_day:.2f} s per model-day; total {time.perf_counter() - t0:.0f} s")
    out = {
        "benchmark": "incident_detection", "seeds": seeds, "tuned_on_seeds": [101, 102, 103, 104, *range(1, 9), *range(13, 21)], "model": MODEL,
        "world": WORLD, "incident_runs": n, "clean_model_days": len(clean),
        "recall": round(recall, 4), "top1_subject": round(subj, 4), "top1_kind": round(kind_ok, 4),
        "top1_subject_and_kind": round(both, 4), "false_alerts_per_100": round(false_rate, 3),
        "naive_psi_0.2": {"recall": round(n_recall, 4), "top1_subject": round(n_subj, 4), "false_alerts_per_100": round(n_false, 3)},
        "per_kind": per_kind, "misses": misses,
        "seconds_per_model_day": round(per_day, 3), "peak_memory_mb": round(peak_mb, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "targets": {"recall": 0.95, "top1_subject": 0.8, "false_alerts_per_100": 1.0},
        "met": {"recall": bool(recall >= 0.95), "top1_subject": bool(subj >= 0.8), "false_alerts_per_100": false_rate <= 1.0},
        "errors": [e for r in results for e in r["errors"]] + [e for c in cases for e in c["errors"]],
    }  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
