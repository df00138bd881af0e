"""The training loop: one process or DistributedDataParallel, checkpoints, exact resume, evaluation.

Data parallelism: each of the ``W`` ranks reads its own shard of every day
(``dataset.iter_batches(day, rank=r, world_size=W)``, equal batch counts per rank) with a per-rank
batch of ``batch_size // W`` rows; DDP averages gradients, so one step equals a one-process step on
the global batch (up to float summation order) for models without batch statistics. BatchNorm/Dice
statistics are per rank (DDP broadcasts rank 0's running averages at each forward); see
``docs/training.md``.

A run walks ``epochs x days`` in order. Checkpoints record the data position (epoch, day, batch),
RNG states of every rank and the optimizer, so ``resume_from`` continues bit-for-bit. A non-finite
loss stops every rank at the same step before any update is applied; the checkpoints written so far
are kept untouched.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ctrlens.errors import InputError
from ctrlens.models.checkpoint import (
    CKPT_GLOB,
    Builder,
    CheckpointInfo,
    build_model,
    check_schema,
    checkpoint_info,
    checkpoint_path,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ctrlens.results import Result
from ctrlens.train.config import TrainConfig, TrainingError, check_model_name, parse_days
from ctrlens.train.ddp import (
    DistEnv,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    destroy_process_group,
    env_from_torchrun,
    init_process_group,
    resolve_device,
    spawn,
)

SUMMARY_FILE = "train.json"


@dataclass(frozen=True)
class StepInfo:
    """Handed to a progress callback after every step (rank 0 only)."""

    step: int
    steps_run: int
    epoch: int
    day: str
    batch: int  # batch index within the day (0-based)
    loss: float  # mean over ranks
    total_steps: int | None


@dataclass
class TrainResult:
    """What a run produced (rank 0's view; read back from ``out_dir/train.json`` after a spawn)."""

    out_dir: Path
    checkpoints: list[str]
    final: str | None
    step: int
    steps_run: int
    days_seen: tuple[str, ...]
    losses: list[float]
    eval: dict[str, Result] = field(default_factory=dict)
    seconds: float = 0.0
    world_size: int = 1

    @property
    def final_info(self) -> CheckpointInfo | None:
        return checkpoint_info(self.final) if self.final else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "checkpoints": self.checkpoints,
            "final": self.final,
            "step": self.step,
            "steps_run": self.steps_run,
            "days_seen": list(self.days_seen),
            "losses": self.losses,
            "eval": {d: r.to_dict() for d, r in self.eval.items()},
            "seconds": self.seconds,
            "world_size": self.world_size,
        }

    @classmethod
    def load(cls, out_dir: str | Path) -> "TrainResult":
        d = json.loads((Path(out_dir) / SUMMARY_FILE).read_text())
        return cls(
            Path(d["out_dir"]), d["checkpoints"], d["final"], d["step"], d["steps_run"], tuple(d["days_seen"]),
            d["losses"], {k: Result.from_dict(v) for k, v in d["eval"].items()}, d["seconds"], d["world_size"],
        )


def open_dataset(data: Any) -> Any:
    """A dataset object: ``data`` itself when it has ``iter_batches``, else ``DailyDataset(data)``."""
    if hasattr(data, "iter_batches"):
        return data
    p = Path(data)
    if not p.exists():
        raise InputError(f"--data {p}: no such dataset root")
    from ctrlens.data import DailyDataset  # type: ignore[attr-defined]

    return DailyDataset(p)


