"""The nightly job's configuration: one YAML file, read into small frozen dataclasses.

Every mistake is an :class:`~ctrlens.errors.InputError` that names the key (``models[1].rows.probes``)
and says what was expected, before anything touches the database. See ``docs/nightly.md`` for the
reference of every key and why the defaults are what they are.

::

    db: sqlite:///runs/ctrlens.sqlite
    data: /data/world
    reference: {kind: trailing, days: 7}
    thresholds: {k: 4, persistence: 1}
    models:
      - name: din-prod
        checkpoint_dir: runs/din          # the latest checkpoint trained before each day
        heads: [ctr]
        rows: {neurons: 20000, probes: 20000, saliency: 5000}
      - name: my-ctr                      # a model ctrlens did not write (docs/own-model.md)
        loader: models/my_loader.py:load  # checkpoint path + schema -> ModelView
        checkpoint_dir: /models/my-ctr
        checkpoint_pattern: "my-ctr-{served_from}.pt"
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from ctrlens.errors import InputError
from ctrlens.notify.config import NotifyConfig, parse_notify

SALIENCY_METHODS = ("saliency", "input_x_gradient", "integrated_gradients")
RUN_KIND = "nightly"
#: A watched model's name: it becomes a folder of report_dir, so no separators, no "..", no spaces.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class ConfigError(InputError):
    """A nightly configuration that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Rows:
    """Rows sampled per day for each analysis (a seeded sample of the day; the day itself if smaller).

    Attributes:
        neurons: rows of the one hooked pass giving neuron/layer statistics, embedding health and
            the quality metrics; the permutation importance and field dependences use the same
            rows (``0``: the whole day).
        probes: training rows of the probes (a held-out quarter more is scored; ``0``: no probes).
        saliency: rows attributed with the gradient method (``0``: no saliency).
    """

    neurons: int = 20_000
    probes: int = 10_000
    saliency: int = 4_000


@dataclass(frozen=True)
class ModelWatch:
    """One production model to watch.

    Attributes:
        name: the model's name in the store (one name per served model; versions are checkpoints).
        checkpoint: a checkpoint file (or folder, for a loader that reads one), or
        checkpoint_dir: a directory of checkpoints of a daily retrained model: for each day the
            checkpoint trained only on earlier days that was trained last (the one that served it).
            Which days a checkpoint was trained on: :func:`ctrlens.models.loader.served_days`.
        loader: ``"package.module:function"`` or ``"path/to/file.py:function"`` (relative to the
            config's folder): ``function(checkpoint path, schema) -> ModelView``; ``None``: the
            reference models' loader (``ctrlens train`` checkpoints).
        checkpoint_pattern: with ``checkpoint_dir``, a file-name pattern with one ``{served_from}``
            or ``{trained_through}`` date (``"my-ctr-{served_from}.pt"``): only matching files are
            candidates, and the date says which days each one serves.
        heads: heads to evaluate, probe and attribute (default: every head with a label).
        rows: sample sizes.
        saliency_method: ``input_x_gradient`` (default, with each day's mean embedding as baseline:
            ranks fields like permutation importance, docs/saliency.md), ``saliency`` (|gradient|)
            or ``integrated_gradients``. The same as ``ctrlens.saliency.DEFAULT_METHOD``.
        layers: layer names / glob patterns to watch (default: all of the model's).
        permutation: also measure each field's permutation importance on the hooked-pass sample
            (one extra forward per field; with the field dependences, what tells a shuffled column).
    """

    name: str
    checkpoint: Path | None = None
    checkpoint_dir: Path | None = None
    loader: str | None = None
    checkpoint_pattern: str | None = None
    heads: tuple[str, ...] | None = None
    rows: Rows = field(default_factory=Rows)
    saliency_method: str = "input_x_gradient"  # ctrlens.saliency.DEFAULT_METHOD (not imported: no captum here)
    layers: tuple[str, ...] | None = None
    permutation: bool = True


