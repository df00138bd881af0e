"""Model quality per head: AUC, GAUC, LogLoss, NE, calibration -- exact, vectorised, streaming.

The functions take 1-D arrays (numpy or torch) of labels ``y`` in {0, 1} and probabilities ``p`` in
``[0, 1]``. They return ``nan`` where a metric is undefined (one class only, no rows), never raise on
that: a day with no conversions is a fact to report, not an error.

* :func:`auc` -- rank based (Mann-Whitney U), ties between scores count 1/2, as
  ``sklearn.metrics.roc_auc_score``.
* :func:`gauc` -- impression-weighted mean of per-user AUCs,
  ``sum_u n_u * AUC_u / sum_u n_u`` (DICM's formula, DIN's "user-weighted AUC"). Users whose rows are
  all of one class have no AUC and are **skipped** (their impressions count in neither sum), as in
  DIN's code; :func:`gauc_detail` also says how many users and rows that left.
* :func:`logloss` -- mean binary cross-entropy; ``p`` is clipped to ``[1e-7, 1 - 1e-7]`` (float32
  model outputs carry no more precision than that).
* :func:`ne` -- normalised entropy, logloss divided by the entropy of the evaluated rows' base rate
  (He et al. 2014; torchrec's NE): 1.0 is a constant predictor at the right rate, lower is better.
* :func:`calibration` -- ``sum(p) / sum(y)`` (1.0 = calibrated; > 1 over-predicts).

:func:`evaluate` runs a model over batches and returns a ``Result("quality")`` with one row per
labelled head, keeping only predictions, labels and users (three arrays) between batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ctrlens.errors import InputError
from ctrlens.results import COLUMNS, Result

if TYPE_CHECKING:  # torch stays out of import time for the store/dashboard
    from ctrlens.data.batch import Batch

EPS = 1e-7
#: Fixed edges of the normalised-score histogram (pCTR / actual CTR): 0 to 5 in steps of 0.1;
#: scores above 5 fall in the last bin. Fixed edges keep days and checkpoints comparable.
SCORE_EDGES: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 5.0, 51), 6).tolist())


def _np(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """A 1-D numpy array from a numpy array, torch tensor or sequence."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=dtype)
    return a.reshape(-1)


def _check(y: np.ndarray, p: np.ndarray, what: str = "metric") -> None:
    if y.shape != p.shape:
        raise InputError(f"{what}: labels have {y.shape[0]} rows but predictions have {p.shape[0]}")


def _tie_ranks(sorted_keys: list[np.ndarray], n: int) -> np.ndarray:
    """Average 1-based ranks of ``n`` already-sorted rows; a tie is equal on every key.

    Returns float64 ``[n]``: the rank of row ``i`` of the sorted order.
    """
    if n == 0:
        return np.zeros(0)
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for k in sorted_keys:
        new[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], n] - 1
    run = np.cumsum(new) - 1  # run id of every row
    return (starts[run] + ends[run]) / 2.0 + 1.0


def auc(y: Any, p: Any) -> float:
    """ROC AUC of scores ``p [N]`` for labels ``y [N]``; ties count 1/2; ``nan`` with one class."""
    y, p = _np(y), _np(p)
    _check(y, p, "auc")
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(y.size)
    ranks[order] = _tie_ranks([p[order]], y.size)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@dataclass(frozen=True)
class GaucDetail:
    """GAUC with its bookkeeping: how many users/rows counted and how many were skipped."""

    gauc: float
    users: int  # users with both classes (counted)
    users_skipped: int  # users with one class only
    rows: int  # impressions of counted users (the weight total)
    rows_skipped: int


def gauc_detail(y: Any, p: Any, users: Any) -> GaucDetail:
    """Per-user AUC weighted by impressions, all users at once (one sort, no Python loop).

    Args:
        y: labels ``[N]``; p: scores ``[N]``; users: user ids ``[N]`` (any integer ids).
    """
    y, p = _np(y), _np(p)
    u = _np(users, np.int64)
    _check(y, p, "gauc")
    if u.shape != y.shape:
        raise InputError(f"gauc: labels have {y.size} rows but user ids have {u.size}")
    n = y.size
    if n == 0:
        return GaucDetail(float("nan"), 0, 0, 0, 0)
    order = np.lexsort((p, u))  # by user, then score
    us, ps, ys = u[order], p[order], y[order] > 0.5
    first = np.ones(n, dtype=bool)
    first[1:] = us[1:] != us[:-1]
    gstart = np.flatnonzero(first)
    gid = np.cumsum(first) - 1
    # global tie-aware ranks over (user, score) runs, re-based to each user's first row
    r = _tie_ranks([us, ps], n) - gstart[gid]
    n_users = gstart.size
    n_u = np.bincount(gid, minlength=n_users).astype(np.float64)
    npos = np.bincount(gid, weights=ys.astype(np.float64), minlength=n_users)
    nneg = n_u - npos
    rpos = np.bincount(gid, weights=np.where(ys, r, 0.0), minlength=n_users)
    ok = (npos > 0) & (nneg > 0)
    if not ok.any():
        return GaucDetail(float("nan"), 0, n_users, 0, n)
    auc_u = (rpos[ok] - npos[ok] * (npos[ok] + 1) / 2.0) / (npos[ok] * nneg[ok])
    w = n_u[ok]
    return GaucDetail(
        float((w * auc_u).sum() / w.sum()),
        int(ok.sum()),
        int((~ok).sum()),
        int(w.sum()),
        int(n - w.sum()),
    )


