"""Incidents appear exactly on their day and field; input corruptions leave labels alone; world changes don't."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ctrlens.errors import InputError
from ctrlens.synth import INCIDENT_KINDS, Incident, validate_incidents
from synth_fixtures import history_match, read_day, small_world

INCIDENTS = [
    "1:stuck_value:category_id",
    "1:missing_spike:price:0.3",
    "2:shuffled:category_id",
    "2:oov_surge:hist_item_id:0.2",
    "3:oov_surge:item_id:0.3",
    "3:blank_images:item_image:0.5",
    "4:distribution_shift:price:1.0",
    "5:ctr_level_shift:1.0",
    "5:position_bias_change:0.5",
    "5:stuck_value:hist_item_id",
    "5:missing_spike:hist_category_id:0.4",
    "5:shuffled:position",
]
DAYS, ROWS = 6, 2_000


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same world (same seed) without and with incidents."""
    base = tmp_path_factory.mktemp("synth_inc")
    clean = small_world(base / "clean", days=DAYS, rows_per_day=ROWS, seed=11)
    dirty = small_world(base / "dirty", days=DAYS, rows_per_day=ROWS, seed=11, incidents=INCIDENTS)
    return clean, dirty


def _vocab(w, name):
    return w.schema.table_of(name).vocab_size


def test_days_without_incidents_are_byte_identical(pair):
    clean, dirty = pair
    assert (clean.day_dir(0) / "part-0.parquet").read_bytes() == (dirty.day_dir(0) / "part-0.parquet").read_bytes()
    assert (clean.root / "images.parquet").read_bytes() == (dirty.root / "images.parquet").read_bytes()
    for d in clean.days[:4]:  # input corruptions never change the truth
        f = f"_truth/rows-{d}.parquet"
        assert (clean.root / f).read_bytes() == (dirty.root / f).read_bytes()


def test_input_corruptions_change_only_their_field_never_labels(pair):
    clean, dirty = pair
    touched = {1: {"category_id", "price"}, 2: {"category_id", "hist_item_id"}, 3: {"item_id"}}
    for day, fields in touched.items():
        c, d = read_day(clean, day), read_day(dirty, day)
        for col in c.columns:
            same = c[col].equals(d[col]) if c[col].dtype != object else all(
                np.array_equal(a, b) for a, b in zip(c[col], d[col]))
            assert same == (col not in fields), (day, col)


def test_stuck_value_is_one_value_that_day_only(pair):
    clean, dirty = pair
    for day in range(DAYS):
        n = read_day(dirty, day).category_id.nunique()
        assert (n == 1) == (day == 1), (day, n)
    logged = dirty.ground_truth["days"][1]["incidents"][0]
    assert logged["kind"] == "stuck_value" and logged["rows"] == ROWS
    assert read_day(dirty, 1).category_id.iloc[0] == logged["value"]
    assert read_day(clean, 1).category_id.nunique() > 10
    hist = read_day(dirty, 5).hist_item_id  # a stuck sequence: one (non-empty) history everywhere
    assert len({tuple(h) for h in hist}) == 1 and len(hist.iloc[0]) > 0
    assert len({tuple(h) for h in read_day(dirty, 4).hist_item_id}) > ROWS // 2


def test_shuffled_keeps_the_marginal_and_breaks_the_joint(pair):
    clean, dirty = pair
    c, d = read_day(clean, 2), read_day(dirty, 2)
    np.testing.assert_array_equal(np.sort(c.category_id), np.sort(d.category_id))  # marginal preserved
    assert (c.category_id.to_numpy() == d.category_id.to_numpy()).mean() < 0.25
    # the join with the user's history is broken: candidates no longer match the user's interests
    assert history_match(c).mean() > 0.35
    assert history_match(d).mean() < 0.6 * history_match(c).mean()
    c5, d5 = read_day(clean, 5), read_day(dirty, 5)
    np.testing.assert_array_equal(np.sort(c5.position), np.sort(d5.position))
    assert (c5.position.to_numpy() != d5.position.to_numpy()).mean() > 0.5


