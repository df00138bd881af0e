"""``ctrlens dashboard``: serve the Dash dashboard on a store.

    ctrlens dashboard --db sqlite:///runs/ctrlens.sqlite                 # http://127.0.0.1:8050
    ctrlens dashboard --db URL --host 0.0.0.0 --token auto               # shared: a token is required
    ctrlens dashboard --db URL --host 0.0.0.0 --basic-auth alice:s3cret

Binding anything but a loopback address without ``--token`` or ``--basic-auth`` is refused. The
database is opened read-only, except for alert state (acknowledge / resolve).
"""

from __future__ import annotations

import secrets
import sys
from typing import Optional

import typer

from ctrlens.cli._options import StoreUrl


def register(app: typer.Typer) -> None:
    @app.command("dashboard")
    def dashboard(
        db: StoreUrl = None,
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind. Anything but loopback needs --token or --basic-auth."),
        port: int = typer.Option(8050, "--port", min=1, max=65535, help="Port to listen on."),
        token: Optional[str] = typer.Option(None, "--token", envvar="CTRLENS_DASHBOARD_TOKEN",
                                            help="Require this access token ('auto': generate one and print the link)."),
        basic_auth: Optional[str] = typer.Option(None, "--basic-auth", envvar="CTRLENS_DASHBOARD_BASIC_AUTH",
                                                 help="Require HTTP basic auth, user:password."),
        refresh: float = typer.Option(60.0, "--refresh", min=1.0, help="Seconds between checks for new results."),
    ) -> None:
        """Serve the dashboard: model health over days, drift, neurons, probes, alerts."""
        from ctrlens.dashboard.auth import check_bind
        from ctrlens.errors import InputError

        if token == "auto":
            token = secrets.token_urlsafe(18)
        check_bind(host, token=token, basic_auth=basic_auth)  # before touching the database

        from werkzeug.serving import run_simple

        from ctrlens.dashboard import create_app

        app = create_app(db, token=token, basic_auth=basic_auth, refresh_s=refresh)
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}/"
        data = app.server.config["CTRLENS_DATA"]
        typer.echo(f"ctrlens dashboard on {data.store.url_text} (read-only except alert state)")
        if token:
            typer.echo(f"open {url}?token={token}   (the token is asked once per browser; keep the link private)")
        elif basic_auth:
            typer.echo(f"open {url}   (user {basic_auth.split(':', 1)[0]})")
        else:
            typer.echo(f"open {url}   (Ctrl+C to stop)")
        sys.stdout.flush()
        try:
            run_simple(host, port, app.server, threaded=True, use_reloader=False, use_debugger=False)
        except OSError as e:
            raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e} (pick another --port?)") from None
