"""Pieces every page uses: resolving a selection against the store, controls, the callback guard,
URL sync and small HTML tables."""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from ctrlens.dashboard import figures
from ctrlens.dashboard.params import DEFAULT_WINDOW, Compare, ParamError, Selection, check_choice, check_day, listing, parse_query, show, to_query
from ctrlens.errors import InputError

log = logging.getLogger("ctrlens.dashboard")

WINDOWS = [(30, "30 days"), (90, "90 days"), (180, "180 days"), (365, "365 days"), ("all", "all days")]
NEURON_STATS = ("mean", "std", "frac_zero", "frac_saturated", "min", "max", "mean_click", "mean_noclick")
FALLBACK_ERROR = "Something went wrong while building this view; the details are in the dashboard's log."


@dataclass(frozen=True)
class Needs:
    """Which parameters a page resolves (validates and fills with defaults)."""

    model: bool = True
    day: bool = True
    layer: bool = False
    field: bool = False
    head: bool = False
    neuron: bool = False


def resolve(sel: Selection, data: Any, needs: Needs) -> Selection:
    """Validate ``sel`` against the store and fill defaults. Raises ParamError with a page message."""
    models = data.models()
    if not models:
        raise ParamError("The database holds no results yet: run the nightly job (ctrlens nightly) first.")
    if not needs.model and sel.model is None:
        if sel.day is not None:
            check_day(sel.day, data.all_days(), "any model")
        return sel
    model = check_choice(sel.model, models, "model", "in this database") or models[0]
    days = data.days(model)
    day = check_day(sel.day, days, f"model {model!r}") or (days[-1] if days else None)
    out = sel.with_(model=model, day=day if needs.day else sel.day)
    if sel.version is not None:
        vids = [int(v) for v in data.versions(model)["version_id"]]
        if sel.version not in vids:
            raise ParamError(f"Unknown checkpoint version={sel.version} for model {model!r}. Its versions: {listing(vids)}.")
    if sel.compare is not None:
        c = sel.compare
        if c.version is not None:
            vids = [int(v) for v in data.versions(model)["version_id"]]
            if c.version not in vids:
                raise ParamError(f"compare: unknown checkpoint v{c.version} for model {model!r}. Its versions: {listing(vids)}.")
        if c.day is not None and c.day not in days:
            raise ParamError(f"compare: no results for model {model!r} on {c.day}. Days with results: {days[0]} .. {days[-1]}.")
    if day is None:
        return out
    if needs.layer or sel.layer is not None:
        layers = data.layers(model, day)
        layer = check_choice(sel.layer, layers, "layer", f"for model {model!r} on {day}")
        out = out.with_(layer=layer or (layers[0] if layers else None))
    if needs.neuron or sel.neuron is not None:
        n = data.n_neurons(model, day, out.layer) if out.layer else 0
        if sel.neuron is not None and not 0 <= sel.neuron < n:
            raise ParamError(f"Layer {out.layer} of model {model!r} has neurons 0 .. {n - 1}, not {sel.neuron}.")
        out = out.with_(neuron=sel.neuron if sel.neuron is not None else 0)
    if needs.field or sel.field is not None:
        fields = data.fields(model, day)
        fld = check_choice(sel.field, fields, "field", f"for model {model!r} on {day}")
        out = out.with_(field=fld or (fields[0] if fields else None))
    if needs.head or sel.head is not None:
        heads = data.heads(model, day)
        head = check_choice(sel.head, heads, "head", f"of model {model!r}")
        out = out.with_(head=head or ("ctr" if "ctr" in heads else heads[0] if heads else None))
    return out


# ------------------------------------------------------------------------------ callback guard


def guard(*outputs: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Never let an exception reach the browser: an InputError's message (or a generic one; the
    traceback goes to the log) becomes each output's fallback: "fig" an annotated empty figure,
    "div" a message box, "keep" no change."""

    def fallback(msg: str) -> Any:
        out = [figures.empty(msg) if o == "fig" else error_box(msg) if o == "div" else dash.no_update for o in outputs]
        return out[0] if len(out) == 1 else tuple(out)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kw: Any) -> Any:
            try:
                return fn(*args, **kw)
            except PreventUpdate:
                raise
            except InputError as e:
                return fallback(str(e))
            except Exception:  # noqa: BLE001 - shown as a message, logged with its traceback
                log.exception("dashboard callback %s failed", fn.__name__)
                return fallback(FALLBACK_ERROR)

        return inner

    return deco


def error_box(message: str, *, id: str | None = None) -> html.Div:
    """The friendly message shown instead of a view (never a traceback or SQL)."""
    kw = {"id": id} if id else {}
    return html.Div([html.Strong("Cannot show this view. "), html.Span(message),
                     html.Div(dcc.Link("Back to the overview", href="/"), className="hint")],
                    className="ctrlens-error", role="alert", **kw)  # fmt: skip


# ------------------------------------------------------------------------------ controls


def clicked() -> str | None:
    """The id of the button whose click triggered the running callback, else None.

    Dash also runs click callbacks when their buttons are first rendered (``n_clicks`` None), so
    "triggered" alone does not mean "clicked"."""
    hits = [t for t in dash.ctx.triggered
            if t["prop_id"].endswith(".n_clicks") and isinstance(t.get("value"), int) and t["value"] > 0]  # fmt: skip
    return hits[0]["prop_id"].rsplit(".", 1)[0] if len(hits) == 1 else None


def dropdown(id: str, options: Sequence[Any], value: Any, *, width: str = "180px", clearable: bool = False, **kw: Any) -> dcc.Dropdown:
    opts = [o if isinstance(o, dict) else {"label": str(o), "value": o} for o in options]
    return dcc.Dropdown(id=id, options=opts, value=value, clearable=clearable, style={"width": width}, **kw)


def labelled(label: str, control: Any) -> html.Div:
    return html.Div([html.Label(label), control], className="control")


def window_value(w: int | None) -> Any:
    return "all" if w is None else w


def window_arg(v: Any) -> int | None:
    """A window control value -> the ``days=`` of the store's queries (None: all)."""
    return None if v in (None, "all") else int(v)


