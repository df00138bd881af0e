"""Which saliency method ranks the fields like permutation importance? Measured on real data.

For each dataset a small reference model is trained (the plain Embedding&MLP ``base``; DIN too where
the data has a behaviour history), then on held-out rows (on its own rows for the 200-row samples):

* **permutation importance** per field: the rise of the head's log loss when the field's values are
  permuted across rows -- the nightly job's own measure (``ctrlens.monitor.compute.
  PermutationImportance``) -- averaged over ``--repeats`` seeded permutations; beside it the
  label-free mean |change of the logit| under permutation (brute force);
* each method's per-field **share** through ``ctrlens.saliency.report`` (what ``ctrlens saliency``
  and the nightly job compute);
* Spearman rank correlation of shares with permutation importance, and top-3 overlap (how many of
  permutation importance's three most important fields are among the method's top three, / 3).
  On the synthetic world also Spearman with the world's *true* importance (``ground_truth.json``).

Datasets (``../shared/data``, see its README): MovieLens ml-latest-small (365-day slices as in
docs/walkthrough-movielens.md; DIN reads the rating history), the UCI Census-Income (KDD) 200-row
sample (two tasks: income > 50K, never married), the Criteo 200-row sample, and a small synthetic
world (``ctrlens.synth``) with its ground truth.

The chosen method: among those whose mean Spearman over all models is within ``TIE`` of the best, the
cheapest (passes per batch). Target: the library default (``ctrlens.saliency.DEFAULT_METHOD`` with
``DEFAULT_BASELINE``) is the chosen method and its Spearman is >= 0.8 on each real dataset (mean over
the dataset's models). Seeds are fixed; one torch thread by default. About 4 minutes on one core;
``--quick`` trains on fewer rows and epochs (a smoke run).

    .venv/bin/python benchmarks/saliency_agreement.py [--quick] [--data ../shared/data] [--only census,criteo]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ctrlens.data.batch import Batch  # noqa: E402

#: (method, baseline) pairs compared; the label is what the tables print.
METHODS: list[tuple[str, str, str]] = [
    ("saliency", "saliency", "zero"),
    ("input_x_gradient (zero)", "input_x_gradient", "zero"),
    ("input_x_gradient (mean)", "input_x_gradient", "mean"),
    ("integrated_gradients (zero)", "integrated_gradients", "zero"),
    ("integrated_gradients (mean)", "integrated_gradients", "mean"),
]

N_STEPS = 16  # Integrated Gradients path steps
#: passes (forward + backward) per batch: the tie-break of :func:`choose`.
COST = {label: (N_STEPS + 2 if m == "integrated_gradients" else 1) for label, m, _ in METHODS}
TIE = 0.02  # Spearman differences below this are noise here (permutation importance on 200 rows)

CENSUS_COLUMNS = (
    "age class_worker det_ind_code det_occ_code education wage_per_hour hs_college marital_stat major_ind_code "
    "major_occ_code race hisp_origin sex union_member unemp_reason full_or_part_emp capital_gains capital_losses "
    "stock_dividends tax_filer_stat region_prev_res state_prev_res det_hh_fam_stat det_hh_summ instance_weight "
    "mig_chg_msa mig_chg_reg mig_move_reg mig_same mig_prev_sunbelt num_emp fam_under_18 country_father "
    "country_mother country_self citizenship own_or_self vet_question vet_benefits weeks_worked year income_50k"
).split()
CENSUS_DENSE = ("age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends", "num_emp", "weeks_worked")


@dataclass
class Case:
    """One trained model on one dataset: rows to analyse and, for the synthetic world, the truth."""

    dataset: str
    model: str
    view: Any
    batches: list[Batch]
    truth: dict[str, float] | None = None


# -- datasets ----------------------------------------------------------------------------------------
def _train(name: str, root: Path, days: list[str], out: Path, *, epochs: int, batch_size: int, lr: float,
           limit: int | None = None, config: dict | None = None) -> Any:
    """A reference model trained on ``days`` of ``root``; returns its ModelView (eval mode)."""
    from ctrlens.data import DailyDataset
    from ctrlens.models.checkpoint import load_checkpoint
    from ctrlens.train import train

    torch.manual_seed(0)
    opts = {"limit": limit} if limit else {}
    res = train(name, root, days, out_dir=out, epochs=epochs, batch_size=batch_size, lr=lr, seed=0,
                model_config=config, **opts)
    model = load_checkpoint(res.final, DailyDataset(root).schema)
    model.eval()
    return model.lens()


def _one_day_table(df: pd.DataFrame, mapping: dict, out: Path) -> Path:
    from ctrlens.data.convert import convert_table

    df = df.assign(day="2026-01-01")
    convert_table(df, {"time": "day", **mapping}, out)
    return out


def movielens(data: Path, tmp: Path, quick: bool) -> list[Case]:
    """Ratings -> 365-day partitions; train on the slices before the last full one, analyse it."""
    from ctrlens.data import DailyDataset
    from ctrlens.data.movielens import convert

    root = tmp / "movielens"
    convert(data / "movielens-latest-small", root, max_len=20, partition="365d")
    ds = DailyDataset(root)
    days = ds.days()
    evald, train_days = days[-2], days[:-2]  # the last slice is a few weeks only
    limit = 20_000 if quick else None
    cases = []
    for name in ("base", "din"):
        view = _train(name, root, train_days, tmp / f"ml-{name}", epochs=1 if quick else 2, batch_size=256, lr=3e-3,
                      limit=limit)
        cases.append(Case("movielens", name, view, list(ds.iter_batches(evald, batch_size=2048, shuffle=True, seed=0, limit=4000))))
    return cases


def census(data: Path, tmp: Path, quick: bool, tasks: tuple[str, ...] = ("income", "never_married")) -> list[Case]:
    """The 200-row Census-Income sample, one model per task; importance on the training rows."""
    from ctrlens.data import DailyDataset

    df = pd.read_csv(data / "census-income-sample-deepctr" / "census-income.sample", header=None, index_col=0,
                     names=["index", *CENSUS_COLUMNS], skipinitialspace=True)
    feats = [c for c in CENSUS_COLUMNS if c not in ("instance_weight", "income_50k")]  # a sampling weight, a label
    cases = []
    for task, label, drop in (("income", {"column": "income_50k", "positive": ["50000+."]}, ()),
                              ("never_married", {"column": "marital_stat", "positive": ["Never married"]}, ("marital_stat",))):
        if task not in tasks:
            continue
        fields = {c: ({"kind": "dense", "normalize": "log_standard" if c not in ("age", "weeks_worked") else "standard"}
                      if c in CENSUS_DENSE else {"kind": "sparse", "dtype": "string"}) for c in feats if c not in drop}
        root = _one_day_table(df, {"fields": fields, "labels": {"click": label}}, tmp / f"census-{task}")
        ds = DailyDataset(root)
        view = _train("base", root, ds.days(), tmp / f"census-{task}-base", epochs=10 if quick else 30, batch_size=32,
                      lr=3e-3, config={"mlp": (64, 32)})
        cases.append(Case(f"census:{task}", "base", view, [ds.load_day(ds.days()[0])]))
    return cases


def criteo(data: Path, tmp: Path, quick: bool) -> list[Case]:
    """The 200-row Criteo sample; importance on the training rows."""
    from ctrlens.data import DailyDataset

    df = pd.read_csv(data / "criteo-sample-deepctr" / "criteo_sample.txt")
    fields = {f"I{i}": {"kind": "dense", "normalize": "log_standard", "fill": 0.0} for i in range(1, 14)}
    fields.update({f"C{i}": {"kind": "sparse"} for i in range(1, 27)})
    for i in range(1, 14):  # a few negative counts (I2 = -1..-3): log_standard needs >= 0
        df[f"I{i}"] = df[f"I{i}"].clip(lower=0)
    root = _one_day_table(df, {"fields": fields, "labels": {"click": "label"}}, tmp / "criteo")
    ds = DailyDataset(root)
    view = _train("base", root, ds.days(), tmp / "criteo-base", epochs=10 if quick else 30, batch_size=32, lr=3e-3,
                  config={"mlp": (64, 32)})
    return [Case("criteo", "base", view, [ds.load_day(ds.days()[0])])]


def synthetic(tmp: Path, quick: bool) -> list[Case]:
    """A small synthetic world: train on days 0-2, analyse day 3; truth = ``importance.click``."""
    from ctrlens.data import DailyDataset
    from ctrlens.synth import generate

    root = tmp / "world"
    w = generate(root, days=4, rows_per_day=10_000 if quick else 30_000, seed=3, n_users=5_000, n_items=1_000,
                 n_categories=20, n_shops=100, max_hist=10, image_size=4, importance_rows=3_000, new_items_per_day=0)
    ds = DailyDataset(root)
    days = ds.days()
    imp = w.ground_truth["importance"]["click"]
    cases = []
    for name in ("base", "din"):
        view = _train(name, root, days[:3], tmp / f"world-{name}", epochs=1, batch_size=512, lr=0.01)
        fields = list(view.fields)
        truth = {f: float(imp.get(f, 0.0)) for f in fields}
        for img in ds.schema.images:  # images the model does not read act through their id
            if img.name not in fields and img.source in truth:
                truth[img.source] += float(imp[img.name])
        batches = list(ds.iter_batches(days[3], batch_size=2048, shuffle=True, seed=0, limit=4000))
        cases.append(Case("synthetic", name, view, batches, truth))
    return cases


# -- measures ----------------------------------------------------------------------------------------
def permutation(case: Case, repeats: int) -> pd.Series:
    """field -> mean rise of the ``ctr`` log loss when the field is permuted (the nightly job's
    ``PermutationImportance``), averaged over ``repeats`` seeded permutations."""
    from ctrlens.monitor.compute import PermutationImportance

    parts = []
    for s in range(repeats):
        acc = PermutationImportance(case.view, ["ctr"], seed=s)
        for b in case.batches:
            acc.add(b)
        parts.append(acc.frame().set_index("field")["mean"])
    return pd.concat(parts, axis=1).mean(axis=1)


def permutation_logit(case: Case, repeats: int) -> pd.Series:
    """field -> mean |change of the ctr logit| when the field is permuted (label-free, brute force)."""
    from ctrlens.monitor.compute import _permuted

    view, tot, n = case.view, {f: 0.0 for f in case.view.fields}, 0
    with torch.no_grad():
        for b in case.batches:
            base = view(b)["ctr_logit"]
            g = torch.Generator().manual_seed(100)
            for _ in range(repeats):
                for f in view.fields:
                    pb = _permuted(b, f, torch.randperm(len(b), generator=g))
                    if pb is not None:
                        tot[f] += float((view(pb)["ctr_logit"] - base).abs().sum())
            n += len(b) * repeats
    return pd.Series({f: v / n for f, v in tot.items()})


def shares(case: Case, method: str, baseline: str) -> pd.Series:
    """field -> share through the public API (what ``ctrlens saliency`` and the nightly job store)."""
    import ctrlens.saliency as sal

    rows = sum(len(b) for b in case.batches)
    rep = sal.report(case.view, case.batches, method=method, baseline=baseline, head="ctr", max_rows=rows,
                     batch_size=2048, n_steps=N_STEPS)
    return rep.shares()


def top_overlap(a: pd.Series, b: pd.Series, k: int = 3) -> float:
    """Fraction of ``b``'s ``k`` largest fields that are among ``a``'s ``k`` largest."""
    return len(set(a.nlargest(k).index) & set(b.nlargest(k).index)) / k


def rho(a: pd.Series, b: pd.Series) -> float:
    f = list(b.index)
    return float(spearmanr([a[x] for x in f], [b[x] for x in f]).statistic)


def choose(table: pd.DataFrame) -> tuple[str, pd.Series]:
    """The default: among methods whose mean Spearman (over every model of every dataset) is within
    ``TIE`` of the best, the cheapest (passes per batch), then the best mean."""
    mean = table.groupby("method")["spearman"].mean()
    near = [m for m in mean.index if mean[m] >= mean.max() - TIE]
    return min(near, key=lambda m: (COST[m], -mean[m])), mean


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--quick", action="store_true", help="fewer training rows and epochs (a smoke run)")
    p.add_argument("--repeats", type=int, default=20, help="permutations averaged per field")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default="", help="comma list of datasets (movielens,census,criteo,synthetic)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    import ctrlens.saliency as sal

    data = Path(a.data)
    if not data.is_dir():
        raise SystemExit(f"shared datasets not found at {data} (--data)")
    t0 = time.perf_counter()
    only = set(filter(None, a.only.split(",")))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        builders = {"movielens": lambda: movielens(data, tmp, a.quick), "census": lambda: census(data, tmp, a.quick),
                    "criteo": lambda: criteo(data, tmp, a.quick), "synthetic": lambda: synthetic(tmp, a.quick)}
        for name, build in builders.items():
            if only and name not in only:
                continue
            t1 = time.perf_counter()
            for c in build():
                perm, perm_z = permutation(c, a.repeats), permutation_logit(c, max(a.repeats // 2, 1))
                print(f"\n{c.dataset} / {c.model}: {sum(len(b) for b in c.batches)} rows; permutation importance "
                      "(log loss): " + ", ".join(f"{f} {v:.4f}" for f, v in perm.nlargest(5).items()), flush=True)
                for label, m, b in METHODS:
                    sh = shares(c, m, b)
                    r = {"dataset": c.dataset, "model": c.model, "method": label, "spearman": rho(sh, perm),
                         "top3": top_overlap(sh, perm), "spearman_logit": rho(sh, perm_z)}
                    if c.truth is not None:
                        r["spearman_truth"] = rho(sh, pd.Series(c.truth))
                    rows.append(r)
                    print(f"  {label:<28} spearman {r['spearman']:+.2f}  top-3 {r['top3']:.2f}  "
                          f"(vs |d logit| {r['spearman_logit']:+.2f}"
                          + (f", vs truth {r['spearman_truth']:+.2f}" if "spearman_truth" in r else "")
                          + ")  top: " + ", ".join(sh.nlargest(3).index), flush=True)
                if c.truth is not None:
                    print(f"  {'(permutation importance)':<28} vs truth {rho(perm, pd.Series(c.truth)):+.2f}")
            print(f"[{name}: {time.perf_counter() - t1:.0f} s]", flush=True)
    table = pd.DataFrame(rows)
    table["ds"] = table["dataset"].str.split(":").str[0]
    chosen, mean = choose(table)
    per_ds = table.groupby(["ds", "method"])["spearman"].mean().unstack("ds")
    print("\nSpearman with permutation importance (log loss), mean over each dataset's models; top-3 overlap:")
    wide = table.pivot_table(index="method", columns="ds", values=["spearman", "top3"], aggfunc="mean")
    wide[("spearman", "mean")] = mean
    print(wide.reindex([m[0] for m in METHODS]).round(2).to_string())
    real = [c for c in per_ds.columns if c != "synthetic"]
    worst_real = float(per_ds.loc[chosen, real].min()) if real else float("nan")
    default = f"{sal.DEFAULT_METHOD} ({sal.DEFAULT_BASELINE})"
    met = bool(default == chosen and real and worst_real >= 0.8)
    print(f"\nchosen default: {chosen} (cheapest within {TIE} of the best mean Spearman); "
          f"ctrlens.saliency default: {default}; worst real dataset: {worst_real:.2f}")
    out = {
        "benchmark": "saliency_agreement",
        "chosen": chosen,
        "library_default": default,
        "mean_spearman": {m: round(float(v), 3) for m, v in mean.items()},
        "spearman": {m: {d: round(float(v), 3) for d, v in per_ds.loc[m].items()} for m in per_ds.index},
        "top3": {m: {d: round(float(v), 3) for d, v in row.items()}
                 for m, row in table.pivot_table(index="method", columns="ds", values="top3").iterrows()},
        "spearman_logit_mean": {m: round(float(v), 3) for m, v in table.groupby("method")["spearman_logit"].mean().items()},
        "spearman_truth": ({m: round(float(v), 3) for m, v in table.dropna(subset=["spearman_truth"])
                            .groupby("method")["spearman_truth"].mean().items()} if "spearman_truth" in table else {}),
        "target": f"the library default is the chosen method (best mean Spearman, ties within {TIE} to the cheapest) "
                  "and its Spearman is >= 0.8 on each real dataset",
        "worst_real_spearman": round(worst_real, 3),
        "repeats": a.repeats,
        "quick": a.quick,
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "met": met,
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
