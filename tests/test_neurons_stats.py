"""Neuron statistics against a brute force over the same activations (numpy, float64)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ctrlens.neurons import NeuronMonitor, NeuronStatsError, NeuronSummary, kernels
from ctrlens.results import COLUMNS
from neurons_fixtures import L, TinyCTR, capture, make_batches


@pytest.fixture(scope="module")
def tiny():
    model = TinyCTR(seed=0).eval()
    view = model.lens()
    batches = make_batches(n_rows=700, batch_size=96, seed=1)
    summary = NeuronMonitor(view, sample_size=64, seed=3).run(batches)
    return model, view, batches, summary, capture(view, batches)


def _np_hist(x: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """The monitor's bucket rule in float32, neuron by neuron: [under, bins..., over]."""
    t = (x.astype(np.float32) - np.float32(lo)) * np.float32(bins / (hi - lo))
    b = np.clip(np.floor(t), -1, bins).astype(np.int64) + 1
    return np.stack([np.bincount(b[:, j], minlength=bins + 2) for j in range(x.shape[1])])


def test_statistics_match_brute_force(tiny):
    _, view, _, s, raw = tiny
    assert list(s.stats) == list(view.layers)
    for name, (x, lab) in raw.items():
        st = s[name]
        assert st.count == x.shape[0], name
        np.testing.assert_allclose(st.mean, x.mean(0), rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(st.std, x.std(0), rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(st.minimum, x.min(0))
        np.testing.assert_array_equal(st.maximum, x.max(0))
        np.testing.assert_array_equal(st.zeros, (x == 0).sum(0))
        np.testing.assert_allclose(st.class_mean("click"), x[lab == 1].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(st.class_mean("noclick"), x[lab == 0].mean(0), rtol=1e-5, atol=1e-6)
        assert st.counts.tolist() == [int((lab == 1).sum()), int((lab == 0).sum()), 0]
        np.testing.assert_allclose(st.mean_abs, np.abs(x).mean(), rtol=1e-5)
        np.testing.assert_array_equal(st.hist, _np_hist(x, st.lo, st.hi, st.bins))
        assert st.hist.sum() == x.size and st.hist_rows == x.shape[0]


def test_saturation_and_dead_rules(tiny):
    _, _, _, s, raw = tiny
    eps = s["gate"].eps
    x = raw["gate"][0]  # sigmoid
    np.testing.assert_array_equal(s["gate"].saturated, ((x <= eps) | (x >= 1 - eps)).sum(0))
    t = raw["mlp.1"][0]  # tanh
    np.testing.assert_array_equal(s["mlp.1"].saturated, (np.abs(t) >= 1 - eps).sum(0))
    assert np.isnan(s["mlp.0"].frac_saturated).all()  # ReLU: no saturation rule
    r = raw["mlp.0"][0]
    np.testing.assert_array_equal(s["mlp.0"].dead, r.max(0) <= 0)


def test_frames_and_results_have_the_contract_columns(tiny):
    _, view, _, s, _ = tiny
    nres, lres = s.to_results()
    assert nres.kind == "neuron_stats" and list(nres.frame.columns) == list(COLUMNS["neuron_stats"])
    assert lres.kind == "layer_stats" and list(lres.frame.columns) == list(COLUMNS["layer_stats"])
    assert len(nres) == sum(sp.n_neurons for sp in s.stats.values())
    assert list(lres.frame["layer"]) == list(view.layers)
    row = lres.frame.set_index("layer").loc["mlp.0"]
    assert len(row["edges_json"]) == s["mlp.0"].bins + 1
    proj = row["projection_json"]
    assert len(proj["x"]) == len(proj["y"]) == len(proj["label"]) == 64
    assert set(proj["label"]) <= {0, 1}
    f = s.to_frame()
    assert len(f.iloc[0]["hist_json"]) == s["att.0"].bins + 2


def test_padding_positions_are_excluded():
    """The masked layer counts real positions only; a huge value at padding changes nothing."""
    model = TinyCTR(seed=2).eval()
    view = model.lens()
    batches = make_batches(n_rows=300, batch_size=64, seed=4)
    real = sum(int(b.masks["hist_item_id"].sum()) for b in batches)
    s = NeuronMonitor(view, layers=["att.*"], sample_size=0).run(batches)
    assert s["att.0"].count == real < sum(len(b) * L for b in batches)

    orig = model.att_act.forward
    current: dict = {}

    def poisoned(x):
        y = orig(x)
        return torch.where(current["mask"].unsqueeze(-1), y, torch.full_like(y, 1e6))

    model.att_act.forward = poisoned  # type: ignore[method-assign]
    try:
        mon = NeuronMonitor(view, layers=["att.*"], sample_size=0, edges={"att.0": (s["att.0"].lo, s["att.0"].hi)})
        with mon, torch.no_grad():
            for b in batches:
                current["mask"] = b.masks["hist_item_id"]
                mon.forward(b)
        p = mon.summary()
    finally:
        del model.att_act.forward
    assert p["att.0"].maximum.max() < 1e6
    np.testing.assert_allclose(p["att.0"].mean, s["att.0"].mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(p["att.0"].hist, s["att.0"].hist)


def test_dead_relu_layer_reported_dead():
    model = TinyCTR(seed=5).eval()
    with torch.no_grad():
        model.l0.bias.fill_(-1e3)  # every pre-activation negative: mlp.0 never fires
    s = NeuronMonitor(model, sample_size=16).run(make_batches(200, 64, seed=2))
    assert s["mlp.0"].dead_fraction == 1.0
    assert (s["mlp.0"].frac_zero == 1.0).all()
    lf = s.layers().set_index("layer")
    assert lf.loc["mlp.0", "dead_fraction"] == 1.0
    assert lf.loc["mlp.1", "dead_fraction"] == 1.0  # tanh of a constant input: constant output
    assert s["att.0"].dead_fraction < 1.0


def test_dead_means_near_constant_for_prelu_and_other_activations():
    """PReLU passes a scaled negative side: a unit that is always negative still carries signal and is
    not dead; a unit whose output no longer varies is dead, whatever its activation."""
    import dataclasses

    model = TinyCTR(seed=5).eval()
    model.a0 = torch.nn.PReLU(16, init=0.25)
    view = model.lens()
    view.layers["mlp.0"] = dataclasses.replace(view.layers["mlp.0"], activation="prelu")
    with torch.no_grad():
        model.l0.bias.fill_(-1e3)  # every pre-activation negative: a ReLU would be dead, PReLU is not
        model.l0.weight[:4].zero_()  # ... but units 0-3 now output the constant 0.25 * -1000
    batches = make_batches(200, 64, seed=2)
    s = NeuronMonitor(view, sample_size=16).run(batches)
    x = capture(view, batches)["mlp.0"][0]
    brute = (x.max(0) - x.min(0)) <= 1e-6 * np.maximum(1.0, np.maximum(np.abs(x.max(0)), np.abs(x.min(0))))
    np.testing.assert_array_equal(s["mlp.0"].dead, brute)
    assert s["mlp.0"].dead[:4].all() and not s["mlp.0"].dead[4:].any()
    assert s["mlp.0"].dead_fraction == pytest.approx(4 / 16)
    # a healthy model: no unit of its tanh, sigmoid and identity layers is near-constant
    h = NeuronMonitor(TinyCTR(seed=5).eval().lens(), sample_size=16).run(batches)
    assert h["mlp.1"].dead_fraction == h["gate"].dead_fraction == h["logit.ctr"].dead_fraction == 0.0


def test_saturated_sigmoid_layer_reported_saturated():
    model = TinyCTR(seed=6).eval()
    with torch.no_grad():
        model.lg.weight.mul_(1e3)  # huge pre-activations: the sigmoid sits at 0 or 1
    s = NeuronMonitor(model, sample_size=16).run(make_batches(200, 64, seed=3))
    lf = s.layers().set_index("layer")
    assert lf.loc["gate", "saturated_fraction"] > 0.95
    assert np.isnan(lf.loc["mlp.0", "saturated_fraction"])
    base = NeuronMonitor(TinyCTR(seed=6).eval(), sample_size=16).run(make_batches(200, 64, seed=3))
    assert base.layers().set_index("layer").loc["gate", "saturated_fraction"] < 0.5


def test_unlabelled_rows_have_no_class_means():
    model = TinyCTR(seed=0).eval()
    batches = make_batches(200, 64, seed=5, labels=False)
    s = NeuronMonitor(model, sample_size=8).run(batches)
    st = s["mlp.0"]
    assert st.counts.tolist() == [0, 0, 200]
    assert np.isnan(st.class_mean("click")).all() and np.isnan(st.class_mean("noclick")).all()
    assert np.isfinite(st.mean).all()
    assert all(v is None for v in st.projection()["label"])


def test_sample_is_deterministic_and_independent_of_batching():
    model = TinyCTR(seed=0).eval()
    a = NeuronMonitor(model, sample_size=50, seed=7).run(make_batches(500, 50, seed=6))
    b = NeuronMonitor(model, sample_size=50, seed=7).run(make_batches(500, 128, seed=6))
    c = NeuronMonitor(model, sample_size=50, seed=8).run(make_batches(500, 50, seed=6))
    for name in ("att.0", "mlp.0"):
        np.testing.assert_array_equal(a[name].sample_key, b[name].sample_key)
        np.testing.assert_array_equal(a[name].sample, b[name].sample)
        assert len(a[name].sample_key) == 50 and len(set(a[name].sample_key.tolist())) == 50
        assert not np.array_equal(np.sort(a[name].sample_key), np.sort(c[name].sample_key))
    # histogram subsample: same rows whatever the batching, moments still exact
    h1 = NeuronMonitor(model, sample_size=0, hist_rate=0.3).run(make_batches(500, 50, seed=6))
    h2 = NeuronMonitor(model, sample_size=0, hist_rate=0.3, edges={k: (h1[k].lo, h1[k].hi) for k in h1}).run(
        make_batches(500, 128, seed=6)
    )
    for name in h1:
        np.testing.assert_array_equal(h1[name].hist, h2[name].hist)
        assert 0.15 < h1[name].hist_rows / h1[name].count < 0.45
        np.testing.assert_allclose(h1[name].mean, a[name].mean, rtol=1e-5, atol=1e-6)


def test_sequence_position_subsample_is_exact_on_its_positions_and_split_invariant():
    """seq_rate < 1 summarises the sequence positions of priority u < seq_rate: the statistics are
    exactly those of that subsample (brute force over the same keys), independent of batching
    (halves merge into the whole), histogram rows and sample nest inside it, other layers untouched."""
    from ctrlens.neurons.sampling import HASH_BITS, row_hash

    model = TinyCTR(seed=0).eval()
    view = model.lens()
    batches = make_batches(600, 64, seed=9)
    raw = capture(view, batches)
    rate, seed = 0.3, 5
    s = NeuronMonitor(view, sample_size=32, seed=seed, seq_rate=rate, hist_rate=0.2).run(batches)
    full = NeuronMonitor(view, sample_size=32, seed=seed, hist_rate=0.2, edges={k: (s[k].lo, s[k].hi) for k in s}).run(batches)
    keys = torch.cat([(b.row.unsqueeze(1) * L + torch.arange(L))[b.masks["hist_item_id"]] for b in batches])
    kept = (row_hash(keys, seed) < int(rate * (1 << HASH_BITS))).numpy()
    x, lab = raw["att.0"]
    xs, ls = x[kept], lab[kept]
    st = s["att.0"]
    assert 0.2 < kept.mean() < 0.4 and st.count == int(kept.sum()) and st.meta["seq_rate"] == rate
    assert st.counts.tolist() == [int((ls == 1).sum()), int((ls == 0).sum()), 0]
    np.testing.assert_allclose(st.mean, xs.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st.std, xs.std(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(st.minimum, xs.min(0))
    np.testing.assert_array_equal(st.maximum, xs.max(0))
    np.testing.assert_array_equal(st.zeros, (xs == 0).sum(0))
    # histogram rows (u < 0.2) and the bottom-k sample lie inside the position subsample: unchanged
    np.testing.assert_array_equal(st.hist, full["att.0"].hist)
    np.testing.assert_array_equal(st.sample_key, full["att.0"].sample_key)
    for name in ("mlp.0", "gate", "logit.ctr"):  # no sequence axis: every row
        assert s[name].count == full[name].count and s[name].meta["seq_rate"] == 1.0
        np.testing.assert_array_equal(s[name].maximum, full[name].maximum)
    halves = [
        NeuronMonitor(view, sample_size=32, seed=seed, seq_rate=rate, hist_rate=0.2, edges={k: (s[k].lo, s[k].hi) for k in s}).run(p)
        for p in (batches[:4], batches[4:])
    ]
    m = halves[0].merge(halves[1])["att.0"]
    assert m.counts.tolist() == st.counts.tolist()
    np.testing.assert_allclose(m.mean, st.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.m2, st.m2, rtol=1e-6)
    np.testing.assert_array_equal(m.hist, st.hist)
    with pytest.raises(NeuronStatsError, match="seq_rate"):
        st.merge(full["att.0"])
    with pytest.raises(NeuronStatsError, match="seq_rate"):
        NeuronMonitor(view, seq_rate=0.0)


def test_reference_freezes_edges_and_projection():
    model = TinyCTR(seed=0).eval()
    ref = NeuronMonitor(model, sample_size=40).run(make_batches(300, 64, seed=7))
    day = NeuronMonitor(model, sample_size=40, reference=ref.to_dict()).run(make_batches(300, 64, seed=8))
    for name in ref:
        assert (day[name].lo, day[name].hi) == (ref[name].lo, ref[name].hi)
        assert day[name].pca_source == "reference"
        np.testing.assert_array_equal(day[name].pca_basis, ref[name].pca_basis)
    with pytest.raises(NeuronStatsError, match="bins"):
        NeuronMonitor(model, reference=ref, bins=8)


def test_bad_inputs_are_named():
    model = TinyCTR(seed=0).eval()
    with pytest.raises(Exception, match="no layer matching 'nope"):
        NeuronMonitor(model, layers="nope*")
    mon = NeuronMonitor(model)
    with pytest.raises(NeuronStatsError, match="outside"):
        mon.forward(make_batches(10, 10)[0])
    with pytest.raises(NeuronStatsError, match="'att.0' produced no output"):
        mon.summary()
    with pytest.raises(NeuronStatsError, match="hist_rate"):
        NeuronMonitor(model, hist_rate=0.0)
    with pytest.raises(NeuronStatsError, match="engine"):
        NeuronMonitor(model, engine="fast")  # type: ignore[arg-type]
    with pytest.raises(NeuronStatsError, match="format='ctrlens.neurons'"):
        NeuronSummary.from_dict({"layers": []})


def test_compiled_engine_falls_back_to_eager_with_a_warning(monkeypatch, tiny):
    """Where torch.compile cannot run (no C++ compiler), the eager kernels give the same numbers."""
    _, view, batches, s, _ = tiny

    def broken(name):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(kernels, "_get", broken)
    monkeypatch.setattr(kernels, "_failed", [])
    monkeypatch.setattr(kernels, "_COMPILED_MIN", 0)  # the tiny layers would run eager anyway
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = NeuronMonitor(view, sample_size=64, seed=3, engine="compiled").run(batches)
    assert any("engine='compiled' unavailable" in str(x.message) for x in w)
    for name in s:  # (padded to the compiled kernel's block: float32 sums in another order)
        np.testing.assert_allclose(c[name].mean, s[name].mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(c[name].zeros, s[name].zeros)
        np.testing.assert_array_equal(c[name].hist, s[name].hist)


@pytest.mark.slow
def test_compiled_engine_matches_brute_force(tiny, monkeypatch):
    """The compiled engine (torch.compile / inductor) runs in the default suite and in CI: its fused
    gathered reduction, compiled once with symbolic sizes, on a masked sequence tap (``att.0``, the
    kernel gathers the real positions itself) and a hidden layer (``mlp.0``) of the tiny model.
    Statistics against the float64 brute force; histograms and sample equal to the eager engine's.
    (A cold compile, empty inductor cache, took ~35-45 s on a loaded 2-core machine.)"""
    _, view, batches, s, raw = tiny
    monkeypatch.setattr(kernels, "_COMPILED_MIN", 0)  # compile even these tiny layers
    monkeypatch.setattr(kernels, "_failed", [])
    used = []
    real = kernels.batch_vector_gathered

    def spy(*a, **k):
        v = real(*a, **k)
        used.append(v is not None)
        return v

    monkeypatch.setattr(kernels, "batch_vector_gathered", spy)
    layers = ["att.0", "mlp.0"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager fails the test
        c = NeuronMonitor(view, layers, sample_size=64, seed=3, engine="compiled").run(batches)
    assert used and all(used) and not kernels._failed
    for name in layers:
        x, lab = raw[name]
        st = c[name]
        assert st.counts.tolist() == [int((lab == 1).sum()), int((lab == 0).sum()), 0]
        np.testing.assert_allclose(st.mean, x.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(st.std, x.std(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(st.class_mean("click"), x[lab == 1].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(st.minimum, x.min(0))
        np.testing.assert_array_equal(st.maximum, x.max(0))
        np.testing.assert_array_equal(st.zeros, (x == 0).sum(0))
        np.testing.assert_allclose(st.mean_abs, np.abs(x).mean(), rtol=1e-5)
        np.testing.assert_array_equal(st.hist, s[name].hist)
        np.testing.assert_array_equal(st.sample_key, s[name].sample_key)
        np.testing.assert_array_equal(st.sample, s[name].sample)


@pytest.mark.skipif(
    not __import__("os").environ.get("CTRLENS_TEST_COMPILED"),
    reason="compiles every kernel variant (bounded layers, width 1, the histogram kernel): minutes on a "
    "cold 2-core machine; set CTRLENS_TEST_COMPILED=1 (the default suite runs "
    "test_compiled_engine_matches_brute_force)",
)
def test_compiled_engine_matches_eager_on_every_layer(tiny, monkeypatch):
    _, view, batches, s, raw = tiny
    monkeypatch.setattr(kernels, "_COMPILED_MIN", 0)  # compile even these tiny layers
    monkeypatch.setattr(kernels, "_COMPILED_MIN_BUCKET", 0)
    c = NeuronMonitor(view, sample_size=64, seed=3, engine="compiled").run(batches)
    for name, (x, _) in raw.items():
        np.testing.assert_allclose(c[name].mean, x.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c[name].std, x.std(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(c[name].minimum, s[name].minimum)
        np.testing.assert_array_equal(c[name].zeros, s[name].zeros)
        if s[name].saturated is not None:
            np.testing.assert_array_equal(c[name].saturated, s[name].saturated)
        assert np.abs(c[name].hist - s[name].hist).sum() <= 2  # fused float ops may move a boundary value
        np.testing.assert_array_equal(c[name].sample_key, s[name].sample_key)


@pytest.mark.parametrize("shape", [(33001, 80), (4097, 64), (5000, 7), (129, 4096), (70000, 9)])
def test_column_min_max_folds_to_the_exact_extremes(shape) -> None:
    from ctrlens.neurons.kernels import column_min_max

    g = torch.Generator().manual_seed(shape[0])
    x = torch.randn(*shape, generator=g)
    x[-1, 0] = 50.0  # an extreme in the odd last row of the first fold
    x[shape[0] // 2, -1] = -50.0
    mn, mx = column_min_max(x)
    assert torch.equal(mn, x.amin(0)) and torch.equal(mx, x.amax(0))
