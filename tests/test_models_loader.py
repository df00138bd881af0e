"""Model loaders: a user's own model through `--loader` / `loader:` everywhere a reference model goes.

The model (tests/own_model.py) imports nothing from reference_models; its checkpoints are plain
``torch.save`` dicts. Checked here: loader resolution and its errors (CLI exit 2, nothing written),
versions by content hash, the days a checkpoint serves (sidecar, file-name pattern), the store API
without hand-made hashes, the probe order of an attached model, and CLI == Python API numbers.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import own_model
from ctrlens.data import DailyDataset
from ctrlens.errors import InputError
from ctrlens.models.loader import (
    DEFAULT_LOADER,
    LoaderError,
    list_served,
    load_model,
    pattern_regex,
    resolve_loader,
    served_days,
)
from world_fixtures import TRAIN_DAYS
from cli_fixtures import exit_code as run

ROOT = Path(__file__).resolve().parents[1]
LOADER = str(ROOT / "tests" / "own_model.py") + ":load"


def _days(ds: DailyDataset) -> list[str]:
    return list(ds.days())


@pytest.fixture(scope="module")
def own(tiny_world, tmp_path_factory):
    """(dataset, checkpoint path) of the own model trained on the tiny world's first day."""
    torch.set_num_threads(1)
    ds = DailyDataset(tiny_world.root)
    cfg = own_model.model_config(ds.schema, user="user_id", item="item_id", history="hist_item_id",
                                 groups=["hist_category_id"], dense=["price"], label="click")  # fmt: skip
    m = own_model.build(cfg)
    own_model.train_day(m, ds.iter_batches(_days(ds)[0], 256, shuffle=True, seed=0, limit=2000, images=False), lr=0.01)
    ck = own_model.save(m, tmp_path_factory.mktemp("own") / "own-ctr.pt")
    return ds, ck


# -- resolution, identity, days ------------------------------------------------------------------------


def test_specs_resolve_module_file_and_default(own, tmp_path, monkeypatch) -> None:
    ds, ck = own
    assert resolve_loader(None).spec == DEFAULT_LOADER
    v1 = load_model(ck, ds.schema, "own_model:load")  # tests/ is on sys.path under pytest
    monkeypatch.chdir(ROOT)
    v2 = load_model(ck, ds.schema, "tests/own_model.py:load")  # a file, relative to the working directory
    assert v1.version == v2.version == hashlib.sha256(ck.read_bytes()).hexdigest()[:16]
    assert v1.checkpoint.schema_hash == ds.schema.hash and v1.checkpoint.days_seen == ()
    b = next(iter(ds.iter_batches(_days(ds)[1], 64, images=False)))
    torch.testing.assert_close(v1(b)["ctr"], v2(b)["ctr"])
    # the reference models are one loader among others: ctrlens itself never imports reference_models
    for p in (ROOT / "ctrlens").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []  # fmt: skip
            assert not any(n.split(".")[0] == "reference_models" for n in names), f"{p} imports reference_models"


def test_reference_checkpoint_keeps_its_weights_hash(trained_checkpoint, tiny_world) -> None:
    from ctrlens.models.checkpoint import checkpoint_info

    ck = trained_checkpoint("base")
    view = load_model(ck, DailyDataset(tiny_world.root).schema)  # the default loader
    info = checkpoint_info(ck)
    assert view.version == info.weights_hash and view.checkpoint.days_seen == info.days_seen


def test_served_days_sidecar_and_pattern(tmp_path) -> None:
    d = tmp_path / "ckpts"
    d.mkdir()
    for name in ("m-2026-01-03.pt", "m-20260105.pt", "other.pt", "x.pt"):
        (d / name).write_bytes(name.encode())
    (d / "x.pt.json").write_text(json.dumps({"trained_through": "2026-01-07"}))
    (d / ".m-2026-01-09.pt.tmp").write_bytes(b"unfinished")
    # served_from: trained through the day before
    assert served_days(d / "m-2026-01-03.pt", "m-{served_from}.pt") == ("2026-01-02",)
    assert served_days(d / "m-20260105.pt", "m-{trained_through}.pt") == ("2026-01-05",)
    got = [(s.path.name, s.trained_through) for s in list_served(d, "m-{served_from}.pt")]
    assert got == [("m-2026-01-03.pt", "2026-01-02"), ("m-20260105.pt", "2026-01-04")]
    assert [(s.path.name, s.days_seen) for s in list_served(d)] == [("x.pt", ("2026-01-07",))]  # sidecars only
    (d / "x.pt.json").write_text(json.dumps({"days_seen": ["2026-01-02", "2026-01-01"]}))
    assert served_days(d / "x.pt") == ("2026-01-01", "2026-01-02")
    (d / "x.pt.json").write_text(json.dumps({"served_from": "2026-01-02", "days_seen": []}))
    with pytest.raises(InputError, match=r"x\.pt\.json: expected exactly one of"):
        served_days(d / "x.pt")
    with pytest.raises(InputError, match=r"exactly one '\{served_from\}' or '\{trained_through\}'"):
        pattern_regex("m-{day}.pt")


