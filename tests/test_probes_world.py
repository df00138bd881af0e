"""Probes on a trained reference model in the synthetic world (integration: no fakes).

One small world with strong category drift (``Weights(category=1.0, category_drift=0.6)``: each
category's click effect moves by 0.6 sd a day), a Base ("GwEN", paper 1's net) model trained on its
first two days, probes fitted on day 3 and scored on days 3 (held out) to 6:

* depth: the embedding concat's probe is clearly below the first hidden layer's; no hidden layer loses
  more than noise; the last hidden layer's probe is within 0.01 of the model's own AUC;
* a dead layer (weights zeroed, bias pushed negative) is flagged by ``findings()``;
* decay: probe AUC falls on later days as the world drifts;
* the ``ctrlens probes`` command on the same checkpoint.
"""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest
import torch
from conftest import require_or_skip

from ctrlens.probes import ProbeSuite

_NEEDED = ("ctrlens.synth", "ctrlens.train", "reference_models", "ctrlens.models.checkpoint", "ctrlens.data.loader")


def _missing() -> list[str]:
    return [m for m in _NEEDED if importlib.util.find_spec(m) is None]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    miss = _missing()
    require_or_skip(not miss, f"probe world tests need {miss} (written by other parts)")
    from ctrlens.data import DailyDataset
    from ctrlens.models.checkpoint import load_checkpoint
    from ctrlens.synth import Weights, generate
    from ctrlens.train import train

    tmp = tmp_path_factory.mktemp("probe_world")
    w = generate(
        tmp / "world", days=6, rows_per_day=20_000, seed=3, n_users=300, n_items=120, n_categories=8, n_shops=20,
        max_hist=10, image_size=4, importance_rows=100, new_items_per_day=0,
        weights=Weights(category=1.0, category_drift=0.6),
    )
    ds = DailyDataset(w.root)
    days = ds.days()
    torch.manual_seed(0)
    res = train("base", w.root, days[:2], out_dir=tmp / "run", batch_size=512, lr=3e-3, epochs=5, seed=0,
                model_config={"mlp": [64, 32, 16], "embedding_dim": 8})
    model = load_checkpoint(res.final, ds.schema)
    suite = ProbeSuite(model, max_rows=16_000, seed=0).fit(ds, day=days[2])
    suite.decay(ds, days[3:])
    return {"ds": ds, "days": days, "model": model, "suite": suite, "ckpt": res.final}


def _auc(suite: ProbeSuite, day: str) -> dict[str, float]:
    f = next(f for f in reversed(suite.results_) if f["eval_day"].iloc[0] == day)
    return dict(zip(f["layer"], f["auc"])) | {"model": float(f["model_auc"].iloc[0])}


def test_probe_auc_rises_with_depth_and_last_hidden_matches_the_model(world):
    suite, days = world["suite"], world["days"]
    assert suite.layers_ == ["embedding", "mlp.0", "mlp.1", "mlp.2", "logit.ctr"]
    for day in (days[2], days[3]):  # held-out rows of the fit day, and the whole next day
        a = _auc(suite, day)
        # a linear probe cannot read the history x candidate interaction from the raw embeddings
        assert a["mlp.0"] > a["embedding"] + 0.005, a
        for prev, layer in (("mlp.0", "mlp.1"), ("mlp.1", "mlp.2")):
            assert a[layer] >= a[prev] - 0.005, (layer, a)
        assert abs(a["mlp.2"] - a["model"]) < 0.01, a
        assert a["logit.ctr"] == pytest.approx(a["model"], abs=1e-5)  # same ranking (float32 ties aside)
        assert suite.findings(tol=0.005, eval_day=day).empty


def test_dead_layer_is_flagged(world):
    dead = copy.deepcopy(world["model"])
    lin = [m for m in dead.mlp.modules() if isinstance(m, torch.nn.Linear)][1]  # mlp.1's Linear
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.fill_(-1.0)  # every ReLU of mlp.1 below zero: a collapsed layer
    s = ProbeSuite(dead, layers=["embedding", "mlp.*"], max_rows=6000, seed=0).fit(world["ds"], day=world["days"][2])
    f = s.findings(tol=0.01)
    assert f["layer"].tolist() == ["mlp.1"] and f["previous"].iloc[0] == "mlp.0"
    assert f["auc"].iloc[0] == pytest.approx(0.5) and f["drop"].iloc[0] > 0.1


def test_probe_auc_decays_as_the_world_drifts(world):
    suite, days = world["suite"], world["days"]
    last = [_auc(suite, d)["mlp.2"] for d in days[2:]]
    model = [_auc(suite, d)["model"] for d in days[2:]]
    assert last[0] > last[1] > last[-1] and last[0] - last[-1] > 0.015, last
    assert model[0] - model[-1] > 0.015, model  # the model itself decays with its layers


def test_cli_probes_json_and_table(world, capsys):
    from ctrlens.cli import main

    days = world["days"]
    args = ["probes", "--checkpoint", str(world["ckpt"]), "--data", str(world["ds"].root), "--train-day", days[2],
            "--eval-days", f"{days[3]},{days[4]}", "--layers", "embedding,mlp.*", "--max-rows", "4000", "--json"]
    main(args)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["kind"] == "probe" and out["model_version"] and out["meta"][0]["head"] == "ctr"
    rows = out["rows"]
    assert {r["eval_day"] for r in rows} == {days[2], days[3], days[4]}
    assert {r["layer"] for r in rows} == {"embedding", "mlp.0", "mlp.1", "mlp.2"}
    assert all(0.5 < r["auc"] < 1 and r["gap"] == pytest.approx(r["model_auc"] - r["auc"]) for r in rows)

    main(args[:-1])
    text = capsys.readouterr().out
    assert "probe AUC" in text and "mlp.2" in text and "(held out)" in text


def test_cli_bad_input(world, capsys):
    from ctrlens.cli import main

    base = ["probes", "--checkpoint", str(world["ckpt"]), "--data", str(world["ds"].root)]
    with pytest.raises(SystemExit) as e:
        main(base + ["--train-day", "2030-01-01"])
    assert e.value.code == 2
    assert "--train-day '2030-01-01' is not a day of" in capsys.readouterr().err  # one wording with neurons' --day
    with pytest.raises(SystemExit) as e:
        main(base + ["--train-day", world["days"][2], "--layers", "mlp.9"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "no layer matching 'mlp.9'; layers: ['embedding', 'mlp.0'" in err