def test_missing_spike_nulls_that_day_only(pair):
    _, dirty = pair
    for day in range(DAYS):
        df = read_day(dirty, day)
        frac = df.price.isna().mean()
        assert (frac == pytest.approx(0.3, abs=0.05)) if day == 1 else frac == 0, (day, frac)
        hfrac = df.hist_category_id.isna().mean()
        assert (hfrac == pytest.approx(0.4, abs=0.05)) if day == 5 else hfrac == 0, (day, hfrac)


def test_oov_surge_emits_ids_beyond_the_vocabulary_that_day_only(pair):
    _, dirty = pair
    vi = _vocab(dirty, "item_id")
    for day in range(DAYS):
        df = read_day(dirty, day)
        oov = (df.item_id >= vi).mean()
        assert (oov == pytest.approx(0.3, abs=0.05)) if day == 3 else oov == 0, (day, oov)
        entries = np.concatenate(df.hist_item_id.dropna().to_numpy())
        h = (entries >= vi).mean()
        assert (h == pytest.approx(0.2, abs=0.03)) if day == 2 else h == 0, (day, h)
    log3 = next(i for i in dirty.ground_truth["days"][3]["incidents"] if i["kind"] == "oov_surge")
    assert log3["rows"] == int((read_day(dirty, 3).item_id >= vi).sum()) and log3["vocab_size"] == vi


def test_blank_images_override_that_day_only(pair):
    clean, dirty = pair
    for day, d in enumerate(dirty.days):
        assert (dirty.day_dir(d) / "_images.parquet").exists() == (day == 3)
    t = pq.read_table(dirty.day_dir(3) / "_images.parquet")
    shown = np.unique(read_day(clean, 3).item_id)
    ids = t["item_id"].to_numpy()
    assert set(ids) <= set(shown)
    assert len(ids) / len(shown) == pytest.approx(0.5, abs=0.08)
    assert all(b == bytes(3 * 32 * 32) for b in t["image"].to_pylist())
    assert dirty.schema.extra["image_override"] == "day=YYYY-MM-DD/_images.parquet"


def test_distribution_shift_changes_the_world_and_the_labels(pair):
    clean, dirty = pair
    c, d = read_day(clean, 4), read_day(dirty, 4)
    np.testing.assert_allclose(d.price - c.price, np.log(2.0), atol=1e-5)  # prices doubled
    tc = pd.read_parquet(clean.root / f"_truth/rows-{clean.days[4]}.parquet")
    td = pd.read_parquet(dirty.root / f"_truth/rows-{dirty.days[4]}.parquet")
    assert td.p_conversion.mean() < 0.6 * tc.p_conversion.mean()  # labels follow the world
    assert td.p_click.mean() < tc.p_click.mean()
    assert not c.click.equals(d.click)


def test_level_shift_and_position_bias_change_are_recorded(pair):
    clean, dirty = pair
    gc, gd = clean.ground_truth["days"], dirty.ground_truth["days"]
    assert gd[5]["base_logit"] == pytest.approx(gc[5]["base_logit"] + 1.0)
    assert gd[5]["eta"] == pytest.approx(0.7 * 1.5) and gc[5]["eta"] == pytest.approx(0.7)
    assert list(dirty.ground_truth["examination"]["per_day"]) == [dirty.days[5]]
    assert [g["base_logit"] for g in gd[:5]] == [g["base_logit"] for g in gc[:5]]


def test_incident_log_lists_every_incident(pair):
    _, dirty = pair
    log = dirty.ground_truth["incidents"]
    want = [Incident.parse(s) for s in INCIDENTS]
    assert [(i["day"], i["kind"], i["field"]) for i in log] == [(w.day, w.kind, w.field) for w in want]
    assert [i["magnitude"] for i in log] == [w.value for w in want]
    assert all(i["date"] == dirty.days[i["day"]] for i in log)
    assert {i["effect"] for i in log if i["kind"] in ("ctr_level_shift", "distribution_shift")} == {"world"}
    per_day = [len(d["incidents"]) for d in dirty.ground_truth["days"]]
    assert per_day == [0, 2, 2, 2, 1, 5]


