"""Accuracy of the nightly job: does it find planted incidents, name them, and stay quiet otherwise?

For each seed and reference model (PAL; DIN, whose attention uses PReLU / Dice): a synthetic world of
24 days x 3000 rows (``ctrlens.synth``), the model trained on its first 5 days and then **retrained
every day** (warm start on the previous day, one epoch: the checkpoint serving day d has seen days
0..d-1), and the nightly job run over the other 19 days (``checkpoint_dir``: a new checkpoint every
day, trailing 7-day reference, default thresholds); its days from day 10 on (5 reference days) are
the clean control: 14 model-days per seed and model. Then, for every incident kind, one incident on
one day (day 14-17, fields rotate across seeds); the job runs that day, starting from the clean
run's database of the days before. To keep a full run affordable, the incident runs reuse the clean
run's daily checkpoints and its back-tests of them on the (unchanged) reference days -- the same
numbers the job would recompute, since a back-test depends only on the data, the checkpoint and
the configuration. Incident kinds:

* **data, planted by the generator**: stuck value, shuffled, missing spike, OOV surge, blank images,
  distribution shift, CTR level shift, position-bias change;
* **data, edited into the day's files as a user meets them** (named causes): a numeric unit change
  (price x100 ...), two fields swapped, histories truncated, labels lost (clicks dropped);
* **model**: the daily checkpoint replaced by one trained with a learning rate 100x too high, by one
  over-trained on a single day, or by the daily one with a fifth of its item-embedding rows
  re-initialised.

Printed per kind and overall: **recall** (a paging finding on the incident day),
**top-1 subject and cause** (the first paging finding names the incident's subject and the expected
finding), **false alerts per 100 clean model-days** (paging findings on the clean, daily-retrained
run once the reference is warm), and the obvious approach on the same runs ("alert when a field's PSI
exceeds 0.2").

Thresholds are calibrated by the job on each model's own reference days; the rules were fixed on
tuning worlds only: seeds 101-104, 1-8 and clean seeds 13-20 (data side, an earlier round), seed 9 and
the test worlds (tests/retrain_fixtures.py seed 5, tests/monitor_fixtures.py seed 11) for the model
axis and the named causes; seeds 31, 32 and 41 were looked at after a run (a label rule was fixed after
seed 31), seeds 51-54 after the stop-3 report (the weekly-cycle band of label rates and
calibration and two ranking rules of a diverged checkpoint were added after them) and seeds 61-64
after their one run (the over-fitting threshold's noise and the materiality of a lone PSI were fixed
after them). **Reported seeds: 71-74** (the default ``--seeds``), fresh: run once, after the last
rule change (docs/nightly.md, "Accuracy"). The last line is one JSON object with figures, targets and "met" booleans.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/incident_detection.py   # 4 seeds x 2 models, every kind
    .venv/bin/python benchmarks/incident_detection.py --quick --seeds 9             # 1 seed x 2 models (tuning)
    .venv/bin/python benchmarks/incident_detection.py --clean-only --seeds 21,22,23,24
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
from types import SimpleNamespace
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

WORLD = dict(days=24, rows_per_day=3000, n_users=1_500, n_items=400, n_categories=20, n_shops=80,
             new_items_per_day=12, importance_rows=1_500, image_size=8)  # fmt: skip
TRAIN_DAYS = 5
MIN_REF = 5
FIRST_INCIDENT_DAY = TRAIN_DAYS + MIN_REF + 4  # a warm reference of clean days before it
#: seeds the rules were fixed on (never reported as results); the default seeds are fresh
# 31, 32, 41, 51-54 and 61-64: looked at after their runs (51-54 reported at stop 3, 61-64 run once in
# stop 4; rules changed after each)
TUNING_SEEDS = [101, 102, 103, 104, *range(1, 9), 9, *range(13, 21), 31, 32, 41, 51, 52, 53, 54, 61, 62, 63, 64]
REPORT_SEEDS = [71, 72, 73, 74]
MODELS = {"pal": {"mlp": [64, 32]}, "din": {"mlp": [64, 32]}}
RECIPE = dict(epochs=1, batch_size=256, lr=3e-3)

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
    # named causes, edited into the incident day's files (see edit_day)
    "unit_change": ["price:100", "price:1000", "price:0.01", "price:100"],
    "swapped": ["category_id+shop_id", "user_age_bucket+hour", "item_id+shop_id", "category_id+hour"],
    "truncated": ["hist:3", "hist:5", "hist:2", "hist:4"],
    "label_pipeline": ["click:0.4", "click:0.3", "click:0.5", "click:0.35"],
    # the model axis: the serving checkpoint replaced (see bad_checkpoint)
    "lr_too_high": [None],
    "overtrained": [None],
    "corrupt_embedding": ["0.2", "0.1", "0.3", "0.2"],
}
SYNTH_KINDS = ("stuck_value", "shuffled", "missing_spike", "oov_surge", "blank_images", "distribution_shift",
               "ctr_level_shift", "position_bias_change")
EDIT_KINDS = ("unit_change", "swapped", "truncated", "label_pipeline")
MODEL_KINDS = ("lr_too_high", "overtrained", "corrupt_embedding")
EXPECTED_FINDING = {
    "stuck_value": "broken_feature", "shuffled": "broken_feature", "missing_spike": "broken_feature",
    "oov_surge": "oov_surge", "blank_images": "image_pipeline_broken", "distribution_shift": "distribution_shift",
    "ctr_level_shift": "calibration_drift", "position_bias_change": "position_bias_change",
    "unit_change": "unit_change", "swapped": "fields_swapped", "truncated": "sequence_truncated",
    "label_pipeline": "label_pipeline", "lr_too_high": ("exploding_activations", "dead_neurons", "model_regression"),
    "overtrained": "overfitting", "corrupt_embedding": "embedding_corruption",
}  # fmt: skip
PAGING = ("critical", "warning")


def expected_subjects(kind: str, field: str | None, item_table: str = "item") -> set[str] | None:
    """Subjects a correct top finding may name (``None``: any subject -- the checkpoint is the cause)."""
    if kind in ("lr_too_high", "overtrained"):
        return None
    if kind == "corrupt_embedding":
        return {item_table}
    if kind == "unit_change":
        return {"price"}
    if kind == "swapped":
        return set(field.split("+"))  # type: ignore[union-attr]
    if kind == "truncated":
        return {"hist_item_id", "hist_category_id"}
    if kind == "label_pipeline":
        return {"click"}
    if kind == "blank_images":
        # the override is per item: blanking every history item of the day also blanks (nearly) every
        # candidate's image in these worlds (all items appear in some history) -- both image fields broke
        return {"item_image", "hist_image"}
    if kind == "ctr_level_shift":
        return {"ctr", "click"}  # PAL's two click heads
    if kind == "position_bias_change":
        return {"position"}
    return {field}  # type: ignore[arg-type]


def config(db: Path, data: Path, model: str, *, ckpt: str | None = None, ckpt_dir: str | None = None) -> object:
    m = {"name": model, "rows": {"neurons": 3000, "probes": 1200, "saliency": 1000}}
    m.update({"checkpoint": ckpt} if ckpt else {"checkpoint_dir": ckpt_dir})
    return parse_config({
        "db": f"sqlite:///{db}", "data": str(data), "report_dir": "",
        "reference": {"kind": "trailing", "days": 7, "min_days": MIN_REF}, "models": [m],
    }, source="benchmark")  # fmt: skip


def edit_day(src: Path, dst: Path, day: str, kind: str, spec: str, seed: int) -> Path:
    """A copy of the world ``src`` at ``dst`` (other days linked) whose ``day`` files carry the named
    cause: ``unit_change`` "field:factor", ``swapped`` "a+b", ``truncated`` "hist:n" (both history
    columns keep their n most recent entries), ``label_pipeline`` "click:fraction" (that share of the
    clicks lost, with their conversions)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name != f"day={day}":
            (dst / p.name).symlink_to(p.resolve(), target_is_directory=p.is_dir())
    (dst / f"day={day}").mkdir()
    rng = np.random.default_rng(seed)
    for f in sorted((src / f"day={day}").iterdir()):
        if f.suffix != ".parquet":
            shutil.copyfile(f, dst / f"day={day}" / f.name)
            continue
        t = pq.read_table(f)
        if kind == "unit_change":
            name, factor = spec.split(":")
            i = t.schema.get_field_index(name)
            t = t.set_column(i, name, pc.cast(pc.multiply(t[name], float(factor)), t.schema.field(name).type))
        elif kind == "swapped":
            a, b = spec.split("+")
            ia, ib = t.schema.get_field_index(a), t.schema.get_field_index(b)
            ca, cb = t[a], t[b]
            t = t.set_column(ia, a, cb.cast(t.schema.field(a).type)).set_column(ib, b, ca.cast(t.schema.field(b).type))
        elif kind == "truncated":
            n = int(spec.split(":")[1])
            for name in ("hist_item_id", "hist_category_id"):
                col = t[name].to_pylist()
                cut = [None if v is None else v[-n:] for v in col]
                t = t.set_column(t.schema.get_field_index(name), name, pa.array(cut, type=t.schema.field(name).type))
        elif kind == "label_pipeline":
            frac = float(spec.split(":")[1])
            click = t["click"].to_numpy().copy()
            lost = (click == 1) & (rng.random(len(click)) < frac)
            click[lost] = 0
            t = t.set_column(t.schema.get_field_index("click"), "click", pa.array(click, type=t.schema.field("click").type))
            if "conversion" in t.column_names:
                conv = t["conversion"].to_numpy().copy()
                conv[lost] = 0
                t = t.set_column(t.schema.get_field_index("conversion"), "conversion",
                                 pa.array(conv, type=t.schema.field("conversion").type))  # fmt: skip
        pq.write_table(t, dst / f"day={day}" / f.name)
    return dst


