"""Bag fields (unordered multi-value ids, optional per-id weights) and labels with any name, through
schema, validation and the loader; the loader's batches are checked against a per-row Python mapping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ctrlens.data import BagField, DailyDataset, DataError, Schema, SparseField
from ctrlens.data.schema import SchemaError
from ctrlens.errors import InputError
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
