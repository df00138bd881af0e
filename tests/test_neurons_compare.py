"""Comparisons between summaries: same data -> nothing moves; shifted inputs / dead units -> they show."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctrlens.neurons import NeuronMonitor, compare, psi
from ctrlens.results import COLUMNS
from neurons_fixtures import TinyCTR, make_batches


def test_psi_known_values() -> None:
    p = np.array([[50, 50, 0, 0]])
    assert psi(p, p)[0] == pytest.approx(0.0)
    q = np.array([[25, 75, 0, 0]])
    want = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert psi(p, q)[0] == pytest.approx(want)
    assert np.isnan(psi(np.zeros((1, 4)), q)[0])


def test_day_vs_day_and_checkpoint_vs_checkpoint() -> None:
    model = TinyCTR(seed=3).eval()
    ref = NeuronMonitor(model, sample_size=20).run(make_batches(600, 100, seed=1))
    same = NeuronMonitor(model, sample_size=20, reference=ref).run(make_batches(600, 100, seed=1))
    other_day = NeuronMonitor(model, sample_size=20, reference=ref).run(make_batches(600, 100, seed=2))
    c0 = compare(ref, same)
    assert (c0.neurons["shift"].abs() < 1e-9).all() and (c0.neurons["psi"].abs() < 1e-12).all()
    assert (c0.layers["dead_fraction_delta"] == 0).all()
    np.testing.assert_allclose(c0.layers["fluctuation"], 0.0, atol=1e-9)
    c1 = compare(ref, other_day)
    assert c1.layers["psi_mean"].max() < 0.15  # a fresh sample of the same distribution: sampling noise only

    # shifted input: user embeddings scaled up -> first-layer neurons move and PSI rises
    shifted = TinyCTR(seed=3).eval()
    with torch.no_grad():
        shifted.user.weight.mul_(6.0)
    moved = NeuronMonitor(shifted, sample_size=20, reference=ref).run(make_batches(600, 100, seed=1))
    c2 = compare(ref, moved, names=("ckpt-1", "ckpt-2"))
    lay = c2.layers.set_index("layer")
    assert lay.loc["mlp.0", "psi_max"] > 0.5 and lay.loc["mlp.0", "abs_shift_max"] > 1.0
    assert lay.loc["mlp.0", "fluctuation"] > c1.layers.set_index("layer").loc["mlp.0", "fluctuation"]
    assert lay.loc["att.0", "psi_max"] < 1e-12  # the history branch does not see the user embedding
    drift = c2.to_drift(neurons=True)
    assert drift.kind == "drift" and list(drift.frame.columns) == list(COLUMNS["drift"])
    alerts = drift.frame[drift.frame["alert"]]
    assert "mlp.0" in set(alerts["subject"]) and (drift.frame["direction"] == "above").all()
    assert any(s.startswith("mlp.0/") for s in alerts["subject"])

    # dead units appear: the dead-fraction delta says so
    dead = TinyCTR(seed=3).eval()
    with torch.no_grad():
        dead.l0.bias[:8] = -1e3
    c3 = compare(ref, NeuronMonitor(dead, sample_size=20, reference=ref).run(make_batches(600, 100, seed=1)))
    assert c3.layers.set_index("layer").loc["mlp.0", "dead_fraction_delta"] == pytest.approx(0.5)


def test_different_edges_give_nan_psi_with_a_note() -> None:
    model = TinyCTR(seed=3).eval()
    a = NeuronMonitor(model, sample_size=0).run(make_batches(200, 100, seed=1))
    b = NeuronMonitor(model, sample_size=0).run(make_batches(200, 100, seed=5))
    c = compare(a, b)
    fixed = c.neurons["layer"].isin(["mlp.1", "gate"])  # tanh / sigmoid: edges fixed by their bounds
    assert c.neurons.loc[~fixed, "psi"].isna().all() and c.neurons.loc[fixed, "psi"].notna().all()
    assert any("layer 'mlp.0': histogram edges differ" in n for n in c.meta["notes"])
    assert np.isfinite(c.neurons["shift"]).all()
