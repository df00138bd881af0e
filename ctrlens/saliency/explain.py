"""Why did the model score *this* impression as it did? Per-sample explanations.

:func:`explain` attributes one row's head target to its fields and, for sequence fields, to each
history position, next to the model's own attention weights when its forward returns them as
``"attention.<field>"`` (``[B, L]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd
import torch
from torch import Tensor

from ctrlens.data.batch import Batch
from ctrlens.data.schema import INDEX_OFFSET, OOV_INDEX, PAD_INDEX
from ctrlens.errors import InputError
from ctrlens.models.interface import ModelView
from ctrlens.saliency._inputs import Rows, evaluating, open_dataset, pick_day, resolve_model
from ctrlens.saliency.report import make_method, resolve_baseline


@dataclass
class Explanation:
    """One row's attribution.

    Attributes:
        row: the row number within the day (``Batch.row``), or its position in the data.
        head, method, target: what was attributed (``target``: ``"logit"``, ``"probability"`` or
            ``"logit(probability)"``).
        value: the target at the row's input; ``probability``: the head's output.
        baseline_value, delta: Integrated Gradients' ``f(baseline)`` and convergence delta.
        fields: one row per field, by score: ``field, kind, index, raw_id, score`` (L2 norm of the
            attribution), ``share`` (of the row's total), ``contribution`` (sum of the attribution:
            its signed push on the target; for IG these add up to ``value - baseline_value``; NaN
            for ``saliency``, which is unsigned).
        candidate: ``{"field", "index", "raw_id"}`` of the candidate item, when known.
        history: sequence field -> one row per valid position: ``position, index, raw_id, score,
            share, contribution, attention`` (NaN when the model gives no attention output).
    """

    row: int
    head: str
    method: str
    target: str
    value: float
    probability: float | None
    fields: pd.DataFrame
    candidate: dict[str, Any] | None = None
    history: dict[str, pd.DataFrame] = field(default_factory=dict)
    baseline_value: float | None = None
    delta: float | None = None

    def top(self, k: int = 5) -> pd.DataFrame:
        """The ``k`` fields with the largest score."""
        return self.fields.head(k).reset_index(drop=True)

    def looked_at(self, field: str | None = None, k: int = 3) -> pd.DataFrame:
        """The ``k`` history positions of ``field`` (default: the first sequence field) with the
        largest attribution score."""
        if not self.history:
            raise InputError("this model has no sequence fields with positions to look at")
        f = field or next(iter(self.history))
        if f not in self.history:
            raise InputError(f"no sequence field {f!r}; sequence fields: {list(self.history)}")
        return self.history[f].sort_values("score", ascending=False, kind="stable").head(k).reset_index(drop=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "head": self.head,
            "method": self.method,
            "target": self.target,
            "value": self.value,
            "probability": self.probability,
            "baseline_value": self.baseline_value,
            "delta": self.delta,
            "candidate": self.candidate,
            "fields": self.fields.to_dict(orient="records"),
            "history": {k: v.to_dict(orient="records") for k, v in self.history.items()},
        }

    def __str__(self) -> str:
        p = f" (p={self.probability:.3f})" if self.probability is not None else ""
        lines = [f"row {self.row}: {self.head} {self.target} = {self.value:.4f}{p}, method {self.method}"]
        if self.candidate:
            lines.append(f"candidate {self.candidate['field']} = {self.candidate['raw_id']}")
        for r in self.top(5).itertuples():
            lines.append(f"  {r.field:<24} share {r.share:6.1%}  score {r.score:.4g}")
        for f, h in self.history.items():
            top = self.looked_at(f, 3)
            items = ", ".join(f"pos {int(r.position)} (id {r.raw_id}, {r.share:.0%})" for r in top.itertuples())
            lines.append(f"  {f}: looked at {items}")
        return "\n".join(lines)


def _raw(index: int) -> int | None:
    """Raw id of an embedding index (None for padding/missing and OOV)."""
    return None if index in (PAD_INDEX, OOV_INDEX) else index - INDEX_OFFSET


def _find_row(data: Any, row: int, day: str | None, batch_size: int) -> tuple[Batch, int, Any, str | None]:
    """``(batch holding the row, its position in the batch, schema or None, day)``."""
    data = open_dataset(data)
    schema = getattr(data, "schema", None)
    if hasattr(data, "iter_batches") and hasattr(data, "days"):
        day = pick_day(data, day)
        it: Any = data.iter_batches(day, batch_size=batch_size)
    elif isinstance(data, Batch):
        it = [data]
    else:
        it = data
    seen = 0
    for b in it:
        if not isinstance(b, Batch):
            raise InputError(f"data: expected Batch items, got {type(b).__name__}")
        if b.row is not None:
            hit = (b.row == row).nonzero()
            if len(hit):
                return b, int(hit[0, 0]), schema, day
        elif seen <= row < seen + len(b):
            return b, row - seen, schema, day
        seen += len(b)
    where = f"day {day!r}" if day else "the data"
    raise InputError(f"row {row} is not in {where} ({seen} rows)")


def _candidate(view: ModelView, schema: Any, batch: Batch, i: int) -> dict[str, Any] | None:
    name = None
    if schema is not None and hasattr(schema, "role"):
        f = schema.role("item")
        name = f.name if f is not None else None
    if name is None:  # a one-valued field read from the same table as a history field
        seq_mods = {id(s.tap.module) for s in view.fields.values() if s.tap.mask}
        name = next((n for n, s in view.fields.items() if not s.tap.mask and id(s.tap.module) in seq_mods), None)
    if name is None or name not in batch.features:
        return None
    idx = int(batch.features[name][i])
    return {"field": name, "index": idx, "raw_id": _raw(idx)}


def explain(
    model: Any,
    data: Any,
    row: int,
    *,
    day: str | None = None,
    head: str = "ctr",
    method: str = "integrated_gradients",
    baseline: str | Mapping[str, Tensor] = "zero",
    n_steps: int = 32,
    target: str = "logit",
    device: str = "cpu",
    batch_size: int = 4096,
) -> Explanation:
    """Explain one row's prediction: top fields, the candidate, the history items looked at.

    Args:
        model, data, day, target, device: as for :func:`ctrlens.saliency.report`.
        row: row number within the day (``Batch.row``), else the row's position in ``data``.
        method: default ``"integrated_gradients"`` -- for one row it is cheap, and its
            contributions add up to ``value - baseline_value``.
        baseline: ``"zero"``, ``"mean"`` (over the batch holding the row) or field -> tensor.
    """
    batch, i, schema, day = _find_row(data, row, day, batch_size)
    view, _ = resolve_model(model, schema=schema)
    attr = make_method(view, method, target=target, n_steps=n_steps)
    spec = view.head(head)
    dev = torch.device(device)
    with evaluating(view, dev):
        batch = batch.to(dev)
        one = batch.select(torch.tensor([i], device=dev))
        base, _ = resolve_baseline(baseline, attr, Rows([batch], len(batch), day, None, schema))
        fa = attr.attribute(one, spec.name, baselines=base)
        with torch.no_grad():
            outputs = view(one)

    scores = {f: float(s[0]) for f, s in fa.field_scores().items()}
    total = sum(scores.values()) or 1.0
    signed = attr.name != "saliency"
    recs = []
    for f, s in scores.items():
        feat = one.features.get(f)
        idx = int(feat[0]) if feat is not None and feat.dim() == 1 and not feat.is_floating_point() else None
        recs.append(
            {
                "field": f,
                "kind": view.fields[f].kind,
                "index": idx,
                "raw_id": _raw(idx) if idx is not None else None,
                "score": s,
                "share": s / total,
                "contribution": float(fa.attributions[f].sum()) if signed else float("nan"),
            }
        )
    fields = pd.DataFrame(recs).sort_values("score", ascending=False, kind="stable").reset_index(drop=True)

    history: dict[str, pd.DataFrame] = {}
    for f, ps in fa.position_scores().items():
        m = fa.masks[f][0]
        pos = ps[0]
        ids = one.features.get(f)
        att = outputs.get(f"attention.{f}")
        att_row = att.reshape(len(one), -1)[0] if isinstance(att, Tensor) else None
        a = fa.attributions[f][0]
        tot = float(pos.sum()) or 1.0
        rows_ = []
        for p in m.nonzero().flatten().tolist():
            idx = int(ids[0, p]) if ids is not None and ids.dim() == 2 else None
            rows_.append(
                {
                    "position": p,
                    "index": idx,
                    "raw_id": _raw(idx) if idx is not None else None,
                    "score": float(pos[p]),
                    "share": float(pos[p]) / tot,
                    "contribution": float(a[p].sum()) if signed else float("nan"),
                    "attention": float(att_row[p]) if att_row is not None and p < att_row.numel() else float("nan"),
                }
            )
        history[f] = pd.DataFrame(
            rows_, columns=["position", "index", "raw_id", "score", "share", "contribution", "attention"]
        )

    prob = outputs.get(spec.output)
    return Explanation(
        row=int(one.row[0]) if one.row is not None else row,
        head=spec.name,
        method=attr.name,
        target=fa.target,
        value=float(fa.output[0]),
        probability=float(prob.reshape(-1)[0]) if isinstance(prob, Tensor) else None,
        fields=fields,
        candidate=_candidate(view, schema, one, 0),
        history=history,
        baseline_value=None if fa.baseline_output is None else float(fa.baseline_output[0]),
        delta=None if fa.delta is None else float(fa.delta[0]),
    )
