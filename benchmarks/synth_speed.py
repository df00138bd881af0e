"""How fast does ``ctrlens.synth.generate`` write impressions? Target: 1M rows in under 60 s on 2 cores.

Compares with the obvious approach -- a per-row Python loop that samples each impression, its history
and its labels and builds a record dict, then writes them with pandas -- measured on a small sample of
the same world and extrapolated.

    .venv/bin/python benchmarks/synth_speed.py            # 1M rows (10 days x 100k)
    .venv/bin/python benchmarks/synth_speed.py --quick    # 100k rows

The last line printed is one JSON object with the figures, the target and whether it is met.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def naive_rows(world, ctx, n: int, seed: int) -> list[dict]:
    """The per-row approach: one Python iteration per impression (and per history behaviour)."""
    cfg, w = world.cfg, world.cfg.weights
    rnd = random.Random(seed)
    users = list(range(cfg.n_users))
    uw = world.user_activity.tolist()
    by_cat: dict[int, list[int]] = {}
    for i in ctx.items.tolist():
        by_cat.setdefault(int(world.item_cat[i]), []).append(i)
    pop = {c: [float(world.item_pop[i]) for i in its] for c, its in by_cat.items()}
    cats = list(range(cfg.n_categories))
    cat_p = ctx.cat_pop.tolist()
    positions = list(range(1, cfg.positions + 1))
    pos_p = world.pos_p.tolist()
    hour_p = world.hour_p.tolist()
    rows = []
    for _ in range(n):
        u = rnd.choices(users, uw)[0]
        ints, iw = world.user_int_cat[u].tolist(), world.user_int_w[u].tolist()
        c = rnd.choices(ints, iw)[0] if rnd.random() < cfg.targeted else rnd.choices(cats, cat_p)[0]
        item = rnd.choices(by_cat[c], pop[c])[0]
        hour = rnd.choices(range(24), hour_p)[0]
        pos = rnd.choices(positions, pos_p)[0]
        hist = []
        for _ in range(min(cfg.max_hist, int(rnd.expovariate(1 / world.user_hist_mean[u])))):
            hc = rnd.choices(ints, iw)[0] if rnd.random() < cfg.history_on_interest else rnd.choices(cats, cat_p)[0]
            hist.append(rnd.choices(by_cat[hc], pop[hc])[0])
        hcat = [int(world.item_cat[h]) for h in hist]
        n_match = sum(1 for x in hcat if x == c)
        price = float(world.item_price[item])
        r = (ctx.base + w.relevance * math.log1p(n_match) + w.revisit * (item in hist)
             + float(world.item_q[item]) + w.price * (price - float(world.cat_price[c])) + float(ctx.cat_eff[c]))
        p_click = pos ** -ctx.eta / (1 + math.exp(-r))
        click = int(rnd.random() < p_click)
        conv = int(click and rnd.random() < 1 / (1 + math.exp(-(w.cvr_base + w.cvr_price * (price - world.price_mean)))))
        rows.append({
            "user_id": u, "item_id": item, "category_id": c, "shop_id": int(world.item_shop[item]),
            "user_age_bucket": int(world.user_age[u]), "user_gender": int(world.user_gender[u]), "hour": hour,
            "price": price, "hist_item_id": hist, "hist_category_id": hcat, "position": pos,
            "click": click, "conversion": conv,
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100k rows instead of 1M")
    ap.add_argument("--naive-rows", type=int, default=None, help="rows for the per-row baseline sample")
    args = ap.parse_args()

    from ctrlens.synth import WorldConfig, generate
    from ctrlens.synth.world import World

    days, per_day = (2, 50_000) if args.quick else (10, 100_000)
    rows = days * per_day
    naive_n = args.naive_rows or (2_000 if args.quick else 5_000)
    with tempfile.TemporaryDirectory() as tmp:
        stamps: list[float] = []
        t0, c0 = time.perf_counter(), time.process_time()
        world = generate(Path(tmp) / "w", days=days, rows_per_day=per_day, seed=1,
                         progress=lambda done, total: stamps.append(time.perf_counter()))
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        size_mb = sum(p.stat().st_size for p in world.root.rglob("*") if p.is_file()) / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    w = World(WorldConfig(days=1, seed=1))
    ctx = w.context(0)
    t0 = time.perf_counter()
    recs = naive_rows(w, ctx, naive_n, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        pd.DataFrame.from_records(recs).to_parquet(Path(tmp) / "part-0.parquet")
    naive_s = time.perf_counter() - t0

    # fixed costs (images of every item, true importance, entity tables) vs. the per-day marginal cost
    per_day_s = (stamps[-1] - stamps[0]) / (days - 1)
    fixed_s = max(0.0, secs - days * per_day_s)
    rps = rows / secs
    naive_rps = naive_n / naive_s
    s1m = secs if rows == 1_000_000 else fixed_s + 1_000_000 / per_day * per_day_s
    print(f"vectorised: {rows:,} rows ({days} days x {per_day:,}) in {secs:.1f} s wall ({cpu:.1f} s CPU) = "
          f"{rps:,.0f} rows/s; fixed cost {fixed_s:.1f} s + {per_day_s:.2f} s per day; "
          f"{size_mb:.0f} MB on disk; peak RSS {peak_mb:.0f} MB")
    print(f"per-row Python loop (simpler model, no images, no importance): {naive_n:,} rows in {naive_s:.2f} s = "
          f"{naive_rps:,.0f} rows/s -> {1_000_000 / naive_rps:.0f} s for 1M rows (extrapolated)")
    print(f"speed-up vs per-row loop: {rps / naive_rps:.1f}x; 1M rows in {s1m:.1f} s"
          f"{' (extrapolated: fixed + 1M rows at the per-day rate)' if rows != 1_000_000 else ''} (target 60 s)")
    print(json.dumps({
        "rows": rows, "seconds": round(secs, 2), "cpu_seconds": round(cpu, 2), "fixed_seconds": round(fixed_s, 2), "rows_per_s": round(rps), "seconds_for_1M": round(s1m, 2),
        "target_s": 60, "met": s1m < 60, "naive_rows_per_s": round(naive_rps), "naive_seconds_for_1M": round(1e6 / naive_rps, 1),
        "speedup": round(rps / naive_rps, 1), "peak_rss_mb": round(peak_mb), "disk_mb": round(size_mb, 1),
        "quick": bool(args.quick),
    }))


if __name__ == "__main__":
    sys.exit(main())
