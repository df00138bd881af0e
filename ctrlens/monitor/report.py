"""The daily report of one model: a standalone HTML page (plotly inline, opens offline) and a
Markdown twin (tables and text bar charts, for chat / tickets / git), built from the store alone.

    paths = write_report(store, "din-prod", "2026-01-12", "reports/din-prod")
    # reports/din-prod/2026-01-12.html, reports/din-prod/2026-01-12.md

Sections: the findings ranked (with their alert id, state, evidence and dashboard links), model
quality over the last 30 days, input drift per field (PSI against its threshold), saliency shares
against the reference, layer health, CTR by position, and every drift test that alerted.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctrlens.errors import InputError
from ctrlens.monitor.config import RUN_KIND

_SEV_COLOUR = {"critical": "#c0392b", "warning": "#d68910", "info": "#5d6d7e"}


@dataclass
class ReportData:
    """Everything a report shows, read from the store."""

    model: str
    day: str
    version_id: int
    run: dict[str, Any]
    results: dict[str, Any]
    alerts: pd.DataFrame
    states: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    quality_series: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def drift(self) -> pd.DataFrame:
        r = self.results.get("drift")
        return r.frame if r is not None else pd.DataFrame(columns=["subject_kind", "subject", "statistic", "value"])


def load_report(store: Any, model: str, day: str) -> ReportData:
    """Read one model-day's nightly run back from ``store`` (InputError if there is none)."""
    d = dt.date.fromisoformat(day).isoformat() if isinstance(day, str) else day
    runs = store.runs(model=model, days=d, run_kind=RUN_KIND)
    runs = runs[runs["status"] == "complete"] if len(runs) else runs
    if not len(runs):
        known = store.days(model=model, run_kind=RUN_KIND)
        shown = f"{known[0]} .. {known[-1]}" if known else "none"
        raise InputError(f"no complete nightly run of model {model!r} on {d} in {store.url_text}; days with runs: {shown}")
    run = runs.sort_values("finished_at").iloc[-1].to_dict()
    vid = int(run["version_id"])
    results = store.read_day(vid, d, run_kind=RUN_KIND)
    alerts = results["alert"].frame if "alert" in results else pd.DataFrame(columns=["finding", "subject", "severity"])
    states = {(r.finding, r.subject): (int(r.alert_id), r.state) for r in store.alerts(model=model).itertuples(index=False)}
    start = (dt.date.fromisoformat(d) - dt.timedelta(days=29)).isoformat()
    qs = store.series("quality", ["auc", "calibration", "mean_pred", "actual_rate"], model=model, days=(start, d), run_kind=RUN_KIND)
    return ReportData(model, d, vid, run, results, alerts, states, qs)


def write_report(store: Any, model: str, day: str, out_dir: str | Path) -> list[Path]:
    """Write ``<out_dir>/<day>.html`` and ``<out_dir>/<day>.md``; returns both paths."""
    data = load_report(store, model, day)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h = out / f"{data.day}.html"
    m = out / f"{data.day}.md"
    _write_atomic(h, to_html(data))  # a job killed mid-report leaves no half file (the next run rewrites it)
    from ctrlens.store.store import fault_point

    fault_point("report.write")
    _write_atomic(m, to_markdown(data, html_name=h.name))
    return [h, m]


def _write_atomic(path: Path, text: str) -> None:
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # as write_text would leave it, not mkstemp's 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------- figures


