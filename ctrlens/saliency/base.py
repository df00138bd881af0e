"""Shared machinery of the field attribution methods (captum style: one method, one class).

Attribution targets are the model's *field embedding outputs* (``ModelView.fields`` taps): ``[B, D]``
for one-valued fields, ``[B, L, D]`` for sequence fields (masked), whatever ``[B, ...]`` a dense or
image field's tap yields. A :class:`~ctrlens.models.taps.TapSession` callback *replaces* each tapped
output by a tensor we hand in, so captum sees the model as ``f(*field_embeddings) -> [B]`` and one
forward + one backward per batch covers every field at once -- including two fields read from one
shared table (per-call taps), where captum's layer methods break (captum #1104).

Per batch, the flow is:

1. :meth:`FieldAttribution.capture` -- a forward that stops as soon as every field tap has fired
   (only the embedding lookups run), giving the field embeddings ``x`` (and padding masks);
2. the method's captum attribution on ``f`` at ``x`` (one forward + backward for gradient methods,
   ``n_steps`` of them in bounded chunks for Integrated Gradients);
3. padding positions are set to exactly zero, and per-row scores are the L2 norm over the
   embedding dimension (:meth:`FieldAttributions.field_scores`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Literal, Mapping, Sequence, Union

import torch
from torch import Tensor

from ctrlens.data.batch import Batch
from ctrlens.errors import InputError
from ctrlens.models.interface import HeadSpec, InterfaceError, ModelView, as_view
from ctrlens.models.taps import TapEvent, TapSession

Target = Literal["logit", "probability"]
TARGETS: tuple[str, ...] = ("logit", "probability")
#: ``"zero"``, ``"mean"`` (per-field mean embedding over the analysed rows), or field -> tensor.
BaselineSpec = Union[str, Mapping[str, Tensor]]
BASELINES: tuple[str, ...] = ("zero", "mean")
_EPS = 1e-7


class _Captured(Exception):
    """Raised from a tap callback once every field is captured: ends the capture forward early."""


@dataclass
class Captured:
    """Field embedding outputs of one batch.

    Attributes:
        embeddings: field -> detached tensor ``[B, D]`` / ``[B, L, D]`` / ``[B, ...]``.
        masks: sequence field -> bool ``[B, L]`` (True at real positions).
    """

    embeddings: dict[str, Tensor]
    masks: dict[str, Tensor]


@dataclass
class FieldAttributions:
    """Attributions of one head's target on one batch of ``B`` rows.

    Attributes:
        head: head name; ``target``: ``"logit"`` or ``"probability"``; ``method``: method name.
        attributions: field -> tensor shaped like the field's embedding output; exactly zero at
            padding positions of sequence fields.
        masks: sequence field -> bool ``[B, L]``.
        output: ``[B]`` the attributed target at the input.
        delta: ``[B]`` captum's convergence delta (Integrated Gradients), else ``None``:
            ``sum of all fields' attributions - (output - baseline_output)`` per row.
        padding_leak: sequence field -> max |attribution| found at padding positions before they
            were zeroed. Non-zero means the model lets padding reach its output (a mask bug).
        baseline_output: ``[B]`` the target at the baseline (Integrated Gradients), else ``None``.
    """

    head: str
    target: str
    method: str
    attributions: dict[str, Tensor]
    masks: dict[str, Tensor]
    output: Tensor
    delta: Tensor | None = None
    padding_leak: dict[str, float] = field(default_factory=dict)
    baseline_output: Tensor | None = None

    def field_scores(self) -> dict[str, Tensor]:
        """field -> ``[B]`` per-row score: L2 norm over the embedding dim (and, for sequence
        fields, over all valid positions: the field as a whole)."""
        out: dict[str, Tensor] = {}
        for f, a in self.attributions.items():
            if f in self.masks:
                out[f] = self.position_scores()[f].pow(2).sum(1).sqrt()
            else:
                out[f] = a.abs() if a.dim() == 1 else a.flatten(1).norm(dim=1)
        return out

    def position_scores(self) -> dict[str, Tensor]:
        """Sequence field -> ``[B, L]`` per-position L2 norm over the embedding dim (0 at padding)."""
        out: dict[str, Tensor] = {}
        for f, m in self.masks.items():
            a = self.attributions[f]
            out[f] = a.abs() if a.dim() == 2 else a.flatten(2).norm(dim=2)
        return out


def _head_value(outputs: Mapping[str, Tensor], head: HeadSpec, target: str, rows: int) -> tuple[Tensor, str]:
    """The ``[rows]`` target of ``head`` from a forward's outputs, and where it came from."""
    if target == "logit" and head.logit is not None and head.logit in outputs:
        v, source = outputs[head.logit], "logit"
    else:
        if head.output not in outputs:
            raise InterfaceError(
                f"head {head.name!r}: the forward returned no output {head.output!r}; outputs: {sorted(outputs)}"
            )
        v, source = outputs[head.output], "probability"
        if target == "logit":
            # No logit output (e.g. ESMM's ctcvr = ctr * cvr): derive it. Exact in real numbers,
            # but saturated probabilities lose precision, so the source is reported.
            p = v.clamp(_EPS, 1 - _EPS)
            v, source = torch.log(p) - torch.log1p(-p), "logit(probability)"
    v = v.reshape(-1) if v.dim() > 1 and v.numel() == rows else v
    if v.shape != (rows,):
        raise InterfaceError(f"head {head.name!r}: expected a [{rows}] output, got shape {list(v.shape)}")
    return v, source


