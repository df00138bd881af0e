"""The nightly job: for every watched model and day, measure, test, diagnose and store -- atomically.

Per model and day (days in order, so each day's reference includes the days before it):

1. resolve the checkpoint (a file, or the latest one in a directory trained before the day), load
   it for the data's schema (a mismatch is a clear error), register its version in the store;
2. skip the day if this version already has a complete nightly run of it (unless ``force``);
3. take the database lock ``nightly:<model>:<day>`` (another job on the same model-day: skipped);
4. read the reference days back from the store, :func:`~ctrlens.monitor.compute.compute_day`,
   run the drift tests (:class:`~ctrlens.monitor.drift.DriftSuite`) and the diagnosis;
5. write every result, the drift rows and the findings in **one** transaction
   (:meth:`ctrlens.store.Store.write_day`): a job killed at any point leaves the previous complete
   state; rerunning replaces, never duplicates;
6. write the daily report (HTML + Markdown).

Exit codes (:attr:`JobSummary.exit_code`): 0 ran, no new alerts; 1 ran, new alerts (unless
``exit_on_alert: false``); 2 bad input or configuration, nothing written; 3 some model-days failed or
were locked by another job, the others were written; 4 every model-day was written, but a
notification could not be delivered (it is retried by the next run; see :mod:`ctrlens.notify`).
"""

from __future__ import annotations

import datetime as dt
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ctrlens.errors import InputError
from ctrlens.monitor.config import RUN_KIND, ModelWatch, NightlyConfig, config_dict
from ctrlens.monitor.diagnosis import PAGING, Context, diagnose
from ctrlens.monitor.drift import DriftSuite, History
from ctrlens.notify.hooks import RunNotifications
from ctrlens.results import jsonable

EXIT_OK, EXIT_ALERTS, EXIT_INPUT, EXIT_PARTIAL, EXIT_NOTIFY = 0, 1, 2, 3, 4

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "day": self.day, "status": self.status, "version_id": self.version_id,
            "version": self.version, "checkpoint": self.checkpoint, "alerts": self.alerts,
            "new_alerts": self.new_alerts, "findings": self.findings, "error": self.error,
            "seconds": round(self.seconds, 3), "timings": self.timings, "reports": self.reports,
        }  # fmt: skip


@dataclass
class JobSummary:
    """All outcomes of one job run, and its exit code."""

    outcomes: list[Outcome]
    days: list[str]
    exit_on_alert: bool = True
    notify: dict[str, Any] | None = None  # deliveries of this run (ctrlens.notify.hooks), None without channels

    @property
    def new_alerts(self) -> list[dict[str, Any]]:
        return [{"model": o.model, "day": o.day, **a} for o in self.outcomes for a in o.new_alerts]

    @property
    def exit_code(self) -> int:
        bad = [o for o in self.outcomes if o.status in ("failed", "locked")]
        if bad:
            written = any(o.status == "ok" for o in self.outcomes)
            if not written and all(o.input_error for o in bad):
                return EXIT_INPUT
            return EXIT_PARTIAL
        if self.notify is not None and not self.notify["ok"]:
            return EXIT_NOTIFY
        if self.new_alerts and self.exit_on_alert:
            return EXIT_ALERTS
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "days": self.days, "new_alerts": self.new_alerts,
                "outcomes": [o.to_dict() for o in self.outcomes], "notify": self.notify}  # fmt: skip


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


def load_history(store: Any, model: str, version_id: int, day: str, cfg: NightlyConfig) -> History:
    """The reference days of ``model`` for ``day`` as :class:`History` frames read from ``store``."""
    done = [d for d in store.days(model=model, run_kind=RUN_KIND) if d != day]
    ref = cfg.reference
    if ref.kind == "trailing":
        days = [d for d in done if d < day][-int(ref.days):]  # type: ignore[arg-type]
        label, scheme = f"trailing {ref.days}d", "prequential"
    else:
        wanted = list(ref.days)  # type: ignore[arg-type]
        days = [d for d in wanted if d in set(done)]
        label, scheme = f"fixed {wanted[0]}..{wanted[-1]}", "loo"
    h = History(days=days, label=label, scheme=scheme)
    if days:
        for kind, stats in SERIES.items():
            h.frames[kind] = store.series(kind, stats, model=model, days=days, run_kind=RUN_KIND)
        vf = h.frames["field_stats"]
        h.versions = {d: int(v) for d, v in zip(vf["day"], vf["version_id"])} if len(vf) else {}
        same = [d for d in days if h.versions.get(d) == version_id]
        if same:
            h.frames["neuron_stats"] = store.series("neuron_stats", ["hist_json"], version=version_id, days=same, run_kind=RUN_KIND)
    p = cfg.thresholds.persistence
    if p > 1:
        prev = [d for d in done if d < day][-(p - 1):]
        if prev:
            r = store.series("drift", ["value", "threshold", "direction", "alert"], model=model, days=prev, run_kind=RUN_KIND)
            h.recent = r
    return h


