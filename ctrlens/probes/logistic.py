"""L2-regularised binary logistic regression solved in torch (CPU or GPU).

The objective is exactly scikit-learn's ``LogisticRegression(penalty="l2", C=C)`` (intercept not
penalised), written per row so that ``C`` means the same thing::

    f(w, b) = mean_i [ log(1 + exp(z_i)) - y_i z_i ] + ||w||^2 / (2 C n),   z = X w + b

so a probe here and a probe fitted with scikit-learn on the same features agree (see
``tests/test_probes_sklearn.py``).

Two solvers:

* ``"newton"`` -- Newton's method with an Armijo backtracking line search. Probe features are small
  (8..~300 dims), so one ``d x d`` Cholesky per step is nothing; the ``X^T diag(p(1-p)) X`` product is
  the cost, so on large samples it is computed on a seeded subsample of ``hessian_rows`` rows
  (a *subsampled Newton* method, Byrd et al. 2011; Roosta-Khorasani & Mahoney 2016), grown 4x
  whenever a step fails to halve the gradient. The gradient and the line search always use every
  row, so the solution is the exact full-data optimum -- only the step directions are approximate.
* ``"lbfgs"`` -- ``torch.optim.LBFGS`` with a strong-Wolfe line search, for wide layers where a
  ``d x d`` Hessian would be too big.

``"auto"`` picks Newton up to ``newton_max_dim`` features. Matrix products run in the dtype of ``X``
(float32 on a GPU is fine); per-row losses are accumulated in float64 so that the line search can
still see tiny decreases near the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from ctrlens.errors import InputError

Solver = Literal["auto", "newton", "lbfgs"]


@dataclass(frozen=True)
class SolverConfig:
    """How a probe is solved.

    Attributes:
        C: inverse regularisation strength, as in scikit-learn (penalty ``||w||^2 / (2 C n)``
            on the mean loss).
        solver: ``"auto"`` (Newton up to ``newton_max_dim`` features, else L-BFGS), ``"newton"``
            or ``"lbfgs"``.
        tol: stop when the largest absolute gradient component of the (mean) objective is below
            this -- scikit-learn's ``tol`` means the same for lbfgs, with a default of ``1e-4``.
        max_iter: iteration cap (Newton steps or L-BFGS iterations).
        hessian_rows: Newton: rows used for the Hessian (all when the sample is smaller).
        newton_max_dim: ``"auto"``: widest layer solved with Newton.
        seed: seeds the Hessian subsample (results are deterministic for a seed).
    """

    C: float = 1.0
    solver: Solver = "auto"
    tol: float = 1e-6
    max_iter: int = 100
    hessian_rows: int = 16_384
    newton_max_dim: int = 2_048
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.C > 0:
            raise InputError(f"probe C must be > 0 (inverse regularisation strength), got {self.C!r}")
        if self.solver not in ("auto", "newton", "lbfgs"):
            raise InputError(f"probe solver must be 'auto', 'newton' or 'lbfgs', got {self.solver!r}")
        if self.max_iter < 1 or self.hessian_rows < 1:
            raise InputError("probe max_iter and hessian_rows must be >= 1")


@dataclass
class LogisticFit:
    """A solved probe: ``p = sigmoid(X @ coef + intercept)``.

    Attributes:
        coef: ``[d]`` weights (dtype and device of the inputs).
        intercept: the bias.
        n_iter: iterations used.
        converged: whether the gradient tolerance was reached.
        loss: the final objective value (mean loss + penalty).
        solver: the solver that ran.
        grad_history: Newton: the largest gradient component before each step (convergence trace).
    """

    coef: Tensor
    intercept: float
    n_iter: int
    converged: bool
    loss: float
    solver: str
    grad_history: list[float] = field(default_factory=list)


def check_binary(y: Tensor, what: str = "labels") -> None:
    """Refuse targets that are not 0/1 or that hold a single class (no probe can be fitted)."""
    if y.numel() == 0:
        raise InputError(f"{what}: no rows to fit a probe on")
    bad = (y != 0) & (y != 1)
    if bool(bad.any()):
        raise InputError(f"{what}: expected 0/1 labels, found {float(y[bad][0])!r}")
    pos = int(y.sum().item())
    if pos == 0 or pos == y.numel():
        only = 1 if pos else 0
        raise InputError(
            f"{what}: all {y.numel()} rows have label {only}; a probe needs both classes "
            "(use more rows, another day, or another head)"
        )


def _objective(z: Tensor, y: Tensor, w: Tensor, lam: float) -> Tensor:
    """Mean logistic loss of logits ``z [n]`` plus ``lam/2 ||w||^2``, in float64."""
    z64 = z.double()
    return (F.softplus(z64) - y.double() * z64).mean() + 0.5 * lam * w.double().square().sum()


def fit_logistic(X: Tensor, y: Tensor, config: SolverConfig = SolverConfig(), *, fit_intercept: bool = True) -> LogisticFit:
    """Solve the L2 logistic regression of ``y [n]`` (0/1) on ``X [n, d]``.

    ``X`` should be standardised (the probes standardise with the training sample's mean/std);
    the solver works on any features but converges fastest on standardised ones.
    """
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise InputError(f"fit_logistic: expected X [n, d] and y [n], got {tuple(X.shape)} and {tuple(y.shape)}")
    if not torch.isfinite(X).all():
        raise InputError("fit_logistic: features contain NaN or inf")
    check_binary(y)
    y = y.to(X.dtype)
    n, d = X.shape
    lam = 1.0 / (config.C * n)
    solver = config.solver
    if solver == "auto":
        solver = "newton" if d <= config.newton_max_dim else "lbfgs"
    if solver == "newton":
        return _newton(X, y, lam, config, fit_intercept)
    return _lbfgs(X, y, lam, config, fit_intercept)


def _init_intercept(y: Tensor, fit_intercept: bool) -> float:
    if not fit_intercept:
        return 0.0
    p = float(y.double().mean().clamp(1e-12, 1 - 1e-12))
    return float(torch.logit(torch.tensor(p, dtype=torch.float64)))


def _newton(X: Tensor, y: Tensor, lam: float, cfg: SolverConfig, fit_intercept: bool) -> LogisticFit:
    n, d = X.shape
    dt, dev = X.dtype, X.device
    w = torch.zeros(d, dtype=dt, device=dev)
    b = _init_intercept(y, fit_intercept)  # start at the base rate: the first step is then well scaled
    # A seeded Hessian subsample (all rows when the sample is small). Subsamples are nested
    # prefixes of one permutation; when a step contracts the gradient by less than half (the
    # subsampled Hessian is too rough for these features), the subsample grows 4x, up to all rows.
    perm: Tensor | None = None
    if n > cfg.hessian_rows:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)).to(dev)
        hrows: Tensor | None = perm[: cfg.hessian_rows]
        Xh = X.index_select(0, hrows)
    else:
        hrows, Xh = None, X
    z = X @ w + b
    f = _objective(z, y, w, lam)
    converged, it = False, 0
    hist: list[float] = []
    reg = torch.full((d,), lam, dtype=torch.float64, device=dev)
    for it in range(1, cfg.max_iter + 1):
        p = torch.sigmoid(z)
        r = p - y  # [n]
        gw = (X.T @ r).double() / n + lam * w.double()
        gb = float(r.double().mean()) if fit_intercept else 0.0
        gmax = max(float(gw.abs().max()) if d else 0.0, abs(gb))
        hist.append(gmax)
        if gmax <= cfg.tol:
            converged, it = True, it - 1
            break
        if hrows is not None and len(hist) >= 2 and gmax > 0.5 * hist[-2]:
            m_new = min(n, 4 * hrows.shape[0])
            hrows, Xh = (None, X) if m_new >= n else (perm[:m_new], X.index_select(0, perm[:m_new]))  # type: ignore[index]
        # Hessian of the mean objective on the (sub)sample, with the intercept as an extra column.
        s = (p if hrows is None else p.index_select(0, hrows))
        s = (s * (1 - s)).clamp_min(1e-12)
        m = Xh.shape[0]
        Hww = (Xh.T @ (Xh * s[:, None])).double() / m + torch.diag(reg)
        if fit_intercept:
            hwb = (Xh.T @ s).double() / m
            hbb = s.double().mean().reshape(1, 1)
            H = torch.cat([torch.cat([Hww, hwb[:, None]], 1), torch.cat([hwb[None, :], hbb], 1)], 0)
            grad = torch.cat([gw, torch.tensor([gb], dtype=torch.float64, device=dev)])
        else:
            H, grad = Hww, gw
        step = -_solve_spd(H, grad)
        dw = step[:d].to(dt)
        db = float(step[d]) if fit_intercept else 0.0
        u = X @ dw + db  # the change of the logits per unit step: one pass, reused by every trial
        slope = float(grad @ step)
        t, accepted = 1.0, False
        for _ in range(30):  # Armijo backtracking on the exact full-data objective
            w_try = w + t * dw
            z_try = z + t * u
            f_try = _objective(z_try, y, w_try, lam)
            if f_try <= f + 1e-4 * t * slope:
                accepted = True
                break
            t *= 0.5
        if not accepted:  # no decrease representable in this precision: we are at the optimum
            converged = gmax <= max(cfg.tol, 1e-4)
            break
        w, b, z = w_try, b + t * db, z_try
        rel = float((f - f_try) / max(1.0, abs(float(f))))
        f = f_try
        if rel < 1e-15:
            converged = True
            break
    return LogisticFit(w, float(b), it, converged, float(f), "newton", hist)


def _solve_spd(H: Tensor, g: Tensor) -> Tensor:
    """``H^{-1} g`` for a symmetric positive (semi)definite ``H``; jitter when Cholesky fails
    (constant features with a near-zero penalty make ``H`` singular)."""
    jitter = 0.0
    scale = float(H.diagonal().abs().max().clamp_min(1e-12))
    for _ in range(8):
        L, info = torch.linalg.cholesky_ex(H + jitter * torch.eye(H.shape[0], dtype=H.dtype, device=H.device))
        if int(info) == 0:
            return torch.cholesky_solve(g[:, None], L)[:, 0]
        jitter = scale * 1e-10 if jitter == 0.0 else jitter * 100
    return torch.linalg.lstsq(H, g[:, None]).solution[:, 0]


def _lbfgs(X: Tensor, y: Tensor, lam: float, cfg: SolverConfig, fit_intercept: bool) -> LogisticFit:
    n, d = X.shape
    w = torch.zeros(d, dtype=X.dtype, device=X.device, requires_grad=True)
    b = torch.full((1,), _init_intercept(y, fit_intercept), dtype=X.dtype, device=X.device, requires_grad=fit_intercept)
    params = [w, b] if fit_intercept else [w]
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=cfg.max_iter,
        tolerance_grad=cfg.tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        z = X @ w + b
        loss = (F.softplus(z) - y * z).mean() + 0.5 * lam * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    state = opt.state[opt._params[0]]
    with torch.no_grad():
        z = X @ w + b
        f = _objective(z, y, w, lam)
        r = torch.sigmoid(z) - y
        gmax = float(((X.T @ r) / n + lam * w).abs().max()) if d else 0.0
        if fit_intercept:
            gmax = max(gmax, abs(float(r.mean())))
    return LogisticFit(w.detach(), float(b.detach()[0]) if fit_intercept else 0.0, int(state.get("n_iter", 0)),
                       gmax <= max(cfg.tol, 1e-5), float(f), "lbfgs")
