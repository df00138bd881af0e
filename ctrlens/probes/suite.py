"""Layer-wise linear probes: how much of a head's label each layer's output carries, per day.

A probe (Alain & Bengio 2016) is a logistic regression trained on a frozen layer's output. One
:class:`ProbeSuite` fits one probe per watched layer for one head, on a seeded sample of one day,
in a single forward pass that also records the model's own prediction on the same rows; it then
scores the probes on the day's held-out rows and on later days (the decay protocol of Guo et al.
2018: train on day D, test on D+1..D+k)::

    suite = ProbeSuite(model, head="ctr", max_rows=20_000).fit(dataset, day="2026-01-03")
    suite.score()                                  # held-out rows of 2026-01-03
    suite.score(dataset, day="2026-01-04")         # the next day
    suite.findings()                               # layers that lose information
    result = suite.to_result(model_version="din@step-3000")   # Result("probe") for the store

Single-class data: fitting on a sample with one class raises :class:`~ctrlens.errors.InputError`
(nothing can be learned); scoring rows with one class returns a row with NaN ``auc``/``model_auc``
/``gap`` (``logloss`` is still defined) and a :class:`ProbeWarning`.
"""

from __future__ import annotations

import inspect
import math
import re
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ctrlens.data.batch import Batch
from ctrlens.errors import InputError
from ctrlens.models.interface import HeadSpec, ModelView, as_view
from ctrlens.probes.features import ProbeLayer, Sample, StreamConfig, resolve_layers, stream
from ctrlens.probes.linear import LinearProbe, ProbeWarning, auc, logloss_from_logits
from ctrlens.probes.logistic import Solver
from ctrlens.results import COLUMNS, Result

Data = Any  # a Batch, an iterable of Batches, a DailyDataset (with day=), a dataset root path, or (dataset, day)

FINDING_COLUMNS = ["layer", "previous", "eval_day", "auc", "previous_auc", "drop"]