class _Substitute:
    """``f(*field_embeddings) -> [n]``: the model's head target with each field's embedding output
    replaced by the given tensor.

    captum calls it with ``n = k * B`` rows (Integrated Gradients stacks ``k`` steps of the batch,
    step-major), so the non-field inputs -- the batch -- are repeated the same way (row ``i`` of the
    call is row ``i % B`` of the batch). Every input is also added to the output times zero, so a
    field a head does not use (PAL's served ``ctr`` ignores ``position``) gets an exact zero
    gradient instead of an autograd error.
    """

    def __init__(self, view: ModelView, batch: Batch, fields: Sequence[str], head: HeadSpec, target: str):
        self.view, self.batch, self.fields, self.head, self.target = view, batch, list(fields), head, target
        self.taps = {f: view.fields[f] for f in self.fields}
        self.source = ""
        #: detached targets of the last two calls (IG's delta check ends with f(baseline), f(x)).
        self.previous: Tensor | None = None
        self.last: Tensor | None = None

    def __call__(self, *embeddings: Tensor) -> Tensor:
        n, b = int(embeddings[0].shape[0]), len(self.batch)
        if n == b:
            batch = self.batch
        elif n % b == 0:
            idx = torch.arange(n, device=embeddings[0].device) % b
            batch = self.batch.select(idx)
        else:  # pragma: no cover - captum always stacks whole batches
            raise RuntimeError(f"attribution call with {n} rows for a batch of {b}")
        values = dict(zip(self.fields, embeddings))

        def substitute(ev: TapEvent) -> Tensor:
            v = values[ev.name]
            if v.shape != ev.output.shape:
                raise InterfaceError(
                    f"field {ev.name!r}: the tapped output has shape {list(ev.output.shape)} but {list(v.shape)} "
                    "was expected; a field tap must be the per-row embedding output [B, ...]"
                )
            return v.to(ev.output.dtype)

        with TapSession(self.view, self.taps, substitute) as s:
            out = s.forward(batch)
        v, self.source = _head_value(out, self.head, self.target, n)
        self.previous, self.last = self.last, v.detach()
        zero = sum((e.reshape(n, -1).sum(1) for e in embeddings), torch.zeros_like(v))
        return v + 0.0 * zero

    def summed(self, *embeddings: Tensor) -> Tensor:
        """``[1]``: the sum of the rows' targets. Rows are independent (eval mode), so its gradient
        w.r.t. each row's embeddings is that row's gradient -- exactly what captum computes from
        the ``[B]`` output (it back-propagates ``torch.unbind(output)``, i.e. the sum), minus the
        cost of ``B`` autograd roots. Per-row targets stay in :attr:`last`."""
        return self(*embeddings).sum().reshape(1)


