"""Training configuration and input checks that need no torch (days, model names, options)."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ctrlens.errors import InputError

#: The reference models; ``reference_models.build`` is the authority, this is for messages.
MODEL_NAMES: tuple[str, ...] = ("base", "din", "dicm", "esmm", "pal", "xdeepfm")
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd", "adagrad")


class TrainingError(InputError):
    """Training cannot go on: a non-finite loss, a checkpoint that does not fit, bad options."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        model: reference model name (built by the default builder, ``ctrlens.models.loader.DEFAULT_BUILDER``).
        days: training days in order; each epoch walks them in this order.
        out_dir: where checkpoints (``ckpt-step*.pt``) and ``train.json`` go.
        batch_size: the **global** batch; each of ``world_size`` ranks takes ``batch_size //
            world_size`` rows per step, so a DDP run matches a one-process run with this batch.
        checkpoint_every: save every this many (global) steps; a final checkpoint is always saved.
        resume_from: continue an interrupted run exactly (weights, optimizer, RNG, data position);
            days, batch size and seed must match the checkpoint's plan.
        init_from: warm start (incremental daily training): weights, optimizer state, step counter and
            days seen continue from the checkpoint; the data is this run's ``days``.
        eval_days: days evaluated at the end (``Result("quality")`` per day).
        max_steps: stop after this many steps of this run (counted from the run's first step).
        save_initial: also save the weights before the first step (``ckpt-step000000000.pt`` for a
            fresh run): the initial stage, e.g. for "embedding rows never updated" statistics.
        limit: rows per training day (quick runs); eval_limit: rows per eval day.
        model_config: overrides of the model's default config (``build(name, schema, **model_config)``).
    """

    model: str
    days: tuple[str, ...]
    out_dir: str
    epochs: int = 1
    batch_size: int = 1024
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int | None = None
    resume_from: str | None = None
    init_from: str | None = None
    eval_days: tuple[str, ...] = ()
    max_steps: int | None = None
    limit: int | None = None
    eval_limit: int | None = None
    eval_batch_size: int = 4096
    shuffle: bool = True
    grad_clip: float | None = None
    find_unused_parameters: bool = False
    save_initial: bool = False
    model_config: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.days:
            raise TrainingError("no training days given (--days YYYY-MM-DD[:YYYY-MM-DD])")
        if self.epochs < 1:
            raise TrainingError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise TrainingError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise TrainingError(f"--lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise TrainingError(f"--optimizer {self.optimizer!r} is not one of {list(OPTIMIZERS)}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise TrainingError(f"--checkpoint-every must be >= 1 step, got {self.checkpoint_every}")
        if self.max_steps is not None and self.max_steps < 1:
            raise TrainingError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.resume_from and self.init_from:
            raise TrainingError("give either --resume (continue the same run) or --init (warm start on new days), not both")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise TrainingError(f"--device must be 'cpu' or 'cuda', got {self.device!r}")

    def plan(self) -> dict[str, Any]:
        """What a resumed run must share with the run it resumes (stored in checkpoints)."""
        return {"days": list(self.days), "batch_size": self.batch_size, "seed": self.seed, "epochs": self.epochs,
                "lr": self.lr, "optimizer": self.optimizer, "shuffle": self.shuffle, "limit": self.limit}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["days"], d["eval_days"] = list(self.days), list(self.eval_days)
        return d


def _parse_day(s: str, what: str) -> _dt.date:
    try:
        return _dt.date.fromisoformat(s.strip())
    except ValueError:
        raise InputError(f"{what}: {s!r} is not a day (expected YYYY-MM-DD)") from None


def parse_days(spec: str | Sequence[str], available: Sequence[str], what: str = "--days") -> tuple[str, ...]:
    """Days from ``"A:B"`` (inclusive calendar range), ``"A,B,C"``, ``"all"`` or a list.

    Every day must exist in ``available``; a missing one is named with the available days listed.
    """
    avail = sorted(available)
    if isinstance(spec, str):
        spec = spec.strip()
        if spec == "all":
            if not avail:
                raise InputError(f"{what}: the dataset has no days")
            return tuple(avail)
        parts = [p for p in spec.split(",") if p.strip()]
    else:
        parts = list(spec)
    out: list[str] = []
    for part in parts:
        if ":" in part:
            a, b = part.split(":", 1)
            d0, d1 = _parse_day(a, what), _parse_day(b, what)
            if d1 < d0:
                raise InputError(f"{what}: range {part!r} ends before it starts")
            out += [(d0 + _dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]
        else:
            out.append(_parse_day(part, what).isoformat())
    missing = [d for d in out if d not in set(avail)]
    if missing:
        shown = _summarise_days(avail)
        raise InputError(f"{what}: day(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} not in the dataset; available days: {shown}")
    seen: set[str] = set()
    return tuple(d for d in out if not (d in seen or seen.add(d)))


def _summarise_days(days: Sequence[str]) -> str:
    if not days:
        return "none"
    if len(days) <= 8:
        return ", ".join(days)
    return f"{days[0]} .. {days[-1]} ({len(days)} days)"


def check_model_name(name: str) -> None:
    """Refuse a model name the reference models' builder does not know, listing the valid ones."""
    from ctrlens.models.loader import reference_model_names

    valid = list(reference_model_names() or MODEL_NAMES)
    if name not in valid:
        raise InputError(f"--model {name!r}: no such model; valid models: {', '.join(valid)}")
