"""Neurons: dead and saturated fractions per layer over days, a neurons x days heat map of any
neuron statistic, one neuron's histograms across days, the 2-D projection coloured by click, and
embedding-table health."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from ctrlens.dashboard import figures
from ctrlens.dashboard.pages.common import (
    NEURON_STATS, Needs, dropdown, first_valid, graph, guard, history, labelled, model_day_controls, register_day_picker,
    register_sync, section, table,
)  # fmt: skip
from ctrlens.dashboard.params import Selection, check_choice, to_query

PATH = "/neurons"
TITLE = "Neurons"
NEEDS = Needs(layer=True, neuron=True)
P = "nr"


def layout(sel: Selection, data: Any) -> Any:
    m, d = sel.model, sel.day
    stat = check_choice(sel.stat, NEURON_STATS, "neuron statistic") or "mean"
    n = data.n_neurons(m, d, sel.layer) if sel.layer else 0
    controls = model_day_controls(P, sel, data) + [
        labelled("layer", dropdown(f"{P}-layer", data.layers(m, d), sel.layer, width="220px")),
        labelled("statistic", dropdown(f"{P}-stat", list(NEURON_STATS), stat, width="140px")),
        labelled("neuron", dcc.Input(id=f"{P}-neuron", type="number", min=0, max=max(n - 1, 0), step=1, value=sel.neuron,
                                     debounce=True, style={"width": "80px"})),
    ]  # fmt: skip
    extra = []
    if sel.compare is not None:
        href = "/compare" + to_query({"model": m, "day": d, "layer": sel.layer, "compare": sel.compare.text()})
        extra = [html.P(["Comparison requested with ", html.B(sel.compare.text()), ": ", dcc.Link("open it in Compare", href=href)],
                        className="note", id=f"{P}-compare-link")]  # fmt: skip
    return html.Div([
        html.Div(controls, className="controls"),
        *extra,
        section("Dead and saturated units per layer", graph(f"{P}-layers")),
        section("Neurons x days", graph(f"{P}-heatmap"), note="Click a cell to pick that neuron."),
        html.Div([section("Selected neuron", graph(f"{P}-hist")), section("2-D projection", graph(f"{P}-proj"))], className="two-col"),
        section("Embedding tables", graph(f"{P}-emb"), html.Div(id=f"{P}-emb-table")),
    ])  # fmt: skip


def register(app: dash.Dash, data: Any) -> None:
    register_day_picker(app, P, data)
    register_sync(app, PATH, {"model": f"{P}-model", "day": f"{P}-day", "window": f"{P}-window", "layer": f"{P}-layer",
                              "stat": f"{P}-stat", "neuron": f"{P}-neuron"})  # fmt: skip

    @app.callback(Output(f"{P}-layer", "options"), Output(f"{P}-layer", "value"), Input(f"{P}-model", "value"),
                  Input(f"{P}-day", "value"), State(f"{P}-layer", "value"), prevent_initial_call=True)  # fmt: skip
    @guard("keep", "keep")
    def _layers(model: str, day: str, layer: str | None) -> tuple[Any, Any]:
        if not (model and day):
            raise PreventUpdate
        layers = data.layers(model, day)
        return layers, first_valid(layer, layers)

    @app.callback(Output(f"{P}-neuron", "max"), Output(f"{P}-neuron", "value", allow_duplicate=True), Input(f"{P}-layer", "value"),
                  State(f"{P}-model", "value"), State(f"{P}-day", "value"), State(f"{P}-neuron", "value"), prevent_initial_call=True)  # fmt: skip
    @guard("keep", "keep")
    def _neuron_range(layer: str, model: str, day: str, neuron: Any) -> tuple[Any, Any]:
        n = data.n_neurons(model, day, layer) if layer else 0
        keep = isinstance(neuron, (int, float)) and 0 <= neuron < n
        return max(n - 1, 0), dash.no_update if keep else 0

    @app.callback(Output(f"{P}-layers", "figure"), Input(f"{P}-model", "value"), Input(f"{P}-day", "value"),
                  Input(f"{P}-window", "value"), Input(f"{P}-layer", "value"), Input("data-version", "data"))  # fmt: skip
    @guard("fig")
    def _layer_fractions(model: str, day: str, window: Any, layer: str, _v: Any) -> Any:
        ls = data.series("layer_stats", ["dead_fraction", "saturated_fraction"], model=model, days=history(day, window))
        order = {la: i for i, la in enumerate(data.layers(model, day))}
        ls = ls.sort_values("layer", key=lambda s: s.map(lambda x: order.get(x, len(order))), kind="stable")
        return figures.layer_fractions(ls, day, highlight=layer)

    @app.callback(Output(f"{P}-heatmap", "figure"), Input(f"{P}-model", "value"), Input(f"{P}-layer", "value"),
                  Input(f"{P}-stat", "value"), Input(f"{P}-day", "value"), Input(f"{P}-window", "value"),
                  Input(f"{P}-neuron", "value"), Input("data-version", "data"))  # fmt: skip
    @guard("fig")
    def _heatmap(model: str, layer: str, stat: str, day: str, window: Any, neuron: Any, _v: Any) -> Any:
        if not layer:
            return figures.empty(f"No layers with neuron statistics for {model} on {day}.")
        hm = data.heatmap(layer, stat or "mean", model=model, days=history(day, window))
        return figures.neuron_heatmap(hm, statistic=stat or "mean", layer=layer, neuron=_int(neuron), day=day)

    @app.callback(Output(f"{P}-neuron", "value", allow_duplicate=True), Input(f"{P}-heatmap", "clickData"), prevent_initial_call=True)
    def _pick(click: dict[str, Any] | None) -> int:
        try:
            return int(click["points"][0]["y"])  # type: ignore[index]
        except (TypeError, KeyError, IndexError, ValueError):
            raise PreventUpdate from None

    @app.callback(Output(f"{P}-hist", "figure"), Input(f"{P}-model", "value"), Input(f"{P}-layer", "value"),
                  Input(f"{P}-neuron", "value"), Input(f"{P}-day", "value"), Input(f"{P}-window", "value"),
                  Input("data-version", "data"))  # fmt: skip
    @guard("fig")
    def _hist(model: str, layer: str, neuron: Any, day: str, window: Any, _v: Any) -> Any:
        n = _int(neuron)
        if not layer or n is None:
            return figures.empty("Pick a layer and a neuron.")
        h = data.series("neuron_stats", "hist_json", model=model, layer=layer, neuron=n, days=history(day, window))
        v = data.version_of(model, day)
        ls = data.read(v, day, "layer_stats") if v is not None else None
        edges = None
        if ls is not None and layer in set(ls["layer"]):
            edges = ls.loc[ls["layer"] == layer, "edges_json"].iloc[0]
        return figures.neuron_histograms(h, edges, layer=layer, neuron=n, day=day)

    @app.callback(Output(f"{P}-proj", "figure"), Input(f"{P}-model", "value"), Input(f"{P}-day", "value"),
                  Input(f"{P}-layer", "value"), Input("data-version", "data"))  # fmt: skip
    @guard("fig")
    def _proj(model: str, day: str, layer: str, _v: Any) -> Any:
        v = data.version_of(model, day)
        ls = data.read(v, day, "layer_stats") if v is not None and layer else None
        if ls is None or layer not in set(ls["layer"]):
            return figures.empty(f"No layer statistics for {layer} on {day}.")
        return figures.projection(ls.loc[ls["layer"] == layer, "projection_json"].iloc[0], layer=layer, day=day)

    @app.callback(Output(f"{P}-emb", "figure"), Output(f"{P}-emb-table", "children"), Input(f"{P}-model", "value"),
                  Input(f"{P}-day", "value"), Input(f"{P}-window", "value"), Input("data-version", "data"))  # fmt: skip
    @guard("fig", "div")
    def _emb(model: str, day: str, window: Any, _v: Any) -> tuple[Any, Any]:
        e = data.series("embedding_health", ["effective_rank", "never_updated_frac"], model=model, days=history(day, window))
        v = data.version_of(model, day)
        today = data.read(v, day, "embedding_health") if v is not None else None
        tbl = None
        if today is not None and len(today):
            tbl = table(today, ["table", "rows", "dim", "seen_rows", "never_updated_frac", "norm_mean", "norm_p99", "effective_rank",
                                "info_abundance"], id=f"{P}-emb-grid")  # fmt: skip
        return figures.embedding_health(e, day), tbl


def _int(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


__all__ = ["NEEDS", "PATH", "TITLE", "layout", "register"]
