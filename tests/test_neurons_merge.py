"""Exact merging: halves of a day merge into the day; summaries survive to_dict/from_dict/JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctrlens.neurons import NeuronMonitor, NeuronStatsError, NeuronSummary
from neurons_fixtures import TinyCTR, make_batches

MODEL = TinyCTR(seed=11).eval()
BATCHES = make_batches(n_rows=480, batch_size=40, seed=12)  # 12 batches
REF = NeuronMonitor(MODEL, sample_size=30, seed=5).run(BATCHES[:3])
EDGES = {k: (REF[k].lo, REF[k].hi) for k in REF}


def _run(batches, **kw) -> NeuronSummary:
    return NeuronMonitor(MODEL, sample_size=30, seed=5, edges=EDGES, **kw).run(batches)


WHOLE = _run(BATCHES)


def assert_same(a: NeuronSummary, b: NeuronSummary, rtol: float = 1e-10) -> None:
    assert list(a.stats) == list(b.stats)
    for name in a:
        x, y = a[name], b[name]
        assert x.counts.tolist() == y.counts.tolist(), name
        np.testing.assert_allclose(x.means, y.means, rtol=rtol, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(x.m2, y.m2, rtol=rtol, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(x.std, y.std, rtol=rtol, atol=1e-12, err_msg=name)
        np.testing.assert_array_equal(x.minimum, y.minimum)
        np.testing.assert_array_equal(x.maximum, y.maximum)
        np.testing.assert_array_equal(x.zeros, y.zeros)
        np.testing.assert_array_equal(x.hist, y.hist)
        assert x.hist_rows == y.hist_rows
        np.testing.assert_allclose(x.abs_sum, y.abs_sum, rtol=1e-9)
        if x.saturated is not None:
            np.testing.assert_array_equal(x.saturated, y.saturated)
        np.testing.assert_array_equal(x.sample_key, y.sample_key)
        np.testing.assert_array_equal(x.sample, y.sample)
        np.testing.assert_array_equal(x.sample_label, y.sample_label)
    for t in a.seen:
        np.testing.assert_array_equal(a.seen[t], b.seen[t])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(min_value=1, max_value=len(BATCHES) - 1), order=st.booleans())
def test_halves_merge_into_the_whole_day(k: int, order: bool) -> None:
    first, second = _run(BATCHES[:k]), _run(BATCHES[k:])
    merged = first.merge(second) if order else second.merge(first)
    assert_same(merged, WHOLE)


def test_three_way_merge_and_round_trip() -> None:
    parts = [_run(BATCHES[i : i + 4]) for i in range(0, len(BATCHES), 4)]
    merged = NeuronSummary.merge_all(parts)
    assert_same(merged, WHOLE)
    text = json.dumps(merged.to_dict())  # plain JSON, no numpy types
    back = NeuronSummary.from_dict(json.loads(text))
    assert_same(back, merged, rtol=0)
    assert back.to_frame().equals(merged.to_frame())


def test_merging_different_edges_is_refused() -> None:
    a = NeuronMonitor(MODEL).run(BATCHES[:2])
    b = NeuronMonitor(MODEL).run(BATCHES[6:8])
    with pytest.raises(NeuronStatsError, match=r"layer 'att.0': histogram edges differ.*reference="):
        a.merge(b)
    with pytest.raises(NeuronStatsError, match="different layers"):
        a.merge(NeuronMonitor(MODEL, layers="mlp.*").run(BATCHES[:1]))
