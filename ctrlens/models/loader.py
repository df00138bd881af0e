"""Model loaders: how ctrlens turns a checkpoint file (any format) into a :class:`ModelView`.

A *loader* is a function the user writes::

    def load(checkpoint: pathlib.Path, schema: ctrlens.data.Schema) -> ctrlens.ModelView:
        model = MyCTR(...)
        model.load_state_dict(torch.load(checkpoint, map_location="cpu"))
        return ctrlens.attach(model, forward=..., fields={...}, layers={...}, heads={...})

and names by a *loader spec*: ``"package.module:function"`` (importable from ``sys.path``) or
``"path/to/file.py:function"`` (a file; relative paths are relative to the nightly config's folder,
or to the working directory on the command line; the file's folder is put on ``sys.path`` so it can
import its neighbours). The reference models are one loader among others,
:data:`DEFAULT_LOADER`, used when no loader is given.

:func:`load_model` resolves the spec, calls the function, checks what came back (a ``ModelView``
whose fields, heads and taps fit the data's schema: one forward on a few random rows of the schema)
and records the checkpoint's identity on ``view.checkpoint`` (a
:class:`~ctrlens.models.checkpoint.CheckpointInfo`):

* **version** (the store's model version): a ctrlens checkpoint (``ctrlens train``) keeps its weights
  hash; any other file is identified by the sha256 of its bytes (a directory: of its files' names and
  bytes), 16 hex chars;
* **days seen** (which days the checkpoint can serve, for ``checkpoint_dir``): see
  :func:`served_days` -- a sidecar file ``<checkpoint>.json``, a date in the file name matched by a
  ``checkpoint_pattern``, or the header of a ctrlens checkpoint.

Every failure is a :class:`LoaderError` (an :class:`~ctrlens.errors.InputError`: exit code 2) naming
the spec, the checkpoint and what was expected.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ctrlens.errors import InputError

#: The loader of the reference models (``ctrlens train`` checkpoints); the default everywhere.
DEFAULT_LOADER = "reference_models.loader:load"
#: ``builder(name, schema, **config) -> nn.Module`` that rebuilds a reference model from its config.
DEFAULT_BUILDER = "reference_models.loader:build"
#: Sidecar file next to a checkpoint that says which days it was trained on (see :func:`served_days`).
SIDECAR_SUFFIX = ".json"

LoaderFn = Callable[[Path, Any], Any]


class LoaderError(InputError):
    """A loader that cannot be used: not found, failing, or returning a view that does not fit the data."""


# ------------------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class Loader:
    """A resolved loader: ``spec`` as given (file paths made absolute) and the function."""

    spec: str
    fn: LoaderFn

    @property
    def is_default(self) -> bool:
        return self.spec == DEFAULT_LOADER

    def __call__(self, checkpoint: str | Path, schema: Any, *, device: str = "cpu", check: bool = True) -> Any:
        return load_model(checkpoint, schema, self, device=device, check=check)


def _split(spec: str, what: str) -> tuple[str, str]:
    if not isinstance(spec, str) or ":" not in spec.strip():
        raise LoaderError(
            f"{what} {spec!r}: expected 'package.module:function' or 'path/to/file.py:function'"
        )
    mod, _, fn = spec.strip().rpartition(":")
    if not mod or not fn or not fn.isidentifier():
        raise LoaderError(
            f"{what} {spec!r}: expected 'package.module:function' or 'path/to/file.py:function' "
            f"(the part after the last ':' must be a function name)"
        )
    return mod, fn


def _is_file_spec(mod: str) -> bool:
    return mod.endswith(".py") or "/" in mod or "\\" in mod


def normalize_spec(spec: str, base: str | Path | None = None, what: str = "loader") -> str:
    """``spec`` with a relative ``.py`` path made absolute against ``base`` (default: the working
    directory); a module spec is returned as is. Does not import anything."""
    mod, fn = _split(spec, what)
    if _is_file_spec(mod):
        p = Path(mod).expanduser()
        if not p.is_absolute():
            p = Path(base or Path.cwd()) / p
        return f"{p.resolve()}:{fn}"
    return f"{mod}:{fn}"


def _import_file(path: Path, spec: str, what: str) -> Any:
    if not path.is_file():
        raise LoaderError(f"{what} {spec!r}: file {path} not found")
    name = "ctrlens_loader_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    folder = str(path.parent)
    if folder not in sys.path:  # so the loader file can import the model module next to it
        sys.path.insert(0, folder)
    ispec = importlib.util.spec_from_file_location(name, path)
    if ispec is None or ispec.loader is None:
        raise LoaderError(f"{what} {spec!r}: {path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(ispec)
    sys.modules[name] = module  # before exec: dataclasses / pickling look the module up by name
    try:
        ispec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise LoaderError(f"{what} {spec!r}: importing {path} failed: {type(e).__name__}: {_first_line(e)}") from e
    return module


def _import_module(mod: str, spec: str, what: str) -> Any:
    try:
        return importlib.import_module(mod)
    except ModuleNotFoundError as e:
        if e.name and (mod == e.name or mod.startswith(e.name + ".")):
            raise LoaderError(
                f"{what} {spec!r}: module {mod!r} not found (is its package installed, or its folder on PYTHONPATH? "
                f"A file is named by its path: 'path/to/file.py:function')"
            ) from None
        raise LoaderError(f"{what} {spec!r}: importing module {mod!r} failed: {type(e).__name__}: {_first_line(e)}") from e
    except Exception as e:
        raise LoaderError(f"{what} {spec!r}: importing module {mod!r} failed: {type(e).__name__}: {_first_line(e)}") from e


def resolve_function(spec: str, *, base: str | Path | None = None, what: str = "loader") -> Callable[..., Any]:
    """The function a ``"module:function"`` / ``"file.py:function"`` spec names (imported now)."""
    full = normalize_spec(spec, base, what)
    mod, fn = _split(full, what)
    module = _import_file(Path(mod), spec, what) if _is_file_spec(mod) else _import_module(mod, spec, what)
    obj = getattr(module, fn, None)
    if obj is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                        and getattr(v, "__module__", None) == module.__name__)  # fmt: skip
        raise LoaderError(f"{what} {spec!r}: {mod} has no function {fn!r}; its functions: {public}")
    if not callable(obj):
        raise LoaderError(f"{what} {spec!r}: {mod}.{fn} is a {type(obj).__name__}, not a function")
    return obj


def resolve_loader(loader: str | Loader | LoaderFn | None = None, *, base: str | Path | None = None) -> Loader:
    """A :class:`Loader` from a spec string, a function, a :class:`Loader` or ``None`` (the default)."""
    if isinstance(loader, Loader):
        return loader
    if loader is None:
        loader = DEFAULT_LOADER
    if callable(loader):
        name = f"{getattr(loader, '__module__', '?')}:{getattr(loader, '__qualname__', type(loader).__name__)}"
        return Loader(name, loader)
    spec = normalize_spec(loader, base)
    return Loader(spec, resolve_function(spec))


# ------------------------------------------------------------------------------------- identity


def content_hash(path: str | Path) -> str:
    """sha256 (16 hex chars) of a file's bytes; of a directory: every file's relative path and bytes."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
    for f in files:
        if p.is_dir():
            h.update(f"{f.relative_to(p).as_posix()}\0".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _day(v: Any, where: str) -> _dt.date:
    s = str(v).strip()
    if re.fullmatch(r"\d{8}", s):
        s = f"{s[:4]}-{s[4:6]}-{s[6:]}"
    try:
        return _dt.date.fromisoformat(s)
    except ValueError:
        raise LoaderError(f"{where}: {v!r} is not a day (expected YYYY-MM-DD or YYYYMMDD)") from None


def _days_seen_from(served_from: _dt.date | None = None, trained_through: _dt.date | None = None) -> tuple[str, ...]:
    """ctrlens' rule is "a checkpoint serves the days after the last day it was trained on"."""
    if served_from is not None:
        return ((served_from - _dt.timedelta(days=1)).isoformat(),)
    assert trained_through is not None
    return (trained_through.isoformat(),)


def sidecar_path(checkpoint: str | Path) -> Path:
    """``<checkpoint>.json`` (e.g. ``model-0105.pt.json``), next to the checkpoint."""
    p = Path(checkpoint)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def read_sidecar(checkpoint: str | Path) -> tuple[str, ...] | None:
    """Days seen from ``<checkpoint>.json``: ``{"served_from": day}``, ``{"trained_through": day}`` or
    ``{"days_seen": [days]}`` (exactly one); ``None`` without a sidecar."""
    sc = sidecar_path(checkpoint)
    if not sc.is_file():
        return None
    try:
        d = json.loads(sc.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LoaderError(f"checkpoint sidecar {sc}: not valid JSON ({e})") from None
    keys = [k for k in ("served_from", "trained_through", "days_seen") if isinstance(d, Mapping) and k in d]
    if len(keys) != 1:
        raise LoaderError(f"checkpoint sidecar {sc}: expected exactly one of 'served_from', 'trained_through' or "
                          f"'days_seen', got {sorted(d) if isinstance(d, Mapping) else type(d).__name__}")  # fmt: skip
    k = keys[0]
    where = f"checkpoint sidecar {sc}: {k}"
    if k == "days_seen":
        if not isinstance(d[k], list) or not d[k]:
            raise LoaderError(f"{where}: expected a non-empty list of days")
        return tuple(sorted({_day(x, where).isoformat() for x in d[k]}))
    return _days_seen_from(**{k: _day(d[k], where)})


def pattern_regex(pattern: str, what: str = "checkpoint_pattern") -> re.Pattern[str]:
    """A file-name pattern with exactly one ``{served_from}`` or ``{trained_through}`` and ``*``
    wildcards (``"model-{served_from}.pt"``) as a regex with the group ``served_from`` /
    ``trained_through`` matching ``YYYY-MM-DD`` or ``YYYYMMDD``."""
    slots = re.findall(r"\{(\w+)\}", pattern)
    if len(slots) != 1 or slots[0] not in ("served_from", "trained_through"):
        raise LoaderError(f"{what} {pattern!r}: expected a file name with exactly one '{{served_from}}' or "
                          f"'{{trained_through}}' (e.g. 'model-{{served_from}}.pt'), found {slots or 'none'}")  # fmt: skip
    if "/" in pattern:
        raise LoaderError(f"{what} {pattern!r}: a file name pattern, without folders")
    out = ""
    for part in re.split(r"(\{\w+\}|\*)", pattern):
        if part == "*":
            out += ".*"
        elif part.startswith("{") and part.endswith("}"):
            out += rf"(?P<{part[1:-1]}>\d{{4}}-\d{{2}}-\d{{2}}|\d{{8}})"
        else:
            out += re.escape(part)
    return re.compile(out + r"\Z")


def served_days(checkpoint: str | Path, pattern: str | None = None) -> tuple[str, ...] | None:
    """The days a checkpoint was trained on, as far as ctrlens can tell without loading it:

    1. a ``checkpoint_pattern`` date in the file name (``{served_from}``: the first day it served, so it
       was trained through the day before; ``{trained_through}``: its last training day);
    2. else a sidecar ``<checkpoint>.json`` (:func:`read_sidecar`);
    3. else the header of a ctrlens checkpoint (``days_seen``, written by ``ctrlens train``).

    ``None`` when none of them says.
    """
    p = Path(checkpoint)
    if pattern:
        m = pattern_regex(pattern).match(p.name)
        if m:
            k, v = next((k, v) for k, v in m.groupdict().items() if v)
            return _days_seen_from(**{k: _day(v, f"checkpoint {p}: {k} in its name")})
    side = read_sidecar(p)
    if side is not None:
        return side
    if p.is_file():
        from ctrlens.models.checkpoint import CheckpointError, checkpoint_info

        try:
            return checkpoint_info(p).days_seen or None
        except CheckpointError:
            return None
    return None


@dataclass(frozen=True)
class Served:
    """A candidate checkpoint of a ``checkpoint_dir`` and the days it was trained on."""

    path: Path
    days_seen: tuple[str, ...]

    @property
    def trained_through(self) -> str:
        return max(self.days_seen)


def list_served(directory: str | Path, pattern: str | None = None) -> list[Served]:
    """Checkpoints of a folder of a daily retrained model that say which days they were trained on
    (:func:`served_days`), ordered by their last training day (then name).

    With ``pattern`` only matching file names are candidates; without it, every entry (file or
    folder) that has a sidecar or is a ctrlens checkpoint. Hidden files (unfinished writes) and the
    sidecars themselves are never candidates.
    """
    d = Path(directory)
    if not d.is_dir():
        raise LoaderError(f"checkpoint_dir {d}: not found")
    rx = pattern_regex(pattern) if pattern else None
    out: list[Served] = []
    for p in sorted(d.iterdir()):
        if p.name.startswith(".") or p.name.endswith(SIDECAR_SUFFIX):
            continue
        if rx is not None and not rx.match(p.name):
            continue
        days = served_days(p, pattern)
        if days:
            out.append(Served(p, days))
    return sorted(out, key=lambda s: (s.trained_through, s.path.name))


# ------------------------------------------------------------------------------------- loading


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def load_model(
    checkpoint: str | Path,
    schema: Any,
    loader: str | Loader | LoaderFn | None = None,
    *,
    device: str = "cpu",
    check: bool = True,
    pattern: str | None = None,
) -> Any:
    """Load ``checkpoint`` with ``loader`` for data of ``schema`` and return its checked ``ModelView``.

    Args:
        checkpoint: the checkpoint file (or folder), passed to the loader as a :class:`~pathlib.Path`.
        schema: the data's :class:`~ctrlens.data.schema.Schema`, passed to the loader.
        loader: a spec (``"pkg.mod:fn"`` / ``"file.py:fn"``), a function, or ``None`` for
            :data:`DEFAULT_LOADER` (the reference models).
        device: the model is moved there and put in eval mode.
        check: run :func:`check_view` (one forward on 4 random rows of ``schema``).
        pattern: a ``checkpoint_pattern`` telling the days from the file name (:func:`served_days`).

    Returns the view with ``view.checkpoint`` set (:class:`~ctrlens.models.checkpoint.CheckpointInfo`;
    a loader may set it itself, as the reference loader does).
    """
    from ctrlens.models.checkpoint import CheckpointInfo
    from ctrlens.models.interface import ModelView

    ld = resolve_loader(loader)
    path = Path(checkpoint)
    if not path.exists():
        hint = ""
        if path.parent.is_dir():
            found = sorted(x.name for x in path.parent.iterdir() if not x.name.startswith("."))[:10]
            hint = f"; {path.parent} holds {found}"
        raise LoaderError(f"checkpoint {path}: not found{hint}")
    try:
        view = ld.fn(path, schema)
    except InputError as e:
        if ld.is_default:
            raise  # the reference loader's own errors (another schema, corrupt file) are already clear
        raise LoaderError(f"loader {ld.spec!r} failed on checkpoint {path}: {e}") from e
    except Exception as e:
        raise LoaderError(f"loader {ld.spec!r} failed on checkpoint {path}: {type(e).__name__}: {_first_line(e)}") from e
    if not isinstance(view, ModelView):
        hint = ""
        try:
            from torch import nn

            if isinstance(view, nn.Module):
                hint = "; describe the module with ctrlens.attach(model, forward=..., fields=..., layers=...) and return that view"
        except ImportError:  # pragma: no cover
            pass
        raise LoaderError(f"loader {ld.spec!r} returned a {type(view).__name__} for checkpoint {path}, "
                          f"not a ctrlens ModelView{hint}")  # fmt: skip
    view.model.to(device)
    view.model.eval()
    if check:
        check_view(view, schema, where=f"loader {ld.spec!r}, checkpoint {path}")
    if view.checkpoint is None:
        info = getattr(view.model, "ctrlens_checkpoint", None)
        if isinstance(info, CheckpointInfo):
            view.checkpoint = info
        else:
            st = path.stat()
            view.checkpoint = CheckpointInfo(
                path=str(path), model_name=view.name, config={}, schema_hash=schema.hash,
                days_seen=served_days(path, pattern) or (), step=0, weights_hash=content_hash(path),
                created=_dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc).isoformat(timespec="seconds"),
                has_optimizer=False, extra={"loader": ld.spec},
            )  # fmt: skip
    return view


def check_view(view: Any, schema: Any, *, where: str = "model view", rows: int = 4) -> None:
    """Check that ``view`` fits data of ``schema``; raise :class:`LoaderError` naming what does not.

    * every field of the view is a schema field, every head's label a schema label;
    * every tapped module (fields, layers) and table is part of ``view.model`` (a view built on
      another instance of the model would watch nothing);
    * one forward on ``rows`` random rows of the schema (:func:`ctrlens.data.random_batch`) runs,
      every tap fires with a batch-first tensor, and every head's output is a ``[B]`` tensor.
    """
    import torch

    from ctrlens.data.random import random_batch
    from ctrlens.models.taps import TapSession

    names = set(schema.names)
    bad = sorted(set(view.fields) - names)
    if bad:
        raise LoaderError(f"{where}: the view's field(s) {bad} are not in the data's schema; schema fields: {list(schema.names)}")
    labels = set(schema.labels)
    if not view.heads:
        raise LoaderError(f"{where}: the view has no heads; name at least one, e.g. heads={{'ctr': 'click'}}")
    for h, spec in view.heads.items():
        if spec.label is None:
            continue
        need = str(spec.label).split("*") + (["click"] if spec.rows == "clicked" else [])
        missing = [lab for lab in need if lab not in labels]
        if missing:
            raise LoaderError(f"{where}: head {h!r} predicts label {spec.label!r}, but the data has no label "
                              f"{missing[0]!r}; labels: {list(schema.labels)}")  # fmt: skip
    own = {id(m) for m in view.model.modules()}
    taps = {**{f"field {k!r}": v.tap for k, v in view.fields.items()}, **{f"layer {k!r}": v.tap for k, v in view.layers.items()}}
    for what, tap in taps.items():
        if id(tap.module) not in own:
            raise LoaderError(f"{where}: {what} taps a {type(tap.module).__name__} that is not part of the view's model "
                              f"(was the view attached to another instance of the model?)")  # fmt: skip
    for t, m in view.tables.items():
        if id(m) not in own:
            raise LoaderError(f"{where}: table {t!r} is not part of the view's model")
    batch = random_batch(schema, rows, seed=0).to(view.device)
    shapes: dict[str, tuple[int, ...]] = {}

    def cb(ev: Any) -> None:
        shapes[ev.name] = tuple(ev.output.shape)

    all_taps = {**{f"field {k!r}": v for k, v in view.fields.items()}, **{f"layer {k!r}": v for k, v in view.layers.items()}}
    try:
        with torch.no_grad(), TapSession(view, all_taps, cb) as s:
            out = s.forward(batch)
    except Exception as e:
        raise LoaderError(f"{where}: the view's forward failed on {rows} random rows of the data's schema: "
                          f"{type(e).__name__}: {_first_line(e)}") from e  # fmt: skip
    for name, shp in shapes.items():
        if not shp or shp[0] != rows:
            raise LoaderError(f"{where}: {name} output has shape {list(shp)} on a batch of {rows} rows; expected "
                              f"batch-first [B, ...] (tap a module that returns one per-row tensor)")  # fmt: skip
    if not isinstance(out, Mapping):
        raise LoaderError(f"{where}: forward(model, batch) returned a {type(out).__name__}, expected a dict of named outputs")
    for h, spec in view.heads.items():
        y = out.get(spec.output)
        if y is None:
            raise LoaderError(f"{where}: head {h!r}: forward returned no output {spec.output!r}; outputs: {sorted(out)}")
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (rows,):
            shp = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise LoaderError(f"{where}: head {h!r}: output {spec.output!r} is {shp} on {rows} rows; expected a [B] "
                              f"probability (squeeze a [B, 1] output)")  # fmt: skip


# ------------------------------------------------------------------------------------- reference models


def default_builder() -> Callable[..., Any]:
    """``reference_models``' builder, found through :data:`DEFAULT_BUILDER` (no import of it here)."""
    return resolve_function(DEFAULT_BUILDER, what="builder")


def reference_model_names() -> tuple[str, ...]:
    """The reference models' names (``()`` when the ``reference_models`` package is not installed)."""
    try:
        mod = sys.modules.get(DEFAULT_BUILDER.partition(":")[0]) or importlib.import_module(DEFAULT_BUILDER.partition(":")[0])
    except ImportError:
        return ()
    return tuple(getattr(mod, "MODEL_NAMES", ()))


__all__ = [
    "DEFAULT_BUILDER",
    "DEFAULT_LOADER",
    "Loader",
    "LoaderError",
    "Served",
    "check_view",
    "content_hash",
    "list_served",
    "load_model",
    "normalize_spec",
    "pattern_regex",
    "read_sidecar",
    "resolve_function",
    "resolve_loader",
    "served_days",
    "sidecar_path",
]
