"""Mergeable sufficient statistics of one layer's neurons.

Two halves of the work live here:

* :class:`LayerSketch` -- the accumulator that runs inside a forward hook. Per batch it reduces
  the layer output ``x [n, N]`` (``n`` rows, sequence padding removed; ``N`` neurons) to one flat
  vector of sums (:mod:`ctrlens.neurons.kernels`), runs one ``bincount`` for all the neurons'
  histograms and updates a bottom-k sample. No Python loop over neurons, no ``.item()``; raw
  activations are never kept.
* :class:`LayerStats` -- the plain numpy result: mergeable (:meth:`LayerStats.merge`) and
  serialisable (:meth:`LayerStats.to_dict`).

Exactness. A layer keeps per-class row counts and means (click / no click / unlabelled) and the
overall sum of squared deviations ``M2`` in float64. Each batch is summed in the model's dtype
around a shift taken from the batch itself (the mean of its first rows), so a batch's sums do not
depend on what came before it; every 32 batches the sums are re-centred on a common shift and
combined with Chan's parallel formulas in float64. Hence merging the summaries of two halves of a
day gives the summary of the whole day up to float64 rounding, and the statistics match a float64
brute force up to the float32 rounding of one batch's sums (~1e-6 relative).

Sampling. Every row (every real position, for sequence layers) gets a pseudo-random priority
``u = hash(seed, key) / 2**31`` in ``[0, 1)`` from its key (``row * L + position``; ``row`` is
``Batch.row``). The 2-D sample is the ``sample_size`` rows of smallest ``(u, key)`` (bottom-k),
and the optional histogram subsample keeps rows with ``u < hist_rate``. Both depend only on the rows'
keys, so they are deterministic for a seed and identical however the day is split into batches,
halves or DDP shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ctrlens.errors import InputError
from ctrlens.neurons import kernels

#: label classes, in the order of the first axis of the per-class moments.
CLASSES = ("click", "noclick", "unlabelled")
#: activations with bounds: (low, high). Saturated: within ``eps`` of a bound.
BOUNDED: dict[str, tuple[float, float]] = {"sigmoid": (0.0, 1.0), "softmax": (0.0, 1.0), "tanh": (-1.0, 1.0)}
#: activations whose "active" side is ``x > 0`` (PReLU / Dice also pass a scaled negative side).
RELU_LIKE = frozenset({"relu", "prelu", "dice"})

_P = 2_147_483_647  # 2**31 - 1: keeps every product of the hash below 2**63


class NeuronStatsError(InputError):
    """Statistics that cannot be combined or computed as asked (names the layer and the reason)."""


@dataclass(frozen=True)
class SketchConfig:
    """How a layer is summarised.

    Attributes:
        bins: regular histogram bins between the layer's frozen edges (plus under/overflow).
        sample_size: rows kept for the 2-D projection (bottom-k by priority).
        seed: seed of the row priorities (sample and histogram subsample).
        hist_rate: share of rows that enter the histogram (1.0 = all; lower is cheaper and
            approximate, the subsample being deterministic per row key). Moments, min, max, zero and
            saturation counts always use every row.
        eps: saturation margin of bounded units (sigmoid/softmax: ``x <= eps`` or
            ``x >= 1 - eps``; tanh: ``|x| >= 1 - eps``).
        edge_quantile: unbounded layers take their edges from the first batch's
            ``[q, 1 - q]`` quantiles over all neurons, widened by 10% of the range.
    """

    bins: int = 32
    sample_size: int = 2000
    seed: int = 0
    hist_rate: float = 1.0
    eps: float = 0.01
    edge_quantile: float = 0.001

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise NeuronStatsError(f"bins must be >= 1, got {self.bins}")
        if self.sample_size < 0:
            raise NeuronStatsError(f"sample_size must be >= 0, got {self.sample_size}")
        if not 0.0 < self.hist_rate <= 1.0:
            raise NeuronStatsError(f"hist_rate must be in (0, 1], got {self.hist_rate}")
        if not 0.0 <= self.eps < 0.5:
            raise NeuronStatsError(f"eps must be in [0, 0.5), got {self.eps}")


HASH_BITS = 31
EMPTY_RANK = (1 << 63) - 1


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


def chan_merge(
    na: np.ndarray, ma: np.ndarray, m2a: np.ndarray, nb: np.ndarray, mb: np.ndarray, m2b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chan et al.'s pairwise update of ``(count, mean, M2)``; counts broadcast over the last axis.

    Empty sides are handled: merging with ``n = 0`` returns the other side unchanged.
    """
    na = np.asarray(na, dtype=np.float64)
    nb = np.asarray(nb, dtype=np.float64)
    n = na + nb
    safe = np.where(n > 0, n, 1.0)
    delta = mb - ma
    wa = np.where(n > 0, nb / safe, 0.0)
    mean = np.where(na > 0, ma + delta * wa, mb)
    mean = np.where(n > 0, mean, 0.0)
    cross = np.where((na > 0) & (nb > 0), delta * delta * (na * nb / safe), 0.0)
    m2 = np.where(na > 0, m2a, 0.0) + np.where(nb > 0, m2b, 0.0) + cross
    return n, mean, m2