def history(day: str | None, window: Any) -> Any:
    """The ``days=`` of the store's queries for a view: the ``window`` days up to ``day`` (the day
    being looked at; by default the latest), or all days."""
    import datetime as dt

    w = window_arg(window)
    if w is None or day is None:
        return None if day is None else (None, day)
    end = dt.date.fromisoformat(day)
    return ((end - dt.timedelta(days=w - 1)).isoformat(), day)


def window_options(current: int | None) -> list[dict[str, Any]]:
    opts = [{"label": lab, "value": v} for v, lab in WINDOWS]
    if current is not None and current not in [v for v, _ in WINDOWS]:
        opts.insert(0, {"label": f"{current} days", "value": current})
    return opts


def model_day_controls(p: str, sel: Selection, data: Any, *, window: bool = True, day: bool = True) -> list[Any]:
    """Model, day (with previous / next buttons) and history-window controls of page prefix ``p``."""
    out = [labelled("model", dropdown(f"{p}-model", data.models(), sel.model))]
    if day:
        days = data.days(sel.model)
        out.append(labelled("day", html.Div([
            html.Button("<", id=f"{p}-prev", title="previous day", className="step"),
            dropdown(f"{p}-day", days[::-1], sel.day, width="140px"),
            html.Button(">", id=f"{p}-next", title="next day", className="step"),
        ], className="day-picker")))  # fmt: skip
    if window:
        out.append(labelled("history", dropdown(f"{p}-window", window_options(sel.window), window_value(sel.window), width="120px")))
    return out


def register_day_picker(app: dash.Dash, p: str, data: Any) -> None:
    """Day options follow the model and new results; < and > step through the days. A view that
    showed the latest day keeps showing the latest day when the nightly job adds one."""

    @app.callback(
        Output(f"{p}-day", "options"), Output(f"{p}-day", "value"),
        Input(f"{p}-model", "value"), Input("data-version", "data"), Input(f"{p}-prev", "n_clicks"), Input(f"{p}-next", "n_clicks"),
        State(f"{p}-day", "value"), State(f"{p}-day", "options"),
        prevent_initial_call=True,
    )  # fmt: skip
    @guard("keep", "keep")
    def _days(model: str, _v: Any, _p: Any, _n: Any, day: str | None, options: list[dict[str, Any]] | None) -> tuple[Any, Any]:
        days = data.days(model) if model else []
        if not days:
            return [], None
        button = clicked()
        refreshed = "data-version.data" in dash.ctx.triggered_prop_ids and len(dash.ctx.triggered_prop_ids) == 1
        old = [o["value"] for o in options or []]
        was_latest = bool(old) and day == max(old)
        if button in (f"{p}-prev", f"{p}-next") and day in days:
            i = days.index(day) + (-1 if button == f"{p}-prev" else 1)
            value = days[min(max(i, 0), len(days) - 1)]
        elif day in days and not (was_latest and refreshed):
            value = day
        else:
            value = days[-1]
        opts = [{"label": d, "value": d} for d in days[::-1]]
        return (dash.no_update if old == days[::-1] else opts), (dash.no_update if value == day else value)


def register_sync(app: dash.Dash, path: str, controls: dict[str, Any]) -> None:
    """Write the page's selection into the URL (no reload), so the address can be shared.

    ``controls``: URL parameter -> component id (its ``value``) or (id, property). The router skips
    the URL change it is told about through ``synced`` (the page already shows it)."""
    names = list(controls)
    inputs = [Input(*c) if isinstance(c, tuple) else Input(c, "value") for c in controls.values()]

    @app.callback(
        Output("url", "search", allow_duplicate=True), Output("synced", "data", allow_duplicate=True),
        *inputs, State("url", "pathname"), State("url", "search"),
        prevent_initial_call=True,
    )  # fmt: skip
    def _sync(*values: Any) -> tuple[Any, Any]:
        *vals, pathname, current = values
        try:  # keep the parameters this page has no control for (alert=, compare= ...)
            params: dict[str, Any] = parse_query(current)
        except ParamError:
            params = {}
        for k, v in zip(names, vals):
            if k == "window":
                v = None if v in (None, DEFAULT_WINDOW) else window_value(v)  # the default stays implicit
            if v is None or v == "":
                params.pop(k, None)
            else:
                params[k] = v
        search = to_query(params)
        if search == (current or ""):
            raise PreventUpdate
        return search, f"{pathname}{search}"


