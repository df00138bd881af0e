"""Per-layer neuron statistics as plain numpy: :class:`LayerStats`, mergeable and serialisable.

The result half of neuron statistics (the accumulator that fills it lives in
:mod:`ctrlens.neurons.sketch`). A layer keeps per-class row counts and means (click / no click /
unlabelled) and the overall sum of squared deviations ``M2`` in float64; :meth:`LayerStats.merge`
combines two disjoint row sets with Chan's parallel formulas (:func:`chan_merge`), so merging two
halves of a day (or DDP ranks) gives the whole day's statistics up to float64 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ctrlens.errors import InputError

#: label classes, in the order of the first axis of the per-class moments.
CLASSES = ("click", "noclick", "unlabelled")
#: activations with bounds: (low, high). Saturated: within ``eps`` of a bound.
BOUNDED: dict[str, tuple[float, float]] = {"sigmoid": (0.0, 1.0), "softmax": (0.0, 1.0), "tanh": (-1.0, 1.0)}
#: activations whose "active" side is ``x > 0`` (PReLU / Dice also pass a scaled negative side).
RELU_LIKE = frozenset({"relu", "prelu", "dice"})


class NeuronStatsError(InputError):
    """Statistics that cannot be combined or computed as asked (names the layer and the reason)."""


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
        if self.meta.get("seq_rate", 1.0) != other.meta.get("seq_rate", 1.0):
            return (
                f"layer {self.name!r}: sequence positions summarised at seq_rate {self.meta.get('seq_rate', 1.0)} vs "
                f"{other.meta.get('seq_rate', 1.0)}"
            )
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