@dataclass(frozen=True)
class Reference:
    """What today is compared with.

    Attributes:
        kind: ``trailing`` (the ``days`` most recent computed days before today) or ``fixed``
            (a baseline window: the listed days).
        days: trailing: the number of days; fixed: the list of days.
        min_days: fewer reference days than this: no test alerts (warm-up), values are still stored.
    """

    kind: str = "trailing"
    days: int | tuple[str, ...] = 7
    min_days: int = 5


@dataclass(frozen=True)
class Thresholds:
    """Drift thresholds (see ``docs/nightly.md``, "Thresholds").

    Attributes:
        k: a statistic alerts when it leaves ``reference mean +- k * spread``; spread is the reference
            days' standard deviation, floored per statistic so a flat reference does not alert on noise.
        persistence: days in a row a drift must last before a finding is raised (1 = at once).
            Findings at twice their threshold or more are raised at once whatever this says.
        neuron_k: the per-neuron ``k`` (a neuron "moves" when its PSI leaves its own band).
        neuron_fraction: a layer alerts when its share of moving neurons exceeds the reference days'
            share by more than this (absolute) and by ``k`` reference spreads: false-discovery control
            across thousands of neurons.
        rel_floor: a distance (PSI, JS, Wasserstein) must exceed ``(1 + k * rel_floor)`` times its
            usual value: the relative floor of its spread.
        floors: statistic -> absolute floor of the spread, overriding the defaults.
    """

    k: float = 4.0
    persistence: int = 1
    neuron_k: float = 4.0
    neuron_fraction: float = 0.1
    rel_floor: float = 0.5
    floors: tuple[tuple[str, float], ...] = ()

    def floor(self, statistic: str, default: float) -> float:
        return dict(self.floors).get(statistic, default)


@dataclass(frozen=True)
class NightlyConfig:
    """The whole configuration (see the module docstring for the YAML form).

    Attributes:
        db: database URL (``sqlite:///path`` or ``postgresql://...``).
        data: dataset root (``schema.json`` + ``day=YYYY-MM-DD/``).
        models: the models to watch.
        reference, thresholds: the drift tests.
        exit_on_alert: exit code 1 when the run opened new alerts (cron mails it); ``false``: 0.
        report_dir: where daily reports go; default ``<database folder>/reports`` (SQLite) or
            ``./reports``; ``""`` turns reports off.
        device: ``cpu`` or ``cuda[:N]``.
        batch_size: rows per forward pass.
        seed: seeds every sample (same seed, same rows, same numbers).
        lock_ttl_s: a model-day lock is a lease renewed by a heartbeat every ``lock_ttl_s / 4``
            seconds while its day is computed; one not renewed for ``lock_ttl_s`` seconds (its job
            was killed, or its host died) is taken over. On the same host a dead job's lock is taken
            over at once.
        lock_wait_s: how long a job waits for a model-day another live job is computing (it then
            skips the day as done, or computes it); after this, the day is ``locked`` (exit 3).
        source: the file the configuration came from (for messages).
        notify: notification channels, the dashboard's base URL and the metrics textfile
            (``notify:`` and ``metrics:``, see :mod:`ctrlens.notify.config`).
    """

    db: str
    data: Path
    models: tuple[ModelWatch, ...]
    reference: Reference = field(default_factory=Reference)
    thresholds: Thresholds = field(default_factory=Thresholds)
    exit_on_alert: bool = True
    report_dir: Path | None = None
    reports: bool = True
    device: str = "cpu"
    batch_size: int = 4096
    seed: int = 0
    lock_ttl_s: float = 60.0
    lock_wait_s: float = 3600.0
    source: str = "config"
    notify: NotifyConfig = field(default_factory=NotifyConfig)

    def model(self, name: str) -> ModelWatch:
        for m in self.models:
            if m.name == name:
                return m
        raise ConfigError(f"{self.source}: no model named {name!r}; models: {[m.name for m in self.models]}")

    def with_(self, **changes: Any) -> "NightlyConfig":
        return replace(self, **changes)


# ------------------------------------------------------------------------------------- parsing


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