# ------------------------------------------------------------------------------ tables and text


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.{digits}g}"
    return str(v)


def table(frame: pd.DataFrame, columns: Sequence[str] | None = None, *, formats: dict[str, Callable[[Any], Any]] | None = None,
          id: str | None = None, class_name: str = "grid") -> html.Table:  # fmt: skip
    """A plain HTML table of a frame (values formatted, links allowed through ``formats``)."""
    cols = list(columns or frame.columns)
    formats = formats or {}
    head = html.Thead(html.Tr([html.Th(c) for c in cols]))
    body = html.Tbody([html.Tr([html.Td(formats.get(c, fmt)(r[c])) for c in cols]) for _, r in frame.iterrows()])
    kw = {"id": id} if id else {}
    return html.Table([head, body], className=class_name, **kw)


def severity_badge(sev: str) -> html.Span:
    return html.Span(sev, className=f"badge sev-{sev}")


def alert_link(a: dict[str, Any]) -> str:
    return "/alerts" + to_query({"alert": a["alert_id"], "model": a["model"]})


def graph(id: str, **kw: Any) -> dcc.Graph:
    """A graph with a modest toolbar (the PNG button stays: people paste these into incident notes)."""
    return dcc.Graph(id=id, config={"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}, **kw)


def section(title: str, *children: Any, note: str | None = None) -> html.Section:
    return html.Section([html.H3(title), *([html.P(note, className="note")] if note else []), *children], className="card")


def side_of(data: Any, model: str, day: str, compare: Compare | None, *, default: str = "previous_day") -> tuple[int | None, str | None, str]:
    """The (version, day, label) of a comparison's other side.

    ``compare``: a day (the run of that day), a checkpoint (its run on ``day``, else on its last day)
    or both. Without it: the previous day with results (``default="previous_day"``) or the previous
    checkpoint's last day (``"previous_version"``)."""
    days = data.days(model)
    if compare is None:
        if default == "previous_version":
            v = data.version_of(model, day)
            vers = data.versions(model)
            older = vers[(vers["version_id"] < (v or 0)) & vers["last_day"].notna()]
            if len(older):
                r = older.iloc[-1]
                return int(r["version_id"]), str(r["last_day"]), f"v{int(r['version_id'])}@{r['last_day']}"
        earlier = [d for d in days if d < day]
        if not earlier:
            return None, None, "(none)"
        d = earlier[-1]
        return data.version_of(model, d), d, d
    if compare.version is None:
        return data.version_of(model, compare.day), compare.day, compare.day or ""
    vers = data.versions(model)
    row = vers[vers["version_id"] == compare.version]
    d = compare.day
    if d is None:
        ran = data.version_days(compare.version)
        d = day if day in ran else (ran[-1] if ran else None)
    if d is None or row.empty:
        raise ParamError(f"Checkpoint v{compare.version} has no results to compare with.")
    return compare.version, d, f"v{compare.version}@{d}"


def compare_options(data: Any, model: str) -> list[dict[str, Any]]:
    """Days (most recent first) and checkpoints, for a "compare with" dropdown."""
    vers = data.versions(model)
    opts = [{"label": f"checkpoint v{int(r.version_id)} ({r.checkpoint_hash[:12]}, last day {r.last_day})", "value": f"v{int(r.version_id)}"}
            for r in vers.itertuples(index=False) if r.last_day is not None]  # fmt: skip
    return [{"label": d, "value": d} for d in data.days(model)[::-1]] + opts


def head_default(heads: Sequence[str], current: str | None) -> str | None:
    if current in heads:
        return current
    return "ctr" if "ctr" in heads else (heads[0] if heads else None)


def first_valid(current: Any, choices: Sequence[Any], preferred: Iterable[Any] = ()) -> Any:
    if current in choices:
        return current
    for p in preferred:
        if p in choices:
            return p
    return choices[0] if choices else None


__all__ = [
    "NEURON_STATS",
    "clicked",
    "Needs",
    "compare_options",
    "dropdown",
    "error_box",
    "first_valid",
    "fmt",
    "graph",
    "guard",
    "history",
    "head_default",
    "labelled",
    "model_day_controls",
    "register_day_picker",
    "register_sync",
    "resolve",
    "section",
    "severity_badge",
    "show",
    "side_of",
    "table",
    "window_arg",
]
