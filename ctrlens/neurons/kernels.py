"""Per-batch reductions of a layer output ``x [n, N]``: the hot path of neuron statistics.

Every batch of every layer is reduced to one flat vector (:func:`layout`): class counts, the
shift, per-class shifted sums, the sum of squares, min, max, non-zero and saturation counts and
``sum |x|``. Vectors are combined in float64 in blocks later (:mod:`ctrlens.neurons.sketch`), so
the hook itself issues only a few torch calls.

Two engines compute the same vector:

* ``"eager"`` (default): plain torch ops on the real rows copied out of the layer output -- the
  per-class sums one ``[2, n] @ [n, N]`` matmul, the other sums column sums (cheaper than matmuls),
  min/max over blocks of rows on big batches.
* ``"compiled"``: the same reductions as one ``torch.compile`` (inductor) kernel that reads the
  real rows once, in cache-sized blocks of rows -- several times cheaper per batch on CPU, after a one-off
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
_BLOCKED_MIN = 1 << 18  # elements from which folded min/max (column_min_max) beats amin/amax over dim 0
_CHUNK = 128  # rows per first-level block of big reductions (fits L1/L2 for N up to ~2k)
CHUNK = _CHUNK  # the compiled kernel's row block: callers pad row lists to a multiple of it
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
    """``(x.amin(0), x.amax(0))`` of ``x [n, N]``, by halving on big inputs.

    PyTorch's CPU min/max over the leading dimension of a tall matrix is several times slower than
    its elementwise ``minimum`` / ``maximum``; folding the bottom half of the rows onto the top half
    until ~128 rows are left reads memory about twice and measured 1.5-2.5x faster on attention-unit
    sized layers (33k x 40-80). Exact. Narrow layers keep ``amin`` / ``amax`` (the fold's calls cost more).
    """
    n, N = x.shape
    if x.numel() < _BLOCKED_MIN or N < 8:
        return x.amin(0), x.amax(0)
    a, b = _fold(x, x, n)
    while a.shape[0] > _CHUNK:
        a, b = _fold(a, b, a.shape[0])
    return a.amin(0), b.amax(0)


def _fold(a: Tensor, b: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Rows ``n // 2`` of the running minima ``a`` and maxima ``b`` (an odd last row folded into row 0)."""
    h = n // 2
    lo, hi = torch.minimum(a[:h], a[h : 2 * h]), torch.maximum(b[:h], b[h : 2 * h])
    if n % 2:
        lo[0] = torch.minimum(lo[0], a[n - 1])
        hi[0] = torch.maximum(hi[0], b[n - 1])
    return lo, hi


def batch_vector_eager(x: Tensor, w: Tensor, sat: tuple[Tensor, Tensor] | None) -> Tensor:
    """The flat vector (:func:`layout`) of the real rows ``x [n, N]`` with class weights ``w [2, n]``.

    ``sat = (c, h)``: saturated rows are ``|x - c| >= h``; ``None``: no bounds (count 0). Seven
    passes over ``x``; column sums (``.sum(0)``) where no class split is needed, as they are about
    twice as fast as a 2-row matmul.
    """
    shift = x[:_SHIFT_ROWS].mean(0)
    d = x - shift
    s1 = w @ d
    s2 = d.square_().sum(0)
    del d
    mn, mx = column_min_max(x)
    a = x.abs()
    abs_sum = a.sum()
    # counts of non-zeros as float sums of signs: exact while n < 2**24 rows per batch
    nonzero = a.sign_().sum(0)
    del a
    if sat is None:
        ns = torch.zeros_like(mn)
    else:
        ns = ((x - sat[0]).abs_() >= sat[1]).sum(0).to(x.dtype)
    return torch.cat([w.sum(1), shift, s1.reshape(-1), s2, mn, mx, nonzero, ns, abs_sum.reshape(1)])


def _gathered(xf: Tensor, click: Tensor, gidx: Tensor, nreal: Tensor, c: Tensor, h: Tensor, bounded: bool) -> Tensor:
    """Compiled reductions of the rows ``xf[gidx]`` (``xf [M, N]``, ``click [M]`` click weights).

    ``gidx [n_pad]``: the rows, padded to a multiple of ``_CHUNK`` (at least two blocks) by
    repeating the last one; ``nreal``: their number (0-d). The kernel reads rows by index (so padding to the block
    costs no copy of ``xf``; a sequence layer's real rows are compacted before, which measured
    faster than gathering them here), sums every row, and takes the ``n_pad - nreal`` copies of the
    last row back out at the end
    (min / max are unaffected by copies), so no per-row validity weight is multiplied in. Two-level
    reductions over blocks of ``_CHUNK`` rows: each block is read from memory once and reduced from
    cache -- 2-3x faster than one pass over a matrix that does not fit in cache.
    """
    N = xf.shape[1]
    # gidx is a column of an [n_pad, 2] buffer (stride 2): inductor's CPU codegen vectorises the
    # loop whose variable has unit stride in every load, and a unit-stride index list would make
    # it pick the row loop (a per-lane gather) instead of the neurons (contiguous in each row)
    xb = xf[gidx].view(-1, _CHUNK, N)
    wb = click[gidx].view(-1, _CHUNK, 1)
    shift = xf[gidx[:_SHIFT_ROWS]].mean(0)
    d = xb - shift
    s1c = (d * wb).sum(1).sum(0)
    s1 = d.sum(1).sum(0)
    s2 = (d * d).sum(1).sum(0)
    nz = (xb != 0).to(xf.dtype).sum(1).sum(0)
    ab = xb.abs().sum(1).sum(0)
    mn = xb.amin(1).amin(0)
    mx = xb.amax(1).amax(0)
    k = gidx.shape[0] - nreal.to(xf.dtype)  # padding rows: copies of the last real row
    last = xf[gidx[-1:]][0]  # (a 1-element index: a 0-d one would read it back to Python)
    wl = click[gidx[-1:]][0]
    dl = last - shift
    nc = wb.sum() - k * wl
    if bounded:
        sat = ((xb - c).abs() >= h).to(xf.dtype).sum(1).sum(0) - k * ((last - c).abs() >= h).to(xf.dtype)
    else:
        sat = torch.zeros_like(shift)
    return torch.cat(
        [
            torch.stack([nc, nreal.to(xf.dtype) - nc]),
            shift,
            s1c - k * wl * dl,
            s1 - s1c - k * (1 - wl) * dl,
            s2 - k * dl * dl,
            mn,
            mx,
            nz - k * (last != 0).to(xf.dtype),
            sat,
            (ab - k * last.abs()).sum().reshape(1),
        ]
    )


def _bucket(x: Tensor, lo: Tensor, scale: Tensor, offsets: Tensor, bins: int) -> Tensor:
    return (((x - lo) * scale).floor().clamp(-1, bins) + offsets).to(torch.int32)


_compiled: dict[str, object] = {}
_failed: list[str] = []


_RECOMPILE_LIMIT = 64
#: ``torch.compile(dynamic=...)`` of the kernels: symbolic sizes, so one compilation serves every
#: layer width and row count (a few more for specialised sizes such as width 1).
DYNAMIC = True


def _get(name: str):
    if name not in _compiled:
        import torch._dynamo.config as dynamo_config

        # Inductor specialises on a few sizes (0/1, ...); over a day of varying masked row counts
        # and layer widths that can pass dynamo's default of 8 graphs per function, after which it
        # would silently run these kernels uncompiled. Raised once (never lowered) instead of
        # around every call: setting dynamo's config costs more than a small layer's kernel.
        if dynamo_config.recompile_limit < _RECOMPILE_LIMIT:
            dynamo_config.recompile_limit = _RECOMPILE_LIMIT
        _compiled[name] = torch.compile({"sums": _gathered, "bucket": _bucket}[name], dynamic=DYNAMIC)
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


def compiled_ok(engine: Engine, numel: int, minimum: int | None = None) -> bool:
    """Whether ``numel`` values go through the compiled kernels (engine, no earlier failure, size)."""
    return engine == "compiled" and not _failed and numel >= (_COMPILED_MIN if minimum is None else minimum)


def batch_vector_gathered(
    xf: Tensor, click: Tensor, gidx: Tensor, nreal: Tensor, sat: tuple[Tensor, Tensor] | None
) -> Tensor | None:
    """The flat vector of the rows ``xf[gidx]`` through the compiled kernel (see :func:`_gathered`);
    ``None`` when compiling failed (a warning is issued once; the caller uses the eager engine)."""
    try:
        c, h = sat if sat is not None else (_scalar0(xf), _scalar0(xf))  # unused when not bounded
        return _get("sums")(xf, click, gidx, nreal, c, h, sat is not None)  # type: ignore[operator]
    except Exception as e:  # no C++ compiler, unsupported backend, ...
        _fallback(e)
        return None


def bucket_index(
    xf: Tensor, pos: Tensor | None, lo: Tensor, scale: Tensor, offsets: Tensor, bins: int, engine: Engine
) -> Tensor:
    """int32 ``[n * N]`` flat histogram index ``neuron * (bins + 2) + bucket`` of the rows ``xf[pos]``
    (``pos`` ``None``: every row of ``xf [M, N]``).

    ``bucket = clamp(floor((x - lo) * scale), -1, bins) + 1``: 0 underflow, ``bins + 1`` overflow.
    """
    # (rows taken out first: an index inside the compiled kernel made inductor vectorise over rows)
    x = xf if pos is None else xf.index_select(0, pos)
    if compiled_ok(engine, x.numel(), _COMPILED_MIN_BUCKET):
        try:
            return _get("bucket")(x, lo, scale, offsets, bins).reshape(-1)  # type: ignore[operator]
        except Exception as e:
            _fallback(e)
    t = x - lo
    t.mul_(scale).floor_().clamp_(-1, bins).add_(offsets)
    return t.to(torch.int32).reshape(-1)
