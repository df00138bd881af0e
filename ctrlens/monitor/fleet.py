"""A fleet: one nightly invocation watching many models, the models in parallel worker processes.

Models are independent (each has its own store rows, reference days, locks and reports), so each
model runs as its own :class:`~ctrlens.monitor.job.NightlyJob` in a worker process, its days in
order; the workers share nothing but the database. The outcomes come back as one
:class:`~ctrlens.monitor.job.JobSummary` (ordered by day, then model, as the sequential job orders
them), with one exit code.

    from ctrlens.monitor import load_config
    from ctrlens.monitor.fleet import run_fleet
    summary = run_fleet(load_config("nightly.yaml"), workers=4, start="2026-01-08")

Workers are forked on Linux for a CPU job (they start at once, with the libraries this process
already imported; they are forked before any torch computation or progress thread runs here) and
spawned otherwise (a fresh interpreter each: CUDA cannot be forked); each uses ``cores // workers``
intra-op threads so the workers together use the cores once. The dataset, days and configuration
are checked in this process first: bad input exits 2 with nothing written, as the sequential job does.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable

from ctrlens.errors import InputError
from ctrlens.monitor.config import NightlyConfig
from ctrlens.monitor.job import JobSummary, NightlyJob, Outcome, plan_days

_queue: Any = None  # the worker's progress queue (set by _init_worker)


def _init_worker(q: Any, threads: int) -> None:
    global _queue
    _queue = q
    import torch

    torch.set_num_threads(max(1, threads))


def _forward(event: str, **info: Any) -> None:
    if _queue is not None:
        _queue.put((event, info))


def _run_model(cfg: NightlyConfig, day: str | None, start: str | None, end: str | None, force: bool) -> JobSummary:
    """One model's days, in order, in a worker (progress events go back to the parent)."""
    return NightlyJob(cfg, progress=_forward).run(day=day, start=start, end=end, force=force)


def _drain(q: Any, progress: Callable[..., None]) -> None:
    while True:
        try:
            event, info = q.get_nowait()
        except queue_mod.Empty:
            return
        if event != "start":  # the parent announced the whole fleet's total already
            progress(event, **info)


def run_fleet(cfg: NightlyConfig, *, workers: int = 1, day: str | None = None, start: str | None = None,
              end: str | None = None, force: bool = False, progress: Callable[..., None] | None = None,
              start_method: str | None = None) -> JobSummary:  # fmt: skip
    """Run the nightly job for every model of ``cfg``, ``workers`` models at a time.

    ``workers=1`` (or a single model) is the sequential job in this process. Returns the merged
    :class:`JobSummary`; a worker that dies takes only its own model's days down (``failed``).
    ``start_method``: ``fork`` / ``spawn`` / ``forkserver`` (default: see the module docstring).
    """
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    n = min(workers, len(cfg.models))
    if n <= 1:
        return NightlyJob(cfg, progress=progress).run(day=day, start=start, end=end, force=force)
    from ctrlens.data import DailyDataset

    progress = progress or (lambda *a, **k: None)
    ds = DailyDataset(cfg.data)  # a missing / invalid dataset root: InputError before any write
    available = ds.days()
    days = plan_days(available, day=day, start=start, end=end)
    if cfg.reference.kind == "fixed":  # as the job does: baseline days first
        days = sorted(set(days) | {d for d in cfg.reference.days if d in available})  # type: ignore[union-attr]
    if any(d in set(available) for d in days):
        _create_store(cfg.db)  # once, here: workers creating one database at the same moment would race
    threads = max(1, _cores() // n)
    if start_method is None:
        start_method = "fork" if "fork" in mp.get_all_start_methods() and str(cfg.device) == "cpu" else "spawn"
    if start_method == "fork":  # the workers inherit the modules the analyses import on first use
        from ctrlens.monitor.compute import preload

        preload()
    ctx = mp.get_context(start_method)
    q = ctx.Queue()
    order = {w.name: i for i, w in enumerate(cfg.models)}
    outcomes: list[Outcome] = []
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(q, threads)) as ex:
        # submitting starts the workers (all of them, for fork) -- before the progress bar's thread;
        # the pool hands each free worker the next model: the costliest first, so none is left last
        futures = {ex.submit(_run_model, cfg.with_(models=(w,)), day, start, end, force): w
                   for w in sorted(cfg.models, key=_cost, reverse=True)}  # fmt: skip
        progress("start", total=len(days) * len(cfg.models), days=days)
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(q, progress)
        _drain(q, progress)
    notify: list[dict[str, Any]] = []
    for fut, w in futures.items():
        try:
            res = fut.result()
            outcomes += res.outcomes
            if res.notify is not None:
                notify.append(res.notify)
        except InputError:
            raise
        except Exception as e:  # the worker process died (killed, out of memory): its model's days failed
            outcomes += [Outcome(w.name, d, "failed", error=f"worker process failed: {type(e).__name__}: {e}") for d in days]
    outcomes.sort(key=lambda o: (o.day, order.get(o.model, 0)))
    # each worker notified for its own model; the fleet's exit code says whether any channel failed
    merged = {"ok": all(n.get("ok", True) for n in notify), "workers": notify} if notify else None
    return JobSummary(outcomes, days, cfg.exit_on_alert, merged)


def _cost(w: Any) -> tuple[int, int]:
    """Rough relative cost of a model's day: whole-day passes first, then by rows sampled (stable
    for equal models: the configuration's order)."""
    r = w.rows
    return (int(r.neurons <= 0), r.neurons + r.probes + r.saliency)


def _cores() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _create_store(url: str) -> None:
    from ctrlens.store import Store

    Store(url, create=True, upgrade=False).close()


__all__ = ["run_fleet"]
