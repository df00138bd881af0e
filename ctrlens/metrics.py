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
labelled head through :class:`HeadAccumulator` (8 bytes per row between batches: AUC and GAUC stay
exact, memory a fraction of the day's).
"""

from __future__ import annotations

from dataclasses import dataclass
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


#: Bits of a packed row key (:class:`HeadAccumulator`): ``group << 33 | score key << 1 | label``.
_SCORE_BITS = 32
_GROUP_SHIFT = _SCORE_BITS + 1
_LOW = np.uint64((1 << _GROUP_SHIFT) - 1)
_MAX_GROUPS = 1 << (64 - _GROUP_SHIFT)
#: Rows per block of the final scans (their temporaries are a few arrays of this many rows).
_SCAN_ROWS = 1 << 18
#: Key chunks (one per batch) joined into one array once this many have piled up.
_JOIN_CHUNKS = 32


def _score_key(p: np.ndarray) -> np.ndarray:
    """uint64 keys ``[N]`` in the order of the float32 scores ``p [N]`` (equal keys = equal scores).

    The IEEE bits, sign-flipped so that unsigned order is numeric order; ``-0.0`` is ``+0.0`` and every
    NaN is one value above ``+inf`` (a NaN score ties with other NaNs)."""
    q = np.asarray(p, dtype=np.float32) + np.float32(0.0)  # -0.0 + 0.0 = +0.0
    if np.isnan(q).any():
        q = np.where(np.isnan(q), np.float32(np.nan), q)
    b = q.view(np.uint32).astype(np.uint64)
    return np.where(b >> np.uint64(31), ~b & np.uint64(0xFFFFFFFF), b | np.uint64(0x80000000))


def _score_of(keys: np.ndarray) -> np.ndarray:
    """The float64 scores ``[N]`` of packed row keys ``[N]`` (inverse of :func:`_score_key`)."""
    s = (keys >> np.uint64(1)) & np.uint64(0xFFFFFFFF)
    b = np.where(s >> np.uint64(31), s ^ np.uint64(0x80000000), ~s & np.uint64(0xFFFFFFFF))
    return b.astype(np.uint32).view(np.float32).astype(np.float64)


def _rank_sums(keys: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: rows, positives and twice the Mann-Whitney U, from sorted packed keys ``[N]``.

    Within a group, a positive scores one per negative of lower score and one half per negative of
    equal score; the key order puts a tie's negatives before its positives, so twice its U is the
    negatives before it plus the negatives before its tie run (both counted from the group's start).
    Scanned in blocks of :data:`_SCAN_ROWS` rows (temporaries bounded); int64 throughout (exact).
    Returns int64 arrays ``[n_groups]``.
    """
    rows = np.zeros(n_groups, np.int64)
    pos = np.zeros(n_groups, np.int64)
    u2 = np.zeros(n_groups, np.int64)
    negs = 0  # negatives before the block
    last_run = last_group = None
    run_c0 = group_c0 = 0  # negatives before the current tie run / group (carried across blocks)
    one, shift = np.uint64(1), np.uint64(_GROUP_SHIFT)
    for s in range(0, keys.size, _SCAN_ROWS):
        k = keys[s:s + _SCAN_ROWS]
        m = k.size
        lab = (k & one).astype(bool)
        neg = (~lab).astype(np.int64)
        cin = np.cumsum(neg) + negs  # negatives up to and including each row
        cex = cin - neg
        run, grp = k >> one, k >> shift
        idx = np.arange(m)
        new_run = np.empty(m, bool)
        new_run[0] = last_run is None or run[0] != last_run
        new_run[1:] = run[1:] != run[:-1]
        new_grp = np.empty(m, bool)
        new_grp[0] = last_group is None or grp[0] != last_group
        new_grp[1:] = grp[1:] != grp[:-1]
        at = np.maximum.accumulate(np.where(new_run, idx, -1))
        r0 = np.where(at >= 0, cex[np.maximum(at, 0)], run_c0)
        at = np.maximum.accumulate(np.where(new_grp, idx, -1))
        g0 = np.where(at >= 0, cex[np.maximum(at, 0)], group_c0)
        contrib = np.where(lab, cin + r0 - 2 * g0, 0)
        starts = np.flatnonzero(np.r_[True, grp[1:] != grp[:-1]])  # segments of one group in this block
        gids = grp[starts].astype(np.int64)
        rows[gids] += np.diff(np.r_[starts, m])
        pos[gids] += np.add.reduceat(lab.astype(np.int64), starts)
        u2[gids] += np.add.reduceat(contrib, starts)
        negs = int(cin[-1])
        last_run, last_group = run[-1], grp[-1]
        run_c0, group_c0 = int(r0[-1]), int(g0[-1])
    return rows, pos, u2


class HeadAccumulator:
    """The quality metrics of one head, accumulated batch by batch in a few bytes per row.

    Kept per row: one packed ``uint64`` key -- the user's dense group id (users numbered in the
    order first seen), the float32 score's order key, the label bit -- sorted in place at the end;
    AUC and GAUC are then exact rank sums over the sorted keys (ties count 1/2, users with one class
    skipped), the same numbers as :func:`auc` / :func:`gauc_detail` on the whole arrays. Sums (log
    loss, labels, predictions, the calibration predictions) are float64 per batch, added: equal to
    the one-shot functions up to float summation order. The score histogram is read back from the
    keys (float32 scores are exact in them).

    :meth:`merge` adds another accumulator's rows (another shard or rank of the same day); the
    merged accumulator's results equal one accumulator's over all rows. ``keep_rows=True`` also keeps
    labels and predictions in row order (:meth:`arrays`), for callers that pair rows across models.
    """

    def __init__(self, head: str, *, keep_rows: bool = False):
        self.head = head
        self.keep_rows = keep_rows
        self.has_users = True
        self.gauc_info: GaucDetail | None = None  # set by row()
        self.rows = 0
        self.positives = 0
        self.sum_y = 0.0
        self.sum_p = 0.0
        self.xent = 0.0
        self.cal_rows = 0  # rows with a calibration prediction (``HeadSpec.calibrated``: PAL's ctr head)
        self.sum_cal = 0.0
        self._keys: list[np.ndarray] = []  # packed row keys, uint64 (see _pack)
        self._joined = 0  # chunks at the front of _keys already joined into blocks
        self._user_ids = np.zeros(0, np.int64)  # users seen, sorted
        self._user_gid = np.zeros(0, np.int64)  # their dense group ids (order first seen)
        self._rows_kept: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

    # -- adding rows

    def _gids(self, users: np.ndarray) -> np.ndarray:
        """Dense group ids ``[N]`` of user ids ``[N]``, numbering users not seen before."""
        ub, inv = np.unique(users, return_inverse=True)
        at = np.searchsorted(self._user_ids, ub)
        found = at < self._user_ids.size
        found[found] = self._user_ids[at[found]] == ub[found]
        ids = np.empty(ub.size, np.int64)
        ids[found] = self._user_gid[at[found]]
        fresh = ~found
        n_new = int(fresh.sum())
        if n_new:
            n0 = self._user_gid.size
            if n0 + n_new > _MAX_GROUPS:
                raise InputError(f"head {self.head!r}: more than {_MAX_GROUPS} users in one accumulator")
            ids[fresh] = np.arange(n0, n0 + n_new)
            self._user_ids = np.insert(self._user_ids, at[fresh], ub[fresh])
            self._user_gid = np.insert(self._user_gid, at[fresh], ids[fresh])
        return ids[inv.reshape(-1)]

    def _push(self, keys: np.ndarray) -> None:
        self._keys.append(keys)
        if len(self._keys) - self._joined > _JOIN_CHUNKS:  # few large arrays, not many small ones
            tail = np.concatenate(self._keys[self._joined:])
            self._keys[self._joined:] = [tail]
            self._joined += 1

    def add(self, y: Any, p: Any, users: Any | None, p_calibration: Any | None = None) -> None:
        """Rows of one batch: labels ``y [n]``, scores ``p [n]``, user ids ``[n]`` or None."""
        y_, p_ = _np(y, np.float32), _np(p, np.float32)
        _check(y_, p_, f"head {self.head!r}")
        if p_calibration is not None:
            c = _np(p_calibration, np.float32)
            _check(y_, c, f"head {self.head!r} (calibration)")
            self.cal_rows += c.size
            self.sum_cal += float(c.astype(np.float64).sum())
        u = None
        if users is None:
            self.has_users = False
        else:
            u = _np(users, np.int64)
            if u.shape != y_.shape:
                raise InputError(f"head {self.head!r}: labels have {y_.size} rows but user ids have {u.size}")
        y64, p64 = y_.astype(np.float64), p_.astype(np.float64)
        lab = y_ > 0.5
        self.rows += y_.size
        self.positives += int(lab.sum())
        self.sum_y += float(y64.sum())
        self.sum_p += float(p64.sum())
        self.xent += _xent_sum(y64, p64) if y_.size else 0.0
        key = (_score_key(p_) << np.uint64(1)) | lab.astype(np.uint64)
        if self.has_users and u is not None:
            key |= self._gids(u).astype(np.uint64) << np.uint64(_GROUP_SHIFT)
        self._push(key)
        if self.keep_rows:
            self._rows_kept.append((y_.copy(), p_.copy(), u.copy() if u is not None else None))

    def merge(self, other: "HeadAccumulator") -> None:
        """Add another accumulator's rows (disjoint rows: another shard or DDP rank of the same day)."""
        for k in ("rows", "positives", "sum_y", "sum_p", "xent", "cal_rows", "sum_cal"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        keys = other._keys
        if self.has_users and other.has_users and other._user_ids.size:
            # other's group ids -> ours (its users numbered here as if seen now)
            remap = np.zeros(other._user_gid.size, np.int64)
            remap[other._user_gid] = self._gids(other._user_ids)
            shift = np.uint64(_GROUP_SHIFT)
            keys = [(remap[(k >> shift).astype(np.int64)].astype(np.uint64) << shift) | (k & _LOW) for k in keys]
        self.has_users = self.has_users and other.has_users
        for k in keys:
            self._push(k)
        self.keep_rows = self.keep_rows and other.keep_rows
        self._rows_kept = self._rows_kept + other._rows_kept if self.keep_rows else []

    # -- results

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(y [N], p [N], users [N] or None)`` in row order, float64 labels/preds (``keep_rows=True`` only)."""
        if not self.keep_rows:
            raise InputError(f"head {self.head!r}: rows were not kept (HeadAccumulator(keep_rows=True))")
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
        y = cat([r[0] for r in self._rows_kept], np.float64)
        p = cat([r[1] for r in self._rows_kept], np.float64)
        users = cat([r[2] for r in self._rows_kept], np.int64) if self.has_users else None
        return y, p, users

    def _sorted_keys(self) -> np.ndarray:
        """Every row's key, sorted (kept as the accumulator's one array: adding more rows still works)."""
        if not self._keys:
            return np.zeros(0, np.uint64)
        keys = self._keys[0] if len(self._keys) == 1 else np.concatenate(self._keys)
        self._keys = [keys]
        self._joined = 1
        keys.sort()  # in place
        return keys

    def _auc(self, keys: np.ndarray) -> float:
        neg = self.rows - self.positives
        if self.positives == 0 or neg == 0:
            return float("nan")
        scores = keys
        if keys.size and keys[-1] >> np.uint64(_GROUP_SHIFT):  # sorted: the last key has the largest group
            scores = keys & _LOW  # groups dropped: one ranking of all rows
            scores.sort()
        _, _, u2 = _rank_sums(scores, 1)
        return float(np.float64(int(u2[0]) / 2) / (self.positives * neg))

    def _gauc(self, keys: np.ndarray) -> GaucDetail:
        n = self.rows
        if n == 0:
            return GaucDetail(float("nan"), 0, 0, 0, 0)
        rows, pos, u2 = _rank_sums(keys, self._user_gid.size)
        order = self._user_gid  # groups in user-id order, as gauc_detail sums them
        n_u, npos = rows[order].astype(np.float64), pos[order].astype(np.float64)
        nneg = n_u - npos
        u = u2[order].astype(np.float64) / 2.0
        ok = (npos > 0) & (nneg > 0)
        if not ok.any():
            return GaucDetail(float("nan"), 0, int(order.size), 0, n)
        auc_u = u[ok] / (npos[ok] * nneg[ok])
        w = n_u[ok]
        return GaucDetail(float((w * auc_u).sum() / w.sum()), int(ok.sum()), int((~ok).sum()), int(w.sum()),
                          int(n - w.sum()))  # fmt: skip

    def _histogram(self, keys: np.ndarray, rate: float) -> dict[str, list]:
        e = np.asarray(SCORE_EDGES, dtype=np.float64)
        counts = np.zeros(e.size - 1, np.int64)
        if rate > 0:
            for s in range(0, keys.size, _SCAN_ROWS):
                counts += np.histogram(np.minimum(_score_of(keys[s:s + _SCAN_ROWS]) / rate, e[-1]), bins=e)[0]
        return {"edges": list(map(float, e)), "counts": counts.astype(int).tolist()}

    def row(self, reference_rate: float | None = None) -> dict[str, Any]:
        """The ``quality`` row of this head."""
        n = self.rows
        if self.cal_rows and self.cal_rows != n:  # some batches without the calibration output: compare like with like or not at all
            raise InputError(f"head {self.head!r}: calibration predictions for {self.cal_rows} of {n} rows")
        keys = self._sorted_keys()
        rate = self.sum_y / n if n else float("nan")
        norm = reference_rate if reference_rate is not None else rate
        self.gauc_info = self._gauc(keys) if self.has_users else None
        logloss_ = self.xent / n if n else float("nan")
        return {
            "head": self.head,
            "rows": n,
            "positives": self.positives,
            "auc": self._auc(keys),
            "gauc": self.gauc_info.gauc if self.gauc_info is not None else float("nan"),
            "logloss": logloss_,
            "ne": logloss_ / base_entropy(rate) if n else float("nan"),
            "calibration": (self.sum_cal if self.cal_rows else self.sum_p) / self.sum_y if self.sum_y > 0 else float("nan"),
            "mean_pred": self.sum_p / n if n else float("nan"),
            "actual_rate": rate,
            "score_hist_json": self._histogram(keys, norm if n else float("nan")),
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


def accumulate(view: Any, batches: Iterable["Batch"], heads: Sequence[str] | None = None, *, device: Any = None,
               keep_rows: bool = False) -> dict[str, HeadAccumulator]:  # fmt: skip
    """Run ``view`` (a ModelView or reference model) in eval mode over ``batches``; collect per head.

    ``keep_rows=True``: the accumulators also keep labels and predictions in row order
    (:meth:`HeadAccumulator.arrays`).

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
    accs = {h: HeadAccumulator(h, keep_rows=keep_rows) for h in names}
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
