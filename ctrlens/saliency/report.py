"""Per-field saliency of a model on a day: :func:`report` and :class:`SaliencyReport`.

A report holds one ``Result("saliency")`` row per (head, field): the per-row score (L2 norm of the
field's attribution over the embedding dimension; sequence fields over all valid positions too)
aggregated over the day's rows -- mean, std, p50, p90 -- and ``share`` = mean / sum of the head's
means, the number that compares across days and checkpoints.
"""

from __future__ import annotations

import html
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ctrlens.errors import InputError
from ctrlens.models.interface import ModelView
from ctrlens.results import COLUMNS, Result, jsonable
from ctrlens.saliency._inputs import Rows, evaluating, load_rows, model_version, open_dataset, resolve_model
from ctrlens.saliency.base import BASELINES, FieldAttribution, mean_embeddings
from ctrlens.saliency.input_x_gradient import InputXGradient
from ctrlens.saliency.integrated_gradients import IntegratedGradients
from ctrlens.saliency.saliency import Saliency

METHODS: dict[str, type[FieldAttribution]] = {
    Saliency.name: Saliency,
    InputXGradient.name: InputXGradient,
    IntegratedGradients.name: IntegratedGradients,
}
#: The default method and baseline of :func:`report`, the CLI and the nightly job: chosen by measured
#: agreement with permutation importance on MovieLens, Census-Income, Criteo and the synthetic world
#: (``benchmarks/saliency_agreement.py``; the table is in docs/saliency.md).
DEFAULT_METHOD = InputXGradient.name
#: What ``baseline=None`` means for a method that reads a baseline: each field's mean embedding
#: over the analysed rows (:func:`resolve_baseline`).
DEFAULT_BASELINE = "mean"


def make_method(
    model: Any,
    method: str,
    *,
    fields: Iterable[str] | None = None,
    target: str = "logit",
    n_steps: int = 16,
    internal_batch_size: int | None = None,
) -> FieldAttribution:
    """The attribution object for a method name (``saliency``, ``input_x_gradient``, ``integrated_gradients``)."""
    if method not in METHODS:
        raise InputError(f"unknown saliency method {method!r}; methods: {list(METHODS)}")
    if method == IntegratedGradients.name:
        return IntegratedGradients(model, fields=fields, target=target, n_steps=n_steps, internal_batch_size=internal_batch_size)
    return METHODS[method](model, fields=fields, target=target)


def resolve_heads(view: ModelView, head: str | Iterable[str] | None) -> list[str]:
    """Head names: one, several, or all (``None`` / ``"all"``); unknown ones are refused with the list."""
    if head is None or head == "all":
        return list(view.heads)
    names = [head] if isinstance(head, str) else list(head)
    return [view.head(h).name for h in names]


def resolve_baseline(
    baseline: str | Mapping[str, Tensor] | None, attr: FieldAttribution, rows: Rows
) -> tuple[dict[str, Tensor] | None, str | None]:
    """``(field -> baseline tensor or None for zero, description for the metadata)``.

    ``None`` is the method's default: :data:`DEFAULT_BASELINE` (``"mean"``) for a method that reads a
    baseline, none for ``saliency``. ``"mean"`` is each field's mean embedding output over the
    analysed rows (:func:`~ctrlens.saliency.mean_embeddings`): ``[D]`` per one-valued field (a bag
    field: its pooled output; a dense field: its projected vector), the mean over *valid* positions
    for a sequence field (used at every valid position; padding keeps the input, so it contributes
    nothing). Every day gets the same rule on its own rows, like permutation importance, which
    permutes within the day: a field that does not vary on the day contributes nothing.
    """
    if baseline is None:
        baseline = DEFAULT_BASELINE if attr.uses_baseline else "zero"
    if not attr.uses_baseline:
        if not (isinstance(baseline, str) and baseline == "zero"):
            raise InputError(
                f"method {attr.name!r} takes no baseline (got {baseline if isinstance(baseline, str) else 'a dict'!r}); "
                "use method='input_x_gradient' or 'integrated_gradients'"
            )
        return None, None
    if isinstance(baseline, str):
        if baseline == "zero":
            return None, "zero"
        if baseline == "mean":
            where = f"day {rows.day}" if rows.day else "the data"
            return mean_embeddings(attr.view, rows.batches, attr.fields), f"mean embedding over the {rows.rows} analysed rows of {where}"
        raise InputError(f"unknown baseline {baseline!r}; baselines: {list(BASELINES)} or a dict field -> tensor")
    if not isinstance(baseline, Mapping):
        raise InputError(f"baseline must be one of {list(BASELINES)} or a dict field -> tensor, got {type(baseline).__name__}")
    unknown = sorted(set(baseline) - set(attr.view.fields))
    if unknown:
        raise InputError(f"baseline names unknown field(s) {unknown}; fields: {sorted(attr.view.fields)}")
    missing = [f for f in attr.fields if f not in baseline]
    if missing:
        raise InputError(f"baseline dict lacks field(s) {missing}; give one tensor per field (e.g. mean_embeddings() of a reference day)")
    return {f: torch.as_tensor(baseline[f]).to(attr.view.device) for f in attr.fields}, "given (field -> tensor, e.g. a reference-day mean)"


