"""The nightly configuration: defaults, paths, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctrlens.errors import InputError
from ctrlens.monitor.config import ConfigError, config_dict, load_config, parse_config
from ctrlens.monitor.job import plan_days

MINIMAL = {"db": "db/ctrlens.sqlite", "data": "world", "models": [{"name": "din", "checkpoint": "runs/din.pt"}]}


def test_minimal_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = parse_config(MINIMAL, base=tmp_path)
    assert cfg.db == f"sqlite:///{tmp_path / 'db/ctrlens.sqlite'}"
    assert cfg.data == tmp_path / "world"
    m = cfg.models[0]
    assert m.checkpoint == tmp_path / "runs/din.pt" and m.checkpoint_dir is None
    assert (m.rows.neurons, m.rows.probes, m.rows.saliency) == (20_000, 10_000, 4_000)
    assert m.saliency_method == "input_x_gradient" and m.heads is None and m.permutation
    assert (cfg.reference.kind, cfg.reference.days, cfg.reference.min_days) == ("trailing", 7, 5)
    assert (cfg.thresholds.k, cfg.thresholds.persistence, cfg.thresholds.rel_floor) == (4.0, 1, 0.5)
    assert cfg.exit_on_alert and cfg.reports and cfg.report_dir is None
    assert config_dict(cfg)["models"][0]["checkpoint"] == str(tmp_path / "runs/din.pt")
    # URLs pass through; a relative sqlite:/// path is relative to the config file too
    assert parse_config({**MINIMAL, "db": "postgresql://u@h/db"}, base=tmp_path).db == "postgresql://u@h/db"
    assert parse_config({**MINIMAL, "db": "sqlite:///x.sqlite"}, base=tmp_path).db == f"sqlite:///{tmp_path / 'x.sqlite'}"


def test_full_config_from_yaml(tmp_path: Path) -> None:
    p = tmp_path / "nightly.yaml"
    p.write_text(
        """
db: sqlite:////var/ctrlens/ctrlens.sqlite
data: /data/world
exit_on_alert: false
report_dir: ""
reference: {kind: fixed, days: [2026-01-03, 2026-01-01, 2026-01-02], min_days: 2}
thresholds: {k: 5, persistence: 2, floors: {psi: 0.05}}
models:
  - name: din-prod
    checkpoint_dir: runs/din
    heads: [ctr]
    rows: {neurons: 0, probes: 5000, saliency: 0}
    saliency_method: input_x_gradient
    layers: ["mlp.*"]
"""
    )
    cfg = load_config(p)
    assert cfg.db == "sqlite:////var/ctrlens/ctrlens.sqlite" and not cfg.exit_on_alert and not cfg.reports
    assert cfg.reference.days == ("2026-01-01", "2026-01-02", "2026-01-03")
    assert cfg.thresholds.k == 5.0 and cfg.thresholds.floor("psi", 0.01) == 0.05 and cfg.thresholds.floor("js", 0.01) == 0.01
    m = cfg.model("din-prod")
    assert m.checkpoint_dir == tmp_path / "runs/din" and m.heads == ("ctr",) and m.layers == ("mlp.*",)
    assert m.rows.neurons == 0 and m.saliency_method == "input_x_gradient"
    with pytest.raises(ConfigError, match="no model named 'x'; models: \\['din-prod'\\]"):
        cfg.model("x")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"db": None}, "db is required"),
        ({"colour": "red"}, "top level: unknown key(s) ['colour']"),
        ({"models": []}, "models: expected a non-empty list"),
        ({"models": [{"name": "a"}]}, "models[0]: give exactly one of checkpoint (a file) or checkpoint_dir"),
        ({"models": [{"name": "a", "checkpoint": "x", "checkpoint_dir": "y"}]}, "models[0]: give exactly one of"),
        ({"models": [{"checkpoint": "x"}]}, "models[0].name is required"),
        ({"models": [{"name": "a", "checkpoint": "x", "rows": {"probes": 10}}]}, "models[0].rows.probes: at least 50 rows"),
        ({"models": [{"name": "a", "checkpoint": "x", "rows": {"neurons": -1}}]}, "models[0].rows.neurons: must be >= 0, got -1"),
        ({"models": [{"name": "a", "checkpoint": "x", "rows": {"pixels": 3}}]}, "models[0].rows: unknown key(s) ['pixels']"),
        ({"models": [{"name": "a", "checkpoint": "x", "saliency_method": "lime"}]}, "models[0].saliency_method: expected one of"),
        ({"models": [{"name": "a", "checkpoint": "x", "heads": [1]}]}, "models[0].heads: expected a list of names"),
        ({"models": [{"name": "a", "checkpoint": "x"}, {"name": "a", "checkpoint": "y"}]}, "duplicate name(s) ['a']"),
        ({"reference": {"kind": "rolling"}}, "reference.kind: expected 'trailing' or 'fixed', got 'rolling'"),
        ({"reference": {"kind": "trailing", "days": [1]}}, "reference.days: for kind 'trailing'"),
        ({"reference": {"kind": "fixed", "days": ["2026-02-30"]}}, "reference.days: '2026-02-30' is not a day"),
        ({"reference": {"kind": "fixed"}}, "reference.days: for kind 'fixed': a list of baseline days"),
        ({"thresholds": {"k": 0}}, "thresholds.k: must be > 0, got 0"),
        ({"thresholds": {"persistence": 1.5}}, "thresholds.persistence: expected an integer, got 1.5"),
        ({"thresholds": {"floors": {"psi": -1}}}, "thresholds.floors.psi: expected a number >= 0"),
        ({"exit_on_alert": "yes"}, "exit_on_alert: expected true or false, got 'yes'"),
        ({"device": "tpu"}, "device: expected 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        ({"thresholds": [1, 2]}, "thresholds must be a mapping"),
    ],
)
def test_errors_name_the_key(change: dict, message: str, tmp_path: Path) -> None:
    d = {**MINIMAL, **change}
    d = {k: v for k, v in d.items() if v is not None}
    with pytest.raises(InputError) as e:
        parse_config(d, source="config nightly.yaml", base=tmp_path)
    assert message in str(e.value)
    assert str(e.value).startswith("config nightly.yaml: ")


def test_yaml_errors(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("db: x\nmodels: [\n  - name\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+, column \d+\)"):
        load_config(p)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    p.write_text("- just a list\n")
    with pytest.raises(ConfigError, match="the file must be a mapping"):
        load_config(p)


def test_plan_days() -> None:
    avail = ["2026-01-01", "2026-01-02", "2026-01-04"]
    assert plan_days(avail) == ["2026-01-04"]
    assert plan_days(avail, day="2026-01-03") == ["2026-01-03"]  # not in the data: that day will fail on its own
    assert plan_days(avail, start="2026-01-01", end="2026-01-04") == ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    assert plan_days(avail, start="2026-01-02") == ["2026-01-02", "2026-01-03", "2026-01-04"]
    for kw, msg in [({"day": "2026-1-1x"}, "--day: '2026-1-1x' is not a day"), ({"end": "2026-01-02"}, "--to needs --from"),
                    ({"start": "2026-01-04", "end": "2026-01-01"}, "--from 2026-01-04 is after --to 2026-01-01"),
                    ({"day": "2026-01-01", "start": "2026-01-01"}, "either --day or --from/--to")]:  # fmt: skip
        with pytest.raises(InputError, match=msg):
            plan_days(avail, **kw)
    with pytest.raises(InputError, match="the data has no days"):
        plan_days([])
