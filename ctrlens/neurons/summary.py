"""A day's neuron statistics: per-layer :class:`~ctrlens.neurons.stats.LayerStats`, frames and results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from ctrlens.neurons.stats import CLASSES, LayerStats, NeuronStatsError
from ctrlens.results import COLUMNS, Result

FORMAT_VERSION = 1


@dataclass
class NeuronSummary:
    """Neuron statistics of one model on some rows (a day, a shard, a half).

    Attributes:
        stats: layer name -> :class:`LayerStats`, in forward order.
        seen: embedding table name -> sorted int64 indices of the rows looked up (for
            :func:`ctrlens.neurons.embedding_health`).
        meta: model name, configuration (bins, seed, sample size, hist_rate, eps), rows.

    Mergeable (:meth:`merge`, exact up to float64 rounding) and serialisable
    (:meth:`to_dict` / :meth:`from_dict`, plain JSON types).
    """

    stats: dict[str, LayerStats]
    seen: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, layer: str) -> LayerStats:
        if layer not in self.stats:
            raise NeuronStatsError(f"no statistics for layer {layer!r}; layers: {list(self.stats)}")
        return self.stats[layer]

    def __iter__(self):
        return iter(self.stats)

    def __len__(self) -> int:
        return len(self.stats)

    @property
    def rows(self) -> int:
        """Rows of the first layer (sequence layers count positions, not rows)."""
        for s in self.stats.values():
            if s.kind != "attention":
                return s.count
        return next(iter(self.stats.values())).count if self.stats else 0

    # -- merging ---------------------------------------------------------------------------------
    def merge(self, other: "NeuronSummary") -> "NeuronSummary":
        """The summary of the union of both (disjoint) row sets."""
        if list(self.stats) != list(other.stats):
            raise NeuronStatsError(
                f"cannot merge neuron summaries over different layers: {list(self.stats)} vs {list(other.stats)}"
            )
        stats = {k: self.stats[k].merge(other.stats[k]) for k in self.stats}
        seen = {k: np.union1d(self.seen.get(k, _EMPTY), other.seen.get(k, _EMPTY)) for k in {*self.seen, *other.seen}}
        return NeuronSummary(stats, dict(sorted(seen.items())), dict(self.meta))

    @staticmethod
    def merge_all(parts: Iterable["NeuronSummary"]) -> "NeuronSummary":
        """Merge summaries in the given order."""
        it = iter(parts)
        try:
            out = next(it)
        except StopIteration:
            raise NeuronStatsError("merge_all: no summaries to merge") from None
        for p in it:
            out = out.merge(p)
        return out

    # -- frames ---------------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, neuron): the ``neuron_stats`` columns plus ``activation``, ``dead``,
        ``count_click`` and ``count_noclick``."""
        parts = []
        for name, s in self.stats.items():
            N = s.n_neurons
            hist = s.hist.tolist()
            parts.append(
                pd.DataFrame(
                    {
                        "layer": [name] * N,
                        "neuron": np.arange(N, dtype=np.int64),
                        "count": np.full(N, s.count, dtype=np.int64),
                        "mean": s.mean,
                        "std": s.std,
                        "min": np.where(np.isfinite(s.minimum), s.minimum, np.nan),
                        "max": np.where(np.isfinite(s.maximum), s.maximum, np.nan),
                        "frac_zero": s.frac_zero,
                        "frac_saturated": s.frac_saturated,
                        "mean_click": s.class_mean("click"),
                        "mean_noclick": s.class_mean("noclick"),
                        "hist_json": hist,
                        "activation": [s.activation] * N,
                        "dead": s.dead,
                        "count_click": np.full(N, s.counts[CLASSES.index("click")], dtype=np.int64),
                        "count_noclick": np.full(N, s.counts[CLASSES.index("noclick")], dtype=np.int64),
                    }
                )
            )
        if not parts:
            return pd.DataFrame(columns=[*COLUMNS["neuron_stats"], "activation", "dead", "count_click", "count_noclick"])
        return pd.concat(parts, ignore_index=True)

    def layers(self) -> pd.DataFrame:
        """One row per layer: the ``layer_stats`` columns plus ``kind`` and ``hist_rows``."""
        rows = []
        for name, s in self.stats.items():
            rows.append(
                {
                    "layer": name,
                    "activation": s.activation,
                    "n_neurons": s.n_neurons,
                    "count": s.count,
                    "dead_fraction": s.dead_fraction,
                    "saturated_fraction": s.saturated_fraction,
                    "mean_abs": s.mean_abs,
                    "edges_json": s.edges.tolist(),
                    "projection_json": s.projection(),
                    "kind": s.kind,
                    "hist_rows": s.hist_rows,
                }
            )
        return pd.DataFrame(rows, columns=[*COLUMNS["layer_stats"], "kind", "hist_rows"])

    def projection(self, layer: str) -> pd.DataFrame:
        """The layer's 2-D sample: columns ``x``, ``y``, ``label`` (1 / 0 / NaN unlabelled)."""
        p = self[layer].projection()
        return pd.DataFrame({"x": p["x"], "y": p["y"], "label": [np.nan if v is None else v for v in p["label"]]})

    def to_results(self) -> list[Result]:
        """``[Result("neuron_stats"), Result("layer_stats")]`` for the store."""
        meta = {**self.meta, "std": "population (ddof=0)", "saturation": _SATURATION_RULE, "dead": _DEAD_RULE}
        return [Result("neuron_stats", self.to_frame(), dict(meta)), Result("layer_stats", self.layers(), dict(meta))]

    # -- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state; :meth:`from_dict` restores it exactly (floats round-trip)."""
        return {
            "format": "ctrlens.neurons",
            "version": FORMAT_VERSION,
            "meta": self.meta,
            "layers": [s.to_dict() for s in self.stats.values()],
            "seen": {k: v.tolist() for k, v in self.seen.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NeuronSummary":
        if not isinstance(d, Mapping) or d.get("format") != "ctrlens.neurons":
            raise NeuronStatsError("not a ctrlens neuron summary (expected a dict with format='ctrlens.neurons')")
        if int(d.get("version", 0)) > FORMAT_VERSION:
            raise NeuronStatsError(f"neuron summary format version {d.get('version')} is newer than this ctrlens ({FORMAT_VERSION})")
        stats = {}
        for ld in d["layers"]:
            s = LayerStats.from_dict(ld)
            stats[s.name] = s
        seen = {k: np.asarray(v, dtype=np.int64) for k, v in (d.get("seen") or {}).items()}
        return cls(stats, seen, dict(d.get("meta") or {}))

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict()))
        return p

    @classmethod
    def load(cls, path: str | Path) -> "NeuronSummary":
        p = Path(path)
        if not p.exists():
            raise NeuronStatsError(f"{p}: neuron summary file not found")
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise NeuronStatsError(f"{p}: not valid JSON ({e})") from None
        return cls.from_dict(d)


_EMPTY = np.zeros(0, dtype=np.int64)
_SATURATION_RULE = (
    "sigmoid/softmax: x <= eps or x >= 1-eps; tanh: |x| >= 1-eps; other activations: not defined (NaN)"
)
_DEAD_RULE = ("relu: max <= 0 on the day; every other activation (prelu, dice, sigmoid, tanh, identity): near-constant "
              "output (max - min <= 1e-6 * max(1, |max|, |min|))")
