"""``ctrlens data convert``: a plain CSV / Parquet table plus a YAML mapping -> the daily contract.

Round trip: every value read back from the written dataset (raw columns and the loader's batches)
equals the source row's value; bad mappings and bad columns exit 2 naming the key / column and leave
nothing on disk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ctrlens.data import DailyDataset, Schema
from ctrlens.data.convert import ConvertError, convert_table
from cli_fixtures import run_cli as run

CITIES = ["paris", "rome", "oslo", "lima", "kyiv"]
TAGS = ["red", "green", "blue", "new", "sale", "gift"]
MAPPING = {
    "time": "when",
    "reference_days": 3,
    "fields": {
        "user_id": {"kind": "sparse", "column": "user", "role": "user"},
        "city": {"kind": "sparse"},
        "item": {"kind": "sparse", "table": "item"},
        "viewed": {"kind": "sequence", "table": "item", "max_len": 4, "delimiter": " "},
        "tags": {"kind": "bag", "delimiter": "|", "max_len": 3, "weights": "tag_w", "pooling": "mean"},
        "price": {"kind": "dense", "normalize": "log_standard", "fill": 0.0},
        "slot": {"kind": "position", "max_position": 5},
    },
    "labels": {"income": {"column": "income_band", "positive": [">50K"]}, "purchase": "bought"},
    "passthrough": ["order_id"],
}


def source_frame(n: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = pd.to_datetime("2026-02-01") + pd.to_timedelta(rng.integers(0, 5 * 24 * 3600, n), unit="s")
    tags, tag_w, viewed = [], [], []
    for i in range(n):
        k = int(rng.integers(0, 5))
        t = list(rng.choice(TAGS, size=k, replace=False))
        tags.append("|".join(t) if k or i % 2 else None)
        tag_w.append("|".join(str(float(rng.integers(1, 4))) for _ in t) if k or i % 2 else None)
        viewed.append(" ".join(str(x) for x in rng.integers(0, 30, int(rng.integers(0, 6)))))
    price = rng.lognormal(2.0, 1.0, n)
    price[::17] = np.nan
    return pd.DataFrame({
        "when": days.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "user": rng.integers(0, 50, n),
        "city": rng.choice(CITIES + ["atlantis"], n, p=[0.3, 0.3, 0.2, 0.1, 0.09, 0.01]),
        "item": rng.integers(0, 30, n),
        "viewed": viewed,
        "tags": tags,
        "tag_w": tag_w,
        "price": price,
        "slot": rng.integers(1, 6, n),
        "income_band": rng.choice(["<=50K", ">50K"], n),
        "bought": rng.integers(0, 2, n),
        "order_id": np.arange(n) + 1000,
    })


@pytest.fixture()
def files(tmp_path):
    df = source_frame()
    csv = tmp_path / "events.csv"
    df.to_csv(csv, index=False)
    mp = tmp_path / "mapping.yaml"
    mp.write_text(yaml.safe_dump(MAPPING, sort_keys=False))
    return df, csv, mp


def _split(v, sep, cast):
    if v is None or (isinstance(v, float) and np.isnan(v)) or v == "":  # an empty CSV cell reads as null
        return None
    return [cast(x) for x in v.split(sep)] if v else []


def test_csv_round_trip(files, tmp_path, capsys):
    df, csv, mp = files
    out = tmp_path / "ds"
    code, text, err = run(["data", "convert", str(csv), "--mapping", str(mp), "--out", str(out)], capsys)
    assert code == 0, err
    assert "wrote 240 rows in 5 day(s) 2026-02-01 .. 2026-02-05" in text and "label(s) income, purchase" in text
    ds = DailyDataset(out)
    s = ds.schema
    assert s.labels == ("income", "purchase") and ds.days() == [f"2026-02-0{i}" for i in range(1, 6)]
    assert s["user_id"].role == "user" and s["viewed"].table == "item" and s.table_of("viewed").name == "item"
    ref = df[pd.to_datetime(df["when"]).dt.strftime("%Y-%m-%d") <= "2026-02-03"]
    # string vocabulary: reference-day values by decreasing count, ties by value
    counts = ref["city"].value_counts()
    want_voc = sorted(counts.index, key=lambda v: (-counts[v], v))
    assert list(s["city"].vocabulary) == want_voc
    tag_counts = pd.Series([t for v in ref["tags"] if isinstance(v, str) and v for t in v.split("|")]).value_counts()
    assert list(s["tags"].vocabulary) == sorted(tag_counts.index, key=lambda v: (-tag_counts[v], v))
    assert s["item"].vocab_size == max(ref["item"].max(), max(int(x) for v in ref["viewed"] if isinstance(v, str) and v
                                                              for x in v.split())) + 1
    logp = np.log1p(ref["price"].dropna().to_numpy())
    norm = s.extra["normalization"]["price"]
    assert norm["mean"] == pytest.approx(logp.mean()) and norm["std"] == pytest.approx(logp.std())

    back = pd.concat([ds.read_frame(d) for d in ds.days()]).sort_values("order_id").reset_index(drop=True)
    src = df.sort_values("order_id").reset_index(drop=True)
    assert back["user_id"].tolist() == src["user"].tolist()
    assert back["city"].tolist() == src["city"].tolist()
    assert back["item"].tolist() == src["item"].tolist()
    assert [list(v) if v is not None else None for v in back["viewed"]] == [_split(v, " ", int) for v in src["viewed"]]
    assert [list(v) if v is not None else None for v in back["tags"]] == [_split(v, "|", str) for v in src["tags"]]
    assert [list(v) if v is not None else None for v in back["tag_w"]] == [_split(v, "|", float) for v in src["tag_w"]]
    price = np.expm1(back["price"].to_numpy() * norm["std"] + norm["mean"])
    np.testing.assert_allclose(price, src["price"].to_numpy(), rtol=1e-5)  # NaN where the source is missing
    assert back["income"].tolist() == (src["income_band"] == ">50K").astype(int).tolist()
    assert back["purchase"].tolist() == src["bought"].tolist() and back["when"].tolist() == src["when"].tolist()
    # and through the loader: the indices of the contract
    b = ds.load_day("2026-02-05")
    day = src[pd.to_datetime(src["when"]).dt.strftime("%Y-%m-%d") == "2026-02-05"].sort_values("when", kind="stable")
    voc = {v: i + 2 for i, v in enumerate(s["city"].vocabulary)}
    assert b.features["city"].tolist() == [voc.get(c, 1) for c in day["city"]]  # unseen city -> OOV bucket
    tv = {v: i + 2 for i, v in enumerate(s["tags"].vocabulary)}
    want = [([tv.get(t, 1) for t in (_split(v, "|", str) or [])][:3] + [0, 0, 0])[:3] for v in day["tags"]]
    assert b.features["tags"].tolist() == want


def test_parquet_with_list_columns_and_epoch_time(tmp_path):
    df = source_frame(60, seed=1)
    df["when"] = pd.to_datetime(df["when"]).astype("int64") // 10**6  # epoch milliseconds
    df["tags"] = [v.split("|") if isinstance(v, str) and v else ([] if isinstance(v, str) else None) for v in df["tags"]]
    df["tag_w"] = [[float(x) for x in v.split("|")] if isinstance(v, str) and v else ([] if isinstance(v, str) else None)
                   for v in df["tag_w"]]
    df["viewed"] = [[int(x) for x in v.split()] for v in df["viewed"]]
    p = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), p)
    m = {**MAPPING, "time": {"column": "when", "unit": "ms"}, "reference_days": None}
    m["fields"] = {**m["fields"], "tags": {k: v for k, v in m["fields"]["tags"].items() if k != "delimiter"}}
    res = convert_table(p, m, tmp_path / "ds")
    assert res.rows == 60 and res.reference_days == res.days
    back = pd.concat([DailyDataset(res.root).read_frame(d) for d in res.days]).sort_values("order_id")
    assert [list(v) if v is not None else None for v in back["tags"]] == df.sort_values("order_id")["tags"].tolist()


def _bad(tmp_path, capsys, csv, mapping: dict | str, needle: str) -> str:
    mp = tmp_path / "bad.yaml"
    mp.write_text(mapping if isinstance(mapping, str) else yaml.safe_dump(mapping, sort_keys=False))
    out = tmp_path / "never"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, text, err = run(["data", "convert", str(csv), "--mapping", str(mp), "--out", str(out)], capsys)
    assert code == 2, (text, err)
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp left
    return err


def _with(field: str, **spec) -> dict:
    m = yaml.safe_load(yaml.safe_dump(MAPPING))
    m["fields"][field] = {**m["fields"].get(field, {}), **spec}
    return m


@pytest.mark.parametrize("mapping, needle", [
    ("time: [unclosed", "not valid YAML (line 1"),
    ("- just\n- a list\n", "expected a mapping with keys 'time', 'fields' and 'labels'"),
    ({k: v for k, v in MAPPING.items() if k != "labels"}, "key 'labels' is required"),
    ({**MAPPING, "colour": 1}, "unknown key(s) ['colour']"),
    (_with("city", kind="categorical"), "fields.city: kind must be one of"),
    (_with("city", delimiter="|"), "fields.city: unknown key(s) ['delimiter'] for kind 'sparse'"),
    (_with("tags", max_len=0), "fields.tags.max_len: must be an integer >= 1"),
    (_with("price", normalize="zscore"), "fields.price.normalize: must be one of"),
    (_with("viewed", table="nope"), "fields.viewed: table 'nope' is not defined by a sparse or bag field"),
    ({**MAPPING, "reference_days": "2027-01-01:2027-01-09"}, "select no day"),
    ({**MAPPING, "labels": {"income": {"column": "income_band", "positive": [">50K"], "threshold": 1}}},
     "give 'positive' or 'threshold', not both"),
])
def test_bad_mapping_exits_2_naming_the_key(files, tmp_path, capsys, mapping, needle):
    _, csv, _ = files
    _bad(tmp_path, capsys, csv, mapping, needle)


@pytest.mark.parametrize("change, mapping, needle", [
    (lambda d: d.drop(columns=["city"]), MAPPING, "column 'city' (sparse field 'city') not found"),
    (lambda d: d.assign(item=d["item"].astype(object).where(d.index != 7, "x7")), MAPPING,
     "column 'item': row 7: expected an integer id like the other fields of table 'item', got 'x7'"),
    (lambda d: d.assign(bought=d["bought"].where(d.index != 5, 3)), MAPPING,
     "column 'bought': row 5: label 'purchase' must be 0/1"),
    (lambda d: d.assign(when=d["when"].where(d.index != 9, "yesterday")), MAPPING,
     "column 'when': row 9: cannot read 'yesterday' as a date"),
    (lambda d: d.assign(tags=d["tags"].where(d.index != 4, "red|blue"), tag_w=d["tag_w"].where(d.index != 4, "1.0")),
     MAPPING, "column 'tag_w': row 4: 1 weights for 2 ids of bag field 'tags'"),
    (lambda d: d.assign(price=d["price"].astype(object).where(d.index != 3, "cheap")), MAPPING,
     "column 'price': row 3: expected a number, got 'cheap'"),
    (lambda d: d.assign(slot=d["slot"].where(d.index != 2, 9)), MAPPING, "column 'slot': row 2: position 9 outside 1..5"),
    (lambda d: d.assign(city=d["city"].where(pd.to_datetime(d["when"]) < pd.Timestamp("2026-02-05", tz="UTC"), "gotham")),
     _with("city", oov="error"), "never/day=2026-02-05/part-0.parquet: column 'city': row 0: id 'gotham' is out of "
     "vocabulary"),  # a city first seen after the reference days, with oov: error
])
def test_bad_column_exits_2_naming_the_column(files, tmp_path, capsys, change, mapping, needle):
    df, _, _ = files
    csv = tmp_path / "bad.csv"
    change(df).to_csv(csv, index=False)
    _bad(tmp_path, capsys, csv, mapping, needle)


def test_overwrite_only_replaces_a_dataset(files, tmp_path, capsys):
    df, csv, mp = files
    out = tmp_path / "ds"
    assert run(["data", "convert", str(csv), "--mapping", str(mp), "--out", str(out)], capsys)[0] == 0
    code, _, err = run(["data", "convert", str(csv), "--mapping", str(mp), "--out", str(out)], capsys)
    assert code == 2 and "output folder is not empty" in err
    df.head(50).to_csv(csv, index=False)
    code, text, err = run(["data", "convert", str(csv), "--mapping", str(mp), "--out", str(out), "--overwrite"], capsys)
    assert code == 0 and "wrote 50 rows" in text
    assert sum(DailyDataset(out).num_rows(d) for d in DailyDataset(out).days()) == 50
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    code, _, err = run(["data", "convert", str(csv), "--mapping", str(mp), "--out", str(tmp_path / "mine"),
                        "--overwrite"], capsys)
    assert code == 2 and "not a ctrlens dataset" in err and (tmp_path / "mine" / "notes.txt").exists()
    with pytest.raises(ConvertError, match="source table not found"):
        convert_table(tmp_path / "missing.csv", MAPPING, tmp_path / "x")
    assert isinstance(Schema.load(out), Schema)
