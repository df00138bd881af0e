"""Compare: two checkpoints or two days side by side -- the founding paper's train-vs-test and
stage-vs-stage comparisons: neuron shifts and fluctuation per layer, saliency shares, probe AUCs
and the score distribution (pCTR / actual CTR)."""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from ctrlens.dashboard import figures
from ctrlens.dashboard.pages.common import (
    Needs, clicked, dropdown, first_valid, fmt, graph, guard, head_default, labelled, model_day_controls, register_day_picker,
    register_sync, section, side_of, table,
)  # fmt: skip
from ctrlens.dashboard.params import Compare, ParamError, Selection, parse_compare
from ctrlens.dashboard.pages.features import GRADIENT_METHODS

PATH = "/compare"
TITLE = "Compare"
NEEDS = Needs(layer=True, head=True)
P = "cp"


def _version_options(data: Any, model: str) -> list[dict[str, Any]]:
    v = data.versions(model)
    return [{"label": f"v{int(r.version_id)} {r.checkpoint_hash[:10]} ({r.first_day} .. {r.last_day})", "value": int(r.version_id)}
            for r in v.itertuples(index=False) if r.first_day is not None]  # fmt: skip


def layout(sel: Selection, data: Any) -> Any:
    m, d = sel.model, sel.day
    vopts = _version_options(data, m)
    days = [{"label": x, "value": x} for x in data.days(m)[::-1]]
    b_version = sel.compare.version if sel.compare else None
    b_day = sel.compare.day if sel.compare else None
    side_a = model_day_controls(P, sel, data) + [
        labelled("checkpoint", dropdown(f"{P}-version", vopts, sel.version, width="260px", clearable=True, placeholder="as run that day")),
    ]  # fmt: skip
    side_b = [
        labelled("day", dropdown(f"{P}-bday", days, b_day, width="170px", clearable=True, placeholder="(automatic)")),
        labelled("checkpoint", dropdown(f"{P}-bversion", vopts, b_version, width="260px", clearable=True, placeholder="as run that day")),
        html.Div([html.Button("previous day", id=f"{P}-pre-day", className="preset"),
                  html.Button("previous checkpoint", id=f"{P}-pre-ckpt", className="preset"),
                  html.Button("same checkpoint, first day", id=f"{P}-pre-first", className="preset")], className="presets"),
    ]  # fmt: skip
    return html.Div([
        dcc.Store(id=f"{P}-compare", data=sel.compare.text() if sel.compare else None),
        html.Div([html.Div([html.H4("A"), html.Div(side_a, className="controls")], className="side"),
                  html.Div([html.H4("B (reference)"), html.Div(side_b, className="controls")], className="side")], className="sides"),
        html.Div([labelled("layer", dropdown(f"{P}-layer", data.layers(m, d), sel.layer, width="220px")),
                  labelled("head", dropdown(f"{P}-head", data.heads(m, d), sel.head, width="100px"))], className="controls"),
        section("The two sides", html.Div(id=f"{P}-sides")),
        section("Neurons", graph(f"{P}-layers"), graph(f"{P}-scatter"),
                note="shift = (mean B - mean A) / sd A per neuron; fluctuation = mean |log(sd B / sd A)| (Guo et al. 2018): "
                     "a layer whose fluctuation on new days departs from its training days is over-fitting."),
        html.Div([section("Saliency", graph(f"{P}-saliency")), section("Probes", graph(f"{P}-probes"))], className="two-col"),
        section("Score distribution", graph(f"{P}-score")),
    ])  # fmt: skip


def _sides(data: Any, model: str, day: str, version: int | None, compare: str | None) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """((version, day, label) of A, same of B)."""
    va = version if version is not None else data.version_of(model, day)
    if va is None:
        raise ParamError(f"No results for {model!r} on {day}.")
    if day not in data.version_days(va):
        ran = data.version_days(va)
        raise ParamError(f"Checkpoint v{va} has no results on {day}" + (f"; its days: {ran[0]} .. {ran[-1]}." if ran else "."))
    vb, db, lb = side_of(data, model, day, parse_compare(compare) if compare else None, default="previous_version")
    if vb is None or db is None:
        raise ParamError("Nothing to compare with: pick a day or a checkpoint for side B.")
    if db not in data.version_days(vb):
        raise ParamError(f"Checkpoint v{vb} has no results on {db}: pick another day for side B.")
    if (va, day) == (vb, db):
        raise ParamError("Both sides are the same run: pick another day or checkpoint for side B.")
    return (va, day, f"v{va}@{day}"), (vb, db, f"v{vb}@{db}" if not lb.startswith("v") else lb)


