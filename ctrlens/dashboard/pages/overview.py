"""Overview: every model's health over days, the open alerts ranked, and quality over time."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from ctrlens.dashboard import figures
from ctrlens.dashboard.pages.common import (
    Needs, alert_link, dropdown, graph, guard, head_default, history, labelled, model_day_controls, register_day_picker,
    register_sync, section, severity_badge,
)  # fmt: skip
from ctrlens.dashboard.params import Selection, to_query

PATH = "/"
TITLE = "Overview"
NEEDS = Needs(head=True)
P = "ov"


def layout(sel: Selection, data: Any) -> Any:
    heads = data.heads(sel.model, sel.day)
    controls = model_day_controls(P, sel, data) + [labelled("head", dropdown(f"{P}-head", heads, sel.head, width="110px"))]
    return html.Div([
        html.Div(id=f"{P}-summary", className="summary"),
        section("Health: worst alert severity per model and day", graph(f"{P}-health"),
                note="Click a cell to see that model's alerts of the day. Grey: no run."),
        html.Div(controls, className="controls"),
        html.Div([
            section("Open alerts, most important first", html.Div(id=f"{P}-alerts")),
            section("Model quality over time", graph(f"{P}-quality"),
                    note="Bands: the nightly job's own reference and alert threshold where it tests the metric, else the "
                         "previous 14 days' mean +- 3 sd (alerted days left out). Red x: the job's test alerted."),
        ], className="two-col"),
    ])  # fmt: skip


def register(app: dash.Dash, data: Any) -> None:
    register_day_picker(app, P, data)
    register_sync(app, PATH, {"model": f"{P}-model", "day": f"{P}-day", "head": f"{P}-head", "window": f"{P}-window"})

    @app.callback(Output(f"{P}-head", "options"), Output(f"{P}-head", "value"), Input(f"{P}-model", "value"), Input(f"{P}-day", "value"),
                  State(f"{P}-head", "value"), prevent_initial_call=True)  # fmt: skip
    @guard("keep", "keep")
    def _heads(model: str, day: str, head: str | None) -> tuple[Any, Any]:
        heads = data.heads(model, day) if model and day else []
        return [{"label": h, "value": h} for h in heads], head_default(heads, head)

    # one callback per output: each appears as soon as it is ready (Dash runs them in parallel)
    @app.callback(Output(f"{P}-health", "figure"), Input(f"{P}-window", "value"), Input(f"{P}-day", "value"), Input("data-version", "data"))
    @guard("fig")
    def _health(window: Any, day: str | None, _v: Any) -> Any:
        return figures.health_matrix(data.health_matrix(days=history(day, window)))

    @app.callback(Output(f"{P}-alerts", "children"), Input("data-version", "data"))
    @guard("div")
    def _alerts(_v: Any) -> Any:
        return alert_list(data.alerts(states=("open", "acknowledged"), limit=15))

    @app.callback(Output(f"{P}-summary", "children"), Input("data-version", "data"))
    @guard("div")
    def _summary(_v: Any) -> Any:
        return summary(data)

    @app.callback(Output(f"{P}-quality", "figure"), Input(f"{P}-model", "value"), Input(f"{P}-head", "value"),
                  Input(f"{P}-day", "value"), Input(f"{P}-window", "value"), Input("data-version", "data"))  # fmt: skip
    @guard("fig")
    def _quality(model: str, head: str, day: str, window: Any, _v: Any) -> Any:
        if not (model and head):
            return figures.empty("Pick a model and a head.")
        days = history(day, window)
        q = data.series("quality", ["auc", "gauc", "calibration", "mean_pred", "actual_rate"], model=model, head=head, days=days)
        d = data.series("drift", ["value", "reference", "threshold", "alert"], model=model, subject_kind="quality", subject=head, days=days)
        return figures.quality_over_time(q, drift=d, day=day, title=f"{model} / {head}")

    @app.callback(Output("url", "pathname", allow_duplicate=True), Output("url", "search", allow_duplicate=True),
                  Input(f"{P}-health", "clickData"), prevent_initial_call=True)  # fmt: skip
    def _drill(click: dict[str, Any] | None) -> tuple[str, str]:
        if not click or not click.get("points"):
            raise PreventUpdate
        pt = click["points"][0]
        return "/alerts", to_query({"model": pt.get("y"), "day": pt.get("x")})


def alert_list(alerts: Any) -> Any:
    if alerts.empty:
        return html.P("No open alerts.", className="note")
    rows = []
    for a in alerts.to_dict("records"):
        rows.append(html.Li([
            severity_badge(a["severity"]), " ",
            dcc.Link(a["title"] or f"{a['finding']} on {a['subject']}", href=alert_link(a), className="alert-link"),
            html.Span(f" {a['model']} / {a['finding']} / {a['subject']}, since {a['first_seen']}, last {a['last_seen']}"
                      + (" (acknowledged)" if a["state"] == "acknowledged" else ""), className="meta"),
        ]))  # fmt: skip
    return html.Ol(rows, className="alert-list", id="ov-alert-list")


def summary(data: Any) -> Any:
    models = data.models()
    alerts = data.alerts(states=("open",))
    n = {s: int((alerts["severity"] == s).sum()) for s in ("critical", "warning", "info")}
    latest = data.all_days()
    items = [
        html.Div([html.B(len(models)), " models"], className="tile"),
        html.Div([html.B(latest[-1] if latest else "-"), " latest day"], className="tile"),
        *[html.Div([html.B(n[s]), f" open {s}"], className=f"tile sev-{s}") for s in ("critical", "warning", "info")],
    ]
    return items


__all__ = ["NEEDS", "PATH", "TITLE", "layout", "register"]
