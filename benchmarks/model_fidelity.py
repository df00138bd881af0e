"""Do the reference models show the effects their papers claim? Synthetic world (3 seeds) + MovieLens.

Claims checked (each a paired comparison in the same world, same training budget, same seed):

1. DIN > Base on GAUC (Base gets DIN's MLP, so only the pooling differs).
2. DICM > DIN (AUC), and the gain is largest on impressions of *new* items (created after the
   last training day: their id embeddings never trained, their images are informative).
3. ESMM's pCVR ranks conversions better over *all* impressions than a CVR model trained on clicked
   rows only (the sample-selection-bias claim). All-impression conversion labels come from the
   world's ground truth: ``z* ~ Bernoulli(p_conversion)`` for every impression, clicked or not.
   This pair runs on its own world with ``Weights(cvr_shared=ESMM_CVR_SHARED)``: conversion shares
   the user-interest and item-quality terms of click relevance, so the clicked rows are a biased
   sample for CVR (in the default world they are not, and the claim has nothing to act on).
4. PAL's pCTR (served without position) ranks by true relevance (the world's click logit without
   position) better than Base with position as a feature served at a default position (1).
   Spearman correlation with the true relevance logit.
5. xDeepFM > its DNN part alone (AUC).
6. MovieLens (real data, split by time): DIN vs Base AUC and GAUC.

"met" for a comparison = the difference has the claimed sign in every seed. Run::

    .venv/bin/python benchmarks/model_fidelity.py            # full (~15 min on 2 cores)
    .venv/bin/python benchmarks/model_fidelity.py --quick    # a few minutes
    .venv/bin/python benchmarks/model_fidelity.py --only esmm --no-movielens   # claim 3 alone

The last line printed is one JSON object with every figure and "met" per claim.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ctrlens.data import Batch, DailyDataset  # noqa: E402
from ctrlens.metrics import auc, gauc  # noqa: E402
from ctrlens.models.interface import HeadSpec, ModelView  # noqa: E402
from ctrlens.train import train  # noqa: E402

MOVIELENS = ROOT.parent / "shared" / "data" / "movielens-latest-small"
ESMM_CVR_SHARED = 1.0  # coupling of conversion to click relevance in the ESMM pair's world (docs/synthetic-world.md)
ESMM_MODELS = ("esmm", "cvr_clicked")


@dataclass(frozen=True)
class Sizes:
    """World and training sizes of a run."""

    seeds: tuple[int, ...] = (0, 1, 2)
    train_days: int = 8
    eval_days: int = 2
    rows_per_day: int = 25_000
    n_users: int = 3_000
    n_items: int = 1_000
    n_categories: int = 20
    n_shops: int = 200
    new_items_per_day: int = 40
    max_hist: int = 20
    image_size: int = 16
    batch_size: int = 1024
    lr: float = 5e-3
    epochs: int = 2
    ml_epochs: int = 1
    ml_lr: float = 2e-3
    ml_seeds: tuple[int, ...] = (0, 1, 2)


FULL = Sizes()
QUICK = replace(FULL, seeds=(0, 1), train_days=4, eval_days=1, rows_per_day=10_000, n_users=1_500, n_items=600,
                ml_seeds=(0,))

# Paired configs: each comparison differs only in what the paper changes.
DIN_MLP = {"mlp": (200, 80), "activation": "prelu"}
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("base", dict(DIN_MLP)),
    "din": ("din", dict(DIN_MLP)),
    "dicm": ("dicm", dict(DIN_MLP, image_channels=(8, 16))),  # DIN + images; a narrower CNN for CPU time
    "esmm": ("esmm", {"tower": (128, 64)}),
    "cvr_clicked": ("cvr_clicked", {"mlp": (128, 64)}),
    "pal": ("pal", {"mlp": (128, 64)}),
    "base_pos": ("base", {"mlp": (128, 64), "use_position": True}),
    "xdeepfm": ("xdeepfm", {}),
    "xdeepfm_dnn": ("xdeepfm", {"use_cin": False, "use_linear": False}),
}


# -- the clicked-rows-only CVR baseline (ESMM's BASE) --------------------------------------------


class ClickedCVR(nn.Module):
    """A Base net predicting conversion, trained on clicked impressions only (ESMM paper's BASE)."""

    name = "cvr_clicked"

    def __init__(self, schema: Any, **config: Any):
        super().__init__()
        import reference_models

        self.net = reference_models.build("base", schema, **config)
        self.schema, self.config = schema, self.net.config

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.net(batch)
        return {"cvr": out["ctr"], "cvr_logit": out["ctr_logit"]}

    def loss(self, out: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        m = batch.labels["click"] > 0.5
        if not bool(m.any()):
            return out["cvr_logit"].sum() * 0.0
        return F.binary_cross_entropy_with_logits(out["cvr_logit"][m], batch.labels["conversion"][m])

    def lens(self) -> ModelView:
        v = self.net.lens()
        return ModelView(self, lambda m, b: m(b), v.fields, v.layers,
                         {"cvr": HeadSpec("cvr", "cvr", "conversion", "clicked", "cvr_logit")}, self.name, v.tables)


def builder(name: str, schema: Any, **config: Any) -> nn.Module:
    if name == "cvr_clicked":
        return ClickedCVR(schema, **config)
    import reference_models

    return reference_models.build(name, schema, **config)


# -- scoring -------------------------------------------------------------------------------------


def predict(model: nn.Module, ds: DailyDataset, day: str, keys: tuple[str, ...], position: int | None = None) -> pd.DataFrame:
    """Model outputs ``keys`` for every row of ``day``, with row number, user, item and labels."""
    model.eval()
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (*keys, "row", "user", "item", "click", "conversion")}
    with torch.no_grad():
        for b in ds.iter_batches(day, 8192):
            if position is not None:
                b = b.with_features(position=torch.full_like(b.features["position"], position))
            out = model(b)
            for k in keys:
                cols[k].append(out[k].float().numpy())
            cols["row"].append(b.row.numpy())
            cols["user"].append(b.user.numpy())
            cols["item"].append(b.features["item_id"].numpy() - 2)
            cols["click"].append(b.labels["click"].numpy())
            cols["conversion"].append(b.labels.get("conversion", b.labels["click"] * 0).numpy())
    return pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})


