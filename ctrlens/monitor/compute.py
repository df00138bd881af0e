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

#: A per-day image override some datasets carry (the synthetic world's "blank_images" days).


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
    # the click label, else the schema's first label (data whose label is "purchase", "income", ...)
    label = "click" if "click" in dataset.schema.labels else dataset.schema.labels[0]
    f = dataset.read_frame(day, columns=[pos.name, label])
    g = f.groupby(pos.name)[label].agg(["count", "sum"]).rename(columns={"count": "rows", "sum": "clicks"})
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
    t0 = time.perf_counter()
    obs += dependence_observations(batches, dataset.schema)
    t["dependence"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    p_obs, p_info = position_observations(dataset, day, seen)
    obs += p_obs
    meta["position"] = p_info
    t["position"] = time.perf_counter() - t0

    if train_day is not None and train_day != day:
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


__all__ = [
    "DayResults",
    "compute_day",
    "ctr_by_position",
    "dependence",
    "examination_slope",
    "hooked_pass",
    "labelled_heads",
    "permutation_importance",
    "position_observations",
    "sample_batches",
]