def _figures(data: ReportData) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figs: list[tuple[str, Any]] = []
    q = data.quality_series
    if len(q):
        fig = make_subplots(rows=1, cols=2, subplot_titles=("AUC", "calibration (sum pCTR / clicks)"))
        for h, g in q.groupby("head"):
            fig.add_scatter(x=g["day"], y=g["auc"], mode="lines+markers", name=f"{h} AUC", row=1, col=1)
            fig.add_scatter(x=g["day"], y=g["calibration"], mode="lines+markers", name=f"{h} calibration", row=1, col=2)
        for c in (1, 2):
            fig.add_vline(x=data.day, line_dash="dot", line_color="#888", row=1, col=c)
        fig.update_layout(template="plotly_white", height=330, margin=dict(t=40, b=30), legend=dict(orientation="h"))
        figs.append(("Model quality, last 30 days", fig))
    d = data.drift
    psi = d[(d["subject_kind"] == "field") & (d["statistic"] == "psi")]
    if len(psi):
        psi = psi.sort_values("value", ascending=False)
        fig = go.Figure()
        colours = ["#c0392b" if a else "#5d8aa8" for a in psi["alert"].fillna(False)]
        fig.add_bar(x=psi["subject"], y=psi["value"], marker_color=colours, name="PSI today")
        fig.add_scatter(x=psi["subject"], y=psi["threshold"], mode="markers", marker_symbol="line-ew-open",
                        marker_size=22, marker_color="#222", name="threshold")  # fmt: skip
        fig.update_layout(template="plotly_white", height=330, margin=dict(t=30, b=30), yaxis_title="PSI vs reference",
                          yaxis_type="log", legend=dict(orientation="h"))  # fmt: skip
        figs.append(("Input drift per field (red: alert)", fig))
    sal = d[(d["subject_kind"] == "saliency") & (d["statistic"] == "share")]
    if len(sal):
        fig = go.Figure()
        fig.add_bar(x=sal["subject"], y=sal["reference"], name="reference share", marker_color="#aab7b8")
        fig.add_bar(x=sal["subject"], y=sal["value"], name="today", marker_color=["#c0392b" if a else "#2e86c1" for a in sal["alert"].fillna(False)])
        fig.update_layout(template="plotly_white", barmode="group", height=330, margin=dict(t=30, b=30),
                          yaxis_tickformat=".0%", legend=dict(orientation="h"))  # fmt: skip
        figs.append(("Saliency share per field (head/field)", fig))
    ls = data.results.get("layer_stats")
    if ls is not None and len(ls.frame):
        f = ls.frame
        fig = go.Figure()
        fig.add_bar(x=f["layer"], y=f["dead_fraction"], name="dead fraction")
        nd = d[(d["subject_kind"] == "layer") & (d["statistic"] == "neuron_drift_share")]
        if len(nd):
            fig.add_bar(x=nd["subject"], y=nd["value"], name="share of neurons drifting")
        fig.update_layout(template="plotly_white", barmode="group", height=300, margin=dict(t=30, b=30),
                          yaxis_tickformat=".0%", legend=dict(orientation="h"))  # fmt: skip
        figs.append(("Layer health", fig))
    pos = ((data.run.get("params") or {}).get("compute") or {}).get("position") or {}
    if pos.get("ctr_by_position"):
        c = pos["ctr_by_position"]
        xs = sorted(c, key=lambda k: int(k))
        first = c[xs[0]] or 1.0
        fig = go.Figure()
        fig.add_scatter(x=[int(x) for x in xs], y=[c[x] / first for x in xs], mode="lines+markers", name="observed CTR / CTR@1")
        if pos.get("seen_curve"):
            s = pos["seen_curve"]
            sx = sorted(s, key=lambda k: int(k))
            fig.add_scatter(x=[int(x) for x in sx], y=[s[x] / s[sx[0]] for x in sx], mode="lines+markers", name="model seen / seen@1")
        fig.update_layout(template="plotly_white", height=300, margin=dict(t=30, b=30), xaxis_title="position",
                          legend=dict(orientation="h"))  # fmt: skip
        figs.append(("Click-through rate by position (relative to position 1)", fig))
    return figs


# ------------------------------------------------------------------------------------- HTML


def _num(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.1%}" if pct else f"{x:.4g}"


