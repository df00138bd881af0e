"""The Dash app: a header with the pages, a ``dcc.Location`` router, and the interval refresh.

* Routing: the page is rebuilt from the URL (path + query) when the address changes -- a click on
  a link, back / forward, an alert's evidence link. Controls write their selection back into the
  query string without a reload (``register_sync``); the router is told (``synced``) so it does not
  rebuild a page that already shows that selection.
* Refresh: every ``refresh_s`` seconds a cheap query asks the store whether anything was written
  (``data-version``); only then do the figures re-query -- the page is never reloaded.
* Errors: a bad URL parameter becomes a friendly message in the page; an exception in a callback
  becomes an annotated empty figure (the traceback goes to the log), never to the browser.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import dash
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from ctrlens.dashboard import auth as auth_mod
from ctrlens.dashboard.data import DashboardData
from ctrlens.dashboard.pages import alerts, common, compare, features, neurons, overview, probes
from ctrlens.dashboard.params import ParamError, parse_query, parse_syntax, to_query
from ctrlens.errors import InputError

log = logging.getLogger("ctrlens.dashboard")

PAGES = (overview, alerts, features, neurons, probes, compare)
#: paths the nightly job's evidence links use that are sections of another page
ALIASES = {"/saliency": features, "/quality": overview, "/overview": overview, "/index": overview}
#: parameters the header links carry from page to page
CARRY = ("model", "day", "window")

CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f5f7fa;color:#263238;font-size:14px}
header{background:#263238;color:#fff;padding:8px 18px;display:flex;align-items:center;gap:18px;flex-wrap:wrap}
header .brand{font-weight:700;font-size:17px;margin-right:8px} header a{color:#cfd8dc;text-decoration:none;padding:4px 8px;border-radius:4px}
header a.active{background:#455a64;color:#fff} header .status{margin-left:auto;font-size:12px;color:#b0bec5}
main{padding:12px 18px} .card{background:#fff;border-radius:6px;padding:8px 12px;margin:10px 0;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card h3{margin:4px 0 6px;font-size:15px} .note{color:#607d8b;font-size:12px;margin:2px 0 6px}
.controls{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-end;margin:6px 0} .control label{display:block;font-size:11px;color:#607d8b}
.day-picker{display:flex;align-items:center;gap:4px} button.step{padding:4px 8px}
.two-col{display:grid;grid-template-columns:1fr 1fr;gap:12px} .two-col.wide-right{grid-template-columns:1.1fr 1fr}
@media(max-width:1100px){.two-col,.two-col.wide-right{grid-template-columns:1fr}}
.ctrlens-error{background:#fff3e0;border-left:4px solid #ef6c00;padding:12px 16px;margin:16px 0;border-radius:4px}
.ctrlens-error .hint{margin-top:6px;font-size:12px}
.badge{display:inline-block;border-radius:3px;padding:1px 6px;font-size:11px;color:#fff;text-transform:uppercase}
.sev-critical.badge{background:#e53935} .sev-warning.badge{background:#ff9800} .sev-info.badge{background:#64b5f6} .sev-ok.badge{background:#4caf50}
table.grid{border-collapse:collapse;width:100%;font-size:12px} table.grid th,table.grid td{border-bottom:1px solid #eceff1;padding:3px 6px;text-align:left}
table.grid tr.selected{background:#e3f2fd} table.kv th{text-align:left;color:#607d8b;font-weight:normal;padding-right:6px} table.kv td{padding-right:18px}
.state-open{color:#c62828} .state-acknowledged{color:#ef6c00} .state-resolved{color:#2e7d32}
.alert-list li{margin:4px 0} .alert-list .meta{color:#78909c;font-size:12px} .evidence-link{margin-right:12px}
.actions{display:flex;gap:8px;margin-top:10px;align-items:center} .note-input{width:260px}
button.action,button.preset{background:#1e88e5;color:#fff;border:0;border-radius:4px;padding:5px 12px;cursor:pointer}
button.secondary{background:#78909c} button.preset{background:#546e7a;margin-right:6px}
.summary{display:flex;gap:10px;flex-wrap:wrap} .tile{background:#fff;border-radius:6px;padding:8px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.tile b{font-size:18px;margin-right:4px} .tile.sev-critical b{color:#e53935} .tile.sev-warning b{color:#ef6c00} .tile.sev-info b{color:#1e88e5}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:12px} .side{background:#fff;border-radius:6px;padding:6px 12px}
.side h4{margin:2px 0} pre{font-size:11px;max-height:260px;overflow:auto;background:#fafafa}
"""


