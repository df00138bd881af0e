"""``ctrlens synth`` on the command line, and the world read back through the loader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import ctrlens.data
from synth_fixtures import read_day, small_world
from cli_fixtures import run_cli as _run

SMALL_ARGS = ["--n-users", "500", "--n-items", "200", "--n-categories", "10", "--n-shops", "40", "--new-items-per-day", "5"]


def test_cli_generates_a_world_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "w"
    code, stdout, err = _run(["synth", "--out", str(out), "--days", "3", "--rows-per-day", "400", "--seed", "2",
                              "--incident", "1:stuck_value:hour", "--incident", "2026-01-03:ctr_level_shift:0.8",
                              "--quiet", *SMALL_ARGS], capsys)
    assert code == 0, err
    assert (out / "schema.json").exists() and (out / "ground_truth.json").exists()
    assert sorted(p.name for p in out.glob("day=*")) == ["day=2026-01-01", "day=2026-01-02", "day=2026-01-03"]
    assert "3 days 2026-01-01..2026-01-03, 1,200 rows, CTR" in stdout
    assert "incident day 1 (2026-01-02): stuck_value hour magnitude 1 [input]" in stdout
    assert "incident day 2 (2026-01-03): ctr_level_shift magnitude 0.8 [world]" in stdout
    assert pd.read_parquet(out / "day=2026-01-02" / "part-0.parquet").hour.nunique() == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--incident", "12:stuck_value:category_id"], "day 12 is out of range; the world has days 0..2"),
        (["--incident", "1:stuck:category_id"], "unknown kind 'stuck'"),
        (["--incident", "1:stuck_value:colour"], "field 'colour' is not allowed for stuck_value"),
        (["--incident", "1-stuck"], "expected DAY:KIND[:FIELD][:MAGNITUDE]"),
        (["--incident", "1:oov_surge:item_id:2"], "magnitude 2.0 must be in (0.0, 1.0]"),
        (["--days", "0"], "--days"),
        (["--start", "Jan 1st"], "start must be a date YYYY-MM-DD"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, extra, message):
    argv = ["synth", "--out", str(tmp_path / "w"), "--days", "3", "--rows-per-day", "50", "--quiet", *SMALL_ARGS, *extra]
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "w" / "schema.json").exists()  # nothing written on bad input


def test_cli_refuses_to_overwrite_without_flag(tmp_path, capsys):
    argv = ["synth", "--out", str(tmp_path / "w"), "--days", "1", "--rows-per-day", "50", "--quiet", *SMALL_ARGS]
    assert _run(argv, capsys)[0] == 0
    code, _, err = _run(argv, capsys)
    assert code == 2 and "not empty" in err and "--overwrite" in err
    assert _run([*argv, "--overwrite"], capsys)[0] == 0


@pytest.mark.skipif(not hasattr(ctrlens.data, "DailyDataset"), reason="ctrlens.data.DailyDataset (the loader) is not written yet")
def test_loader_round_trips_the_world(tmp_path):
    w = small_world(tmp_path / "w", days=3, rows_per_day=600, incidents=["1:oov_surge:item_id:0.25", "2:missing_spike:price:0.2"])
    ds = ctrlens.data.DailyDataset(w.root)
    assert ds.days() == w.days
    assert ds.schema == w.schema
    images = pq.read_table(w.root / "images.parquet")
    pixels = np.frombuffer(b"".join(images["image"].to_pylist()), dtype=np.uint8).reshape(-1, 3, 32, 32)
    vi = w.schema["item_id"].vocab_size
    for i, day in enumerate(w.days):
        df = read_day(w, i)
        b = ds.load_day(day)
        assert len(b) == len(df)
        np.testing.assert_array_equal(b.labels["click"].numpy(), df.click.to_numpy())
        np.testing.assert_array_equal(b.labels["conversion"].numpy(), df.conversion.to_numpy())
        raw = df.item_id.to_numpy()
        idx = b.features["item_id"].numpy()
        np.testing.assert_array_equal(idx, np.where(raw < vi, raw + 2, 1))  # OOV bucket = 1
        lens = df.hist_item_id.map(len).to_numpy()
        np.testing.assert_array_equal(b.masks["hist_item_id"].numpy().sum(1), lens)
        first = np.array([h[-1] if len(h) else -2 for h in df.hist_category_id])  # most recent behaviour
        got = b.features["hist_category_id"].numpy()[np.arange(len(df)), np.maximum(lens - 1, 0)] - 2
        np.testing.assert_array_equal(got[lens > 0], first[lens > 0])
        price = b.features["price"].numpy()
        np.testing.assert_allclose(price, df.price.fillna(0.0).to_numpy(), rtol=1e-6)  # schema fill = 0.0
        # the candidate's image is the item's image from images.parquet (AMS: each once per batch)
        ok = raw < vi
        img = b.images[b.image_index["item_image"]].numpy()[ok]
        np.testing.assert_allclose(img, pixels[raw[ok]] / 255.0, atol=1e-6)
        assert b.images.shape[0] <= len(np.unique(np.concatenate([raw, *df.hist_item_id]))) + 1
        assert ds.oov_counts(day)["item_id"] == int((~ok).sum())
    assert ds.oov_counts(w.days[1])["item_id"] > 100