def gauc(y: Any, p: Any, users: Any) -> float:
    """Impression-weighted per-user AUC; users with a single class are skipped; ``nan`` if none left."""
    return gauc_detail(y, p, users).gauc


def _xent_sum(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, EPS, 1.0 - EPS)
    return float(-(y * np.log(q) + (1.0 - y) * np.log1p(-q)).sum())


def logloss(y: Any, p: Any) -> float:
    """Mean binary cross-entropy (natural log); ``p`` clipped to ``[1e-7, 1-1e-7]``."""
    y, p = _np(y), _np(p)
    _check(y, p, "logloss")
    if y.size == 0:
        return float("nan")
    return _xent_sum(y, p) / y.size


def base_entropy(rate: float) -> float:
    """Entropy (nats) of a Bernoulli(``rate``); ``nan`` for a rate of 0 or 1."""
    if not 0.0 < rate < 1.0:
        return float("nan")
    return float(-(rate * np.log(rate) + (1.0 - rate) * np.log1p(-rate)))


def ne(y: Any, p: Any) -> float:
    """Normalised entropy: logloss / entropy of the labels' base rate (1.0 = constant predictor)."""
    y_ = _np(y)
    if y_.size == 0:
        return float("nan")
    return logloss(y_, p) / base_entropy(float(y_.mean()))


def calibration(y: Any, p: Any) -> float:
    """``sum(p) / sum(y)``; ``nan`` when there are no positives."""
    y, p = _np(y), _np(p)
    _check(y, p, "calibration")
    s = y.sum()
    return float(p.sum() / s) if s > 0 else float("nan")


def score_histogram(p: Any, rate: float, edges: Sequence[float] = SCORE_EDGES) -> dict[str, list]:
    """Histogram of the founding paper's normalised score ``p / rate`` over fixed ``edges``.

    Scores above the last edge are counted in the last bin. Empty counts when ``rate`` is not > 0.
    """
    p = _np(p)
    e = np.asarray(edges, dtype=np.float64)
    if not rate > 0:
        return {"edges": list(map(float, e)), "counts": [0] * (len(e) - 1)}
    s = np.minimum(p / rate, e[-1])
    counts, _ = np.histogram(s, bins=e)
    return {"edges": list(map(float, e)), "counts": counts.astype(int).tolist()}


@dataclass
class HeadAccumulator:
    """Predictions, labels and users of one head, appended batch by batch (the only state kept)."""

    head: str
    preds: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    users: list[np.ndarray] = field(default_factory=list)
    has_users: bool = True
    gauc_info: GaucDetail | None = None  # set by row()
    #: predictions the labels estimate when not ``preds`` (``HeadSpec.calibrated``: PAL's ctr head)
    cal_preds: list[np.ndarray] = field(default_factory=list)

    def add(self, y: Any, p: Any, users: Any | None, p_calibration: Any | None = None) -> None:
        y_, p_ = _np(y, np.float32), _np(p, np.float32)
        _check(y_, p_, f"head {self.head!r}")
        self.labels.append(y_)
        self.preds.append(p_)
        if p_calibration is not None:
            c = _np(p_calibration, np.float32)
            _check(y_, c, f"head {self.head!r} (calibration)")
            self.cal_preds.append(c)
        if users is None:
            self.has_users = False
        else:
            self.users.append(_np(users, np.int64))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(y [N], p [N], users [N] or None)``, float64 labels/preds."""
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
        users = cat(self.users, np.int64) if self.has_users else None
        return cat(self.labels, np.float64), cat(self.preds, np.float64), users

    def merge(self, other: "HeadAccumulator") -> None:
        """Append another accumulator's rows (e.g. from another DDP rank)."""
        self.preds += other.preds
        self.labels += other.labels
        self.users += other.users
        self.cal_preds += other.cal_preds
        self.has_users = self.has_users and other.has_users

    def _calibration_preds(self, p: np.ndarray) -> np.ndarray:
        n_cal = sum(len(c) for c in self.cal_preds)
        if n_cal == 0:
            return p
        if n_cal != p.size:  # some batches without the calibration output: compare like with like or not at all
            raise InputError(f"head {self.head!r}: calibration predictions for {n_cal} of {p.size} rows")
        return np.concatenate(self.cal_preds).astype(np.float64)

    def row(self, reference_rate: float | None = None) -> dict[str, Any]:
        """The ``quality`` row of this head."""
        y, p, users = self.arrays()
        n = int(y.size)
        rate = float(y.mean()) if n else float("nan")
        norm = reference_rate if reference_rate is not None else rate
        self.gauc_info = gauc_detail(y, p, users) if users is not None else None
        return {
            "head": self.head,
            "rows": n,
            "positives": int((y > 0.5).sum()),
            "auc": auc(y, p),
            "gauc": self.gauc_info.gauc if self.gauc_info is not None else float("nan"),
            "logloss": logloss(y, p),
            "ne": ne(y, p),
            "calibration": calibration(y, self._calibration_preds(p)),
            "mean_pred": float(p.mean()) if n else float("nan"),
            "actual_rate": rate,
            "score_hist_json": score_histogram(p, norm if n else float("nan")),
        }


