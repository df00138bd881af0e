"""Probes: linear-probe AUC by layer (one line per day or per checkpoint), each layer's probe AUC
over days, and the decay curve (probes fitted on one day, scored on the following days)."""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from ctrlens.dashboard import figures
from ctrlens.dashboard.pages.common import (
    Needs, dropdown, graph, guard, head_default, history, labelled, model_day_controls, register_day_picker,
    register_sync, section,
)  # fmt: skip
from ctrlens.dashboard.params import Selection

PATH = "/probes"
TITLE = "Probes"
NEEDS = Needs(head=True)
P = "pb"
MAX_LINES = 6


def layout(sel: Selection, data: Any) -> Any:
    m, d = sel.model, sel.day
    layers = data.layers(m, d)
    controls = model_day_controls(P, sel, data) + [
        labelled("head", dropdown(f"{P}-head", data.heads(m, d), sel.head, width="100px")),
        labelled("lines", dcc.RadioItems(id=f"{P}-by", options=[{"label": "per day", "value": "day"},
                                                                {"label": "per checkpoint", "value": "checkpoint"}],
                                         value="day", inline=True)),
        labelled("layer", dropdown(f"{P}-layer", layers, sel.layer, width="220px", clearable=True, placeholder="all layers")),
    ]  # fmt: skip
    return html.Div([
        html.Div(controls, className="controls"),
        section("Probe AUC by layer", graph(f"{P}-by-layer")),
        html.Div([section("Probe AUC over days", graph(f"{P}-trend")), section("Decay", graph(f"{P}-decay"))], className="two-col"),
    ])  # fmt: skip


def register(app: dash.Dash, data: Any) -> None:
    register_day_picker(app, P, data)
    register_sync(app, PATH, {"model": f"{P}-model", "day": f"{P}-day", "window": f"{P}-window", "head": f"{P}-head",
                              "layer": f"{P}-layer"})  # fmt: skip

    @app.callback(Output(f"{P}-head", "options"), Output(f"{P}-head", "value"), Output(f"{P}-layer", "options"),
                  Output(f"{P}-layer", "value"), Input(f"{P}-model", "value"), Input(f"{P}-day", "value"),
                  State(f"{P}-head", "value"), State(f"{P}-layer", "value"), prevent_initial_call=True)  # fmt: skip
    @guard("keep", "keep", "keep", "keep")
    def _options(model: str, day: str, head: str | None, layer: str | None) -> tuple[Any, ...]:
        if not (model and day):
            raise PreventUpdate
        heads, layers = data.heads(model, day), data.layers(model, day)
        return heads, head_default(heads, head), layers, (layer if layer in layers else None)

    def _probes(model: str, head: str, day: str, window: Any) -> pd.DataFrame:
        return data.series("probe", ["auc", "model_auc"], model=model, head=head, days=history(day, window))

    @app.callback(Output(f"{P}-by-layer", "figure"), Input(f"{P}-model", "value"), Input(f"{P}-head", "value"),
                  Input(f"{P}-day", "value"), Input(f"{P}-window", "value"), Input(f"{P}-by", "value"),
                  Input("data-version", "data"))  # fmt: skip
    @guard("fig")
    def _by_layer(model: str, head: str, day: str, window: Any, by: str, _v: Any) -> Any:
        if not head:
            return figures.empty(f"No probe results for {model} on {day}.")
        # only the days drawn are queried: a handful, not the whole window
        lo = (history(day, window) or (None, day))[0]
        shown = [d for d in data.days(model) if d <= day and (lo is None or d >= lo)]
        if by == "checkpoint":
            vers = data.versions(model)
            shown_set = set(shown)
            last = {}
            for v in vers["version_id"]:
                ran = [d for d in data.version_days(int(v)) if d in shown_set]
                if ran:
                    last[int(v)] = ran[-1]
            p = fresh(data.series("probe", ["auc", "model_auc"], model=model, head=head, days=sorted(set(last.values()))))
            p = p[[last.get(int(v)) == d for v, d in zip(p["version_id"], p["day"])]]
            p = p.assign(group=[f"v{v} ({d})" for v, d in zip(p["version_id"], p["day"])]).sort_values("day")
        else:
            days = pick_days(shown, day, MAX_LINES)
            p = fresh(data.series("probe", ["auc", "model_auc"], model=model, head=head, days=days)) if days else _probes(model, head, day, 1)
            p = p.sort_values("day").assign(group=lambda x: x["day"])
        return figures.probe_by_layer(p, data.layers(model, day), group="group", head=head)

    trend_in = [Input(f"{P}-model", "value"), Input(f"{P}-head", "value"), Input(f"{P}-day", "value"), Input(f"{P}-window", "value"),
                Input(f"{P}-layer", "value"), Input("data-version", "data")]  # fmt: skip

    @app.callback(Output(f"{P}-trend", "figure"), *trend_in)
    @guard("fig")
    def _trend(model: str, head: str, day: str, window: Any, layer: str | None, _v: Any) -> Any:
        if not head:
            return figures.empty(f"No probe results for {model} on {day}.")
        return figures.probe_trend(fresh(_probes(model, head, day, window)), data.layers(model, day), head=head, day=day, layer=layer)

    @app.callback(Output(f"{P}-decay", "figure"), *trend_in)
    @guard("fig")
    def _decay(model: str, head: str, day: str, window: Any, layer: str | None, _v: Any) -> Any:
        if not head:
            return figures.empty(f"No probe results for {model} on {day}.")
        allp = _probes(model, head, day, window)
        return figures.probe_decay(decay_rows(allp, day), data.layers(model, day), train_day=decay_train_day(allp, day) or day,
                                   head=head, layer=layer)  # fmt: skip


def fresh(p: pd.DataFrame) -> pd.DataFrame:
    """Probes scored on the day they were fitted (held-out rows): the per-day picture."""
    if p.empty:
        return p
    same = p[(p["train_day"] == p["eval_day"]) & (p["eval_day"] == p["day"])]
    return same if len(same) else p[p["eval_day"] == p["day"]].drop_duplicates(["day", "layer"], keep="last")


def pick_days(days: list[str], day: str, n: int) -> list[str]:
    """Up to ``n`` days ending on ``day``, spread evenly over the history shown."""
    if len(days) <= n:
        return days
    idx = sorted({round(i * (len(days) - 1) / (n - 1)) for i in range(n)})
    return [days[i] for i in idx]


def decay_train_day(p: pd.DataFrame, day: str) -> str | None:
    """The fit day of the probes scored on ``day`` that were fitted earlier (latest such), else the
    latest fit day scored on several days."""
    if p.empty:
        return None
    older = p[(p["eval_day"] == day) & (p["train_day"] < day)]
    if len(older):
        return str(older["train_day"].max())
    multi = p.groupby("train_day")["eval_day"].nunique()
    multi = multi[multi > 1]
    return str(multi.index.max()) if len(multi) else None


def decay_rows(p: pd.DataFrame, day: str) -> pd.DataFrame:
    t = decay_train_day(p, day)
    if t is None:
        return p.iloc[0:0]
    d = p[(p["train_day"] == t) & (p["eval_day"] <= day)]
    return d.drop_duplicates(["layer", "eval_day"], keep="last")


__all__ = ["NEEDS", "PATH", "TITLE", "decay_rows", "decay_train_day", "fresh", "layout", "pick_days", "register"]
