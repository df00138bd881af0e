"""``ctrlens db``: create / migrate a store and look at it.

    ctrlens db upgrade --db sqlite:///runs/ctrlens.sqlite     # create or migrate to the newest schema
    ctrlens db current --db postgresql://ctrlens@db/ctrlens   # schema revision vs this ctrlens
    ctrlens db info                                           # backend, revision, days, row counts

``--db`` defaults to ``$CTRLENS_DB``, else ``sqlite:///runs/ctrlens.sqlite``. A database that cannot
be reached is a one-line error and exit code 2.
"""

from __future__ import annotations

import json
import sys

import typer

from ctrlens.cli._options import StoreUrl


def register(app: typer.Typer) -> None:
    db = typer.Typer(help="Create, migrate and inspect the SQL store.", no_args_is_help=True)

    @db.command("upgrade")
    def upgrade(
        url: StoreUrl = None,
        revision: str = typer.Option("head", "--revision", help="Target revision (default: the newest)."),
    ) -> None:
        """Create the store's tables or migrate them to the newest schema (one transaction)."""
        from ctrlens.store import migrate

        engine, url_text = _engine(url, create=True)
        try:
            before, after = _guard(engine, lambda: migrate.upgrade(engine, revision))
        finally:
            engine.dispose()
        if before == after:
            typer.echo(f"{url_text}: schema already at revision {after}")
        else:
            typer.echo(f"{url_text}: schema {before or 'empty'} -> {after}")

    @db.command("current")
    def current(url: StoreUrl = None) -> None:
        """Show the database's schema revision and this ctrlens' newest; exit 1 if they differ."""
        from ctrlens.store import migrate

        engine, url_text = _engine(url, create=False)
        try:

            def _state() -> migrate.RevisionState:
                with engine.connect() as conn:
                    return migrate.revision_state(conn)

            state = _guard(engine, _state)
        finally:
            engine.dispose()
        typer.echo(f"{url_text}: revision {state.current or '(none)'}, code head {state.head}: {state.status}")
        if state.status != "up to date":
            if state.status in ("empty", "older"):
                typer.echo(f"run `ctrlens db upgrade --db {url_text}`")
            sys.exit(1)  # (typer.Exit's code is dropped by ctrlens.cli.main in non-standalone mode)

    @db.command("info")
    def info(
        url: StoreUrl = None,
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Backend, schema revision, models, days and row counts."""
        from ctrlens.store import Store

        with Store(url) as store:
            out = store.info()
            models = store.models()
        if as_json:
            out["models"] = json.loads(models.to_json(orient="records"))
            typer.echo(json.dumps(out))
            return
        typer.echo(f"{out['url']} ({out['backend']}), schema revision {out['revision']} ({out['status']})")
        typer.echo(f"days: {out['first_day'] or '-'} .. {out['last_day'] or '-'}")
        for r in models.itertuples():
            typer.echo(f"  model {r.model}: {r.n_versions} version(s), {r.n_days} day(s), {r.first_day} .. {r.last_day}")
        for table, n in out["rows"].items():
            typer.echo(f"  {table:<18} {n:>12,}")

    app.add_typer(db, name="db")


def _engine(url: str | None, *, create: bool):  # type: ignore[no-untyped-def]
    """An engine for ``url`` (for SQLite: the file's folder is created by ``upgrade`` only)."""
    from ctrlens.errors import InputError
    from ctrlens.store.engine import display_url, normalize_url, resolve_url, sqlite_path
    from ctrlens.store.store import open_engine

    u = normalize_url(resolve_url(url))
    path = sqlite_path(u)
    if path is not None:
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(f"cannot create the folder of database file {path}: {e.strerror}") from None
        elif not path.exists():
            raise InputError(f"database file {path} does not exist: run `ctrlens db upgrade --db {display_url(u)}` to create it")
    return open_engine(u), display_url(u)


def _guard(engine, fn):  # type: ignore[no-untyped-def]
    """Run ``fn``; an unreachable database becomes a one-line InputError (exit 2)."""
    from sqlalchemy import exc

    from ctrlens.store.store import storage_error, unreachable

    try:
        return fn()
    except exc.DatabaseError as e:  # not a database / damaged / read-only file, or an unreachable server
        if isinstance(e, exc.IntegrityError):
            raise
        raise (storage_error(engine.url, e) or unreachable(engine.url, e)) from None