class ProbeSuite:
    """One linear probe per watched layer of a model, for one head.

    Args:
        view: a :class:`~ctrlens.models.interface.ModelView` or a reference model (``.lens()``).
        layers: layer names or glob patterns (``"mlp.*"``); ``None`` = every layer, plus the
            pseudo-layers ``embedding`` / ``logit.<head>`` (see :mod:`ctrlens.probes.features`).
        head: the head whose label is predicted (``"ctr"``: click; ESMM's ``"cvr"``: conversion on
            clicked rows, as its :class:`HeadSpec` says).
        C: inverse L2 strength with scikit-learn's meaning (``LogisticRegression(C=C)``).
        max_rows: training rows sampled from the fit day.
        holdout: share of the fit day's rows reserved for evaluation (never trained on); up to
            ``max_rows * holdout / (1 - holdout)`` of them are kept.
        max_eval_rows: rows sampled when scoring a day (bottom-k of the same row hash).
        seed: seeds the row sample and the solver; results are deterministic for a seed.
        device: where features are kept and probes solved; default: the model's device.
        dtype: feature / solve dtype (float32; losses are accumulated in float64).
        solver, tol, max_iter: see :class:`~ctrlens.probes.logistic.SolverConfig`.
        batch_size: batch size when reading a :class:`DailyDataset`.

    Fitted attributes (trailing underscore, per layer name): ``layers_`` (names in forward order),
    ``probes_`` (:class:`LinearProbe`), ``coef_`` (``[d]`` on standardised features), ``intercept_``,
    ``mean_``, ``scale_``, ``n_iter_``, ``n_train_``, ``n_holdout_``, ``train_day_``, ``results_``
    (every frame returned by :meth:`score`), ``timings_`` (seconds of the pass and of the solves).
    """

    def __init__(
        self,
        view: Any,
        layers: list[str] | str | None = None,
        head: str = "ctr",
        *,
        C: float = 1.0,
        max_rows: int = 20_000,
        holdout: float = 0.2,
        max_eval_rows: int = 100_000,
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        solver: Solver = "auto",
        tol: float = 1e-6,
        max_iter: int = 100,
        batch_size: int = 4096,
    ):
        self.view: ModelView = as_view(view)
        self.layers = layers
        self.head = head
        self.C = C
        self.max_rows = int(max_rows)
        self.holdout = float(holdout)
        self.max_eval_rows = int(max_eval_rows)
        self.seed = int(seed)
        self.device = device
        self.dtype = dtype
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.batch_size = int(batch_size)
        if not 0.0 <= self.holdout < 1.0:
            raise InputError(f"probe holdout must be in [0, 1), got {holdout!r}")
        if self.max_rows < 2 or self.max_eval_rows < 1:
            raise InputError(f"probe max_rows must be >= 2 and max_eval_rows >= 1, got {max_rows!r}, {max_eval_rows!r}")
        # Validate names now: a wrong layer or head should fail before a pass over a whole day.
        self._head: HeadSpec = self.view.head(head)
        if self._head.label is None:
            raise InputError(f"head {head!r} of model {self.view.name!r} has no label to probe; heads: {sorted(self.view.heads)}")
        self._layers: list[ProbeLayer] = resolve_layers(self.view, self._head, layers)

    # -- data ----------------------------------------------------------------------------------

    def _open(self, data: Data, day: str | None) -> tuple[Iterable[Batch], str]:
        """Batches and the day label for ``data`` (see :data:`Data`)."""
        if isinstance(data, Batch):
            return [data], day or ""
        if isinstance(data, (str, Path)):
            from ctrlens.data import DailyDataset  # type: ignore[attr-defined]

            data = DailyDataset(data)
        if isinstance(data, tuple) and len(data) == 2 and hasattr(data[0], "iter_batches"):
            data, day = data
        if hasattr(data, "iter_batches"):
            days = list(data.days())
            if day is None:
                raise InputError(f"probes: which day of the dataset? pass day=...; days: {days}")
            if day not in days:
                raise InputError(f"probes: day {day!r} is not in the dataset; days: {days}")
            kw: dict[str, Any] = {}
            if not self._needs_images() and "images" in inspect.signature(data.iter_batches).parameters:
                kw["images"] = False  # the loader need not decode pixels the model never reads
            return data.iter_batches(day, batch_size=self.batch_size, **kw), day
        if data is None:
            raise InputError("probes: no data given")
        return data, day or ""

    def _needs_images(self) -> bool:
        """Whether the model may read ``batch.images``: it has image fields, or fields of unknown kind
        (a model attached without kinds -- load the images to be safe)."""
        return any(f.kind in ("image", "other") for f in self.view.fields.values())

    def _store_device(self) -> torch.device:
        return torch.device(self.device) if self.device is not None else self.view.device

    # -- fit -----------------------------------------------------------------------------------

    def fit(self, data: Data, day: str | None = None) -> "ProbeSuite":
        """Sample the day's rows in one forward pass and fit one probe per layer.

        Args:
            data: batches of one day, a ``DailyDataset`` (then ``day`` picks the day), a dataset
                root, or ``(dataset, day)``.
            day: the day (``"YYYY-MM-DD"``); with plain batches only a label for the results.

        Raises:
            InputError: no rows, or the training sample holds a single class.
        """
        batches, day_label = self._open(data, day)
        hold = self.holdout
        n_hold = math.ceil(self.max_rows * hold / (1.0 - hold)) if hold > 0 else 0
        cfg = StreamConfig(
            self.seed,
            {
                "train": (self.max_rows, lambda key, u: u >= hold),
                "holdout": (n_hold, lambda key, u: u < hold),
            },
        )
        dev = self._store_device()
        t0 = time.perf_counter()
        sample = stream(self.view, self._layers, self._head, batches, cfg, store_device=dev, store_dtype=self.dtype)
        t1 = time.perf_counter()
        train = sample["train"]
        where = f"day {day_label!r}, " if day_label else ""
        label = self._head.label
        if len(train) == 0:
            raise InputError(
                f"probes: {where}head {self.head!r}: no rows to train on "
                f"({train.rows} rows offered{', clicked rows only' if self._head.rows == 'clicked' else ''})"
            )
        pos = int(train.y.sum())
        if pos == 0 or pos == len(train):
            raise InputError(
                f"probes: {where}head {self.head!r}: all {len(train)} sampled training rows have {label}={int(pos > 0)} "
                f"({train.positives} positives in {train.rows} rows of the pass); a probe needs both classes -- "
                "use more rows (max_rows), another day or another head"
            )
        self.layers_: list[str] = [pl.name for pl in self._layers]
        self.probes_: dict[str, LinearProbe] = {}
        self.coef_: dict[str, np.ndarray] = {}
        self.intercept_: dict[str, float] = {}
        self.mean_: dict[str, np.ndarray] = {}
        self.scale_: dict[str, np.ndarray] = {}
        self.n_iter_: dict[str, int] = {}
        for name in self.layers_:
            probe = LinearProbe(
                self.C, solver=self.solver, tol=self.tol, max_iter=self.max_iter, device=dev, dtype=self.dtype, seed=self.seed
            ).fit(train.x[name], train.y)
            self.probes_[name] = probe
            self.coef_[name] = probe.coef_[0]
            self.intercept_[name] = float(probe.intercept_[0])
            self.mean_[name] = probe.mean_
            self.scale_[name] = probe.scale_
            self.n_iter_[name] = int(probe.n_iter_[0])
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.timings_ = {"pass_s": t1 - t0, "solve_s": time.perf_counter() - t1}
        self.train_day_ = day_label
        self.n_train_ = len(train)
        self.n_holdout_ = len(sample["holdout"])
        self.positives_train_ = pos
        # Rows with a key above this (among non-holdout rows) were not in the training sample.
        self._train_threshold = float(train.key[-1]) if len(train) >= self.max_rows else float("inf")
        self._holdout: Sample = sample["holdout"]
        self.results_: list[pd.DataFrame] = []
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "probes_"):
            raise InputError("this ProbeSuite is not fitted yet; call fit(data, day=...) first")

    # -- score ---------------------------------------------------------------------------------

    def score(self, data: Data | None = None, day: str | None = None) -> pd.DataFrame:
        """Evaluate every probe: on the fit day's held-out rows (``data=None``) or on other data.

        When ``day`` equals the fit day, the rows used for training are left out. Returns one row
        per layer with the columns of ``COLUMNS["probe"]`` (``gap = model_auc - auc`` on the same
        rows), and appends it to ``results_``.
        """
        self._check_fitted()
        if data is None:
            if day not in (None, self.train_day_):
                raise InputError(f"probes: score() without data evaluates the held-out rows of {self.train_day_!r}, not {day!r}")
            s = self._holdout
            if len(s) == 0:
                raise InputError("probes: no held-out rows (holdout=0 or a tiny day); pass data to score on")
            logits = {n: self.probes_[n].decision_function_t(s.x[n]) for n in self.layers_}
            frame = self._frame(logits, s, self.train_day_)
        else:
            batches, day_label = self._open(data, day)
            hold, thr = self.holdout, self._train_threshold
            same_day = bool(day_label) and day_label == self.train_day_
            if same_day:
                select = lambda key, u: (u < hold) | (key > thr)  # noqa: E731 - not a training row
            else:
                select = lambda key, u: np.ones(key.shape, dtype=bool)  # noqa: E731
            cfg = StreamConfig(self.seed, {"eval": (self.max_eval_rows, select)})
            probes = self.probes_
            s = stream(
                self.view, self._layers, self._head, batches, cfg, store_device=self._store_device(),
                store_dtype=torch.float64, transform=lambda name, f: probes[name].decision_function_t(f),
            )["eval"]
            frame = self._frame(s.x, s, day_label)
        self.results_.append(frame)
        return frame

    def _frame(self, logits: dict[str, Tensor], s: Sample, eval_day: str) -> pd.DataFrame:
        y = s.y.cpu().numpy()
        if len(s) == 0:
            warnings.warn(f"probes: no rows to evaluate on {eval_day or 'the given data'}", ProbeWarning, stacklevel=3)
        elif y.min() == y.max():
            warnings.warn(
                f"probes: all {len(s)} evaluation rows{' of ' + eval_day if eval_day else ''} have "
                f"{self._head.label}={int(y[0])}; AUC is undefined (NaN)",
                ProbeWarning,
                stacklevel=3,
            )
        model_auc = auc(s.p.cpu().numpy(), y) if len(s) else float("nan")
        rows = []
        for name in self.layers_:
            z = logits[name]
            a = auc(z, y) if len(s) else float("nan")
            rows.append(
                {
                    "layer": name,
                    "head": self.head,
                    "train_day": self.train_day_,
                    "eval_day": eval_day,
                    "n_train": self.n_train_,
                    "n_eval": len(s),
                    "auc": a,
                    "logloss": logloss_from_logits(z, y),
                    "model_auc": model_auc,
                    "gap": model_auc - a,
                }
            )
        return pd.DataFrame(rows, columns=list(COLUMNS["probe"]))

    def decay(self, dataset: Any, eval_days: Iterable[str]) -> pd.DataFrame:
        """The decay protocol: held-out rows of the fit day, then each of ``eval_days``."""
        frames = [self.score()] if self.n_holdout_ else []
        frames += [self.score(dataset, day=d) for d in eval_days]
        return pd.concat(frames, ignore_index=True)

    # -- diagnostics ---------------------------------------------------------------------------

    def predecessors(self) -> dict[str, str]:
        """layer -> the layer it is compared with in :meth:`findings` (its input along the main path).

        Rule (names are ``<block>.<i>``): a layer follows the previous index of its block; the
        first layer of a block follows the (last) embedding layer; ``logit.<head>`` follows the last
        compared layer before it. Attention layers (a side branch) and layers of other heads'
        towers (a name segment equal to another head) are not compared.
        """
        self._check_fitted()
        kinds = {pl.name: pl.kind for pl in self._layers}
        others = set(self.view.heads) - {self.head}
        emb: str | None = None
        last_in_block: dict[str, str] = {}
        last: str | None = None
        prev: dict[str, str] = {}
        for name in self.layers_:
            kind = kinds[name]
            if kind == "attention" or any(seg in others for seg in name.split(".")):
                continue
            if kind == "embedding":
                emb = name
                continue
            if kind == "logit":
                if last is not None:
                    prev[name] = last
                continue
            block = re.sub(r"\.\d+$", "", name)
            p = last_in_block.get(block, emb)
            if p is not None:
                prev[name] = p
            last_in_block[block] = name
            last = name
        return prev

    def findings(self, tol: float = 0.01, eval_day: str | None = None) -> pd.DataFrame:
        """Layers whose probe AUC is below their input layer's by more than ``tol`` (information lost:
        a collapsed or dead layer, or an output layer that uses less than its input offers).

        Uses the latest scores of ``eval_day`` (default: the fit day's held-out rows, scored now if
        needed). Columns: ``layer, previous, eval_day, auc, previous_auc, drop``.
        """
        self._check_fitted()
        day = self.train_day_ if eval_day is None else eval_day
        frame = next((f for f in reversed(self.results_) if len(f) and f["eval_day"].iloc[0] == day), None)
        if frame is None:
            if day != self.train_day_:
                raise InputError(f"probes: no scores for day {day!r}; call score(data, day={day!r}) first")
            frame = self.score()
        a = dict(zip(frame["layer"], frame["auc"]))
        rows = []
        for layer, p in self.predecessors().items():
            drop = a[p] - a[layer]
            if drop > tol:
                rows.append({"layer": layer, "previous": p, "eval_day": day, "auc": a[layer], "previous_auc": a[p], "drop": drop})
        return pd.DataFrame(rows, columns=FINDING_COLUMNS)

    # -- results -------------------------------------------------------------------------------

    def to_result(
        self,
        *,
        model_version: str | None = None,
        checkpoint: str | None = None,
        eval_days: Iterable[str] | None = None,
    ) -> Result:
        """A ``Result("probe")`` of every score so far (the latest per layer and eval day), scoring the
        held-out rows first when nothing was scored. ``model_version``/``checkpoint`` go to ``meta``."""
        self._check_fitted()
        if not self.results_:
            self.score()
        frame = pd.concat(self.results_, ignore_index=True)
        frame = frame.drop_duplicates(["layer", "eval_day"], keep="last")
        if eval_days is not None:
            wanted = list(eval_days)
            frame = frame[frame["eval_day"].isin(wanted)]
        order = {n: i for i, n in enumerate(self.layers_)}
        frame = frame.assign(_o=frame["layer"].map(order)).sort_values(["eval_day", "_o"], kind="stable").drop(columns="_o")
        meta = {
            "model": self.view.name,
            "model_version": model_version,
            "checkpoint": checkpoint,
            "head": self.head,
            "label": self._head.label,
            "rows": self._head.rows,
            "C": self.C,
            "max_rows": self.max_rows,
            "holdout": self.holdout,
            "seed": self.seed,
            "solver": self.solver,
            "n_iter": dict(self.n_iter_),
            "dims": {n: int(self.coef_[n].shape[0]) for n in self.layers_},
            "converged": {n: bool(self.probes_[n].converged_) for n in self.layers_},
        }
        return Result("probe", frame, meta)

    def __repr__(self) -> str:
        return f"ProbeSuite(model={self.view.name!r}, head={self.head!r}, layers={[pl.name for pl in self._layers]})"


def probe_days(view: Any, dataset: Any, train_day: str, eval_days: Iterable[str], *, model_version: str | None = None,
               checkpoint: str | None = None, **suite_kw: Any) -> Result:
    """Fit probes on ``train_day`` of ``dataset`` and score its held-out rows and each of ``eval_days``."""
    suite = ProbeSuite(view, **suite_kw).fit(dataset, day=train_day)
    suite.decay(dataset, eval_days)
    return suite.to_result(model_version=model_version, checkpoint=checkpoint)