def bad_checkpoint(kind: str, spec: str | None, model: str, data: Path, serving_prev: Path, serving_today: Path,
                   train_day: str, out: Path) -> tuple[Path, str]:  # fmt: skip
    """The checkpoint deployed instead of the daily one, and the item table's name."""
    import torch

    from ctrlens.data import DailyDataset
    from ctrlens.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
    from ctrlens.models.interface import as_view

    schema = DailyDataset(data).schema
    item_table = schema.table_of("item_id").table_name
    if kind == "lr_too_high":
        r = train(model, data, train_day, out_dir=out, init_from=serving_prev, model_config=MODELS[model],
                  **{**RECIPE, "lr": RECIPE["lr"] * 100})  # fmt: skip
        return Path(r.final_info.path), item_table
    if kind == "overtrained":
        r = train(model, data, train_day, out_dir=out, init_from=serving_prev, model_config=MODELS[model],
                  **{**RECIPE, "epochs": 25, "limit": 1500, "lr": 1e-2})  # fmt: skip
        return Path(r.final_info.path), item_table
    m = load_checkpoint(serving_today, schema)
    ck = read_checkpoint(serving_today)
    v = as_view(m)
    table = item_table if item_table in v.tables else next(k for k in v.tables if "item" in k)
    w = v.tables[table].weight
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(w.shape[0], generator=g)[: int(float(spec or 0.2) * w.shape[0])]
    with torch.no_grad():
        w[idx] = torch.randn(len(idx), w.shape[1], generator=g) * 0.01
    out.mkdir(parents=True, exist_ok=True)
    return Path(save_checkpoint(out / "ckpt-step999999999.pt", m, step=ck["step"] + 1, days_seen=ck["days_seen"]).path), table