class _Reader:
    """Checks one mapping of the YAML and remembers the keys used, to refuse unknown ones."""

    def __init__(self, d: Any, where: str, source: str):
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: {where or 'the file'} must be a mapping (key: value), got {_type_name(d)}")
        self.d, self.where, self.source = d, where, source
        self.used: set[str] = set()

    def key(self, k: str) -> str:
        return f"{self.where}.{k}" if self.where else k

    def err(self, k: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key(k)}: {msg}")

    def has(self, k: str) -> bool:
        return k in self.d and self.d[k] is not None

    def raw(self, k: str, default: Any = None) -> Any:
        self.used.add(k)
        return self.d.get(k, default)

    def required(self, k: str) -> Any:
        self.used.add(k)
        if k not in self.d or self.d[k] in (None, ""):
            raise ConfigError(f"{self.source}: {self.key(k)} is required")
        return self.d[k]

    def string(self, k: str, default: str | None = None, *, required: bool = False) -> str | None:
        v = self.required(k) if required else self.raw(k, default)
        if v is None:
            return None
        if not isinstance(v, str) or not v.strip():
            raise self.err(k, f"expected a non-empty string, got {v!r}")
        return v.strip()

    def number(self, k: str, default: float, *, lo: float | None = None, hi: float | None = None, integer: bool = False,
               lo_open: bool = False) -> Any:  # fmt: skip
        v = self.raw(k, default)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if ok and integer and float(v) != int(v):
            ok = False
        if not ok:
            raise self.err(k, f"expected {'an integer' if integer else 'a number'}, got {v!r}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise self.err(k, f"must be {'>' if lo_open else '>='} {lo}, got {v!r}")
        if hi is not None and v > hi:
            raise self.err(k, f"must be <= {hi}, got {v!r}")
        return int(v) if integer else float(v)

    def boolean(self, k: str, default: bool) -> bool:
        v = self.raw(k, default)
        if not isinstance(v, bool):
            raise self.err(k, f"expected true or false, got {v!r}")
        return v

    def names(self, k: str) -> tuple[str, ...] | None:
        v = self.raw(k)
        if v is None:
            return None
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip() for x in v):
            raise self.err(k, f"expected a list of names, got {v!r}")
        return tuple(x.strip() for x in v)

    def sub(self, k: str) -> "_Reader":
        v = self.raw(k, {})
        return _Reader({} if v is None else v, self.key(k), self.source)

    def done(self) -> None:
        unknown = sorted(set(map(str, self.d)) - self.used)
        if unknown:
            raise ConfigError(
                f"{self.source}: {self.where or 'top level'}: unknown key(s) {unknown}; "
                f"known keys: {sorted(self.used)}"
            )


def _day(v: Any, where: str, source: str) -> str:
    if isinstance(v, dt.date):
        return v.isoformat()
    try:
        return dt.date.fromisoformat(str(v)).isoformat()
    except ValueError:
        raise ConfigError(f"{source}: {where}: {v!r} is not a day (expected YYYY-MM-DD)") from None


def _path(v: Any, base: Path) -> Path:
    p = Path(str(v)).expanduser()
    return p if p.is_absolute() else (base / p)


def _db_url(v: str, base: Path) -> str:
    """A relative SQLite path is relative to the config file (cron runs from anywhere)."""
    if "://" not in v:
        return f"sqlite:///{_path(v, base)}"
    if v.startswith("sqlite:///") and not v.startswith("sqlite:////"):
        rest = v[len("sqlite:///"):]
        if rest and rest != ":memory:" and not rest.startswith("file:"):
            return f"sqlite:///{_path(rest, base)}"
    return v


