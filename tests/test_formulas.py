"""Each shared formula has one definition, and that definition matches an independent computation."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from ctrlens import distances, metrics
from ctrlens.results import jsonable


def test_every_stage_uses_the_one_psi() -> None:
    import importlib

    figures = importlib.import_module("ctrlens.dashboard.figures")
    drift = importlib.import_module("ctrlens.monitor.drift")
    compare = importlib.import_module("ctrlens.neurons.compare")

    assert drift.psi is compare.psi is figures.psi is distances.psi
    assert drift.js is distances.js and drift.wasserstein_norm is distances.wasserstein_norm


def test_psi_against_a_loop() -> None:
    rng = np.random.default_rng(0)
    p, q = rng.integers(0, 50, (6, 9)).astype(float), rng.integers(0, 50, (6, 9)).astype(float)
    p[0, :4] = 0  # empty bins: floored, not infinite
    want = []
    for a, b in zip(p, q):
        s = 0.0
        for x, y in zip(a / a.sum(), b / b.sum()):
            x, y = max(x, 1e-4), max(y, 1e-4)
            s += (y - x) * math.log(y / x)
        want.append(s)
    np.testing.assert_allclose(distances.psi(p, q), want, rtol=1e-12)
    assert distances.psi(p[1], q[1]) == pytest.approx(want[1], rel=1e-12)  # 1-D -> float
    assert isinstance(distances.psi(p[1], q[1]), float)
    assert distances.psi(p[1], q[1]) == pytest.approx(distances.psi(q[1], p[1]))  # symmetric
    out = distances.psi(np.vstack([p[0], np.zeros(9)]), np.vstack([q[0], q[1]]))  # an empty side -> NaN
    assert np.isfinite(out[0]) and np.isnan(out[1])


def test_js_and_wasserstein_against_their_definitions() -> None:
    p, q = np.array([3.0, 1.0, 0.0, 4.0]), np.array([1.0, 1.0, 2.0, 4.0])
    pp, qq = p / p.sum(), q / q.sum()
    m = (pp + qq) / 2

    def kl(a, b):
        return sum(x * math.log2(x / y) for x, y in zip(a, b) if x > 0)

    assert distances.js(p, q) == pytest.approx(math.sqrt((kl(pp, m) + kl(qq, m)) / 2), rel=1e-12)
    edges = [0.0, 1.0, 2.0, 3.0, 4.0]
    # earth mover's distance of the bin-centre samples, expanded row by row
    a = list(itertools.chain.from_iterable([c + 0.5] * int(n) for c, n in zip(range(4), p)))
    b = list(itertools.chain.from_iterable([c + 0.5] * int(n) for c, n in zip(range(4), q)))
    assert distances.wasserstein_norm(edges, p, q, 2.0) == pytest.approx(wasserstein_distance(a, b) / 2.0, rel=1e-12)
    assert math.isnan(distances.wasserstein_norm(edges, p, np.zeros(4), 1.0))


def test_one_auc_against_pair_counting() -> None:
    from ctrlens.probes import linear

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y * 0.7, 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    want = pairs / (len(pos) * len(neg))
    assert metrics.auc(y, s) == pytest.approx(want, abs=1e-12)
    assert linear.auc(s, y) == pytest.approx(want, abs=1e-12)  # the probes' argument order, same formula
    assert math.isnan(metrics.auc(np.ones(5), np.arange(5.0)))


def test_jsonable_is_strict_json() -> None:
    x = {1: np.float32(0.5), "nan": float("nan"), "inf": np.float64(np.inf), "arr": np.array([1, 2]),
         "t": (np.int64(3), np.bool_(True)), "day": dt.date(2026, 1, 2), "p": Path("/a/b")}
    out = jsonable(x)
    assert out == {"1": 0.5, "nan": None, "inf": None, "arr": [1, 2], "t": [3, True], "day": "2026-01-02", "p": "/a/b"}
    json.dumps(out, allow_nan=False)  # raises on NaN/inf if any were left


def test_standardised_shift_by_hand() -> None:
    shift, ratio = distances.standardised_shift([1.0, 0.0, 5.0], [2.0, 0.0, 1.0], [3.0, 0.0, 5.0], [4.0, 0.0, 0.5])
    np.testing.assert_allclose(shift, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(ratio, [2.0, 1.0, 0.5])  # a constant unit on both sides: floored, ratio 1
    assert np.isfinite(distances.standardised_shift([0.0], [0.0], [1.0], [0.0])[0]).all()  # no division by zero
