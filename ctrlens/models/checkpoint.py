"""Checkpoints: one self-describing file per training stage, written atomically.

A checkpoint (``torch.save`` of a plain dict, loadable with ``weights_only=True``) carries everything
needed to rebuild, trust and resume a model:

* ``model_name`` and ``config`` (the model's config dataclass as a dict) -- rebuilt with
  ``builder(name, schema, **config)``; the default builder is the reference models' (resolved by name
  through :data:`ctrlens.models.loader.DEFAULT_BUILDER`, never imported here);
* ``schema`` (JSON) and ``schema_hash`` -- a checkpoint is refused for data of another schema;
* ``days_seen`` (training days, in order, accumulated over incremental training) and ``step``;
* ``state_dict`` and ``weights_hash``: a sha256 of the weights and buffers (16 hex chars). It is the
  **model version** the store keys results by: same weights, same version, whatever the file name;
* ``optimizer`` state and ``rng`` states (torch, CUDA, numpy, python; one per DDP rank) for exact resume;
* ``extra``: free JSON-like context (the trainer puts its plan and data position there).

File names in a run directory are ``ckpt-step{step:09d}.pt``; :func:`latest_checkpoint` picks the
highest step.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ctrlens.data.schema import Schema
from ctrlens.errors import CtrlensError, InputError

FORMAT = "ctrlens-checkpoint"
FORMAT_VERSION = 1
CKPT_GLOB = "ckpt-step*.pt"


class CheckpointError(InputError):
    """A checkpoint file that cannot be used as asked (missing, corrupt, another schema)."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself (no tensors).

    Attributes:
        version: the weights hash, used as the model version by the store.
    """

    path: str
    model_name: str
    config: dict[str, Any]
    schema_hash: str
    days_seen: tuple[str, ...]
    step: int
    weights_hash: str
    created: str
    has_optimizer: bool
    extra: dict[str, Any] = field(default_factory=dict)
    torch_version: str = ""
    ctrlens_version: str = ""

    @property
    def version(self) -> str:
        return self.weights_hash


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    """The canonical file name of the checkpoint at ``step`` in a run directory."""
    return Path(out_dir) / f"ckpt-step{step:09d}.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module) and type(model).__name__ in (
        "DistributedDataParallel",
        "DataParallel",
    ):
        model = model.module
    return model


def weights_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 (16 hex chars) over names, dtypes, shapes and bytes of every tensor, in name order."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k]
        if not isinstance(t, torch.Tensor):
            h.update(f"{k}={t!r};".encode())
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# -- RNG states ------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The process' RNG states in a ``weights_only``-loadable form."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- save ------------------------------------------------------------------------------------------


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if is_dataclass(config) and not isinstance(config, type):
        return asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise CtrlensError(f"model config must be a dataclass or a dict, got {type(config).__name__}")


def model_identity(model: nn.Module) -> tuple[str | None, Any, Schema | None]:
    """``(name, config, schema)`` a reference model carries (``.name``/``.model_name``, ``.config``, ``.schema``)."""
    m = unwrap(model)
    name = getattr(m, "model_name", None) or getattr(m, "name", None)
    return (name if isinstance(name, str) else None), getattr(m, "config", None), getattr(m, "schema", None)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    step: int,
    days_seen: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    name: str | None = None,
    config: Any = None,
    schema: Schema | None = None,
    rng: Sequence[Mapping[str, Any]] | None = None,
) -> CheckpointInfo:
    """Write a checkpoint of ``model`` atomically (temporary file, then rename) and return its info.

    ``name``/``config``/``schema`` default to the model's ``name``, ``config`` and ``schema``
    attributes. ``rng`` is one RNG state per rank (default: this process' state). Refuses weights
    that are not finite, so a diverged model never overwrites a good stage.
    """
    m = unwrap(model)
    n0, c0, s0 = model_identity(m)
    name, config, schema = name or n0, config if config is not None else c0, schema or s0
    if not name:
        raise CtrlensError("save_checkpoint: the model has no .name/.model_name; pass name=")
    if schema is None:
        raise CtrlensError("save_checkpoint: the model has no .schema; pass schema=")
    sd = {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
    for k, v in sd.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CtrlensError(f"save_checkpoint: refusing to save non-finite weights ({k!r} has NaN/inf)")
    wh = weights_hash(sd)
    from ctrlens import __version__

    ck: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_name": name,
        "config": _config_dict(config),
        "schema": schema.to_json(),
        "schema_hash": schema.hash,
        "days_seen": list(days_seen),
        "step": int(step),
        "state_dict": sd,
        "weights_hash": wh,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": list(rng) if rng is not None else [rng_state()],
        "extra": dict(extra or {}),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": str(torch.__version__),
        "ctrlens_version": __version__,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(ck, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return _info(ck, path)


# -- read ------------------------------------------------------------------------------------------


def read_checkpoint(path: str | Path, map_location: Any = "cpu", *, mmap: bool = False) -> dict[str, Any]:
    """The raw checkpoint dict, validated as a ctrlens checkpoint."""
    p = Path(path)
    if not p.is_file():
        hint = ""
        if p.parent.is_dir():
            found = sorted(x.name for x in p.parent.glob("*.pt"))[:10]
            hint = f"; checkpoints in {p.parent}: {found}" if found else f"; {p.parent} holds no *.pt files"
        raise CheckpointError(f"checkpoint {p}: file not found{hint}")
    try:
        ck = torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # corrupt, truncated, or not a torch file
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"checkpoint {p}: cannot be read as a ctrlens checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {p}: not a ctrlens checkpoint (no '{FORMAT}' header); was it written by save_checkpoint?")
    if ck.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {p}: format version {ck['format_version']} is newer than this ctrlens reads ({FORMAT_VERSION})")
    return ck


def _info(ck: Mapping[str, Any], path: Path) -> CheckpointInfo:
    return CheckpointInfo(
        path=str(path),
        model_name=ck["model_name"],
        config=dict(ck["config"]),
        schema_hash=ck["schema_hash"],
        days_seen=tuple(ck["days_seen"]),
        step=int(ck["step"]),
        weights_hash=ck["weights_hash"],
        created=ck.get("created", ""),
        has_optimizer=ck.get("optimizer") is not None,
        extra=dict(ck.get("extra") or {}),
        torch_version=ck.get("torch_version", ""),
        ctrlens_version=ck.get("ctrlens_version", ""),
    )


def checkpoint_info(path: str | Path) -> CheckpointInfo:
    """What a checkpoint says about itself; tensors are memory-mapped, not read."""
    ck = read_checkpoint(path, mmap=True)
    return _info(ck, Path(path))


def checkpoint_schema(path: str | Path) -> Schema:
    """The schema a checkpoint was trained on."""
    ck = read_checkpoint(path, mmap=True)
    return Schema.from_dict(json.loads(ck["schema"]), source=f"checkpoint {path}")


def list_checkpoints(directory: str | Path) -> list[CheckpointInfo]:
    """Checkpoints of a run directory, by step (then file time)."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint directory {d}: not found")
    infos = []
    for p in d.glob("*.pt"):
        if p.name.startswith("."):
            continue  # an unfinished temporary write
        try:
            infos.append((checkpoint_info(p), p.stat().st_mtime))
        except CheckpointError:
            continue
    return [i for i, _ in sorted(infos, key=lambda t: (t[0].step, t[1]))]


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``directory`` (``None`` when there is none)."""
    infos = list_checkpoints(directory)
    return Path(infos[-1].path) if infos else None


# -- schema check and load ---------------------------------------------------------------------------


def schema_differences(saved: Schema, given: Schema) -> list[str]:
    """Human-readable differences between two schemas (fields added, removed, changed; labels; images)."""
    out: list[str] = []
    a = {f.name: f for f in saved.fields}
    b = {f.name: f for f in given.fields}
    for n in a.keys() - b.keys():
        out.append(f"field {n!r} only in the checkpoint's schema")
    for n in b.keys() - a.keys():
        out.append(f"field {n!r} only in the given schema")
    for n in a.keys() & b.keys():
        if a[n] != b[n]:
            da, db = asdict(a[n]), asdict(b[n])
            ch = [f"{k}: {da.get(k)!r} -> {db.get(k)!r}" for k in sorted(da.keys() | db.keys()) if da.get(k) != db.get(k)]
            out.append(f"field {n!r} changed ({'; '.join(ch)})")
    if [f.name for f in saved.fields if f.name in b] != [f.name for f in given.fields if f.name in a]:
        out.append("field order differs")
    for attr in ("labels", "image_table", "image_shape", "version"):
        if getattr(saved, attr) != getattr(given, attr):
            out.append(f"{attr}: {getattr(saved, attr)!r} -> {getattr(given, attr)!r}")
    return sorted(out)


def check_schema(path: str | Path, saved_hash: str, saved: Schema, given: Schema) -> None:
    """Raise :class:`CheckpointError` naming both hashes and the differing fields when they differ."""
    if given.hash == saved_hash:
        return
    diffs = schema_differences(saved, given) or ["no field-level difference found (hash of an older schema format?)"]
    raise CheckpointError(
        f"checkpoint {path} was trained on schema {saved_hash}, but the data's schema is {given.hash}: "
        + "; ".join(diffs)
        + ". Train a new model for this schema, or evaluate on data of the checkpoint's schema."
    )


Builder = Callable[..., nn.Module]


def build_model(name: str, schema: Schema, config: Mapping[str, Any] | None = None, builder: Builder | None = None) -> nn.Module:
    """``builder(name, schema, **config)``, by default the reference models' builder
    (:data:`ctrlens.models.loader.DEFAULT_BUILDER`)."""
    if builder is None:
        from ctrlens.models.loader import default_builder

        builder = default_builder()
    return builder(name, schema, **dict(config or {}))  # type: ignore[misc]


def load_checkpoint(
    path: str | Path,
    schema: Schema | None = None,
    map_location: Any = "cpu",
    *,
    builder: Builder | None = None,
) -> nn.Module:
    """Rebuild the model of a checkpoint and load its weights.

    Args:
        schema: the schema of the data the model will see; refused (:class:`CheckpointError` naming
            both hashes and the differing fields) when it is not the checkpoint's schema. ``None``
            uses the checkpoint's own schema.
        builder: ``builder(name, schema, **config) -> nn.Module``; default: the reference models'
            (:data:`ctrlens.models.loader.DEFAULT_BUILDER`). To load any checkpoint format through a
            ``ModelView``, see :func:`ctrlens.models.loader.load_model`.

    Returns the model in eval mode, with ``model.ctrlens_checkpoint`` set to its :class:`CheckpointInfo`.
    """
    ck = read_checkpoint(path, map_location=map_location)
    saved = Schema.from_dict(json.loads(ck["schema"]), source=f"checkpoint {path}")
    if schema is not None:
        check_schema(path, ck["schema_hash"], saved, schema)
    try:
        model = build_model(ck["model_name"], schema or saved, ck["config"], builder)
    except InputError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # a config value of the wrong type / shape
        config = dict(ck.get("config") or {})
        raise CheckpointError(
            f"checkpoint {path}: model {ck['model_name']!r} cannot be built from its stored config {config}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else e!r} (a config value of the wrong type?)"
        ) from None
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit model {ck['model_name']!r} built from its config "
            f"(was the model code changed since?): {str(e).splitlines()[0]}"
        ) from None
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    model.eval()
    model.ctrlens_checkpoint = _info(ck, Path(path))  # type: ignore[attr-defined]
    return model
