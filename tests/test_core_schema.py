import json

import pytest

from ctrlens.data import DenseField, ImageField, PositionField, Schema, SchemaError, SequenceField, SparseField


def make_schema(**kw) -> Schema:
    fields = (
        SparseField("user_id", 100, role="user"),
        SparseField("item_id", 50, table="item", role="item"),
        SequenceField("hist_item_id", "item", 20),
        DenseField("price"),
        PositionField(max_position=10),
        ImageField("item_image", "item_id"),
    )
    return Schema(fields=kw.pop("fields", fields), labels=("click", "conversion"), image_table="images.parquet",
                  image_shape=(3, 32, 32), **kw)


def test_round_trip_and_hash(tmp_path):
    s = make_schema()
    s.save(tmp_path)
    t = Schema.load(tmp_path)
    assert t == s
    assert t.hash == s.hash and len(s.hash) == 16
    assert s.table_of("hist_item_id").name == "item_id"
    assert s.table_of("item_id").num_embeddings == 52
    assert s.role("user").name == "user_id" and s.position.max_position == 10


def test_hash_ignores_extra_but_not_fields():
    a, b = make_schema(), make_schema(extra={"note": "x"})
    assert a.hash == b.hash
    c = make_schema(fields=(SparseField("user_id", 101, role="user"),))
    assert c.hash != a.hash


@pytest.mark.parametrize(
    "fields, needle",
    [
        ((SparseField("a", 3), SparseField("a", 3)), "duplicate field names ['a']"),
        ((SequenceField("h", "nope", 5),), "uses table 'nope'"),
        ((SparseField("a", 3, table="t"), SparseField("b", 4, table="t")), "share table 't'"),
        ((SparseField("click", 3),), "name of a label"),
        ((SparseField("s", 2, dtype="string"),), "needs a vocabulary"),
        ((ImageField("img", "price"), DenseField("price")), "source 'price' must be a sparse or sequence"),
    ],
)
def test_invalid_schemas_name_the_problem(fields, needle):
    with pytest.raises(SchemaError) as e:
        Schema(fields=fields, image_table="i.parquet", image_shape=(3, 4, 4))
    assert needle in str(e.value)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(SchemaError, match="schema file not found"):
        Schema.load(tmp_path)
    (tmp_path / "schema.json").write_text("{not json")
    with pytest.raises(SchemaError, match=r"schema.json: not valid JSON"):
        Schema.load(tmp_path)
    (tmp_path / "schema.json").write_text(json.dumps({"fields": [{"name": "x", "kind": "weird"}]}))
    with pytest.raises(SchemaError, match=r"field #0 \('x'\): kind must be one of"):
        Schema.load(tmp_path)
    (tmp_path / "schema.json").write_text(json.dumps({"fields": [{"name": "x", "kind": "sparse", "vocab": 3}]}))
    with pytest.raises(SchemaError, match=r"unknown keys \['vocab'\]"):
        Schema.load(tmp_path)
