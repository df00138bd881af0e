"""Plain result objects handed from the analyses to the store, monitor, reports and dashboard.

Data flows one way: data -> model -> hooks -> **results** -> store -> monitor -> dashboard. Every
analysis returns a :class:`Result`: a ``kind``, a pandas DataFrame whose columns are exactly those
listed in :data:`COLUMNS` for that kind (one row per subject), and free ``meta``. The store
persists them keyed by (model version, day, run kind); the monitor reads them back as the same
frames. Nothing here imports torch, so the store and dashboard stay light.

Conventions:

* JSON columns (suffix ``_json``) hold small Python lists/dicts in the frame (histogram counts,
  top values, points); the store serialises them.
* A number never travels without its meaning: drift rows carry ``method``, ``threshold`` and
  ``direction`` (``"above"``: alert when value > threshold; ``"below"``: alert when value <
  threshold); distances are never labelled p-values (Evidently #306).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

#: kind -> ordered columns (name -> dtype: "str", "int", "float", "bool", "json").
COLUMNS: dict[str, dict[str, str]] = {
    # Input-feature statistics per field and day (ctrlens.data.stats).
    "field_stats": {
        "field": "str",
        "kind": "str",  # sparse / sequence / dense / position / image / label
        "rows": "int",
        "coverage": "float",  # share of rows with a non-missing value (sequence: non-empty)
        "missing_rate": "float",
        "oov_rate": "float",  # share of non-missing values mapped to the OOV bucket
        "cardinality": "int",  # distinct values seen (sparse/sequence), 0 for dense
        "mean": "float",  # dense/position: value mean; sequence: mean length; sparse: NaN
        "std": "float",
        "top_json": "json",  # [[value, share], ...] top-k values plus ["__other__", share]
        "hist_json": "json",  # {"edges": [...], "counts": [...]} fixed edges (dense) or hashed buckets (ids)
    },
    # Per-neuron summary (ctrlens.neurons).
    "neuron_stats": {
        "layer": "str",
        "neuron": "int",
        "count": "int",
        "mean": "float",
        "std": "float",
        "min": "float",
        "max": "float",
        "frac_zero": "float",
        "frac_saturated": "float",
        "mean_click": "float",  # class-conditional means: rows with click=1
        "mean_noclick": "float",
        "hist_json": "json",  # counts over the layer's fixed edges (layer_stats.edges_json)
    },
    # Per-layer summary (ctrlens.neurons).
    "layer_stats": {
        "layer": "str",
        "activation": "str",
        "n_neurons": "int",
        "count": "int",
        "dead_fraction": "float",
        "saturated_fraction": "float",
        "mean_abs": "float",
        "edges_json": "json",  # histogram edges shared by all neurons of the layer
        "projection_json": "json",  # {"x": [...], "y": [...], "label": [...]} 2-D PCA sample
    },
    # Embedding-table health (ctrlens.neurons.embedding).
    "embedding_health": {
        "table": "str",
        "rows": "int",
        "dim": "int",
        "seen_rows": "int",  # rows looked up on the day
        "never_updated_frac": "float",  # among seen rows: still equal to their initial value
        "norm_mean": "float",
        "norm_p50": "float",
        "norm_p99": "float",
        "effective_rank": "float",
        "info_abundance": "float",  # sum of singular values / largest one (embedding collapse)
        "hist_json": "json",  # row-norm histogram
    },
    # Layer-wise linear probes (ctrlens.probes).
    "probe": {
        "layer": "str",
        "head": "str",
        "train_day": "str",
        "eval_day": "str",
        "n_train": "int",
        "n_eval": "int",
        "auc": "float",
        "logloss": "float",
        "model_auc": "float",
        "gap": "float",  # model_auc - auc
    },
    # Saliency per field x head x method (ctrlens.saliency).
    "saliency": {
        "field": "str",
        "head": "str",
        "method": "str",  # saliency / input_x_gradient / integrated_gradients
        "rows": "int",
        "mean": "float",  # mean over rows of the per-row L2 norm over the embedding dimension
        "std": "float",
        "p50": "float",
        "p90": "float",
        "share": "float",  # mean / sum of means over fields: comparable across days
        "delta": "float",  # IG mean |convergence delta|; NaN for gradient methods
    },
    # Model quality per head (ctrlens.metrics).
    "quality": {
        "head": "str",
        "rows": "int",
        "positives": "int",
        "auc": "float",
        "gauc": "float",
        "logloss": "float",
        "ne": "float",  # normalised entropy
        "calibration": "float",  # sum(pred) / sum(label)
        "mean_pred": "float",
        "actual_rate": "float",
        "score_hist_json": "json",  # histogram of pCTR / actual CTR (the founding paper's normalised score)
    },
    # Drift tests (ctrlens.monitor).
    "drift": {
        "subject_kind": "str",  # field / neuron / layer / saliency / probe / quality
        "subject": "str",  # e.g. "item_id", "mlp.1/17", "mlp.1", "ctr"
        "statistic": "str",  # e.g. "psi", "js", "wasserstein_norm", "share", "auc"
        "method": "str",  # how the threshold was set, e.g. "ref_mean+4std(trailing 14d)"
        "value": "float",
        "reference": "float",
        "threshold": "float",
        "direction": "str",  # "above" | "below"
        "alert": "bool",
    },
    # Alerts / findings (ctrlens.monitor.diagnosis). State lives in the store.
    "alert": {
        "finding": "str",  # broken_feature / distribution_shift / oov_surge / dead_neurons / ...
        "subject": "str",
        "severity": "str",  # critical / warning / info
        "score": "float",  # ranking score: higher first
        "title": "str",
        "evidence_json": "json",  # numbers and dashboard links
        "action": "str",
    },
}


def jsonable(x: Any) -> Any:
    """A strict-JSON copy of ``x`` (the one sanitiser for alerts' evidence, run params, reports).

    dict keys become strings, tuples/arrays lists, numpy scalars Python numbers, NaN and +-inf
    ``None`` (strict JSON and PostgreSQL's ``json`` have no NaN), dates ISO strings, paths strings.
    Anything else is returned as it is (``json.dumps`` then decides).
    """
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [jsonable(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (pd.Timestamp, dt.date)):
        return x.isoformat()
    if isinstance(x, PurePath):
        return str(x)
    return x


@dataclass
class Result:
    """A result table of one kind for one (model version, day) -- or one comparison.

    Attributes:
        kind: a key of :data:`COLUMNS`.
        frame: one row per subject with exactly the columns of ``COLUMNS[kind]``.
        meta: free, JSON-serialisable context (sample sizes, seeds, method parameters).
    """

    kind: str
    frame: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in COLUMNS:
            raise ValueError(f"unknown result kind {self.kind!r}; known: {sorted(COLUMNS)}")
        want = list(COLUMNS[self.kind])
        missing = [c for c in want if c not in self.frame.columns]
        if missing:
            raise ValueError(f"result {self.kind!r}: missing columns {missing}")
        self.frame = self.frame[want].reset_index(drop=True)

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rows": json.loads(self.frame.to_json(orient="records")), "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        return cls(d["kind"], pd.DataFrame(d["rows"], columns=list(COLUMNS[d["kind"]])), d.get("meta", {}))

    def __len__(self) -> int:
        return len(self.frame)