def report(
    model: Any,
    data: Any,
    day: str | None = None,
    method: str = DEFAULT_METHOD,
    head: str | Iterable[str] | None = "ctr",
    max_rows: int = 20000,
    batch_size: int = 4096,
    n_steps: int = 16,
    baseline: str | Mapping[str, Tensor] | None = None,
    seed: int = 0,
    device: str = "cpu",
    *,
    target: str = "logit",
    fields: Iterable[str] | None = None,
    internal_batch_size: int | None = None,
) -> "SaliencyReport":
    """Per-field saliency of ``model`` on ``day`` of ``data``.

    Args:
        model: a reference model, a :class:`~ctrlens.models.interface.ModelView` (a user's own model
            via :func:`ctrlens.attach`) or a checkpoint path.
        data: a ``DailyDataset``, a dataset root, a ``Batch`` or an iterable of ``Batch``.
        day: ``"YYYY-MM-DD"``; ``None`` = the dataset's latest day (a label only for batches).
        method: ``"input_x_gradient"`` (default: gradient x (input - baseline); ranks fields like
            permutation importance, docs/saliency.md), ``"saliency"`` (|gradient|: sensitivity),
            ``"integrated_gradients"``.
        head: a head name, a list of them, or ``None``/``"all"`` for every head: one set of rows each.
        max_rows: rows analysed (a seeded random sample of the day); ``batch_size`` rows per pass.
        n_steps: Integrated Gradients path steps.
        baseline: ``None`` (default: ``"mean"`` for ``input_x_gradient`` / ``integrated_gradients``,
            none for ``saliency``), ``"zero"``, ``"mean"`` (each field's mean embedding over the
            analysed rows, see :func:`resolve_baseline`) or a dict field -> tensor ``[D]`` (e.g.
            :func:`~ctrlens.saliency.mean_embeddings` of a reference day).
        device: where the model and batches run (the model is moved there).
        target: ``"logit"`` (default, recommended) or ``"probability"``.
        fields: restrict to these fields (default all).
        internal_batch_size: most rows per IG pass (default ``batch_size``): bounds memory.
    """
    t0 = time.perf_counter()
    data = open_dataset(data)
    view, checkpoint = resolve_model(model, schema=getattr(data, "schema", None))
    attr = make_method(view, method, fields=fields, target=target, n_steps=n_steps, internal_batch_size=internal_batch_size)
    heads = resolve_heads(view, head)
    rows = load_rows(data, day, max_rows=max_rows, batch_size=batch_size, seed=seed)
    dev = torch.device(device)
    with evaluating(view, dev):
        rows.batches = [b.to(dev) for b in rows.batches]
        base, base_desc = resolve_baseline(baseline, attr, rows)
        acc = _Accumulator(attr.fields, heads)
        for b in rows.batches:
            cap = attr.capture(b)
            for h in heads:
                acc.add(attr.attribute(b, h, baselines=base, captured=cap))
    frame = acc.frame(attr.name)
    meta = {
        "model": view.name,
        "checkpoint": checkpoint,
        "model_version": model_version(view),
        "day": rows.day,
        "data": rows.source,
        **attr.describe(),
        "heads": heads,
        "target_source": acc.target_source,
        "baseline": base_desc,
        "rows": rows.rows,
        "max_rows": max_rows,
        "batch_size": batch_size,
        "seed": seed,
        "device": str(dev),
        "fields": list(attr.fields),
        "positions": acc.positions(),
        "padding_leak": acc.leak,
        "ig": acc.ig_summary(),
        "seconds": round(time.perf_counter() - t0, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return SaliencyReport(Result("saliency", frame, meta))


class _Accumulator:
    """Per-row scores of every (head, field) over the day's batches."""

    def __init__(self, fields: list[str], heads: list[str]):
        self.fields, self.heads = fields, heads
        self.scores: dict[str, dict[str, list[Tensor]]] = {h: {f: [] for f in fields} for h in heads}
        self.pos_sum: dict[str, dict[str, Tensor]] = {h: {} for h in heads}
        self.pos_cnt: dict[str, dict[str, Tensor]] = {h: {} for h in heads}
        self.delta: dict[str, list[Tensor]] = {h: [] for h in heads}
        self.change: dict[str, list[Tensor]] = {h: [] for h in heads}
        self.leak: dict[str, float] = {}
        self.target_source: dict[str, str] = {}

    def add(self, fa: Any) -> None:
        h = fa.head
        self.target_source[h] = fa.target
        for f, s in fa.field_scores().items():
            self.scores[h][f].append(s.double().cpu())
        for f, ps in fa.position_scores().items():
            m = fa.masks[f]
            s, c = (ps * m).sum(0).double().cpu(), m.sum(0).double().cpu()
            self.pos_sum[h][f] = self.pos_sum[h][f] + s if f in self.pos_sum[h] else s
            self.pos_cnt[h][f] = self.pos_cnt[h][f] + c if f in self.pos_cnt[h] else c
        if fa.delta is not None:
            self.delta[h].append(fa.delta.abs().double().cpu())
            if fa.baseline_output is not None:
                self.change[h].append((fa.output - fa.baseline_output).abs().double().cpu())
        for f, v in fa.padding_leak.items():
            self.leak[f] = max(self.leak.get(f, 0.0), v)

    def frame(self, method: str) -> pd.DataFrame:
        recs = []
        for h in self.heads:
            per = {f: torch.cat(v).numpy() for f, v in self.scores[h].items()}
            means = {f: float(v.mean()) for f, v in per.items()}
            total = sum(means.values())
            delta = float(torch.cat(self.delta[h]).mean()) if self.delta[h] else float("nan")
            for f, v in per.items():
                p50, p90 = np.percentile(v, [50, 90])
                recs.append(
                    {
                        "field": f,
                        "head": h,
                        "method": method,
                        "rows": int(v.size),
                        "mean": means[f],
                        "std": float(v.std()),
                        "p50": float(p50),
                        "p90": float(p90),
                        "share": means[f] / total if total > 0 else float("nan"),
                        "delta": delta,
                    }
                )
        df = pd.DataFrame(recs, columns=list(COLUMNS["saliency"]))
        order = {h: i for i, h in enumerate(self.heads)}
        df = df.assign(_h=df["head"].map(order)).sort_values(["_h", "share"], ascending=[True, False], kind="stable")
        return df.drop(columns="_h").reset_index(drop=True)

    def positions(self) -> dict[str, dict[str, list[float | None]]]:
        """head -> sequence field -> mean score per position over rows where it is valid."""
        out: dict[str, dict[str, list[float | None]]] = {}
        for h in self.heads:
            out[h] = {}
            for f, s in self.pos_sum[h].items():
                c = self.pos_cnt[h][f]
                out[h][f] = [float(a / n) if n > 0 else None for a, n in zip(s.tolist(), c.tolist())]
        return out

    def ig_summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for h in self.heads:
            if not self.delta[h]:
                continue
            d = torch.cat(self.delta[h])
            ch = torch.cat(self.change[h]) if self.change[h] else torch.tensor([float("nan")])
            out[h] = {
                "mean_abs_delta": float(d.mean()),
                "max_abs_delta": float(d.max()),
                "mean_abs_change": float(ch.mean()),  # mean |f(x) - f(baseline)|, the scale of delta
                "relative_delta": float(d.mean() / ch.mean()) if float(ch.mean()) > 0 else float("nan"),
            }
        return out


class SaliencyReport:
    """Saliency of one model (checkpoint) on one day: a ``Result("saliency")`` plus views of it.

    Attributes:
        result: the :class:`~ctrlens.results.Result` the store persists (``to_result()``).
    """

    def __init__(self, result: Result):
        if result.kind != "saliency":
            raise InputError(f"SaliencyReport needs a 'saliency' result, got {result.kind!r}")
        self.result = result

    # -- accessors --------------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        return self.result.meta

    @property
    def heads(self) -> list[str]:
        return list(dict.fromkeys(self.result.frame["head"]))

    @property
    def fields(self) -> list[str]:
        return list(dict.fromkeys(self.result.frame["field"]))

    def _head(self, head: str | None) -> str:
        heads = self.heads
        if head is None:
            return heads[0]
        if head not in heads:
            raise InputError(f"report has no head {head!r}; heads: {heads}")
        return head

    def to_frame(self) -> pd.DataFrame:
        """One row per (head, field), columns of ``COLUMNS["saliency"]``, by share within each head."""
        return self.result.to_frame()

    def to_result(self) -> Result:
        return self.result

    def shares(self, head: str | None = None) -> pd.Series:
        """field -> share of ``head`` (default: the first head)."""
        f = self.result.frame
        sel = f[f["head"] == self._head(head)]
        return pd.Series(sel["share"].to_numpy(), index=sel["field"].to_numpy(), name="share")

    def top(self, k: int = 10, head: str | None = None) -> pd.DataFrame:
        """The ``k`` fields with the largest share for ``head``."""
        f = self.result.frame
        sel = f[f["head"] == self._head(head)].sort_values("share", ascending=False, kind="stable")
        return sel.head(k).reset_index(drop=True)

    def compare(self, other: "SaliencyReport", head: str | None = None) -> pd.DataFrame:
        """Per-field change of share from this report (``a``) to ``other`` (``b``).

        Columns ``head, field, share_a, share_b, delta (= b - a), ratio (= b / a)``, sorted by
        ``|delta|``. Fields present on one side only get share 0 on the other. All common heads
        unless ``head`` is given.
        """
        heads = [self._head(head)] if head else [h for h in self.heads if h in other.heads]
        if not heads:
            raise InputError(f"reports share no head: {self.heads} vs {other.heads}")
        parts = []
        for h in heads:
            a, b = self.shares(h), other.shares(h) if h in other.heads else pd.Series(dtype=float)
            df = pd.concat([a.rename("share_a"), b.rename("share_b")], axis=1).fillna(0.0)
            df.index.name = "field"
            df = df.reset_index()
            df.insert(0, "head", h)
            parts.append(df)
        out = pd.concat(parts, ignore_index=True)
        out["delta"] = out["share_b"] - out["share_a"]
        with np.errstate(divide="ignore", invalid="ignore"):
            out["ratio"] = out["share_b"] / out["share_a"]
        out = out.reindex(out["delta"].abs().sort_values(ascending=False, kind="stable").index).reset_index(drop=True)
        out.attrs = {"a": _label(self.meta), "b": _label(other.meta)}
        return out

    # -- rendering --------------------------------------------------------------------------------
    def figure(self, head: str | None = None) -> Any:
        """A plotly bar chart: mean per-row score per field (error bars: std over rows), per head."""
        import plotly.graph_objects as go

        heads = [self._head(head)] if head else self.heads
        f = self.result.frame
        order = list(self.shares(heads[0]).sort_values(ascending=False).index)
        fig = go.Figure()
        for h in heads:
            sel = f[f["head"] == h].set_index("field").reindex(order)
            fig.add_bar(
                name=h,
                x=order,
                y=sel["mean"],
                error_y={"type": "data", "array": sel["std"].to_numpy(), "visible": True},
                text=[f"{s:.0%}" for s in sel["share"].fillna(0)],
                textposition="outside",
                customdata=np.stack([sel["share"], sel["p50"], sel["p90"], sel["rows"]], axis=1),
                hovertemplate="%{x}<br>mean %{y:.4g}<br>share %{customdata[0]:.1%}<br>p50 %{customdata[1]:.4g}"
                "<br>p90 %{customdata[2]:.4g}<br>rows %{customdata[3]}<extra>" + h + "</extra>",
            )
        m = self.meta
        fig.update_layout(
            title=f"{m.get('model')} / {m.get('day') or 'batches'} / {m.get('method')} on {m.get('target')} (label: share)",
            xaxis_title="field",
            yaxis_title="mean score per row (L2 of attribution)",
            barmode="group",
            template="plotly_white",
            legend_title="head",
        )
        return fig

    def to_html(self, path: str | Path, *, reference: "SaliencyReport | None" = None) -> Path:
        """Write a standalone page (plotly JS inline, opens offline): chart, table, metadata, and
        the change of share from ``reference`` (another day or checkpoint) to this report when
        given. Returns the path."""
        import plotly.io as pio

        m = self.meta
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>ctrlens saliency: {html.escape(_label(m))}</title>",
            f"<style>{_CSS}</style></head><body>",
            f"<h1>Feature saliency: {html.escape(str(m.get('model')))}</h1>",
            _meta_table(m),
            pio.to_html(self.figure(), full_html=False, include_plotlyjs=True, div_id="saliency-chart"),
            "<h2>Per field</h2>",
            self.to_frame().to_html(index=False, float_format=lambda x: f"{x:.4g}", classes="fields", na_rep="-"),
        ]
        pos = m.get("positions") or {}
        for h, per in pos.items():
            for fld, vals in per.items():
                parts.append(f"<h3>{html.escape(fld)} ({html.escape(h)}): mean score per position</h3>")
                row = pd.DataFrame([vals], columns=[str(i) for i in range(len(vals))])
                parts.append(row.to_html(index=False, float_format=lambda x: f"{x:.3g}", na_rep="-"))
        parts.extend(_warnings(m))
        if reference is not None:
            cmp = reference.compare(self)
            parts.append(f"<h2>Change of share: {html.escape(_label(reference.meta))} &rarr; {html.escape(_label(m))}</h2>")
            parts.append(pio.to_html(_compare_figure(cmp), full_html=False, include_plotlyjs=False, div_id="saliency-compare"))
            parts.append(cmp.to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="-"))
        parts.append("<p class='foot'>Written by ctrlens. Score: L2 norm of each field's attribution over the embedding "
                     "dimension per row; share = the field's mean / the sum of the head's means (docs/saliency.md).</p>")
        parts.append("</body></html>")
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(parts), encoding="utf-8")
        return p

    def to_json(self, path: str | Path | None = None, *, reference: "SaliencyReport | None" = None) -> str:
        """The report as JSON: ``{"kind": "saliency_report", "result": Result.to_dict()}``, plus
        ``"reference": {"result": ..., "changes": [reference.compare(self) rows]}`` when given.
        Written to ``path`` too if given."""
        d: dict[str, Any] = {"kind": "saliency_report", "result": self.result.to_dict()}
        if reference is not None:
            d["reference"] = {
                "result": reference.result.to_dict(),
                "changes": json.loads(reference.compare(self).to_json(orient="records")),
            }
        text = json.dumps(jsonable(d), indent=1)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "SaliencyReport":
        s = str(text_or_path)
        text = Path(s).read_text(encoding="utf-8") if not s.lstrip().startswith("{") else s
        d = json.loads(text)
        r = Result.from_dict(d["result"] if "result" in d else d)
        for c, t in COLUMNS["saliency"].items():
            if t == "float":
                r.frame[c] = pd.to_numeric(r.frame[c], errors="coerce").astype(float)
            elif t == "int":
                r.frame[c] = r.frame[c].astype(int)
        return cls(r)

    def __repr__(self) -> str:
        return f"SaliencyReport({_label(self.meta)}, heads={self.heads}, fields={len(self.fields)})"


