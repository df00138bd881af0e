"""ctrlens on real data: MovieLens ratings over 22 years, DIN vs Base, analysed slice by slice.

The walkthrough of ``docs/walkthrough-movielens.md``. Convert the ratings first (one row per rating,
``click = rating >= 4``, the user's earlier movies as the DIN history, one partition per 365 days)::

    ctrlens data movielens --src ../shared/data/movielens-latest-small --out movielens --days-per-partition 365
    python examples/movielens_walkthrough.py --data movielens --out ml-runs

What it does, every number computed here from the data (nothing is hard-coded):

1. trains Base (Embedding&MLP) and DIN on the first ``--train-slices`` slices, evaluates both on
   every later slice (AUC, GAUC, LogLoss, calibration);
2. input drift: each later slice's field statistics against the last training slice (PSI of the
   per-field histograms), the click rate, and the share of users / items never seen in training;
3. embedding health: which share of the embedding rows looked up in a slice were never updated by
   training (``embedding_health`` against the initial checkpoint);
4. neurons: DIN's watched layers summarised on the last training slice (train data) and on every
   later slice with the training slice's histogram edges; per layer PSI, mean shift and the founding
   paper's train-vs-test fluctuation;
5. probes: one logistic probe per DIN layer fitted on the first test slice, scored on its held-out
   rows and on every later slice (the decay protocol);
6. saliency: DIN's per-field gradient saliency shares per slice, and ``input_x_gradient`` against
   the slice's mean embedding;
7. optionally (``--db``) everything goes into a ctrlens store, per model version x slice, for the
   dashboard.

It prints one section per step and a list of findings, and writes ``<out>/summary.json``. The
default run takes about a minute on two CPU cores; ``--full`` trains longer and analyses more rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="MovieLens converted by `ctrlens data movielens` (a dataset root)")
    ap.add_argument("--out", default="ml-runs", help="folder for checkpoints, summary.json (default: ml-runs)")
    ap.add_argument("--train-slices", type=int, default=7, help="train on the first N slices (default 7: 1996-2002 with 365-day slices)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 1; --full: 3)")
    ap.add_argument("--max-rows", type=int, default=None, help="rows per slice for probes / saliency (default 3000; --full: 20000)")
    ap.add_argument("--full", action="store_true", help="the bigger run: 3 epochs, up to 20,000 rows per analysis")
    ap.add_argument("--db", default=None, help="also write every result to this ctrlens store (e.g. sqlite:///ml-runs/ctrlens.sqlite)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    a.epochs = a.epochs or (3 if a.full else 1)
    a.max_rows = a.max_rows or (20_000 if a.full else 3_000)
    return a


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 96 - len(title)))


def show(frame: pd.DataFrame, floatfmt: str = "{:.3f}") -> None:
    with pd.option_context("display.width", 160, "display.max_columns", 30, "display.max_rows", 200):
        print(frame.to_string(float_format=floatfmt.format))


def hist_psi(a: dict, b: dict) -> float:
    """PSI of two ``field_stats`` histograms on the same bins (hashed id buckets, fixed edges)."""
    from ctrlens.neurons import psi

    pa, pb = np.asarray(a["counts"], dtype=float), np.asarray(b["counts"], dtype=float)
    if pa.shape != pb.shape or pa.sum() == 0 or pb.sum() == 0:
        return float("nan")
    return float(psi(pa[None], pb[None])[0])


@dataclass
class Walk:
    """What the steps share: the data, the split, the output folder and every result so far."""

    args: argparse.Namespace
    ds: Any
    out: Path
    train_slices: list[str]
    test_slices: list[str]
    rows: dict[str, int]
    summary: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)  # name -> trained model
    initial: dict[str, Any] = field(default_factory=dict)  # name -> the same model before training
    stored: dict[str, dict[str, list]] = field(default_factory=dict)  # slice -> model -> Results for the store

    @property
    def last_train(self) -> str:
        return self.train_slices[-1]

    def keep(self, slice_: str, model: str, *results: Any) -> None:
        self.stored.setdefault(slice_, {}).setdefault(model, []).extend(results)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from ctrlens.data import DailyDataset

    t_start = time.perf_counter()
    ds = DailyDataset(args.data)
    slices = ds.days()
    if not 1 <= args.train_slices < len(slices):
        sys.exit(f"--train-slices must be in 1..{len(slices) - 1} (the dataset has {len(slices)} slices)")
    w = Walk(args, ds, Path(args.out), slices[: args.train_slices], slices[args.train_slices:], {d: ds.num_rows(d) for d in slices})
    w.out.mkdir(parents=True, exist_ok=True)
    print(f"{args.data}: {len(slices)} slices, {sum(w.rows.values()):,} rows; training on {w.train_slices[0]} .. {w.last_train} "
          f"({sum(w.rows[d] for d in w.train_slices):,} rows), testing on {len(w.test_slices)} later slices")
    w.summary.update({"data": str(args.data), "train_slices": w.train_slices, "test_slices": w.test_slices, "rows": w.rows,
                      "args": dict(vars(args))})
    test_q = step_quality(w)
    drift = step_inputs(w)
    health, layers = step_neurons(w)
    probe_tab, user_rate_auc = step_probes(w)
    shares, ixg_shares = step_saliency(w)
    if args.db:
        write_store(w)
    section("what ctrlens found")
    notes = findings_text(test_q, drift, health, layers, probe_tab, shares, ixg_shares, w.last_train, w.test_slices, user_rate_auc)
    for n in notes:
        print(f"* {n}")
    w.summary["findings"] = notes
    w.summary["seconds"] = round(time.perf_counter() - t_start, 1)
    (w.out / "summary.json").write_text(json.dumps(w.summary, indent=1, default=_json_default))
    print(f"\n{w.summary['seconds']:.0f} s; wrote {w.out / 'summary.json'}")
    return w.summary


def step_quality(w: Walk) -> pd.DataFrame:
    """1. Train Base and DIN on the early slices; evaluate on the last training slice and every later one."""
    from ctrlens.models.checkpoint import load_checkpoint
    from ctrlens.train import train

    section("1. quality: trained on the early slices, evaluated on each later one")
    quality = []
    for name in ("base", "din"):
        t0 = time.perf_counter()
        res = train(name, w.ds, w.train_slices, out_dir=w.out / name, epochs=w.args.epochs, batch_size=256, lr=1e-3,
                    seed=w.args.seed, eval_days=[w.last_train, *w.test_slices], save_initial=True, overwrite=True)
        print(f"{name}: {res.steps_run} steps over {len(w.train_slices)} slices x {w.args.epochs} epoch(s) in "
              f"{time.perf_counter() - t0:.1f} s; checkpoint {res.final_info.version}")
        w.models[name] = load_checkpoint(res.final, w.ds.schema)
        w.initial[name] = load_checkpoint(res.checkpoints[0], w.ds.schema)  # step 0: the weights before training
        for day, r in res.eval.items():
            f = r.frame.iloc[0]
            w.keep(day, name, r)
            quality.append({"model": name, "slice": day, "split": "train" if day in w.train_slices else "test",
                            "rows": int(f["rows"]), "auc": f["auc"], "gauc": f["gauc"], "logloss": f["logloss"],
                            "calibration": f["calibration"]})
    q = pd.DataFrame(quality)
    wide = q.pivot(index="slice", columns="model", values=["auc", "gauc", "calibration"])
    wide.columns = [f"{m}_{s}" for s, m in wide.columns]
    wide["din_minus_base_auc"] = wide["din_auc"] - wide["base_auc"]
    show(wide.reset_index())
    w.summary["quality"] = q.to_dict("records")
    return wide.loc[w.test_slices]


def step_inputs(w: Walk) -> pd.DataFrame:
    """2. Field statistics of each later slice against the last training slice; new users and items."""
    from ctrlens.data.stats import edges_from, field_stats

    section(f"2. inputs: each slice against the last training slice {w.last_train}")
    ref_stats = field_stats(w.ds, w.last_train)
    edges = edges_from(ref_stats)
    ref_rows = ref_stats.frame.set_index("field")
    seen_users = set(np.concatenate([w.ds.read_frame(d)["user_id"].to_numpy() for d in w.train_slices]))
    seen_items = set(np.concatenate([w.ds.read_frame(d)["item_id"].to_numpy() for d in w.train_slices]))
    rows = []
    for d in w.test_slices:
        fs = field_stats(w.ds, d, reference_edges=edges)
        w.keep(d, "din", fs)
        cur = fs.frame.set_index("field")
        frame = w.ds.read_frame(d)
        row = {"slice": d, "rows": w.rows[d], "click_rate": float(frame["click"].mean()),
               "new_user_rows": float(1 - frame["user_id"].isin(seen_users).mean()),
               "new_item_rows": float(1 - frame["item_id"].isin(seen_items).mean())}
        for fld in ("user_id", "item_id", "category_id", "hist_item_id"):
            row[f"psi_{fld}"] = hist_psi(ref_rows.loc[fld, "hist_json"], cur.loc[fld, "hist_json"])
        rows.append(row)
    drift = pd.DataFrame(rows)
    print(f"training slice {w.last_train}: click rate {float(w.ds.read_frame(w.last_train)['click'].mean()):.3f}")
    show(drift)
    w.summary["inputs"] = drift.to_dict("records")
    return drift


def step_neurons(w: Walk) -> tuple[pd.DataFrame, pd.DataFrame]:
    """3. Embedding rows never updated by training; 4. DIN's layers on each slice vs the training slice."""
    from ctrlens.neurons import NeuronMonitor, compare, embedding_health

    section("3. embedding health: rows looked up in each slice that training never updated (DIN)")
    din = w.models["din"]
    ref = NeuronMonitor(din).run(w.ds.iter_batches(w.last_train, batch_size=1024))
    summaries = {w.last_train: ref}
    summaries.update({d: NeuronMonitor(din, reference=ref).run(w.ds.iter_batches(d, batch_size=1024)) for d in w.test_slices})
    health_rows = []
    for d, s in summaries.items():
        eh = embedding_health(din, s.seen, initial=w.initial["din"])
        w.keep(d, "din", *s.to_results(), eh)
        for r in eh.frame.itertuples(index=False):
            health_rows.append({"slice": d, "table": r.table, "seen_rows": r.seen_rows, "never_updated": r.never_updated_frac})
    health = pd.DataFrame(health_rows).pivot(index="slice", columns="table", values="never_updated")
    print("share of the distinct embedding rows looked up in the slice that still hold their initial values:")
    show(health.reset_index())
    w.summary["embedding_never_updated"] = health.reset_index().to_dict("records")

    section(f"4. neurons: DIN's layers on each slice vs the training slice {w.last_train}")
    layer_rows = []
    for d in w.test_slices:
        cmp = compare(ref, summaries[d], names=(w.last_train, d))
        w.keep(d, "din", cmp.to_drift())
        for r in cmp.layers.itertuples(index=False):
            layer_rows.append({"slice": d, "layer": r.layer, "psi_mean": r.psi_mean, "abs_shift_mean": r.abs_shift_mean,
                               "fluctuation": r.fluctuation, "dead_fraction": r.dead_fraction_b})
    layers = pd.DataFrame(layer_rows)
    show(layers.pivot(index="slice", columns="layer", values="psi_mean").reset_index())
    print("\nfluctuation (mean |log std ratio|) per layer, first test slice vs the training slice:")
    first = layers[layers.slice == w.test_slices[0]].set_index("layer")[["psi_mean", "abs_shift_mean", "fluctuation", "dead_fraction"]]
    show(first.reset_index())
    w.summary["neurons"] = layers.to_dict("records")
    return health, layers


