"""Alembic environment of the ctrlens store.

Normally driven from :mod:`ctrlens.store.migrate` (``ctrlens db upgrade``), which hands over an open
connection in ``config.attributes["connection"]`` -- so SQLite gets the store's engine settings and
the whole upgrade runs in one transaction (DDL is transactional on both backends). Run through the
``alembic`` command instead, it reads ``sqlalchemy.url`` or ``$CTRLENS_DB``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from ctrlens.store.engine import make_engine, normalize_url, resolve_url
from ctrlens.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or resolve_url()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite's ALTER TABLE is limited
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=normalize_url(_url()), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    conn = config.attributes.get("connection")
    if conn is not None:
        _run(conn)
    else:
        engine = make_engine(normalize_url(_url()))
        try:
            with engine.begin() as conn:
                _run(conn)
        finally:
            engine.dispose()