class FieldAttribution(ABC):
    """Attribution of a head's output to every feature field's embedding output.

    Subclasses implement :meth:`_attribute` with one captum method; this base captures the field
    embeddings, builds the substituted forward, resolves baselines and zeroes padding.

    Args:
        model: a reference model, a :class:`~ctrlens.models.interface.ModelView`, or anything
            :func:`~ctrlens.models.interface.as_view` accepts.
        fields: the fields to attribute to (default: all of the view's fields).
        target: ``"logit"`` (default, recommended: the logit is closer to linear in the
            embeddings, so attributions add up and do not vanish where the sigmoid saturates) or
            ``"probability"``.
    """

    name: ClassVar[str] = ""
    #: whether the method reads a baseline (``x - baseline`` enters the attribution).
    uses_baseline: ClassVar[bool] = False

    def __init__(self, model: Any, *, fields: Iterable[str] | None = None, target: str = "logit"):
        self.view = as_view(model)
        self.fields = list(self.view.fields) if fields is None else [self.view.field(f).name for f in fields]
        if not self.fields:
            raise InterfaceError(f"model {self.view.name!r} declares no fields to attribute to")
        if target not in TARGETS:
            raise InputError(f"target must be one of {list(TARGETS)}, got {target!r}")
        self.target = target

    # -- capture ----------------------------------------------------------------------------------
    def capture(self, batch: Batch) -> Captured:
        """The field embedding outputs of ``batch`` (detached); the forward stops after the last one."""
        got: dict[str, Tensor] = {}
        masks: dict[str, Tensor] = {}
        rows = len(batch)

        def keep(ev: TapEvent) -> None:
            out = ev.output
            if not isinstance(out, Tensor) or out.dim() < 1 or out.shape[0] != rows:
                raise InterfaceError(
                    f"field {ev.name!r}: tapped output has shape {list(getattr(out, 'shape', []))}, expected "
                    f"[{rows}, ...] (one row per impression); tap the per-row embedding output"
                )
            if not out.is_floating_point():
                raise InterfaceError(f"field {ev.name!r}: tapped output has dtype {out.dtype}, expected floating point")
            got[ev.name] = out.detach()
            if ev.mask is not None:
                masks[ev.name] = ev.mask.bool()
            if len(got) == len(self.fields):
                raise _Captured

        taps = {f: self.view.fields[f] for f in self.fields}
        with torch.no_grad(), TapSession(self.view, taps, keep) as s:
            try:
                s.forward(batch)
            except _Captured:
                pass
        return Captured(got, masks)

    # -- attribution ------------------------------------------------------------------------------
    def attribute(
        self,
        batch: Batch,
        head: str = "ctr",
        *,
        baselines: Mapping[str, Tensor] | None = None,
        captured: Captured | None = None,
    ) -> FieldAttributions:
        """Attributions of ``head``'s target on ``batch`` to every field.

        Args:
            batch: ``B`` rows (on the model's device).
            head: a head name of the view.
            baselines: field -> baseline tensor broadcastable to the field's per-row shape
                (``[D]``, ``[L, D]`` or ``[B, ...]``); missing fields use zero. Only read by methods
                with ``uses_baseline``. At padding positions the baseline is the input itself, so
                padding never moves along the path.
            captured: the batch's :meth:`capture`, to share it between heads.
        """
        spec = self.view.head(head)
        cap = captured if captured is not None else self.capture(batch)
        xs = tuple(cap.embeddings[f] for f in self.fields)
        bs = tuple(self._baseline(f, x, cap.masks.get(f), baselines) for f, x in zip(self.fields, xs))
        fn = _Substitute(self.view, batch, self.fields, spec, self.target)
        attrs, delta, output = self._attribute(fn, xs, bs)
        out: dict[str, Tensor] = {}
        leak: dict[str, float] = {}
        for f, a in zip(self.fields, attrs):
            a = a.detach()
            m = cap.masks.get(f)
            if m is not None:
                pad = (~m).reshape(*m.shape, *([1] * (a.dim() - 2)))
                leak[f] = float(a.masked_fill(~pad, 0).abs().max()) if a.numel() else 0.0
                a = a.masked_fill(pad, 0.0)
            out[f] = a
        return FieldAttributions(
            head=head,
            target=fn.source or self.target,
            method=self.name,
            attributions=out,
            masks=dict(cap.masks),
            output=output.detach(),
            delta=None if delta is None else delta.detach(),
            padding_leak=leak,
            # captum's delta check evaluates f(baseline) then f(x) last, so `previous` is f(baseline).
            baseline_output=None if delta is None or fn.previous is None else fn.previous,
        )

    def _baseline(self, f: str, x: Tensor, mask: Tensor | None, baselines: Mapping[str, Tensor] | None) -> Tensor:
        if not self.uses_baseline or not baselines or f not in baselines:
            b = torch.zeros_like(x)
        else:
            given = torch.as_tensor(baselines[f], dtype=x.dtype, device=x.device)
            try:
                b = torch.broadcast_to(given, x.shape).clone()
            except RuntimeError:
                raise InputError(
                    f"baseline for field {f!r} has shape {list(given.shape)}, which does not broadcast to the "
                    f"field's embedding output {list(x.shape)}; give [{x.shape[-1]}] (one vector per field)"
                ) from None
        if mask is not None:  # padding stays at the input all along the path
            pad = (~mask).reshape(*mask.shape, *([1] * (x.dim() - 2))).expand_as(x)
            b = torch.where(pad, x, b)
        return b

    @abstractmethod
    def _attribute(
        self, forward: _Substitute, inputs: tuple[Tensor, ...], baselines: tuple[Tensor, ...]
    ) -> tuple[tuple[Tensor, ...], Tensor | None, Tensor]:
        """``(attributions per input, convergence delta [B] or None, target at the input [B])``."""

    def describe(self) -> dict[str, Any]:
        """Method parameters for report metadata."""
        return {"method": self.name, "target": self.target}


