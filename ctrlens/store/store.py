"""The :class:`Store`: every result per model version x day x run kind, in SQLite or PostgreSQL.

Writing a day (:meth:`Store.write_day`) is one transaction:

1. claim the slot row ``runs(model_version_id, day, run_kind)`` with an upsert
   (``INSERT ... ON CONFLICT DO UPDATE``). On PostgreSQL that row lock is held to commit, so a second
   writer of the same slot waits for the first to finish; on SQLite the transaction began with
   ``BEGIN IMMEDIATE`` and writers are serialised database-wide;
2. delete the slot's previous results (every kind, or only the kinds being written with
   ``replace="kinds"``);
3. bulk-insert the new rows (SQLite: ``executemany``, PostgreSQL: ``COPY``; one statement per
   result kind) and the packed per-layer neuron vectors that heat maps read;
4. update the alert states, commit.

So readers see the old complete result set or the new one, never a mixture; a writer killed midway
leaves the previous result set untouched; two writers of one slot end with one complete set (the
later one's); rerunning replaces, never duplicates.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import socket
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

import pandas as pd
from sqlalchemy import Connection, Engine, delete, exc, select, update
from sqlalchemy.engine import URL
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from ctrlens.errors import CtrlensError, InputError
from ctrlens.results import COLUMNS, Result
from ctrlens.store import alerts as alerts_mod
from ctrlens.store import migrate, queries
from ctrlens.store.codec import check_run_kind, dumps, frame_to_columns, merge_results, pack_neuron_vectors, parse_day
from ctrlens.store.engine import display_url, make_engine, normalize_url, resolve_url, sqlite_path, sqlite_readonly
from ctrlens.store.models import (
    RESULT_MODELS,
    VECTOR_STATISTICS,
    AlertResult,
    Lock,
    Model,
    ModelVersion,
    NeuronVector,
    Run,
    RunResult,
    contract_mismatches,
)

DaysArg = queries.DaysArg
log = logging.getLogger("ctrlens.store")


class LockHeld(CtrlensError):
    """Another process holds the lock (its owner and expiry are in the message)."""


class LeaseLost(CtrlensError):
    """A lease this process held was taken over (its heartbeat stopped for longer than its TTL);
    the work done under it is not written."""


class StorageError(InputError):
    """The database file cannot be used: not a database, damaged, or read-only (exit 2)."""


# --------------------------------------------------------------------------------- lease owners


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5); the name before ")" may hold spaces
    except (OSError, IndexError):
        return None


def owner_token() -> str:
    """``host:pid:start:nonce``: who holds a lease -- enough to tell, on the same host, that the
    holder is gone (no such pid, or the pid now belongs to a process started later)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid) or 0}:{uuid.uuid4().hex[:12]}"


def owner_gone(owner: str) -> str | None:
    """Why the holder ``owner`` (a :func:`owner_token`) provably no longer runs, or None when it
    may still run (another host, an unknown token, or a live process)."""
    parts = owner.split(":")
    if len(parts) < 2 or parts[0] != socket.gethostname():
        return None
    try:
        pid = int(parts[1])
    except ValueError:
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"process {pid} on this host ({parts[0]}) no longer exists"
    except PermissionError:
        pass  # exists, owned by another user
    start = parts[2] if len(parts) >= 4 else None
    now_start = _proc_start(pid)
    if start not in (None, "0") and now_start is not None and now_start != start:
        return f"pid {pid} on this host now belongs to a process started later (the holder is gone)"
    if now_start is None and os.path.isdir("/proc") and not os.path.exists(f"/proc/{pid}"):
        return f"process {pid} on this host no longer exists"
    return None


@dataclass
class Lease:
    """A held lock renewed by a heartbeat thread (:meth:`Store.lease`).

    Attributes:
        name: the lock's name; token: its owner token; ttl_s: seconds a renewal keeps it.
        lost: set when a renewal found the lock no longer ours (taken over); writes fenced with
            this lease then fail with :class:`LeaseLost`.
        took_over: why the lock was taken from a previous holder (None: it was free).
    """

    name: str
    token: str
    ttl_s: float
    lost: bool = False
    took_over: str | None = None
    renewals: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _ctrlens_version() -> str:
    from ctrlens import __version__

    return __version__


