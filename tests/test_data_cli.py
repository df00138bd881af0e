"""``ctrlens data validate|stats|movielens``: output on good input, exit 2 and one line on bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data_fixtures import write_dataset, write_day
from cli_fixtures import run_cli as run


@pytest.fixture()
def root(tmp_path):
    write_dataset(tmp_path, rows=60)
    return tmp_path


def test_validate_ok(root, capsys):
    code, out, err = run(["data", "validate", str(root)], capsys)
    assert code == 0, err
    assert "2026-01-01: OK, 60 rows in 2 file(s)" in out and "2 day(s), 120 rows: valid" in out
    code, out, _ = run(["data", "validate", str(root), "--day", "2026-01-02"], capsys)
    assert code == 0 and "1 day(s), 60 rows: valid" in out


def test_validate_bad_input_exit_2_one_line(root, capsys):
    from data_fixtures import random_frame

    df = random_frame(10, np.random.default_rng(0))
    df.loc[3, ["click", "conversion"]] = [0, 1]
    for p in (root / "day=2026-01-02").glob("*.parquet"):
        p.unlink()
    write_day(root, "2026-01-02", df, files=1)
    code, out, err = run(["data", "validate", str(root)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctrlens: error: ")
    assert "part-0.parquet: column 'conversion': row 3: conversion=1 without click" in lines[0]
    assert "Traceback" not in err


def test_absent_day_and_missing_schema(root, tmp_path_factory, capsys):
    code, _, err = run(["data", "stats", str(root), "--day", "2030-01-01"], capsys)
    assert code == 2 and "day '2030-01-01' not found" in err and "days present: 2026-01-01, 2026-01-02" in err
    empty = tmp_path_factory.mktemp("empty")
    code, _, err = run(["data", "validate", str(empty)], capsys)
    assert code == 2 and "schema.json: schema file not found" in err and len(err.strip().splitlines()) == 1


def test_stats_table_and_json(root, capsys):
    code, out, err = run(["data", "stats", str(root), "--day", "2026-01-01"], capsys)
    assert code == 0, err
    assert "hist_item_id" in out and "sequence" in out and "conversion" in out
    code, out, err = run(["data", "stats", str(root), "--day", "2026-01-01", "--json", "--top-k", "3"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["kind"] == "field_stats" and d["meta"]["rows"] == 60 and d["meta"]["top_k"] == 3
    assert {r["field"] for r in d["rows"]} >= {"user_id", "price", "click"}


def test_usage_error_exit_2(capsys):
    code, _, err = run(["data", "stats"], capsys)
    assert code == 2 and "usage error" in err


def test_movielens_cli(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    pd.DataFrame({"userId": [1, 1, 2], "movieId": [1, 2, 1], "rating": [4.0, 2.0, 5.0],
                  "timestamp": [0, 86_400 * 10, 86_400 * 20]}).to_csv(src / "ratings.csv", index=False)
    pd.DataFrame({"movieId": [1, 2], "title": ["a", "b"], "genres": ["Drama", "Comedy"]}).to_csv(
        src / "movies.csv", index=False)
    out_dir = tmp_path / "out"
    code, out, err = run(["data", "movielens", "--src", str(src), "--out", str(out_dir), "--max-len", "5",
                          "--days-per-partition", "7"], capsys)
    assert code == 0, err
    assert "wrote 3 rows (2 users, 2 items, click rate 66.7%) in 3 partitions 1970-01-01 .. 1970-01-15" in out
    code, out, err = run(["data", "validate", str(out_dir)], capsys)
    assert code == 0 and "3 day(s), 3 rows: valid" in out
    code, _, err = run(["data", "movielens", "--src", str(src), "--out", str(out_dir)], capsys)
    assert code == 2 and "not empty" in err and "--overwrite" in err
    code, _, err = run(["data", "movielens", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")], capsys)
    assert code == 2 and "MovieLens folder not found" in err
    code, _, err = run(["data", "movielens", "--src", str(src), "--out", str(tmp_path / "o3"), "--partition", "x"],
                       capsys)
    assert code == 2 and "partition must be" in err