def test_nightly_config_loader_keys(tmp_path) -> None:
    from ctrlens.monitor.config import ConfigError, parse_config

    def cfg(**m):
        return {"db": "x.sqlite", "data": "w", "models": [{"name": "own", **m}]}

    c = parse_config(cfg(loader="loaders/mine.py:load", checkpoint_dir="ck", checkpoint_pattern="own-{served_from}.pt"),
                     base=tmp_path)  # fmt: skip
    assert c.models[0].loader == f"{(tmp_path / 'loaders' / 'mine.py').resolve()}:load"
    assert parse_config(cfg(loader="pkg.mod:load", checkpoint="a.pt"), base=tmp_path).models[0].loader == "pkg.mod:load"
    for m, msg in [
        (dict(loader="pkg.mod", checkpoint="a.pt"), r"models\[0\]\.loader: .*expected 'package\.module:function'"),
        (dict(loader="pkg.mod:1x", checkpoint="a.pt"), r"models\[0\]\.loader: .*function name"),
        (dict(checkpoint="a.pt", checkpoint_pattern="a-{served_from}.pt"), r"checkpoint_pattern: only with checkpoint_dir"),
        (dict(checkpoint_dir="d", checkpoint_pattern="a-{date}.pt"), r"checkpoint_pattern: .*exactly one"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            parse_config(cfg(**m), base=tmp_path)


# -- bad loaders: exit 2, a clear message, nothing written ----------------------------------------------

BAD = [
    ("no_such_pkg.loaders:load", r"module 'no_such_pkg\.loaders' not found"),
    (str(ROOT / "tests" / "own_model.py") + ":lod", r"has no function 'lod'; its functions: \[.*'load'"),
    (str(ROOT / "tests" / "own_model.py") + ":load_raises", r"failed on checkpoint .*own-ctr\.pt: RuntimeError: cannot open own-ctr\.pt"),
    (str(ROOT / "tests" / "own_model.py") + ":load_module", r"returned a OwnCTR .*not a ctrlens ModelView; describe the module with ctrlens\.attach"),
    (str(ROOT / "tests" / "own_model.py") + ":load_wrong_field", r"field\(s\) \['user_idd'\] are not in the data's schema"),
    (str(ROOT / "tests" / "own_model.py") + ":load_wrong_label", r"head 'ctr' predicts label 'purchase', but the data has no label 'purchase'"),
    (str(ROOT / "tests" / "no_such_file.py") + ":load", r"file .*no_such_file\.py not found"),
]


@pytest.mark.parametrize("spec,msg", BAD, ids=["module", "function", "raises", "not-a-view", "field", "label", "file"])
def test_bad_loader_exit_2_nothing_written(own, tmp_path, capsys, spec, msg) -> None:
    import re

    import yaml

    ds, ck = own
    day = _days(ds)[1]
    db = tmp_path / "db" / "x.sqlite"
    for cmd in (["neurons", "--day", day], ["probes", "--train-day", day], ["saliency", "--day", day, "--out", tmp_path / "s.json"]):
        rc = run([*cmd, "--checkpoint", ck, "--data", ds.root, "--loader", spec, "--db", f"sqlite:///{db}"])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert re.search(msg, err), err
        assert len(err.strip().splitlines()) == 1
    cfg = tmp_path / "nightly.yaml"
    cfg.write_text(yaml.safe_dump({"db": str(db), "data": str(ds.root), "report_dir": str(tmp_path / "reports"),
                                   "models": [{"name": "own", "loader": spec, "checkpoint": str(ck)}]}))  # fmt: skip
    assert run(["nightly", "-c", cfg, "--day", day, "-q"]) == 2
    assert re.search(msg, capsys.readouterr().err)
    assert not db.parent.exists() and not (tmp_path / "reports").exists() and not (tmp_path / "s.json").exists()


def test_view_on_another_instance_and_bad_shapes_are_refused(own) -> None:
    ds, ck = own
    m = own_model._read(ck)
    other = own_model._read(ck)
    v = own_model.view_of(m)
    v.layers["mlp.0"] = own_model.view_of(other).layers["mlp.0"]
    with pytest.raises(LoaderError, match=r"layer 'mlp\.0' taps a ReLU that is not part of the view's model"):
        load_model(ck, ds.schema, lambda p, s: v)
    v = own_model.view_of(own_model._read(ck))
    fwd = v.forward
    v.forward = lambda mm, b: {"ctr": fwd(mm, b)["ctr"][:, None]}
    with pytest.raises(LoaderError, match=r"head 'ctr': output 'ctr' is \[4, 1\] on 4 rows; expected a \[B\]"):
        load_model(ck, ds.schema, lambda p, s: v)


# -- probe order of an attached model (regression) ----------------------------------------------------


def test_attached_logit_is_compared_with_the_last_hidden_layer(own) -> None:
    from ctrlens.probes import ProbeSuite

    ds, ck = own
    view = load_model(ck, ds.schema, LOADER)
    assert {k: s.kind for k, s in view.layers.items()} == {"mlp.0": "hidden", "mlp.1": "hidden", "logit.ctr": "logit"}
    suite = ProbeSuite(view, None, "ctr", max_rows=1500, seed=0).fit(ds, day=_days(ds)[1])
    # before: every attached layer was "hidden", so logit.ctr (block "logit") followed the embedding
    assert suite.predecessors() == {"mlp.0": "embedding", "mlp.1": "mlp.0", "logit.ctr": "mlp.1"}
    f = suite.findings(tol=-1.0)  # every comparison, whatever the drop
    assert dict(zip(f["layer"], f["previous"])) == {"mlp.0": "embedding", "mlp.1": "mlp.0", "logit.ctr": "mlp.1"}
    # declared kinds win over the name
    v2 = own_model.view_of(view.model)
    import ctrlens

    v3 = ctrlens.attach(v2.model, forward=v2.forward, fields={}, layers={"emb": v2.layers["mlp.0"].tap, "out": v2.model.out},
                        kinds={"emb": "embedding", "out": "logit"})  # fmt: skip
    assert [s.kind for s in v3.layers.values()] == ["embedding", "logit"]
    with pytest.raises(InputError, match=r"kinds\['out'\]: 'output' is not a layer kind"):
        ctrlens.attach(v2.model, forward=v2.forward, fields={}, layers={"out": v2.model.out}, kinds={"out": "output"})


# -- store without hand-made hashes ----------------------------------------------------------------------


def test_store_registers_views_and_checkpoints(own, tmp_path, trained_checkpoint) -> None:
    from ctrlens.models.checkpoint import checkpoint_info
    from ctrlens.store import Store

    ds, ck = own
    with Store(f"sqlite:///{tmp_path / 's.sqlite'}", create=True) as store:
        vid, view = store.register_checkpoint("own", ck, ds.schema, LOADER)
        assert store.register_view("own", view) == vid
        row = store.versions("own").iloc[0]
        assert row.checkpoint_hash == hashlib.sha256(ck.read_bytes()).hexdigest()[:16]
        assert row.schema_hash == ds.schema.hash and row.config == {"model_name": "own-ctr"}
        # a model built in memory: versioned by its weights, for the schema given
        mem = own_model.view_of(own_model._read(ck))
        with pytest.raises(InputError, match="did not come from a checkpoint.*pass schema="):
            store.register_view("mem", mem)
        from ctrlens.models.checkpoint import weights_hash

        vm = store.register_view("mem", mem, schema=ds.schema)
        assert store.versions("mem").iloc[0].checkpoint_hash == weights_hash(mem.model.state_dict())
        assert store.register_view("mem", mem, schema=ds.schema) == vm
        # a reference checkpoint: its weights hash and its own schema, as the nightly job registers it
        rck = trained_checkpoint("base")
        rv, _ = store.register_checkpoint("base", rck, ds.schema)
        info = checkpoint_info(rck)
        assert store.version_id("base", info.weights_hash, info.schema_hash) == rv


# -- CLI == Python API on the same rows ----------------------------------------------------------------


def test_cli_with_loader_gives_the_python_numbers(own, tmp_path, capsys) -> None:
    import ctrlens.saliency as sal
    from ctrlens.neurons import NeuronMonitor
    from ctrlens.probes import ProbeSuite
    from ctrlens.store import Store

    ds, ck = own
    d1, d2 = _days(ds)[TRAIN_DAYS], _days(ds)[TRAIN_DAYS + 1]
    view = load_model(ck, ds.schema, LOADER)
    db = f"sqlite:///{tmp_path / 'cli.sqlite'}"

    # neurons
    assert run(["neurons", "--checkpoint", ck, "--loader", LOADER, "--data", ds.root, "--day", d1, "--limit", 1500,
                "--batch-size", 500, "--json", "--db", db, "--model", "own"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    assert got["model_version"] == view.version and got["model"] == "own-ctr"
    want = NeuronMonitor(view, None, bins=32, sample_size=2000, hist_rate=1.0).run(
        ds.iter_batches(d1, 500, limit=1500, images=False)).layers()  # fmt: skip
    g = pd.DataFrame(got["layers"]).set_index("layer")
    assert list(g.index) == list(want["layer"]) == ["mlp.0", "mlp.1", "logit.ctr"]
    for col in ("n_neurons", "count", "dead_fraction", "saturated_fraction", "mean_abs"):
        np.testing.assert_allclose(g[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-6, err_msg=col)

    # probes
    assert run(["probes", "--checkpoint", ck, "--loader", LOADER, "--data", ds.root, "--train-day", d1, "--eval-days", d2,
                "--max-rows", 1500, "--max-eval-rows", 1500, "--json", "--db", db, "--model", "own"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    suite = ProbeSuite(view, None, "ctr", max_rows=1500, max_eval_rows=1500, seed=0, batch_size=4096).fit(ds, day=d1)
    suite.decay(ds, [d2])
    want = suite.to_result(model_version=view.version).frame
    g = pd.DataFrame(got["rows"])
    assert len(g) == len(want) == 2 * 4  # embedding, mlp.0, mlp.1, logit.ctr x (held-out, d2)
    np.testing.assert_allclose(g["auc"].to_numpy(float), want["auc"].to_numpy(float), rtol=1e-9)
    assert list(g["layer"]) == list(want["layer"])

    # saliency
    out = tmp_path / "sal.json"
    assert run(["saliency", "--checkpoint", ck, "--loader", LOADER, "--data", ds.root, "--day", d1, "--max-rows", 1000,
                "--out", out, "--db", db, "--model", "own"]) == 0  # fmt: skip
    capsys.readouterr()
    got = sal.SaliencyReport.from_json(out)
    rep = sal.report(view, ds, day=d1, max_rows=1000)
    assert got.meta["model_version"] == view.version and got.meta["checkpoint"] == str(ck)
    g = got.top(100).set_index("field")
    w = rep.top(100).set_index("field")
    assert set(g.index) == set(w.index) == {"user_id", "item_id", "hist_item_id", "hist_category_id", "price"}
    np.testing.assert_allclose(g.loc[w.index, "share"].to_numpy(float), w["share"].to_numpy(float), rtol=1e-6)

    # all three landed on one version worked out from the file, in one 'analysis' run of the day
    with Store(db) as store:
        v = store.versions("own")
        assert list(v["checkpoint_hash"]) == [view.version]
        kinds = set(store.read_day(int(v["version_id"].iloc[0]), d1, run_kind="analysis"))
        assert {"neuron_stats", "layer_stats", "probe", "saliency"} <= kinds


def test_checkpoint_dir_of_own_files_needs_their_days(own, tmp_path, capsys) -> None:
    import shutil

    import yaml

    ds, ck = own
    d = tmp_path / "ckpts"
    d.mkdir()
    shutil.copy(ck, d / "model-a.pt")  # no pattern, no sidecar: which days does it serve?
    db = tmp_path / "db" / "x.sqlite"

    def nightly(**model) -> int:
        cfg = tmp_path / "nightly.yaml"
        cfg.write_text(yaml.safe_dump({"db": str(db), "data": str(ds.root), "report_dir": "",
                                       "models": [{"name": "own", "loader": LOADER, "checkpoint_dir": str(d), **model}]}))  # fmt: skip
        return run(["nightly", "-c", cfg, "--day", _days(ds)[2], "-q"])

    assert nightly() == 2
    assert "holds no checkpoints with a sidecar <file>.json" in capsys.readouterr().err
    (d / "model-a.pt.json").write_text(json.dumps({"served_from": _days(ds)[3]}))  # serves only later days
    assert nightly() == 2
    assert f"no checkpoint in {d} was trained only on days before {_days(ds)[2]}" in capsys.readouterr().err
    assert not db.parent.exists()