def copy_db(src: Path, dst: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(src) + suffix)
        if p.exists():
            shutil.copyfile(p, Path(str(dst) + suffix))


def date(start: str, i: int) -> str:
    return (dt.date.fromisoformat(start) + dt.timedelta(days=i)).isoformat()


def naive(db: Path, model: str) -> dict[str, list[tuple[str, float]]]:
    """day -> fields with PSI > 0.2 against the reference (the rule of thumb), largest first."""
    with Store(f"sqlite:///{db}") as s:
        d = s.series("drift", ["value"], model=model, run_kind="nightly", subject_kind="field")
    d = d[d["statistic"] == "psi"]  # (series' own `statistic` argument shadows a filter on the drift column)
    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for r in d.itertuples(index=False):
        if r.value == r.value and r.value > 0.2:
            out[r.day].append((r.subject, float(r.value)))
    for v in out.values():
        v.sort(key=lambda t: -t[1])
    return out


def daily_checkpoints(model: str, data: Path, work: Path, n_days: int) -> dict[str, Path]:
    """Train on the first TRAIN_DAYS days, then warm-start on every following day (one epoch): day ->
    the checkpoint that serves it (trained on the days before it), all in ``work/ckpts``."""
    ck_dir = work / "ckpts"
    ck_dir.mkdir(parents=True, exist_ok=True)
    start = "2026-01-01"
    r = train(model, data, f"{date(start, 0)}:{date(start, TRAIN_DAYS - 1)}", out_dir=work / "t0", model_config=MODELS[model],
              **RECIPE)  # fmt: skip
    prev = Path(r.final_info.path)
    shutil.copyfile(prev, ck_dir / prev.name)
    serves = {date(start, TRAIN_DAYS): ck_dir / prev.name}
    for k in range(TRAIN_DAYS, n_days - 1):
        r = train(model, data, date(start, k), out_dir=work / f"t{k}", init_from=prev, model_config=MODELS[model], **RECIPE)
        prev = Path(r.final_info.path)
        shutil.copyfile(prev, ck_dir / prev.name)
        serves[date(start, k + 1)] = ck_dir / prev.name
    return serves


