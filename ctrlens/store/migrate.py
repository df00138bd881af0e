"""Schema revisions: Alembic shipped inside the package, configured in code (no alembic.ini).

``ctrlens db upgrade --db URL`` calls :func:`upgrade`; :class:`~ctrlens.store.Store` calls
:func:`check_revision` when it opens a database, so code never runs against a schema it does not
know: older -> "run ctrlens db upgrade", newer -> "upgrade ctrlens".
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect

from ctrlens.errors import InputError
from ctrlens.store.engine import display_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_UPGRADE_LOCK_CLASS = 0x6375  # pg_advisory_xact_lock key: concurrent `db upgrade`s queue


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged migrations; ``connection`` is used as is if given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The revision the code expects."""
    head = _script().get_current_head()
    assert head is not None
    return head


def known_revisions() -> list[str]:
    """All revisions of this code, oldest first."""
    return [s.revision for s in reversed(list(_script().walk_revisions()))]


def current_revision(conn: Connection) -> str | None:
    """The database's revision (None: never migrated)."""
    return MigrationContext.configure(conn).get_current_revision()


@dataclass(frozen=True)
class RevisionState:
    current: str | None
    head: str
    has_tables: bool  # any table at all (a non-empty database without our version table is foreign)

    @property
    def status(self) -> str:
        """``up to date`` | ``empty`` | ``older`` | ``newer`` | ``foreign``."""
        if self.current == self.head:
            return "up to date"
        if self.current is None:
            return "foreign" if self.has_tables else "empty"
        return "older" if self.current in known_revisions() else "newer"


def revision_state(conn: Connection) -> RevisionState:
    tables = set(inspect(conn).get_table_names())
    return RevisionState(current_revision(conn), head_revision(), bool(tables - {"alembic_version"}))


def check_revision(state: RevisionState, url_text: str) -> None:
    """Raise a clear :class:`InputError` unless the schema is the code's."""
    s = state.status
    if s == "up to date":
        return
    if s == "empty":
        raise InputError(
            f"database {url_text} has no ctrlens tables: run `ctrlens db upgrade --db {url_text}` "
            "(or open it with Store(url, create=True))"
        )
    if s == "older":
        raise InputError(
            f"database {url_text} has schema revision {state.current}, older than this ctrlens "
            f"({state.head}): run `ctrlens db upgrade --db {url_text}` to migrate it"
        )
    if s == "newer":
        raise InputError(
            f"database {url_text} has schema revision {state.current}, newer than this ctrlens knows "
            f"(its newest is {state.head}): upgrade ctrlens to read it"
        )
    raise InputError(
        f"database {url_text} holds tables but no ctrlens schema revision (no alembic_version row): "
        "it is not a ctrlens store; point --db at a new or ctrlens database"
    )


@contextmanager
def _upgrade_transaction(conn: Connection) -> Iterator[None]:
    """One upgrade at a time: SQLite takes the write lock at BEGIN; PostgreSQL an advisory lock."""
    if conn.dialect.name == "sqlite":
        conn.execution_options(ctrlens_begin="IMMEDIATE")
    with conn.begin():
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, 0)", (_UPGRADE_LOCK_CLASS,))
        yield


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate to ``revision`` in one transaction; returns (revision before, revision after).

    Raises:
        InputError: the database is newer than the code, or is not a ctrlens store.
    """
    url_text = display_url(engine.url)
    with engine.connect() as conn, _upgrade_transaction(conn):
        state = revision_state(conn)
        if state.status in ("newer", "foreign"):
            check_revision(state, url_text)
        if revision != "head" and revision not in known_revisions():
            raise InputError(f"revision {revision!r} unknown; known revisions: {known_revisions()}")
        command.upgrade(alembic_config(conn), revision)
        after = current_revision(conn)
    return state.current, after or ""
