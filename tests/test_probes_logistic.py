"""The torch logistic solver and LinearProbe against scikit-learn and brute-force numbers."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler

from ctrlens.errors import InputError
from ctrlens.probes import LinearProbe, ProbeWarning, SolverConfig, auc, fit_logistic, logloss_from_logits


def correlated(n=3000, d=24, seed=0, base=-1.5):
    """ReLU features of a low-rank latent (correlated, like a hidden layer) and labels from the latent."""
    g = np.random.default_rng(seed)
    z = g.normal(size=(n, 6))
    X = np.maximum(z @ g.normal(size=(6, d)) + 0.3 * g.normal(size=(n, d)), 0)
    y = (g.random(n) < 1 / (1 + np.exp(-(z @ g.normal(size=6) + base)))).astype(np.float64)
    return X, y


def objective(X, y, w, b, C):
    z = X @ w + b
    return np.mean(np.logaddexp(0, z) - y * z) + w @ w / (2 * C * len(y))


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_solver_matches_sklearn_objective(solver, C):
    X, y = correlated()
    Xs = StandardScaler().fit_transform(X)
    ref = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(Xs, y)
    fit = fit_logistic(torch.tensor(Xs), torch.tensor(y), SolverConfig(C=C, solver=solver, tol=1e-8, max_iter=500))
    w = fit.coef.numpy()
    np.testing.assert_allclose(w, ref.coef_[0], atol=2e-4 * max(1.0, np.abs(ref.coef_).max()))
    assert fit.intercept == pytest.approx(ref.intercept_[0], abs=2e-4)
    # same objective value (sklearn's, recomputed in numpy), and ours is not worse
    f_ours, f_ref = objective(Xs, y, w, fit.intercept, C), objective(Xs, y, ref.coef_[0], ref.intercept_[0], C)
    assert f_ours <= f_ref + 1e-9
    assert fit.loss == pytest.approx(f_ours, rel=1e-9)


def test_subsampled_hessian_reaches_the_same_optimum():
    X, y = correlated(n=6000, d=30, seed=1)
    Xt, yt = torch.tensor(StandardScaler().fit_transform(X), dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    full = fit_logistic(Xt, yt, SolverConfig(solver="newton", hessian_rows=10**9))
    sub = fit_logistic(Xt, yt, SolverConfig(solver="newton", hessian_rows=500))
    assert full.converged and sub.converged
    assert sub.n_iter >= full.n_iter
    np.testing.assert_allclose(sub.coef.numpy(), full.coef.numpy(), atol=1e-4)


def test_deterministic_and_constant_columns():
    X, y = correlated(n=2000, d=10, seed=2)
    X[:, 3] = 0.0  # a dead neuron
    p1 = LinearProbe(C=1.0, hessian_rows=300, seed=7).fit(X, y)
    p2 = LinearProbe(C=1.0, hessian_rows=300, seed=7).fit(X, y)
    assert np.array_equal(p1.coef_, p2.coef_) and np.array_equal(p1.intercept_, p2.intercept_)
    assert p1.scale_[3] == 1.0 and p1.coef_[0, 3] == 0.0  # StandardScaler convention, no NaN
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(StandardScaler().fit_transform(X), y)
    np.testing.assert_allclose(p1.coef_, ref.coef_, atol=5e-4)


def test_separable_data_with_tiny_penalty_stays_finite():
    g = np.random.default_rng(3)
    X = g.normal(size=(400, 3))
    y = (X[:, 0] > 0).astype(float)
    p = LinearProbe(C=1e6, max_iter=200).fit(X, y)
    assert np.isfinite(p.coef_).all()
    assert p.score(X, y) == 1.0


def test_linear_probe_api_like_sklearn():
    X, y = correlated(n=1500, d=8, seed=4)
    p = LinearProbe(C=0.5).fit(X, y)
    proba = p.predict_proba(X)
    assert proba.shape == (1500, 2) and np.allclose(proba.sum(1), 1)
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000)
    sc = StandardScaler().fit(X)
    ref.fit(sc.transform(X), y)
    np.testing.assert_allclose(proba, ref.predict_proba(sc.transform(X)), atol=1e-4)
    assert p.score(X, y) == pytest.approx(roc_auc_score(y, proba[:, 1]), abs=1e-12)
    assert set(p.predict(X)) <= {0, 1}
    assert p.get_params()["C"] == 0.5 and p.set_params(C=2.0).C == 2.0
    np.testing.assert_allclose(p.mean_, sc.mean_) and np.testing.assert_allclose(p.scale_, sc.scale_)
    with pytest.raises(InputError, match="has no parameter 'alpha'"):
        p.set_params(alpha=1)
    with pytest.raises(InputError, match="not fitted yet"):
        LinearProbe().predict_proba(X)
    with pytest.raises(InputError, match="X has 3 features, the probe was fitted on 8"):
        p.decision_function(X[:, :3])


def test_single_class_and_bad_labels_are_refused():
    X = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(InputError, match=r"all 50 rows have label 0; a probe needs both classes"):
        LinearProbe().fit(X, np.zeros(50))
    with pytest.raises(InputError, match="expected 0/1 labels, found 2.0"):
        LinearProbe().fit(X, np.full(50, 2.0))
    with pytest.raises(InputError, match="C must be > 0"):
        SolverConfig(C=0)
    p = LinearProbe().fit(X, (X[:, 0] > 0).astype(float))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert np.isnan(p.score(X, np.ones(50)))
    assert any(issubclass(x.category, ProbeWarning) and "single class" in str(x.message) for x in w)


def test_auc_and_logloss_match_sklearn_with_ties():
    g = np.random.default_rng(5)
    s = np.round(g.normal(size=2000), 1)  # many ties
    y = (g.random(2000) < 1 / (1 + np.exp(-s))).astype(float)
    assert auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(auc(s, np.zeros(2000)))
    z = g.normal(size=2000) * 3
    assert logloss_from_logits(z, y) == pytest.approx(log_loss(y, 1 / (1 + np.exp(-z))), rel=1e-9)


def test_not_converged_warns():
    X, y = correlated(n=500, d=5, seed=6)
    with pytest.warns(ProbeWarning, match="stopped after 1 iterations"):
        LinearProbe(max_iter=1).fit(X, y)
