"""Which rows enter a layer's statistics: row priorities, the bottom-k sample, a batch's row set.

Every row (every real position, for sequence layers) gets a pseudo-random priority
``u = hash(seed, key) / 2**31`` in ``[0, 1)`` from its key (``row * L + position``; ``row`` is
``Batch.row``). The 2-D sample is the ``sample_size`` rows of smallest ``(u, key)`` (bottom-k,
:class:`BottomK`), and the optional histogram subsample keeps rows with ``u < hist_rate``. Both
depend only on the rows' keys, so they are deterministic for a seed and identical however the day
is split into batches, halves or DDP shards.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

_P = 2_147_483_647  # 2**31 - 1: keeps every product of the hash below 2**63
HASH_BITS = 31
EMPTY_RANK = (1 << 63) - 1  # an empty sample slot: above every real rank


def row_hash(key: Tensor, seed: int) -> Tensor:
    """Pseudo-random int64 hashes in ``[0, 2**31)`` of int64 keys ``[n]`` (``>= 0``).

    Three multiply-mod-prime rounds with xor-shifts between them: a pure function of
    ``(seed, key)``, the same on every machine and device. ``hash / 2**31`` is the row's
    priority ``u``.
    """
    h = torch.remainder(key, _P)
    h = torch.remainder(h * 48271 + (seed % _P) * 69621 + 12345, _P)
    h = h ^ (h >> 13)
    h = torch.remainder(h * 2654435761, _P)
    h = h ^ (h >> 16)
    h = torch.remainder(h * 2246822519, _P)
    return h ^ (h >> 11)


def row_rank(h: Tensor, key: Tensor) -> Tensor:
    """int64 sort key ``(hash, key mod 2**32)``: unique per row, so bottom-k selection has no ties."""
    return (h << 32) | (key & 0xFFFFFFFF)


class BottomK:
    """The ``k`` rows of smallest rank seen so far, shared by the layers that see the same rows
    (all layers without a mask, or all layers masked by one sequence field).

    The sample lives in ``k`` fixed slots; each batch, :meth:`plan` says which batch rows replace
    which slots, so every layer of the row set copies just those rows of its own output. Slots are
    put in rank order only when the result is read.
    """

    def __init__(self, k: int, device: torch.device):
        self.k = k
        self.rank = torch.full((k,), EMPTY_RANK, device=device, dtype=torch.int64)
        self.key = torch.zeros(k, device=device, dtype=torch.int64)
        self.label = torch.full((k,), float("nan"), device=device, dtype=torch.float32)
        self._tau = torch.full((), EMPTY_RANK, device=device, dtype=torch.int64)  # largest rank held

    def plan(self, hash: Tensor, key: Tensor, label: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(src [c], dst [c])``: batch rows ``src`` go to slots ``dst``; ``None``: no change."""
        # rank = (hash << 32) | key: only rows with hash <= the threshold's hash can enter; once the
        # sample is full these are few, and everything below works on them alone
        cand = torch.nonzero(hash <= (self._tau >> 32)).squeeze(1)
        if cand.numel() == 0:
            return None
        rc = row_rank(hash.index_select(0, cand), key.index_select(0, cand))
        sel = torch.nonzero(rc < self._tau).squeeze(1)
        if sel.numel() == 0:
            return None
        cand, rc = cand.index_select(0, sel), rc.index_select(0, sel)
        k = self.k
        if cand.numel() > k:  # only the batch's k smallest can enter
            top = torch.topk(rc, k, largest=False, sorted=False).indices
            cand, rc = cand.index_select(0, top), rc.index_select(0, top)
        allr = torch.cat([self.rank, rc])
        keep = torch.zeros(allr.shape[0], dtype=torch.bool, device=allr.device)
        keep[torch.topk(allr, k, largest=False, sorted=False).indices] = True
        dst = torch.nonzero(~keep[:k]).squeeze(1)  # evicted slots (empty ones first: largest rank)
        adm = torch.nonzero(keep[k:]).squeeze(1)
        src = cand.index_select(0, adm)  # admitted batch rows
        if src.numel() == 0:
            return None
        self.rank[dst] = rc.index_select(0, adm)
        self.key[dst] = key[src]
        self.label[dst] = label[src]
        self._tau = self.rank.max()
        return src, dst

    def order(self) -> Tensor:
        """Filled slots in ascending rank."""
        filled = torch.nonzero(self.rank != EMPTY_RANK).squeeze(1)
        return filled[torch.argsort(self.rank[filled])]