def step_probes(w: Walk) -> tuple[pd.DataFrame, float]:
    """5. Probes fitted on the first test slice, scored on its held-out rows and on every later slice."""
    from ctrlens.probes import ProbeSuite

    first = w.test_slices[0]
    section(f"5. probes: DIN's layers, fitted on {first} (held-out rows), then each later slice")
    din = w.models["din"]
    suite = ProbeSuite(din, head="ctr", max_rows=w.args.max_rows, holdout=0.3, seed=w.args.seed)
    suite.fit(w.ds, day=first)
    dec = suite.decay(w.ds, w.test_slices[1:])
    probe_tab = dec.pivot(index="eval_day", columns="layer", values="auc")[list(suite.layers_)]
    show(probe_tab.reset_index())
    findings = suite.findings(tol=0.01)
    print("\ninformation-loss findings (a layer's AUC below its input's by > 0.01):", "none" if findings.empty else "")
    if not findings.empty:
        show(findings)
    w.keep(first, "din", suite.to_result(model_version=din.ctrlens_checkpoint.version))
    # a yardstick for the fit slice's held-out rows: each user's click rate on the other rows of the slice
    fr = w.ds.read_frame(first)
    part = np.random.default_rng(w.args.seed).random(len(fr)) < 0.7
    rate = fr[part].groupby("user_id")["click"].mean()
    user_rate_auc = auc_of(fr[~part]["click"], fr[~part]["user_id"].map(rate).fillna(fr[part]["click"].mean()))
    print(f"\nyardstick: each user's own click rate on 70% of {first} predicts the other 30% with AUC {user_rate_auc:.3f}")
    w.summary["user_rate_auc_within_probe_slice"] = user_rate_auc
    w.summary["probes"] = dec[["layer", "eval_day", "auc", "model_auc", "gap"]].to_dict("records")
    return probe_tab, user_rate_auc