class Store:
    """A ctrlens store at ``url`` (``sqlite:///path``, ``postgresql://...``, or a bare file path).

    Args:
        url: the database; None: ``$CTRLENS_DB`` or ``sqlite:///runs/ctrlens.sqlite``.
        create: an empty (or, for SQLite, missing) database gets the current schema.
        upgrade: a database at an older schema revision is migrated (else: InputError telling you
            to run ``ctrlens db upgrade --db URL``).

    Raises:
        InputError: the database cannot be reached, is missing / empty (without ``create``), is
            at an older (without ``upgrade``) or newer schema revision, or is not a ctrlens store.
    """

    def __init__(self, url: str | os.PathLike[str] | None = None, *, create: bool = False, upgrade: bool = False) -> None:
        problems = contract_mismatches()
        if problems:  # a developer changed ctrlens.results.COLUMNS without the store
            raise CtrlensError(
                "ctrlens.results.COLUMNS and the store tables differ; add the columns to ctrlens/store/models.py "
                "and a migration in ctrlens/store/migrations/versions/: " + "; ".join(problems)
            )
        self.url = normalize_url(resolve_url(os.fspath(url) if url is not None else None))
        self.url_text = display_url(self.url)
        self.backend: Literal["sqlite", "postgresql"] = self.url.get_backend_name()  # type: ignore[assignment]
        path = sqlite_path(self.url)
        if path is not None and not path.exists():
            if not create:
                raise InputError(
                    f"database file {path} does not exist: run `ctrlens db upgrade --db {self.url_text}` to create it "
                    "(or open it with Store(url, create=True))"
                )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(f"cannot create the folder of database file {path}: {e.strerror}") from None
        self.readonly = sqlite_readonly(self.url)
        self.engine = open_engine(self.url)
        try:
            with self.engine.connect() as conn:
                state = migrate.revision_state(conn)
            if (state.status == "empty" and create) or (state.status == "older" and upgrade):
                migrate.upgrade(self.engine)
            else:
                migrate.check_revision(state, self.url_text)
        except exc.DatabaseError as e:
            self.engine.dispose()
            raise (storage_error(self.url, e) or unreachable(self.url, e)) from None
        except BaseException:
            self.engine.dispose()
            raise

    # ----------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url_text!r})"

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE`` -- take the write lock up front)."""
        if self.readonly:
            raise StorageError(
                f"database file {sqlite_path(self.url)} is read-only for this process (no write permission on the "
                "file or its folder): it can be read (dashboard, reports, queries) but not written"
            )
        try:
            with self.engine.connect() as conn:
                if self.backend == "sqlite":
                    conn.execution_options(ctrlens_begin="IMMEDIATE")
                with conn.begin():
                    yield conn
        except exc.DatabaseError as e:
            raise (storage_error(self.url, e) or e) from None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read transaction: one snapshot for all statements of a query (SQLite: WAL read
        transaction; PostgreSQL: REPEATABLE READ), never blocking writers."""
        try:
            with self.engine.connect() as conn:
                if self.backend == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                yield conn
        except exc.DatabaseError as e:
            raise (storage_error(self.url, e) or e) from None

    def _insert(self, table: Any) -> Any:
        """The dialect's INSERT (for ``on_conflict_do_*``)."""
        return (pg_dialect.insert if self.backend == "postgresql" else sqlite_dialect.insert)(table)

    # ----------------------------------------------------------------------------- models

    def register_model(self, name: str, checkpoint_hash: str, schema_hash: str, config: dict[str, Any] | None = None) -> int:
        """The id of the model version (name, checkpoint hash, schema hash), registering it if new.

        Idempotent: the same triple returns the same id. Registering the same triple with a
        different ``config`` is an InputError (a checkpoint has one configuration).
        """
        for what, v, n in (("model name", name, 200), ("checkpoint hash", checkpoint_hash, 128), ("schema hash", schema_hash, 128)):  # fmt: skip
            if not isinstance(v, str) or not v.strip() or len(v) > n:
                raise InputError(f"{what} {v!r}: expected a non-empty string of at most {n} characters")
        try:
            config_json = dumps(_canonical(config or {}))
        except (TypeError, ValueError) as e:
            raise InputError(f"model {name!r}: config is not JSON-serialisable ({e})") from None
        now = utcnow()
        with self._write() as conn:
            conn.execute(self._insert(Model).values(name=name, created_at=now).on_conflict_do_nothing(index_elements=["name"]))
            model_id = conn.execute(select(Model.id).where(Model.name == name)).scalar_one()
            conn.execute(
                self._insert(ModelVersion)
                .values(model_id=model_id, checkpoint_hash=checkpoint_hash, schema_hash=schema_hash, config_json=config_json, created_at=now)  # fmt: skip
                .on_conflict_do_nothing(index_elements=["model_id", "checkpoint_hash", "schema_hash"])
            )
            row = conn.execute(
                select(ModelVersion.id, ModelVersion.config_json).where(
                    ModelVersion.model_id == model_id,
                    ModelVersion.checkpoint_hash == checkpoint_hash,
                    ModelVersion.schema_hash == schema_hash,
                )
            ).one()
        if row.config_json != config_json:
            raise InputError(
                f"model {name!r} checkpoint {checkpoint_hash!r} (schema {schema_hash!r}) is already registered "
                f"as version {row.id} with a different config: {row.config_json} != {config_json}"
            )
        return int(row.id)

    def register_view(self, name: str, view: Any, *, schema: Any = None) -> int:
        """Register a :class:`~ctrlens.models.interface.ModelView`'s version under ``name``, working out
        the checkpoint and schema hashes from the view (see :mod:`ctrlens.store.versions`)."""
        from ctrlens.store.versions import register_view

        return register_view(self, name, view, schema=schema)

    def register_checkpoint(self, name: str, checkpoint: str | os.PathLike[str], schema: Any, loader: Any = None, *,
                            device: str = "cpu") -> tuple[int, Any]:  # fmt: skip
        """Load ``checkpoint`` with ``loader`` (default: the reference models') and register its version;
        returns ``(version id, view)`` (see :mod:`ctrlens.store.versions`)."""
        from ctrlens.store.versions import register_checkpoint

        return register_checkpoint(self, name, checkpoint, schema, loader, device=device)

    # ----------------------------------------------------------------------------- writing

    def write_day(
        self,
        model_version_id: int,
        day: str | dt.date,
        run_kind: str,
        results: Sequence[Result],
        *,
        params: dict[str, Any] | None = None,
        replace: Literal["run", "kinds"] = "run",
        started_at: dt.datetime | None = None,
        lease: Lease | None = None,
    ) -> int:
        """Write all results of one (model version, day, run kind) atomically; returns the run id.

        Args:
            results: Result objects; several of one kind are concatenated.
            params: JSON-serialisable parameters of the run (stored with it).
            replace: ``"run"`` (default) replaces everything the slot held; ``"kinds"`` replaces only
                the kinds being written and keeps the others (for analyses written piecewise).
            started_at: when the computation began (naive UTC; default: now) -- stored with the
                run next to ``finished_at``.
            lease: a :class:`Lease` from :meth:`lease`: the write commits only while it is still
                ours (checked inside the transaction), else :class:`LeaseLost` and nothing is written.

        Raises:
            InputError: unknown model version, bad day / run kind, or a result that breaks its
                column contract (names kind, column and row). Nothing is written then.
        """
        d = parse_day(day)
        check_run_kind(run_kind)
        if replace not in ("run", "kinds"):
            raise InputError(f"replace={replace!r}: expected 'run' or 'kinds'")
        merged = merge_results(results)
        # column-major values, validated before the transaction starts (keeps the lock window short)
        prepared = {kind: frame_to_columns(kind, r.frame, nan_is_null=self.backend == "sqlite") for kind, r in merged.items()}
        n_rows = {kind: len(r.frame) for kind, r in merged.items()}
        vectors = pack_neuron_vectors(merged["neuron_stats"].frame, VECTOR_STATISTICS) if "neuron_stats" in merged else []
        if "alert" in prepared:
            _check_severities(prepared["alert"][list(COLUMNS["alert"]).index("severity")])
        try:
            metas = {kind: dumps(r.meta) for kind, r in merged.items()}
            params_json = dumps(params or {})
        except (TypeError, ValueError) as e:
            raise InputError(f"run {run_kind!r} of day {d}: meta / params are not JSON-serialisable ({e})") from None
        mv_id = _as_id(model_version_id, "model version id")
        now = utcnow()
        with self._write() as conn:
            if lease is not None:
                # FOR UPDATE (PostgreSQL): a takeover waits for this commit; SQLite writers are serialised anyway
                holder = conn.execute(select(Lock.owner).where(Lock.name == lease.name).with_for_update()).scalar_one_or_none()
                if lease.lost or holder != lease.token:
                    lease.lost = True
                    raise LeaseLost(f"lease {lease.name} was taken over by {holder or 'nobody'}: this job stalled longer "
                                    f"than its {lease.ttl_s:g} s TTL; its result for the day is not written")  # fmt: skip
            model_id = conn.execute(select(ModelVersion.model_id).where(ModelVersion.id == mv_id)).scalar_one_or_none()
            if model_id is None:
                raise InputError(
                    f"model version {mv_id} is not registered in {self.url_text}: register it with "
                    "store.register_model(name, checkpoint_hash, schema_hash, config) and write with the id it returns"
                )
            # the slot row is written complete at once: nobody sees it before the commit anyway
            run_id = self._claim_slot(conn, mv_id, d, run_kind, params_json, status="complete", started_at=started_at or now)
            old_kinds = set(conn.execute(select(RunResult.kind).where(RunResult.run_id == run_id)).scalars())
            drop = old_kinds if replace == "run" else old_kinds & set(prepared)
            old_alert_keys: set[tuple[str, str]] = set()
            if "alert" in drop:
                ar = AlertResult.__table__
                old_alert_keys = {(f, s) for f, s in conn.execute(select(ar.c.finding, ar.c.subject).where(ar.c.run_id == run_id))}
            for kind in sorted(drop):
                table = RESULT_MODELS[kind].__table__
                conn.execute(delete(table).where(table.c.run_id == run_id))
                if kind == "neuron_stats":
                    conn.execute(delete(NeuronVector).where(NeuronVector.run_id == run_id))
            if drop:
                conn.execute(delete(RunResult).where(RunResult.run_id == run_id, RunResult.kind.in_(sorted(drop))))
            for kind, columns in prepared.items():
                if n_rows[kind]:
                    self._bulk_insert(conn, kind, run_id, columns, n_rows[kind])
            if vectors:
                self._insert_rows(conn, NeuronVector.__table__, ["run_id", "layer", "statistic", "data"],
                                  [(run_id, *v) for v in vectors])  # fmt: skip
            if prepared:
                self._insert_rows(conn, RunResult.__table__, ["run_id", "kind", "n_rows", "meta_json"],
                                  [(run_id, k, n_rows[k], metas[k]) for k in prepared])  # fmt: skip
            if "alert" in drop or "alert" in prepared:
                new_keys = set(zip(*prepared["alert"][:2])) if "alert" in prepared else set()
                alerts_mod.sync(conn, model_id, d, old_alert_keys | new_keys, new_keys, now)
            fault_point("store.write_day")  # everything written, not committed
        return run_id

    def _claim_slot(self, conn: Connection, mv_id: int, d: dt.date, run_kind: str, params_json: str, *, status: str,
                    started_at: dt.datetime, error: str | None = None) -> int:  # fmt: skip
        """Create or update-and-lock the slot row; writers of the same slot queue here until commit."""
        values = dict(
            status=status, started_at=started_at, finished_at=utcnow(), ctrlens_version=_ctrlens_version(),
            host=socket.gethostname()[:255], params_json=params_json, error=error,
        )  # fmt: skip
        stmt = (
            self._insert(Run)
            .values(model_version_id=mv_id, day=d, run_kind=run_kind, **values)
            .on_conflict_do_update(index_elements=["model_version_id", "day", "run_kind"], set_=values)
            .returning(Run.id)
        )
        return int(conn.execute(stmt).scalar_one())

    def _bulk_insert(self, conn: Connection, kind: str, run_id: int, columns: list[list[Any]], n: int) -> None:
        names = ["run_id", "pos", *COLUMNS[kind]]
        rows = list(zip(itertools.repeat(run_id, n), range(n), *columns))
        self._insert_rows(conn, RESULT_MODELS[kind].__table__, names, rows)

    def _insert_rows(self, conn: Connection, table: Any, names: list[str], rows: list[tuple[Any, ...]]) -> None:
        """One bulk INSERT of plain tuples, inside the open transaction."""
        cols = ", ".join(conn.dialect.identifier_preparer.quote(n) for n in names)
        if self.backend == "sqlite":
            # The driver's executemany with plain tuples: no per-row parameter dicts to build.
            conn.exec_driver_sql(f"INSERT INTO {table.name} ({cols}) VALUES ({', '.join('?' * len(names))})", rows)
        else:
            # PostgreSQL: COPY through psycopg on the same connection (same transaction), ~10x an INSERT.
            with conn.connection.driver_connection.cursor() as cur:  # type: ignore[union-attr]
                with cur.copy(f"COPY {table.name} ({cols}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)

    def record_failure(self, model_version_id: int, day: str | dt.date, run_kind: str, error: str, *,
                       params: dict[str, Any] | None = None) -> int:  # fmt: skip
        """Note that a run of this slot failed (status ``failed``, the error text). Results a previous
        complete write left in the slot stay readable. Returns the run id."""
        d = parse_day(day)
        check_run_kind(run_kind)
        mv_id = _as_id(model_version_id, "model version id")
        now = utcnow()
        with self._write() as conn:
            if conn.execute(select(ModelVersion.id).where(ModelVersion.id == mv_id)).first() is None:
                raise InputError(f"model version {mv_id} is not registered in {self.url_text}")
            return self._claim_slot(conn, mv_id, d, run_kind, dumps(params or {}), status="failed", started_at=now, error=str(error))

    # ----------------------------------------------------------------------------- alert state

    def set_alert_state(self, alert_id: int, state: str, *, by: str, note: str | None = None) -> bool:
        """Set an alert to ``open`` / ``acknowledged`` / ``resolved``, recording who, when and why.

        Returns False (and records nothing) when the alert already was in that state.
        """
        with self._write() as conn:
            return alerts_mod.set_state(conn, _as_id(alert_id, "alert id"), state, by, note, utcnow())

    def acknowledge(self, alert_id: int, *, by: str, note: str | None = None) -> bool:
        return self.set_alert_state(alert_id, "acknowledged", by=by, note=note)

    def resolve(self, alert_id: int, *, by: str, note: str | None = None) -> bool:
        return self.set_alert_state(alert_id, "resolved", by=by, note=note)

    def reopen(self, alert_id: int, *, by: str, note: str | None = None) -> bool:
        return self.set_alert_state(alert_id, "open", by=by, note=note)

    # ----------------------------------------------------------------------------- locks

    def acquire(self, model: str, day: str | dt.date, *, purpose: str = "nightly", ttl_s: float = 60.0,
                owner: str | None = None) -> str | None:  # fmt: skip
        """Take the database-level lock ``<purpose>:<model>:<day>``; returns its token, or None if held.

        The lock records its owner (:func:`owner_token`: host, pid, process start) and an expiry
        ``ttl_s`` seconds ahead, which the holder's heartbeat renews (:meth:`lease`). A lock whose
        owner is provably gone (same host, dead pid) or whose heartbeat expired is taken over, with a
        log line saying so. Works the same on SQLite and PostgreSQL (unique row + compare-and-set).
        """
        return self._acquire(_lock_name(purpose, model, day), ttl_s, owner)[0]

    def _acquire(self, name: str, ttl_s: float, owner: str | None) -> tuple[str | None, str | None]:
        """(token or None, why it was taken over or None)."""
        token = owner or owner_token()
        now = utcnow()
        expires = now + dt.timedelta(seconds=ttl_s)
        with self._write() as conn:
            got = conn.execute(
                self._insert(Lock)
                .values(name=name, owner=token, acquired_at=now, expires_at=expires)
                .on_conflict_do_nothing(index_elements=["name"])
                .returning(Lock.name)
            ).first()
            if got is not None:
                return token, None
            row = conn.execute(select(Lock.owner, Lock.expires_at).where(Lock.name == name)).first()
            if row is None:  # released between the two statements: next try gets it
                return None, None
            why = None
            if row.expires_at < now:
                why = f"its heartbeat expired at {row.expires_at:%Y-%m-%d %H:%M:%S} UTC"
            elif row.owner != token:
                why = owner_gone(row.owner)
            if why is None:
                return None, None
            # compare-and-set on the owner we saw: of two jobs taking over at once, one wins
            taken = conn.execute(
                update(Lock).where(Lock.name == name, Lock.owner == row.owner)
                .values(owner=token, acquired_at=now, expires_at=expires)
            )  # fmt: skip
            if taken.rowcount != 1:
                return None, None
        log.warning("took over lock %s from %s: %s", name, row.owner, why)
        return token, f"from {row.owner}: {why}"

    def refresh(self, model: str, day: str | dt.date, token: str, *, purpose: str = "nightly", ttl_s: float = 60.0) -> bool:
        """Extend a held lock (the heartbeat); False if ``token`` no longer holds it."""
        return self._refresh(_lock_name(purpose, model, day), token, ttl_s)

    def _refresh(self, name: str, token: str, ttl_s: float) -> bool:
        with self._write() as conn:
            res = conn.execute(
                update(Lock).where(Lock.name == name, Lock.owner == token).values(expires_at=utcnow() + dt.timedelta(seconds=ttl_s))
            )
            return res.rowcount == 1

    def release(self, model: str, day: str | dt.date, token: str, *, purpose: str = "nightly") -> bool:
        """Release a lock taken with :meth:`acquire`; False if ``token`` did not hold it."""
        with self._write() as conn:
            res = conn.execute(delete(Lock).where(Lock.name == _lock_name(purpose, model, day), Lock.owner == token))
            return res.rowcount == 1

    def lock_holder(self, model: str, day: str | dt.date, *, purpose: str = "nightly") -> str:
        """Who holds the lock and until when (for messages); "nobody" when it is free."""
        with self._read() as conn:
            row = conn.execute(select(Lock.owner, Lock.expires_at).where(Lock.name == _lock_name(purpose, model, day))).first()
        return f"{row.owner} (heartbeat valid until {row.expires_at:%Y-%m-%d %H:%M:%S} UTC)" if row else "nobody"

    def held_locks(self, *, purpose: str = "nightly", model: str | None = None) -> list[tuple[str, str]]:
        """(day, owner) of the locks held now (heartbeat not expired) for ``purpose`` (and ``model``)."""
        prefix = f"{purpose}:" + (f"{model}:" if model is not None else "")
        with self._read() as conn:
            rows = conn.execute(select(Lock.name, Lock.owner).where(Lock.expires_at >= utcnow())).all()
        return sorted((r.name.rsplit(":", 1)[1], r.owner) for r in rows
                      if r.name.startswith(prefix) and (model is not None or r.name.count(":") >= 2))  # fmt: skip

    @contextmanager
    def lease(self, model: str, day: str | dt.date, *, purpose: str = "nightly", ttl_s: float = 60.0, wait_s: float = 0.0,
              poll_s: float = 0.2) -> Iterator[Lease]:  # fmt: skip
        """``with store.lease(model, day) as lease:`` -- hold the lock while the block runs.

        A heartbeat thread renews it every ``ttl_s / 4`` seconds, so work of any length keeps it and
        a killed holder loses it ``ttl_s`` seconds after its last beat (sooner on the same host: a
        dead pid is taken over at once). Held by a live owner: wait up to ``wait_s`` seconds for it,
        then raise :class:`LockHeld`. Pass the lease to :meth:`write_day` to fence the write: it only
        commits while the lease is still ours.
        """
        import random
        import time

        name = _lock_name(purpose, model, day)
        token = owner_token()
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            got, why = self._acquire(name, ttl_s, token)
            if got is not None:
                break
            if time.monotonic() >= deadline:
                raise LockHeld(f"{purpose} of model {model!r} day {parse_day(day)} is locked by "
                               f"{self.lock_holder(model, day, purpose=purpose)}")  # fmt: skip
            time.sleep(poll_s * (0.5 + random.random()))  # jittered: waiting jobs do not poll in step
        lease = Lease(name, token, ttl_s, took_over=why)
        beat = threading.Thread(target=self._heartbeat, args=(lease,), name=f"ctrlens-lease-{name}", daemon=True)
        beat.start()
        try:
            yield lease
        finally:
            lease._stop.set()
            beat.join()
            with self._write() as conn:
                conn.execute(delete(Lock).where(Lock.name == name, Lock.owner == token))

    def _heartbeat(self, lease: Lease) -> None:
        while not lease._stop.wait(lease.ttl_s / 4):
            try:
                ok = self._refresh(lease.name, lease.token, lease.ttl_s)
            except Exception as e:  # a transient database error: try again at the next beat
                log.warning("lease %s: heartbeat failed (%s); retrying", lease.name, e)
                continue
            if not ok:
                lease.lost = True
                log.warning("lease %s: lost (taken over by another job); its work will not be written", lease.name)
                return
            lease.renewals += 1

    @contextmanager
    def locked(self, model: str, day: str | dt.date, *, purpose: str = "nightly", ttl_s: float = 60.0) -> Iterator[str]:
        """``with store.locked(model, day):`` -- a :meth:`lease` that does not wait; yields its token."""
        with self.lease(model, day, purpose=purpose, ttl_s=ttl_s) as lease:
            yield lease.token

    # ----------------------------------------------------------------------------- queries

    def models(self) -> pd.DataFrame:
        """One row per model: model_id, model, n_versions, latest_version_id, first_day, last_day, n_days."""
        with self._read() as conn:
            return queries.models(conn)

    def versions(self, model: str | None = None) -> pd.DataFrame:
        """Model versions: version_id, model, checkpoint_hash, schema_hash, config (dict), created_at, first_day, last_day."""
        with self._read() as conn:
            return queries.versions(conn, model)

    def version_id(self, model: str, checkpoint_hash: str, schema_hash: str) -> int | None:
        """The id of a registered version, or None."""
        with self._read() as conn:
            return queries.version_id(conn, model, checkpoint_hash, schema_hash)

    def days(self, *, model: str | None = None, version: int | None = None, run_kind: str | None = None,
             kind: str | None = None) -> list[str]:  # fmt: skip
        """Days ("YYYY-MM-DD", ascending) with a complete run (optionally holding results of ``kind``)."""
        with self._read() as conn:
            return queries.days(conn, model=model, version=version, run_kind=run_kind, kind=kind)

    def latest_day(self, model: str | None = None, *, version: int | None = None, run_kind: str | None = None) -> str | None:
        """The latest day with a complete run of a model (or version); None if there is none."""
        with self._read() as conn:
            days = queries.days(conn, model=model, version=version, run_kind=run_kind, last=True)
        return days[-1] if days else None

    def latest_days(self, *, run_kind: str | None = None) -> pd.DataFrame:
        """Latest day per model: model, day, version_id (the version written last on that day)."""
        with self._read() as conn:
            return queries.latest_days(conn, run_kind=run_kind)

    def runs(self, *, model: str | None = None, version: int | None = None, days: DaysArg = None,
             run_kind: str | None = None) -> pd.DataFrame:  # fmt: skip
        """Runs with their status, timing, version, host, params and the kinds they hold."""
        with self._read() as conn:
            return queries.runs(conn, model=model, version=version, days=days, run_kind=run_kind)

    def read(self, version: int, day: str | dt.date, kind: str, *, run_kind: str | None = None) -> Result | None:
        """The whole Result of one (version, day, kind) as written (None if absent). Without
        ``run_kind``, the most recently finished run of that day holding ``kind`` is read."""
        with self._read() as conn:
            return queries.read(conn, version, day, kind, run_kind=run_kind)

    def read_day(self, version: int, day: str | dt.date, *, run_kind: str | None = None) -> dict[str, Result]:
        """Every result kind of one (version, day): kind -> Result."""
        with self._read() as conn:
            return queries.read_kinds(conn, version, day, list(COLUMNS), run_kind=run_kind)

    def series(self, kind: str, statistic: str | Sequence[str], /, *, model: str | None = None, version: int | None = None,
               days: DaysArg = None, run_kind: str | None = None, **subject: Any) -> pd.DataFrame:  # fmt: skip
        """Time series of a statistic: ``series("quality", "auc", model="din", head="ctr")``.

        Returns a long frame: day, model, version_id, run_kind, the subject columns of ``kind``, then
        one column per statistic, sorted by model, subject, day. ``subject`` filters on result
        columns (a value or a list of values). One value per model (or version) and day: the most
        recently finished run wins. ``days``: None (all), N (the N calendar days ending on the latest day), "YYYY-MM-DD",
        (start, end) inclusive (either may be None), or a list of days. ``kind`` and ``statistic`` are
        positional-only, so that drift rows can be filtered on their ``statistic`` column
        (``series("drift", "value", subject_kind="field", statistic="psi")``).
        """
        with self._read() as conn:
            return queries.series(conn, kind, statistic, model=model, version=version, days=days, run_kind=run_kind, subject=subject)  # fmt: skip

    def heatmap(self, layer: str, statistic: str = "mean", *, model: str | None = None, version: int | None = None,
                days: DaysArg = None, run_kind: str | None = None) -> pd.DataFrame:  # fmt: skip
        """Neurons x days matrix of a neuron statistic for one layer (index: neuron, columns: days)."""
        with self._read() as conn:
            return queries.heatmap(conn, layer, statistic, model=model, version=version, days=days, run_kind=run_kind)

    def alerts(self, *, model: str | None = None, states: Sequence[str] | None = None, severity: str | Sequence[str] | None = None,
               limit: int | None = None) -> pd.DataFrame:  # fmt: skip
        """Alerts ranked: severity (critical first), score (high first), last seen (recent first)."""
        with self._read() as conn:
            return queries.alerts(conn, model=model, states=states, severity=severity, limit=limit)

    def open_alerts(self, *, model: str | None = None, include_acknowledged: bool = True, severity: str | Sequence[str] | None = None,
                    limit: int | None = None) -> pd.DataFrame:  # fmt: skip
        """Alerts not resolved (optionally only ``open`` ones), ranked as :meth:`alerts`."""
        states = ("open", "acknowledged") if include_acknowledged else ("open",)
        return self.alerts(model=model, states=states, severity=severity, limit=limit)

    def alert_events(self, alert_id: int | None = None, *, model: str | None = None) -> pd.DataFrame:
        """State history: event_id, alert_id, model, finding, subject, at, event, from_state, to_state, actor, day, note."""
        with self._read() as conn:
            return queries.alert_events(conn, alert_id=alert_id, model=model)

    def health_matrix(self, *, models: Sequence[str] | None = None, days: DaysArg = None, run_kind: str | None = None,
                      numeric: bool = False) -> pd.DataFrame:  # fmt: skip
        """Models x days: worst alert severity emitted that day ("critical" / "warning" / "info"),
        "ok" for a run without alerts, None where no run. ``numeric``: 3 / 2 / 1 / 0 / NaN."""
        with self._read() as conn:
            return queries.health_matrix(conn, models=models, days=days, run_kind=run_kind, numeric=numeric)

    def data_version(self) -> str:
        """A token that changes whenever a run is written or an alert changes state (cheap; for polling)."""
        with self._read() as conn:
            return queries.data_version(conn)

    def info(self) -> dict[str, Any]:
        """Backend, URL, schema revision and row counts (``ctrlens db info``)."""
        with self._read() as conn:
            out = queries.info(conn)
        return {"backend": self.backend, "url": self.url_text, **out}


# --------------------------------------------------------------------------------- helpers


def open_engine(url: URL) -> Engine:
    """make_engine with a clear message when the driver is missing."""
    try:
        return make_engine(url)
    except ModuleNotFoundError as e:
        raise InputError(
            f"database URL {display_url(url)} needs the Python package {e.name!r}: pip install 'ctrlens[postgres]'"
        ) from None


_STORAGE_PROBLEMS = {
    "file is not a database": "is not a SQLite database (wrong file, or not a ctrlens store)",
    "database disk image is malformed": "is damaged (truncated or corrupted): restore it from a backup",
    "readonly database": "is read-only for this process: give it (and its folder) write permission, or point --db elsewhere",
    "disk i/o error": "could not be read or written (disk I/O error)",
    "database or disk is full": "cannot grow: the disk is full",
}


def storage_error(url: URL, err: Exception) -> StorageError | None:
    """A one-line :class:`StorageError` for a SQLite file that cannot be used, None for other errors."""
    if url.get_backend_name() != "sqlite" or isinstance(err, exc.IntegrityError):
        return None
    text = str(getattr(err, "orig", err)).lower()
    for needle, what in _STORAGE_PROBLEMS.items():
        if needle in text:
            return StorageError(f"database file {sqlite_path(url) or url.database} {what} (SQLite: {text.splitlines()[0]})")
    return None


def fault_point(name: str) -> None:
    """Crash-test hook (``benchmarks/chaos.py``): ``CTRLENS_FAULT=<name>:<n>`` SIGKILLs this process
    the n-th time it passes ``name``. Unset (always, in production): one dictionary lookup."""
    spec = os.environ.get("CTRLENS_FAULT")
    if not spec:
        return
    want, _, n = spec.rpartition(":")
    if want != name:
        return
    count = _FAULT_COUNTS[name] = _FAULT_COUNTS.get(name, 0) + 1
    if count >= int(n or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_COUNTS: dict[str, int] = {}


def unreachable(url: URL, err: Exception) -> InputError:
    """The message for a database that cannot be reached / opened."""
    detail = str(getattr(err, "orig", err)).strip().splitlines()
    detail_text = detail[0] if detail else type(err).__name__
    if url.get_backend_name() == "sqlite":
        return InputError(f"cannot open SQLite database {url.database}: {detail_text}")
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    return InputError(
        f"cannot reach database {display_url(url)}: {detail_text} -- is PostgreSQL running and accepting "
        f"connections on {where}, and are the user, password and database name right?"
    )


def _canonical(x: Any) -> Any:
    """Key-sorted copy of a JSON-like value, so equal configs serialise identically."""
    if isinstance(x, dict):
        return {str(k): _canonical(x[k]) for k in sorted(x, key=str)}
    if isinstance(x, (list, tuple)):
        return [_canonical(v) for v in x]
    return x


def _as_id(v: Any, what: str) -> int:
    try:
        if isinstance(v, bool) or int(v) != v:
            raise ValueError
        return int(v)
    except (TypeError, ValueError):
        raise InputError(f"{what} {v!r}: expected an integer id") from None


def _lock_name(purpose: str, model: str, day: str | dt.date) -> str:
    return f"{purpose}:{model}:{parse_day(day).isoformat()}"


def _check_severities(severities: list[Any]) -> None:
    for i, sev in enumerate(severities):
        if sev not in alerts_mod.SEVERITY_RANK:
            raise InputError(f"result 'alert', column 'severity', row {i}: {sev!r}; expected one of {list(alerts_mod.SEVERITIES)}")