def _chan_merge_t(na: Tensor, ma: Tensor, m2a: Tensor, nb: Tensor, mb: Tensor, m2b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`chan_merge` on float64 tensors (``n`` ``[K, 1]``, moments ``[K, N]``) on any device."""
    n = na + nb
    safe = torch.where(n > 0, n, torch.ones_like(n))
    delta = mb - ma
    mean = torch.where(na > 0, ma + delta * (nb / safe), mb)
    cross = torch.where((na > 0) & (nb > 0), delta * delta * (na * nb / safe), torch.zeros_like(delta))
    m2 = torch.where(na > 0, m2a, torch.zeros_like(m2a)) + torch.where(nb > 0, m2b, torch.zeros_like(m2b)) + cross
    return n, mean, m2


def default_edges(activation: str) -> tuple[float, float] | None:
    """Fixed ``(lo, hi)`` for bounded activations; ``None`` where they come from data."""
    return BOUNDED.get(activation)


def edges_from_values(x: Tensor, activation: str, q: float) -> tuple[float, float]:
    """``(lo, hi)`` of an unbounded layer from one batch ``x [n, N]`` (all neurons pooled).

    The ``[q, 1 - q]`` quantiles of (at most ~16k of) the values, widened by 10% of the range;
    ReLU layers start at exactly 0 so that zeros fall in the first regular bin. Called once per
    layer (first batch) unless edges come from a reference.
    """
    flat = x.detach().reshape(-1).float()
    if flat.numel() > 16384:
        flat = flat[:: flat.numel() // 16384 + 1]
    flat = flat[torch.isfinite(flat)]
    if flat.numel() == 0:
        return 0.0, 1.0
    qs = torch.quantile(flat, torch.tensor([q, 1.0 - q], dtype=flat.dtype, device=flat.device)).tolist()
    lo, hi = float(qs[0]), float(qs[1])
    pad = 0.1 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if activation == "relu":
        lo = 0.0
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


@dataclass
class LayerStats:
    """Summary of one layer's ``N`` neurons over some rows; numpy, mergeable, serialisable.

    Attributes:
        name, activation, kind: the layer (see :class:`~ctrlens.models.interface.LayerSpec`).
        counts: int64 ``[3]`` rows per class (:data:`CLASSES`).
        means: float64 ``[3, N]`` per-class means; m2: float64 ``[N]`` sum of squared deviations
            from the overall mean over all rows (Chan form, with the overall mean from ``means``).
        minimum, maximum: float64 ``[N]`` (``+inf`` / ``-inf`` when no rows).
        zeros: int64 ``[N]`` rows where the neuron is exactly 0.
        saturated: int64 ``[N]`` rows within ``eps`` of a bound (bounded activations), else ``None``.
        abs_sum: float sum of ``|x|`` over rows and neurons (for the layer's mean ``|activation|``).
        lo, hi, bins: the frozen histogram edges ``linspace(lo, hi, bins + 1)``.
        hist: int64 ``[N, bins + 2]`` counts ``[underflow, bin_1..bin_bins, overflow]``; bins are
            half-open ``[e_i, e_{i+1})``, underflow ``x < lo``, overflow ``x >= hi``.
        hist_rows: rows that entered the histogram (``count`` unless ``hist_rate < 1``).
        sample: float32 ``[k, N]`` rows of smallest priority; ``sample_label`` float32 ``[k]``
            (1 click, 0 no click, NaN unlabelled); ``sample_key`` int64 ``[k]``; ``sample_rank``
            int64 ``[k]`` (:func:`row_rank`, ascending); ``sample_size`` the capacity ``k_max``.
        pca_mean, pca_basis: float64 ``[N]`` and ``[2, N]`` -- the 2-D projection, fitted on the
            reference day's sample (``pca_source="reference"``) or on this sample (``"self"``).
        eps: the saturation margin used.
    """

    name: str
    activation: str
    kind: str
    counts: np.ndarray
    means: np.ndarray
    m2: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    zeros: np.ndarray
    saturated: np.ndarray | None
    abs_sum: float
    lo: float
    hi: float
    bins: int
    hist: np.ndarray
    hist_rows: int
    sample: np.ndarray
    sample_label: np.ndarray
    sample_key: np.ndarray
    sample_rank: np.ndarray
    sample_size: int
    eps: float = 0.01
    pca_mean: np.ndarray | None = None
    pca_basis: np.ndarray | None = None
    pca_source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    # -- derived per-neuron statistics ---------------------------------------------------------
    @property
    def n_neurons(self) -> int:
        return int(self.means.shape[1])

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def _total_mean(self) -> np.ndarray:
        n = self.counts.sum()
        if n == 0:
            return np.full(self.n_neurons, np.nan)
        return (self.counts[:, None] / n * self.means).sum(0)

    @property
    def mean(self) -> np.ndarray:
        return self._total_mean()

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (``ddof=0``, as ``numpy.std``)."""
        n = self.count
        return np.sqrt(np.maximum(self.m2, 0.0) / n) if n > 0 else np.full(self.n_neurons, np.nan)

    def class_mean(self, cls: str) -> np.ndarray:
        k = CLASSES.index(cls)
        return self.means[k].copy() if self.counts[k] > 0 else np.full(self.n_neurons, np.nan)

    @property
    def frac_zero(self) -> np.ndarray:
        return self.zeros / self.count if self.count else np.full(self.n_neurons, np.nan)

    @property
    def frac_saturated(self) -> np.ndarray:
        """Share of rows within ``eps`` of a bound; NaN for unbounded activations (no rule applies)."""
        if self.saturated is None or not self.count:
            return np.full(self.n_neurons, np.nan)
        return self.saturated / self.count

    @property
    def dead(self) -> np.ndarray:
        """bool ``[N]``: never active on these rows.

        ReLU units: ``max <= 0`` (never on the active side: output 0 and gradient 0). Every other unit
        (PReLU and Dice, whose negative side still carries signal; sigmoid, tanh, identity ...): a
        near-constant output, ``max - min <= 1e-6 * max(1, |max|, |min|)`` -- a unit whose output does
        not vary with its input tells the next layer nothing. No rows: False.
        """
        if not self.count:
            return np.zeros(self.n_neurons, dtype=bool)
        if self.activation == "relu":
            return self.maximum <= 0
        scale = np.maximum(1.0, np.maximum(np.abs(self.maximum), np.abs(self.minimum)))
        return (self.maximum - self.minimum) <= 1e-6 * scale

    @property
    def dead_fraction(self) -> float:
        return float(self.dead.mean()) if self.count else float("nan")

    @property
    def saturated_fraction(self) -> float:
        """Share of (row, neuron) activations in saturation; NaN for unbounded activations."""
        fs = self.frac_saturated
        return float(np.mean(fs)) if self.saturated is not None and self.count else float("nan")

    @property
    def mean_abs(self) -> float:
        return self.abs_sum / (self.count * self.n_neurons) if self.count else float("nan")

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)

    # -- merging -------------------------------------------------------------------------------
    def compatible(self, other: "LayerStats") -> str | None:
        """Why ``other`` cannot merge with this (``None`` when it can)."""
        if other.name != self.name:
            return f"different layers {self.name!r} and {other.name!r}"
        if other.n_neurons != self.n_neurons:
            return f"layer {self.name!r}: {self.n_neurons} vs {other.n_neurons} neurons"
        if (other.lo, other.hi, other.bins) != (self.lo, self.hi, self.bins):
            return (
                f"layer {self.name!r}: histogram edges differ ({self.lo}, {self.hi}, {self.bins} bins) vs "
                f"({other.lo}, {other.hi}, {other.bins} bins); summarise both with the same reference= "
                "(or edges=) so the histograms share edges"
            )
        if other.eps != self.eps:
            return f"layer {self.name!r}: saturation eps {self.eps} vs {other.eps}"
        return None

    def merge(self, other: "LayerStats") -> "LayerStats":
        """The statistics of the union of both row sets (rows must be disjoint)."""
        why = self.compatible(other)
        if why:
            raise NeuronStatsError(f"cannot merge neuron statistics: {why}")
        _, m, _ = chan_merge(self.counts[:, None], self.means, 0.0, other.counts[:, None], other.means, 0.0)
        _, _, m2 = chan_merge(self.count, self._total_mean(), self.m2, other.count, other._total_mean(), other.m2)
        rank = np.concatenate([self.sample_rank, other.sample_rank])
        key = np.concatenate([self.sample_key, other.sample_key])
        order = np.argsort(rank, kind="stable")[: max(self.sample_size, other.sample_size)]
        same_pca = (
            self.pca_source == "reference"
            and other.pca_source == "reference"
            and self.pca_basis is not None
            and other.pca_basis is not None
            and np.array_equal(self.pca_basis, other.pca_basis)
        )
        sat = None if self.saturated is None or other.saturated is None else self.saturated + other.saturated
        return LayerStats(
            name=self.name,
            activation=self.activation,
            kind=self.kind,
            counts=self.counts + other.counts,
            means=m,
            m2=m2,
            minimum=np.minimum(self.minimum, other.minimum),
            maximum=np.maximum(self.maximum, other.maximum),
            zeros=self.zeros + other.zeros,
            saturated=sat,
            abs_sum=self.abs_sum + other.abs_sum,
            lo=self.lo,
            hi=self.hi,
            bins=self.bins,
            hist=self.hist + other.hist,
            hist_rows=self.hist_rows + other.hist_rows,
            sample=np.concatenate([self.sample, other.sample])[order],
            sample_label=np.concatenate([self.sample_label, other.sample_label])[order],
            sample_key=key[order],
            sample_rank=rank[order],
            sample_size=max(self.sample_size, other.sample_size),
            eps=self.eps,
            pca_mean=self.pca_mean if same_pca else None,
            pca_basis=self.pca_basis if same_pca else None,
            pca_source="reference" if same_pca else None,
            meta=dict(self.meta),
        )

    # -- projection ----------------------------------------------------------------------------
    def fit_pca(self) -> tuple[np.ndarray, np.ndarray]:
        """Fit the 2-D PCA basis on this sample (``pca_source="self"``) and return ``(mean, basis)``.

        Component signs are fixed (largest |loading| positive) so refits are reproducible.
        """
        x = self.sample.astype(np.float64)
        mean = x.mean(0) if len(x) else np.zeros(self.n_neurons)
        basis = np.zeros((2, self.n_neurons))
        if len(x) >= 2:
            # top eigenvectors of the N x N scatter matrix: much cheaper than an SVD of the sample
            # (torch's BLAS/LAPACK: numpy's OpenBLAS threads can be far slower on a busy machine)
            xc = torch.from_numpy(x - mean)
            v = torch.linalg.eigh(xc.T @ xc).eigenvectors.numpy()
            k = min(2, v.shape[1])
            basis[:k] = v[:, ::-1][:, :k].T
            for i in range(k):
                j = int(np.argmax(np.abs(basis[i])))
                if basis[i, j] < 0:
                    basis[i] = -basis[i]
        self.pca_mean, self.pca_basis, self.pca_source = mean, basis, "self"
        return mean, basis

    def projection(self) -> dict[str, list]:
        """The sample projected to 2-D: ``{"x": [...], "y": [...], "label": [...]}`` (label None = unlabelled)."""
        if self.pca_basis is None or self.pca_mean is None:
            self.fit_pca()
        xy = (self.sample.astype(np.float64) - self.pca_mean) @ self.pca_basis.T  # type: ignore[operator]
        labels = [None if np.isnan(v) else int(v) for v in self.sample_label.tolist()]
        return {"x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(), "label": labels}

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state (lists and numbers; empty min/max as ``None``)."""

        def fin(a: np.ndarray) -> list:
            return [float(v) if np.isfinite(v) else None for v in a.tolist()]

        return {
            "name": self.name,
            "activation": self.activation,
            "kind": self.kind,
            "counts": self.counts.tolist(),
            "means": self.means.tolist(),
            "m2": self.m2.tolist(),
            "minimum": fin(self.minimum),
            "maximum": fin(self.maximum),
            "zeros": self.zeros.tolist(),
            "saturated": None if self.saturated is None else self.saturated.tolist(),
            "abs_sum": self.abs_sum,
            "lo": self.lo,
            "hi": self.hi,
            "bins": self.bins,
            "hist": self.hist.tolist(),
            "hist_rows": self.hist_rows,
            "sample": self.sample.tolist(),
            "sample_label": [None if np.isnan(v) else float(v) for v in self.sample_label.tolist()],
            "sample_key": self.sample_key.tolist(),
            "sample_rank": self.sample_rank.tolist(),
            "sample_size": self.sample_size,
            "eps": self.eps,
            "pca_mean": None if self.pca_mean is None else self.pca_mean.tolist(),
            "pca_basis": None if self.pca_basis is None else self.pca_basis.tolist(),
            "pca_source": self.pca_source,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerStats":
        try:
            n_neurons = len(d["zeros"])

            def fin(a: list, fill: float) -> np.ndarray:
                return np.array([fill if v is None else v for v in a], dtype=np.float64)

            def arr2(a: list, dtype, cols: int) -> np.ndarray:
                return np.asarray(a, dtype=dtype).reshape(-1, cols)

            return cls(
                name=d["name"],
                activation=d["activation"],
                kind=d.get("kind", "hidden"),
                counts=np.asarray(d["counts"], dtype=np.int64),
                means=arr2(d["means"], np.float64, n_neurons),
                m2=np.asarray(d["m2"], dtype=np.float64).reshape(n_neurons),
                minimum=fin(d["minimum"], np.inf),
                maximum=fin(d["maximum"], -np.inf),
                zeros=np.asarray(d["zeros"], dtype=np.int64),
                saturated=None if d.get("saturated") is None else np.asarray(d["saturated"], dtype=np.int64),
                abs_sum=float(d["abs_sum"]),
                lo=float(d["lo"]),
                hi=float(d["hi"]),
                bins=int(d["bins"]),
                hist=arr2(d["hist"], np.int64, int(d["bins"]) + 2),
                hist_rows=int(d["hist_rows"]),
                sample=arr2(d["sample"], np.float32, n_neurons),
                sample_label=np.array([np.nan if v is None else v for v in d["sample_label"]], dtype=np.float32),
                sample_key=np.asarray(d["sample_key"], dtype=np.int64),
                sample_rank=np.asarray(d["sample_rank"], dtype=np.int64),
                sample_size=int(d["sample_size"]),
                eps=float(d.get("eps", 0.01)),
                pca_mean=None if d.get("pca_mean") is None else np.asarray(d["pca_mean"], dtype=np.float64),
                pca_basis=None if d.get("pca_basis") is None else arr2(d["pca_basis"], np.float64, n_neurons),
                pca_source=d.get("pca_source"),
                meta=dict(d.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise NeuronStatsError(f"layer statistics {d.get('name', '?')!r}: malformed state ({e})") from None


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
        # rank = (hash << 32) | key: only rows with hash <= the threshold's hash can enter
        cand = torch.nonzero(hash <= (self._tau >> 32)).squeeze(1)
        if cand.numel() == 0:
            return None
        rank = torch.full_like(hash, EMPTY_RANK)
        rank[cand] = row_rank(hash[cand], key[cand])
        cand = cand[rank[cand] < self._tau]
        if cand.numel() == 0:
            return None
        k = self.k
        if cand.numel() > k:  # only the batch's k smallest can enter
            cand = cand[torch.topk(rank[cand], k, largest=False, sorted=False).indices]
        allr = torch.cat([self.rank, rank[cand]])
        keep = torch.zeros(allr.shape[0], dtype=torch.bool, device=allr.device)
        keep[torch.topk(allr, k, largest=False, sorted=False).indices] = True
        dst = torch.nonzero(~keep[:k]).squeeze(1)  # evicted slots (empty ones first: largest rank)
        src = cand[torch.nonzero(keep[k:]).squeeze(1)]  # admitted batch rows
        if src.numel() == 0:
            return None
        self.rank[dst] = rank[src]
        self.key[dst] = key[src]
        self.label[dst] = label[src]
        self._tau = self.rank.max()
        return src, dst

    def order(self) -> Tensor:
        """Filled slots in ascending rank."""
        filled = torch.nonzero(self.rank != EMPTY_RANK).squeeze(1)
        return filled[torch.argsort(self.rank[filled])]


class RowBatch:
    """The rows of one batch as a set of layers sees them (after padding removal).

    Attributes:
        n: real rows.
        idx: int64 ``[n_pad]`` positions of the flattened ``[B * L]`` output to keep, or ``None``
            (all ``B`` rows). Under the compiled engine the list is padded to a multiple of the
            kernel's block by repeating its last position (``valid`` 0 there).
        weights: ``[2, n_pad]`` class weights (row 0 clicks; row 1 non-clicks, or unlabelled rows
            when ``labelled`` is False); 0 on padding.
        valid: ``[n_pad]`` 1 real / 0 padding, or ``None`` when nothing is padded.
        label: float32 ``[n]`` 1 / 0 / NaN; key: int64 ``[n]``; hash: int64 ``[n]`` (:func:`row_hash`).
        hist_idx: int64 rows entering the histogram when ``hist_rate < 1`` (else ``None``).
        sampler: the :class:`BottomK` of this row set.
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
        pad_to: int | None = None,
    ):
        n = int(key.shape[0])
        self.n, self.valid = n, None
        if pad_to is not None and pad_to > n and n > 0:
            extra = pad_to - n
            dev = weights.device
            last = idx[-1:] if idx is not None else torch.full((1,), n - 1, device=dev, dtype=torch.int64)
            base = idx if idx is not None else torch.arange(n, device=dev)
            idx = torch.cat([base, last.expand(extra)])
            weights = torch.cat([weights, weights.new_zeros(2, extra)], 1)
            self.valid = torch.cat([weights.new_ones(n), weights.new_zeros(extra)])
        self.idx, self.weights, self.labelled = idx, weights, labelled
        self.label, self.key, self.hash = label, key, hash
        cut = int(hist_rate * (1 << HASH_BITS))
        self.hist_idx = None if hist_rate >= 1.0 else torch.nonzero(hash < cut).squeeze(1)
        self.sampler = sampler
        self._plan: tuple | None = None
        self._planned = False
        self._weights_as: dict[torch.dtype, Tensor] = {weights.dtype: weights}
        self._valid_as: dict[torch.dtype, Tensor] = {}

    def valid_as(self, dtype: torch.dtype) -> Tensor | None:
        if self.valid is None:
            return None
        if dtype not in self._valid_as:
            self._valid_as[dtype] = self.valid.to(dtype)
        return self._valid_as[dtype]

    def weights_as(self, dtype: torch.dtype) -> Tensor:
        if dtype not in self._weights_as:
            self._weights_as[dtype] = self.weights.to(dtype)
        return self._weights_as[dtype]

    def plan(self) -> tuple[Tensor, Tensor] | None:
        """This batch's sample update (computed once, shared by the row set's layers)."""
        if not self._planned:
            self._planned = True
            if self.sampler is not None:
                self._plan = self.sampler.plan(self.hash, self.key, self.label)
        return self._plan


class LayerSketch:
    """Accumulates :class:`LayerStats` of one layer from batches of its output, on the model's device.

    Per batch the hook computes one flat vector of sums (:mod:`ctrlens.neurons.kernels`), a
    histogram ``bincount`` and the sample update; the vectors are combined in float64 every
    :attr:`BLOCK` batches (Chan's formula, vectorised over the block), which keeps the number of
    torch calls per batch -- the real cost on small layers -- low.

    Args:
        name, activation, kind: the layer.
        config: :class:`SketchConfig`.
        edges: frozen ``(lo, hi)``; ``None`` takes fixed bounds (bounded activations) or the first
            batch's range (others).
        pca: ``(mean [N], basis [2, N])`` from a reference, or ``None``.
        sync_edges: called with ``(lo, hi)`` from the first batch and returning the agreed
            ``(lo, hi)`` (DDP: min/max over ranks); ``None`` keeps them.
        engine: ``"eager"`` or ``"compiled"`` (:mod:`ctrlens.neurons.kernels`).
    """

    BLOCK = 32

    def __init__(
        self,
        name: str,
        activation: str,
        kind: str,
        config: SketchConfig,
        edges: tuple[float, float] | None = None,
        pca: tuple[np.ndarray, np.ndarray] | None = None,
        sync_edges=None,
        engine: kernels.Engine = "eager",
    ):
        self.name, self.activation, self.kind, self.cfg = name, activation, kind, config
        self.engine = engine
        bounds = BOUNDED.get(activation)
        # saturated: |x - center| >= half_width - eps
        self._sat_rule = None if bounds is None else ((bounds[0] + bounds[1]) / 2, (bounds[1] - bounds[0]) / 2 - config.eps)
        self.edges = edges if edges is not None else default_edges(activation)
        self.pca = pca
        self._sync_edges = sync_edges
        self.n_neurons: int | None = None
        self.sampler: BottomK | None = None
        self._started = False

    # -- state -----------------------------------------------------------------------------------
    def _start(self, x: Tensor) -> None:
        N, dev, dt = x.shape[1], x.device, x.dtype
        if self.pca is not None and self.pca[0].shape[0] != N:
            raise NeuronStatsError(
                f"layer {self.name!r}: the reference has {self.pca[0].shape[0]} neurons, this model {N}"
            )
        if self.edges is None:
            lo, hi = edges_from_values(x, self.activation, self.cfg.edge_quantile)
            if self._sync_edges is not None:
                lo, hi = self._sync_edges(lo, hi)
            self.edges = (lo, hi)
        lo, hi = self.edges
        nb = self.cfg.bins
        f64 = dict(device=dev, dtype=torch.float64)
        self.n_neurons = N
        self._lay = kernels.layout(N)
        self._n = torch.zeros(len(CLASSES), 1, **f64)
        self._mean = torch.zeros(len(CLASSES), N, **f64)
        self._m2 = torch.zeros(N, **f64)  # about the overall mean
        self._min = torch.full((N,), float("inf"), **f64)
        self._max = torch.full((N,), float("-inf"), **f64)
        self._nonzero = torch.zeros(N, **f64)
        self._sat = torch.zeros(N, **f64)
        self._abs = torch.zeros((), **f64)
        self._pending: list[Tensor] = []
        self._pending_labelled: list[bool] = []
        self._sat_t = None
        if self._sat_rule is not None:
            self._sat_t = (torch.tensor(self._sat_rule[0], device=dev, dtype=dt), torch.tensor(self._sat_rule[1], device=dev, dtype=dt))
        self._hist = torch.zeros(N * (nb + 2), device=dev, dtype=torch.int64)
        self._hist_rows = 0
        # bucket = floor((x - lo) * scale) clamped to [-1, nb], + 1 + neuron offset -> flat bincount index
        self._lo_t = torch.tensor(lo, device=dev, dtype=dt)
        self._scale_t = torch.tensor(nb / (hi - lo), device=dev, dtype=dt)
        self._offsets = (torch.arange(N, device=dev) * (nb + 2) + 1).to(dt)
        self._s_x = torch.zeros(self.cfg.sample_size, N, device=dev, dtype=dt)
        self._started = True

    # -- the per-batch work --------------------------------------------------------------------
    @torch.no_grad()
    def update(self, x: Tensor, rows: RowBatch) -> None:
        """Add the rows ``x [n_pad, N]`` described by ``rows`` (sequence padding already removed;
        rows past ``rows.n`` pad the input of the compiled kernel)."""
        if rows.n == 0:
            return
        if not self._started:
            self._start(x[: rows.n])
            self.sampler = rows.sampler
        if x.shape[1] != self.n_neurons:
            raise NeuronStatsError(f"layer {self.name!r}: output has {x.shape[1]} neurons, earlier batches {self.n_neurons}")
        self._pending.append(kernels.batch_vector(x, rows.weights_as(x.dtype), rows.valid_as(x.dtype), self._sat_t, self.engine))
        if x.shape[0] > rows.n:
            x = x[: rows.n]  # padding rows (compiled engine) end here
        self._pending_labelled.append(rows.labelled)
        if len(self._pending) >= self.BLOCK:
            self._flush()
        # Histogram: one bincount over flat (neuron, bucket) indices.
        xs = x if rows.hist_idx is None else x.index_select(0, rows.hist_idx)
        if xs.shape[0]:
            idx = kernels.bucket_index(xs, self._lo_t, self._scale_t, self._offsets, self.cfg.bins, self.engine)
            self._hist += torch.bincount(idx, minlength=self._hist.numel())
            self._hist_rows += int(xs.shape[0])
        # Bottom-k sample: the row set's selection applied to this layer's rows.
        p = rows.plan()
        if p is not None:
            self._s_x.index_copy_(0, p[1], x.index_select(0, p[0]))

    def _flush(self) -> None:
        """Combine the pending per-batch vectors in float64 into the accumulators."""
        if not self._pending:
            return
        V = torch.stack(self._pending).double()  # [T, K]
        lab = torch.tensor(self._pending_labelled, device=V.device)
        self._pending, self._pending_labelled = [], []
        L, N, T = self._lay, int(self.n_neurons), V.shape[0]  # type: ignore[arg-type]
        cnt = V[:, L["cnt"]]  # [T, 2]
        shift = V[:, L["shift"]]  # [T, N]
        s1 = V[:, L["s1"]].reshape(T, 2, N)
        s2 = V[:, L["s2"]]  # [T, N]
        # re-centre every batch's sums on one common shift c, then sum over the block
        c = shift[0]
        dl = shift - c  # [T, N]
        S1 = s1 + cnt.unsqueeze(2) * dl.unsqueeze(1)  # [T, 2, N]
        s1t = s1.sum(1)
        nt = cnt.sum(1, keepdim=True)  # [T, 1]
        S2 = (s2 + 2.0 * dl * s1t + nt * dl * dl).sum(0)  # [N]
        # weight row 0 -> class 0 (click); row 1 -> class 1 (no click) or 2 (unlabelled)
        cls = torch.stack([torch.zeros_like(lab, dtype=torch.int64), torch.where(lab, 1, 2)], 1).reshape(-1)
        K = len(CLASSES)
        nk = torch.zeros(K, 1, dtype=V.dtype, device=V.device).index_add_(0, cls, cnt.reshape(-1, 1))
        S1k = torch.zeros(K, N, dtype=V.dtype, device=V.device).index_add_(0, cls, S1.reshape(-1, N))
        n = nk.sum()
        S1all = S1k.sum(0)
        bmean_k = c + S1k / nk.clamp(min=1.0)
        bmean = c + S1all / n
        bm2 = (S2 - S1all * S1all / n).clamp_(min=0.0)
        ntot = self._n.sum()
        old_mean = (self._n * self._mean).sum(0) / ntot.clamp(min=1.0)
        _, _, self._m2 = _chan_merge_t(ntot, old_mean, self._m2, n, bmean, bm2)
        self._n, self._mean, _ = _chan_merge_t(self._n, self._mean, self._mean, nk, bmean_k, bmean_k)
        self._min = torch.minimum(self._min, V[:, L["min"]].amin(0))
        self._max = torch.maximum(self._max, V[:, L["max"]].amax(0))
        self._nonzero += V[:, L["nonzero"]].sum(0)
        self._sat += V[:, L["sat"]].sum(0)
        self._abs += V[:, L["abs"]].sum()

    # -- result ---------------------------------------------------------------------------------
    def result(self) -> LayerStats:
        """The numpy :class:`LayerStats` of everything seen so far (one device sync)."""
        if not self._started:
            raise NeuronStatsError(f"layer {self.name!r} saw no batch; run the monitor over some data first")
        self._flush()
        lo, hi = self.edges  # type: ignore[misc]
        nb = self.cfg.bins
        N = int(self.n_neurons)  # type: ignore[arg-type]
        counts = self._n.squeeze(1).round().to(torch.int64).cpu().numpy()
        pca_mean, pca_basis = (None, None) if self.pca is None else self.pca
        sm = self.sampler
        o = None if sm is None else sm.order()
        return LayerStats(
            name=self.name,
            activation=self.activation,
            kind=self.kind,
            counts=counts,
            means=torch.where(self._n > 0, self._mean, torch.zeros_like(self._mean)).cpu().numpy(),  # empty class: 0
            m2=self._m2.cpu().numpy(),
            minimum=self._min.cpu().numpy(),
            maximum=self._max.cpu().numpy(),
            zeros=(int(counts.sum()) - self._nonzero.round().to(torch.int64).cpu().numpy()).astype(np.int64),
            saturated=None if self._sat_rule is None else self._sat.round().to(torch.int64).cpu().numpy(),
            abs_sum=float(self._abs),
            lo=float(lo),
            hi=float(hi),
            bins=nb,
            hist=self._hist.reshape(N, nb + 2).cpu().numpy(),
            hist_rows=self._hist_rows,
            sample=np.zeros((0, N), np.float32) if sm is None else self._s_x[o].float().cpu().numpy(),
            sample_label=np.zeros(0, np.float32) if sm is None else sm.label[o].cpu().numpy(),
            sample_key=np.zeros(0, np.int64) if sm is None else sm.key[o].cpu().numpy(),
            sample_rank=np.zeros(0, np.int64) if sm is None else sm.rank[o].cpu().numpy(),
            sample_size=self.cfg.sample_size,
            eps=self.cfg.eps,
            pca_mean=None if pca_mean is None else np.asarray(pca_mean, dtype=np.float64),
            pca_basis=None if pca_basis is None else np.asarray(pca_basis, dtype=np.float64),
            pca_source=None if pca_mean is None else "reference",
            meta={"hist_rate": self.cfg.hist_rate, "seed": self.cfg.seed},
        )