def to_html(data: ReportData) -> str:
    """The standalone HTML report."""
    import plotly.io as pio

    e = html.escape
    params = data.run.get("params") or {}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>ctrlens nightly: {e(data.model)} {e(data.day)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(data.model)} &middot; {e(data.day)}</h1>",
        "<table class='meta'>"
        + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in _meta_rows(data, params))
        + "</table>",
        "<h2>Findings</h2>",
    ]
    if not len(data.alerts):
        parts.append("<p class='ok'>No findings: nothing moved beyond its reference band.</p>")
    for r in data.alerts.itertuples(index=False):
        aid, state = data.states.get((r.finding, r.subject), (None, "?"))
        ev = r.evidence_json if isinstance(r.evidence_json, dict) else {}
        links = " ".join(f"<a href='{e(l['url'])}'>{e(l['label'])}</a>" for l in ev.get("links", []))
        if aid is not None:
            links += f" <a href='{e(f'/alerts?alert={aid}')}'>alert #{aid}</a>"
        syms = ev.get("symptoms", [])
        sym_rows = "".join(
            f"<tr><td>{e(str(s.get('kind')))}</td><td>{e(str(s.get('subject')))}</td><td>{e(str(s.get('statistic')))}</td>"
            f"<td>{_num(s.get('value'))}</td><td>{_num(s.get('reference'))}</td><td>{e(str(s.get('direction')))} "
            f"{_num(s.get('threshold'))}</td></tr>"
            for s in syms
        )
        colour = _SEV_COLOUR.get(r.severity, "#555")
        parts.append(
            f"<div class='finding' style='border-left-color:{colour}'>"
            f"<div><span class='sev' style='background:{colour}'>{e(r.severity)}</span> <b>{e(r.finding)}</b> &middot; "
            f"{e(r.subject)} <span class='score'>score {r.score:.1f} &middot; {e(state)}</span></div>"
            f"<p>{e(r.title)}</p><p class='action'>{e(r.action)}</p><p class='links'>{links}</p>"
            + (f"<details><summary>evidence ({len(syms)} tests)</summary><table><tr><th>kind</th><th>subject</th>"
               f"<th>statistic</th><th>value</th><th>reference</th><th>alert when</th></tr>{sym_rows}</table></details>"
               if syms else "")
            + "</div>"
        )  # fmt: skip
    first = True
    for title, fig in _figures(data):
        parts.append(f"<h2>{e(title)}</h2>")
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=first, config={"displaylogo": False}))
        first = False
    d = data.drift
    al = d[d["alert"].fillna(False).astype(bool)]
    parts.append(f"<h2>Drift tests that alerted ({len(al)} of {len(d)})</h2>")
    if len(al):
        parts.append(al.to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="-", classes="drift"))
    parts.append("<p class='foot'>ctrlens nightly report. Bands: reference mean &plusmn; k &middot; sd (floored); "
                 "distances are PSI / Jensen-Shannon / normalised Wasserstein, never p-values. See docs/alerts.md.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _meta_rows(data: ReportData, params: dict[str, Any]) -> list[tuple[str, Any]]:
    ref = params.get("reference_days") or []
    return [
        ("model version", f"#{data.version_id} ({params.get('version', '')})"),
        ("checkpoint", params.get("checkpoint", "")),
        ("reference", f"{len(ref)} days: {ref[0]} .. {ref[-1]}" if ref else "none yet (warming up)"),
        ("findings", f"{len(data.alerts)} ({int(data.alerts['severity'].isin(['critical', 'warning']).sum()) if len(data.alerts) else 0} paging)"),
        ("run finished", data.run.get("finished_at")),
        ("seconds", json.dumps(((params.get("compute") or {}).get("seconds")) or {})),
    ]


# ------------------------------------------------------------------------------------- Markdown


def _bar(v: float, vmax: float, width: int = 24) -> str:
    if not (np.isfinite(v) and vmax > 0):
        return ""
    n = max(0.0, min(v / vmax, 1.0)) * width
    full = int(n)
    return "█" * full + ("▌" if n - full >= 0.5 else "")


def _spark(values: list[float]) -> str:
    ticks = "▁▂▃▄▅▆▇█"
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return ""
    lo, hi = v.min(), v.max()
    return "".join(ticks[int((x - lo) / (hi - lo) * 7)] if hi > lo else ticks[3] for x in v)


def to_markdown(data: ReportData, *, html_name: str | None = None) -> str:
    """The Markdown report (text charts; the HTML twin has the interactive plots)."""
    params = data.run.get("params") or {}
    lines = [f"# {data.model} · {data.day}", ""]
    for k, v in _meta_rows(data, params):
        lines.append(f"- **{k}**: {v}")
    if html_name:
        lines.append(f"- **interactive plots**: [{html_name}]({html_name})")
    lines += ["", "## Findings", ""]
    if not len(data.alerts):
        lines.append("No findings: nothing moved beyond its reference band.")
    for i, r in enumerate(data.alerts.itertuples(index=False), 1):
        aid, state = data.states.get((r.finding, r.subject), (None, "?"))
        ev = r.evidence_json if isinstance(r.evidence_json, dict) else {}
        links = ", ".join(f"[{l['label']}]({l['url']})" for l in ev.get("links", []))
        if aid is not None:
            links += f", [alert #{aid}](/alerts?alert={aid})"
        lines += [f"{i}. **{r.severity.upper()}** `{r.finding}` · **{r.subject}** (score {r.score:.1f}, {state})  ",
                  f"   {r.title}  ", f"   *Action:* {r.action}  ", f"   {links}", ""]  # fmt: skip
    q = data.quality_series
    if len(q):
        lines += ["## Model quality, last 30 days", "", "| head | AUC today | AUC trend | calibration today | calibration trend |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for h, g in q.groupby("head"):
            g = g.sort_values("day")
            today = g[g["day"] == data.day]
            a = today["auc"].iloc[0] if len(today) else float("nan")
            c = today["calibration"].iloc[0] if len(today) else float("nan")
            lines.append(f"| {h} | {_num(a)} | `{_spark(list(g['auc']))}` | {_num(c)} | `{_spark(list(g['calibration']))}` |")
        lines.append("")
    d = data.drift
    psi = d[(d["subject_kind"] == "field") & (d["statistic"] == "psi")].sort_values("value", ascending=False)
    if len(psi):
        both = np.r_[psi["value"].to_numpy(dtype=float), psi["threshold"].to_numpy(dtype=float)]
        vmax = float(both[np.isfinite(both)].max()) if np.isfinite(both).any() else 1.0
        lines += ["## Input drift per field (PSI vs reference)", "", "```"]
        w = max(len(s) for s in psi["subject"])
        for r in psi.itertuples(index=False):
            flag = " ALERT" if r.alert else ""
            lines.append(f"{r.subject:<{w}} {_bar(r.value, vmax):<25} {_num(r.value):>8} (threshold {_num(r.threshold)}){flag}")
        lines += ["```", ""]
    sal = d[(d["subject_kind"] == "saliency") & (d["statistic"] == "share")]
    if len(sal):
        lines += ["## Saliency share per field", "", "```"]
        w = max(len(s) for s in sal["subject"])
        for r in sal.sort_values("value", ascending=False).itertuples(index=False):
            flag = " ALERT" if r.alert else ""
            lines.append(f"{r.subject:<{w}} {_bar(r.value, 1.0):<25} {_num(r.value, True):>6} (ref {_num(r.reference, True)}){flag}")
        lines += ["```", ""]
    al = d[d["alert"].fillna(False).astype(bool)]
    lines += [f"## Drift tests that alerted ({len(al)} of {len(d)})", ""]
    if len(al):
        lines += ["| kind | subject | statistic | value | reference | alert when | method |", "|---|---|---|---|---|---|---|"]
        for r in al.itertuples(index=False):
            lines.append(f"| {r.subject_kind} | {r.subject} | {r.statistic} | {_num(r.value)} | {_num(r.reference)} | "
                         f"{r.direction} {_num(r.threshold)} | {r.method} |")  # fmt: skip
    lines.append("")
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1150px;color:#222}
h1{font-size:22px} h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px;margin:6px 0} th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
table.meta th{background:#f6f6f6}
.finding{border-left:5px solid #888;padding:6px 12px;margin:10px 0;background:#fafafa}
.sev{color:#fff;border-radius:3px;padding:1px 6px;font-size:12px;text-transform:uppercase}
.score{color:#777;font-size:12px} .action{color:#444;font-style:italic} .links a{margin-right:10px}
.ok{color:#1e8449} .foot{color:#777;font-size:12px;margin-top:32px}
"""

__all__ = ["ReportData", "load_report", "to_html", "to_markdown", "write_report"]