def parse_config(d: Any, *, source: str = "config", base: Path | None = None) -> NightlyConfig:
    """A :class:`NightlyConfig` from the parsed YAML ``d``; relative paths are relative to ``base``."""
    base = base or Path.cwd()
    top = _Reader(d, "", source)
    db = _db_url(top.string("db", required=True), base)  # type: ignore[arg-type]
    data = _path(top.string("data", required=True), base)

    rr = top.sub("reference")
    kind = rr.string("kind", "trailing")
    if kind not in ("trailing", "fixed"):
        raise rr.err("kind", f"expected 'trailing' or 'fixed', got {kind!r}")
    raw_days = rr.raw("days", 7 if kind == "trailing" else None)
    if kind == "trailing":
        if not isinstance(raw_days, int) or isinstance(raw_days, bool) or raw_days < 1:
            raise rr.err("days", f"for kind 'trailing': the number of days before today, an integer >= 1; got {raw_days!r}")
        ref_days: int | tuple[str, ...] = int(raw_days)
    else:
        if not isinstance(raw_days, list) or not raw_days:
            raise rr.err("days", f"for kind 'fixed': a list of baseline days (YYYY-MM-DD); got {raw_days!r}")
        ref_days = tuple(sorted({_day(x, rr.key("days"), source) for x in raw_days}))
    min_days = rr.number("min_days", 5, lo=2, integer=True)
    n_ref = ref_days if isinstance(ref_days, int) else len(ref_days)
    if min_days > n_ref:  # the tests would never have enough reference days: nothing could ever alert
        raise rr.err("min_days", f"{min_days} is more than the {n_ref} reference day(s) of reference.days: "
                                 f"no drift test could ever alert; lower min_days or add reference days")  # fmt: skip
    rr.done()
    reference = Reference(kind, ref_days, min_days)  # type: ignore[arg-type]

    tr = top.sub("thresholds")
    floors_raw = tr.raw("floors", {}) or {}
    if not isinstance(floors_raw, Mapping):
        raise tr.err("floors", f"expected a mapping statistic -> floor, got {floors_raw!r}")
    floors = []
    for s, v in floors_raw.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
            raise tr.err(f"floors.{s}", f"expected a number >= 0, got {v!r}")
        floors.append((str(s), float(v)))
    thresholds = Thresholds(
        k=tr.number("k", 4.0, lo=0, lo_open=True),
        persistence=tr.number("persistence", 1, lo=1, integer=True),
        neuron_k=tr.number("neuron_k", 4.0, lo=0, lo_open=True),
        neuron_fraction=tr.number("neuron_fraction", 0.1, lo=0, hi=1),
        rel_floor=tr.number("rel_floor", 0.5, lo=0),
        floors=tuple(sorted(floors)),
    )
    tr.done()

    raw_models = top.required("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise ConfigError(f"{source}: models: expected a non-empty list of models, got {raw_models!r}")
    models: list[ModelWatch] = []
    for i, md in enumerate(raw_models):
        models.append(_model(md, f"models[{i}]", source, base))
    names = [m.name for m in models]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{source}: models: duplicate name(s) {dup}; each watched model needs its own name")

    report_raw = top.raw("report_dir")
    reports = report_raw != ""
    report_dir = _path(report_raw, base) if report_raw not in (None, "") else None
    device = top.string("device", "cpu")
    if device != "cpu" and device != "cuda" and not str(device).startswith("cuda:"):
        raise top.err("device", f"expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    cfg = NightlyConfig(
        db=db,
        data=data,
        models=tuple(models),
        reference=reference,
        thresholds=thresholds,
        exit_on_alert=top.boolean("exit_on_alert", True),
        report_dir=report_dir,
        reports=reports,
        device=device,  # type: ignore[arg-type]
        batch_size=top.number("batch_size", 4096, lo=1, integer=True),
        seed=top.number("seed", 0, lo=0, integer=True),
        lock_ttl_s=top.number("lock_ttl_s", 60.0, lo=0, lo_open=True),
        lock_wait_s=top.number("lock_wait_s", 3600.0, lo=0),
        source=source,
        notify=parse_notify(top.raw("notify"), top.raw("metrics"), source=source, base=base, models=names),
    )
    top.done()
    return cfg


def _model(md: Any, where: str, source: str, base: Path) -> ModelWatch:
    r = _Reader(md, where, source)
    name = r.string("name", required=True)
    if not MODEL_NAME.fullmatch(name or "") or ".." in (name or ""):
        raise r.err("name", f"{name!r}: expected letters, digits, '.', '_' or '-' (at most 100, starting with a letter or "
                            "digit, no '..'): the name is also the folder of its reports")  # fmt: skip
    ck, ckd = r.raw("checkpoint"), r.raw("checkpoint_dir")
    if (ck is None) == (ckd is None):
        raise ConfigError(f"{source}: {where}: give exactly one of checkpoint (a file) or checkpoint_dir (the latest in a directory)")
    if ck is not None and (not isinstance(ck, str) or not ck.strip()):
        raise r.err("checkpoint", f"expected a path, got {ck!r}")
    if ckd is not None and (not isinstance(ckd, str) or not ckd.strip()):
        raise r.err("checkpoint_dir", f"expected a path, got {ckd!r}")
    from ctrlens.models.loader import normalize_spec, pattern_regex

    loader = r.raw("loader")
    if loader is not None:
        try:
            loader = normalize_spec(loader, base, "loader")
        except InputError as e:
            raise r.err("loader", str(e)) from None
    pattern = r.raw("checkpoint_pattern")
    if pattern is not None:
        if ckd is None:
            raise r.err("checkpoint_pattern", "only with checkpoint_dir (it picks files of the directory by the date in their name)")
        if not isinstance(pattern, str) or not pattern.strip():
            raise r.err("checkpoint_pattern", f"expected a file-name pattern such as 'model-{{served_from}}.pt', got {pattern!r}")
        try:
            pattern_regex(pattern.strip())
        except InputError as e:
            raise r.err("checkpoint_pattern", str(e)) from None
        pattern = pattern.strip()
    rows_r = r.sub("rows")
    rows = Rows(
        neurons=rows_r.number("neurons", Rows.neurons, lo=0, integer=True),
        probes=rows_r.number("probes", Rows.probes, lo=0, integer=True),
        saliency=rows_r.number("saliency", Rows.saliency, lo=0, integer=True),
    )
    rows_r.done()
    for k in ("probes", "saliency"):
        v = getattr(rows, k)
        if 0 < v < 50:
            raise rows_r.err(k, f"at least 50 rows (or 0 to skip the analysis), got {v}")
    method = r.string("saliency_method", ModelWatch.saliency_method)
    if method not in SALIENCY_METHODS:
        raise r.err("saliency_method", f"expected one of {list(SALIENCY_METHODS)}, got {method!r}")
    out = ModelWatch(
        name=name,  # type: ignore[arg-type]
        checkpoint=_path(ck, base) if ck is not None else None,
        checkpoint_dir=_path(ckd, base) if ckd is not None else None,
        loader=loader,
        checkpoint_pattern=pattern,
        heads=r.names("heads"),
        rows=rows,
        saliency_method=method,  # type: ignore[arg-type]
        layers=r.names("layers"),
        permutation=r.boolean("permutation", True),
    )
    r.done()
    return out


def _loader() -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that keeps dates as text: ``2026-02-30`` then gets a message naming its key
        (from :func:`_day`) instead of a traceback from YAML's date constructor."""

    Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))
    return Loader


def load_config(path: str | Path) -> NightlyConfig:
    """Read and validate a YAML configuration file (relative paths: relative to its folder)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config {p}: file not found")
    try:
        d = yaml.load(p.read_text(encoding="utf-8"), Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"config {p}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    return parse_config(d, source=f"config {p}", base=p.resolve().parent)


def config_dict(cfg: NightlyConfig) -> dict[str, Any]:
    """The configuration as plain JSON types (stored with each run as its parameters)."""

    def conv(x: Any) -> Any:
        if isinstance(x, Path):
            return str(x)
        if isinstance(x, tuple):
            return [conv(v) for v in x]
        if hasattr(x, "__dataclass_fields__"):
            return {f.name: conv(getattr(x, f.name)) for f in fields(x)}
        return x

    return conv(cfg)


__all__ = [
    "ConfigError",
    "ModelWatch",
    "NightlyConfig",
    "Reference",
    "Rows",
    "SALIENCY_METHODS",
    "Thresholds",
    "config_dict",
    "load_config",
    "parse_config",
]
