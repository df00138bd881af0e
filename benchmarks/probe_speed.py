"""Probe speed: probes for every layer of DIN on 200k rows, against one plain inference pass and
against scikit-learn's LogisticRegression(lbfgs) on the same standardised features.

    .venv/bin/python benchmarks/probe_speed.py            # 200k rows
    .venv/bin/python benchmarks/probe_speed.py --quick    # 30k rows

Data: a DIN from ``reference_models.build("din", schema)`` on the synthetic world's schema. With
``ctrlens.synth`` available the rows come from a generated world and the model is trained briefly
(``ctrlens.train.train``); otherwise random ids with labels from a planted rule and an untrained
DIN (the speed figures do not depend on the weights). ``--checkpoint/--data/--day`` use your own.

Figures:
* ``probe_vs_inference``: ProbeSuite.fit (one hooked pass + standardise + solve every layer) over
  the rows, divided by one plain ``model(batch)`` pass over the same in-memory batches;
* ``sklearn_vs_probe_solve``: scikit-learn fit time over our solve time, summed over layers, on
  the identical standardised training sample (float64 for scikit-learn, its usual dtype);
* ``max_auc_diff``: largest |AUC ours - AUC scikit-learn| over layers on the held-out rows.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import atexit
import json
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctrlens.data.batch import Batch  # noqa: E402
from ctrlens.data.schema import DenseField, PositionField, Schema, SequenceField, SparseField  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def planted_schema() -> Schema:
    """The synthetic world's schema (no images), mid-sized vocabularies."""
    return Schema(
        (
            SparseField("user_id", 20_000, 8, role="user"),
            SparseField("item_id", 5_000, 8, table="item", role="item"),
            SparseField("category_id", 50, 8, table="category"),
            SparseField("shop_id", 500, 8),
            DenseField("price"),
            SequenceField("hist_item_id", "item", 20),
            SequenceField("hist_category_id", "category", 20),
            SparseField("user_age_bucket", 8, 8),
            SparseField("user_gender", 3, 8),
            SparseField("hour", 24, 8),
            PositionField("position", 10),
        ),
        labels=("click", "conversion"),
    )


def planted_batches(schema: Schema, rows: int, batch_size: int, seed: int = 0) -> list[Batch]:
    """Random rows whose click depends on user, item, category match with the history and price."""
    g = np.random.default_rng(seed)
    n_u, n_i, n_c, L = schema["user_id"].vocab_size, schema["item_id"].vocab_size, schema["category_id"].vocab_size, 20
    ue, ie = g.normal(0, 0.8, n_u), g.normal(0, 0.8, n_i)
    cat_of = g.integers(0, n_c, n_i)
    user, item = g.integers(0, n_u, rows), g.integers(0, n_i, rows)
    hist = g.integers(0, n_i, (rows, L))
    mask = np.arange(L)[None, :] < g.integers(0, L + 1, rows)[:, None]
    match = ((cat_of[hist] == cat_of[item][:, None]) & mask).sum(1)
    price = g.lognormal(0, 0.5, rows).astype(np.float32)
    z = ue[user] + ie[item] + 0.6 * match - 0.5 * np.log(price) - 2.0
    click = (g.random(rows) < 1 / (1 + np.exp(-z))).astype(np.float32)
    conv = click * (g.random(rows) < 0.2)
    t = torch.from_numpy
    day = Batch(
        features={
            "user_id": t(user + 2), "item_id": t(item + 2), "category_id": t(cat_of[item] + 2),
            "shop_id": t(g.integers(2, 502, rows)), "price": t(price),
            "hist_item_id": t(np.where(mask, hist + 2, 0)), "hist_category_id": t(np.where(mask, cat_of[hist] + 2, 0)),
            "user_age_bucket": t(g.integers(2, 10, rows)), "user_gender": t(g.integers(2, 5, rows)),
            "hour": t(g.integers(2, 26, rows)), "position": t(g.integers(1, 11, rows)),
        },
        masks={"hist_item_id": t(mask), "hist_category_id": t(mask)},
        labels={"click": t(click), "conversion": t(conv.astype(np.float32))},
        user=t(user), row=torch.arange(rows),
    )
    return list(day.split(batch_size))


