"""Everything the nightly job measures for one model on one day.

:func:`compute_day` returns the results the store keeps (``field_stats``, ``quality``,
``neuron_stats``, ``layer_stats``, ``embedding_health``, ``probe``, ``saliency``) plus a few
*observations* -- statistics that have no result table of their own (the position-bias slope of
observed CTR, PAL's seen curve against it, a new checkpoint's train-vs-test checks); those are
stored as drift rows.

Passes over the data, each on a seeded sample of the day (``ModelWatch.rows``):

1. ``field_stats``: one streaming pass over the whole day (no model);
2. the **hooked pass**: :class:`~ctrlens.neurons.NeuronMonitor` summarises every watched layer and
   records the embedding rows looked up, and the model outputs of the same forward give the
   quality metrics (and PAL's seen curve) -- one inference for all of it;
3. on the same rows, without the model: the dependence of every pair of fields (normalised mutual
   information), and with it: the permutation importance of each field (one forward per field).
   A *shuffled* column keeps its distribution; these two are what notice it;
4. probes (:class:`~ctrlens.probes.ProbeSuite`: its own hooked pass over its sample, as its API
   decides), one suite per head;
5. saliency (:func:`ctrlens.saliency.report`, gradient method by default);
6. observed CTR by position (two columns of the day).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ctrlens.data.batch import Batch
from ctrlens.errors import InputError
from ctrlens.models.interface import ModelView
from ctrlens.monitor.config import ModelWatch
from ctrlens.results import COLUMNS, Result

#: Observations (``(subject_kind, statistic)``) that depend on the checkpoint: a back-test recomputes them.
MODEL_OBSERVATIONS = frozenset({("position", "seen_gap")})


@dataclass
class DayResults:
    """What :func:`compute_day` measured: results for the store, observations, timings."""

    results: dict[str, Result]
    observations: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    neuron_summary: Any = None  # ctrlens.neurons.NeuronSummary of the hooked pass


def labelled_heads(view: ModelView, heads: tuple[str, ...] | None) -> list[str]:
    """The heads to analyse: the configured ones (checked), else every head with a label."""
    if heads is None:
        return [h for h, s in view.heads.items() if s.label is not None]
    out = []
    for h in heads:
        spec = view.head(h)  # names the model's heads when unknown
        if spec.label is None:
            raise InputError(f"model {view.name!r}: head {h!r} has no label to evaluate; heads: {sorted(view.heads)}")
        out.append(h)
    return out


def sample_batches(dataset: Any, day: str, rows: int, *, batch_size: int, seed: int) -> list[Batch]:
    """A seeded sample of ``rows`` rows of ``day`` (``0``: the whole day), as batches."""
    limit = None if rows <= 0 else rows
    return list(dataset.iter_batches(day, batch_size=batch_size, shuffle=True, seed=seed, limit=limit))


def hooked_pass(view: ModelView, batches: list[Batch], heads: list[str], *, layers: tuple[str, ...] | None,
                edges: dict[str, tuple[float, float]] | None, seed: int, device: torch.device,
                reference: Any = None) -> tuple[Any, Result, dict[int, float] | None]:  # fmt: skip
    """Neuron statistics and quality from one forward over ``batches``.

    Returns ``(NeuronSummary, Result("quality"), seen curve)``; the seen curve (position -> mean of
    the model's ``seen`` output) only for models with a ``seen`` head (PAL).
    """
    from ctrlens.metrics import HeadAccumulator, quality_result
    from ctrlens.neurons import NeuronMonitor

    mon = NeuronMonitor(view, list(layers) if layers else None, edges=edges, seed=seed, reference=reference)
    accs = {h: HeadAccumulator(h) for h in heads}
    seen_spec = view.heads.get("seen")
    pos_field = next((n for n, f in view.fields.items() if f.kind == "position"), None)
    seen_sum: dict[int, list[float]] = {}
    model = view.model
    was = model.training
    model.eval()
    try:
        with mon, torch.no_grad():
            for b in batches:
                b = b.to(device) if device.type != "cpu" else b
                out = mon.forward(b)
                for h in heads:
                    spec = view.heads[h]
                    y, mask = spec.target(b)
                    p = out[spec.output].reshape(-1).float()
                    users = b.user
                    if mask is not None:
                        p = p[mask]
                        users = None if users is None else users[mask]
                    accs[h].add(y, p, users)
                if seen_spec is not None and pos_field and seen_spec.output in out and pos_field in b.features:
                    pos = b.features[pos_field].reshape(-1).cpu().numpy()
                    s = out[seen_spec.output].reshape(-1).float().cpu().numpy()
                    for v in np.unique(pos):
                        acc = seen_sum.setdefault(int(v), [0.0, 0.0])
                        acc[0] += float(s[pos == v].sum())
                        acc[1] += float((pos == v).sum())
    finally:
        model.train(was)
    summary = mon.summary()
    quality = quality_result(accs.values(), meta={"rows": sum(len(b) for b in batches)})
    seen = {k: v[0] / v[1] for k, v in sorted(seen_sum.items()) if v[1] > 0} if seen_sum else None
    return summary, quality, seen


def permutation_importance(view: ModelView, batches: list[Batch], heads: list[str], *, seed: int,
                           device: torch.device) -> pd.DataFrame:  # fmt: skip
    """Per field and head: how much the head's log loss rises when the field is permuted across rows.

    ``mean`` is the mean per-row increase of the log loss (nats), ``std``/``p50``/``p90`` over rows,
    ``share`` = max(mean, 0) / the head's total. A field the model relies on scores high; a field
    whose logged values no longer belong to their rows (shuffled, stuck, all missing) scores ~0.
    Rows: ``COLUMNS["saliency"]`` with ``method="permutation"``.
    """
    if not batches:
        return pd.DataFrame(columns=list(COLUMNS["saliency"]))
    b = Batch.concat(batches) if len(batches) > 1 else batches[0]
    b = b.to(device) if device.type != "cpu" else b
    n = len(b)
    g = torch.Generator().manual_seed(seed + 7919)
    perm = torch.randperm(n, generator=g).to(b.row.device if b.row is not None else "cpu")
    model = view.model
    was = model.training
    model.eval()
    eps = 1e-7

    def losses(out: dict, batch: Batch) -> dict[str, torch.Tensor]:
        res = {}
        for h in heads:
            spec = view.heads[h]
            y, mask = spec.target(batch)
            p = out[spec.output].reshape(-1).double().clamp(eps, 1 - eps)
            if mask is not None:
                p = p[mask]
            y = y.double()
            res[h] = -(y * p.log() + (1 - y) * (1 - p).log())
        return res

    rows = []
    try:
        with torch.no_grad():
            base = losses(view(b), b)
            for f in view.fields:
                pb = _permuted(b, f, perm)
                if pb is None:
                    continue
                cur = losses(view(pb), pb)
                for h in heads:
                    d = (cur[h] - base[h]).cpu().numpy()
                    if d.size == 0:
                        continue
                    rows.append({"field": f, "head": h, "method": "permutation", "rows": int(d.size), "mean": float(d.mean()),
                                 "std": float(d.std()), "p50": float(np.percentile(d, 50)),
                                 "p90": float(np.percentile(d, 90)), "share": 0.0, "delta": float("nan")})  # fmt: skip
    finally:
        model.train(was)
    frame = pd.DataFrame(rows, columns=list(COLUMNS["saliency"]))
    for h, g_ in frame.groupby("head"):
        pos = g_["mean"].clip(lower=0)
        tot = pos.sum()
        frame.loc[g_.index, "share"] = pos / tot if tot > 0 else float("nan")
    return frame


def _permuted(b: Batch, name: str, perm: torch.Tensor) -> Batch | None:
    """``b`` with field ``name``'s values permuted across rows (its mask / image index with it)."""
    feats, masks, index = dict(b.features), dict(b.masks), dict(b.image_index)
    if name in feats:
        feats[name] = feats[name][perm]
        if name in masks:
            masks[name] = masks[name][perm]
    elif name in index:
        index[name] = index[name][perm]
    else:
        return None
    return Batch(features=feats, masks=masks, labels=b.labels, images=b.images, image_index=index, user=b.user, row=b.row)


# ------------------------------------------------------------------------------------- dependence


def field_codes(batch: Batch, schema: Any) -> dict[str, np.ndarray]:
    """Per input field, one integer code per row: sparse fields their index, sequences their most
    recent entry (0 when empty), dense fields their exact value, position its value."""
    out: dict[str, np.ndarray] = {}
    for f in schema.fields:
        x = batch.features.get(f.name)
        if x is None:
            continue
        if f.kind == "sequence":
            m = batch.masks.get(f.name)
            if m is None:
                continue
            n = m.sum(1)
            last = (n - 1).clamp(min=0)
            v = x.gather(1, last[:, None]).squeeze(1)
            out[f.name] = torch.where(n > 0, v, torch.zeros_like(v)).cpu().numpy()
        elif f.kind in ("sparse", "position", "dense"):
            out[f.name] = x.reshape(-1).cpu().numpy()
    return {k: np.unique(v, return_inverse=True)[1].astype(np.int64).reshape(-1) for k, v in out.items()}


def _entropy(codes: np.ndarray) -> float:
    c = np.bincount(codes).astype(np.float64)
    p = c[c > 0] / c.sum()
    return float(-(p * np.log(p)).sum())


def dependence(codes: dict[str, np.ndarray]) -> dict[tuple[str, str], float]:
    """Normalised mutual information ``I(a; b) / min(H(a), H(b))`` of every pair of fields (plug-in,
    exact values): 1 when one field determines the other (an item and its category), near the
    estimator's bias when they are unrelated. NaN when a field is constant. A shuffled or mis-joined
    column keeps its own distribution but loses its dependence on the fields it belonged with."""
    names = sorted(codes)
    h = {k: _entropy(v) for k, v in codes.items()}
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            lo = min(h[a], h[b])
            if not lo > 1e-9:
                out[(a, b)] = float("nan")
                continue
            joint = codes[a] * (int(codes[b].max()) + 1) + codes[b]
            hab = _entropy(np.unique(joint, return_inverse=True)[1])
            out[(a, b)] = float(min(max((h[a] + h[b] - hab) / lo, 0.0), 1.0))
    return out


def dependence_observations(batches: list[Batch], schema: Any) -> list[dict[str, Any]]:
    """``pair`` observations (``"a~b"``, statistic ``dependence``, alert when it falls)."""
    if not batches:
        return []
    b = Batch.concat(batches) if len(batches) > 1 else batches[0]
    deps = dependence(field_codes(b, schema))
    return [{"subject_kind": "pair", "subject": f"{a}~{c}", "statistic": "dependence", "value": v, "sides": "below"}
            for (a, c), v in deps.items()]  # fmt: skip


# ------------------------------------------------------------------------------------- position


def ctr_by_position(dataset: Any, day: str) -> pd.DataFrame | None:
    """Observed impressions, clicks and CTR per position of ``day`` (``None`` without a position field)."""
    pos = dataset.schema.position
    if pos is None:
        return None
    f = dataset.read_frame(day, columns=[pos.name, "click"])
    g = f.groupby(pos.name)["click"].agg(["count", "sum"]).rename(columns={"count": "rows", "sum": "clicks"})
    g["ctr"] = g["clicks"] / g["rows"]
    return g


def examination_slope(curve: dict[int, float] | pd.Series, weights: dict[int, float] | pd.Series | None = None) -> float:
    """Slope ``eta`` of ``-log(c(pos) / c(1)) ~ eta * log(pos)`` (least squares through the origin,
    weighted): the exponent of a power-law examination curve. NaN with fewer than two positions."""
    s = pd.Series(curve, dtype=float).sort_index()
    s = s[(s > 0) & np.isfinite(s)]
    if len(s) < 2 or s.index[0] != s.index.min():
        return float("nan")
    x = np.log(s.index.to_numpy(dtype=float))
    y = -np.log(s.to_numpy() / s.iloc[0])
    w = np.ones_like(x) if weights is None else pd.Series(weights, dtype=float).reindex(s.index).fillna(0).to_numpy()
    den = float((w * x * x).sum())
    return float((w * x * y).sum() / den) if den > 0 else float("nan")


def position_observations(dataset: Any, day: str, seen: dict[int, float] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Observed position-bias slope (every model) and, for PAL, its gap to the trained seen curve."""
    g = ctr_by_position(dataset, day)
    if g is None or g["clicks"].sum() == 0:
        return [], {}
    obs_slope = examination_slope(g["ctr"], g["clicks"])
    out = [{"subject_kind": "position", "subject": "position", "statistic": "ctr_slope", "value": obs_slope}]
    info: dict[str, Any] = {"ctr_by_position": {int(k): float(v) for k, v in g["ctr"].items()}, "ctr_slope": obs_slope}
    if seen:
        seen_slope = examination_slope(seen, g["clicks"])
        out.append({"subject_kind": "position", "subject": "position", "statistic": "seen_gap",
                    "value": obs_slope - seen_slope})  # fmt: skip
        info.update(seen_curve={int(k): float(v) for k, v in seen.items()}, seen_slope=seen_slope)
    return out, info


# ------------------------------------------------------------------------------------- the day


def compute_day(
    view: ModelView,
    dataset: Any,
    day: str,
    watch: ModelWatch,
    *,
    batch_size: int = 4096,
    seed: int = 0,
    device: str = "cpu",
    field_edges: dict[str, list[float]] | None = None,
    neuron_edges: dict[str, tuple[float, float]] | None = None,
    version: str | None = None,
    train_day: str | None = None,
    initial: Any = None,
    progress=None,
    model_only: bool = False,
) -> DayResults:
    """All results of ``view`` on ``day`` of ``dataset`` (see the module docstring).

    Args:
        watch: the model's configuration (heads, sample sizes, saliency method, layers).
        field_edges: dense field -> histogram edges of the reference (so days compare bin by bin).
        neuron_edges: layer -> ``(lo, hi)`` histogram range of this model version's first day.
        version: the checkpoint's weights hash (kept in the probe result's meta).
        train_day: a day the checkpoint was trained on: when given (a version seen for the first
            time), the hooked pass also runs there, for the over-fitting checks.
        initial: the model before training (its step-0 checkpoint), for the embedding rows looked up
            today that training never updated (new ids the model knows nothing about).
        progress: ``progress(step_name)`` callback.
        model_only: only the checkpoint-dependent results (quality, neurons, embedding health,
            probes, saliency / importance, PAL's seen-curve gap) -- for a back-test of a new
            checkpoint on reference days (:func:`ctrlens.monitor.job.backtest`); input statistics
            are checkpoint-free and already stored for those days.
    """
    from ctrlens.data.stats import field_stats

    step = progress or (lambda name: None)
    dev = torch.device(device)
    if view.device != dev:
        view.model.to(dev)
    heads = labelled_heads(view, watch.heads)
    t: dict[str, float] = {}
    out: dict[str, Result] = {}
    obs: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"heads": heads, "skipped": {}}
    t0 = time.perf_counter()
    if not model_only:
        step("field statistics")
        out["field_stats"] = field_stats(dataset, day, reference_edges=field_edges)
    t["field_stats"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    step("neurons + quality")
    batches = sample_batches(dataset, day, watch.rows.neurons, batch_size=batch_size, seed=seed)
    if not batches:
        raise InputError(f"day {day}: no rows in the data")
    summary, quality, seen = hooked_pass(view, batches, heads, layers=watch.layers, edges=neuron_edges, seed=seed, device=dev)
    ns, ls = summary.to_results()
    out.update(neuron_stats=ns, layer_stats=ls, quality=quality)
    from ctrlens.neurons import embedding_health

    if view.tables:
        out["embedding_health"] = embedding_health(view, summary.seen, initial=initial)
    t["neurons_quality"] = time.perf_counter() - t0

    if watch.rows.probes > 0:
        t0 = time.perf_counter()
        step("probes")
        probe = _probes(view, dataset, day, heads, watch, batch_size=batch_size, seed=seed, version=version, meta=meta)
        if probe is not None:
            out["probe"] = probe
        t["probes"] = time.perf_counter() - t0

    if watch.rows.saliency > 0:
        t0 = time.perf_counter()
        step("saliency")
        sb = sample_batches(dataset, day, watch.rows.saliency, batch_size=batch_size, seed=seed + 1)
        frames = []
        try:
            import ctrlens.saliency as sal

            rep = sal.report(view, sb, day=day, method=watch.saliency_method, head=heads, max_rows=watch.rows.saliency,
                             batch_size=batch_size, seed=seed, device=device)  # fmt: skip
            frames.append(rep.result.frame)
            sal_meta = {k: rep.meta.get(k) for k in ("method", "target", "rows", "baseline")}
        except InputError as e:
            meta["skipped"]["saliency"] = str(e)
            sal_meta = {}
        t["saliency"] = time.perf_counter() - t0
    else:
        frames, sal_meta = [], {}
    if watch.permutation:
        t0 = time.perf_counter()
        step("permutation importance")
        frames.append(permutation_importance(view, batches, heads, seed=seed, device=dev))
        t["permutation"] = time.perf_counter() - t0
    frames = [f for f in frames if len(f)]
    if frames:
        out["saliency"] = Result("saliency", pd.concat(frames, ignore_index=True),
                                 {**sal_meta, "day": day, "permutation": watch.permutation,
                                  "permutation_rows": sum(len(b) for b in batches)})  # fmt: skip
    if not model_only:
        t0 = time.perf_counter()
        obs += dependence_observations(batches, dataset.schema)
        t["dependence"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    p_obs, p_info = position_observations(dataset, day, seen)
    obs += [o for o in p_obs if not model_only or (o["subject_kind"], o["statistic"]) in MODEL_OBSERVATIONS]
    meta["position"] = p_info
    t["position"] = time.perf_counter() - t0

    if train_day is not None and train_day != day and not model_only:
        t0 = time.perf_counter()
        step("checkpoint checks")
        c_obs, c_info = _checkpoint_checks(view, dataset, train_day, summary, quality, heads, watch,
                                           batch_size=batch_size, seed=seed, device=dev)  # fmt: skip
        obs += c_obs
        meta["checkpoint_check"] = c_info
        t["checkpoint_check"] = time.perf_counter() - t0
    meta["seconds"] = {k: round(v, 3) for k, v in t.items()}
    return DayResults(out, obs, meta, summary)


def _probes(view: ModelView, dataset: Any, day: str, heads: list[str], watch: ModelWatch, *, batch_size: int, seed: int,
            version: str | None, meta: dict[str, Any]) -> Result | None:  # fmt: skip
    from ctrlens.probes import ProbeSuite, ProbeWarning

    holdout = 0.2
    offered = int(math.ceil(watch.rows.probes / (1 - holdout)))
    batches = sample_batches(dataset, day, offered, batch_size=batch_size, seed=seed + 2)
    frames, metas = [], {}
    for h in heads:
        try:
            suite = ProbeSuite(view, list(watch.layers) if watch.layers else None, h, max_rows=watch.rows.probes,
                               holdout=holdout, seed=seed, batch_size=batch_size)  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ProbeWarning)
                suite.fit(batches, day=day)
                suite.score()
            r = suite.to_result(model_version=version)
        except InputError as e:  # e.g. a day without conversions for a CVR head: not a failure of the day
            meta["skipped"][f"probe:{h}"] = str(e)
            continue
        frames.append(r.frame)
        metas[h] = r.meta
    if not frames:
        return None
    return Result("probe", pd.concat(frames, ignore_index=True), {"heads": metas, "day": day})


def _checkpoint_checks(view: ModelView, dataset: Any, train_day: str, today_summary: Any, today_quality: Result,
                       heads: list[str], watch: ModelWatch, *, batch_size: int, seed: int,
                       device: torch.device) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """A new checkpoint against its own last training day (the founding paper's over-fitting signs):
    train-vs-test neuron fluctuation per layer and the model's train-vs-test AUC gap."""
    from ctrlens.neurons import compare

    batches = sample_batches(dataset, train_day, watch.rows.neurons, batch_size=batch_size, seed=seed)
    train_summary, train_quality, _ = hooked_pass(view, batches, heads, layers=watch.layers, edges=None, seed=seed,
                                                  device=device, reference=today_summary)  # fmt: skip
    cmp = compare(train_summary, today_summary, names=("train", "today"))
    obs: list[dict[str, Any]] = []
    info: dict[str, Any] = {"train_day": train_day, "fluctuation": {}, "auc": {}}
    for r in cmp.layers.itertuples(index=False):
        if not np.isfinite(r.fluctuation):
            continue
        info["fluctuation"][r.layer] = float(r.fluctuation)
        obs.append({"subject_kind": "checkpoint", "subject": r.layer, "statistic": "fluctuation", "value": float(r.fluctuation),
                    "sides": "above", "fixed_threshold": 1.0,
                    "why": "mean |log(test std / train std)| of the layer's neurons > 1 (a factor e)"})  # fmt: skip
    tq = today_quality.frame.set_index("head")
    for r in train_quality.frame.itertuples(index=False):
        if r.head not in tq.index:
            continue
        gap = float(r.auc - tq.loc[r.head, "auc"])
        info["auc"][r.head] = {"train": float(r.auc), "today": float(tq.loc[r.head, "auc"])}
        obs.append({"subject_kind": "checkpoint", "subject": r.head, "statistic": "train_test_auc_gap", "value": gap,
                    "sides": "above", "fixed_threshold": 0.1,
                    "why": "AUC on its last training day exceeds today's by more than 0.1"})  # fmt: skip
    return obs, info


# ------------------------------------------------------------------------------------- checkpoint change

#: Fixed thresholds of the checkpoint change report (old vs new checkpoint on the same rows). They are
#: physical sizes, wide enough for an ordinary retrain (a new day of data, the same recipe) and far below
#: what a broken training run produces; the AUC one is widened by its sampling noise.
CHANGE_THRESHOLDS = {
    "auc_delta": -0.02,  # new AUC - old AUC on the same rows (a regression)
    "log_mean_abs_ratio": math.log(10.0),  # a layer's mean |activation| grew tenfold (exploding scale)
    "dead_fraction_delta": 0.2,  # share of the layer's units that are newly dead
    "saturated_fraction_delta": 0.2,  # share of activations newly in saturation
    "reinit_frac": 0.05,  # looked-up rows whose vector no longer resembles the old one (cos < 0.3)
    "log_rank_ratio": math.log(0.5),  # effective rank of the looked-up rows halved (collapse)
    "excess_train_test_gap": 0.05,  # over-fitting: train-vs-test AUC gap beyond the old checkpoint's own
}


def _predictions(view: ModelView, batches: list[Batch], heads: list[str], device: torch.device) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """head -> (labels ``[n]``, predicted probabilities ``[n]``) over ``batches`` (masked rows removed)."""
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {h: [] for h in heads}
    model = view.model
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in batches:
                b = b.to(device) if device.type != "cpu" else b
                o = view(b)
                for h in heads:
                    spec = view.heads[h]
                    y, mask = spec.target(b)
                    p = o[spec.output].reshape(-1).double()
                    if mask is not None:
                        p = p[mask]
                    out[h].append((y.double().cpu().numpy(), p.cpu().numpy()))
    finally:
        model.train(was)
    return {h: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v])) for h, v in out.items() if v}


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(q / (1 - q))