def _label(m: Mapping[str, Any]) -> str:
    ck = m.get("checkpoint")
    who = f"{m.get('model')}" + (f" @ {Path(ck).name}" if ck else "")
    return f"{who} / {m.get('day') or 'batches'} / {m.get('method')}"


def _meta_table(m: Mapping[str, Any]) -> str:
    keys = ["model", "checkpoint", "model_version", "day", "data", "method", "heads", "target", "target_source", "baseline", "n_steps", "rows", "seed", "created"]
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(m[k]) if isinstance(m[k], (list, dict)) else str(m[k]))}</td></tr>"
        for k in keys
        if m.get(k) is not None
    )
    return f"<table class='meta'>{rows}</table>"


def _warnings(m: Mapping[str, Any]) -> list[str]:
    out = []
    for f, v in (m.get("padding_leak") or {}).items():
        if v > 0:
            out.append(
                f"<p class='warn'>Field {html.escape(f)}: padding positions reached the output (max |attribution| "
                f"{v:.3g} before zeroing): the model's padding mask may be broken.</p>"
            )
    for h, s in (m.get("ig") or {}).items():
        rd = s.get("relative_delta")
        if rd is not None and np.isfinite(rd) and rd > 0.05:
            out.append(
                f"<p class='warn'>Head {html.escape(h)}: Integrated Gradients convergence delta is {rd:.1%} of "
                "|f(x) - f(baseline)|; raise n_steps.</p>"
            )
    return out


def _compare_figure(cmp: pd.DataFrame) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    label = cmp["field"] if cmp["head"].nunique() == 1 else cmp["head"] + "/" + cmp["field"]
    fig.add_bar(name=cmp.attrs.get("a", "a"), x=label, y=cmp["share_a"])
    fig.add_bar(name=cmp.attrs.get("b", "b"), x=label, y=cmp["share_b"])
    fig.update_layout(barmode="group", template="plotly_white", yaxis_title="share", yaxis_tickformat=".0%",
                      title="Share of saliency per field, sorted by |change|", legend={"orientation": "h", "y": -0.3})
    return fig


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:28px} h3{font-size:14px;margin:16px 0 4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0} th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
table.meta th{text-align:left;background:#f6f6f6} table.meta td{text-align:left}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:6px 10px} .foot{color:#777;font-size:12px;margin-top:32px}
"""
