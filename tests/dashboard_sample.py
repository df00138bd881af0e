"""A synthetic but realistic history of nightly results, written through the store.

For the dashboard's tests, its speed benchmark and the screenshots: every result kind of
:data:`ctrlens.results.COLUMNS`, per model x day, with checkpoints that change every
``retrain_every`` days and planted incidents that leave consistent traces everywhere -- input drift,
a saliency collapse, a quality drop, dead neurons on a new checkpoint -- plus the alerts the
nightly job would emit for them (same findings, evidence and dashboard links as
:mod:`ctrlens.monitor.diagnosis`). It is *not* a model of anything: numbers are drawn around
fixed per-subject profiles, so day-to-day changes are small unless an incident says otherwise.

Generation is vectorised and reuses per-model templates (only the numbers that move are redrawn),
so a year of 5 models x 2,000 neurons is bound by the store's write speed.

    from dashboard_sample import SampleSpec, Incident, write_history
    write_history(store, SampleSpec(days=10, incidents=(Incident(6, "broken_feature", "shop_id"),)))
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from ctrlens.results import COLUMNS, Result

SMALL_LAYERS = {"attention.hist_item_id.0": 8, "mlp.0": 16, "mlp.1": 12, "mlp.2": 6}
#: About 2,000 neurons, as in the speed targets.
BIG_LAYERS = {"mlp.0": 512, "mlp.1": 512, "mlp.2": 256, "mlp.3": 256, "attention.hist_item_id.0": 256, "cin.0": 128,
              "mlp.4": 64, "mlp.5": 16}  # fmt: skip
WORLD_FIELDS = {"user_id": "sparse", "item_id": "sparse", "category_id": "sparse", "shop_id": "sparse", "price": "dense",
                "hist_item_id": "sequence", "hist_category_id": "sequence", "user_age_bucket": "sparse",
                "user_gender": "sparse", "hour": "sparse", "position": "position", "item_image": "image"}  # fmt: skip
TABLES = ("item", "category", "shop", "user")
N_BINS = 20
EDGES = [-np.inf, *np.linspace(-3.0, 3.0, N_BINS - 1).round(6).tolist(), np.inf]


@dataclass(frozen=True)
class Incident:
    """Something that goes wrong on ``day`` (an index into the history) and stays wrong.

    kind: ``broken_feature`` (a field loses its values), ``oov_surge`` (unknown ids) or
    ``dead_neurons`` (the checkpoint deployed that day has a layer of dead units).
    """

    day: int
    kind: str
    subject: str


@dataclass(frozen=True)
class SampleSpec:
    """What to generate. ``heads`` maps model -> heads; models not named get ``("ctr",)``."""

    models: tuple[str, ...] = ("din", "esmm")
    days: int = 10
    start: str = "2026-01-01"
    layers: dict[str, int] = field(default_factory=lambda: dict(SMALL_LAYERS))
    fields: dict[str, str] = field(default_factory=lambda: dict(WORLD_FIELDS))
    heads: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"esmm": ("ctr", "cvr", "ctcvr")})
    methods: tuple[str, ...] = ("saliency", "permutation")
    retrain_every: int = 7
    incidents: tuple[Incident, ...] = ()
    #: which model the incidents hit (None: the first)
    incident_model: str | None = None
    projection_points: int = 120
    seed: int = 0

    def day(self, i: int) -> str:
        return (dt.date.fromisoformat(self.start) + dt.timedelta(days=i)).isoformat()


def many_fields(n: int) -> dict[str, str]:
    """The world's fields padded with ``field_NN`` sparse fields up to ``n`` (the benchmark's 40)."""
    out = dict(WORLD_FIELDS)
    i = 0
    while len(out) < n:
        out[f"field_{i:02d}"] = "sparse"
        i += 1
    return out


class _ModelTemplate:
    """Fixed per-subject profiles of one model (what a day's numbers are drawn around)."""

    def __init__(self, spec: SampleSpec, heads: tuple[str, ...], rng: np.random.Generator) -> None:
        self.spec, self.heads = spec, heads
        self.fields = list(spec.fields)
        nf = len(self.fields)
        self.field_hist = rng.dirichlet(np.ones(16) * 2.0, size=nf) * 10_000
        self.coverage = 1.0 - rng.random(nf) * 0.03
        self.oov = rng.random(nf) * 0.01
        self.card = rng.integers(5, 50_000, nf)
        imp = rng.gamma(1.5, size=nf)
        self.share = imp / imp.sum()
        self.layer_names = list(spec.layers)
        self.layer = np.repeat(self.layer_names, list(spec.layers.values()))
        self.neuron = np.concatenate([np.arange(w) for w in spec.layers.values()])
        n = len(self.layer)
        self.n_mean = rng.normal(0.3, 0.6, n)
        self.n_std = 0.3 + rng.random(n)
        self.n_zero = np.clip(rng.beta(2, 5, n), 0, 0.97)
        self.n_sel = rng.normal(0, 0.4, n)  # click selectivity
        centres = (np.asarray(EDGES[1:-1])[:-1] + np.asarray(EDGES[1:-1])[1:]) / 2
        centres = np.concatenate([[-3.2], centres, [3.2]])
        z = (centres[None, :] - self.n_mean[:, None]) / self.n_std[:, None]
        self.n_hist = np.exp(-0.5 * z**2) + 1e-3
        self.n_hist /= self.n_hist.sum(1, keepdims=True)
        depth = {la: i for i, la in enumerate(self.layer_names)}
        self.probe_base = {la: 0.62 + 0.1 * (i + 1) / len(self.layer_names) for la, i in depth.items()}
        self.auc = {h: 0.70 + 0.03 * i for i, h in enumerate(heads)}
        self.rate = {h: 0.05 / (1 + 2 * i) for i, h in enumerate(heads)}


def _field_frame(t: _ModelTemplate, rng: np.random.Generator, broken: set[str], oov: set[str]) -> pd.DataFrame:
    nf = len(t.fields)
    cov = np.clip(t.coverage + rng.normal(0, 0.002, nf), 0, 1)
    oov_rate = np.clip(t.oov + rng.normal(0, 0.0005, nf), 0, 1)
    hist = t.field_hist * rng.uniform(0.95, 1.05, t.field_hist.shape)
    kinds = [t.spec.fields[f] for f in t.fields]
    for i, f in enumerate(t.fields):
        if f in broken:
            cov[i] = 0.02
            hist[i] = 0.0
            hist[i, 0] = 10_000
        if f in oov:
            oov_rate[i] = 0.35
    dense = np.array([k in ("dense", "position", "image") for k in kinds])
    return pd.DataFrame({
        "field": t.fields, "kind": kinds, "rows": 50_000, "coverage": cov, "missing_rate": 1 - cov, "oov_rate": np.where(dense, np.nan, oov_rate),
        "cardinality": np.where(dense, 0, t.card), "mean": np.where(dense, 1.0, np.nan), "std": np.where(dense, 0.5, np.nan),
        "top_json": [[[2 + i, 0.05], ["__other__", 0.95]] for i in range(nf)],
        "hist_json": [{"edges": None, "counts": h.round().astype(int).tolist()} for h in hist],
    })  # fmt: skip


def _neuron_frames(t: _ModelTemplate, rng: np.random.Generator, dead_layer: str | None, drift: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = len(t.layer)
    mean = t.n_mean + rng.normal(0, 0.02, n) + drift
    zero = np.clip(t.n_zero + rng.normal(0, 0.01, n), 0, 1)
    sat = np.clip(rng.beta(1, 60, n), 0, 1)
    hist = t.n_hist * rng.uniform(0.9, 1.1, t.n_hist.shape)
    if dead_layer is not None:
        dead = (t.layer == dead_layer) & (t.neuron % 5 < 2)  # 40% of the layer
        mean[dead] = 0.0
        zero[dead] = 1.0
        hist[dead] = 0.0
        hist[dead, N_BINS // 2] = 1.0
    counts = np.round(hist / hist.sum(1, keepdims=True) * 20_000).astype(np.int64)
    ns = pd.DataFrame({
        "layer": t.layer, "neuron": t.neuron, "count": 20_000, "mean": mean, "std": t.n_std, "min": mean - 3 * t.n_std,
        "max": mean + 3 * t.n_std, "frac_zero": zero, "frac_saturated": sat, "mean_click": mean + t.n_sel * t.n_std / 2,
        "mean_noclick": mean - t.n_sel * t.n_std / 2, "hist_json": list(counts.tolist()),
    })  # fmt: skip
    g = ns.groupby("layer", sort=False)
    pts = t.spec.projection_points
    rows = []
    for la in t.layer_names:
        sub = g.get_group(la)
        label = rng.integers(0, 2, pts)
        sep = t.probe_base[la] - 0.5
        x = rng.normal(0, 1, pts) + label * 4 * sep
        y = rng.normal(0, 1, pts) - label * 2 * sep
        rows.append({
            "layer": la, "activation": "prelu" if la.startswith("attention") else "relu", "n_neurons": len(sub), "count": 20_000,
            "dead_fraction": float((sub["frac_zero"] > 0.99).mean()), "saturated_fraction": float((sub["frac_saturated"] > 0.99).mean()),
            "mean_abs": float(sub["mean"].abs().mean()), "edges_json": EDGES,
            "projection_json": {"x": x.round(4).tolist(), "y": y.round(4).tolist(), "label": label.tolist()},
        })  # fmt: skip
    return ns, pd.DataFrame(rows)


def _day_results(t: _ModelTemplate, rng: np.random.Generator, i: int, version_start: int, active: list[Incident],
                 link: Callable[..., str]) -> list[Result]:  # fmt: skip
    spec = t.spec
    day, train_day = spec.day(i), spec.day(version_start)
    broken = {x.subject for x in active if x.kind == "broken_feature"}
    oov = {x.subject for x in active if x.kind == "oov_surge"}
    dead = next((x.subject for x in active if x.kind == "dead_neurons" and version_start >= x.day), None)
    fs = _field_frame(t, rng, broken, oov)
    ns, ls = _neuron_frames(t, rng, dead, drift=0.002 * (i - version_start))
    n_tab = len(TABLES)
    eh = pd.DataFrame({
        "table": list(TABLES), "rows": [50_002, 202, 1_002, 20_002], "dim": 16, "seen_rows": rng.integers(100, 20_000, n_tab),
        "never_updated_frac": rng.random(n_tab) * 0.05, "norm_mean": 1 + rng.random(n_tab) * 0.1, "norm_p50": 1.0 + rng.random(n_tab) * 0.1,
        "norm_p99": 2 + rng.random(n_tab), "effective_rank": 12 + rng.normal(0, 0.2, n_tab), "info_abundance": 9 + rng.normal(0, 0.2, n_tab),
        "hist_json": [{"edges": np.linspace(0, 4, 9).tolist(), "counts": rng.integers(0, 100, 8).tolist()} for _ in TABLES],
    })  # fmt: skip
    hurt = 0.04 if broken else 0.0
    age = i - version_start
    probe_rows = []
    for h in t.heads:
        model_auc = t.auc[h] - hurt + rng.normal(0, 0.003)
        for la in t.layer_names:
            fresh = t.probe_base[la] - hurt * (la != t.layer_names[0]) + rng.normal(0, 0.003)
            if dead == la:
                fresh -= 0.05
            probe_rows.append((la, h, day, day, fresh, model_auc))
            if age > 0:  # the checkpoint's probes, fitted on its first day, scored today: the decay protocol
                probe_rows.append((la, h, train_day, day, fresh - 0.004 * age, model_auc))
    pr = pd.DataFrame(probe_rows, columns=["layer", "head", "train_day", "eval_day", "auc", "model_auc"])
    pr = pr.assign(n_train=8_000, n_eval=2_000, logloss=0.2 + (1 - pr["auc"]) / 5, gap=pr["model_auc"] - pr["auc"])
    sal_rows = []
    for h in t.heads:
        share = t.share * rng.uniform(0.93, 1.07, len(t.share))
        for j, f in enumerate(t.fields):
            if f in broken:
                share[j] *= 0.05
        share /= share.sum()
        for m in spec.methods:
            for j, f in enumerate(t.fields):
                mean = share[j] * 2.0
                sal_rows.append((f, h, m, 4_000, mean, mean / 2, mean * 0.8, mean * 1.9, share[j] if m != "permutation" else share[j],
                                 np.nan))  # fmt: skip
    sal = pd.DataFrame(sal_rows, columns=list(COLUMNS["saliency"]))
    q_rows = []
    for h in t.heads:
        auc = t.auc[h] - hurt + rng.normal(0, 0.003)
        rate = t.rate[h] * (1 + rng.normal(0, 0.02))
        cal = 1.0 + rng.normal(0, 0.01) + (0.15 if broken else 0.0)
        counts = np.round(np.exp(-0.5 * ((np.linspace(0, 3, 30) - cal) / 0.35) ** 2) * 1000).astype(int)
        q_rows.append((h, 50_000, int(50_000 * rate), auc, auc - 0.06, 0.2, 0.9 + (0.75 - auc), cal, rate * cal, rate,
                       {"edges": np.linspace(0, 3, 31).round(3).tolist(), "counts": counts.tolist()}))  # fmt: skip
    qu = pd.DataFrame(q_rows, columns=list(COLUMNS["quality"]))
    drift, alerts = _drift_and_alerts(t, rng, i, fs, ls, qu, active, dead, link)
    meta = {"day": day, "generator": "dashboard_sample"}
    return [Result("field_stats", fs, meta), Result("neuron_stats", ns), Result("layer_stats", ls), Result("embedding_health", eh),
            Result("probe", pr), Result("saliency", sal), Result("quality", qu), Result("drift", drift), Result("alert", alerts)]  # fmt: skip


#: The other statistics the nightly job tests (ctrlens.monitor.drift), so the drift table has its real volume.
_FIELD_STATS = ("js", "oov_rate", "log_cardinality", "top1_share", "mean_z", "log_std", "wasserstein_norm")


def _quiet_drift(t: _ModelTemplate, rng: np.random.Generator, oov_fields: set[str]) -> pd.DataFrame:
    """Drift rows that do not alert (bar the OOV rate of an OOV surge): every other statistic the
    nightly job tests per field, saliency share, permutation importance, probe, layer and table."""
    subjects: list[tuple[str, str, str]] = [("field", f, st) for f in t.fields for st in _FIELD_STATS]
    subjects += [(k, f"{h}/{f}", st) for h in t.heads for f in t.fields for k, st in (("saliency", "share"), ("importance", "importance"))]
    subjects += [("probe", f"{h}/{la}", "probe_auc") for h in t.heads for la in t.layer_names]
    subjects += [("layer", la, st) for la in t.layer_names for st in ("saturated_fraction", "log_mean_abs", "neuron_drift_share")]
    subjects += [("embedding", tb, st) for tb in TABLES for st in ("log_effective_rank", "log_norm_mean")]
    n = len(subjects)
    value = rng.gamma(2.0, 0.01, n)
    frame = pd.DataFrame(subjects, columns=["subject_kind", "subject", "statistic"]).assign(
        method="ref_mean+4std(trailing 7d)", value=value, reference=0.02, threshold=0.2, direction="above", alert=False)
    surge = (frame["statistic"] == "oov_rate") & frame["subject"].isin(oov_fields)
    frame.loc[surge, ["value", "alert"]] = [0.35, True]
    return frame[list(COLUMNS["drift"])]


def _drift_and_alerts(t: _ModelTemplate, rng: np.random.Generator, i: int, fs: pd.DataFrame, ls: pd.DataFrame, qu: pd.DataFrame,
                      active: list[Incident], dead: str | None, link: Callable[..., str]) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    spec = t.spec
    day = spec.day(i)
    nf = len(t.fields)
    psi = rng.gamma(2.0, 0.004, nf)
    cov_ref = t.coverage
    rows = []
    for j, r in enumerate(fs.itertuples(index=False)):
        bad = any(x.subject == r.field and x.kind in ("broken_feature", "oov_surge") for x in active)
        v = psi[j] + (2.5 if bad else 0.0)
        rows.append(("field", r.field, "psi", "ref_mean+4std(trailing 7d)", v, 0.01, 0.05, "above", bool(v > 0.05)))
        rows.append(("field", r.field, "coverage", "ref_mean-4std(trailing 7d)", r.coverage, cov_ref[j], cov_ref[j] - 0.02, "below",
                     bool(r.coverage < cov_ref[j] - 0.02)))  # fmt: skip
    for r in ls.itertuples(index=False):
        rows.append(("layer", r.layer, "dead_fraction", "ref_mean+4std(trailing 7d)", r.dead_fraction, 0.0, 0.05, "above",
                     bool(r.dead_fraction > 0.05)))  # fmt: skip
    for r in qu.itertuples(index=False):
        ref = t.auc[r.head]
        rows.append(("quality", r.head, "auc", "ref_mean-4std(trailing 7d)", r.auc, ref, ref - 0.015, "below", bool(r.auc < ref - 0.015)))
        rows.append(("quality", r.head, "calibration", "ref_mean+-4std(trailing 7d)", r.calibration, 1.0, 1.06, "above",
                     bool(r.calibration > 1.06)))  # fmt: skip
    drift = pd.concat([pd.DataFrame(rows, columns=list(COLUMNS["drift"])), _quiet_drift(t, rng, oov_fields={x.subject for x in active
                       if x.kind == "oov_surge"})], ignore_index=True)  # fmt: skip

    alerts = []
    for x in active:
        if x.kind == "dead_neurons" and dead != x.subject:
            continue
        sym = drift[drift["subject"] == x.subject].iloc[:1]
        symptoms = [{"kind": s.subject_kind, "subject": s.subject, "statistic": s.statistic, "value": round(float(s.value), 6),
                     "reference": round(float(s.reference), 6), "threshold": float(s.threshold), "direction": s.direction}
                    for s in sym.itertuples(index=False)]  # fmt: skip
        if x.kind == "dead_neurons":
            sev, score = "critical", 95.0
            title = f"New checkpoint: 40.0% of layer {x.subject}'s units are dead (usually 0.0%)"
            links = [{"label": f"layer {x.subject}", "url": link("/neurons", layer=x.subject)}]
            action = "Check the learning rate and initialisation of this training run; consider rolling back."
        else:
            sev, score = ("critical", 105.0) if x.kind == "broken_feature" else ("warning", 96.0)
            title = (f"Field {x.subject} looks broken: coverage fell to 2.0%" if x.kind == "broken_feature"
                     else f"Out-of-vocabulary ids surged in {x.subject}: 35.0% of values")  # fmt: skip
            links = [{"label": f"field {x.subject}", "url": link("/features", field=x.subject)},
                     {"label": f"saliency {t.heads[0]}", "url": link("/saliency", head=t.heads[0], field=x.subject)}]  # fmt: skip
            action = "Check the pipeline that logs this field for this day."
        alerts.append((x.kind, x.subject, sev, score + rng.random(), title,
                       {"model": None, "day": day, "symptoms": symptoms, "links": links}, action))  # fmt: skip
        if x.kind == "broken_feature":
            h = t.heads[0]
            alerts.append(("quality_drop", h, "info", 50.0, f"AUC of {h} fell; most likely cause: field {x.subject}",
                           {"day": day, "attribution": [{"field": x.subject, "score": 0.8}],
                            "links": [{"label": f"quality {h}", "url": link("/quality", head=h)}]},
                           "Look at the attributed fields first."))  # fmt: skip
    return drift, pd.DataFrame(alerts, columns=list(COLUMNS["alert"]))


def write_history(store: Any, spec: SampleSpec = SampleSpec(), *, run_kind: str = "nightly",
                  progress: Callable[[int, int], None] | None = None) -> dict[str, list[int]]:  # fmt: skip
    """Write ``spec.days`` days for each model of ``spec`` into ``store``; returns model -> version ids.

    A model gets a new checkpoint (version) every ``spec.retrain_every`` days; the incidents hit
    ``spec.incident_model`` (default: the first model) from their day on.
    """
    rng = np.random.default_rng(spec.seed)
    target = spec.incident_model or spec.models[0]
    versions: dict[str, list[int]] = {}
    templates = {m: _ModelTemplate(spec, tuple(spec.heads.get(m, ("ctr",))), np.random.default_rng(spec.seed + k + 1))
                 for k, m in enumerate(spec.models)}  # fmt: skip
    total, done = spec.days * len(spec.models), 0
    for i in range(spec.days):
        for m in spec.models:
            t = templates[m]
            v_start = (i // spec.retrain_every) * spec.retrain_every
            vid = store.register_model(m, f"ckpt-{m}-{v_start:04d}", "schema-1", {"trained_through": spec.day(max(v_start - 1, 0))})
            if vid not in versions.setdefault(m, []):
                versions[m].append(vid)
            active = [x for x in spec.incidents if m == target and x.day <= i]
            q = {"model": m, "day": spec.day(i), **({"compare": spec.day(i - 1)} if i else {})}

            def link(path: str, _q: dict[str, str] = q, **params: Any) -> str:
                return f"{path}?{urlencode({**_q, **params})}"

            results = _day_results(t, rng, i, v_start, active, link)
            results[-1].frame["evidence_json"] = [{**e, "model": m} for e in results[-1].frame["evidence_json"]]
            store.write_day(vid, spec.day(i), run_kind, results)
            done += 1
            if progress is not None:
                progress(done, total)
    return versions


__all__ = ["BIG_LAYERS", "Incident", "SMALL_LAYERS", "SampleSpec", "WORLD_FIELDS", "many_fields", "write_history"]
