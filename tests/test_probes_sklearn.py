"""Done-when: probe AUCs match scikit-learn's LogisticRegression (lbfgs, same C, same standardised
features) within 0.002, for every layer of a model, through the whole ProbeSuite path (hooks ->
row sample -> standardise -> torch solve -> score)."""

import numpy as np
import pytest
import torch
from probes_fixtures import TinyDIN, brute_features, make_batch, sampled_rows, tiny_view, train_tiny
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from ctrlens.probes import ProbeSuite


@pytest.fixture(scope="module")
def trained():
    day = make_batch(4000, seed=1)
    return train_tiny(TinyDIN(), day, steps=150), day


@pytest.mark.parametrize("C", [1.0, 0.02])
def test_probe_auc_matches_sklearn(trained, C):
    m, day = trained
    suite = ProbeSuite(tiny_view(m), C=C, max_rows=2500, holdout=0.25, seed=3).fit(day.split(512), day="d1")
    held = suite.score()
    nxt = make_batch(3000, seed=2)
    later = suite.score(nxt.split(700), day="d2")

    feats, feats_next = brute_features(m, day), brute_features(m, nxt)
    tr, ho = sampled_rows(len(day), 3, 2500, 0.25)
    y, y_next = day.labels["click"].numpy(), nxt.labels["click"].numpy()
    assert suite.n_train_ == len(tr) and held["n_eval"].iloc[0] == len(ho)
    for layer in suite.layers_:
        sc = StandardScaler().fit(feats[layer][tr])
        ref = LogisticRegression(C=C, solver="lbfgs", max_iter=5000).fit(sc.transform(feats[layer][tr]), y[tr])
        want_held = roc_auc_score(y[ho], ref.decision_function(sc.transform(feats[layer][ho])))
        want_next = roc_auc_score(y_next, ref.decision_function(sc.transform(feats_next[layer])))
        got_held = held.set_index("layer").loc[layer, "auc"]
        got_next = later.set_index("layer").loc[layer, "auc"]
        assert abs(got_held - want_held) < 0.002, (layer, got_held, want_held)
        assert abs(got_next - want_next) < 0.002, (layer, got_next, want_next)
        # the learned state is sklearn's too (standardisation exactly; weights closely)
        np.testing.assert_allclose(suite.mean_[layer], sc.mean_, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(suite.scale_[layer], np.where(sc.scale_ > 0, sc.scale_, 1.0), rtol=1e-5)
        np.testing.assert_allclose(suite.coef_[layer], ref.coef_[0], atol=0.01 * max(1.0, np.abs(ref.coef_).max()))
    # the model's own AUC is on the same rows
    p = m(day)["ctr"].detach().numpy()
    assert held["model_auc"].iloc[0] == pytest.approx(roc_auc_score(y[ho], p[ho]), abs=1e-9)
    assert (held["gap"] == held["model_auc"] - held["auc"]).all()


def test_gpu_probe_matches_cpu(trained):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    m, day = trained
    cpu = ProbeSuite(tiny_view(m), max_rows=2000).fit(day.split(512)).score()
    gpu = ProbeSuite(tiny_view(m), max_rows=2000, device="cuda").fit(day.split(512)).score()
    np.testing.assert_allclose(cpu["auc"], gpu["auc"], atol=1e-3)
