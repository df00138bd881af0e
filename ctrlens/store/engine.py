"""One URL picks the backend: ``sqlite:///path`` (embedded default) or ``postgresql://...``.

* SQLite: WAL journal (readers never block the writer), foreign keys on, a 60 s busy timeout, and
  SQLAlchemy -- not the sqlite3 driver -- emits ``BEGIN``, so reads are repeatable and DDL is
  transactional. A connection with the execution option ``ctrlens_begin="IMMEDIATE"`` takes the
  write lock at ``BEGIN``: writers queue instead of failing with "database is locked" mid-way.
  A database file (or its folder) this process may not write is opened read-only (``mode=ro``;
  in a read-only folder, where SQLite cannot create the WAL index, ``immutable=1``), so readers such
  as the dashboard still open it; writes then fail with a clear error (see
  :func:`ctrlens.store.store.storage_error`).
* PostgreSQL: ``postgresql://`` / ``postgres://`` mean psycopg 3 (``postgresql+psycopg://``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ctrlens.errors import InputError

#: The embedded default, relative to the working directory; ``CTRLENS_DB`` overrides it.
DEFAULT_URL = "sqlite:///runs/ctrlens.sqlite"
SQLITE_BUSY_TIMEOUT_S = 60.0
PG_CONNECT_TIMEOUT_S = 10


def resolve_url(url: str | None = None) -> str:
    """The URL to use: ``url`` if given, else ``$CTRLENS_DB``, else :data:`DEFAULT_URL`."""
    return url or os.environ.get("CTRLENS_DB") or DEFAULT_URL


def normalize_url(url: str | os.PathLike[str]) -> URL:
    """Parse a store URL; a bare path means SQLite; plain ``postgresql://`` means psycopg 3."""
    text = os.fspath(url).strip()
    if not text:
        raise InputError("database URL is empty: expected sqlite:///path/to/file.sqlite or postgresql://user@host/db")
    if "://" not in text:
        text = "sqlite:///" + text
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://") :]
    try:
        u = make_url(text)
    except ArgumentError:
        raise InputError(
            f"database URL {text!r} cannot be parsed: expected sqlite:///path/to/file.sqlite or "
            "postgresql://user:password@host:5432/dbname"
        ) from None
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() not in ("sqlite", "postgresql"):
        raise InputError(f"database URL {display_url(u)}: backend {u.get_backend_name()!r} is not supported; use sqlite or postgresql")
    return u


def display_url(url: URL | str) -> str:
    """The URL with its password hidden (for messages and logs)."""
    u = url if isinstance(url, URL) else make_url(url)
    return u.render_as_string(hide_password=True)


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL (None for in-memory databases and other backends)."""
    if url.get_backend_name() != "sqlite":
        return None
    db = url.database
    if not db or db == ":memory:" or url.query.get("mode") == "memory":
        return None
    return Path(db)


def sqlite_readonly(url: URL) -> bool:
    """True when the SQLite database file exists but this process may not write it or its folder
    (SQLite needs the folder for its WAL and index files)."""
    path = sqlite_path(url)
    if path is None or not path.exists():
        return False
    return not (os.access(path, os.W_OK) and os.access(path.parent if str(path.parent) else Path("."), os.W_OK))


def _readonly_connect(path: Path) -> Any:
    """A read-only sqlite3 connection; ``immutable=1`` where the folder forbids the WAL index."""
    import sqlite3
    from urllib.parse import quote

    uri = f"file:{quote(str(path.resolve()))}"
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:  # WAL database in a folder we cannot write: no -shm can be made
        conn.close()
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False)


def make_engine(url: URL, **kwargs: Any) -> Engine:
    """An engine configured for the store (see the module docstring)."""
    if url.get_backend_name() == "sqlite":
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        readonly = sqlite_readonly(url)
        if readonly:
            path = sqlite_path(url)
            assert path is not None
            kwargs = {**kwargs, "creator": lambda: _readonly_connect(path)}
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine, readonly=readonly)
        return engine
    connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "ctrlens"}
    return create_engine(url, connect_args=connect_args, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine, *, readonly: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        if sqlite_path(engine.url) is not None and not readonly:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against crashes of the process
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache: heat maps read many pages
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("ctrlens_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())
