"""Alerts: filter the list, open one to see its diagnosis, evidence and links to the views that
show it, and acknowledge / resolve / reopen it (the dashboard's only writes, recorded with who)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from ctrlens.dashboard import auth
from ctrlens.dashboard.pages.common import Needs, clicked, dropdown, fmt, guard, labelled, register_sync, section, severity_badge, table
from ctrlens.dashboard.params import ParamError, Selection, to_query

PATH = "/alerts"
TITLE = "Alerts"
NEEDS = Needs(model=False, day=False)
P = "al"
SEVERITIES = ("critical", "warning", "info")
STATES = ("open", "acknowledged", "resolved")
#: The views an alert can link to; the nightly job also links /saliency and /quality (aliases).
VIEW_PATHS = ("/", "/alerts", "/features", "/neurons", "/probes", "/compare", "/saliency", "/quality")


def layout(sel: Selection, data: Any) -> Any:
    if sel.alert is not None and data.alert(sel.alert) is None:
        raise ParamError(f"Alert #{sel.alert} not found: it may have been removed when its day was recomputed.")
    models = [{"label": "all models", "value": ""}] + [{"label": m, "value": m} for m in data.models()]
    model = sel.model if sel.model is not None else ""
    # a model link (from the health matrix) keeps its model filter; a bare /alerts shows every model
    controls = html.Div([
        labelled("model", dropdown(f"{P}-model", models, model)),
        labelled("severity", dcc.Checklist(id=f"{P}-severity", options=list(SEVERITIES), value=list(SEVERITIES), inline=True)),
        labelled("state", dcc.Checklist(id=f"{P}-state", options=list(STATES), value=["open", "acknowledged"], inline=True)),
        labelled("day", html.Span([sel.day or "any"] + ([" ", dcc.Link("(all days)", href="/alerts" + to_query({"model": sel.model}))]
                                                        if sel.day else []), id=f"{P}-day-filter")),  # fmt: skip
    ], className="controls")  # fmt: skip
    detail: list[Any] = [html.P("Click an alert to see its evidence.", className="note")]
    if sel.alert is not None:
        detail = [
            html.Div(id=f"{P}-detail"),
            html.Div([
                dcc.Input(id=f"{P}-note", type="text", placeholder="note (optional)", maxLength=500, debounce=False, className="note-input"),
                html.Button("Acknowledge", id=f"{P}-ack", className="action"),
                html.Button("Resolve", id=f"{P}-resolve", className="action"),
                html.Button("Reopen", id=f"{P}-reopen", className="action secondary"),
            ], className="actions"),
            html.Div(id=f"{P}-action-msg", className="note"),
        ]  # fmt: skip
    return html.Div([
        dcc.Store(id=f"{P}-selected", data=sel.alert),
        dcc.Store(id=f"{P}-day", data=sel.day),
        controls,
        html.Div([
            section("Alerts", html.Div(id=f"{P}-list")),
            section("Alert", *detail),
        ], className="two-col wide-right"),
    ])  # fmt: skip


def register(app: dash.Dash, data: Any) -> None:
    register_sync(app, PATH, {"model": f"{P}-model"})

    @app.callback(Output(f"{P}-list", "children"), Input(f"{P}-model", "value"), Input(f"{P}-severity", "value"),
                  Input(f"{P}-state", "value"), Input("data-version", "data"), State(f"{P}-selected", "data"),
                  State(f"{P}-day", "data"))  # fmt: skip
    @guard("div")
    def _list(model: str | None, severity: list[str], states: list[str], _v: Any, selected: int | None, day: str | None) -> Any:
        if not severity or not states:
            return html.P("Pick at least one severity and one state.", className="note")
        a = data.alerts(model=model or None, states=tuple(states), severity=tuple(severity))
        if day:  # from the health matrix: the alerts emitted on that day
            a = a[(a["first_seen"] <= day) & (a["last_seen"] >= day)]
        if a.empty:
            return html.P("No alerts match these filters.", className="note")
        return alert_table(a, selected, model)

    @app.callback(Output(f"{P}-detail", "children"), Input(f"{P}-selected", "data"), Input("data-version", "data"))
    @guard("div")
    def _detail(alert_id: int | None, _v: Any) -> Any:
        if alert_id is None:
            return html.P("Click an alert to see its evidence.", className="note")
        a = data.alert(int(alert_id))
        if a is None:
            raise ParamError(f"Alert #{alert_id} not found.")
        return alert_detail(a, data.alert_events(int(alert_id)))

    @app.callback(Output(f"{P}-action-msg", "children"), Output("data-version", "data", allow_duplicate=True),
                  Input(f"{P}-ack", "n_clicks"), Input(f"{P}-resolve", "n_clicks"), Input(f"{P}-reopen", "n_clicks"),
                  State(f"{P}-selected", "data"), State(f"{P}-note", "value"), prevent_initial_call=True)  # fmt: skip
    @guard("div", "keep")
    def _act(_a: Any, _r: Any, _o: Any, alert_id: int | None, note: str | None) -> tuple[Any, Any]:
        # only a real click: Dash also calls this when the buttons are first rendered
        state = {f"{P}-ack": "acknowledged", f"{P}-resolve": "resolved", f"{P}-reopen": "open"}.get(clicked() or "")
        if alert_id is None or state is None:
            raise PreventUpdate
        who = auth.current_user()
        changed = data.set_alert_state(int(alert_id), state, by=who, note=(note or "").strip() or None)
        msg = f"Alert #{alert_id} is now {state} (by {who})." if changed else f"Alert #{alert_id} already was {state}."
        return msg, data.data_version()


def alert_table(a: pd.DataFrame, selected: int | None, model: str | None) -> Any:
    rows = []
    for r in a.to_dict("records"):
        href = "/alerts" + to_query({"alert": r["alert_id"], "model": model or None})
        cls = "selected" if selected == r["alert_id"] else ""
        rows.append(html.Tr([
            html.Td(severity_badge(r["severity"])),
            html.Td(dcc.Link(r["title"] or f"{r['finding']} on {r['subject']}", href=href, id={"type": "alert-row", "id": int(r["alert_id"])})),
            html.Td(r["model"]), html.Td(r["finding"]), html.Td(r["subject"]), html.Td(f"{r['first_seen']} .. {r['last_seen']}"),
            html.Td(r["state"], className=f"state-{r['state']}"),
        ], className=cls))  # fmt: skip
    head = html.Thead(html.Tr([html.Th(c) for c in ("", "alert", "model", "finding", "subject", "seen", "state")]))
    return html.Table([head, html.Tbody(rows)], className="grid alerts", id="al-table")


def _safe_link(url: Any) -> str | None:
    """A link from the evidence, only if it points inside the dashboard (no other sites, no javascript:)."""
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or parts.path not in VIEW_PATHS:
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")


def derived_links(a: dict[str, Any]) -> list[tuple[str, str]]:
    """Links to the views for an alert, from its finding and subject (for evidence without links)."""
    q = {"model": a["model"], "day": a["day"]}
    f, s = a["finding"], a["subject"]
    if f in ("dead_neurons", "saturated_neurons", "neuron_drift"):
        return [(f"layer {s} in Neurons", "/neurons" + to_query({**q, "layer": s}))]
    if f == "probe_drop":
        head, _, layer = s.partition("/")
        return [(f"layer {layer or s} in Probes", "/probes" + to_query({**q, "layer": layer or s, "head": head if layer else None}))]
    if f in ("quality_drop", "calibration_drift", "overfitting"):
        return [(f"quality of {s}", "/" + to_query({**q, "head": s})), ("compare checkpoints", "/compare" + to_query(q))]
    return [(f"field {s} in Features", "/features" + to_query({**q, "field": s}))]


def alert_detail(a: dict[str, Any], events: pd.DataFrame) -> Any:
    ev = a.get("evidence") if isinstance(a.get("evidence"), dict) else {}
    links = []
    for item in ev.get("links") or []:
        url = _safe_link(item.get("url")) if isinstance(item, dict) else _safe_link(item)
        if url:
            links.append((str(item.get("label", url)) if isinstance(item, dict) else url, url))
    if not links:
        links = derived_links(a)
    symptoms = pd.DataFrame(ev.get("symptoms") or [])
    numbers = {k: v for k, v in ev.items() if k not in ("links", "symptoms", "model", "day", "version_id", "new_version")}
    parts: list[Any] = [
        html.H4([severity_badge(a["severity"]), " ", a["title"] or f"{a['finding']} on {a['subject']}"], id="al-title"),
        html.Table(html.Tbody([
            html.Tr([html.Th("model"), html.Td(a["model"]), html.Th("finding"), html.Td(a["finding"])]),
            html.Tr([html.Th("subject"), html.Td(a["subject"]), html.Th("state"), html.Td(a["state"], id="al-current-state", className=f"state-{a['state']}")]),
            html.Tr([html.Th("first seen"), html.Td(a["first_seen"]), html.Th("last seen"), html.Td(a["last_seen"])]),
            html.Tr([html.Th("score"), html.Td(fmt(a["score"])), html.Th("checkpoint"), html.Td(f"v{a['version_id']}")]),
        ]), className="kv"),
        html.H5("Diagnosis"),
        html.P(a["title"] or ""),
        html.P([html.B("Suggested action: "), a["action"] or "-"], className="action-text"),
        html.H5("Evidence"),
        html.Div([html.Span("Open: ")] + [dcc.Link(lab, href=url, className="evidence-link") for lab, url in links], id="al-links"),
    ]  # fmt: skip
    if len(symptoms):
        cols = [c for c in ("kind", "subject", "statistic", "value", "reference", "threshold", "direction", "severity") if c in symptoms]
        parts.append(table(symptoms, cols, id="al-evidence"))
    else:
        parts.append(html.Div(id="al-evidence"))
    if numbers:
        parts.append(html.Details([html.Summary("More numbers"), html.Pre(_pretty(numbers))], open=not len(symptoms)))
    parts.append(html.H5("History"))
    if len(events):
        ev_t = events.assign(at=events["at"].astype(str).str.slice(0, 19))
        parts.append(table(ev_t, ["at", "event", "from_state", "to_state", "actor", "day", "note"], id="al-history"))
    return html.Div(parts)


def _pretty(x: Any) -> str:
    import json

    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return round(v, 6)
        if isinstance(v, dict):
            return {k: clean(w) for k, w in v.items()}
        if isinstance(v, list):
            return [clean(w) for w in v[:50]]
        return v

    return json.dumps(clean(x), indent=1, default=str)[:6000]


def parse_link(url: str) -> tuple[str, dict[str, str]]:
    """``/features?model=din&field=x`` -> ("/features", {"model": "din", "field": "x"}) (tests)."""
    parts = urlsplit(url)
    return parts.path, dict(parse_qsl(parts.query))


__all__ = ["NEEDS", "PATH", "TITLE", "alert_detail", "derived_links", "layout", "register"]
