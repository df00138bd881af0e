"""The nightly job under ``torch.distributed``: one model-day computed by several processes.

``ctrlens nightly --nproc N`` (processes on this machine) or ``torchrun ... -m ctrlens.cli nightly``
(one or many machines; ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` in the environment). Backend:
gloo on CPU, NCCL when the job's device is CUDA (rank ``r`` on ``cuda:LOCAL_RANK``); the small
objects the ranks exchange travel over a gloo group either way.

Rank 0 runs :class:`~ctrlens.monitor.job.NightlyJob` as one process would -- the store, the leases,
the drift tests, the reports, the notifications are its alone. For each model-day (and each day a
new checkpoint is back-tested on) it broadcasts a *compute* command; every rank then runs
:func:`~ctrlens.monitor.compute.compute_day` with a :class:`Shard`:

* the streamed pass (neurons, layers, quality, permutation importance, dependence sample) is
  sharded by **global batch index**: batch ``b`` of the day's stream goes to rank ``b % world``, so
  the union over the ranks is the one-process stream's batches, whatever the number of ranks;
  permutations are seeded by (seed, batch index, chunk index), samples chosen by row hashes or by
  stream position, histogram edges taken from the day's first forward (rank 0's pass starts with
  it; the other ranks read the stream's first batch with their share) -- by construction nothing
  depends on the number of ranks beyond float summation order;
* the sample analyses (field statistics, probes, saliency) run whole, each on one rank;
* every rank's share comes back to rank 0 (:meth:`Shard.merge_day`), which merges them (``merge``
  of each accumulator) and finishes the day. A failure on any rank fails the model-day on rank 0,
  before anything is written; a rank that died fails every later model-day of the run.

At the end rank 0 broadcasts the job's exit code and every rank exits with it.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ctrlens.errors import InputError

#: The sample analyses of a day and the rank each runs on (rank ``(world - 1 - i) % world`` for the
#: i-th): rank 0, which merges and finishes the day, gets them last.
TASKS = ("field_stats", "saliency", "probes")
#: How long a rank waits for the others (rank 0 alone runs the checkpoint change report, drift tests
#: and reports while the others wait): generous, since a dead peer is noticed through its closed
#: connection.
TIMEOUT_S = float(os.environ.get("CTRLENS_DIST_TIMEOUT_S", 6 * 3600))


class RankFailed(RuntimeError):
    """Another rank failed (or died) while computing a model-day."""


@dataclass
class Shard:
    """This process's place in the group: ``rank`` of ``world``; ``group`` carries objects (gloo)."""

    rank: int
    world: int
    group: Any = None
    broken: str | None = None  # why the group can no longer be used (a rank died)

    def owns(self, task: str) -> bool:
        """Whether this rank runs the sample analysis ``task`` (one of :data:`TASKS`)."""
        return self.rank == (self.world - 1 - TASKS.index(task)) % self.world

    def failure(self, e: BaseException) -> dict[str, Any]:
        """A picklable description of this rank's failure (sent to rank 0 instead of its share)."""
        return {"rank": self.rank, "input": isinstance(e, InputError), "message": f"{type(e).__name__}: {e}"
                if not isinstance(e, InputError) else str(e), "traceback": traceback.format_exc()[-4000:]}  # fmt: skip

    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank."""
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def merge_day(self, local: dict[str, Any]) -> dict[str, Any] | None:
        """Gather every rank's share of a model-day to rank 0 and merge them there (in rank order).

        ``local``: what :func:`~ctrlens.monitor.compute.compute_day` computed on this rank, or
        ``{"error": ...}``. Returns the merged shares on rank 0, ``None`` on the others; raises on
        rank 0 when any rank failed (``InputError`` when that was bad input)."""
        import torch.distributed as dist

        parts: list[Any] | None = [None] * self.world if self.rank == 0 else None
        try:
            dist.gather_object(local, parts, dst=0, group=self.group)
        except Exception as e:  # a peer died: this group cannot be used again
            self.broken = f"{type(e).__name__}: {e}"
            raise RankFailed(f"a rank was lost while computing the day: {self.broken}") from None
        if self.rank != 0:
            return None
        assert parts is not None
        errors = [p["error"] for p in parts if "error" in p]
        if errors:
            err = errors[0]
            msg = f"rank {err['rank']} of {self.world}: {err['message']}"
            if err["input"]:
                raise InputError(msg)
            raise RankFailed(msg + "\n" + err["traceback"])
        return merge_shares(parts)


def merge_shares(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Every rank's share of a model-day merged into one (``parts`` in rank order)."""
    out = dict(parts[0])
    seconds = dict(out["seconds"])
    for p in parts[1:]:
        out["pass"] = out["pass"].merge(p["pass"])
        if out["perm"] is not None:
            out["perm"] = out["perm"].merge(p["perm"])
        out["dep"] = out["dep"].merge(p["dep"])
        for k in ("field_stats", "probe", "saliency"):  # each computed whole on one rank
            if k in p:
                out[k] = p[k]
        out["skipped"] = {**out["skipped"], **p["skipped"]}
        for k, v in p["seconds"].items():  # wall time: the slowest rank's
            seconds[k] = max(seconds.get(k, 0.0), v)
        out["spent"] = {k: max(out["spent"].get(k, 0.0), v) for k, v in {**out["spent"], **p["spent"]}.items()}
    out["seconds"] = seconds
    return out


