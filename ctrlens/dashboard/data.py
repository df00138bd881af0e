"""The dashboard's only door to the database: the store's query API, read-only, plus alert state.

* Reads go through a :class:`~ctrlens.store.Store` whose engine is **read-only**: SQLite is opened
  with ``mode=ro`` (the file cannot be written, whatever a bug or a crafted request tries),
  PostgreSQL sessions with ``default_transaction_read_only=on``.
* The one write -- acknowledging / resolving / reopening an alert -- goes through a second, normal
  store opened on first use, with who did it.
* The catalogue (models, days, layers, fields, heads) is cached for a few seconds: every callback
  validates its selection against it, and it only changes when the nightly job writes.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Sequence
from urllib.parse import quote

import pandas as pd

from ctrlens.store import Store
from ctrlens.store.engine import resolve_url

CATALOGUE_TTL_S = 5.0


def read_only_store(url: str | None) -> Store:
    """A Store for reading only (see the module docstring). Checks the schema revision like any Store."""
    store = Store(url)  # validates existence and revision; never creates or migrates
    engine = read_only_engine(store.url)
    store.engine.dispose()
    store.engine = engine  # Store reads through self.engine only
    return store


def read_only_engine(url: Any) -> Any:
    from ctrlens.store.engine import make_engine, sqlite_path

    if url.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is None:  # in-memory: nothing to protect, and mode=ro would see an empty database
            return make_engine(url)
        ro = url.set(database=f"file:{quote(str(path.resolve()))}", query={"mode": "ro", "uri": "true"})
        return make_engine(ro)
    return make_engine(url.update_query_dict({"options": "-c default_transaction_read_only=on"}))


class DashboardData:
    """Queries the pages need, on a read-only store (plus the alert-state writer)."""

    def __init__(self, url: str | os.PathLike[str] | None = None) -> None:
        self.url = os.fspath(resolve_url(os.fspath(url) if url is not None else None))
        self.store = read_only_store(self.url)
        self._writer: Store | None = None
        self._lock = threading.Lock()
        self._cache: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._version: Any = None

    def close(self) -> None:
        self.store.close()
        if self._writer is not None:
            self._writer.close()

    # ------------------------------------------------------------------------------ caching
    def _cached(self, key: tuple[Any, ...], fn: Callable[[], Any], ttl: float = CATALOGUE_TTL_S) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < ttl:
                return hit[1]
        value = fn()
        with self._lock:
            if len(self._cache) > 2048:
                self._cache.clear()
            self._cache[key] = (now, value)
        return value

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def data_version(self) -> str:
        """Changes whenever a run is written or an alert changes state (for the interval refresh)."""
        v = self.store.data_version()
        if v != self._version:
            self._version = v
            self.invalidate()
        return v

    # ------------------------------------------------------------------------------ catalogue
    def models(self) -> list[str]:
        def get() -> list[str]:
            f = self.store.models()
            return f.loc[f["n_days"] > 0, "model"].tolist()

        return self._cached(("models",), get)

    def days(self, model: str) -> list[str]:
        return self._cached(("days", model), lambda: self.store.days(model=model))

    def all_days(self) -> list[str]:
        return self._cached(("days",), lambda: self.store.days())

    def run_of(self, model: str, day: str, kind: str | None = None) -> dict[str, Any] | None:
        """The run the dashboard shows for (model, day): the one finished last (as the store's queries pick)."""

        def get() -> dict[str, Any] | None:
            runs = self.store.runs(model=model, days=day)
            if kind is not None:
                runs = runs[[kind in k for k in runs["kinds"]]]
            runs = runs[runs["kinds"].map(len) > 0]
            if runs.empty:
                return None
            r = runs.sort_values(["finished_at", "run_id"]).iloc[-1]
            return {"run_id": int(r["run_id"]), "version_id": int(r["version_id"]), "run_kind": r["run_kind"]}

        return self._cached(("run", model, day, kind), get)

    def version_of(self, model: str, day: str) -> int | None:
        r = self.run_of(model, day)
        return None if r is None else r["version_id"]

    def version_days(self, version: int) -> list[str]:
        return self._cached(("version_days", version), lambda: self.store.days(version=version))

    def versions(self, model: str) -> pd.DataFrame:
        return self._cached(("versions", model), lambda: self.store.versions(model))

    def read(self, version: int, day: str, kind: str) -> pd.DataFrame | None:
        """A whole result frame (rows in the order written) or None."""

        def get() -> pd.DataFrame | None:
            r = self.store.read(version, day, kind)
            return None if r is None else r.frame

        return self._cached(("read", version, day, kind), get)

    def neurons(self, version: int, day: str, columns: Sequence[str], layer: str | None = None) -> pd.DataFrame:
        """Neuron statistics of one (version, day): layer, neuron and ``columns`` (a query of only those
        columns: reading whole results with every neuron's histogram costs several times more)."""
        kw = {"layer": layer} if layer is not None else {}
        return self._cached(("neurons", version, day, tuple(columns), layer),
                            lambda: self.store.series("neuron_stats", list(columns), version=version, days=day, **kw))  # fmt: skip

    def _subjects(self, model: str, day: str, kind: str, col: str) -> list[str]:
        v = self.version_of(model, day)
        if v is None:
            return []
        f = self.read(v, day, kind)
        return [] if f is None else list(dict.fromkeys(f[col].tolist()))

    def layers(self, model: str, day: str) -> list[str]:
        """Layers in model order (as the analyses wrote them)."""
        return self._subjects(model, day, "layer_stats", "layer") or self._subjects(model, day, "neuron_stats", "layer")

    def fields(self, model: str, day: str) -> list[str]:
        return self._subjects(model, day, "field_stats", "field")

    def heads(self, model: str, day: str) -> list[str]:
        return self._subjects(model, day, "quality", "head") or self._subjects(model, day, "probe", "head")

    def methods(self, model: str, day: str) -> list[str]:
        return self._subjects(model, day, "saliency", "method")

    def n_neurons(self, model: str, day: str, layer: str) -> int:
        v = self.version_of(model, day)
        f = None if v is None else self.read(v, day, "layer_stats")
        if f is None or layer not in set(f["layer"]):
            return 0
        return int(f.loc[f["layer"] == layer, "n_neurons"].iloc[0])

    def drift_statistics(self, model: str, day: str, subject_kind: str) -> list[str]:
        def get() -> list[str]:
            v = self.version_of(model, day)
            f = None if v is None else self.read(v, day, "drift")
            if f is None:
                return []
            return list(dict.fromkeys(f.loc[f["subject_kind"] == subject_kind, "statistic"].tolist()))

        return self._cached(("drift_stats", model, day, subject_kind), get)

    # ------------------------------------------------------------------------------ pass-through queries
    def series(self, kind: str, statistic: str | Sequence[str], /, **kw: Any) -> pd.DataFrame:
        return self.store.series(kind, statistic, **kw)  # positional: drift rows filter on a "statistic" column

    def heatmap(self, layer: str, statistic: str, **kw: Any) -> pd.DataFrame:
        return self.store.heatmap(layer, statistic, **kw)

    def health_matrix(self, **kw: Any) -> pd.DataFrame:
        return self.store.health_matrix(**kw)

    def alerts(self, **kw: Any) -> pd.DataFrame:
        return self.store.alerts(**kw)

    def alert(self, alert_id: int) -> dict[str, Any] | None:
        a = self.store.alerts()
        a = a[a["alert_id"] == alert_id]
        return None if a.empty else a.iloc[0].to_dict()

    def alert_events(self, alert_id: int) -> pd.DataFrame:
        return self.store.alert_events(alert_id)

    # ------------------------------------------------------------------------------ the one write
    def set_alert_state(self, alert_id: int, state: str, *, by: str, note: str | None = None) -> bool:
        """Acknowledge / resolve / reopen an alert, recorded with who and when (the only write)."""
        with self._lock:
            if self._writer is None:
                self._writer = Store(self.url)
        try:
            changed = self._writer.set_alert_state(int(alert_id), state, by=by, note=note or None)
        finally:
            self.invalidate()
        return changed


__all__ = ["DashboardData", "read_only_engine", "read_only_store"]
