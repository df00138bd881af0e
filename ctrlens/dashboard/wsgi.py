"""WSGI entry point for a production server (the CLI's server is Werkzeug's, fine for a team, not
for the internet)::

    CTRLENS_DB=postgresql://... CTRLENS_DASHBOARD_TOKEN=... gunicorn -b 0.0.0.0:8050 'ctrlens.dashboard.wsgi:server'

Without ``CTRLENS_DASHBOARD_TOKEN`` or ``CTRLENS_DASHBOARD_BASIC_AUTH`` the dashboard answers only
requests addressed to localhost (see :mod:`ctrlens.dashboard.auth`).
"""

from __future__ import annotations

import os

from ctrlens.dashboard.app import create_app

app = create_app(os.environ.get("CTRLENS_DB"), token=os.environ.get("CTRLENS_DASHBOARD_TOKEN") or None,
                 basic_auth=os.environ.get("CTRLENS_DASHBOARD_BASIC_AUTH") or None,
                 refresh_s=float(os.environ.get("CTRLENS_DASHBOARD_REFRESH_S", "60")))  # fmt: skip
server = app.server