def _auc_of(y: np.ndarray, p: np.ndarray) -> float:
    from ctrlens.metrics import auc

    try:
        return float(auc(y, p))
    except Exception:  # one class only
        return float("nan")


def embedding_change(old: ModelView, new: ModelView, seen: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per embedding table, the rows looked up today (``seen``: table -> row indices) in the old and the
    new checkpoint: the share of rows whose vector no longer resembles the old one (cosine < 0.3: a row
    re-initialised or overwritten), the median row-norm ratio and the effective-rank ratio.

    Columns: ``table, rows, reinit_frac, norm_ratio, rank_ratio, cos_p10``."""
    from ctrlens.neurons.embedding import effective_rank, spectrum, table_weight

    rows = []
    for t, mod in new.tables.items():
        if t not in old.tables or t not in seen:
            continue
        idx = torch.as_tensor(np.asarray(seen[t], dtype=np.int64))
        wn, wo = table_weight(mod, t).detach().cpu().double(), table_weight(old.tables[t], t).detach().cpu().double()
        if wn.shape != wo.shape or idx.numel() < 2:
            continue
        a, b = wo[idx], wn[idx]
        na, nb = a.norm(dim=1), b.norm(dim=1)
        cos = (a * b).sum(1) / (na * nb).clamp_min(1e-12)
        ratio = nb / na.clamp_min(1e-12)
        # a row is "replaced" when its direction is no longer the old one's, or it shrank threefold; a row
        # that only grew is a rare id being learned (its old vector was still near its initial value)
        replaced = ((cos < 0.3) | (ratio < 1 / 3.0)) & (na > 1e-12)
        ra = effective_rank(spectrum(a))
        rb = effective_rank(spectrum(b))
        rows.append({"table": t, "rows": int(idx.numel()), "reinit_frac": float(replaced.double().mean()),
                     "reinit_rows": int(replaced.sum()), "norm_ratio": float(ratio.median()),
                     "rank_ratio": float(rb / ra) if ra > 0 else float("nan"), "cos_median": float(cos.median()),
                     "cos_p10": float(torch.quantile(cos, 0.1))})  # fmt: skip
    return pd.DataFrame(rows, columns=EMBEDDING_CHANGE_COLUMNS)


EMBEDDING_CHANGE_COLUMNS = ["table", "rows", "reinit_frac", "reinit_rows", "norm_ratio", "rank_ratio", "cos_median", "cos_p10"]


def bulk_unchanged(cos_median: float, norm_ratio: float) -> bool:
    """The bulk of a table's rows is as the previous checkpoint left it (median cosine >= 0.9, median
    norm ratio within 1.5x): then rows replaced are a partial overwrite, not the whole training run
    moving (a diverged or over-trained run moves every row)."""
    return bool(cos_median >= 0.9 and 1 / 1.5 <= norm_ratio <= 1.5)


def checkpoint_change(old: ModelView, new: ModelView, dataset: Any, day: str, watch: ModelWatch, *, new_summary: Any,
                      batch_size: int, seed: int, device: str = "cpu", old_train_day: str | None = None,
                      new_train_day: str | None = None, new_check: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """The **checkpoint change report**: the previous checkpoint ``old`` against the new one ``new`` on
    the *same rows* (today's seeded neuron sample, the rows of ``new_summary``).

    Per head: AUC of each (and their difference), calibration, prediction agreement (Pearson
    correlation of the logits, mean |p_new - p_old|). Per layer: mean |activation| ratio, dead and
    saturated fractions (old, new). Per embedding table: :func:`embedding_change`. Over-fitting,
    calibrated on the old checkpoint: the new checkpoint's AUC gap between its last training day
    (``new_check`` from :func:`compute_day`) and today, minus the old checkpoint's gap between *its*
    last training day ``old_train_day`` and today -- an ordinary recipe memorises as much as its
    predecessor did, an over-trained run much more.

    Returns ``(observations, info)``: observations are drift rows with fixed thresholds
    (:data:`CHANGE_THRESHOLDS`, subject kind ``checkpoint_change``); info holds every number for the
    report and the findings' evidence.
    """
    from ctrlens.monitor.drift import auc_se

    dev = torch.device(device)
    for v in (old, new):
        if v.device != dev:
            v.model.to(dev)
    heads = [h for h in labelled_heads(new, watch.heads) if h in old.heads]
    batches = sample_batches(dataset, day, watch.rows.neurons, batch_size=batch_size, seed=seed)
    obs: list[dict[str, Any]] = []
    info: dict[str, Any] = {"day": day, "rows": sum(len(b) for b in batches), "heads": {}, "layers": {}, "tables": {},
                            "overfit": {}}  # fmt: skip
    T = CHANGE_THRESHOLDS
    po, pn = _predictions(old, batches, heads, dev), _predictions(new, batches, heads, dev)
    for h in heads:
        if h not in po or h not in pn:
            continue
        y, p_old = po[h]
        _, p_new = pn[h]
        a_old, a_new = _auc_of(y, p_old), _auc_of(y, p_new)
        pos = float(y.sum())
        se = auc_se(a_old, pos, len(y) - pos)
        lo, ln = _logit(p_old), _logit(p_new)
        corr = float(np.corrcoef(lo, ln)[0, 1]) if lo.std() > 0 and ln.std() > 0 else float("nan")
        cal_o = float(p_old.sum() / pos) if pos else float("nan")
        cal_n = float(p_new.sum() / pos) if pos else float("nan")
        info["heads"][h] = {"auc_old": a_old, "auc_new": a_new, "auc_se": se, "calibration_old": cal_o,
                            "calibration_new": cal_n, "logit_corr": corr,
                            "mean_abs_dp": float(np.abs(p_new - p_old).mean())}  # fmt: skip
        # the two AUCs are paired (same rows): their difference is noisier than neither, quieter than both
        thr = min(T["auc_delta"], -1.5 * se)
        obs.append({"subject_kind": "checkpoint_change", "subject": h, "statistic": "auc_delta", "value": a_new - a_old,
                    "sides": "below", "fixed_threshold": thr, "fixed_only": True,
                    "why": f"new checkpoint's AUC minus the old one's on the same {len(y)} rows < {thr:.3g}"})  # fmt: skip
    # layers: the old checkpoint's hooked pass on the same rows
    old_summary, _, _ = hooked_pass(old, batches, [], layers=watch.layers, edges=None, seed=seed, device=dev)
    lo_, ln_ = old_summary.layers().set_index("layer"), new_summary.layers().set_index("layer")
    for la in ln_.index.intersection(lo_.index):
        o_, n_ = lo_.loc[la], ln_.loc[la]
        rec = {"activation": n_["activation"], "mean_abs_old": float(o_["mean_abs"]), "mean_abs_new": float(n_["mean_abs"]),
               "dead_old": float(o_["dead_fraction"]), "dead_new": float(n_["dead_fraction"]),
               "saturated_old": float(o_["saturated_fraction"]), "saturated_new": float(n_["saturated_fraction"])}  # fmt: skip
        info["layers"][la] = rec
        if rec["mean_abs_old"] > 0 and rec["mean_abs_new"] > 0:
            obs.append({"subject_kind": "checkpoint_change", "subject": la, "statistic": "log_mean_abs_ratio",
                        "value": math.log(rec["mean_abs_new"] / rec["mean_abs_old"]), "sides": "above",
                        "fixed_threshold": T["log_mean_abs_ratio"], "fixed_only": True,
                        "why": "the layer's mean |activation| on the same rows grew more than tenfold"})  # fmt: skip
        obs.append({"subject_kind": "checkpoint_change", "subject": la, "statistic": "dead_fraction_delta",
                    "value": rec["dead_new"] - rec["dead_old"], "sides": "above", "fixed_threshold": T["dead_fraction_delta"],
                    "fixed_only": True, "why": "share of the layer's units newly dead on the same rows"})  # fmt: skip
        if np.isfinite(rec["saturated_new"]) and np.isfinite(rec["saturated_old"]):
            obs.append({"subject_kind": "checkpoint_change", "subject": la, "statistic": "saturated_fraction_delta",
                        "value": rec["saturated_new"] - rec["saturated_old"], "sides": "above",
                        "fixed_threshold": T["saturated_fraction_delta"], "fixed_only": True,
                        "why": "share of the layer's activations newly in saturation on the same rows"})  # fmt: skip
    # embedding tables: the rows looked up today
    seen = getattr(new_summary, "seen", None) or {}
    emb = embedding_change(old, new, seen)
    for r in emb.itertuples(index=False):
        rec = {k: getattr(r, k) for k in EMBEDDING_CHANGE_COLUMNS[1:]}
        rec["bulk_unchanged"] = bulk_unchanged(r.cos_median, r.norm_ratio)
        info["tables"][r.table] = rec
        if r.reinit_rows >= 5:  # a handful of rows of a tiny table is not evidence
            obs.append({"subject_kind": "checkpoint_change", "subject": r.table, "statistic": "reinit_frac",
                        "value": r.reinit_frac, "sides": "above", "fixed_threshold": T["reinit_frac"], "fixed_only": True,
                        "why": "share of today's looked-up rows replaced (cos < 0.3 or norm shrank > 3x) vs the old checkpoint"})  # fmt: skip
        if np.isfinite(r.rank_ratio) and r.rank_ratio > 0:
            obs.append({"subject_kind": "checkpoint_change", "subject": r.table, "statistic": "log_rank_ratio",
                        "value": math.log(r.rank_ratio), "sides": "below", "fixed_threshold": T["log_rank_ratio"],
                        "fixed_only": True, "why": "effective rank of the looked-up rows halved (collapse)"})  # fmt: skip
    # over-fitting, calibrated on the old checkpoint's own train-vs-test gap
    new_auc = (new_check or {}).get("auc", {})
    if old_train_day is not None and old_train_day != day and new_auc:
        tb = sample_batches(dataset, old_train_day, watch.rows.neurons, batch_size=batch_size, seed=seed)
        pt = _predictions(old, tb, list(new_auc), dev)
        for h, v in new_auc.items():
            if h not in pt or h not in po:
                continue
            old_gap = _auc_of(*pt[h]) - _auc_of(*po[h])
            new_gap = float(v["train"] - v["today"])
            y = po[h][0]
            se = auc_se(float(v["today"]), float(y.sum()), float(len(y) - y.sum()))
            thr = max(T["excess_train_test_gap"], 3.0 * se)
            info["overfit"][h] = {"new_train_day": new_train_day, "old_train_day": old_train_day, "new_gap": new_gap,
                                  "old_gap": old_gap, "threshold": thr}  # fmt: skip
            obs.append({"subject_kind": "checkpoint_change", "subject": h, "statistic": "excess_train_test_gap",
                        "value": new_gap - old_gap, "sides": "above", "fixed_threshold": thr, "fixed_only": True,
                        "why": f"(train - today AUC) of the new checkpoint minus the same gap of the old one > {thr:.3g}"})  # fmt: skip
    return obs, info


__all__ = [
    "CHANGE_THRESHOLDS",
    "DayResults",
    "MODEL_OBSERVATIONS",
    "checkpoint_change",
    "compute_day",
    "bulk_unchanged",
    "embedding_change",
    "ctr_by_position",
    "dependence",
    "examination_slope",
    "hooked_pass",
    "labelled_heads",
    "permutation_importance",
    "position_observations",
    "sample_batches",
]
