"""The nightly job: for every watched model and day, measure, test, diagnose and store -- atomically.

Per model and day (days in order, so each day's reference includes the days before it):

1. resolve the checkpoint (a file, or the latest one in a directory trained before the day), load
   it for the data's schema (a mismatch is a clear error), register its version in the store;
2. skip the day if this version already has a complete nightly run of it that is still *true*
   (unless ``force``): every stored day records what it was computed from (its provenance: the
   reference days with their run ids and content digests, the days its histogram edges came from,
   the checkpoint) and a day whose dependencies have changed since, or that was computed while an
   earlier day was missing, is computed again;
3. take the lease ``nightly:<model>:<day>`` (:meth:`ctrlens.store.Store.lease`): its owner (host,
   pid, process start) renews it by a heartbeat while the day is computed; a job that finds it held
   by a live job waits (``lock_wait_s``), a dead holder's lease is taken over at once (same host) or
   when its heartbeat expires (``lock_ttl_s``);
4. read the reference days back from the store, :func:`~ctrlens.monitor.compute.compute_day`,
   run the drift tests (:class:`~ctrlens.monitor.drift.DriftSuite`) and the diagnosis;
5. write every result, the drift rows and the findings in **one** transaction, fenced by the lease
   (:meth:`ctrlens.store.Store.write_day`): a job killed at any point leaves the previous complete
   state; rerunning replaces, never duplicates;
6. write the daily report (HTML + Markdown; a missing one is written again by the next run).

Every check depends only on the day, its checkpoint and the days before it -- never on which other
days happen to be stored -- so ``--force`` over any range, a resumed killed job and two overlapping
jobs all end with the store one clean run would have written.

Exit codes (:attr:`JobSummary.exit_code`): 0 ran, no new alerts; 1 ran, new alerts (unless
``exit_on_alert: false``); 2 bad input or configuration, nothing written; 3 some model-days failed or
were locked by another job, or were computed while an earlier day was missing (they are marked and
the next run computes them again), the others were written; 4 every model-day was written, but a
notification could not be delivered (it is retried by the next run; see :mod:`ctrlens.notify`).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ctrlens.errors import InputError
from ctrlens.models.interface import checkpoint_of
from ctrlens.monitor.config import RUN_KIND, ConfigError, ModelWatch, NightlyConfig, config_dict
from ctrlens.monitor.diagnosis import PAGING, Context, diagnose
from ctrlens.monitor.drift import DriftSuite, History, both_axes
from ctrlens.notify.hooks import RunNotifications
from ctrlens.results import jsonable
from ctrlens.store.store import fault_point

EXIT_OK, EXIT_ALERTS, EXIT_INPUT, EXIT_PARTIAL, EXIT_NOTIFY = 0, 1, 2, 3, 4
log = logging.getLogger("ctrlens.monitor")
#: Bumped when what a stored day depends on changes meaning (older provenance then counts as stale).
PROVENANCE_VERSION = 1

#: Columns read back per reference day, per result kind.
SERIES: dict[str, list[str]] = {
    "field_stats": ["kind", "rows", "coverage", "oov_rate", "cardinality", "mean", "std", "top_json", "hist_json"],
    "quality": ["auc", "calibration", "mean_pred", "actual_rate", "score_hist_json"],
    "saliency": ["share", "mean"],
    "probe": ["auc", "model_auc"],
    "layer_stats": ["n_neurons", "dead_fraction", "saturated_fraction", "mean_abs"],
    "embedding_health": ["effective_rank", "norm_mean", "never_updated_frac"],
    "drift": ["value", "reference", "threshold", "direction", "alert"],
}


@dataclass
class Outcome:
    """What happened to one model-day.

    Attributes:
        status: ``ok`` (written), ``skipped`` (already done), ``failed`` or ``locked``.
        alerts: today's findings that page (critical / warning); findings: all of today's, ranked.
        new_alerts: findings the store opened (or reopened) with this run.
        input_error: the failure was bad input (a missing day, a checkpoint for another schema).
        incomplete: earlier days this job could not do (failed / locked) or that another job was
            computing when this day was computed: its reference may lack them; it is marked so in
            the store and computed again by the next run.
        recomputed: why a day already stored was computed again (its dependencies changed).
        took_over: the stale lease this job took over for the day (whose, and why).
    """

    model: str
    day: str
    status: str
    version_id: int | None = None
    version: str | None = None
    checkpoint: str | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    alerts: int = 0
    new_alerts: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    input_error: bool = False
    seconds: float = 0.0
    timings: dict[str, Any] = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    recomputed: str | None = None
    took_over: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "day": self.day, "status": self.status, "version_id": self.version_id,
            "version": self.version, "checkpoint": self.checkpoint, "alerts": self.alerts,
            "new_alerts": self.new_alerts, "findings": self.findings, "error": self.error,
            "seconds": round(self.seconds, 3), "timings": self.timings, "reports": self.reports,
            "incomplete": self.incomplete, "recomputed": self.recomputed, "took_over": self.took_over,
        }  # fmt: skip


@dataclass
class JobSummary:
    """All outcomes of one job run, and its exit code."""

    outcomes: list[Outcome]
    days: list[str]
    exit_on_alert: bool = True
    notify: dict[str, Any] | None = None  # deliveries of this run (ctrlens.notify.hooks), None without channels
    ranks: int = 1  # processes that computed each model-day (ctrlens.monitor.distributed)
    rank_error: str | None = None  # a rank other than 0 that exited badly (its model-days failed)

    @property
    def new_alerts(self) -> list[dict[str, Any]]:
        return [{"model": o.model, "day": o.day, **a} for o in self.outcomes for a in o.new_alerts]

    @property
    def incomplete(self) -> list[Outcome]:
        """Days written on a reference that may lack an earlier day (the next run redoes them)."""
        return [o for o in self.outcomes if o.status == "ok" and o.incomplete]

    @property
    def exit_code(self) -> int:
        bad = [o for o in self.outcomes if o.status in ("failed", "locked")]
        if bad:
            written = any(o.status == "ok" for o in self.outcomes)
            if not written and all(o.input_error for o in bad):
                return EXIT_INPUT
            return EXIT_PARTIAL
        if self.incomplete:
            return EXIT_PARTIAL
        if self.notify is not None and not self.notify["ok"]:
            return EXIT_NOTIFY
        if self.new_alerts and self.exit_on_alert:
            return EXIT_ALERTS
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "days": self.days, "new_alerts": self.new_alerts,
                "incomplete": [f"{o.model} {o.day}" for o in self.incomplete],
                "outcomes": [o.to_dict() for o in self.outcomes], "notify": self.notify, "ranks": self.ranks,
                "rank_error": self.rank_error}  # fmt: skip


# ------------------------------------------------------------------------------------- days


def _parse_day(s: str, what: str) -> str:
    try:
        return dt.date.fromisoformat(str(s).strip()).isoformat()
    except ValueError:
        raise InputError(f"{what}: {s!r} is not a day (expected YYYY-MM-DD)") from None


def plan_days(available: list[str], *, day: str | None = None, start: str | None = None, end: str | None = None) -> list[str]:
    """The days to run: ``day``; the calendar days ``start..end`` (inclusive; ``end`` defaults to the
    data's latest day); or, with neither, the data's latest day. Days absent from the data stay in the
    plan: each fails on its own with a clear message."""
    if day is not None and (start is not None or end is not None):
        raise InputError("give either --day or --from/--to, not both")
    if day is not None:
        return [_parse_day(day, "--day")]
    if start is None and end is not None:
        raise InputError("--to needs --from")
    if start is not None:
        a = _parse_day(start, "--from")
        if end is None:
            if not available:
                raise InputError("--from without --to: the data has no days to end at")
            end = available[-1]
        b = _parse_day(end, "--to")
        d0, d1 = dt.date.fromisoformat(a), dt.date.fromisoformat(b)
        if d1 < d0:
            raise InputError(f"--from {a} is after --to {b}")
        if (d1 - d0).days > 3660:
            raise InputError(f"--from {a} --to {b}: more than ten years of days; split the backfill")
        return [(d0 + dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]
    if not available:
        raise InputError("the data has no days (no day=YYYY-MM-DD folders)")
    return [available[-1]]


# ------------------------------------------------------------------------------------- checkpoints


class _Models:
    """Loads checkpoints once per job (through each model's loader) and picks, per day, the one that
    served it."""

    def __init__(self, schema: Any, device: str):
        self.schema, self.device = schema, device
        self._loaded: dict[tuple[str, str], Any] = {}
        self._dirs: dict[tuple[str, str | None], list[Any]] = {}
        self._loaders: dict[str, Any] = {}

    def loader(self, watch: ModelWatch) -> Any:
        """The model's resolved loader (imported once; a missing module/function is an InputError)."""
        from ctrlens.models.loader import DEFAULT_LOADER, resolve_loader

        spec = watch.loader or DEFAULT_LOADER
        if spec not in self._loaders:
            try:
                self._loaders[spec] = resolve_loader(spec)
            except InputError as e:
                raise InputError(f"model {watch.name!r}: {e}") from None
        return self._loaders[spec]

    def path_for(self, watch: ModelWatch, day: str) -> Path:
        from ctrlens.models.checkpoint import CheckpointError, list_checkpoints
        from ctrlens.models.loader import list_served

        if watch.checkpoint is not None:
            return watch.checkpoint
        d = watch.checkpoint_dir
        assert d is not None
        key = (str(d), watch.checkpoint_pattern)
        own = bool(watch.loader) or watch.checkpoint_pattern is not None
        if key not in self._dirs:
            if own:  # any format: days from a file-name pattern, sidecars or ctrlens headers
                self._dirs[key] = list_served(d, watch.checkpoint_pattern)
            else:
                self._dirs[key] = list_checkpoints(d)
        infos = self._dirs[key]
        if not infos:
            how = (f"files matching checkpoint_pattern {watch.checkpoint_pattern!r}" if watch.checkpoint_pattern else
                   "checkpoints with a sidecar <file>.json saying which days they were trained on (served_from, "
                   "trained_through or days_seen), or ctrlens checkpoints") if own else "ctrlens checkpoints (ckpt-step*.pt)"  # fmt: skip
            raise CheckpointError(f"model {watch.name!r}: checkpoint_dir {d} holds no {how}")
        before = [i for i in infos if i.days_seen and max(i.days_seen) < day]
        if before:
            return Path(before[-1].path)  # trained last among those trained only on earlier days
        if any(i.days_seen for i in infos):
            raise CheckpointError(
                f"model {watch.name!r}: no checkpoint in {d} was trained only on days before {day} "
                f"(earliest training days end {min(max(i.days_seen) for i in infos if i.days_seen)})"
            )
        return Path(infos[-1].path)

    def load(self, path: Path, watch: ModelWatch | None = None) -> Any:
        from ctrlens.models.loader import load_model, resolve_loader

        ld = self.loader(watch) if watch is not None else resolve_loader(None)
        key = (ld.spec, str(path))
        if key not in self._loaded:
            self._loaded[key] = load_model(path, self.schema, ld, device=self.device,
                                           pattern=watch.checkpoint_pattern if watch is not None else None)  # fmt: skip
        return self._loaded[key]


# ------------------------------------------------------------------------------------- history


def reference_days(store: Any, model: str, version_id: int | None, day: str, cfg: NightlyConfig) -> dict[str, list[str]]:
    """The stored days a computation of ``day`` reads, by role (what its provenance records):

    * ``reference``: the reference days (trailing: the N most recent stored days before ``day``;
      fixed: the baseline days stored -- for a baseline day, those before it);
    * ``recent``: the ``persistence - 1`` stored days before ``day`` (drift persistence);
    * ``field_edges``: the model's first stored day before ``day`` (frozen dense-field edges);
    * ``neuron_edges``: the version's first stored day before ``day`` (frozen neuron edges; none:
      ``day`` is the checkpoint's first day and gets the checkpoint checks);
    * ``anchor``: the fixed anchor period kept beside a trailing reference (:func:`load_anchor`);
    * ``previous``: the last stored day before ``day`` (its run names the previous checkpoint, for the
      checkpoint change report).

    Only days *before* ``day`` count (fixed baselines aside), so a rerun of a day reads what a
    clean run read, whatever was stored after it.
    """
    done = [d for d in store.days(model=model, run_kind=RUN_KIND) if d != day]
    before = [d for d in done if d < day]
    ref = cfg.reference
    if ref.kind == "trailing":
        days = before[-int(ref.days):]  # type: ignore[arg-type]
    else:
        # the baseline's own days compare with the baseline days before them (as a clean run, which
        # computes the baseline in order, does), so rerunning one never depends on a later one
        have, inside = set(done), day in set(ref.days)  # type: ignore[arg-type]
        days = [d for d in ref.days if d in have and (d < day or not inside)]  # type: ignore[union-attr]
    p = cfg.thresholds.persistence
    recent = before[-(p - 1):] if p > 1 else []
    fe = [d for d in store.days(model=model, run_kind=RUN_KIND, kind="field_stats") if d < day][:1]
    ne = [d for d in store.days(version=version_id, run_kind=RUN_KIND, kind="layer_stats") if d < day][:1] if version_id else []
    anchor: list[str] = []
    if ref.kind == "trailing" and days:  # as load_anchor decides
        a = before[: int(ref.days)]  # type: ignore[arg-type]
        anchor = a if len(a) >= ref.min_days and a[-1] < days[0] else []
    return {"reference": days, "recent": recent, "field_edges": fe, "neuron_edges": ne, "anchor": anchor,
            "previous": before[-1:]}


def load_history(store: Any, model: str, version_id: int | None, day: str, cfg: NightlyConfig,
                 deps: dict[str, list[str]] | None = None) -> History:  # fmt: skip
    """The reference days of ``model`` for ``day`` as :class:`History` frames read from ``store``
    (``deps``: :func:`reference_days`, computed when not given)."""
    deps = deps if deps is not None else reference_days(store, model, version_id, day, cfg)
    ref = cfg.reference
    days = list(deps["reference"])
    if ref.kind == "trailing":
        label, scheme = f"trailing {ref.days}d", "prequential"
    else:
        wanted = list(ref.days)  # type: ignore[arg-type]
        label, scheme = f"fixed {wanted[0]}..{wanted[-1]}", "loo"
    h = History(days=days, label=label, scheme=scheme, today=day)
    if days:
        for kind, stats in SERIES.items():
            h.frames[kind] = store.series(kind, stats, model=model, days=days, run_kind=RUN_KIND)
        vf = h.frames["field_stats"]
        h.versions = {d: int(v) for d, v in zip(vf["day"], vf["version_id"])} if len(vf) else {}
        same = [d for d in days if h.versions.get(d) == version_id]
        if same:
            h.frames["neuron_stats"] = store.series("neuron_stats", ["hist_json"], version=version_id, days=same, run_kind=RUN_KIND)
    if deps["recent"]:
        h.recent = store.series("drift", ["value", "threshold", "direction", "alert"], model=model, days=list(deps["recent"]),
                                run_kind=RUN_KIND)  # fmt: skip
    return h


def load_anchor(store: Any, model: str, day: str, cfg: NightlyConfig, trailing: History) -> History | None:
    """A fixed **anchor period** kept beside a trailing reference: the model's first stored nightly
    days (as many as the trailing window), when they all lie before the trailing window. Input fields
    only (checkpoint-free). ``None`` for a fixed reference or while the anchor would overlap."""
    if cfg.reference.kind != "trailing" or not trailing.days:
        return None
    done = [d for d in store.days(model=model, run_kind=RUN_KIND) if d < day]
    anchor = done[: int(cfg.reference.days)]  # type: ignore[arg-type]
    if len(anchor) < cfg.reference.min_days or anchor[-1] >= trailing.days[0]:
        return None
    h = History(days=anchor, label=f"anchor {anchor[0]}..{anchor[-1]}", scheme="loo", today=day)
    h.frames["field_stats"] = store.series("field_stats", SERIES["field_stats"], model=model, days=anchor, run_kind=RUN_KIND)
    return h


def with_anchor(suite: DriftSuite, anchor: DriftSuite) -> None:
    """Add to ``suite`` the input-field distances of today against the anchor period that alert while
    the same statistic against the trailing reference does not: a slow trend the trailing window has
    absorbed (rows ``subject_kind="anchor"``)."""
    trailing = {(r["subject_kind"], r["subject"], r["statistic"]): r for r in suite.rows}
    for r in anchor.rows:
        if r["subject_kind"] != "field" or r["statistic"] not in ("psi", "js", "wasserstein_norm", "mean_z") or not r["alert"]:
            continue
        t = trailing.get(("field", r["subject"], r["statistic"]))
        if t is not None and t["alert"]:
            continue
        suite.rows.append({**r, "subject_kind": "anchor", "method": f"{r['method']}; the trailing reference did not alert"})


def _field_edges(store: Any, model: str, first: list[str]) -> dict[str, list[float]] | None:
    """Dense-field histogram edges of the model's first stored day before today (``first``: that day)."""
    if not first:
        return None
    f = store.series("field_stats", ["kind", "hist_json"], model=model, days=first[0], run_kind=RUN_KIND)
    out = {r.field: list(r.hist_json["edges"]) for r in f.itertuples(index=False)
           if r.kind == "dense" and isinstance(r.hist_json, dict) and r.hist_json.get("edges")}  # fmt: skip
    return out or None


def _neuron_edges(store: Any, version_id: int | None, first: list[str]) -> dict[str, tuple[float, float]] | None:
    """Neuron histogram ranges of the version's first stored day before today (``first``: that day)."""
    if not first or version_id is None:
        return None
    f = store.series("layer_stats", ["edges_json"], version=version_id, days=first[0], run_kind=RUN_KIND)
    out = {r.layer: (float(r.edges_json[0]), float(r.edges_json[-1])) for r in f.itertuples(index=False)
           if isinstance(r.edges_json, list) and len(r.edges_json) >= 2}  # fmt: skip
    return out or None


def _stamps(store: Any, model: str, deps: dict[str, list[str]]) -> dict[str, Any]:
    """``deps`` with each day replaced by ``[day, [[run_id, digest], ...]]`` of its complete runs:
    what identifies the stored content a computation read (a rewrite with other numbers changes the
    digest; one with the same numbers does not)."""
    wanted = sorted({d for ds in deps.values() for d in ds})
    by_day: dict[str, list[list[Any]]] = {d: [] for d in wanted}
    if wanted:
        r = store.runs(model=model, days=wanted, run_kind=RUN_KIND)
        for row in r.itertuples(index=False) if len(r) else ():
            if row.status != "complete" or row.day not in by_day:
                continue
            prov = (row.params or {}).get("provenance") or {}
            by_day[row.day].append([int(row.run_id), prov.get("digest") or str(row.finished_at)])
    return {role: [[d, sorted(by_day.get(d, []))] for d in ds] for role, ds in deps.items()}


def digest(results: list[Any]) -> str:
    """A content digest of a day's results (their frames, not their timings): equal numbers, equal digest."""
    h = hashlib.sha256()
    for r in sorted(results, key=lambda r: r.kind):
        h.update(r.kind.encode())
        f = r.frame
        h.update(json.dumps({"columns": [str(c) for c in f.columns], "rows": f.to_dict("split")["data"]},
                            default=repr, sort_keys=True, allow_nan=True).encode())  # fmt: skip
    return h.hexdigest()[:32]


def stale_reason(store: Any, model: str, version_id: int, day: str, cfg: NightlyConfig) -> str | None:
    """Why the stored run of (version, day) no longer is what a clean run would store, or None
    when it is (also None for runs written before provenance was recorded). Not stored: "not done"."""
    r = store.runs(model=model, version=version_id, days=day, run_kind=RUN_KIND)
    done = r[r["status"] == "complete"] if len(r) else r
    if not len(done):
        return "not done"
    prov = (done.iloc[-1]["params"] or {}).get("provenance")
    if not prov:
        return None  # written before provenance existed: trusted as it is
    if prov.get("v") != PROVENANCE_VERSION:
        return f"provenance version {prov.get('v')} (now {PROVENANCE_VERSION})"
    if prov.get("incomplete"):
        return f"it was computed while earlier day(s) {', '.join(prov['incomplete'])} were missing"
    now = json.loads(json.dumps(_stamps(store, model, reference_days(store, model, version_id, day, cfg))))
    if now != prov.get("deps"):
        changed = [role for role in now if now[role] != (prov.get("deps") or {}).get(role)]
        what = {role: [d for d, _ in now[role]] for role in changed}
        return f"what it was computed from has changed since: {what}"
    return None


def _alert_states(store: Any, model: str) -> dict[tuple[str, str], str]:
    a = store.alerts(model=model)
    return {(r.finding, r.subject): r.state for r in a.itertuples(index=False)}


# ------------------------------------------------------------------------------------- model axis

#: Result kinds that depend on the checkpoint. On a day served by a checkpoint that did not serve the
#: reference days, these are compared with the *same checkpoint* on the reference days' data
#: (:func:`backtest`), never with another checkpoint's numbers: a new model is not a data change.
MODEL_KINDS = ("quality", "saliency", "probe", "layer_stats", "embedding_health", "neuron_stats")


def backtest(view: Any, ds: Any, watch: ModelWatch, days: list[str], cfg: NightlyConfig, *,
             neuron_edges: dict[str, tuple[float, float]] | None,
             cache: dict[tuple[str, str], tuple[Any, Any]] | None = None,
             compute: Callable[..., Any] | None = None) -> tuple[dict[str, Any], dict[str, tuple[float, float]] | None]:  # fmt: skip
    """Score the reference ``days`` with today's checkpoint ``view``: its checkpoint-dependent results
    there (:func:`~ctrlens.monitor.compute.compute_day` with ``model_only=True``; the same seeded
    samples the nightly run uses, so a day the checkpoint did serve gives its nightly numbers).

    Depends only on the data, the checkpoint and the configuration -- never on what the store holds --
    so a backfill in any order gives the same answer. ``neuron_edges``: the version's histogram edges
    when it has stored days; else the first back-test day's edges are taken for the others (and for
    today). ``cache``: ``(weights hash, day) -> (edges, DayResults)``, reused within one job.
    ``compute``: :func:`~ctrlens.monitor.compute.compute_day` or a stand-in with its signature (under
    torch.distributed, :meth:`~ctrlens.monitor.distributed.Cluster.compute_day` shares each
    back-test day among the ranks as it shares today).

    Returns ``(day -> DayResults, edges)``.
    """
    from ctrlens.monitor.compute import compute_day

    compute = compute or compute_day
    info = checkpoint_of(view)
    out: dict[str, Any] = {}
    edges = neuron_edges
    for d in sorted(days):
        key = (info.version, d)
        hit = cache.get(key) if cache is not None else None
        if hit is not None and (edges is None or hit[0] == edges):
            res = hit[1]
        else:
            res = compute(view, ds, d, watch, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
                          neuron_edges=edges, version=info.version, model_only=True)  # fmt: skip
            if cache is not None:
                while len(cache) >= 64:  # a long backfill: keep the most recent back-tests only
                    cache.pop(next(iter(cache)))
                cache[key] = (edges, res)
        if edges is None:
            edges = _edges_of(res.results.get("layer_stats"))
        out[d] = res
    return out, edges


def _edges_of(layer_stats: Any) -> dict[str, tuple[float, float]] | None:
    if layer_stats is None:
        return None
    f = layer_stats.frame
    out = {r.layer: (float(r.edges_json[0]), float(r.edges_json[-1])) for r in f.itertuples(index=False)
           if isinstance(r.edges_json, list) and len(r.edges_json) >= 2}  # fmt: skip
    return out or None


def with_backtest(history: History, model: str, version_id: int, results: dict[str, Any]) -> History:
    """``history`` with the checkpoint-dependent frames of the back-tested days replaced by the
    back-test's (today's checkpoint on those days); checkpoint-free frames (input fields, labels,
    dependence, observed position slope) are untouched."""
    from ctrlens.monitor.compute import MODEL_OBSERVATIONS

    if not results:
        return history
    days = set(results)
    frames = dict(history.frames)
    for kind in MODEL_KINDS:
        parts = []
        for d, res in sorted(results.items()):
            r = res.results.get(kind)
            if r is None or r.frame.empty:
                continue
            f = r.frame.copy()
            f.insert(0, "run_kind", "backtest")
            f.insert(0, "version_id", version_id)
            f.insert(0, "model", model)
            f.insert(0, "day", d)
            parts.append(f)
        old = frames.get(kind)
        keep = old[~old["day"].isin(days)] if old is not None and len(old) else None
        if parts or keep is not None:
            frames[kind] = pd.concat([x for x in [keep, *parts] if x is not None], ignore_index=True)
    dr = frames.get("drift")
    if dr is not None and len(dr):
        model_obs = pd.Series([(a, b) in MODEL_OBSERVATIONS for a, b in zip(dr["subject_kind"], dr["statistic"])], index=dr.index)
        dr = dr[~(model_obs & dr["day"].isin(days))]
        extra = [{"day": d, "subject_kind": o["subject_kind"], "subject": o["subject"], "statistic": o["statistic"],
                  "value": float(o["value"]), "alert": False}
                 for d, res in results.items() for o in res.observations
                 if (o["subject_kind"], o["statistic"]) in MODEL_OBSERVATIONS]  # fmt: skip
        frames["drift"] = pd.concat([dr, pd.DataFrame(extra)], ignore_index=True) if extra else dr
    versions = {d: (version_id if d in days else v) for d, v in history.versions.items()}
    return History(days=list(history.days), label=history.label + " (back-tested with today's checkpoint)",
                   scheme=history.scheme, frames=frames, recent=history.recent, versions=versions,
                   today=history.today)  # fmt: skip


def previous_checkpoint(store: Any, model: str, day: str, version_id: int) -> tuple[str, int, str] | None:
    """The checkpoint that served the latest nightly day before ``day`` if it is not ``version_id``:
    ``(path, version id, that day)``, or ``None`` (same checkpoint, first day, or its file is gone)."""
    done = [d for d in store.days(model=model, run_kind=RUN_KIND) if d < day]
    if not done:
        return None
    r = store.runs(model=model, days=done[-1], run_kind=RUN_KIND)
    r = r[r["status"] == "complete"]
    if r.empty:
        return None
    rec = r.sort_values("finished_at").iloc[-1]
    if int(rec["version_id"]) == version_id:
        return None
    path = (rec["params"] or {}).get("checkpoint")
    if not path or not Path(path).exists():
        return None
    return str(path), int(rec["version_id"]), done[-1]


# ------------------------------------------------------------------------------------- the job


class NightlyJob:
    """Run the nightly diagnostics of a configuration.

    Args:
        cfg: the :class:`~ctrlens.monitor.config.NightlyConfig`.
        progress: ``progress(event, **info)`` callback (the CLI draws progress bars with it).
        store: an open :class:`~ctrlens.store.Store` (default: opened from ``cfg.db``, created if new).
        cluster: rank 0's :class:`~ctrlens.monitor.distributed.Cluster` under torch.distributed: each
            model-day is computed by every rank (this process alone reads and writes the store).
    """

    def __init__(self, cfg: NightlyConfig, *, progress: Callable[..., None] | None = None, store: Any = None,
                 cluster: Any = None):  # fmt: skip
        self.cfg = cfg
        self.cluster = cluster
        self.progress = progress or (lambda *a, **k: None)
        self._store = store
        self._backtests: dict[tuple[str, str], tuple[Any, Any]] = {}  # (weights hash, day) -> back-test

    def run(self, *, day: str | None = None, start: str | None = None, end: str | None = None, force: bool = False) -> JobSummary:
        """Run the planned days (see :func:`plan_days`) for every model; returns the summary."""
        from ctrlens.data import DailyDataset

        cfg = self.cfg
        ds = DailyDataset(cfg.data)  # a missing / invalid dataset root: InputError before any write
        available = ds.days()
        days = plan_days(available, day=day, start=start, end=end)
        if cfg.reference.kind == "fixed":  # baseline days first, so the requested days have a reference
            days = sorted(set(days) | {d for d in cfg.reference.days if d in available})  # type: ignore[union-attr]
        if cfg.reference.kind == "fixed":
            present = [d for d in cfg.reference.days if d in set(available)]  # type: ignore[union-attr]
            if len(present) < cfg.reference.min_days:
                raise ConfigError(
                    f"{cfg.source}: reference.days: {len(present)} of the fixed reference days "
                    f"{list(cfg.reference.days)} are in the data at {cfg.data} (need reference.min_days = "  # type: ignore[arg-type]
                    f"{cfg.reference.min_days}): no drift test could ever alert"
                )
        # the store is opened (and, if new, created) only once a model-day passed its input checks, so a
        # run that fails on bad input leaves no database behind
        store = _LazyStore(self._store, self.cfg.db)
        models = self._models = _Models(ds.schema, cfg.device)
        for watch in cfg.models:  # a loader that cannot be imported: exit 2 before anything is written
            models.loader(watch)
        total = len(days) * len(cfg.models)
        self.progress("start", total=total, days=days)
        outcomes: list[Outcome] = []
        holes: dict[str, list[str]] = {m.name: [] for m in cfg.models}  # days this job could not do, per model
        notes = RunNotifications(cfg.notify)
        sent = None
        from ctrlens.store import StorageError

        try:
            for d in days:
                for watch in cfg.models:
                    self.progress("model_day", model=watch.name, day=d)
                    try:
                        o = self._one(store, ds, available, models, watch, d, force, holes[watch.name])
                    except StorageError as e:  # the database itself cannot be used: no point going on
                        if not any(x.status == "ok" for x in outcomes):
                            raise
                        o = Outcome(watch.name, d, "failed", error=str(e))
                        outcomes.append(o)
                        return self._summary(outcomes, days, sent)  # notifications: the next run
                    if o.status == "locked" or (o.status == "failed" and not o.input_error):
                        holes[watch.name].append(d)
                    outcomes.append(o)
                    if o.status == "ok":  # its alerts are committed: tell people
                        notes.after_day(store, o.model, o.day)
                    self.progress("done", outcome=o)
            if any(o.status in ("ok", "skipped") for o in outcomes):  # never create a database for this
                sent = notes.finish(store, [(o.model, o.day) for o in outcomes if o.status == "ok"],
                                    [p for o in outcomes for p in o.reports])  # fmt: skip
        finally:
            store.close()
        return self._summary(outcomes, days, sent)

    def _summary(self, outcomes: list[Outcome], days: list[str], sent: dict[str, Any] | None) -> JobSummary:
        ranks = self.cluster.shard.world if self.cluster is not None else 1
        return JobSummary(outcomes, days, self.cfg.exit_on_alert, sent, ranks=ranks)

    def _one(self, store: Any, ds: Any, available: list[str], models: _Models, watch: ModelWatch, day: str, force: bool,
             holes: list[str] | None = None) -> Outcome:  # fmt: skip
        from ctrlens.store import LeaseLost, LockHeld, StorageError
        from ctrlens.store.versions import version_key

        cfg = self.cfg
        t0 = time.perf_counter()
        o = Outcome(watch.name, day, "failed")
        try:
            if day not in set(available):
                shown = f"{available[0]} .. {available[-1]} ({len(available)} days)" if available else "none"
                raise InputError(f"day {day} is not in the data at {self.cfg.data} (no day={day}/ folder); days present: {shown}")
            path = models.path_for(watch, day)
            o.checkpoint = str(path)
            view = models.load(path, watch)
            info = view.checkpoint
            o.version = info.version
            ck_hash, schema_hash, _ = version_key(view)  # the checkpoint's weights / content hash
            vid = store.version_id(watch.name, ck_hash, schema_hash)  # look up only: registering writes
            o.version_id = vid
            # fast path (no lease): done and still true
            if not force and vid is not None and stale_reason(store, watch.name, vid, day, cfg) is None:
                o.status = "skipped"
                self._reports(store, watch, day, o, only_missing=True)
                return o
            self.progress("step", model=watch.name, day=day, step="waiting for the lease")
            with store.lease(watch.name, day, purpose=RUN_KIND, ttl_s=cfg.lock_ttl_s, wait_s=cfg.lock_wait_s) as lease:
                if lease.took_over:
                    o.took_over = lease.took_over
                vid = store.register_view(watch.name, view)
                o.version_id = vid
                why = None if force else stale_reason(store, watch.name, vid, day, cfg)
                if not force and why is None:  # another job did it meanwhile
                    o.status = "skipped"
                    self._reports(store, watch, day, o, only_missing=True)
                    return o
                if why not in (None, "not done"):
                    o.recomputed = why
                    log.warning("%s %s: computing it again: %s", watch.name, day, why)
                self._compute_and_write(store, ds, view, info, watch, day, vid, o, holes or [], lease)
                fault_point("job.committed")
                o.status = "ok"
                self._reports(store, watch, day, o, only_missing=False)
        except (LockHeld, LeaseLost) as e:
            o.status, o.error = "locked", str(e)
        except StorageError:
            raise
        except InputError as e:
            o.status, o.error, o.input_error = "failed", str(e), True
        except Exception as e:  # an internal error on one model-day must not stop the others
            o.status, o.error = "failed", f"{type(e).__name__}: {e}"
            o.timings["traceback"] = traceback.format_exc()[-4000:]
        finally:
            o.seconds = time.perf_counter() - t0
        return o

    def _reports(self, store: Any, watch: ModelWatch, day: str, o: Outcome, *, only_missing: bool) -> None:
        """Write the day's report (``only_missing``: only when a file of it is absent, e.g. the job
        that wrote the day was killed before its report)."""
        if not self.cfg.reports:
            return
        out = report_dir(self.cfg) / model_slug(watch.name)
        if only_missing and all((out / f"{day}.{ext}").exists() for ext in ("html", "md")):
            return
        try:
            from ctrlens.monitor.report import write_report

            o.reports = [str(p) for p in write_report(store, watch.name, day, out)]
        except Exception as e:  # a report problem never fails the night
            o.timings["report_error"] = f"{type(e).__name__}: {e}"

    def _compute_and_write(self, store: Any, ds: Any, view: Any, info: Any, watch: ModelWatch, day: str, vid: int, o: Outcome,
                           holes: list[str], lease: Any) -> None:  # fmt: skip
        cfg = self.cfg
        deps = reference_days(store, watch.name, vid, day, cfg)
        stamps = _stamps(store, watch.name, deps)
        # earlier days this job could not do, or another live job is computing now: the reference may lack them
        from ctrlens.store.store import owner_gone

        # (a lease on a day already stored is a job checking or redoing it: if its numbers change, the
        # digests in this day's provenance tell the next look at this day)
        stored = set(store.days(model=watch.name, run_kind=RUN_KIND))
        busy = [d for d, owner in store.held_locks(purpose=RUN_KIND, model=watch.name)
                if d < day and d not in stored and owner != lease.token and owner_gone(owner) is None]  # fmt: skip
        o.incomplete = sorted({*[h for h in holes if h < day], *busy})
        history = load_history(store, watch.name, vid, day, cfg, deps)
        field_edges = _field_edges(store, watch.name, deps["field_edges"])
        neuron_edges = _neuron_edges(store, vid, deps["neuron_edges"])
        other = [d for d in history.days if history.versions.get(d) != vid]
        bt_history = None
        if other:  # reference days served by another checkpoint: back-test today's on them
            self.progress("step", model=watch.name, day=day, step=f"back-test on {len(other)} reference day(s)")
            bt, neuron_edges = backtest(view, ds, watch, other, cfg, neuron_edges=neuron_edges, cache=self._backtests,
                                        compute=self._compute(o))  # fmt: skip
            bt_history = with_backtest(history, watch.name, vid, bt)
        train_day = None
        if not deps["neuron_edges"] and info.days_seen:  # the checkpoint's first day: check it against its training
            seen = [d for d in info.days_seen if d < day and d in set(ds.days())]
            train_day = seen[-1] if seen else None
        initial = None
        p0 = Path(info.path).parent / "ckpt-step000000000.pt"  # `ctrlens train --save-initial`
        if p0.exists() and p0.resolve() != Path(info.path).resolve():
            try:
                initial = self._models.load(p0, watch).model
            except InputError:
                initial = None
        kw = dict(batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device, field_edges=field_edges,
                  neuron_edges=neuron_edges, version=info.version, train_day=train_day, initial=initial,
                  progress=lambda step: self.progress("step", model=watch.name, day=day, step=step))  # fmt: skip
        res = self._compute(o)(view, ds, day, watch, **kw)
        change = self._checkpoint_change(store, ds, view, watch, day, vid, res, train_day)
        fault_point("job.computed")
        self.progress("step", model=watch.name, day=day, step="drift + diagnosis")
        suite = drift_suite(cfg, history, res, day)
        if bt_history is not None:
            suite = both_axes(suite, drift_suite(cfg, bt_history, res, day))
        anchor = load_anchor(store, watch.name, day, cfg, history)
        if anchor is not None:
            a_suite = DriftSuite(cfg.thresholds, anchor, min_days=cfg.reference.min_days)
            a_suite.fields(res.results.get("field_stats"))
            with_anchor(suite, a_suite)
        r = res.results
        last_version = history.versions.get(history.days[-1]) if history.days else None
        fs = r["field_stats"].frame
        ctx = Context(
            model=watch.name, day=day, version_id=vid, new_version=last_version is not None and last_version != vid,
            heads={h: s.label for h, s in view.heads.items()},
            field_kinds=dict(zip(fs["field"], fs["kind"])),
            item_fields={f.name for f in ds.schema.sparse if f.role == "item"},
            image_sources={f.name: f.source for f in ds.schema.images},
            item_tables={ds.schema.table_of(f.name).table_name: f.name for f in ds.schema.sparse if f.role == "item"},
            compare=history.days[-1] if history.days else None,
            extra={"position": res.meta.get("position", {}), "checkpoint_check": res.meta.get("checkpoint_check", {}),
                   "checkpoint_change": change},
        )  # fmt: skip
        alerts = diagnose(suite.frame(), ctx)
        drift = suite.result({"model": watch.name, "day": day, "version_id": vid,
                              "neurons": {la: {"share": v["share"], "reference_share": v["reference_share"],
                                               "layer_threshold": v["layer_threshold"]} for la, v in suite.neurons.items()}})  # fmt: skip
        before = _alert_states(store, watch.name)
        if change:
            res.meta["checkpoint_change"] = change
        results = [*r.values(), drift, alerts]
        # what this day was computed from: the next run recomputes it when any of that changed
        provenance = {"v": PROVENANCE_VERSION, "version_id": vid, "checkpoint": info.version, "deps": stamps,
                      "incomplete": o.incomplete, "digest": digest(results)}  # fmt: skip
        params = {"config": config_dict(cfg), "model": watch.name, "checkpoint": o.checkpoint, "version": info.version,
                  "reference_days": history.days, "train_day": train_day, "compute": jsonable(res.meta),
                  "provenance": jsonable(provenance)}  # fmt: skip
        store.write_day(vid, day, RUN_KIND, results, params=params, lease=lease)
        if o.incomplete:
            log.warning("%s %s: computed while earlier day(s) %s were missing; marked, the next run computes it again",
                        watch.name, day, ", ".join(o.incomplete))  # fmt: skip
        after = store.alerts(model=watch.name)
        today = {(f, s) for f, s in zip(alerts.frame["finding"], alerts.frame["subject"])}
        o.findings = [{k: v for k, v in rec.items() if k != "evidence_json"} for rec in alerts.frame.to_dict("records")]
        o.alerts = int(alerts.frame["severity"].isin(PAGING).sum())
        for rec in after.itertuples(index=False):
            key = (rec.finding, rec.subject)
            if key not in today or rec.severity not in PAGING or rec.state != "open":
                continue
            if before.get(key) in (None, "resolved"):
                o.new_alerts.append({"alert_id": int(rec.alert_id), "finding": rec.finding, "subject": rec.subject,
                                     "severity": rec.severity, "title": rec.title})  # fmt: skip
        o.timings = dict(res.meta.get("seconds", {}))


    def _compute(self, o: Outcome) -> Callable[..., Any]:
        """:func:`~ctrlens.monitor.compute.compute_day` for the checkpoint of ``o``: under
        torch.distributed every rank computes its share and this one merges."""
        from ctrlens.monitor.compute import compute_day

        if self.cluster is None:
            return compute_day
        return functools.partial(self.cluster.compute_day, checkpoint=str(o.checkpoint))

    def _checkpoint_change(self, store: Any, ds: Any, view: Any, watch: ModelWatch, day: str, vid: int, res: Any,
                           train_day: str | None) -> dict[str, Any]:  # fmt: skip
        """On the day the serving checkpoint changes: the old and the new one on the same rows
        (:func:`~ctrlens.monitor.compute.checkpoint_change`); its observations join today's. ``{}``
        on any other day."""
        from ctrlens.monitor.compute import checkpoint_change

        prev = self._previous_from_dir(watch, day, view) if watch.checkpoint_dir is not None else None
        if prev is None:
            prev = previous_checkpoint(store, watch.name, day, vid)
        if prev is None:
            return {}
        try:
            old = self._models.load(Path(prev[0]), watch)
        except InputError:  # the old checkpoint no longer loads for this schema: no comparison
            return {}
        if checkpoint_of(old).version == checkpoint_of(view).version:
            return {}
        self.progress("step", model=watch.name, day=day, step="checkpoint change report")
        have = set(ds.days())
        seen = [d for d in (checkpoint_of(old).days_seen or []) if d < day and d in have]
        obs, info = checkpoint_change(old, view, ds, day, watch, new_summary=res.neuron_summary, batch_size=self.cfg.batch_size,
                                      seed=self.cfg.seed, device=self.cfg.device, old_train_day=seen[-1] if seen else None,
                                      new_train_day=train_day, new_check=res.meta.get("checkpoint_check"))  # fmt: skip
        res.observations.extend(obs)
        info.update(previous_version_id=prev[1], previous_checkpoint=prev[0], previous_day=prev[2])
        return info

    def _previous_from_dir(self, watch: ModelWatch, day: str, view: Any) -> tuple[str, int | None, str] | None:
        """With a ``checkpoint_dir``: the checkpoint that served the day before ``day`` by the same rule
        (so the comparison depends on the checkpoints, not on what the store holds); ``None`` if it is
        today's or there is none."""
        prev_day = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
        try:
            p = self._models.path_for(watch, prev_day)
        except InputError:
            return None
        if Path(p).resolve() == Path(checkpoint_of(view).path).resolve():
            return None
        return str(p), None, prev_day


def drift_suite(cfg: NightlyConfig, history: History, res: Any, day: str) -> DriftSuite:
    """Every drift test of one model-day's results (``res``: :class:`~ctrlens.monitor.compute.DayResults`)."""
    suite = DriftSuite(cfg.thresholds, history, min_days=cfg.reference.min_days)
    r = res.results
    suite.fields(r.get("field_stats"))
    suite.swaps(r.get("field_stats"))
    suite.quality(r.get("quality"))
    suite.saliency(r.get("saliency"))
    q = r.get("quality")
    suite.probes(r.get("probe"), day, dict(zip(q.frame["head"], q.frame["actual_rate"])) if q is not None else None)
    suite.layers(r.get("layer_stats"), r.get("neuron_stats"))
    suite.embeddings(r.get("embedding_health"))
    suite.observations(res.observations)
    return suite


class _LazyStore:
    """The job's store, opened on first use (``create=True``); a store handed in is used as is."""

    def __init__(self, store: Any, url: str):
        self._given, self._url, self._s = store, url, store

    def __getattr__(self, name: str) -> Any:
        if self._s is None:
            from ctrlens.store import Store

            self._s = Store(self._url, create=True, upgrade=False)
        return getattr(self._s, name)

    def close(self) -> None:
        if self._s is not None and self._given is None:
            self._s.close()


def model_slug(name: str) -> str:
    """``name`` as one safe path component (config names are already restricted to these characters;
    this guards names that reach here by other routes)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    return slug[:100]


def report_dir(cfg: NightlyConfig) -> Path:
    """Where the daily reports go: ``report_dir``, else next to a SQLite database, else ``./reports``."""
    if cfg.report_dir is not None:
        return cfg.report_dir
    from ctrlens.store.engine import normalize_url, sqlite_path

    p = sqlite_path(normalize_url(cfg.db))
    return (p.parent if p is not None else Path.cwd()) / "reports"


def run_nightly(cfg: NightlyConfig, *, day: str | None = None, start: str | None = None, end: str | None = None,
                force: bool = False, progress: Callable[..., None] | None = None) -> JobSummary:  # fmt: skip
    """Convenience: ``NightlyJob(cfg, progress=progress).run(day=..., start=..., end=..., force=...)``."""
    return NightlyJob(cfg, progress=progress).run(day=day, start=start, end=end, force=force)


__all__ = ["EXIT_ALERTS", "EXIT_INPUT", "EXIT_NOTIFY", "EXIT_OK", "EXIT_PARTIAL", "JobSummary", "NightlyJob", "Outcome", "digest",
           "load_history", "model_slug", "plan_days", "reference_days", "report_dir", "run_nightly", "stale_reason"]  # fmt: skip