def fit(name: str, root: Path, days: list[str], out: Path, sizes: Sizes, seed: int, epochs: int) -> nn.Module:
    kind, config = MODELS[name]
    res = train(kind, root, days, out_dir=out / name, epochs=epochs, batch_size=sizes.batch_size, lr=sizes.lr,
                seed=seed, model_config=config, builder=builder, overwrite=True)
    from ctrlens.models.checkpoint import load_checkpoint

    return load_checkpoint(res.final, builder=builder)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic)


def _world(seed: int, sizes: Sizes, root: Path, log: Any, cvr_shared: float = 0.0) -> tuple[DailyDataset, list[str], list[str], Any]:
    """Generate the world of ``seed`` into ``root``; returns (dataset, train days, eval days, frame(model, keys, position))."""
    from ctrlens.synth import Weights, generate

    t0 = time.time()
    days_total = sizes.train_days + sizes.eval_days
    generate(root, days=days_total, rows_per_day=sizes.rows_per_day, seed=100 + seed, n_users=sizes.n_users,
             n_items=sizes.n_items, n_categories=sizes.n_categories, n_shops=sizes.n_shops, max_hist=sizes.max_hist,
             image_size=sizes.image_size, new_items_per_day=sizes.new_items_per_day, importance_rows=1000,
             weights=Weights(cvr_shared=cvr_shared), overwrite=True)
    ds = DailyDataset(root)
    days = ds.days()
    train_days, eval_days = days[: sizes.train_days], days[sizes.train_days:]
    log(f"seed {seed}: world {days_total} days x {sizes.rows_per_day} rows (cvr_shared {cvr_shared}) in {time.time() - t0:.0f}s")
    truth = {d: pd.read_parquet(root / "_truth" / f"rows-{d}.parquet") for d in eval_days}

    def frame(model: nn.Module, keys: tuple[str, ...], position: int | None = None) -> pd.DataFrame:
        parts = []
        for d in eval_days:
            p = predict(model, ds, d, keys, position)
            t = truth[d].iloc[p["row"].to_numpy()].reset_index(drop=True)
            parts.append(pd.concat([p, t], axis=1))
        return pd.concat(parts, ignore_index=True)

    return ds, train_days, eval_days, frame