class RowBatch:
    """The rows of one batch as a set of layers sees them (sequence padding removed).

    The layers of a row set hand their raw output ``xf [M, N]`` (``M = B * L`` flattened
    positions, or ``B`` rows) to :class:`~ctrlens.neurons.sketch.LayerSketch`, which copies the
    real rows out once (:meth:`compact`; nothing is copied for a layer without a mask) and takes
    the histogram's rows and the sample's rows straight from ``xf``.

    Attributes:
        n: real rows.
        idx: int64 ``[n]`` positions of the flattened ``[B * L]`` output that are real, or ``None``
            (all ``B`` rows).
        weights: float32 ``[2, n]`` class weights (row 0 clicks; row 1 non-clicks, or unlabelled
            rows when ``labelled`` is False).
        click: float32 ``[n]`` click weight of every real row (``weights[0]``, its own tensor).
        label: float32 ``[n]`` 1 / 0 / NaN; key: int64 ``[n]``; hash: int64 ``[n]`` (:func:`row_hash`).
        hist_pos: int64 positions of ``xf`` entering the histogram when ``hist_rate < 1`` (the
            real rows with priority ``u < hist_rate``), else ``None`` (every real row).
        sampler: the :class:`BottomK` of this row set.
        seq_rate: the share of the real sequence positions kept (1.0: all; see ``SketchConfig``).
        kept: int64 ``[n]`` which of the real positions are kept (``seq_rate < 1``), else ``None``.
        n_positions: the real positions before ``seq_rate`` (rows of a packed output).
    """

    def __init__(
        self,
        idx: Tensor | None,
        weights: Tensor,
        labelled: bool,
        label: Tensor,
        key: Tensor,
        hash: Tensor,
        hist_rate: float,
        sampler: BottomK | None,
        seq_rate: float = 1.0,
        kept: Tensor | None = None,
        n_positions: int | None = None,
    ):
        self.n = int(key.shape[0])
        # for packed outputs (the real positions only, see packed()): which of them are kept
        self.kept, self.n_positions = kept, self.n if n_positions is None else n_positions
        self._parent: RowBatch | None = None
        self._packed: RowBatch | None = None
        self.seq_rate = seq_rate
        self.idx, self.weights, self.labelled = idx, weights, labelled
        # not a view of weights: compiled kernels guard on whether an input is a view
        self.click = weights[0].clone()
        self.label, self.key, self.hash = label, key, hash
        cut = int(hist_rate * (1 << HASH_BITS))
        self._hist_rows = None if hist_rate >= 1.0 else torch.nonzero(hash < cut).squeeze(1)
        self.hist_pos = None if self._hist_rows is None else self.positions(self._hist_rows)
        self.sampler = sampler
        self._plan: tuple | None = None
        self._planned = False
        self._cast: dict[tuple, Tensor] = {}
        self._gather: tuple[Tensor, Tensor] | None = None

    def packed(self) -> "RowBatch":
        """The same rows for a layer whose output holds only the real positions, ``[n_positions, N]``
        in row-major order of the mask (a model's packed inference path, see
        :func:`ctrlens.models.taps.accepts_packed`): indices then point into that output. Shares the
        sample plan and the compiled kernel's row list with this row set, so layers packed or not
        update the row set's sample once per batch."""
        if self._parent is not None or self.idx is None:
            return self
        if self._packed is None:
            v = copy.copy(self)
            v.idx, v._parent = self.kept, self
            v.hist_pos = None if self._hist_rows is None else v.positions(self._hist_rows)
            self._packed = v
        return self._packed

    def positions(self, rows: Tensor) -> Tensor:
        """Positions in the flattened output of real rows ``rows`` (indices into ``0..n-1``)."""
        return rows if self.idx is None else self.idx.index_select(0, rows)

    def compact(self, xf: Tensor) -> Tensor:
        """``[n, N]``: the real rows of ``xf [M, N]`` (``xf`` itself when nothing is masked)."""
        return xf if self.idx is None else xf.index_select(0, self.idx)

    def cast(self, name: str, dtype: torch.dtype) -> Tensor:
        """``weights`` or ``click`` in ``dtype`` (converted once per row set)."""
        k = (name, dtype)
        if k not in self._cast:
            self._cast[k] = getattr(self, name).to(dtype)
        return self._cast[k]

    def gather(self, block: int) -> tuple[Tensor, Tensor]:
        """``(gidx [n_pad], nreal)`` for the compiled kernel over the compacted rows.

        ``gidx``: ``0..n-1`` padded by repeating ``n - 1`` to a multiple of ``block``, at least two
        blocks (torch.compile specialises a size of 1: a one-block batch would compile a second
        kernel). The kernel reads rows by index, so padding costs no copy of the layer output, and
        takes the copies' contribution back out (no per-row validity weights). ``nreal``: ``n`` as
        a 0-d float tensor."""
        if self._parent is not None:  # the same n compacted rows: one index list for both views
            return self._parent.gather(block)
        if self._gather is None:
            dev = self.key.device
            base = torch.arange(self.n, device=dev)
            extra = max(2 * block, -(-self.n // block) * block) - self.n
            # stored as column 0 of an [n_pad, 2] buffer: a stride-2 index list (see kernels._gathered)
            buf = torch.empty(self.n + extra, 2, dtype=torch.int64, device=dev)
            buf[: self.n, 0] = base
            buf[self.n :, 0] = base[-1]
            self._gather = (buf[:, 0], torch.tensor(float(self.n), device=dev))
        return self._gather

    def plan(self) -> tuple[Tensor, Tensor] | None:
        """This batch's sample update (computed once, shared by the row set's layers)."""
        if self._parent is not None:
            return self._parent.plan()
        if not self._planned:
            self._planned = True
            if self.sampler is not None:
                self._plan = self.sampler.plan(self.hash, self.key, self.label)
        return self._plan
