"""The ctrlens dashboard: every model's health over days, drift, and a drill-down from each alert to
its evidence (Dash + plotly; see docs/dashboard.md).

    from ctrlens.dashboard import create_app
    app = create_app("sqlite:///runs/ctrlens.sqlite")          # read-only, except alert state
    app.run(host="127.0.0.1", port=8050)

or ``ctrlens dashboard --db sqlite:///runs/ctrlens.sqlite``. Dash is imported on first use, so
``import ctrlens.dashboard`` stays cheap.
"""

from __future__ import annotations

from typing import Any


def create_app(db_url: Any, *, token: str | None = None, basic_auth: str | None = None, refresh_s: float = 60) -> Any:
    """See :func:`ctrlens.dashboard.app.create_app`."""
    from ctrlens.dashboard.app import create_app as _create_app

    return _create_app(db_url, token=token, basic_auth=basic_auth, refresh_s=refresh_s)


__all__ = ["create_app"]