def run_esmm(seed: int, sizes: Sizes, work: Path, log: Any, cvr_shared: float = ESMM_CVR_SHARED) -> dict[str, float]:
    """ESMM vs clicked-only CVR on a world where conversion shares factors with clicks (claim 3)."""
    t0 = time.time()
    ds, train_days, _, frame = _world(seed, sizes, work / f"world{seed}-cvr", log, cvr_shared=cvr_shared)
    models = {}
    for name in ESMM_MODELS:
        t = time.time()
        models[name] = fit(name, work / f"world{seed}-cvr", train_days, work / f"runs{seed}-cvr", sizes, seed, sizes.epochs)
        log(f"seed {seed}: trained {name} in {time.time() - t:.0f}s")
    # conversion labels for every impression from the true p_conversion
    rng = np.random.default_rng(1000 + seed)
    fe = frame(models["esmm"], ("cvr", "ctr"))
    fc = frame(models["cvr_clicked"], ("cvr",))
    zstar = (rng.random(len(fe)) < fe["p_conversion"].to_numpy()).astype(np.float64)
    clicked = fe["click"].to_numpy() > 0.5
    r: dict[str, float] = {"cvr_world.true_cvr_clicked": float(fe["p_conversion"][clicked].mean()),
                           "cvr_world.true_cvr_all": float(fe["p_conversion"].mean())}
    for n, fr in (("esmm", fe), ("cvr_clicked", fc)):
        r[f"{n}.cvr_auc_all"] = auc(zstar, fr["cvr"])
        r[f"{n}.cvr_spearman_all"] = _spearman(fr["cvr"], fr["conversion_logit"])
        r[f"{n}.cvr_auc_clicked"] = auc(fr["conversion"][clicked], fr["cvr"][clicked])
        r[f"{n}.cvr_auc_unclicked"] = auc(zstar[~clicked], fr["cvr"][~clicked])
    log(f"seed {seed}: ESMM pair scored in {time.time() - t0:.0f}s total")
    return r


def run_world(seed: int, sizes: Sizes, work: Path, log: Any) -> dict[str, float]:
    """Generate the default world, train every model but the ESMM pair, return the figures of one seed."""
    t0 = time.time()
    root = work / f"world{seed}"
    ds, train_days, _, frame = _world(seed, sizes, root, log)
    created = pd.read_parquet(root / "_truth" / "items.parquet")["created_day"].to_numpy()

    models: dict[str, nn.Module] = {}
    for name in (n for n in MODELS if n not in ESMM_MODELS):
        t = time.time()
        models[name] = fit(name, root, train_days, work / f"runs{seed}", sizes, seed, sizes.epochs)
        log(f"seed {seed}: trained {name} in {time.time() - t:.0f}s")

    r: dict[str, float] = {}
    f = {n: frame(models[n], ("ctr",)) for n in ("base", "din", "dicm", "xdeepfm", "xdeepfm_dnn")}
    for n, fr in f.items():
        r[f"{n}.auc"] = auc(fr["click"], fr["ctr"])
        r[f"{n}.gauc"] = gauc(fr["click"], fr["ctr"], fr["user"])
    new = created[f["din"]["item"].to_numpy()] >= sizes.train_days  # created after the last training day
    r["new_item_share"] = float(new.mean())
    for n in ("din", "dicm"):
        fr = f[n]
        r[f"{n}.auc_new"] = auc(fr["click"][new], fr["ctr"][new])
        r[f"{n}.auc_old"] = auc(fr["click"][~new], fr["ctr"][~new])
        # relevance ranking on new items: Spearman with the true click logit without position
        r[f"{n}.rel_new"] = _spearman(fr["ctr"][new], fr["relevance_logit"][new])
        r[f"{n}.rel_all"] = _spearman(fr["ctr"], fr["relevance_logit"])

    # PAL vs Base with position as a feature, served at default positions
    fp = frame(models["pal"], ("ctr",))
    r["pal.rel_spearman"] = _spearman(fp["ctr"], fp["relevance_logit"])
    r["pal.click_auc"] = auc(fp["click"], fp["ctr"])
    n_pos = ds.schema.position.max_position  # type: ignore[union-attr]
    for p in (1, (n_pos + 1) // 2, n_pos):
        fb = frame(models["base_pos"], ("ctr",), position=p)
        r[f"base_pos@{p}.rel_spearman"] = _spearman(fb["ctr"], fb["relevance_logit"])
    log(f"seed {seed}: scored in {time.time() - t0:.0f}s total")
    return r


def run_movielens(sizes: Sizes, work: Path, log: Any) -> dict[str, list[float]] | None:
    """DIN vs Base on MovieLens ml-latest-small, monthly partitions, last ~20 % of ratings as test."""
    if not MOVIELENS.is_dir():
        log(f"MovieLens not found at {MOVIELENS}: skipped")
        return None
    from ctrlens.data.movielens import convert

    root = work / "movielens"
    convert(MOVIELENS, root, partition="month", overwrite=True)
    ds = DailyDataset(root)
    days = ds.days()
    n = np.array([ds.num_rows(d) for d in days])
    cut = int(np.searchsorted(np.cumsum(n) / n.sum(), 0.8))
    train_days, test_days = days[:cut], days[cut:]
    out: dict[str, list[float]] = {"base.auc": [], "base.gauc": [], "din.auc": [], "din.gauc": []}
    for seed in sizes.ml_seeds:
        for name in ("base", "din"):
            t = time.time()
            res = train(name, root, train_days, out_dir=work / f"ml{seed}" / name, epochs=sizes.ml_epochs, batch_size=256,
                        lr=sizes.ml_lr, seed=seed, model_config=dict(DIN_MLP), overwrite=True)
            from ctrlens.models.checkpoint import load_checkpoint

            m = load_checkpoint(res.final)
            fr = pd.concat([predict(m, ds, d, ("ctr",)) for d in test_days], ignore_index=True)
            out[f"{name}.auc"].append(auc(fr["click"], fr["ctr"]))
            out[f"{name}.gauc"].append(gauc(fr["click"], fr["ctr"], fr["user"]))
            log(f"movielens seed {seed}: {name} AUC {out[f'{name}.auc'][-1]:.4f} GAUC {out[f'{name}.gauc'][-1]:.4f} ({time.time() - t:.0f}s)")
    out["train_rows"] = [float(n[:cut].sum())]
    out["test_rows"] = [float(n[cut:].sum())]
    out["split"] = [float(cut)]
    return out


# -- report --------------------------------------------------------------------------------------


def _ms(x: list[float]) -> str:
    a = np.asarray(x, dtype=float)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.4f}"


