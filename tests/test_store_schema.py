"""The store's tables mirror the result contract (no database needed)."""

from __future__ import annotations

import pytest
from sqlalchemy import BigInteger, Boolean, Double, String, Text

from ctrlens.results import COLUMNS
from ctrlens.store.codec import frame_to_rows, parse_day
from ctrlens.store.engine import normalize_url
from ctrlens.store.models import RESULT_MODELS, contract_mismatches, key_columns
from ctrlens.errors import InputError

_SQL_TYPE = {"str": String, "int": BigInteger, "float": Double, "bool": Boolean, "json": Text}


def test_every_result_kind_has_a_table_with_exactly_its_columns() -> None:
    assert contract_mismatches() == []
    for kind, spec in COLUMNS.items():
        table = RESULT_MODELS[kind].__table__
        cols = {c.name: c for c in table.columns}
        assert set(cols) == {"run_id", "pos", *spec}, kind
        for name, t in spec.items():
            col_type = cols[name].type
            if name in key_columns(kind) and t == "int":
                continue  # subject ids (neuron) are plain INTEGER
            assert isinstance(col_type, _SQL_TYPE[t]), (kind, name, col_type)
        assert [c.name for c in table.primary_key.columns][0] == "run_id"


def test_url_normalisation() -> None:
    assert normalize_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h:5433/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("runs/x.sqlite").database == "runs/x.sqlite"
    with pytest.raises(InputError, match="not supported"):
        normalize_url("mysql://u@h/db")
    with pytest.raises(InputError, match="empty"):
        normalize_url("  ")


def test_bad_frames_are_named() -> None:
    import pandas as pd

    from store_fixtures import make_results

    ns = next(r for r in make_results(0) if r.kind == "neuron_stats").frame
    bad = ns.copy()
    bad["count"] = bad["count"].astype(object)
    bad.loc[2, "count"] = "many"
    with pytest.raises(InputError, match=r"'neuron_stats', column 'count', row 2: 'many'"):
        frame_to_rows("neuron_stats", bad)
    dup = pd.concat([ns, ns.iloc[[0]]], ignore_index=True)
    with pytest.raises(InputError, match=r"rows 0 and 10 are for the same subject \(layer='mlp.0', neuron=0\)"):
        frame_to_rows("neuron_stats", dup)
    with pytest.raises(InputError, match="YYYY-MM-DD"):
        parse_day("2026-1-5")
