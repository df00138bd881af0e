"""Features: input drift per field and day, a field's coverage / missing / OOV trends, saliency
shares over days, and the fields that moved most between two days or checkpoints."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, html
from dash.exceptions import PreventUpdate

from ctrlens.dashboard import figures
from ctrlens.dashboard.pages.common import (
    Needs, compare_options, dropdown, first_valid, fmt, graph, guard, head_default, history, labelled, model_day_controls,
    register_day_picker, register_sync, section, side_of, table,
)  # fmt: skip
from ctrlens.dashboard.params import Selection, check_choice, parse_compare

PATH = "/features"
TITLE = "Features"
NEEDS = Needs(field=True, head=True)
P = "ft"
PREFERRED_STATS = ("psi", "js", "wasserstein_norm", "coverage")
# preference order when a day has several: the default method (ctrlens.saliency.DEFAULT_METHOD) first
GRADIENT_METHODS = ("input_x_gradient", "saliency", "integrated_gradients")


def _default_method(methods: list[str], current: str | None) -> str | None:
    return first_valid(current, methods, GRADIENT_METHODS)


def layout(sel: Selection, data: Any) -> Any:
    m, d = sel.model, sel.day
    stats = data.drift_statistics(m, d, "field")
    stat = check_choice(sel.stat, stats, "drift statistic", f"for fields of {m!r} on {d}") or first_valid(None, stats, PREFERRED_STATS)
    methods = data.methods(m, d)
    method = check_choice(sel.method, methods, "saliency method", f"for {m!r} on {d}") or _default_method(methods, None)
    copts = compare_options(data, m)
    compare = sel.compare.text() if sel.compare else None
    controls = model_day_controls(P, sel, data) + [
        labelled("drift statistic", dropdown(f"{P}-stat", stats, stat, width="150px")),
        labelled("field", dropdown(f"{P}-field", data.fields(m, d), sel.field, width="170px")),
        labelled("head", dropdown(f"{P}-head", data.heads(m, d), sel.head, width="100px")),
        labelled("saliency method", dropdown(f"{P}-method", methods, method, width="160px")),
        labelled("compare with", dropdown(f"{P}-compare", copts, compare, width="200px", clearable=True, placeholder="previous day")),
    ]  # fmt: skip
    return html.Div([
        html.Div(controls, className="controls"),
        section("Input drift", graph(f"{P}-drift"), note="Click a cell to pick that field."),
        html.Div([section("Field trends", graph(f"{P}-trends")), section("Saliency shares", graph(f"{P}-saliency"))], className="two-col"),
        section("Top movers", graph(f"{P}-movers"), html.Div(id=f"{P}-movers-table"),
                note="Fields ranked by input PSI between the two sides plus the change of their saliency share and coverage."),
    ])  # fmt: skip


def register(app: dash.Dash, data: Any) -> None:
    register_day_picker(app, P, data)
    register_sync(app, PATH, {"model": f"{P}-model", "day": f"{P}-day", "window": f"{P}-window", "stat": f"{P}-stat",
                              "field": f"{P}-field", "head": f"{P}-head", "method": f"{P}-method", "compare": f"{P}-compare"})  # fmt: skip

    @app.callback(
        Output(f"{P}-stat", "options"), Output(f"{P}-stat", "value"), Output(f"{P}-field", "options"),
        Output(f"{P}-field", "value", allow_duplicate=True), Output(f"{P}-head", "options"), Output(f"{P}-head", "value"),
        Output(f"{P}-method", "options"), Output(f"{P}-method", "value"), Output(f"{P}-compare", "options"),
        Input(f"{P}-model", "value"), Input(f"{P}-day", "value"),
        State(f"{P}-stat", "value"), State(f"{P}-field", "value"), State(f"{P}-head", "value"), State(f"{P}-method", "value"),
        prevent_initial_call=True,
    )  # fmt: skip
    @guard(*["keep"] * 9)
    def _options(model: str, day: str, stat: str, field: str, head: str, method: str) -> tuple[Any, ...]:
        if not (model and day):
            raise PreventUpdate
        stats, fields = data.drift_statistics(model, day, "field"), data.fields(model, day)
        heads, methods = data.heads(model, day), data.methods(model, day)
        return (stats, first_valid(stat, stats, PREFERRED_STATS), fields, first_valid(field, fields), heads, head_default(heads, head),
                methods, _default_method(methods, method), compare_options(data, model))  # fmt: skip

    @app.callback(Output(f"{P}-drift", "figure"), Input(f"{P}-model", "value"), Input(f"{P}-day", "value"),
                  Input(f"{P}-window", "value"), Input(f"{P}-stat", "value"), Input("data-version", "data"))  # fmt: skip
    @guard("fig")
    def _drift(model: str, day: str, window: Any, stat: str | None, _v: Any) -> Any:
        if not stat:
            return figures.empty(f"No input drift results for {model} on {day} (the nightly job writes them).")
        d = data.series("drift", ["value", "threshold", "alert"], model=model, subject_kind="field", statistic=stat, days=history(day, window))
        # the alert direction of a statistic comes from the day looked at (a string column for a year of
        # rows would cost more than the rest of the query)
        v = data.version_of(model, day)
        today = data.read(v, day, "drift") if v is not None else None
        if today is not None and len(d):
            t = today[(today["subject_kind"] == "field") & (today["statistic"] == stat)]
            d = d.assign(direction=d["subject"].map(dict(zip(t["subject"], t["direction"]))).fillna("above"))
        return figures.drift_heatmap(d, statistic=stat, order=data.fields(model, day), day=day)

    @app.callback(Output(f"{P}-field", "value", allow_duplicate=True), Input(f"{P}-drift", "clickData"), prevent_initial_call=True)
    def _pick(click: dict[str, Any] | None) -> str:
        if not click or not click.get("points") or not isinstance(click["points"][0].get("y"), str):
            raise PreventUpdate
        return click["points"][0]["y"]

    @app.callback(Output(f"{P}-trends", "figure"), Input(f"{P}-model", "value"), Input(f"{P}-field", "value"),
                  Input(f"{P}-day", "value"), Input(f"{P}-window", "value"), Input("data-version", "data"))  # fmt: skip
    @guard("fig")
    def _trends(model: str, field: str, day: str, window: Any, _v: Any) -> Any:
        if not field:
            return figures.empty("Pick a field.")
        fs = data.series("field_stats", ["coverage", "missing_rate", "oov_rate"], model=model, field=field, days=history(day, window))
        return figures.field_trends(fs, field, day)

    @app.callback(Output(f"{P}-saliency", "figure"), Input(f"{P}-model", "value"), Input(f"{P}-head", "value"),
                  Input(f"{P}-method", "value"), Input(f"{P}-day", "value"), Input(f"{P}-window", "value"),
                  Input(f"{P}-field", "value"), Input("data-version", "data"))  # fmt: skip
    @guard("fig")
    def _saliency(model: str, head: str, method: str, day: str, window: Any, field: str, _v: Any) -> Any:
        if not (head and method):
            return figures.empty(f"No saliency results for {model} on {day}.")
        s = data.series("saliency", "share", model=model, head=head, method=method, days=history(day, window))
        return figures.saliency_area(s, day=day, highlight=field, title=f"Saliency share per field ({head}, {method}), stacked")

    @app.callback(Output(f"{P}-movers", "figure"), Output(f"{P}-movers-table", "children"), Input(f"{P}-model", "value"),
                  Input(f"{P}-day", "value"), Input(f"{P}-compare", "value"), Input(f"{P}-head", "value"),
                  Input(f"{P}-method", "value"), Input("data-version", "data"))  # fmt: skip
    @guard("fig", "div")
    def _movers(model: str, day: str, compare: str | None, head: str | None, method: str | None, _v: Any) -> tuple[Any, Any]:
        va = data.version_of(model, day)
        vb, db, b_label = side_of(data, model, day, parse_compare(compare) if compare else None)
        if va is None or vb is None or db is None:
            return figures.empty("Nothing to compare with: this is the first day with results."), None
        a_label = day
        fa, fb = data.read(va, day, "field_stats"), data.read(vb, db, "field_stats")
        sa, sb = data.read(va, day, "saliency"), data.read(vb, db, "saliency")

        def pick(s: Any) -> Any:
            return None if s is None else s[(s["head"] == head) & (s["method"] == method)]

        # the other side is the reference (A); the day looked at is B: changes read "from A to B"
        m = figures.top_movers(fb, fa, pick(sb), pick(sa))
        fig = figures.movers_figure(m, b_label, a_label)
        pct = lambda v: fmt(v) if v != v else f"{v:.2%}"  # noqa: E731
        tbl = table(m.head(12), ["field", "psi", "coverage_a", "coverage_b", "oov_a", "oov_b", "share_a", "share_b", "d_share"],
                    formats={c: pct for c in ("coverage_a", "coverage_b", "oov_a", "oov_b", "share_a", "share_b", "d_share")},
                    id="ft-movers-grid")  # fmt: skip
        caption = html.P(f"a = {b_label} (reference), b = {a_label}", className="note")
        return fig, html.Div([caption, tbl])


__all__ = ["NEEDS", "PATH", "TITLE", "layout", "register"]
