"""Process-group plumbing for DistributedDataParallel: torchrun or our own spawn, gloo or NCCL.

Two ways in:

* ``torchrun --nproc_per_node=N -m ctrlens.train ...`` -- torchrun sets ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``; :func:`env_from_torchrun` reads them.
* ``ctrlens train --nproc N`` -- :func:`spawn` starts ``N`` processes (``torch.multiprocessing``,
  start method ``spawn``) on a free local port.

The backend is NCCL when training on CUDA and gloo on CPU; on CUDA rank ``r`` uses ``cuda:LOCAL_RANK``.
Errors a user can fix (an :class:`~ctrlens.errors.InputError` in any rank) come back to the parent
as an InputError with the rank's message, not as a wall of tracebacks.
"""

from __future__ import annotations

import os
import socket
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from ctrlens.errors import InputError


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size``, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return "nccl" if self.device.startswith("cuda") else "gloo"


def env_from_torchrun() -> DistEnv | None:
    """The torchrun environment, or ``None`` when this process was not started by torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return DistEnv(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(device: str, local_rank: int) -> str:
    """``"cuda"`` -> ``"cuda:LOCAL_RANK"``; refuses CUDA when none is available."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available to this process (torch.cuda.is_available() is False)")
        if device == "cuda":
            n = torch.cuda.device_count()
            if local_rank >= n:
                raise InputError(f"rank with local rank {local_rank} needs cuda:{local_rank}, but only {n} CUDA device(s) are visible")
            return f"cuda:{local_rank}"
    return device


def init_process_group(env: DistEnv, timeout_s: float = 1800.0) -> None:
    """Join the default process group for ``env`` (no-op for a single process)."""
    if not env.distributed or dist.is_initialized():
        return
    import datetime as _dt

    if env.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(env.device))
    dist.init_process_group(env.backend, rank=env.rank, world_size=env.world_size, timeout=_dt.timedelta(seconds=timeout_s))


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port that is free on this host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def all_gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` for a single process)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum of ``t`` over ranks (``t`` itself for a single process); NaN anywhere gives NaN everywhere."""
    if env.distributed:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: torch.nn.Module, env: DistEnv) -> None:
    """Make every rank's buffers (BatchNorm/Dice running statistics) equal to rank 0's."""
    if env.distributed:
        for b in module.buffers():
            dist.broadcast(b.data, 0)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def _spawned(rank: int, world_size: int, port: int, device: str, errors: Any, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    try:
        fn(DistEnv(rank, world_size, rank, device), *args)
    except InputError as e:
        errors.put((rank, "input", str(e)))
        raise SystemExit(3)
    except BaseException as e:  # anything else: keep the traceback for the parent
        if not isinstance(e, SystemExit):
            errors.put((rank, "crash", traceback.format_exc()))
        raise


def spawn(fn: Callable[..., Any], nproc: int, args: tuple = (), *, device: str = "cpu") -> None:
    """Run ``fn(DistEnv, *args)`` in ``nproc`` fresh processes on this host and wait for them.

    ``fn`` and ``args`` must be picklable (a module-level function). An InputError in any rank is
    re-raised here as an InputError naming the rank; a crash as a RuntimeError with its traceback.
    """
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    port = free_port()
    try:
        mp.start_processes(_spawned, args=(nproc, port, device, errors, fn, args), nprocs=nproc, join=True, start_method="spawn")
    except Exception as e:
        reports = []
        while not errors.empty():
            reports.append(errors.get())
        reports.sort(key=lambda r: (r[1] != "input", r[0]))
        for rank, kind, msg in reports:
            if kind == "input":
                raise InputError(msg if rank == 0 else f"rank {rank}: {msg}") from None
        if reports:
            rank, _, tb = reports[0]
            raise RuntimeError(f"training rank {rank} failed:\n{tb}") from None
        raise RuntimeError(f"training processes failed: {e}") from None
