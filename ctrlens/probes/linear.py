"""A single linear probe with a scikit-learn style API, and the metrics probes report."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ctrlens import metrics
from ctrlens.errors import InputError
from ctrlens.probes.logistic import LogisticFit, SolverConfig, Solver, check_binary, fit_logistic


class ProbeWarning(UserWarning):
    """A probe metric that could not be computed (e.g. AUC on rows of a single class)."""


def auc(scores: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
    """ROC AUC of ``scores [n]`` for 0/1 labels ``y [n]`` (ties count one half); NaN for one class.

    The probes' argument order (scores first, as a classifier's ``score``); the formula is
    :func:`ctrlens.metrics.auc`, the one every stage uses."""
    return metrics.auc(_np(y), _np(scores))


def logloss_from_logits(z: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
    """Mean binary cross-entropy of logits ``z [n]`` (computed stably, no clipping needed)."""
    zt = torch.as_tensor(_np(z), dtype=torch.float64)
    yt = torch.as_tensor(_np(y), dtype=torch.float64)
    if zt.numel() == 0:
        return float("nan")
    return float((torch.nn.functional.softplus(zt) - yt * zt).mean())


def _np(a: Any) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def standardise_stats(X: Tensor, chunk: int = 65_536) -> tuple[Tensor, Tensor]:
    """``(mean [d], scale [d])`` float64, as scikit-learn's StandardScaler (population std; 1 where
    it is 0). Accumulated in float64 over row chunks (two passes), so a float32 ``X`` is never
    copied whole."""
    n = X.shape[0]
    mean = torch.zeros(X.shape[1], dtype=torch.float64, device=X.device)
    for s in range(0, n, chunk):
        mean += X[s : s + chunk].double().sum(0)
    mean /= max(n, 1)
    var = torch.zeros_like(mean)
    for s in range(0, n, chunk):
        var += (X[s : s + chunk].double() - mean).square().sum(0)
    scale = (var / max(n, 1)).sqrt()
    scale = torch.where(scale > 1e-12 * (1 + mean.abs()), scale, torch.ones_like(scale))
    return mean, scale


class LinearProbe:
    """An L2 logistic-regression probe on one layer's features, solved in torch.

    ``LinearProbe(C=1.0)`` minimises the same objective as scikit-learn's
    ``LogisticRegression(C=1.0)`` on the standardised features (``standardize=True``: the training
    rows' mean and population std, as ``StandardScaler``).

    Args:
        C: inverse regularisation strength (scikit-learn's meaning).
        standardize: standardise features with the training mean/std before fitting.
        solver: ``"auto"`` | ``"newton"`` | ``"lbfgs"`` (see :mod:`ctrlens.probes.logistic`).
        tol, max_iter: stopping rule (largest gradient component of the mean objective).
        device: where to solve (``"cpu"``, ``"cuda"``...; default: where ``X`` is).
        dtype: solve dtype (default float32; products accumulate losses in float64).
        seed: seeds the Newton Hessian subsample.

    Attributes (after ``fit``): ``coef_ [1, d]`` (on standardised features), ``intercept_ [1]``,
    ``mean_ [d]``, ``scale_ [d]``, ``classes_``, ``n_iter_``, ``converged_``, ``n_features_in_``.
    """

    def __init__(
        self,
        C: float = 1.0,
        *,
        standardize: bool = True,
        solver: Solver = "auto",
        tol: float = 1e-6,
        max_iter: int = 100,
        hessian_rows: int = 16_384,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ):
        self.C = C
        self.standardize = standardize
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.hessian_rows = hessian_rows
        self.device = device
        self.dtype = dtype
        self.seed = seed

    # -- fitting -------------------------------------------------------------------------------

    def _tensor(self, X: Any) -> Tensor:
        t = torch.as_tensor(X)
        dev = torch.device(self.device) if self.device is not None else t.device
        t = t.to(dev, self.dtype)
        if t.ndim == 1:
            t = t[:, None]
        if t.ndim != 2:
            raise InputError(f"LinearProbe: expected X of shape [n, d], got {tuple(t.shape)}")
        return t

    def fit(self, X: Any, y: Any) -> "LinearProbe":
        """Fit on ``X [n, d]`` and 0/1 labels ``y [n]``. Raises :class:`InputError` on one class."""
        Xt = self._tensor(X)
        yt = torch.as_tensor(y).reshape(-1).to(Xt.device, self.dtype)
        if yt.shape[0] != Xt.shape[0]:
            raise InputError(f"LinearProbe.fit: X has {Xt.shape[0]} rows but y has {yt.shape[0]}")
        check_binary(yt, "LinearProbe.fit")
        if self.standardize:
            mean, scale = standardise_stats(Xt)
        else:
            mean = torch.zeros(Xt.shape[1], dtype=torch.float64, device=Xt.device)
            scale = torch.ones_like(mean)
        Z = (Xt - mean.to(Xt.dtype)).mul_((1.0 / scale).to(Xt.dtype))  # one [n, d] copy
        cfg = SolverConfig(C=self.C, solver=self.solver, tol=self.tol, max_iter=self.max_iter,
                           hessian_rows=self.hessian_rows, seed=self.seed)
        fit = fit_logistic(Z, yt, cfg)
        if not fit.converged:
            warnings.warn(
                f"LinearProbe: {fit.solver} stopped after {fit.n_iter} iterations without reaching tol={self.tol}; "
                "raise max_iter or tol", ProbeWarning, stacklevel=2,
            )
        self._set(fit, mean, scale)
        return self

    def _set(self, fit: LogisticFit, mean: Tensor, scale: Tensor) -> None:
        self.fit_ = fit
        self._mean_t, self._scale_t = mean, scale
        self._coef_t = fit.coef.double()
        # logits of raw features in one product: z = X @ (coef / scale) + (b - mean . coef / scale)
        self._w_raw = self._coef_t / scale
        self._b_raw = float(fit.intercept - (mean * self._w_raw).sum())
        self.coef_ = self._coef_t.cpu().numpy()[None, :]
        self.intercept_ = np.array([fit.intercept])
        self.mean_ = mean.cpu().numpy()
        self.scale_ = scale.cpu().numpy()
        self.classes_ = np.array([0, 1])
        self.n_iter_ = np.array([fit.n_iter])
        self.converged_ = fit.converged
        self.n_features_in_ = int(mean.shape[0])

    def _check_fitted(self) -> None:
        if not hasattr(self, "fit_"):
            raise InputError("this LinearProbe is not fitted yet; call fit(X, y) first")

    # -- prediction ----------------------------------------------------------------------------

    def decision_function_t(self, X: Tensor) -> Tensor:
        """Logits ``[n]`` for raw (unstandardised) features ``X [n, d]`` as a float64 tensor."""
        self._check_fitted()
        X = X.to(self._coef_t.device)
        if X.ndim == 1:
            X = X[:, None]
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"LinearProbe: X has {X.shape[1]} features, the probe was fitted on {self.n_features_in_}")
        return X.double() @ self._w_raw + self._b_raw

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits ``[n]``."""
        return self.decision_function_t(torch.as_tensor(X)).cpu().numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """``[n, 2]`` probabilities of class 0 and 1 (as scikit-learn)."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1 - p, p], 1)

    def predict(self, X: Any) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(np.int64)

    def score(self, X: Any, y: Any) -> float:
        """ROC AUC on ``(X, y)`` -- note: scikit-learn classifiers return accuracy here; AUC is
        what a probe is judged by. NaN (with a :class:`ProbeWarning`) when ``y`` has one class."""
        a = auc(self.decision_function(X), y)
        if np.isnan(a):
            warnings.warn("LinearProbe.score: labels hold a single class; AUC is undefined (NaN)", ProbeWarning, stacklevel=2)
        return a

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        keys = ("C", "standardize", "solver", "tol", "max_iter", "hessian_rows", "device", "dtype", "seed")
        return {k: getattr(self, k) for k in keys}

    def set_params(self, **params: Any) -> "LinearProbe":
        for k, v in params.items():
            if k not in self.get_params():
                raise InputError(f"LinearProbe has no parameter {k!r}; parameters: {sorted(self.get_params())}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        return f"LinearProbe(C={self.C}, solver={self.solver!r})"
