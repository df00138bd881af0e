"""Embedding-table health: row norms, rows never updated since initialisation, effective rank.

* **Seen rows** are recorded while a :class:`~ctrlens.neurons.NeuronMonitor` runs: a forward
  pre-hook on every table of ``view.tables`` (``nn.Embedding`` or ``nn.EmbeddingBag``, with or
  without offsets) marks the indices it looks up. The table's ``padding_idx`` is not counted.
* **Never updated**: among the seen rows, those still bit-identical to their initial value. The
  initial weights come from ``initial``: a snapshot taken at model build with
  :func:`snapshot_tables`, a ``state_dict`` (keys are matched by the table module's path, e.g.
  ``embed.tables.item.weight``), or the initial model itself (``nn.Module`` or
  :class:`~ctrlens.models.interface.ModelView`; e.g. a checkpoint loaded with
  ``ctrlens.models.checkpoint.load_checkpoint``). Without it the column is NaN.
* **Effective rank** (Roy & Vetterli 2007): ``exp(H(p))`` with ``p = s / sum(s)`` over the singular
  values ``s`` of the table (padding row excluded). **Information abundance** (Guo et al. 2023, the
  embedding-collapse paper): ``sum(s) / max(s)``. Both are in ``[1, D]``; a collapsed table is
  near 1. Singular values come from the ``D x D`` Gram matrix in float64, so big tables are cheap.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ctrlens.models.interface import ModelView, as_view
from ctrlens.neurons.stats import NeuronStatsError
from ctrlens.results import Result


def table_weight(module: nn.Module, name: str = "?") -> Tensor:
    """The ``[V, D]`` weight of an embedding table module."""
    w = getattr(module, "weight", None)
    if not isinstance(w, Tensor) or w.dim() != 2:
        raise NeuronStatsError(
            f"embedding table {name!r}: {type(module).__name__} has no 2-D .weight; "
            "view.tables must map names to nn.Embedding / nn.EmbeddingBag modules"
        )
    return w


def snapshot_tables(view_or_model: Any) -> dict[str, Tensor]:
    """Copies of every table's weight now (call right after building the model): table -> ``[V, D]``."""
    view = as_view(view_or_model)
    return {k: table_weight(m, k).detach().cpu().clone() for k, m in view.tables.items()}