def create_app(db_url: str | os.PathLike[str] | None, *, token: str | None = None, basic_auth: str | None = None,
               refresh_s: float = 60) -> dash.Dash:  # fmt: skip
    """The dashboard for the store at ``db_url`` (opened read-only, except alert state).

    Args:
        token: require this access token (``?token=`` once per browser, or ``Authorization: Bearer``).
        basic_auth: require HTTP basic auth, ``"user:password"``.
        refresh_s: how often the page asks the store for new results (no reload).

    Raises:
        InputError: the database cannot be opened (missing, older schema, unreachable...).
    """
    if token and basic_auth:
        raise InputError("create_app: give a token or basic auth, not both")
    if refresh_s <= 0:
        raise InputError(f"refresh_s={refresh_s}: expected a positive number of seconds")
    data = DashboardData(db_url)
    app = dash.Dash(__name__, title="ctrlens", suppress_callback_exceptions=True, update_title=None,
                    assets_folder=os.path.join(os.path.dirname(__file__), "assets"))  # fmt: skip
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + CSS + "</style>")
    access = auth_mod.Auth(token=token, basic_auth=basic_auth)
    access.install(app.server)
    app.server.config["CTRLENS_DATA"] = data  # for tests and the CLI
    app.ctrlens_data = data  # type: ignore[attr-defined]
    _metrics_route(app.server, data)

    def serve_layout() -> Any:
        try:
            version = data.data_version()
        except Exception:  # noqa: BLE001 - the page still loads and says what is wrong
            log.exception("cannot read the store")
            version = None
        return html.Div([
            dcc.Location(id="url", refresh=False),
            dcc.Store(id="synced"),
            dcc.Store(id="data-version", data=version),
            dcc.Interval(id="refresh", interval=int(refresh_s * 1000), n_intervals=0),
            html.Header([html.Span("ctrlens", className="brand"), html.Nav(id="nav"),
                         html.Span(id="status", className="status", children=f"{data.store.url_text} (read-only)")]),
            html.Main(id="page"),
        ])  # fmt: skip

    app.layout = serve_layout

    @app.callback(Output("page", "children"), Output("synced", "data"), Input("url", "pathname"), Input("url", "search"),
                  State("synced", "data"))  # fmt: skip
    def _route(pathname: str | None, search: str | None, synced: str | None) -> tuple[Any, Any]:
        key = f"{pathname}{search or ''}"
        if pathname is None or key == synced:
            raise PreventUpdate  # the page already shows this selection (a control wrote it)
        return render(pathname, search, data), key

    @app.callback(Output("nav", "children"), Input("url", "pathname"), Input("url", "search"))
    def _nav(pathname: str | None, search: str | None) -> Any:
        try:
            raw = parse_query(search)
        except ParamError:
            raw = {}
        q = to_query({k: raw[k] for k in CARRY if k in raw})
        current = page_of(pathname or "/")
        return [dcc.Link(p.TITLE, href=p.PATH + q, id=f"nav-{p.P}", className="active" if p is current else "") for p in PAGES]

    @app.callback(Output("data-version", "data"), Input("refresh", "n_intervals"), State("data-version", "data"),
                  prevent_initial_call=True)  # fmt: skip
    def _refresh(_n: int, current: Any) -> Any:
        try:
            v = data.data_version()
        except Exception:  # noqa: BLE001 - a database hiccup must not break the page; try again next tick
            log.exception("refresh: cannot read the store")
            raise PreventUpdate from None
        if v == current:
            raise PreventUpdate
        return v

    for page in PAGES:
        page.register(app, data)
    return app


def _metrics_route(server: Any, data: DashboardData) -> None:
    """``/metrics``: the store's numbers for Prometheus (OpenMetrics text), behind the same access
    check as every other route (``Auth.install`` runs before each request of the server)."""
    import flask

    from ctrlens.notify.prometheus import CONTENT_TYPE, render

    @server.route("/metrics")
    def _metrics() -> Any:
        try:
            text = render(data.store)
        except Exception:  # noqa: BLE001 - a scrape error, not a crash; details go to the log
            log.exception("/metrics: cannot read the store")
            return flask.Response("cannot read the store\n", 503, mimetype="text/plain")
        return flask.Response(text, 200, content_type=CONTENT_TYPE)


def page_of(pathname: str) -> Any:
    path = "/" + pathname.strip("/") if pathname != "/" else "/"
    for p in PAGES:
        if p.PATH == path:
            return p
    return ALIASES.get(path)


def render(pathname: str, search: str | None, data: DashboardData) -> Any:
    """The page for a URL, or the friendly message saying what is wrong with it."""
    page = page_of(pathname)
    if page is None:
        known = ", ".join(p.PATH for p in PAGES)
        return common.error_box(f"There is no page {pathname[:80]!r} here. Pages: {known}.", id="friendly-error")
    try:
        sel = common.resolve(parse_syntax(parse_query(search)), data, page.NEEDS)
        return html.Div(page.layout(sel, data), id=f"page-{page.P}")
    except InputError as e:  # ParamError and the store's own messages
        return common.error_box(str(e), id="friendly-error")
    except Exception:  # noqa: BLE001 - logged; the page says so without details
        log.exception("cannot render %s%s", pathname, search or "")
        return common.error_box(common.FALLBACK_ERROR, id="friendly-error")


__all__ = ["create_app", "render"]
