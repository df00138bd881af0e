"""Integration: the reference DIN on a real day of the synthetic world, through the loader and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import reference_models
from ctrlens.cli import main
from ctrlens.data import DailyDataset
from ctrlens.models.checkpoint import save_checkpoint
from ctrlens.neurons import NeuronMonitor, NeuronSummary, compare, embedding_health, snapshot_tables
from neurons_fixtures import capture


@pytest.fixture(scope="module")
def din(tiny_world):
    torch.manual_seed(0)
    ds = DailyDataset(tiny_world.root)
    model = reference_models.build("din", ds.schema, attention=(16, 8), mlp=(32, 16)).eval()
    return ds, model


def test_din_day_summary_matches_brute_force(din) -> None:
    ds, model = din
    view = model.lens()
    day = ds.days()[4]
    batches = list(ds.iter_batches(day, 512, limit=1500, images=False))
    s = NeuronMonitor(view, sample_size=100).run(batches)
    att = [k for k, v in view.layers.items() if v.kind == "attention"]
    assert att and all(view.layers[k].tap.mask for k in att)
    real = sum(int(b.masks[view.layers[att[0]].tap.mask].sum()) for b in batches)
    assert s[att[0]].count == real  # padding positions excluded
    raw = capture(view, batches)
    for name, (x, _) in raw.items():
        np.testing.assert_allclose(s[name].mean, x.mean(0), rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(s[name].std, x.std(0), rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(s[name].maximum, x.max(0))
    nres, lres = s.to_results()
    assert set(lres.frame["layer"]) == set(view.layers)
    assert s.seen and all(len(v) > 0 for v in s.seen.values())
    health = embedding_health(view, s.seen, initial=snapshot_tables(view)).frame
    assert (health["never_updated_frac"] == 1.0).all()  # an untrained model: nothing moved yet
    # the next day, against this one
    nxt = NeuronMonitor(view, sample_size=100, reference=s).run(ds.iter_batches(ds.days()[5], 512, limit=1500, images=False))
    c = compare(s, nxt)
    assert c.layers["psi_mean"].notna().all() and (c.layers["psi_mean"] < 0.5).all()


def test_cli_neurons_json_and_summary_file(din, tmp_path, capsys) -> None:
    ds, model = din
    ckpt = tmp_path / "din.pt"
    save_checkpoint(ckpt, model, step=0, schema=ds.schema)
    d0, d1 = ds.days()[4], ds.days()[5]
    out = tmp_path / "summary.json"
    args = ["neurons", "--checkpoint", str(ckpt), "--data", str(ds.root), "--day", d0, "--compare", d1,
            "--limit", "800", "--batch-size", "400", "--sample-size", "50", "--out", str(out), "--tables", "--json"]
    main(args)
    obj = json.loads(capsys.readouterr().out)
    assert obj["kind"] == "neurons" and obj["day"] == d0
    assert {r["layer"] for r in obj["layers"]} == set(model.lens().layers)
    assert obj["compare"]["day"] == d1 and len(obj["compare"]["layers"]) == len(obj["layers"])
    assert {r["table"] for r in obj["tables"]} == set(model.lens().tables)
    s = NeuronSummary.load(out)
    assert s.meta["model"] == "din" and s["mlp.0"].count == 800
    with pytest.raises(SystemExit) as e:
        main(["neurons", "--checkpoint", str(ckpt), "--data", str(ds.root), "--day", "1999-01-01"])
    assert e.value.code == 2
    assert "--day '1999-01-01' is not a day of" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["eager", "compiled"])
def test_packed_attention_taps_give_the_padded_runs_statistics(din, engine, monkeypatch) -> None:
    """Watched, DIN's attention unit still runs on the real history positions only (its taps accept
    packed ``[n, H]`` outputs); the statistics equal those of the padded run, which a foreign hook
    (one that does not accept packed outputs) forces."""
    from ctrlens.models.blocks.attention import AttentionPooling

    ds, model = din
    view = model.lens()
    batches = list(ds.iter_batches(ds.days()[4], 512, limit=1500, images=False))
    units = [m for m in model.modules() if isinstance(m, AttentionPooling)]
    assert units
    seen: list[bool] = []
    orig = AttentionPooling._packable

    def spy(self, mask):
        seen.append(orig(self, mask))
        return seen[-1]

    monkeypatch.setattr(AttentionPooling, "_packable", spy)
    kw = dict(sample_size=300, hist_rate=0.3, seq_rate=0.6, engine=engine)
    packed = NeuronMonitor(view, **kw).run(batches)
    assert seen and all(seen), "the watched attention unit did not take its packed path"
    seen.clear()
    handle = units[0].mlp.acts[0].register_forward_hook(lambda m, a, o: None)
    try:
        padded = NeuronMonitor(view, **kw).run(batches)
    finally:
        handle.remove()
    assert seen and not any(seen)
    for name in view.layers:
        a, b = packed[name], padded[name]
        np.testing.assert_array_equal(a.counts, b.counts, err_msg=name)
        np.testing.assert_array_equal(a.hist, b.hist, err_msg=name)
        np.testing.assert_array_equal(a.zeros, b.zeros, err_msg=name)
        np.testing.assert_array_equal(a.sample_key, b.sample_key, err_msg=name)
        np.testing.assert_allclose(a.sample, b.sample, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(a.means, b.means, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(a.m2, b.m2, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(a.maximum, b.maximum, rtol=1e-5, atol=1e-6, err_msg=name)