def make_optimizer(name: str, params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    raise TrainingError(f"unknown optimizer {name!r}")


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _day_rows(ds: Any, day: str) -> int | None:
    """Rows of a day if the dataset can say so cheaply (for the progress bar)."""
    for attr in ("num_rows", "rows", "day_rows"):
        f = getattr(ds, attr, None)
        if callable(f):
            try:
                return int(f(day))
            except Exception:
                return None
    return None


class _Trainer:
    def __init__(self, env: DistEnv, cfg: TrainConfig, data: Any, builder: Builder | None,
                 show_progress: bool, callback: Callable[[StepInfo], None] | None):
        self.env, self.cfg, self.builder = env, cfg, builder
        self.ds = open_dataset(data)
        self.schema = self.ds.schema
        self.show_progress, self.callback = show_progress and env.is_main, callback if env.is_main else None
        self.out_dir = Path(cfg.out_dir)
        if env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.batch_size % env.world_size:
            raise TrainingError(f"--batch-size {cfg.batch_size} is the global batch; it must be divisible by the {env.world_size} processes")
        self.local_batch = cfg.batch_size // env.world_size
        if env.distributed and not env.device.startswith("cuda"):
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // env.world_size))
        self.checkpoints: list[str] = []
        self.last_good: tuple[str, int] | None = None
        self.losses: list[float] = []

    # -- setup -----------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, env = self.cfg, self.env
        src = cfg.resume_from or cfg.init_from
        ck = read_checkpoint(src) if src else None
        config = dict(cfg.model_config)
        if ck is not None:
            if ck["model_name"] != cfg.model:
                raise TrainingError(f"checkpoint {src} is a {ck['model_name']!r} model, but --model is {cfg.model!r}")
            from ctrlens.data.schema import Schema

            saved = Schema.from_dict(json.loads(ck["schema"]), source=f"checkpoint {src}")
            check_schema(src, ck["schema_hash"], saved, self.schema)
            differ = {k: v for k, v in config.items() if k != "preset" and json.dumps(ck["config"].get(k)) != json.dumps(v)}
            if differ:
                raise TrainingError(f"checkpoint {src}: model config {differ} differs from the checkpoint's "
                                    f"({ {k: ck['config'].get(k) for k in differ} }); drop the overrides to continue it")
            config = dict(ck["config"])
        seed_all(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        model = build_model(cfg.model, self.schema, config, self.builder)
        model.to(env.device)
        self.model_config = config
        if ck is not None:
            model.load_state_dict(ck["state_dict"])
        self.module = model
        self.batch_kw = self._batch_options(model)
        self._feature_frequency()
        self.opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
        prev_train = (ck or {}).get("extra", {}).get("train", {}) if ck else {}
        if ck is not None and ck.get("optimizer") is not None and prev_train.get("optimizer") == cfg.optimizer:
            self.opt.load_state_dict(ck["optimizer"])
            for g in self.opt.param_groups:  # the new run's lr wins (a warm start may lower it)
                g["lr"] = cfg.lr
        self.step = int(ck["step"]) if ck else 0
        self.run_start = self.step
        self.prior_days: list[str] = list(ck["days_seen"]) if ck else []
        self.run_days: list[str] = []
        self.pos = (0, 0, 0)  # next (epoch, day index, batch index)
        if cfg.resume_from and ck is not None:
            self._resume_from(ck, prev_train)
        else:
            seed_all(cfg.seed * 1_000_003 + env.rank + 1)
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [torch.device(env.device).index] if env.device.startswith("cuda") else None
            self.net: nn.Module = DDP(model, device_ids=ids, find_unused_parameters=cfg.find_unused_parameters)
        else:
            self.net = model

    def _batch_options(self, model: nn.Module) -> dict[str, Any]:
        """``images=False`` for the loader when the model embeds no image field (saves the gather)."""
        if "images" not in inspect.signature(self.ds.iter_batches).parameters:
            return {}
        from ctrlens.models.interface import as_view

        try:
            kinds = {f.kind for f in as_view(model).fields.values()}
        except Exception:  # a model without a view: give it everything
            return {}
        return {} if "image" in kinds else {"images": False}

    def _feature_frequency(self) -> None:
        """DIN's mini-batch aware regularisation needs each embedding row's count over the training
        days: counted over every rank's shard and summed (only when ``mba_lambda > 0``)."""
        m = self.module
        if not float(getattr(getattr(m, "config", None), "mba_lambda", 0.0) or 0.0) > 0 or not hasattr(m, "set_feature_frequency"):
            return
        emb = m.field_embedding()
        tables = emb.table_modules()
        counts = {t: torch.zeros(mod.num_embeddings, dtype=torch.float64) for t, mod in tables.items()}
        kw = {"images": False} if "images" in inspect.signature(self.ds.iter_batches).parameters else {}
        for day in self.cfg.days:
            for b in self.ds.iter_batches(day, batch_size=max(self.cfg.eval_batch_size, 4096), rank=self.env.rank,
                                          world_size=self.env.world_size, limit=self.cfg.limit, **kw):
                for t, c in counts.items():
                    for f in emb.fields_of_table(t):
                        x = b.features[f].reshape(-1)
                        c += torch.bincount(x[x > 0], minlength=c.numel()).to(torch.float64)[: c.numel()]
        for t, c in counts.items():
            c = all_reduce_sum(c.to(self.env.device), self.env).cpu()
            m.set_feature_frequency(t, c.float())

    def _resume_from(self, ck: dict, prev: dict) -> None:
        cfg, env = self.cfg, self.env
        plan = cfg.plan()
        diff = [k for k in ("days", "batch_size", "seed", "shuffle", "limit") if prev.get(k) != plan[k]]
        if diff:
            raise TrainingError(
                f"--resume {cfg.resume_from}: the run's {', '.join(diff)} differ from this one "
                f"({', '.join(f'{k}={prev.get(k)!r}' for k in diff)}); resume with the same plan, or use --init to warm-start on other days"
            )
        if prev.get("world_size", 1) != env.world_size:
            raise TrainingError(f"--resume {cfg.resume_from}: the run used {prev.get('world_size')} processes, this one {env.world_size}; data shards would differ")
        p = ck["extra"].get("position") or {}
        self.pos = (int(p.get("epoch", 0)), int(p.get("day_index", 0)), int(p.get("batch", 0)))
        self.run_start = int(prev.get("run_start_step", 0))
        self.prior_days = list(prev.get("prior_days", []))
        self.run_days = [d for d in ck["days_seen"] if d not in self.prior_days]
        rngs = ck.get("rng") or []
        set_rng_state(rngs[env.rank] if env.rank < len(rngs) else rngs[0])
        self.last_good = (str(cfg.resume_from), self.step)

    # -- checkpoints -----------------------------------------------------------------------------
    def days_seen(self) -> list[str]:
        return self.prior_days + [d for d in self.run_days if d not in self.prior_days]

    def _nonfinite_param(self) -> str | None:
        for n, p in self.module.named_parameters():
            if not torch.isfinite(p).all():
                return n
        return None

    def save(self, final: bool = False) -> None:
        bad = self._nonfinite_param()
        if bad is not None:
            raise self._diverged(f"parameter {bad!r} is not finite after step {self.step}", *self._where)
        rngs = all_gather_objects(rng_state(), self.env)
        if not self.env.is_main:
            return
        e, di, bi = self.pos
        plan = dict(self.cfg.plan(), world_size=self.env.world_size, run_start_step=self.run_start,
                    prior_days=self.prior_days, optimizer=self.cfg.optimizer)
        extra = {
            "train": plan,
            "position": {"epoch": e, "day_index": di, "batch": bi},
            "final": final,
            "loss": float(np.mean(self.losses[-50:])) if self.losses else None,
        }
        path = checkpoint_path(self.out_dir, self.step)
        save_checkpoint(path, self.module, optimizer=self.opt, step=self.step, days_seen=self.days_seen(),
                        extra=extra, name=self.cfg.model, schema=self.schema, rng=rngs)  # config: the model's own
        if str(path) not in self.checkpoints:
            self.checkpoints.append(str(path))
        self.last_good = (str(path), self.step)

    def _diverged(self, what: str, epoch: int, day: str, batch: int) -> TrainingError:
        cfg = self.cfg
        if self.last_good:
            kept = f"last good checkpoint: {self.last_good[0]} (step {self.last_good[1]}), kept untouched"
        else:
            every = f"every {cfg.checkpoint_every} steps" if cfg.checkpoint_every else "only at the end"
            kept = f"no checkpoint was written before it (checkpoints are written {every})"
        return TrainingError(
            f"training stopped: {what} (epoch {epoch + 1}/{cfg.epochs}, day {day}, batch {batch} of the day); {kept}. "
            f"Lower --lr (now {cfg.lr:g}) or check that day's data for extreme or broken values."
        )

    # -- loop --------------------------------------------------------------------------------------
    def _total_steps(self) -> int | None:
        cfg = self.cfg
        per_day = []
        for d in cfg.days:
            n = _day_rows(self.ds, d)
            if n is None:
                return cfg.max_steps
            if cfg.limit is not None:
                n = min(n, cfg.limit)
            per_rank = n // self.env.world_size  # the loader drops the remainder
            per_day.append(math.ceil(per_rank / self.local_batch))
        total = sum(per_day) * cfg.epochs
        return min(total, cfg.max_steps) if cfg.max_steps else total

    def run(self) -> TrainResult | None:
        cfg, env = self.cfg, self.env
        t0 = time.time()
        self.setup()
        self.module.train()
        self._where = (self.pos[0], cfg.days[min(self.pos[1], len(cfg.days) - 1)], self.pos[2])
        total = self._total_steps()
        bar = _Progress(total, cfg.model) if self.show_progress else None
        stop = cfg.max_steps is not None and self.step - self.run_start >= cfg.max_steps
        e0, d0, b0 = self.pos
        if cfg.save_initial and not cfg.resume_from:
            self.save()
        try:
            for epoch in range(e0, cfg.epochs):
                for di in range(d0 if epoch == e0 else 0, len(cfg.days)):
                    if stop:
                        break
                    day = cfg.days[di]
                    skip = b0 if (epoch, di) == (e0, d0) else 0
                    it = self.ds.iter_batches(day, batch_size=self.local_batch, shuffle=cfg.shuffle, seed=cfg.seed + epoch,
                                              rank=env.rank, world_size=env.world_size, limit=cfg.limit, **self.batch_kw)
                    for bi, batch in enumerate(it):
                        if bi < skip:
                            continue
                        if cfg.max_steps is not None and self.step - self.run_start >= cfg.max_steps:
                            stop = True
                            break
                        self._where = (epoch, day, bi)
                        self._step(batch, epoch, day, bi)
                        self.pos = (epoch, di, bi + 1)
                        if day not in self.run_days:
                            self.run_days.append(day)
                        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                            self.save()
                        info = StepInfo(self.step, self.step - self.run_start, epoch, day, bi, self.losses[-1], total)
                        if bar is not None:
                            bar.update(info)
                        if self.callback is not None:
                            self.callback(info)
                    else:
                        self.pos = (epoch, di + 1, 0) if di + 1 < len(cfg.days) else (epoch + 1, 0, 0)
                if stop:
                    break
        finally:
            if bar is not None:
                bar.close()
        if self.step == self.run_start and not cfg.resume_from:
            raise TrainingError(f"no training batches: days {', '.join(cfg.days)} gave no rows to this run" + (" (check --max-steps)" if cfg.max_steps else ""))
        self.save(final=True)
        evals = self.evaluate_days()
        barrier(env)
        if not env.is_main:
            return None
        res = TrainResult(self.out_dir, self.checkpoints, self.last_good[0] if self.last_good else None, self.step,
                          self.step - self.run_start, tuple(self.days_seen()), self.losses, evals, time.time() - t0,
                          env.world_size)
        summary = dict(res.to_dict(), config=cfg.to_dict())
        tmp = self.out_dir / f".{SUMMARY_FILE}.tmp"
        tmp.write_text(json.dumps(summary, indent=1, default=str))
        os.replace(tmp, self.out_dir / SUMMARY_FILE)
        return res

    def _step(self, batch: Any, epoch: int, day: str, bi: int) -> None:
        dev = self.env.device
        if dev != "cpu":
            batch = batch.to(dev, non_blocking=True)
        out = self.net(batch)
        loss = self.module.loss(out, batch)
        mean = all_reduce_sum(loss.detach().float().reshape(1), self.env) / self.env.world_size
        lv = float(mean.item())
        if not math.isfinite(lv):
            raise self._diverged(f"the loss is {lv} at step {self.step + 1}; no update was applied", epoch, day, bi)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        self.losses.append(lv)

    # -- evaluation ----------------------------------------------------------------------------------
    def evaluate_days(self) -> dict[str, Result]:
        from ctrlens.metrics import accumulate, quality_result

        env, cfg = self.env, self.cfg
        if not cfg.eval_days:
            return {}
        broadcast_buffers(self.module, env)  # every rank scores with rank 0's running statistics
        out: dict[str, Result] = {}
        for day in cfg.eval_days:
            it = self.ds.iter_batches(day, batch_size=cfg.eval_batch_size, shuffle=False, seed=0,
                                      rank=env.rank, world_size=env.world_size, limit=cfg.eval_limit,
                                      remainder="exact", **self.batch_kw)  # every row once: equal to one process
            accs = accumulate(self.module, it, device=env.device)
            gathered = all_gather_objects(accs, env)
            if env.is_main:
                merged = gathered[0]
                for other in gathered[1:]:
                    for h, a in other.items():
                        merged[h].merge(a)
                out[day] = quality_result(merged.values(), meta={"day": day, "step": self.step, "model": cfg.model})
        self.module.train()
        return out


class _Progress:
    """A rich progress bar for rank 0."""

    def __init__(self, total: int | None, model: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        self.p.start()
        self.task = self.p.add_task(f"train {model}", total=total, info="")

    def update(self, s: StepInfo) -> None:
        self.p.update(self.task, completed=s.steps_run, info=f"epoch {s.epoch + 1} day {s.day} loss {s.loss:.4f}")

    def close(self) -> None:
        self.p.stop()


def run_worker(env: DistEnv, cfg: TrainConfig, data: Any, builder: Builder | None = None, show_progress: bool = False,
               callback: Callable[[StepInfo], None] | None = None) -> TrainResult | None:
    """One rank of a run (the whole run for a single process)."""
    env = replace(env, device=resolve_device(cfg.device, env.local_rank))
    init_process_group(env)
    try:
        return _Trainer(env, cfg, data, builder, show_progress, callback).run()
    finally:
        destroy_process_group()


def _check_out_dir(out: Path, *, fresh: bool, overwrite: bool) -> None:
    """A fresh run refuses a folder holding another run's checkpoints (their steps would mix)."""
    old = sorted(out.glob(CKPT_GLOB)) if out.is_dir() else []
    if not old or not fresh:
        return
    if not overwrite:
        raise TrainingError(
            f"--out {out} already holds {len(old)} checkpoint(s) of another run (e.g. {old[-1].name}); "
            "continue it with --resume, warm-start from it with --init, choose another --out, or pass --overwrite"
        )
    for p in old:
        p.unlink()
    (out / SUMMARY_FILE).unlink(missing_ok=True)


def _spawn_entry(env: DistEnv, cfg: TrainConfig, data: Any, builder: Builder | None, show_progress: bool) -> None:
    run_worker(env, cfg, data, builder, show_progress)


def train(
    model_name: str,
    data_root: Any,
    days: str | Sequence[str],
    *,
    out_dir: str | Path,
    epochs: int = 1,
    batch_size: int = 1024,
    lr: float = 1e-3,
    optimizer: str = "adam",
    seed: int = 0,
    device: str = "cpu",
    checkpoint_every: int | None = None,
    resume_from: str | Path | None = None,
    init_from: str | Path | None = None,
    eval_days: str | Sequence[str] = (),
    max_steps: int | None = None,
    nproc: int = 1,
    model_config: dict[str, Any] | None = None,
    builder: Builder | None = None,
    show_progress: bool = False,
    callback: Callable[[StepInfo], None] | None = None,
    overwrite: bool = False,
    **options: Any,
) -> TrainResult | None:
    """Train a reference model on days of a dataset; return what the run produced.

    Args:
        model_name: ``"base"``, ``"din"``, ``"dicm"``, ``"esmm"``, ``"pal"`` or ``"xdeepfm"``.
        data_root: a dataset root (``DailyDataset``) or a dataset object with ``iter_batches``.
        days: ``"2026-01-01:2026-01-07"``, ``"2026-01-01,2026-01-03"``, ``"all"`` or a list.
        nproc: processes to spawn for DDP (gloo on CPU, NCCL with ``device="cuda"``); under torchrun
            the torchrun environment is used instead.
        builder: ``builder(name, schema, **config)`` instead of ``reference_models.build`` (tests,
            own models); must be picklable for ``nproc > 1``.
        callback: called with a :class:`StepInfo` after each step (single process only).
        overwrite: a fresh run into a folder holding checkpoints deletes them (else refused).
        options: further :class:`TrainConfig` fields (``limit``, ``eval_limit``, ``grad_clip``,
            ``weight_decay``, ``shuffle``, ``eval_batch_size``, ``find_unused_parameters``, ``save_initial``).

    Returns the :class:`TrainResult` (``None`` on non-zero torchrun ranks). Raises
    :class:`~ctrlens.train.config.TrainingError` (an InputError) on bad input or a non-finite loss.
    """
    ds = open_dataset(data_root)
    avail = list(ds.days())
    cfg = TrainConfig(
        model=model_name, days=parse_days(days, avail), out_dir=str(out_dir), epochs=epochs, batch_size=batch_size,
        lr=lr, optimizer=optimizer, seed=seed, device=device, checkpoint_every=checkpoint_every,
        resume_from=str(resume_from) if resume_from else None, init_from=str(init_from) if init_from else None,
        eval_days=parse_days(eval_days, avail, "--eval-days") if eval_days else (), max_steps=max_steps,
        model_config=dict(model_config or {}), **options,
    )
    cfg.validate()
    if builder is None:
        check_model_name(model_name)
    src = cfg.resume_from or cfg.init_from
    if src:  # fail before starting processes
        ck = read_checkpoint(src, mmap=True)
        from ctrlens.data.schema import Schema

        check_schema(src, ck["schema_hash"], Schema.from_dict(json.loads(ck["schema"]), source=f"checkpoint {src}"), ds.schema)
    tr = env_from_torchrun()
    if tr is None or tr.rank == 0:
        _check_out_dir(Path(cfg.out_dir), fresh=not src, overwrite=overwrite)
    if tr is not None and tr.world_size > 1:
        return run_worker(tr, cfg, data_root, builder, show_progress, callback)
    if nproc < 1:
        raise TrainingError(f"--nproc must be >= 1, got {nproc}")
    if cfg.batch_size % nproc:
        raise TrainingError(f"--batch-size {cfg.batch_size} is the global batch; it must be divisible by --nproc {nproc}")
    if nproc == 1:
        return run_worker(DistEnv(device=device), cfg, ds, builder, show_progress, callback)
    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n < nproc:
            raise TrainingError(f"--nproc {nproc} with --device cuda needs {nproc} GPUs; {n} visible")
    data = data_root if hasattr(data_root, "iter_batches") else str(data_root)
    spawn(_spawn_entry, nproc, (cfg, data, builder, show_progress), device=device)
    return TrainResult.load(cfg.out_dir)