SHIFT_STAT = {
    "price": lambda df: np.exp(df.price).mean(),
    "category_id": lambda df: df.category_id.value_counts(normalize=True).iloc[:3].sum(),
    "item_id": lambda df: df.item_id.value_counts(normalize=True).iloc[:20].sum(),
    "shop_id": lambda df: df.shop_id.value_counts(normalize=True).iloc[:3].sum(),
    "hour": lambda df: ((df.hour >= 6) & (df.hour < 15)).mean(),
    "user_id": lambda df: df.user_id.value_counts(normalize=True).iloc[:20].sum(),
    "user_age_bucket": lambda df: (df.user_age_bucket == 6).mean(),
    "user_gender": lambda df: (df.user_gender == 0).mean(),
    "hist_item_id": lambda df: df.hist_item_id.map(len).mean(),
    "hist_category_id": lambda df: df.hist_category_id.map(len).mean(),
    "position": lambda df: (df.position >= 8).mean(),
}


def test_every_distribution_shift_field_is_covered():
    assert set(SHIFT_STAT) == set(f for f in INCIDENT_KINDS["distribution_shift"].fields)


@pytest.mark.parametrize("field", sorted(SHIFT_STAT))
def test_distribution_shift_moves_its_field(tmp_path, field):
    kw = dict(days=2, rows_per_day=1_500, seed=5)
    clean = small_world(tmp_path / "c", **kw)
    dirty = small_world(tmp_path / "d", incidents=[f"1:distribution_shift:{field}:0.8"], **kw)
    stat = SHIFT_STAT[field]
    assert stat(read_day(clean, 0)) == stat(read_day(dirty, 0))  # the day before is untouched
    before, after = stat(read_day(clean, 1)), stat(read_day(dirty, 1))
    assert abs(after - before) > 0.3 * abs(before) + 0.01, (field, before, after)


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, message",
    [
        ("3:stuck:category_id", "unknown kind 'stuck'; kinds are stuck_value"),
        ("3:stuck_value:colour", "field 'colour' is not allowed for stuck_value (no such field"),
        ("3:stuck_value:item_image", "field 'item_image' is not allowed for stuck_value"),
        ("3:stuck_value", "field None is not allowed for stuck_value"),
        ("3:ctr_level_shift:category_id", "magnitude 'category_id' is not a number (ctr_level_shift takes no field)"),
        ("9:stuck_value:hour", "day 9 is out of range; the world has days 0..5"),
        ("-1:stuck_value:hour", "day -1 is out of range"),
        ("3:missing_spike:price:1.5", "magnitude 1.5 must be in (0.0, 1.0]"),
        ("3:missing_spike:position", "field 'position' is not allowed for missing_spike"),
        ("3:oov_surge:price", "field 'price' is not allowed for oov_surge"),
        ("3:distribution_shift:hour:0", "magnitude 0.0 must be in (0.0, 1.0]"),
        ("x:stuck_value:hour", "day 'x' is neither a day index nor a date"),
        ("3", "expected DAY:KIND[:FIELD][:MAGNITUDE]"),
        ("3:shuffled:hour:lots", "magnitude 'lots' is not a number"),
    ],
)
def test_bad_incidents_are_refused_with_a_clear_message(spec, message):
    with pytest.raises(InputError) as e:
        validate_incidents([spec], days=6)
    assert message in str(e.value)


def test_incident_spec_parsing():
    assert Incident.parse("12:stuck_value:category_id") == Incident(12, "stuck_value", "category_id")
    assert Incident.parse("12:stuck_value:category_id:0.5") == Incident(12, "stuck_value", "category_id", 0.5)
    assert Incident.parse("5:ctr_level_shift:0.8") == Incident(5, "ctr_level_shift", None, 0.8)
    assert Incident.parse("5:ctr_level_shift::-0.8") == Incident(5, "ctr_level_shift", None, -0.8)
    assert Incident.parse("5:blank_images") == Incident(5, "blank_images")
    assert Incident.parse("5:blank_images:0.3") == Incident(5, "blank_images", None, 0.3)
    assert Incident.parse("2026-01-13:shuffled:hour", start="2026-01-01") == Incident(12, "shuffled", "hour")
    assert Incident(3, "oov_surge", "item_id").value == INCIDENT_KINDS["oov_surge"].default
    with pytest.raises(InputError, match="needs the world's start date"):
        Incident.parse("2026-01-13:shuffled:hour")
