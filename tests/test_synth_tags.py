"""The synthetic world's opt-in bag field ``item_tags``: off by default (worlds unchanged), a known
true effect when on, and input incidents on it that field statistics see."""

from __future__ import annotations


import numpy as np
import pyarrow.parquet as pq
import pytest

from ctrlens.data import DailyDataset
from ctrlens.data.stats import field_stats
from ctrlens.errors import InputError
from ctrlens.synth import WorldConfig, generate
from ctrlens.synth.world import World

SIZES = dict(days=2, rows_per_day=1500, n_users=300, n_items=200, n_categories=8, n_shops=20, image_size=8,
             importance_rows=1000, new_items_per_day=5)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("tags")
    plain = generate(base / "plain", **SIZES)
    tagged = generate(base / "tagged", item_tags=25, max_tags=3, incidents=["1:stuck_value:item_tags"], **SIZES)
    return plain, tagged


def test_tags_are_opt_in_and_leave_other_fields_unchanged(pair):
    plain, tagged = pair
    assert "item_tags" not in plain.schema and "item_tags" not in plain.ground_truth["config"]
    assert "item_tags" not in plain.ground_truth["importance"]["click"]
    f = tagged.schema["item_tags"]
    assert (f.kind, f.vocab_size, f.max_len, f.pooling, f.table_name) == ("bag", 25, 3, "mean", "tag")
    a = pq.read_table(plain.day_dir(0) / "part-0.parquet")
    b = pq.read_table(tagged.day_dir(0) / "part-0.parquet")
    for name in a.column_names:
        if name not in ("click", "conversion"):  # labels follow the tag effect
            assert a.column(name).equals(b.column(name)), name
    assert tagged.ground_truth["importance"]["click"]["item_tags"] > 0.05


def test_tag_effect_is_the_documented_formula(pair):
    _, tagged = pair
    cfg = WorldConfig(**{**SIZES, "item_tags": 25, "max_tags": 3})
    w = World(cfg)
    world_off = World(WorldConfig(**SIZES))
    truth = tagged.root / "_truth"
    eff = pq.read_table(truth / "tags.parquet").column("effect").to_numpy()
    assert eff.std() == pytest.approx(cfg.tag_effect)
    items = pq.read_table(truth / "items.parquet").to_pydict()
    ctx, ctx_off = w.context(0), world_off.context(0)
    X = w.sample(ctx, 400, np.random.default_rng(0))
    diff = w.relevance_logit(X, ctx) - world_off.relevance_logit({k: v for k, v in X.items() if k != "tags"}, ctx_off)
    want = np.array([np.mean(eff[items["tags"][i]]) if items["tags"][i] else 0.0 for i in X["item"]])
    np.testing.assert_allclose(diff, want, atol=1e-9)
    # the logged bag is the candidate's tags
    b = DailyDataset(tagged.root).load_day(tagged.days[0])
    items0 = pq.read_table(tagged.day_dir(0) / "part-0.parquet", columns=["item_id"]).column("item_id").to_pylist()
    for r in range(50):
        want_ids = [t + 2 for t in items["tags"][items0[r]]]
        got = b.features["item_tags"][r][b.masks["item_tags"][r]].tolist()
        assert got == want_ids


def test_stuck_tags_incident_is_seen_by_field_stats(pair):
    _, tagged = pair
    ds = DailyDataset(tagged.root)
    ok = field_stats(ds, tagged.days[0]).frame.set_index("field").loc["item_tags"]
    bad = field_stats(ds, tagged.days[1]).frame.set_index("field").loc["item_tags"]
    inc = tagged.ground_truth["days"][1]["incidents"][0]
    assert inc["field"] == "item_tags" and inc["rows"] == SIZES["rows_per_day"]
    assert ok["cardinality"] > 15 and bad["cardinality"] == len(inc["value"])
    assert bad["std"] == 0 and bad["mean"] == len(inc["value"])


def test_tag_incident_needs_tags(tmp_path):
    with pytest.raises(InputError, match="item_tags.*only in worlds made with item_tags > 0"):
        generate(tmp_path / "w", incidents=["0:oov_surge:item_tags"], **SIZES)
    with pytest.raises(InputError, match="max_tags"):
        WorldConfig(item_tags=3, max_tags=5)


def test_cli_item_tags(tmp_path, capsys):
    from ctrlens.cli import main

    args = ["synth", "--out", str(tmp_path / "w"), "--days", "2", "--rows-per-day", "300", "--n-users", "50",
            "--n-items", "40", "--n-categories", "4", "--n-shops", "8", "--image-size", "4", "--quiet"]
    main(args + ["--item-tags", "12", "--max-tags", "3", "--incident", "1:oov_surge:item_tags"])
    out = capsys.readouterr().out
    assert "incident day 1 (2026-01-02): oov_surge item_tags" in out
    assert DailyDataset(tmp_path / "w").schema["item_tags"].vocab_size == 12
    with pytest.raises(SystemExit) as e:
        main(args + ["--overwrite", "--incident", "1:oov_surge:item_tags"])
    assert e.value.code == 2 and "only in worlds made with item_tags > 0" in capsys.readouterr().err