# ------------------------------------------------------------------------------------- the group


def env_world() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when started by torchrun (or any launcher setting
    ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR``) with more than one process, else ``None``."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InputError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None
    if world <= 1:
        return None
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise InputError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: start the job with torchrun "
                         "or set the torch.distributed environment")  # fmt: skip
    rank = int(os.environ["RANK"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def rank_device(device: str, local_rank: int) -> str:
    """The device of a rank: ``cuda`` -> ``cuda:<local_rank>``; anything else as given."""
    return f"cuda:{local_rank}" if device == "cuda" else device


def init_group(rank: int, world: int, device: str, init_method: str = "env://") -> Shard:
    """Join the process group (gloo on CPU, NCCL on CUDA) and return this rank's :class:`Shard`."""
    import torch
    import torch.distributed as dist

    timeout = dt.timedelta(seconds=TIMEOUT_S)
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group("nccl" if cuda else "gloo", init_method=init_method, rank=rank, world_size=world,
                            timeout=timeout)  # fmt: skip
    group = dist.new_group(backend="gloo", timeout=timeout) if cuda else None  # objects: CPU tensors
    return Shard(rank, world, group)


def close_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class Cluster:
    """Rank 0's handle on the other ranks (held by :class:`~ctrlens.monitor.job.NightlyJob`)."""

    def __init__(self, shard: Shard):
        self.shard = shard

    def compute_day(self, view: Any, dataset: Any, day: str, watch: Any, *, checkpoint: str, **kw: Any) -> Any:
        """:func:`~ctrlens.monitor.compute.compute_day` with every rank (``checkpoint``: the file
        the other ranks load; ``kw``: compute_day's keywords, the same on every rank except
        ``initial`` and ``progress``, which only rank 0 uses)."""
        from ctrlens.monitor.compute import compute_day

        if self.shard.broken:
            raise RankFailed(f"a rank was lost earlier in this run ({self.shard.broken})")
        shared = {k: v for k, v in kw.items() if k not in ("initial", "progress")}
        self.shard.broadcast(("compute", {"model": watch.name, "checkpoint": checkpoint, "day": day, "kw": shared}))
        return compute_day(view, dataset, day, watch, shard=self.shard, **kw)

    def stop(self, code: int) -> None:
        """Tell the other ranks the run is over (they exit with ``code``)."""
        if not self.shard.broken:
            try:
                self.shard.broadcast(("stop", int(code)))
            except Exception:  # a rank already gone: it cannot be told
                pass


def serve(shard: Shard, cfg: Any) -> int:
    """A rank other than 0: compute its shares of the model-days rank 0 sends, until told to stop;
    returns the job's exit code. It never opens the store or writes anything."""
    from ctrlens.data import DailyDataset
    from ctrlens.monitor.compute import compute_day
    from ctrlens.monitor.job import _Models
    from ctrlens.store.store import fault_point

    ds = DailyDataset(cfg.data)
    models = _Models(ds.schema, cfg.device)
    watches = {w.name: w for w in cfg.models}
    while True:
        cmd, payload = shard.broadcast()
        if cmd == "stop":
            return int(payload)
        try:
            fault_point(f"nightly.rank{shard.rank}")  # crash tests: a rank that dies mid-day
            watch = watches[payload["model"]]
            view = models.load(Path(payload["checkpoint"]), watch)
            compute_day(view, ds, payload["day"], watch, shard=shard, **payload["kw"])
        except Exception as e:  # its share is this failure: rank 0 fails the model-day
            shard.merge_day({"error": shard.failure(e)})


def run_distributed(cfg: Any, shard: Shard, job: Callable[[Any, Cluster], Any]) -> Any:
    """Run ``job(cfg, cluster)`` on rank 0 (returns its :class:`~ctrlens.monitor.job.JobSummary`)
    while the other ranks serve; every rank returns the job's exit code (rank 0: the summary)."""
    if shard.rank != 0:
        return serve(shard, cfg)
    cluster = Cluster(shard)
    code = 2
    try:
        summary = job(cfg, cluster)
        code = summary.exit_code
        return summary
    finally:
        cluster.stop(code)


# ------------------------------------------------------------------------------------- --nproc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _threads(nproc: int) -> int:
    from ctrlens.monitor.fleet import _cores

    return max(1, _cores() // nproc)


def _spawned(i: int, cfg: Any, port: int, nproc: int, threads: int) -> None:
    """A process started by :func:`run_nproc` (rank ``i + 1``)."""
    import torch

    torch.set_num_threads(threads)
    rank = i + 1
    shard = init_group(rank, nproc, rank_device(cfg.device, rank), f"tcp://127.0.0.1:{port}")
    try:
        serve(shard, cfg.with_(device=rank_device(cfg.device, rank)))  # the exit code is rank 0's to give
    finally:
        close_group()


def run_nproc(cfg: Any, nproc: int, job: Callable[[Any, Cluster], Any]) -> Any:
    """``--nproc N``: this process is rank 0 and starts ranks 1..N-1 on this machine (forked for a
    CPU job, spawned for CUDA). Returns rank 0's summary (``rank_error`` says if a rank exited
    badly; the model-days it took part in failed)."""
    import torch
    import torch.multiprocessing as tmp

    if nproc < 1:
        raise InputError(f"--nproc must be >= 1, got {nproc}")
    if str(cfg.device).startswith("cuda") and nproc > torch.cuda.device_count():
        raise InputError(f"--nproc {nproc} --device cuda: this machine has {torch.cuda.device_count()} GPU(s)")
    threads = _threads(nproc)
    port = free_port()
    method = "spawn" if str(cfg.device).startswith("cuda") else "fork"
    ctx = tmp.start_processes(_spawned, args=(cfg, port, nproc, threads), nprocs=nproc - 1, join=False,
                              start_method=method)  # fmt: skip
    torch.set_num_threads(threads)
    shard = init_group(0, nproc, rank_device(cfg.device, 0), f"tcp://127.0.0.1:{port}")
    try:
        summary = run_distributed(cfg.with_(device=rank_device(cfg.device, 0)), shard, job)
    finally:
        close_group()
        bad = None
        try:
            while not ctx.join():
                pass
        except Exception as e:  # a rank that died or exited badly
            bad = f"{type(e).__name__}: {e}"
    summary.rank_error = bad
    return summary


def run_ranks(cfg: Any, *, nproc: int = 1, day: str | None = None, start: str | None = None, end: str | None = None,
              force: bool = False, progress: Callable[..., None] | None = None) -> Any:  # fmt: skip
    """The nightly job across ranks: started by torchrun (the environment says so), or ``nproc``
    processes on this machine. Returns the :class:`~ctrlens.monitor.job.JobSummary` on rank 0 and
    the job's exit code (an ``int``) on the other ranks."""
    from ctrlens.monitor.job import NightlyJob

    def job(c: Any, cluster: Cluster) -> Any:
        return NightlyJob(c, progress=progress, cluster=cluster).run(day=day, start=start, end=end, force=force)

    env = env_world()
    if env is not None:
        if nproc > 1:
            raise InputError("--nproc with torchrun: torchrun starts the processes (--nproc_per_node); drop --nproc")
        rank, world, local = env
        c = cfg.with_(device=rank_device(cfg.device, local))
        shard = init_group(rank, world, c.device)
        try:
            return run_distributed(c, shard, job)
        finally:
            close_group()
    return run_nproc(cfg, nproc, job)


__all__ = ["Cluster", "RankFailed", "Shard", "TASKS", "env_world", "init_group", "merge_shares", "run_distributed",
           "run_nproc", "run_ranks", "serve"]