def step_saliency(w: Walk) -> tuple[pd.DataFrame, pd.DataFrame]:
    """6. DIN's gradient saliency shares per slice, and input_x_gradient against the slice's mean embedding."""
    import ctrlens.saliency as sal

    section("6. saliency: DIN's share of gradient saliency per field, per slice")
    din, n, seed = w.models["din"], w.args.max_rows, w.args.seed
    sal_rows, ixg_rows = [], []
    for d in [w.last_train, *w.test_slices]:
        rep = sal.report(din, w.ds, day=d, method="saliency", max_rows=n, seed=seed)
        w.keep(d, "din", rep.to_result())
        sal_rows.append({"slice": d, **rep.shares()})
        ixg = sal.report(din, w.ds, day=d, method="input_x_gradient", baseline="mean", max_rows=n, seed=seed)
        ixg_rows.append({"slice": d, **ixg.shares()})
    shares = pd.DataFrame(sal_rows).set_index("slice")
    ixg_shares = pd.DataFrame(ixg_rows).set_index("slice")
    show(shares.reset_index())
    print("\ninput_x_gradient against the slice's mean embedding (contribution shares):")
    show(ixg_shares.reset_index())
    w.summary["saliency_shares"] = shares.reset_index().to_dict("records")
    w.summary["input_x_gradient_shares"] = ixg_shares.reset_index().to_dict("records")
    return shares, ixg_shares


