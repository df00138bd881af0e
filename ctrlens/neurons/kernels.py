"""Per-batch reductions of a layer output ``x [n, N]``: the hot path of neuron statistics.

Every batch of every layer is reduced to one flat vector (:func:`layout`): class counts, the
shift, per-class shifted sums, the sum of squares, min, max, non-zero and saturation counts and
``sum |x|``. Vectors are combined in float64 in blocks later (:mod:`ctrlens.neurons.sketch`), so
the hook itself issues only a few torch calls.

Two engines compute the same vector:

* ``"eager"`` (default): plain torch ops -- the per-class sums are two ``[2, n] @ [n, N]``
  matmuls, min/max reduce blocks of rows first on big batches, counts of non-zeros a matmul.
* ``"compiled"``: the same reductions as one ``torch.compile`` (inductor) kernel that reads ``x``
  once, in cache-sized blocks of rows -- 2-4x cheaper per batch on CPU, after a one-off
  compilation (tens of seconds on a fresh machine, seconds with inductor's on-disk cache) that
  needs a C++ compiler. If compiling fails, a warning is issued and the eager engine is used.
  Small inputs run eager anyway: there a compiled call's fixed cost exceeds what it saves.

Precision: sums are accumulated in the model's dtype within a batch (float32: ~1e-6 relative),
around a shift taken from the batch itself, then combined across batches in float64.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor

Engine = Literal["eager", "compiled"]
_SHIFT_ROWS = 64
_BLOCKED_MIN = 1 << 18  # elements from which blocked min/max beats amin/amax over dim 0
_CHUNK = 128  # rows per first-level block of big reductions (fits L1/L2 for N up to ~2k)
# below these sizes a compiled call's fixed cost (guards, launch) exceeds what it saves
_COMPILED_MIN = 1 << 16
_COMPILED_MIN_BUCKET = 1 << 20


def layout(N: int) -> dict[str, slice]:
    """Where each quantity lives in the flat per-batch vector of a layer with ``N`` neurons.

    ``cnt [2]`` rows per weight row (padding rows have zero weights); ``shift [N]``;
    ``s1 [2, N]`` (row-major) ``sum w_r (x - shift)``; ``s2 [N]`` ``sum (x - shift)**2`` over all rows (per-class second moments are not needed:
    only class *means* are reported); ``min``, ``max``, ``nonzero``, ``sat`` ``[N]``;
    ``abs [1]`` = ``sum |x|``.
    """
    sizes = [("cnt", 2), ("shift", N), ("s1", 2 * N), ("s2", N), ("min", N), ("max", N), ("nonzero", N), ("sat", N), ("abs", 1)]
    out, o = {}, 0
    for k, s in sizes:
        out[k] = slice(o, o + s)
        o += s
    return out


def column_min_max(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(x.amin(0), x.amax(0))`` of ``x [n, N]``, over blocks of rows on big inputs.

    PyTorch's CPU reductions over the leading dimension of a matrix that does not fit in cache are
    slow; reducing ``[n / R, R, N]`` over the block first reads memory once. Exact.
    """
    n, N = x.shape
    n0 = (n // _CHUNK) * _CHUNK
    if x.numel() < _BLOCKED_MIN or n0 == 0:
        return x.amin(0), x.amax(0)
    v = x[:n0].view(-1, _CHUNK, N)
    mn, mx = v.amin(1).amin(0), v.amax(1).amax(0)
    if n0 < n:
        mn = torch.minimum(mn, x[n0:].amin(0))
        mx = torch.maximum(mx, x[n0:].amax(0))
    return mn, mx


def batch_vector_eager(x: Tensor, w: Tensor, sat: tuple[Tensor, Tensor] | None, padded: bool = False) -> Tensor:
    """The flat vector (:func:`layout`) of ``x [n, N]`` with class weights ``w [2, n]``.

    ``sat = (c, h)``: saturated rows are ``|x - c| >= h``; ``None``: no bounds (count 0).
    ``padded``: some rows are padding (both weights 0, and a copy of a real row, so min / max
    are unaffected); every count and sum then goes through the weights.
    """
    shift = x[:_SHIFT_ROWS].mean(0)
    d = x - shift
    s1 = w @ d
    d.square_()
    s2 = (w @ d).sum(0)  # a 2-row matmul reads d once, faster than a reduction over dim 0
    del d
    mn, mx = column_min_max(x)
    a = x.abs()
    abs_sum = (w @ a).sum() if padded else a.sum()
    a.sign_()
    # counts of ones through a matmul: exact in float32 while n < 2**24 rows per batch
    nonzero = (w @ a).sum(0)
    del a
    if sat is None:
        ns = torch.zeros_like(mn)
    else:
        ns = (w @ ((x - sat[0]).abs_() >= sat[1]).to(x.dtype)).sum(0)
    return torch.cat([w.sum(1), shift, s1.reshape(-1), s2.reshape(-1), mn, mx, nonzero, ns, abs_sum.reshape(1)])


def _fused(x: Tensor, wc: Tensor, v: Tensor, c: Tensor, h: Tensor, bounded: bool) -> Tensor:
    """Compiled reductions of ``x [n, N]`` with ``n`` a positive multiple of ``_CHUNK``.

    ``wc``: 1 for click rows; ``v``: 1 for real rows, 0 for padding (a copy of a real row).
    Two-level reductions over blocks of ``_CHUNK`` rows: each block is read from memory once and
    reduced from cache -- 2-3x faster than one pass over a matrix that does not fit in cache.
    """
    n, N = x.shape
    shift = x[:_SHIFT_ROWS].mean(0)
    xb = x.view(-1, _CHUNK, N)
    wb = wc.view(-1, _CHUNK, 1)
    vb = v.view(-1, _CHUNK, 1)
    d = xb - shift
    dv = d * vb
    sat = (((xb - c).abs() >= h).to(x.dtype) * vb).sum(1).sum(0) if bounded else torch.zeros_like(shift)
    s1c = (d * wb).sum(1).sum(0)
    nc = wc.sum()
    nr = v.sum()
    return torch.cat(
        [
            torch.stack([nc, nr - nc]),
            shift,
            s1c,
            dv.sum(1).sum(0) - s1c,  # every real row is a click or not: the rest is the total minus clicks
            (dv * d).sum(1).sum(0),
            xb.amin(1).amin(0),
            xb.amax(1).amax(0),
            ((xb != 0).to(x.dtype) * vb).sum(1).sum(0),
            sat,
            (xb.abs() * vb).sum(1).sum().reshape(1),
        ]
    )


def _bucket(x: Tensor, lo: Tensor, scale: Tensor, offsets: Tensor, bins: int) -> Tensor:
    return (((x - lo) * scale).floor().clamp(-1, bins) + offsets).to(torch.int32)


_compiled: dict[str, object] = {}
_failed: list[str] = []


_RECOMPILE_LIMIT = 64


def _get(name: str):
    if name not in _compiled:
        import torch._dynamo.config as dynamo_config

        compiled = torch.compile({"sums": _fused, "bucket": _bucket}[name], dynamic=True)

        def call(*args):
            # Inductor specialises on a few size ranges (and 0/1 sizes); over a day of varying
            # masked row counts and layer widths that can pass dynamo's default of 8 graphs per
            # function, after which it would silently run these kernels uncompiled.
            old = dynamo_config.recompile_limit
            dynamo_config.recompile_limit = max(old, _RECOMPILE_LIMIT)
            try:
                return compiled(*args)
            finally:
                dynamo_config.recompile_limit = old

        _compiled[name] = call
    return _compiled[name]


def _fallback(e: Exception) -> None:
    if not _failed:
        warnings.warn(
            f"ctrlens.neurons: engine='compiled' unavailable ({type(e).__name__}: {str(e)[:200]}); "
            "using the eager engine",
            RuntimeWarning,
            stacklevel=3,
        )
    _failed.append(type(e).__name__)


_zero: dict[tuple, Tensor] = {}


def _scalar0(x: Tensor) -> Tensor:
    k = (x.dtype, x.device)
    if k not in _zero:
        _zero[k] = torch.zeros((), dtype=x.dtype, device=x.device)
    return _zero[k]


def pad_rows(n: int) -> int:
    """Rows after padding ``n`` rows for the compiled kernel: a positive multiple of ``_CHUNK``."""
    return max(_CHUNK, -(-n // _CHUNK) * _CHUNK)


def batch_vector(x: Tensor, w: Tensor, v: Tensor | None, sat: tuple[Tensor, Tensor] | None, engine: Engine) -> Tensor:
    """The flat per-batch vector with the chosen engine (see the module docstring).

    ``v``: float ``[n]`` 1 for real rows, 0 for padding rows (``None``: no padding). The compiled
    kernel needs ``n`` to be a multiple of ``_CHUNK`` (:func:`pad_rows`); the monitor pads when it
    removes sequence padding anyway, other inputs are padded here (a copy).
    """
    if engine == "compiled" and not _failed and x.numel() >= _COMPILED_MIN:
        try:
            n = x.shape[0]
            if v is None:
                v = torch.ones(n, dtype=x.dtype, device=x.device)
            if n % _CHUNK or n == 0:
                extra = pad_rows(n) - n
                x = torch.cat([x, x[-1:].expand(extra, x.shape[1])])
                w = torch.cat([w, w.new_zeros(2, extra)], 1)
                v = torch.cat([v, v.new_zeros(extra)])
            c, h = sat if sat is not None else (_scalar0(x), _scalar0(x))  # unused when not bounded
            return _get("sums")(x, w[0], v, c, h, sat is not None)  # type: ignore[operator]
        except Exception as e:  # no C++ compiler, unsupported backend, ...
            _fallback(e)
    return batch_vector_eager(x, w, sat, padded=v is not None)


def bucket_index(x: Tensor, lo: Tensor, scale: Tensor, offsets: Tensor, bins: int, engine: Engine) -> Tensor:
    """int32 ``[n * N]`` flat histogram index ``neuron * (bins + 2) + bucket`` of ``x [n, N]``.

    ``bucket = clamp(floor((x - lo) * scale), -1, bins) + 1``: 0 underflow, ``bins + 1`` overflow.
    """
    if engine == "compiled" and not _failed and x.numel() >= _COMPILED_MIN_BUCKET:
        try:
            return _get("bucket")(x, lo, scale, offsets, bins).reshape(-1)  # type: ignore[operator]
        except Exception as e:
            _fallback(e)
    t = x - lo
    t.mul_(scale).floor_().clamp_(-1, bins).add_(offsets)
    return t.to(torch.int32).reshape(-1)