def _field_edges(store: Any, model: str) -> dict[str, list[float]] | None:
    first = store.days(model=model, run_kind=RUN_KIND, kind="field_stats")
    if not first:
        return None
    f = store.series("field_stats", ["kind", "hist_json"], model=model, days=first[0], run_kind=RUN_KIND)
    out = {r.field: list(r.hist_json["edges"]) for r in f.itertuples(index=False)
           if r.kind == "dense" and isinstance(r.hist_json, dict) and r.hist_json.get("edges")}  # fmt: skip
    return out or None


def _neuron_edges(store: Any, version_id: int) -> tuple[dict[str, tuple[float, float]] | None, list[str]]:
    days = store.days(version=version_id, run_kind=RUN_KIND, kind="layer_stats")
    if not days:
        return None, []
    f = store.series("layer_stats", ["edges_json"], version=version_id, days=days[0], run_kind=RUN_KIND)
    out = {r.layer: (float(r.edges_json[0]), float(r.edges_json[-1])) for r in f.itertuples(index=False)
           if isinstance(r.edges_json, list) and len(r.edges_json) >= 2}  # fmt: skip
    return out or None, days


def _is_done(store: Any, model: str, version_id: int, day: str) -> bool:
    r = store.runs(model=model, version=version_id, days=day, run_kind=RUN_KIND)
    return bool(len(r) and (r["status"] == "complete").any())


def _alert_states(store: Any, model: str) -> dict[tuple[str, str], str]:
    a = store.alerts(model=model)
    return {(r.finding, r.subject): r.state for r in a.itertuples(index=False)}


# ------------------------------------------------------------------------------------- the job


