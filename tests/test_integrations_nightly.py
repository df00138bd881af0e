"""torchrec's DLRM and DeepCTR-Torch's DIN and DeepFM, trained by their own loops and saved as their own
state_dicts, watched by `ctrlens nightly` (a `loader:` each in the YAML) next to a reference model: every
analysis in the store, per-table health with shared tables once, a stuck feature alerted and named.

The shared world, models and store: tests/integrations_world.py (built once per session)."""

from __future__ import annotations

import pytest

from integrations_fixtures import need
from integrations_world import OWN, REFERENCE, STUCK_DAY, STUCK_FIELD, TRAIN_DAYS, day, integration_world  # noqa: F401

pytestmark = pytest.mark.slow

ALL_KINDS = {"field_stats", "quality", "neuron_stats", "layer_stats", "embedding_health", "probe", "saliency", "drift", "alert"}
LAYERS = {
    "dlrm": {"dense_arch.0", "dense_arch.1", "interaction", "over_arch.0", "over_arch.1", "logit.ctr"},
    "din": {"attention.0", "attention.1", "dnn.0", "dnn.1"},
    "deepfm": {"fm", "dnn.0", "dnn.1"},
}
ID_FIELDS = {"user_id", "item_id", "category_id", "shop_id", "user_age_bucket", "user_gender", "hour", "hist_item_id", "hist_category_id"}
TABLES = {"user_id", "item", "category", "shop_id", "user_age_bucket", "user_gender", "hour"}


@pytest.fixture(scope="module")
def world(integration_world):
    need("ctrlens.integrations.torchrec")
    need("ctrlens.integrations.deepctr")
    return integration_world


def _outcome(summary: dict, model: str, i: int) -> dict:
    return next(o for o in summary["outcomes"] if o["model"] == model and o["day"] == day(i))


def test_every_model_day_ran_and_stored_every_analysis(world) -> None:
    from ctrlens.store import Store

    days = [day(i) for i in range(TRAIN_DAYS, STUCK_DAY + 1)]
    assert {o["status"] for o in world.summary["outcomes"]} == {"ok"}
    assert len(world.summary["outcomes"]) == len(days) * (len(OWN) + 1)
    with Store(f"sqlite:///{world.db}") as s:
        assert set(s.models()["model"]) == {*OWN, REFERENCE}
        for m in OWN:
            assert s.days(model=m, run_kind="nightly") == days
            vid = _outcome(world.summary, m, STUCK_DAY)["version_id"]
            r = s.read_day(vid, day(STUCK_DAY))
            assert set(r) == ALL_KINDS, m
            sal = r["saliency"].frame
            grad = sal[sal["method"] == "input_x_gradient"]  # the default method
            want = ID_FIELDS | ({"price"} if m != "dlrm" else set())  # DLRM's dense input is one arch input
            assert set(grad["field"]) == want, m
            assert grad["share"].sum() == pytest.approx(1.0) and (grad["mean"] > 0).all(), m
            # per-table health: item_id and hist_item_id share `item`, counted once with both fields' ids
            h = r["embedding_health"].frame.set_index("table")
            assert set(h.index) == TABLES, m
            fs = r["field_stats"].frame.set_index("field")
            assert int(h.loc["item", "seen_rows"]) > int(fs.loc["item_id", "cardinality"]), m
            assert set(r["neuron_stats"].frame["layer"]) >= LAYERS[m] - {"logit.ctr"}, m
            assert set(r["layer_stats"].frame["layer"]) >= LAYERS[m] - {"logit.ctr"}, m
            probes = r["probe"].frame
            assert set(probes["layer"]) >= (LAYERS[m] - {"logit.ctr"}) | {"embedding"}, m
            assert probes["auc"].between(0.0, 1.0).all() and (probes["n_train"] > 0).all(), m
            # trained a little (3 days x 2,500 rows): better than chance on the clean watched days
            aucs = [float(s.read_day(vid, d)["quality"].frame["auc"].iloc[0]) for d in days[:-1]]
            assert sum(aucs) / len(aucs) > 0.52, (m, aucs)


def test_stuck_feature_is_alerted_and_named_for_every_model(world) -> None:
    assert world.summary["exit_code"] == 1
    for m in (*OWN, REFERENCE):
        o = _outcome(world.summary, m, STUCK_DAY)
        assert [(a["finding"], a["subject"]) for a in o["new_alerts"]] == [("broken_feature", STUCK_FIELD)], (m, o["new_alerts"])
        for i in range(TRAIN_DAYS + 4, STUCK_DAY):  # warm, clean days: nothing paging
            clean = _outcome(world.summary, m, i)
            assert not [f for f in clean["findings"] if f["severity"] in ("critical", "warning")], (m, i, clean["findings"])


def test_the_yaml_names_each_loader(world) -> None:
    import yaml

    cfg = yaml.safe_load(world.config.read_text())
    loaders = {m["name"]: m.get("loader") for m in cfg["models"]}
    assert loaders[REFERENCE] is None
    for m in OWN:
        assert loaders[m].endswith(f"integrations_models.py:load_{m}")


@pytest.mark.parametrize("model", ["dlrm", "din"])
def test_cli_saliency_with_the_loader_equals_the_python_api(world, model, tmp_path) -> None:
    import json

    from ctrlens.data import DailyDataset
    from ctrlens.models.loader import load_model
    from ctrlens.saliency import report
    from integrations_world import MODELS_PY, run_cli

    ckpt = world.root / "models" / f"{model}.pt"
    out = tmp_path / "sal.json"
    r = run_cli("saliency", "--checkpoint", str(ckpt), "--loader", f"{MODELS_PY}:load_{model}", "--data", str(world.data),
                "--day", day(STUCK_DAY - 1), "--max-rows", "400", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli = {row["field"]: row["mean"] for row in json.loads(out.read_text())["result"]["rows"]}
    ds = DailyDataset(world.data)
    view = load_model(ckpt, ds.schema, f"{MODELS_PY}:load_{model}")
    py = report(view, ds, day=day(STUCK_DAY - 1), max_rows=400).to_frame()
    assert set(cli) == set(py["field"]) and len(cli) >= 9
    for f, m in zip(py["field"], py["mean"]):
        assert cli[f] == pytest.approx(m, rel=1e-5), f