def write_store(w: Walk) -> None:
    """7. Every result into a ctrlens store, per model version x slice (run kind ``analysis``)."""
    from ctrlens.store import Store

    store = Store(w.args.db, create=True)
    for name, m in w.models.items():
        info = m.ctrlens_checkpoint
        vid = store.register_model(f"movielens-{name}", info.version, w.ds.schema.hash, m.config_dict())
        for d in [w.last_train, *w.test_slices]:
            store.write_day(vid, d, "analysis", w.stored.get(d, {}).get(name, []))
    print(f"\nwrote the results to {store.url_text}: `ctrlens dashboard --db {w.args.db}` shows them")


def auc_of(labels: pd.Series, scores: pd.Series) -> float:
    from ctrlens.metrics import auc

    return float(auc(np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64)))


def findings_text(test_q, drift, health, layers, probe_tab, shares, ixg_shares, last_train, test_slices,
                  user_rate_auc: float) -> list[str]:
    n = len(test_q)
    wins = int((test_q["din_minus_base_auc"] > 0).sum())
    notes = [
        f"Out of time, DIN beats Base on {wins} of {n} later slices (mean AUC {test_q['din_auc'].mean():.3f} vs "
        f"{test_q['base_auc'].mean():.3f}); both fall from their training-slice AUC "
        f"({test_q.index[0]}: DIN {test_q['din_auc'].iloc[0]:.3f}, last slice {test_q['din_auc'].iloc[-1]:.3f}).",
        f"Calibration (sum pred / sum clicks) is above 1 on {int((test_q['din_calibration'] > 1.05).sum())} of {n} slices "
        f"(median {test_q['din_calibration'].median():.2f}): the click rate of later years "
        f"(median {drift['click_rate'].median():.3f}) is below the training years'.",
        f"The audience turns over: a median {drift['new_user_rows'].median():.0%} of a later slice's rows come from users "
        f"never seen in training (user_id PSI median {drift['psi_user_id'].median():.2f}), against "
        f"{drift['new_item_rows'].median():.0%} of rows with a never-seen movie.",
    ]
    first, last = health.iloc[0], health.iloc[-1]
    parts = ", ".join(f"table {t} {first[t]:.0%} -> {last[t]:.0%}" for t in health.columns)
    notes.append(f"Embedding rows looked up that training never updated ({health.index[0]} -> {health.index[-1]}): {parts}.")
    lp = layers.groupby("layer")["psi_mean"].median().sort_values(ascending=False)
    notes.append(f"Neuron drift (median over slices of the layer's mean PSI vs {last_train}): "
                 + ", ".join(f"{k} {v:.2f}" for k, v in lp.items()) + ".")
    first_row, later = probe_tab.iloc[0], probe_tab.iloc[1:].mean()
    logit = next(c for c in probe_tab.columns if c.startswith("logit."))
    best = first_row.drop(logit).idxmax()
    notes.append(f"Probes fitted on {test_slices[0]}: on its held-out rows the best layer is {best} (AUC {first_row[best]:.3f}) against "
                 f"the model's own {first_row[logit]:.3f}; on the later slices (mean) {best} scores {later[best]:.3f} and the "
                 f"model {later[logit]:.3f}. Within the fit slice, each user's own click rate alone reaches AUC "
                 f"{user_rate_auc:.3f}: the probes learn the slice's users (distinct, even if untrained, embeddings).")
    top0, top1 = shares.iloc[0].idxmax(), shares.iloc[-1].idxmax()
    notes.append(f"Gradient saliency: the largest share is {top0} on {shares.index[0]} ({shares.iloc[0][top0]:.0%}) and {top1} on "
                 f"{shares.index[-1]} ({shares.iloc[-1][top1]:.0%}); input_x_gradient gives user_id "
                 f"{ixg_shares['user_id'].iloc[0]:.0%} -> {ixg_shares['user_id'].iloc[-1]:.0%}.")
    return notes


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (np.ndarray, pd.Index)):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    main()