def register(app: dash.Dash, data: Any) -> None:
    register_day_picker(app, P, data)
    register_sync(app, PATH, {"model": f"{P}-model", "day": f"{P}-day", "version": f"{P}-version", "compare": (f"{P}-compare", "data"),
                              "layer": f"{P}-layer", "head": f"{P}-head"})  # fmt: skip

    @app.callback(Output(f"{P}-compare", "data"), Input(f"{P}-bday", "value"), Input(f"{P}-bversion", "value"), prevent_initial_call=True)
    def _compose(bday: str | None, bversion: int | None) -> str | None:
        return Compare(bversion, bday).text() or None

    @app.callback(
        Output(f"{P}-version", "options"), Output(f"{P}-bversion", "options"), Output(f"{P}-bday", "options"),
        Output(f"{P}-layer", "options"), Output(f"{P}-layer", "value"), Output(f"{P}-head", "options"), Output(f"{P}-head", "value"),
        Input(f"{P}-model", "value"), Input(f"{P}-day", "value"), State(f"{P}-layer", "value"), State(f"{P}-head", "value"),
        prevent_initial_call=True,
    )  # fmt: skip
    @guard(*["keep"] * 7)
    def _options(model: str, day: str, layer: str | None, head: str | None) -> tuple[Any, ...]:
        if not (model and day):
            raise PreventUpdate
        vopts = _version_options(data, model)
        layers, heads = data.layers(model, day), data.heads(model, day)
        days = [{"label": x, "value": x} for x in data.days(model)[::-1]]
        return vopts, vopts, days, layers, first_valid(layer, layers), heads, head_default(heads, head)

    @app.callback(Output(f"{P}-bday", "value"), Output(f"{P}-bversion", "value"), Input(f"{P}-pre-day", "n_clicks"),
                  Input(f"{P}-pre-ckpt", "n_clicks"), Input(f"{P}-pre-first", "n_clicks"), State(f"{P}-model", "value"),
                  State(f"{P}-day", "value"), State(f"{P}-version", "value"), prevent_initial_call=True)  # fmt: skip
    @guard("keep", "keep")
    def _preset(_a: Any, _b: Any, _c: Any, model: str, day: str, version: int | None) -> tuple[Any, Any]:
        trig = clicked()
        if trig is None:
            raise PreventUpdate
        if trig == f"{P}-pre-day":
            earlier = [x for x in data.days(model) if x < day]
            return (earlier[-1] if earlier else None), None
        if trig == f"{P}-pre-ckpt":
            vb, db, _ = side_of(data, model, day, None, default="previous_version")
            return db, vb
        va = version if version is not None else data.version_of(model, day)
        ran = data.version_days(va) if va is not None else []
        return (ran[0] if ran else None), va

    sides_in = [Input(f"{P}-model", "value"), Input(f"{P}-day", "value"), Input(f"{P}-version", "value"), Input(f"{P}-compare", "data")]

    def shifts(model: str, day: str, version: int | None, compare: str | None, layer: str | None = None) -> tuple[Any, str, str]:
        (va, da, la), (vb, db, lb) = _sides(data, model, day, version, compare)
        cols = ["mean", "std", "frac_zero"] + (["hist_json"] if layer is None else [])  # histograms (PSI) only for the per-layer summary
        a, b = data.neurons(va, da, cols, layer), data.neurons(vb, db, cols, layer)
        if a.empty or b.empty:
            raise ParamError(f"No neuron statistics for {la if a.empty else lb}" + (f" in layer {layer}." if layer else "."))
        return figures.neuron_shift(b, a), lb, la  # B is the reference: shifts read "from B to A"

    # one callback per figure: each appears as soon as it is ready (Dash runs them in parallel)
    @app.callback(Output(f"{P}-layers", "figure"), *sides_in, Input("data-version", "data"))
    @guard("fig")
    def _layers(model: str, day: str, version: int | None, compare: str | None, _v: Any) -> Any:
        ns, lb, la = shifts(model, day, version, compare)
        return figures.compare_layers(figures.layer_shift(ns, data.layers(model, day)), lb, la)

    @app.callback(Output(f"{P}-scatter", "figure"), *sides_in, Input(f"{P}-layer", "value"), Input("data-version", "data"))
    @guard("fig")
    def _scatter(model: str, day: str, version: int | None, compare: str | None, layer: str | None, _v: Any) -> Any:
        if not layer:
            return figures.empty("Pick a layer.")
        ns, lb, la = shifts(model, day, version, compare, layer)
        return figures.compare_neuron_scatter(ns, layer, lb, la)

    @app.callback(Output(f"{P}-sides", "children"), *sides_in, Input("data-version", "data"))
    @guard("div")
    def _sides_table(model: str, day: str, version: int | None, compare: str | None, _v: Any) -> Any:
        (va, da, la), (vb, db, lb) = _sides(data, model, day, version, compare)
        return _side_table(data, model, (vb, db, lb, data.read(vb, db, "quality")), (va, da, la, data.read(va, da, "quality")))

    @app.callback(Output(f"{P}-saliency", "figure"), *sides_in, Input(f"{P}-head", "value"), Input("data-version", "data"))
    @guard("fig")
    def _saliency(model: str, day: str, version: int | None, compare: str | None, head: str | None, _v: Any) -> Any:
        (va, da, la), (vb, db, lb) = _sides(data, model, day, version, compare)
        sal = []
        for v, d in ((vb, db), (va, da)):
            s = data.read(v, d, "saliency")
            if s is not None and head:
                s = s[s["head"] == head]
                s = s[s["method"] == first_valid(None, list(dict.fromkeys(s["method"])), GRADIENT_METHODS)]
            sal.append(s)
        return figures.compare_saliency(sal[0], sal[1], lb, la)

    @app.callback(Output(f"{P}-probes", "figure"), *sides_in, Input(f"{P}-head", "value"), Input("data-version", "data"))
    @guard("fig")
    def _probes(model: str, day: str, version: int | None, compare: str | None, head: str | None, _v: Any) -> Any:
        (va, da, la), (vb, db, lb) = _sides(data, model, day, version, compare)
        pr = []
        for v, d in ((vb, db), (va, da)):
            p = data.read(v, d, "probe")
            if p is not None and head:
                p = p[(p["head"] == head) & (p["eval_day"] == d)].drop_duplicates("layer", keep="first")
            pr.append(p)
        return figures.compare_probes(pr[0], pr[1], data.layers(model, day), lb, la, head or "")

    @app.callback(Output(f"{P}-score", "figure"), *sides_in, Input(f"{P}-head", "value"), Input("data-version", "data"))
    @guard("fig")
    def _score(model: str, day: str, version: int | None, compare: str | None, head: str | None, _v: Any) -> Any:
        (va, da, la), (vb, db, lb) = _sides(data, model, day, version, compare)

        def score_hist(q: pd.DataFrame | None) -> Any:
            if q is None or not head or head not in set(q["head"]):
                return None
            return q.loc[q["head"] == head, "score_hist_json"].iloc[0]

        return figures.score_distribution(score_hist(data.read(vb, db, "quality")), score_hist(data.read(va, da, "quality")), lb, la,
                                          head or "")  # fmt: skip


def _side_table(data: Any, model: str, *sides: tuple[int, str, str, pd.DataFrame | None]) -> Any:
    vers = data.versions(model).set_index("version_id")
    rows = []
    for name, (v, d, label, q) in zip(("B (reference)", "A"), sides):
        ck = vers.loc[v, "checkpoint_hash"] if v in vers.index else "?"
        row: dict[str, Any] = {"side": name, "run": label, "checkpoint": str(ck)[:16]}
        if q is not None and len(q):
            for r in q.itertuples(index=False):
                row[f"AUC {r.head}"] = fmt(r.auc)
                row[f"calibration {r.head}"] = fmt(r.calibration)
        rows.append(row)
    return table(pd.DataFrame(rows), id=f"{P}-sides-grid")


__all__ = ["NEEDS", "PATH", "TITLE", "layout", "register"]