def mean_embeddings(model: Any, batches: Iterable[Batch], fields: Iterable[str] | None = None) -> dict[str, Tensor]:
    """Per-field mean embedding ``[D]`` (``[...]`` for other per-row shapes) over ``batches``.

    Sequence fields average over valid positions only. Use it on a reference day to get a
    ``baseline=`` dict for another day (``baseline="mean"`` does it on the analysed rows).
    """
    method = _Capturer(model, fields=fields)
    sums: dict[str, Tensor] = {}
    counts: dict[str, float] = {}
    for batch in batches:
        cap = method.capture(batch.to(method.view.device))
        for f, x in cap.embeddings.items():
            m = cap.masks.get(f)
            if m is not None:
                w = m.reshape(*m.shape, *([1] * (x.dim() - 2))).to(x.dtype)
                s, c = (x * w).sum((0, 1)), float(m.sum())
            else:
                s, c = x.sum(0), float(x.shape[0])
            sums[f] = sums[f] + s if f in sums else s
            counts[f] = counts.get(f, 0.0) + c
    if not sums:
        raise InputError("mean_embeddings: the data has no rows")
    return {f: sums[f] / max(counts[f], 1.0) for f in sums}


class _Capturer(FieldAttribution):
    """A FieldAttribution used only for :meth:`capture`."""

    name = "capture"

    def _attribute(self, forward, inputs, baselines):  # pragma: no cover - never attributes
        raise NotImplementedError