class SeenRows:
    """Forward pre-hooks that mark the rows each table looks up (bool ``[V]`` per table, on device)."""

    def __init__(self, tables: Mapping[str, nn.Module]):
        self.tables = dict(tables)
        self.seen: dict[str, Tensor] = {}
        self.active = False  # set by the monitor around its own forwards only
        self._handles: list = []

    def __enter__(self) -> "SeenRows":
        for name, mod in self.tables.items():
            w = table_weight(mod, name)
            if name not in self.seen:
                self.seen[name] = torch.zeros(w.shape[0], dtype=torch.bool, device=w.device)
            self._handles.append(mod.register_forward_pre_hook(self._hook(name), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if not self.active:
                return None
            idx = args[0] if args else kwargs.get("input")
            if isinstance(idx, Tensor) and not idx.is_floating_point():
                # index_fill_: a plain scatter, cheaper than advanced-index assignment per lookup
                self.seen[name].index_fill_(0, idx.reshape(-1).to(self.seen[name].device, torch.int64), True)
            return None

        return hook

    def result(self) -> dict[str, np.ndarray]:
        """Table -> sorted int64 indices seen (padding index removed)."""
        out = {}
        for name, s in self.seen.items():
            pad = getattr(self.tables[name], "padding_idx", None)
            s = s.clone()
            if pad is not None:
                s[pad] = False
            out[name] = torch.nonzero(s).squeeze(1).cpu().numpy().astype(np.int64)
        return out


def spectrum(weight: Tensor, exclude: int | None = None) -> np.ndarray:
    """Singular values (descending, float64 ``[D]``) of ``weight [V, D]`` without row ``exclude``."""
    w = weight.detach().to(torch.float64)
    if exclude is not None:
        keep = torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
        keep[exclude] = False
        w = w[keep]
    gram = w.T @ w
    ev = torch.linalg.eigvalsh(gram).clamp(min=0.0)
    return np.sort(ev.sqrt().cpu().numpy())[::-1].copy()


def effective_rank(s: np.ndarray) -> float:
    """``exp`` of the entropy of the normalised singular values (1 for rank one, ``D`` for flat)."""
    s = np.asarray(s, dtype=np.float64)
    tot = s.sum()
    if tot <= 0:
        return float("nan")
    p = s[s > 0] / tot
    return float(np.exp(-(p * np.log(p)).sum()))


def information_abundance(s: np.ndarray) -> float:
    """``sum(s) / max(s)`` of the singular values."""
    s = np.asarray(s, dtype=np.float64)
    return float(s.sum() / s.max()) if s.size and s.max() > 0 else float("nan")


def _initial_weight(initial: Any, view: ModelView, table: str, module: nn.Module) -> Tensor | None:
    if initial is None:
        return None
    if isinstance(initial, (nn.Module, ModelView)):
        iv = initial if isinstance(initial, ModelView) else None
        if iv is None:
            try:
                iv = as_view(initial)
            except Exception:
                iv = None
        if iv is not None and table in iv.tables:
            return table_weight(iv.tables[table], table)
        initial = (initial.model if isinstance(initial, ModelView) else initial).state_dict()
    if isinstance(initial, Mapping):
        if table in initial:
            return initial[table]
        for path, m in view.model.named_modules():
            if m is module and f"{path}.weight" in initial:
                return initial[f"{path}.weight"]
        return None
    raise NeuronStatsError(
        f"initial: expected a snapshot (table -> tensor), a state_dict, or the initial model; got {type(initial).__name__}"
    )


def embedding_health(
    view_or_model: Any,
    seen: Mapping[str, np.ndarray] | None = None,
    *,
    initial: Any = None,
    bins: int = 32,
    norm_range: Mapping[str, tuple[float, float]] | None = None,
) -> Result:
    """``Result("embedding_health")``: one row per table of ``view.tables``.

    Args:
        view_or_model: the model (its tables now).
        seen: table -> indices looked up on the day (``NeuronSummary.seen``); without it
            ``seen_rows`` is 0 and ``never_updated_frac`` NaN.
        initial: the initial weights (see the module docstring); ``None`` -> NaN.
        bins: row-norm histogram bins.
        norm_range: table -> fixed ``(lo, hi)`` of the row-norm histogram (e.g. from a reference
            day's ``hist_json["edges"]``) so days compare; default ``[0, max norm]``.
    """
    view = as_view(view_or_model)
    rows = []
    extra: dict[str, dict[str, float]] = {}
    for name, mod in view.tables.items():
        w = table_weight(mod, name).detach()
        pad = getattr(mod, "padding_idx", None)
        V, D = int(w.shape[0]), int(w.shape[1])
        keep = torch.ones(V, dtype=torch.bool, device=w.device)
        if pad is not None:
            keep[pad] = False
        norms = torch.linalg.vector_norm(w.float(), dim=1)[keep].cpu().numpy().astype(np.float64)
        idx = None if seen is None else np.asarray(seen.get(name, np.zeros(0, dtype=np.int64)), dtype=np.int64)
        if idx is not None and pad is not None:
            idx = idx[idx != pad]
        never = float("nan")
        w0 = _initial_weight(initial, view, name, mod)
        if w0 is not None:
            if tuple(w0.shape) != (V, D):
                raise NeuronStatsError(f"initial weights of table {name!r} have shape {tuple(w0.shape)}, the table {(V, D)}")
            if idx is not None and len(idx):
                ii = torch.as_tensor(idx, device=w.device)
                same = (w[ii] == w0.to(w.device, w.dtype)[ii]).all(1)
                never = float(same.double().mean())
        lo, hi = (norm_range or {}).get(name, (0.0, float(norms.max()) if norms.size else 1.0))
        if not hi > lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        counts = np.histogram(np.clip(norms, lo, hi), bins=edges)[0]
        s = spectrum(w, pad)
        ia = information_abundance(s)
        extra[name] = {"info_abundance": ia, "sigma_max": float(s[0]) if s.size else float("nan")}
        rows.append(
            {
                "table": name,
                "rows": V,
                "dim": D,
                "seen_rows": 0 if idx is None else int(len(idx)),
                "never_updated_frac": never,
                "norm_mean": float(norms.mean()) if norms.size else float("nan"),
                "norm_p50": float(np.percentile(norms, 50)) if norms.size else float("nan"),
                "norm_p99": float(np.percentile(norms, 99)) if norms.size else float("nan"),
                "effective_rank": effective_rank(s),
                "info_abundance": ia,
                "hist_json": {"edges": edges.tolist(), "counts": counts.tolist()},
            }
        )
    frame = pd.DataFrame(rows, columns=list(_columns()))
    meta = {
        "model": view.name,
        "initial": initial is not None,
        "effective_rank": "exp(entropy(s / sum(s))) of the singular values, padding row excluded",
        "info_abundance": "sum(s) / max(s)",
        "histogram": "row norms clipped into [lo, hi]",
        "tables": extra,
    }
    return Result("embedding_health", frame, meta)


def _columns() -> list[str]:
    from ctrlens.results import COLUMNS

    return list(COLUMNS["embedding_health"])
