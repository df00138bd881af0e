"""URL parameters: syntax, validation against a store, links; access-rule helpers."""

from __future__ import annotations

import pytest

from ctrlens.dashboard.auth import check_bind, is_loopback
from ctrlens.dashboard.pages.common import Needs, history, resolve
from ctrlens.dashboard.params import Compare, ParamError, Selection, parse_query, parse_syntax, to_query
from ctrlens.errors import InputError

from dashboard_fixtures import DAYS, dashboard_db, dashboard_db_template  # noqa: F401


def test_query_round_trip_and_unknown_names_ignored():
    sel = parse_syntax(parse_query("?model=din&day=2026-01-05&layer=mlp.1&neuron=3&compare=v2%402026-01-03&window=all&token=x&utm=y"))
    assert sel == Selection(model="din", day="2026-01-05", layer="mlp.1", neuron=3, compare=Compare(2, "2026-01-03"), window=None)
    assert parse_syntax(parse_query(to_query(sel))) == sel
    assert to_query(Selection(model="din")) == "?model=din"  # the default window stays implicit
    assert to_query({"field": "a b&c"}) == "?field=a+b%26c"


@pytest.mark.parametrize("text,expected", [("2026-01-05", Compare(None, "2026-01-05")), ("v3", Compare(3, None)),
                                           ("v3@2026-01-05", Compare(3, "2026-01-05"))])  # fmt: skip
def test_compare_forms(text, expected):
    assert parse_syntax({"compare": text}).compare == expected
    assert expected.text() == text


@pytest.mark.parametrize("raw,message", [
    ({"day": "05/01/2026"}, "day='05/01/2026' is not a date: expected YYYY-MM-DD"),
    ({"neuron": "-1"}, "neuron='-1' is not a number"),
    ({"alert": "1e9"}, "alert='1e9' is not a number"),
    ({"window": "0"}, "window='0': expected a number of days"),
    ({"compare": "v"}, "compare='v': expected a day"),
])  # fmt: skip
def test_syntax_errors_name_the_parameter(raw, message):
    with pytest.raises(ParamError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        parse_syntax(raw)
    assert isinstance(e.value, InputError)


def test_overlong_values_are_refused_and_quoted_short():
    with pytest.raises(ParamError, match="too long"):
        parse_query("model=" + "x" * 500)
    with pytest.raises(ParamError) as e:
        parse_syntax({"day": "y" * 150})
    assert len(str(e.value)) < 160


def test_resolve_fills_defaults_from_the_store(dashboard_db):
    from ctrlens.dashboard.data import DashboardData

    data = DashboardData(dashboard_db)
    sel = resolve(Selection(), data, Needs(layer=True, neuron=True, field=True, head=True))
    assert sel.model == "din" and sel.day == DAYS[-1] and sel.layer == "attention.hist_item_id.0" and sel.neuron == 0
    assert sel.field == "user_id" and sel.head == "ctr"
    assert resolve(Selection(model="esmm", head="cvr"), data, Needs(head=True)).head == "cvr"
    assert resolve(Selection(), data, Needs(model=False, day=False)).model is None  # /alerts: every model
    with pytest.raises(ParamError, match="No results for any model on 2031-01-01"):
        resolve(Selection(day="2031-01-01"), data, Needs(model=False, day=False))
    data.close()


def test_history_window_ends_on_the_day_looked_at():
    assert history("2026-03-31", 90) == ("2026-01-01", "2026-03-31")
    assert history("2026-03-31", "all") == (None, "2026-03-31")
    assert history(None, 30) is None


def test_bind_rules():
    check_bind("127.0.0.1", token=None, basic_auth=None)
    check_bind("::1", token=None, basic_auth=None)
    check_bind("0.0.0.0", token="long-enough-token", basic_auth=None)
    check_bind("10.0.0.5", token=None, basic_auth="bob:pw")
    for kw, msg in (({"token": None, "basic_auth": None}, "refusing to serve"), ({"token": "short", "basic_auth": None}, "at least 8"),
                    ({"token": "long-enough-token", "basic_auth": "a:b"}, "not both")):  # fmt: skip
        with pytest.raises(InputError, match=msg):
            check_bind("0.0.0.0", **kw)
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and is_loopback("[::1]") and not is_loopback("example.com")