def quality_result(accs: Iterable[HeadAccumulator], *, reference_rate: float | None = None, meta: dict | None = None) -> Result:
    """A ``Result("quality")`` from finished accumulators (one row per head)."""
    accs = list(accs)
    rows = [a.row(reference_rate) for a in accs]
    frame = pd.DataFrame(rows, columns=list(COLUMNS["quality"]))
    meta = dict(meta or {})
    meta["score_normaliser"] = "reference_rate" if reference_rate is not None else "actual_rate"
    meta["gauc_users"] = {
        a.head: {"counted": a.gauc_info.users, "skipped": a.gauc_info.users_skipped, "rows_skipped": a.gauc_info.rows_skipped}
        for a in accs
        if a.gauc_info is not None
    }
    return Result("quality", frame, meta)


def accumulate(view: Any, batches: Iterable["Batch"], heads: Sequence[str] | None = None, *, device: Any = None) -> dict[str, HeadAccumulator]:
    """Run ``view`` (a ModelView or reference model) in eval mode over ``batches``; collect per head.

    Each head is scored on the rows its :class:`~ctrlens.models.interface.HeadSpec` says: ESMM's
    ``cvr`` on clicked rows (label conversion), ``ctcvr`` on all rows (click*conversion). Heads
    without a label (PAL's ``seen``) are skipped unless named in ``heads`` (then refused).
    """
    import torch

    from ctrlens.models.interface import as_view

    v = as_view(view)
    if heads is None:
        names = [h for h, s in v.heads.items() if s.label is not None]
    else:
        names = list(heads)
        for h in names:
            spec = v.head(h)  # names the valid heads when unknown
            if spec.label is None:
                raise InputError(f"model {v.name!r}: head {h!r} has no label to evaluate against")
    accs = {h: HeadAccumulator(h) for h in names}
    model = v.model
    was_training = model.training
    dev = torch.device(device) if device is not None else v.device
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                b = batch.to(dev) if dev.type != "cpu" else batch
                out = v(b)
                for h in names:
                    spec = v.heads[h]
                    if spec.output not in out:
                        raise InputError(f"model {v.name!r}: head {h!r} reads output {spec.output!r}, which forward did not return (outputs: {sorted(out)})")
                    y, mask = spec.target(b)
                    p, p_cal = spec.predictions(out, mask)
                    users = b.user if mask is None or b.user is None else b.user[mask]
                    accs[h].add(y, p.float(), users, p_cal)
    finally:
        model.train(was_training)
    return accs


def evaluate(
    view_or_model: Any,
    batches: Any,
    heads: Sequence[str] | None = None,
    *,
    day: str | None = None,
    batch_size: int = 4096,
    limit: int | None = None,
    device: Any = None,
    reference_rate: float | None = None,
) -> Result:
    """Quality of a model per head on some data: a ``Result("quality")``, one row per head.

    Args:
        view_or_model: a :class:`~ctrlens.models.interface.ModelView` or a model with ``.lens()``.
        batches: an iterable of :class:`~ctrlens.data.batch.Batch`, or a dataset with
            ``iter_batches`` (then ``day`` is required).
        heads: head names to score; default every head with a label.
        reference_rate: divide pCTR by this rate (e.g. the training set's CTR, as the founding paper
            does) in ``score_hist_json``; default the evaluated rows' actual rate.

    ``meta`` holds ``day`` and per head the GAUC bookkeeping (users counted/skipped).
    """
    if hasattr(batches, "iter_batches"):
        if day is None:
            raise InputError("evaluate: a dataset was given without day=; pass day='YYYY-MM-DD'")
        batches = batches.iter_batches(day, batch_size=batch_size, limit=limit)
    accs = accumulate(view_or_model, batches, heads, device=device)
    return quality_result(accs.values(), reference_rate=reference_rate, meta={"day": day})