def claims(per_seed: list[dict[str, float]], ml: dict[str, list[float]] | None,
           cvr_shared: float = ESMM_CVR_SHARED) -> list[dict[str, Any]]:
    def col(k: str) -> list[float]:
        return [s[k] for s in per_seed]

    def diff(a: str, b: str) -> list[float]:
        return [s[a] - s[b] for s in per_seed]

    out = []
    have = set(per_seed[0])

    def add(claim: str, metric: str, a: str, b: str, av: list[float], bv: list[float], d: list[float], met: bool, note: str = "") -> None:
        out.append({"claim": claim, "metric": metric, "model": a, "baseline": b, "model_values": av, "baseline_values": bv,
                    "diff_mean": float(np.mean(d)), "diff_sd": float(np.std(d, ddof=1)) if len(d) > 1 else 0.0,
                    "diffs": d, "met": bool(met), "note": note})

    if "din.gauc" in have:
        _default_world_claims(add, col, diff, per_seed)
    if "esmm.cvr_auc_all" in have:
        d = diff("esmm.cvr_auc_all", "cvr_clicked.cvr_auc_all")
        add("ESMM CVR over all impressions > CVR trained on clicks",
            f"CVR AUC, all impressions (z* ~ true p_conversion; world cvr_shared={cvr_shared})",
            "esmm", "cvr_clicked", col("esmm.cvr_auc_all"), col("cvr_clicked.cvr_auc_all"), d, all(x > 0 for x in d),
            note=f"on clicked rows (real conversions): ESMM {_ms(col('esmm.cvr_auc_clicked'))} vs "
            f"{_ms(col('cvr_clicked.cvr_auc_clicked'))}; on unclicked rows (z*): ESMM {_ms(col('esmm.cvr_auc_unclicked'))} vs "
            f"{_ms(col('cvr_clicked.cvr_auc_unclicked'))}; true CVR clicked {_ms(col('cvr_world.true_cvr_clicked'))} "
            f"vs all impressions {_ms(col('cvr_world.true_cvr_all'))}")
    if ml is not None:
        for metric in ("auc", "gauc"):
            a, b = ml[f"din.{metric}"], ml[f"base.{metric}"]
            d = [x - y for x, y in zip(a, b)]
            add(f"MovieLens: DIN vs Base ({metric.upper()})", metric.upper(), "din", "base", a, b, d, all(x > 0 for x in d),
                note=f"train {int(ml['train_rows'][0])} rows / test {int(ml['test_rows'][0])} rows (time split)")
    return out