def world(folder: Path, seed: int, incidents: list | None = None) -> Path:
    """The synthetic world at ``folder``, generated once per seed and shared by the models."""
    done = folder.with_name(folder.name + ".done")  # beside the world, not in its data folder
    if not done.exists():
        generate(folder, seed=seed, overwrite=True, incidents=incidents or [], **WORLD)
        done.write_text("ok")
    return folder


def run_seed(seed: int, index: int, work: Path, kinds: list[str], log, model: str, keep: bool = False,
             worlds: Path | None = None) -> dict:  # fmt: skip
    t0 = time.perf_counter()
    start = "2026-01-01"
    inc_day = FIRST_INCIDENT_DAY + index % 4
    worlds = worlds or work
    clean = SimpleNamespace(root=world(worlds / "clean", seed))
    serves = daily_checkpoints(model, clean.root, work, WORLD["days"])
    t_train = time.perf_counter() - t0
    ck_dir = str(work / "ckpts")
    db = work / "clean.sqlite"
    job = NightlyJob(config(db, clean.root, model, ckpt_dir=ck_dir))
    pre = job.run(start=date(start, TRAIN_DAYS), end=date(start, inc_day - 1))
    snap = work / "snapshot.sqlite"
    copy_db(db, snap)
    t_clean = time.perf_counter() - t0 - t_train
    cases = []
    day0 = date(start, inc_day)
    inc_secs = []
    for kind in kinds:
        opts = KINDS[kind]
        field = opts[index % len(opts)]
        idb = work / f"inc-{kind}.sqlite"
        copy_db(snap, idb)
        item_table = "item"
        if kind in SYNTH_KINDS:
            root = world(worlds / f"inc-{kind}", seed, [Incident(inc_day, kind, field)])
            cfg = config(idb, root, model, ckpt_dir=ck_dir)
        elif kind in EDIT_KINDS:
            root = edit_day(clean.root, work / "edited", day0, kind, field, seed)  # type: ignore[arg-type]
            cfg = config(idb, root, model, ckpt_dir=ck_dir)
        else:
            ck, item_table = bad_checkpoint(kind, field, model, clean.root, serves[date(start, inc_day - 1)],
                                            serves[day0], date(start, inc_day - 1), work / f"bad-{kind}")  # fmt: skip
            cfg = config(idb, clean.root, model, ckpt=str(ck))
        ijob = NightlyJob(cfg)
        # the clean run's back-tests of its own checkpoints on the clean reference days: the same numbers
        # this run would compute (a back-test depends on data, checkpoint and configuration only)
        ijob._backtests = job._backtests
        s = ijob.run(start=day0, end=day0)
        inc_secs += [o.seconds for o in s.outcomes if o.status == "ok"]
        nv = naive(idb, model)
        paging = {o.day: [f for f in o.findings if f["severity"] in PAGING] for o in s.outcomes}
        top = paging[day0][0] if paging.get(day0) else None
        want = expected_subjects(kind, field, item_table)
        exp = EXPECTED_FINDING[kind]
        exp = exp if isinstance(exp, tuple) else (exp,)
        case = {
            "seed": seed, "model": model, "kind": kind, "field": field, "day": day0, "detected": top is not None,
            "top_finding": top["finding"] if top else None, "top_subject": top["subject"] if top else None,
            "subject_ok": bool(top and (want is None or top["subject"] in want)), "kind_ok": bool(top and top["finding"] in exp),
            "naive_detected": bool(nv.get(day0)),
            "naive_subject_ok": bool(nv.get(day0) and want is not None and nv[day0][0][0] in want),
            "findings": [(f["finding"], f["subject"], f["severity"]) for f in paging.get(day0, [])][:4],
            "errors": [o.error for o in s.outcomes if o.error],
        }  # fmt: skip
        log(f"  {model} seed {seed} {kind:<21} {str(field):<20} detected={case['detected']!s:<5} top={case['top_finding']}:"
            f"{case['top_subject']}  subject_ok={case['subject_ok']} kind_ok={case['kind_ok']}  naive={case['naive_detected']}"
            + ("" if case["subject_ok"] and case["kind_ok"] else f"  paging={case['findings']}"))
        cases.append(case)
        if not keep:
            idb.unlink(missing_ok=True)
    # the rest of the clean run after the incidents: the back-tests of the incident day's checkpoint are
    # still in the (bounded) cache the incident runs shared
    t1 = time.perf_counter()
    post = job.run(start=date(start, inc_day), end=date(start, WORLD["days"] - 1))
    t_clean += time.perf_counter() - t1
    nv = naive(db, model)
    warm = date(start, TRAIN_DAYS + MIN_REF)
    clean_days = []
    for o in pre.outcomes + post.outcomes:
        if o.day < warm or o.status != "ok":
            continue
        pf = [(f["finding"], f["subject"], f["severity"]) for f in o.findings if f["severity"] in PAGING]
        clean_days.append({"day": o.day, "model": model, "alerts": len(pf), "findings": pf,
                           "naive_alerts": len(nv.get(o.day, [])), "seconds": o.seconds})  # fmt: skip
        if pf:
            log(f"  {model} seed {seed} clean {o.day}: {pf}")
    secs = [o.seconds for o in pre.outcomes + post.outcomes if o.status == "ok"]
    total = time.perf_counter() - t0
    log(f"  {model} seed {seed}: {total:.0f} s (training {t_train:.0f} s, clean run {t_clean:.0f} s, "
        f"incidents {total - t_train - t_clean:.0f} s)")
    return {"seed": seed, "model": model, "cases": cases, "clean": clean_days, "seconds": total,
            "seconds_per_model_day": sum(secs) / max(len(secs), 1),
            "seconds_per_incident_day": sum(inc_secs) / max(len(inc_secs), 1),
            "errors": [o.error for o in pre.outcomes + post.outcomes if o.error]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one seed")
    ap.add_argument("--seeds", type=str, default=None,
                    help="comma-separated seeds (default: the fresh report seeds 71-74; --quick: the first of them)")
    ap.add_argument("--kinds", type=str, default=None, help="comma-separated incident kinds (default: all)")
    ap.add_argument("--work", type=str, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--clean-only", action="store_true", help="no incident worlds: only false alerts on clean worlds")
    ap.add_argument("--models", type=str, default="pal,din", help="comma-separated reference models (default pal,din)")
    ap.add_argument("--save", type=str, default=None, help="append each seed x model's result to this JSON-lines file")
    ap.add_argument("--load", type=str, default=None,
                    help="run nothing: summarise the results saved in this JSON-lines file (e.g. of a run cut short)")
    args = ap.parse_args()
    models = args.models.split(",")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else (REPORT_SEEDS[:1] if args.quick else REPORT_SEEDS)
    kinds = [] if args.clean_only else (args.kinds.split(",") if args.kinds else list(KINDS))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        sys.exit(f"unknown kinds {unknown}; kinds: {list(KINDS)}")
    log = lambda s: print(s, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    base = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ctrlens-bench-"))
    results = []
    if args.load:
        results = [json.loads(x) for x in Path(args.load).read_text().splitlines() if x.strip()]
        seeds = sorted({r["seed"] for r in results})
        models = [m for m in models if any(r["model"] == m for r in results)]
        kinds = [k for k in kinds if any(c["kind"] == k for r in results for c in r["cases"])]
    try:
        for i, s in enumerate([] if args.load else seeds):  # seeds outer: the worlds are shared by the models
            for model in models:
                log(f"{model} seed {s}: world {WORLD['days']} days x {WORLD['rows_per_day']} rows, trained on {TRAIN_DAYS} days, "
                    f"then retrained daily")
                work = base / f"{model}-seed{s}"
                work.mkdir(parents=True, exist_ok=True)
                results.append(run_seed(s, i, work, kinds, log, model, keep=bool(args.work), worlds=base / f"worlds-seed{s}"))
                if args.save:
                    with open(args.save, "a") as fh:
                        fh.write(json.dumps(results[-1]) + "\n")
                if not args.work:
                    shutil.rmtree(work, ignore_errors=True)
            if not args.work:
                shutil.rmtree(base / f"worlds-seed{s}", ignore_errors=True)
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
                       "top1_both": sum(c["kind_ok"] and c["subject_ok"] for c in ck) / len(ck),
                       "naive_recall": sum(c["naive_detected"] for c in ck) / len(ck)}  # fmt: skip
    print()
    print(f"{'kind':<22}{'runs':>5}{'recall':>8}{'top1 subj':>10}{'top1 kind':>10}{'top1 both':>10}{'naive recall':>13}")
    for k, v in per_kind.items():
        print(f"{k:<22}{v['runs']:>5}{v['recall']:>8.0%}{v['top1_subject']:>10.0%}{v['top1_kind']:>10.0%}"
              f"{v['top1_both']:>10.0%}{v['naive_recall']:>13.0%}")
    for m_ in models:
        cm = [c for c in cases if c["model"] == m_]
        dm = [d for d in clean if d["model"] == m_]
        if cm or dm:
            print(f"{m_:<22}{len(cm):>5}{sum(c['detected'] for c in cm) / max(len(cm), 1):>8.0%}"
                  f"{'':>20}{sum(c['kind_ok'] and c['subject_ok'] for c in cm) / max(len(cm), 1):>10.0%}"
                  f"   false alerts {100.0 * sum(d['alerts'] for d in dm) / max(len(dm), 1):.2f} / 100 ({len(dm)} days)")
    misses = [f"{c['model']} {c['kind']}:{c['field']} seed {c['seed']} -> {c['top_finding']}:{c['top_subject']}" for c in cases
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
    # the runs' own time (with --load: the saved runs', not this summary's)
    total_s = sum(r["seconds"] for r in results) if args.load else time.perf_counter() - t0
    per_day = sum(r["seconds_per_model_day"] for r in results) / max(len(results), 1)
    print(f"peak memory {peak_mb:.0f} MB; {per_day:.2f} s per model-day; total {total_s:.0f} s")
    out = {
        "benchmark": "incident_detection", "seeds": seeds, "tuning_seeds": TUNING_SEEDS,
        "fresh_seeds": not (set(seeds) & set(TUNING_SEEDS)),
        "models": models, "clean_control": "checkpoint retrained every day", "quick": bool(args.quick),
        "world": WORLD, "incident_runs": n, "clean_model_days": len(clean),
        "recall": round(recall, 4), "top1_subject": round(subj, 4), "top1_kind": round(kind_ok, 4),
        "top1_subject_and_kind": round(both, 4), "false_alerts_per_100": round(false_rate, 3),
        "naive_psi_0.2": {"recall": round(n_recall, 4), "top1_subject": round(n_subj, 4), "false_alerts_per_100": round(n_false, 3)},
        "per_kind": per_kind, "misses": misses,
        "seconds_per_model_day": round(per_day, 3),
        "seconds_per_incident_day": round(sum(r["seconds_per_incident_day"] for r in results) / max(len(results), 1), 3),
        "peak_memory_mb": round(peak_mb, 1),
        "seconds": round(total_s, 1), "loaded": bool(args.load),
        "targets": {"recall": 0.95, "top1_subject_and_kind": 0.85, "false_alerts_per_100": 1.0},
        "met": {"recall": bool(recall >= 0.95), "top1_subject_and_kind": bool(both >= 0.85),
                "false_alerts_per_100": false_rate <= 1.0},
        "errors": [e for r in results for e in r["errors"]] + [e for c in cases for e in c["errors"]],
    }  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