class NightlyJob:
    """Run the nightly diagnostics of a configuration.

    Args:
        cfg: the :class:`~ctrlens.monitor.config.NightlyConfig`.
        progress: ``progress(event, **info)`` callback (the CLI draws progress bars with it).
        store: an open :class:`~ctrlens.store.Store` (default: opened from ``cfg.db``, created if new).
    """

    def __init__(self, cfg: NightlyConfig, *, progress: Callable[..., None] | None = None, store: Any = None):
        self.cfg = cfg
        self.progress = progress or (lambda *a, **k: None)
        self._store = store

    def run(self, *, day: str | None = None, start: str | None = None, end: str | None = None, force: bool = False) -> JobSummary:
        """Run the planned days (see :func:`plan_days`) for every model; returns the summary."""
        from ctrlens.data import DailyDataset

        cfg = self.cfg
        ds = DailyDataset(cfg.data)  # a missing / invalid dataset root: InputError before any write
        available = ds.days()
        days = plan_days(available, day=day, start=start, end=end)
        if cfg.reference.kind == "fixed":  # baseline days first, so the requested days have a reference
            days = sorted(set(days) | {d for d in cfg.reference.days if d in available})  # type: ignore[union-attr]
        # the store is opened (and, if new, created) only once a model-day passed its input checks, so a
        # run that fails on bad input leaves no database behind
        store = _LazyStore(self._store, self.cfg.db)
        models = self._models = _Models(ds.schema, cfg.device)
        for watch in cfg.models:  # a loader that cannot be imported: exit 2 before anything is written
            models.loader(watch)
        total = len(days) * len(cfg.models)
        self.progress("start", total=total, days=days)
        outcomes = []
        notes = RunNotifications(cfg.notify)
        sent = None
        try:
            for d in days:
                for watch in cfg.models:
                    self.progress("model_day", model=watch.name, day=d)
                    o = self._one(store, ds, available, models, watch, d, force)
                    outcomes.append(o)
                    if o.status == "ok":  # its alerts are committed: tell people
                        notes.after_day(store, o.model, o.day)
                    self.progress("done", outcome=o)
            if any(o.status in ("ok", "skipped") for o in outcomes):  # never create a database for this
                sent = notes.finish(store, [(o.model, o.day) for o in outcomes if o.status == "ok"],
                                    [p for o in outcomes for p in o.reports])  # fmt: skip
        finally:
            store.close()
        return JobSummary(outcomes, days, cfg.exit_on_alert, sent)

    def _one(self, store: Any, ds: Any, available: list[str], models: _Models, watch: ModelWatch, day: str, force: bool) -> Outcome:
        from ctrlens.store import LockHeld

        t0 = time.perf_counter()
        o = Outcome(watch.name, day, "failed")
        vid = None
        try:
            if day not in set(available):
                shown = f"{available[0]} .. {available[-1]} ({len(available)} days)" if available else "none"
                raise InputError(f"day {day} is not in the data at {self.cfg.data} (no day={day}/ folder); days present: {shown}")
            path = models.path_for(watch, day)
            o.checkpoint = str(path)
            view = models.load(path, watch)
            info = view.checkpoint
            o.version = info.version
            vid = store.register_view(watch.name, view)  # version: the checkpoint's weights / content hash
            o.version_id = vid
            if not force and _is_done(store, watch.name, vid, day):
                o.status = "skipped"
                return o
            with store.locked(watch.name, day, purpose=RUN_KIND, ttl_s=self.cfg.lock_ttl_s) as token:
                if not force and _is_done(store, watch.name, vid, day):  # another job finished it meanwhile
                    o.status = "skipped"
                    return o
                self._compute_and_write(store, ds, view, info, watch, day, vid, o)
                store.refresh(watch.name, day, token, purpose=RUN_KIND, ttl_s=self.cfg.lock_ttl_s)
            o.status = "ok"
        except LockHeld as e:
            o.status, o.error = "locked", str(e)
        except InputError as e:
            o.status, o.error, o.input_error = "failed", str(e), True
            if vid is not None:
                _record_failure(store, vid, day, str(e))
        except Exception as e:  # an internal error on one model-day must not stop the others
            o.status, o.error = "failed", f"{type(e).__name__}: {e}"
            o.timings["traceback"] = traceback.format_exc()[-4000:]
            if vid is not None:
                _record_failure(store, vid, day, o.error)
        finally:
            o.seconds = time.perf_counter() - t0
        if o.status == "ok" and self.cfg.reports:
            try:
                from ctrlens.monitor.report import write_report

                out = report_dir(self.cfg)
                o.reports = [str(p) for p in write_report(store, watch.name, day, out / watch.name)]
            except Exception as e:  # a report problem never fails the night
                o.timings["report_error"] = f"{type(e).__name__}: {e}"
        return o

    def _compute_and_write(self, store: Any, ds: Any, view: Any, info: Any, watch: ModelWatch, day: str, vid: int, o: Outcome) -> None:
        from ctrlens.monitor.compute import compute_day

        cfg = self.cfg
        history = load_history(store, watch.name, vid, day, cfg)
        field_edges = _field_edges(store, watch.name)
        neuron_edges, version_days = _neuron_edges(store, vid)
        train_day = None
        if not [d for d in version_days if d != day] and info.days_seen:
            seen = [d for d in info.days_seen if d < day and d in set(ds.days())]
            train_day = seen[-1] if seen else None
        initial = None
        p0 = Path(info.path).parent / "ckpt-step000000000.pt"  # `ctrlens train --save-initial`
        if p0.exists() and p0.resolve() != Path(info.path).resolve():
            try:
                initial = self._models.load(p0, watch).model
            except InputError:
                initial = None
        res = compute_day(view, ds, day, watch, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
                          field_edges=field_edges, neuron_edges=neuron_edges, version=info.version, train_day=train_day,
                          initial=initial,
                          progress=lambda step: self.progress("step", model=watch.name, day=day, step=step))  # fmt: skip
        self.progress("step", model=watch.name, day=day, step="drift + diagnosis")
        suite = DriftSuite(cfg.thresholds, history, min_days=cfg.reference.min_days)
        r = res.results
        suite.fields(r.get("field_stats"))
        suite.quality(r.get("quality"))
        suite.saliency(r.get("saliency"))
        q = r.get("quality")
        suite.probes(r.get("probe"), day, dict(zip(q.frame["head"], q.frame["actual_rate"])) if q is not None else None)
        suite.layers(r.get("layer_stats"), r.get("neuron_stats"))
        suite.embeddings(r.get("embedding_health"))
        suite.observations(res.observations)
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
            extra={"position": res.meta.get("position", {}), "checkpoint_check": res.meta.get("checkpoint_check", {})},
        )  # fmt: skip
        alerts = diagnose(suite.frame(), ctx)
        drift = suite.result({"model": watch.name, "day": day, "version_id": vid,
                              "neurons": {la: {"share": v["share"], "reference_share": v["reference_share"],
                                               "layer_threshold": v["layer_threshold"]} for la, v in suite.neurons.items()}})  # fmt: skip
        before = _alert_states(store, watch.name)
        params = {"config": config_dict(cfg), "model": watch.name, "checkpoint": o.checkpoint, "version": info.version,
                  "reference_days": history.days, "train_day": train_day, "compute": jsonable(res.meta)}  # fmt: skip
        store.write_day(vid, day, RUN_KIND, [*r.values(), drift, alerts], params=params)
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


def _record_failure(store: Any, vid: int, day: str, error: str) -> None:
    try:
        store.record_failure(vid, day, RUN_KIND, error[:2000])
    except Exception:  # recording is best effort; the outcome carries the error anyway
        pass


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


__all__ = ["EXIT_ALERTS", "EXIT_INPUT", "EXIT_NOTIFY", "EXIT_OK", "EXIT_PARTIAL", "JobSummary", "NightlyJob", "Outcome", "load_history",
           "plan_days", "report_dir", "run_nightly"]  # fmt: skip