def load_data(args) -> tuple[torch.nn.Module, list[Batch], str]:
    import reference_models

    if args.checkpoint:
        from ctrlens.data import DailyDataset
        from ctrlens.models.checkpoint import load_checkpoint

        ds = DailyDataset(args.data)
        model = load_checkpoint(args.checkpoint, ds.schema)
        needs = any(f.kind == "image" for f in ds.schema.fields)
        batches = list(ds.iter_batches(args.day, batch_size=args.batch_size, limit=args.rows, images=needs))
        return model, batches, f"checkpoint {args.checkpoint} on {args.day}"
    try:
        from ctrlens.synth import generate  # type: ignore[attr-defined]
        from ctrlens.train import train
    except ImportError:
        generate = None
    if generate is not None:
        from ctrlens.data import DailyDataset

        tmp = Path(tempfile.mkdtemp(prefix="probe_speed_"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        world = generate(tmp / "world", days=2, rows_per_day=args.rows, seed=1)
        ds = DailyDataset(world.root)
        d0, d1 = ds.days()[:2]
        res = train("din", world.root, [d0], out_dir=tmp / "run", batch_size=2048, max_steps=args.train_steps, lr=3e-3)
        from ctrlens.models.checkpoint import load_checkpoint

        model = load_checkpoint(res.final, ds.schema)
        batches = list(ds.iter_batches(d1, batch_size=args.batch_size, limit=args.rows, images=False))
        return model, batches, f"synthetic world day {d1}, DIN trained {args.train_steps} steps on {d0}"
    schema = planted_schema()
    model = reference_models.build("din", schema)
    return model, planted_batches(schema, args.rows, args.batch_size), "random ids with a planted click rule, untrained DIN"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="30k rows")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--checkpoint")
    ap.add_argument("--data")
    ap.add_argument("--day")
    args = ap.parse_args()
    if args.quick:
        args.rows = 30_000

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from ctrlens.models.interface import as_view
    from ctrlens.probes import ProbeSuite, auc
    from ctrlens.probes.features import StreamConfig, stream

    torch.manual_seed(0)
    model, batches, source = load_data(args)
    model = model.to(args.device).eval()
    batches = [b.to(args.device) for b in batches]
    rows = sum(len(b) for b in batches)
    view = as_view(model)

    def plain_pass() -> float:
        t = time.perf_counter()
        with torch.no_grad():
            for b in batches:
                view(b)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t

    plain_pass()  # warm-up
    t_inf = min(plain_pass() for _ in range(2))

    rss_before = peak_rss_mb()
    suite = ProbeSuite(view, max_rows=rows, holdout=0.2, seed=0, device=args.device)
    t = time.perf_counter()
    suite.fit(batches, day="bench")
    t_fit = time.perf_counter() - t
    rss_fit = peak_rss_mb()  # process peak so far: data + model + the suite's pass and solves
    sample_mb = sum(p.n_features_in_ for p in suite.probes_.values()) * (suite.n_train_ + suite.n_holdout_) * 4 / 2**20
    held = suite.score().set_index("layer")

    # The identical sample (same seed -> same rows), standardised exactly as the suite did.
    hold = suite.holdout
    cfg = StreamConfig(0, {"train": (rows, lambda k, u: u >= hold), "holdout": (rows, lambda k, u: u < hold)})
    sample = stream(view, suite._layers, suite._head, batches, cfg, store_device=torch.device(args.device))
    tr, ho = sample["train"], sample["holdout"]
    y_tr, y_ho = tr.y.cpu().numpy(), ho.y.cpu().numpy()
    per_layer = {}
    ours_total = sk_total = 0.0
    for name in suite.layers_:
        mean, scale = suite.mean_[name], suite.scale_[name]
        Xtr = (tr.x[name].cpu().double().numpy() - mean) / scale
        Xho = (ho.x[name].cpu().double().numpy() - mean) / scale
        # our solve alone on these features (the suite's solve time includes standardising)
        Xt = torch.as_tensor(Xtr, dtype=torch.float32, device=args.device)
        yt = torch.as_tensor(y_tr, dtype=torch.float32, device=args.device)
        from ctrlens.probes import SolverConfig, fit_logistic

        t = time.perf_counter()
        fit = fit_logistic(Xt, yt, SolverConfig(C=1.0))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sk = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000).fit(Xtr, y_tr)
        t_sk = time.perf_counter() - t
        a_sk = auc(sk.decision_function(Xho), y_ho)
        a_ours = float(held.loc[name, "auc"])
        ours_total += t_ours
        sk_total += t_sk
        per_layer[name] = {
            "dim": int(Xtr.shape[1]), "auc": round(a_ours, 5), "auc_sklearn": round(a_sk, 5),
            "ours_s": round(t_ours, 4), "sklearn_s": round(t_sk, 4), "ours_iter": fit.n_iter, "sklearn_iter": int(sk.n_iter_[0]),
        }
    max_diff = max(abs(v["auc"] - v["auc_sklearn"]) for v in per_layer.values())
    speedup = sk_total / ours_total
    ratio = t_fit / t_inf

    print(f"data: {source}; {rows} rows, {len(suite.layers_)} layers, device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{'layer':28s} {'dim':>5s} {'auc':>8s} {'sklearn':>8s} {'ours s':>8s} {'skl s':>8s} {'iters':>9s}")
    for name, v in per_layer.items():
        print(f"{name:28s} {v['dim']:5d} {v['auc']:8.4f} {v['auc_sklearn']:8.4f} {v['ours_s']:8.3f} {v['sklearn_s']:8.3f} "
              f"{v['ours_iter']:>4d}/{v['sklearn_iter']:<4d}")
    print(f"plain inference pass:        {t_inf:8.2f} s")
    print(f"ProbeSuite.fit (all layers): {t_fit:8.2f} s = {ratio:.2f}x one inference pass "
          f"(hooked pass {suite.timings_['pass_s']:.2f} s + standardise/solve {suite.timings_['solve_s']:.2f} s)")
    print(f"solve, same features:        ours {ours_total:.2f} s vs scikit-learn lbfgs {sk_total:.2f} s = {speedup:.1f}x faster")
    print(f"largest AUC difference:      {max_diff:.5f}")
    print(f"memory: peak RSS {rss_before:.0f} MB before the fit (data + model), {rss_fit:.0f} MB after it; "
          f"kept sample {sample_mb:.0f} MB; {peak_rss_mb():.0f} MB at the end (with scikit-learn copies)")
    out = {
        "benchmark": "probe_speed", "rows": rows, "layers": len(suite.layers_), "device": args.device, "data": source,
        "inference_s": round(t_inf, 3), "probe_fit_s": round(t_fit, 3), "probe_vs_inference": round(ratio, 3),
        "pass_s": round(suite.timings_["pass_s"], 3), "solve_s": round(suite.timings_["solve_s"], 3),
        "ours_solve_s": round(ours_total, 3), "sklearn_solve_s": round(sk_total, 3),
        "sklearn_vs_probe_solve": round(speedup, 2), "max_auc_diff": round(max_diff, 5),
        "peak_rss_before_fit_mb": round(rss_before, 1), "peak_rss_after_fit_mb": round(rss_fit, 1),
        "sample_mb": round(sample_mb, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "targets": {"max_auc_diff": 0.002, "sklearn_vs_probe_solve": 5.0},
        "met": {"max_auc_diff": bool(max_diff <= 0.002), "sklearn_vs_probe_solve": bool(speedup >= 5.0)},
        "per_layer": per_layer,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