def _default_world_claims(add: Any, col: Any, diff: Any, per_seed: list[dict[str, float]]) -> None:
    """Claims 1, 2, 4, 5 (the default world)."""
    d = diff("din.gauc", "base.gauc")
    add("DIN > Base on GAUC", "GAUC", "din", "base", col("din.gauc"), col("base.gauc"), d, all(x > 0 for x in d))
    d = diff("dicm.auc", "din.auc")
    add("DICM > DIN", "AUC (all eval rows)", "dicm", "din", col("dicm.auc"), col("din.auc"), d, all(x > 0 for x in d))
    dn = diff("dicm.auc_new", "din.auc_new")
    add("DICM's gain largest on new items", "AUC gain on new items vs on all rows", "dicm", "din",
        col("dicm.auc_new"), col("din.auc_new"), dn, float(np.mean(dn)) > float(np.mean(d)) and all(x > 0 for x in dn),
        note=f"gain on all rows {np.mean(d):+.4f}; share of new-item rows {np.mean(col('new_item_share')):.3f}")
    d = diff("pal.rel_spearman", "base_pos@1.rel_spearman")
    others = ", ".join(f"@{k.split('@')[1].split('.')[0]} {_ms(col(k))}" for k in per_seed[0] if k.startswith("base_pos@"))
    add("PAL ranks by true relevance better than Base+position served at position 1", "Spearman(score, true relevance logit)",
        "pal", "base_pos@1", col("pal.rel_spearman"), col("base_pos@1.rel_spearman"), d, all(x > 0 for x in d),
        note=f"Base+position served at {others}")
    d = diff("xdeepfm.auc", "xdeepfm_dnn.auc")
    add("xDeepFM > its DNN part alone", "AUC", "xdeepfm", "xdeepfm_dnn", col("xdeepfm.auc"), col("xdeepfm_dnn.auc"), d,
        all(x > 0 for x in d))


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="model fidelity (mean ± sd over seeds; diff = model - baseline, paired by seed)")
    for c in ("claim", "metric", "model", "baseline", "diff", "met"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["claim"], r["metric"], _ms(r["model_values"]), _ms(r["baseline_values"]),
                  f"{r['diff_mean']:+.4f} ± {r['diff_sd']:.4f}", "yes" if r["met"] else "NO")
    Console(width=200).print(t)
    for r in rows:
        if r["note"]:
            print(f"  {r['claim']}: {r['note']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller world and 2 seeds (a few minutes)")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--no-movielens", action="store_true")
    ap.add_argument("--only", choices=("esmm",), default=None,
                    help="run one claim alone: 'esmm' = the ESMM pair on its cvr_shared world (implies no MovieLens)")
    ap.add_argument("--esmm-cvr-shared", type=float, default=ESMM_CVR_SHARED,
                    help=f"cvr_shared of the ESMM pair's world (default {ESMM_CVR_SHARED}; 0 = the default world)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: intra-op threads thrash on a shared 2-core machine)")
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="ctrlens-fidelity-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    per_seed = []
    for s in sizes.seeds:
        r = {} if args.only else run_world(s, sizes, work, log)
        r.update(run_esmm(s, sizes, work, log, args.esmm_cvr_shared))
        per_seed.append(r)
    ml = None if args.no_movielens or args.only else run_movielens(sizes, work, log)
    rows = claims(per_seed, ml, args.esmm_cvr_shared)
    print_table(rows)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = time.time() - t0
    print(f"{'quick' if args.quick else 'full'} run: {seconds:.0f}s, peak RSS {peak_mb:.0f} MiB, torch threads {torch.get_num_threads()}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "model_fidelity",
        "quick": args.quick,
        "only": args.only,
        "esmm_cvr_shared": args.esmm_cvr_shared,
        "sizes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sizes.__dict__.items()},
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak_mb, 1),
        "claims": {r["claim"]: {k: r[k] for k in ("metric", "model_values", "baseline_values", "diff_mean", "diff_sd", "met")} for r in rows},
        "per_seed": per_seed,
        "met": all(r["met"] for r in rows),
    }
    print(json.dumps(result, default=float))
    return result


if __name__ == "__main__":
    main()
