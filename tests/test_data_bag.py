"""Bag fields (unordered multi-value ids, optional per-id weights) and labels with any name, through
schema, validation and the loader; the loader's batches are checked against a per-row Python mapping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ctrlens.data import BagField, DailyDataset, DataError, Schema, SparseField
from ctrlens.data.schema import SchemaError
from ctrlens.errors import InputError
from ctrlens.results import Result
from bag_fixtures import DAY, TAGS, bag_schema, random_rows, write_day

def expected(rows: dict[str, list]) -> dict[str, np.ndarray]:
    """Brute force, one row at a time: the index convention, first ``max_len`` ids kept."""
    out = {"tags": [], "tag_w": [], "also_items": []}
    for t, w, a in zip(rows["tags"], rows["tag_w"], rows["also_items"]):
        ids, ws = [], []
        for x, y in zip(t or [], w or []):
            if x is None:
                continue
            ids.append(TAGS.index(x) + 2 if x in TAGS else 1)
            ws.append(y)
        ids, ws = ids[:3], ws[:3]
        out["tags"].append(ids + [0] * (3 - len(ids)))
        out["tag_w"].append(ws + [0.0] * (3 - len(ws)))
        aa = [(x + 2 if x < 30 else 1) for x in (a or [])][:2]
        out["also_items"].append(aa + [0] * (2 - len(aa)))
    return {k: np.array(v) for k, v in out.items()}


def test_bag_batches_match_a_row_by_row_mapping(tmp_path):
    rng = np.random.default_rng(0)
    parts = [random_rows(17, rng), random_rows(14, rng)]
    write_day(tmp_path, bag_schema(), parts)
    ds = DailyDataset(tmp_path)
    batches = list(ds.iter_batches(DAY, 5))
    b = batches[0].concat(batches)
    both = {k: parts[0][k] + parts[1][k] for k in parts[0]}
    want = expected(both)
    assert b.features["tags"].dtype == torch.int64 and b.features["tags"].shape == (31, 3)
    np.testing.assert_array_equal(b.features["tags"].numpy(), want["tags"])
    np.testing.assert_array_equal(b.masks["tags"].numpy(), want["tags"] != 0)
    np.testing.assert_array_equal(b.weights["tags"].numpy(), want["tag_w"].astype(np.float32))
    np.testing.assert_array_equal(b.features["also_items"].numpy(), want["also_items"])
    assert "also_items" not in b.weights  # no weights column: every id weighs 1
    np.testing.assert_array_equal(b.labels["income"].numpy(), np.array(both["income"], np.float32))
    # counts: rows with an empty/null bag are missing; OOV counted per id (before truncation)
    c = ds.validate(DAY).counts.fields["tags"]
    ids = [x for t in both["tags"] for x in (t or []) if x is not None]
    assert c.values == len(ids) and c.oov == sum(x not in TAGS for x in ids)
    assert c.missing == sum(not [x for x in (t or []) if x is not None] for t in both["tags"])


def test_shared_table_and_round_trip(tmp_path):
    s = bag_schema()
    s.save(tmp_path)
    t = Schema.load(tmp_path)
    assert t == s and t.hash == s.hash
    assert t.table_of("also_items").name == "item" and t.table_of("tags").name == "tags"
    assert t.table_name_of("also_items") == "item"
    assert [f.name for f in t.bags] == ["tags", "also_items"]
    assert t.weight_columns() == {"tags": "tag_w"}
    assert json.loads((tmp_path / "schema.json").read_text())["labels"] == ["income"]


@pytest.mark.parametrize(
    "fields, labels, needle",
    [
        ((BagField("b"),), ("click",), "needs a vocab_size"),
        ((BagField("b", table="nope"),), ("click",), "uses table 'nope'"),
        ((BagField("b", 5, max_len=0),), ("click",), "max_len must be >= 1"),
        ((BagField("b", 5, pooling="max"),), ("click",), "pooling must be 'sum' or 'mean'"),
        ((BagField("b", 5, weights="income"),), ("income",), "weights column 'income' clashes"),
        ((SparseField("t", 4), BagField("b", 5, table="t")), ("click",), "share table 't'"),
        ((SparseField("a", 4),), ("conversion",), "'conversion' needs label 'click'"),
        ((SparseField("a", 4),), (), "non-empty list"),
        ((SparseField("a", 4),), ("y", "y"), "duplicate label"),
        ((SparseField("income", 4),), ("income",), "has the name of a label"),
    ],
)
def test_invalid_bag_and_label_schemas(fields, labels, needle):
    with pytest.raises(SchemaError) as e:
        Schema(fields=fields, labels=labels)
    assert needle in str(e.value)


def _bad(tmp_path: Path, **changes) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(1)
    good, bad = random_rows(12, rng), random_rows(12, rng)
    for k, (row, value) in changes.items():
        bad[k][row] = value
    path = write_day(tmp_path, bag_schema(), [good, bad])[1]
    msgs = []
    for run in (lambda ds: ds.validate(DAY), lambda ds: list(ds.iter_batches(DAY, 5))):
        with pytest.raises(DataError) as e:
            run(DailyDataset(tmp_path))
        msgs.append((str(e.value), e.value.column, e.value.row))
    return path, msgs


def test_weights_length_mismatch_names_weights_column_and_row(tmp_path):
    path, msgs = _bad(tmp_path, tags=(8, ["a", "b"]), tag_w=(8, [1.0]))
    for msg, col, row in msgs:
        assert col == "tag_w" and row == 8 and str(path) in msg and "1 weights for 2 ids of bag field 'tags'" in msg


def test_non_finite_weight_is_refused(tmp_path):
    path, msgs = _bad(tmp_path, tags=(9, ["a", "b"]), tag_w=(9, [1.0, float("nan")]))
    for msg, col, row in msgs:
        assert col == "tag_w" and row == 9 and "weight nan of bag field 'tags'" in msg


def test_null_weight_of_a_null_id_is_ignored(tmp_path):
    rng = np.random.default_rng(2)
    rows = random_rows(6, rng)
    rows["tags"][2], rows["tag_w"][2] = [None, "c"], [None, 2.5]
    write_day(tmp_path, bag_schema(), [rows])
    b = DailyDataset(tmp_path).load_day(DAY)
    assert b.features["tags"][2].tolist() == [4, 0, 0] and b.weights["tags"][2].tolist() == [2.5, 0, 0]


def test_oov_error_policy_names_bag_row(tmp_path):
    rng = np.random.default_rng(3)
    good = random_rows(5, rng)
    good["also_items"] = [[1]] * 5
    bad = random_rows(12, rng)
    bad["also_items"] = [[1, 2]] * 12
    bad["also_items"][10] = [3, 31]
    schema = Schema(fields=(SparseField("item", 30, table="item", oov="error"),
                            BagField("tags", 5, max_len=3, dtype="string", vocabulary=TAGS, weights="tag_w"),
                            BagField("also_items", table="item", max_len=2)), labels=("income",))
    for r in (good, bad):
        r["item"] = [1] * len(r["item"])
    path = write_day(tmp_path, schema, [good, bad])[1]
    with pytest.raises(DataError) as e:
        DailyDataset(tmp_path).validate(DAY)
    assert e.value.column == "also_items" and e.value.row == 10 and "id 31 is out of vocabulary" in str(e.value)
    assert str(path) in str(e.value)


def test_wrong_bag_column_type_is_named(tmp_path):
    rng = np.random.default_rng(4)
    rows = random_rows(4, rng)
    write_day(tmp_path, bag_schema(), [rows])
    p = tmp_path / f"day={DAY}" / "part-0.parquet"
    t = pq.read_table(p)
    t = t.set_column(t.schema.get_field_index("also_items"), "also_items", pa.array([1, 2, 3, 4]))
    pq.write_table(t, p)
    with pytest.raises(InputError, match=r"column 'also_items': expected list<int64> \(bag field, table 'item'\)"):
        DailyDataset(tmp_path).validate(DAY)
    t = t.drop_columns(["tag_w"])
    pq.write_table(t, p)
    with pytest.raises(InputError, match=r"missing column\(s\) \['tag_w'\]"):
        DailyDataset(tmp_path).validate(DAY)


# -- field statistics and drift ------------------------------------------------------------------


def test_bag_field_stats_match_brute_force(tmp_path):
    from ctrlens.data.stats import OTHER, field_stats

    rng = np.random.default_rng(5)
    parts = [random_rows(23, rng), random_rows(19, rng)]
    write_day(tmp_path, bag_schema(), parts)
    f = field_stats(DailyDataset(tmp_path), DAY, top_k=3).frame.set_index("field")
    tags = [t for p in parts for t in p["tags"]]
    kept = [[x for x in (t or []) if x is not None] for t in tags]
    ids = [x for k in kept for x in k]
    lengths = np.array([len(k) for k in kept])
    r = f.loc["tags"]
    assert r["kind"] == "bag" and r["rows"] == 42
    assert r["coverage"] == pytest.approx(np.mean(lengths > 0))
    assert r["oov_rate"] == pytest.approx(sum(x not in TAGS for x in ids) / len(ids))
    assert r["mean"] == pytest.approx(lengths.mean()) and r["std"] == pytest.approx(lengths.std())
    assert r["cardinality"] == len(set(ids))
    vals, counts = np.unique(ids, return_counts=True)
    order = sorted(range(len(vals)), key=lambda i: (-counts[i], vals[i]))
    want_top = [[vals[i], counts[i] / len(ids)] for i in order[:3]] + [[OTHER, sum(counts[i] for i in order[3:]) / len(ids)]]
    assert [v for v, _ in r["top_json"]] == [v for v, _ in want_top]
    assert [s for _, s in r["top_json"]] == pytest.approx([s for _, s in want_top])
    lh = r["hist_json"]["lengths"]
    assert lh["labels"] == ["0", "1", "2", "3", ">3"]
    assert lh["counts"] == [int((lengths == k).sum()) for k in range(4)] + [int((lengths > 3).sum())]
    assert sum(r["hist_json"]["counts"]) == len(ids) + int((lengths == 0).sum())  # ids + missing rows
    assert f.loc["also_items", "kind"] == "bag" and f.loc["income", "kind"] == "label"


@pytest.mark.parametrize("incident, statistic, finding", [("stuck", "top1_share", "broken_feature"),
                                                       ("empty", "coverage", "broken_feature"),
                                                       ("oov", "oov_rate", "oov_surge")])
def test_broken_bag_field_is_detected_by_drift(tmp_path, incident, statistic, finding):
    from ctrlens.data.stats import field_stats
    from ctrlens.monitor.config import Thresholds
    from ctrlens.monitor.diagnosis import Context, diagnose
    from ctrlens.monitor.drift import DriftSuite, History

    rng = np.random.default_rng(6)
    days = [f"2026-03-{d:02d}" for d in range(1, 8)]
    for d in days:
        write_day(tmp_path, bag_schema(), [random_rows(400, rng)], day=d)
    broken = random_rows(400, rng)
    if incident == "stuck":
        broken["tags"] = [["c"] if t is not None else None for t in broken["tags"]]
    elif incident == "empty":
        broken["tags"] = [[] for _ in broken["tags"]]
    else:
        broken["tags"] = [[("zz" if x is not None else None) for x in t] if t else t for t in broken["tags"]]
    broken["tag_w"] = [[1.0] * len(t) if t is not None else None for t in broken["tags"]]
    write_day(tmp_path, bag_schema(), [broken], day="2026-03-08")
    ds = DailyDataset(tmp_path)
    stats = {d: field_stats(ds, d).frame for d in days}
    ref = pd.concat([f.assign(day=d, version_id=1) for d, f in stats.items()], ignore_index=True)
    history = History(days=days, label="trailing 7d", frames={"field_stats": ref})

    def rows(day_frame):
        suite = DriftSuite(Thresholds(), history, min_days=5)
        suite.fields(Result("field_stats", day_frame))
        return suite.frame()

    bad = rows(field_stats(ds, "2026-03-08").frame)
    tags = bad[bad["subject"] == "tags"].set_index("statistic")
    assert {"psi", "js", "coverage", "oov_rate", "log_cardinality", "top1_share", "mean_z", "log_std"} <= set(tags.index)
    assert bool(tags.loc[statistic, "alert"])
    assert not bad[bad["subject"] == "also_items"]["alert"].any()  # the healthy bag stays quiet
    # the diagnosis names the field and what broke
    kinds = {f.name: f.kind for f in bag_schema().fields}
    alerts = diagnose(bad, Context(model="m", day="2026-03-08", field_kinds=kinds)).frame
    top = alerts.iloc[0]
    assert (top["finding"], top["subject"]) == (finding, "tags")
    # a healthy day raises nothing on the bag
    write_day(tmp_path, bag_schema(), [random_rows(400, rng)], day="2026-03-09")
    good = rows(field_stats(DailyDataset(tmp_path), "2026-03-09").frame)
    assert not good[good["subject"].isin(["tags", "also_items"])]["alert"].any()


# -- your rows to batches ---------------------------------------------------------------------------


def _frame(rows: dict[str, list]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["item"] = df["item"].astype("Int64")  # missing ids: pandas' nullable integers
    return df


def test_rows_to_batch_equals_the_loader(tmp_path):
    from ctrlens.data import rows_to_batch

    rng = np.random.default_rng(7)
    rows = random_rows(25, rng)
    write_day(tmp_path, bag_schema(), [rows])
    want = DailyDataset(tmp_path).load_day(DAY)
    df = _frame(rows).assign(note="ignored")  # other columns are ignored
    got = rows_to_batch(df, bag_schema())
    for part in ("features", "masks", "weights", "labels"):
        a, b = getattr(got, part), getattr(want, part)
        assert set(a) == set(b)
        for k in a:
            assert torch.equal(a[k], b[k]), (part, k)
    assert torch.equal(got.row, torch.arange(25))
    # Arrow tables too; rows to score carry no labels
    t = pa.Table.from_pandas(df.drop(columns=["income"]), preserve_index=False)
    scored = rows_to_batch(t, bag_schema(), row0=100)
    assert scored.labels == {} and torch.equal(scored.features["tags"], want.features["tags"])
    assert scored.row.tolist() == list(range(100, 125))


def test_rows_to_batch_errors_name_column_and_row():
    from ctrlens.data import rows_to_batch

    rows = random_rows(6, np.random.default_rng(8))
    rows["tags"][4], rows["tag_w"][4] = ["a", "b"], [1.0, float("inf")]
    with pytest.raises(DataError) as e:
        rows_to_batch(_frame(rows), bag_schema(), source="my frame")
    assert (e.value.column, e.value.row) == ("tag_w", 4) and str(e.value).startswith("my frame: column 'tag_w': row 4")
    with pytest.raises(DataError, match=r"missing column\(s\) \['also_items'\]"):
        rows_to_batch(_frame(rows).drop(columns=["also_items"]), bag_schema())
    with pytest.raises(DataError, match=r"column 'item': expected integer ids.*use dtype 'Int64'"):
        rows_to_batch(pd.DataFrame(rows), bag_schema())  # None in an int column: pandas made it float
    two = Schema(fields=(SparseField("a", 3),), labels=("click", "purchase"))
    with pytest.raises(DataError, match=r"label column\(s\) \['purchase'\] missing"):
        rows_to_batch(pd.DataFrame({"a": [1], "click": [0]}), two)
