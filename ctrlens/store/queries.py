"""Read side of the store: pandas frames for the dashboard, reports and the nightly job.

Every query runs on one connection (one snapshot) and touches result tables only through the
primary key ``(run_id, subject...)``: the runs to read are picked first from the small ``runs``
table (:func:`chosen_runs`), then their rows are fetched with index lookups.

Conventions: days come back as ``"YYYY-MM-DD"`` strings; float NULL as NaN; JSON columns decoded.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence, Union

import numpy as np
import pandas as pd
from sqlalchemy import Connection, String, and_, case, exists, false, func, literal_column, select, type_coerce
from sqlalchemy.sql import Subquery

from ctrlens.errors import InputError
from ctrlens.results import COLUMNS, Result
from ctrlens.store import migrate
from ctrlens.store.alerts import SEVERITY_RANK, STATES
from ctrlens.store.codec import check_run_kind, loads, parse_day, rows_to_frame
from ctrlens.store.models import (
    RESULT_MODELS,
    VECTOR_STATISTICS,
    Alert,
    AlertEvent,
    AlertResult,
    Model,
    ModelVersion,
    NeuronVector,
    Run,
    RunResult,
    key_columns,
)

#: None (all days), N (last N days), a day, (start, end) inclusive (None = open), or a list of days.
DaysArg = Union[None, int, str, dt.date, tuple, list, set]

_r = Run.__table__
_mv = ModelVersion.__table__
_m = Model.__table__
_rr = RunResult.__table__


def _kind(kind: str) -> str:
    if kind not in COLUMNS:
        raise InputError(f"result kind {kind!r} unknown; known: {sorted(COLUMNS)}")
    return kind


def _iso(d: Any) -> str | None:
    return None if d is None else d.isoformat()


def _day_out(conn: Connection, col: Any) -> Any:
    """A day column as selected: on SQLite the stored ISO text as is (no per-row date parsing)."""
    return type_coerce(col, String) if conn.dialect.name == "sqlite" else col


def _day_strs(values: Sequence[Any]) -> list[str]:
    return [v if isinstance(v, str) else v.isoformat() for v in values]


def _raw_rows(conn: Connection, stmt: Any) -> list[tuple[Any, ...]]:
    """All rows as the driver returns them (no per-row SQLAlchemy Row objects or result
    processing: 3-4x faster on large results). Callers convert types themselves (SQLite: days as
    ISO text, booleans as 0/1)."""
    res = conn.execute(stmt)
    try:
        return res.cursor.fetchall()
    finally:
        res.close()


def _frame(rows: Sequence[Any], columns: Sequence[str]) -> pd.DataFrame:
    # plain tuples: pandas probes each record for namedtuple fields, which is slow on SQLAlchemy rows
    return pd.DataFrame.from_records([tuple(r) for r in rows], columns=list(columns))


def _has_results() -> Any:
    """A run is readable once a write completed in it (a failed first attempt holds nothing)."""
    return (_r.c.status == "complete") | exists(select(literal_column("1")).where(_rr.c.run_id == _r.c.id))


def _selection(model: str | Sequence[str] | None, version: int | None, run_kind: str | None) -> list[Any]:
    conds: list[Any] = []
    if model is not None:
        conds.append(_m.c.name.in_([model] if isinstance(model, str) else list(model)))
    if version is not None:
        conds.append(_r.c.model_version_id == int(version))
    if run_kind is not None:
        conds.append(_r.c.run_kind == check_run_kind(run_kind))
    return conds


def _runs_from() -> Any:
    return _r.join(_mv, _mv.c.id == _r.c.model_version_id).join(_m, _m.c.id == _mv.c.model_id)


def _day_conds(conn: Connection, days: DaysArg, base: list[Any]) -> list[Any]:
    """Conditions on ``runs.day`` for a :data:`DaysArg` (N days: relative to the latest selected day)."""
    col = _r.c.day
    if days is None:
        return []
    if isinstance(days, bool):
        raise InputError(f"days={days!r}: expected None, a number of days, a day, (start, end) or a list of days")
    if isinstance(days, (int, np.integer)):
        if days < 1:
            raise InputError(f"days={days}: the number of most recent days must be at least 1")
        last = conn.execute(select(func.max(col)).select_from(_runs_from()).where(*base)).scalar()
        if last is None:
            return [false()]
        return [col >= last - dt.timedelta(days=int(days) - 1)]
    if isinstance(days, (str, dt.date)):
        return [col == parse_day(days)]
    if isinstance(days, tuple) and len(days) == 2:
        out = []
        if days[0] is not None:
            out.append(col >= parse_day(days[0], "first day"))
        if days[1] is not None:
            out.append(col <= parse_day(days[1], "last day"))
        return out
    if isinstance(days, (list, tuple, set, frozenset, pd.Index, np.ndarray)):
        return [col.in_(sorted({parse_day(d) for d in days}))]
    raise InputError(f"days={days!r}: expected None, a number of days, a day, (start, end) or a list of days")


def chosen_runs(conn: Connection, kind: str | None, *, model: str | Sequence[str] | None = None, version: int | None = None,
                days: DaysArg = None, run_kind: str | None = None) -> Subquery:  # fmt: skip
    """The run to read per (model, day) -- per (version, day) when ``version`` is given: among runs
    holding results of ``kind``, the one finished last. Columns: run_id, day, run_kind, version_id,
    model."""
    base = _selection(model, version, run_kind)
    conds = base + _day_conds(conn, days, base)
    part = [_r.c.model_version_id, _r.c.day] if version is not None else [_mv.c.model_id, _r.c.day]
    rn = func.row_number().over(partition_by=part, order_by=(_r.c.finished_at.desc(), _r.c.id.desc()))
    frm = _runs_from()
    if kind is not None:
        frm = frm.join(_rr, and_(_rr.c.run_id == _r.c.id, _rr.c.kind == kind))
    else:
        conds.append(_has_results())
    ranked = (
        select(_r.c.id.label("run_id"), _r.c.day, _r.c.run_kind, _r.c.model_version_id.label("version_id"),
               _m.c.name.label("model"), rn.label("rn"))  # fmt: skip
        .select_from(frm)
        .where(*conds)
        .subquery("ranked")
    )
    c = ranked.c
    return select(c.run_id, c.day, c.run_kind, c.version_id, c.model).where(c.rn == 1).subquery("chosen")


# ------------------------------------------------------------------------------ catalogue


def models(conn: Connection) -> pd.DataFrame:
    q = (
        select(_m.c.id, _m.c.name, func.count(func.distinct(_mv.c.id)), func.max(_mv.c.id), func.min(_r.c.day),
               func.max(_r.c.day), func.count(func.distinct(_r.c.day)))  # fmt: skip
        .select_from(_m.outerjoin(_mv, _mv.c.model_id == _m.c.id).outerjoin(_r, _r.c.model_version_id == _mv.c.id))
        .group_by(_m.c.id, _m.c.name)
        .order_by(_m.c.name)
    )
    rows = [(i, n, nv, lv, _iso(a), _iso(b), nd) for i, n, nv, lv, a, b, nd in conn.execute(q)]
    return _frame(rows, ["model_id", "model", "n_versions", "latest_version_id", "first_day", "last_day", "n_days"])


def versions(conn: Connection, model: str | None = None) -> pd.DataFrame:
    q = (
        select(_mv.c.id, _m.c.name, _mv.c.checkpoint_hash, _mv.c.schema_hash, _mv.c.config_json, _mv.c.created_at,
               func.min(_r.c.day), func.max(_r.c.day))  # fmt: skip
        .select_from(_mv.join(_m, _m.c.id == _mv.c.model_id).outerjoin(_r, _r.c.model_version_id == _mv.c.id))
        .where(*([_m.c.name == model] if model is not None else []))
        .group_by(_mv.c.id, _m.c.name, _mv.c.checkpoint_hash, _mv.c.schema_hash, _mv.c.config_json, _mv.c.created_at)
        .order_by(_m.c.name, _mv.c.id)
    )
    rows = [(i, n, ck, sh, loads(cfg), ca, _iso(a), _iso(b)) for i, n, ck, sh, cfg, ca, a, b in conn.execute(q)]
    cols = ["version_id", "model", "checkpoint_hash", "schema_hash", "config", "created_at", "first_day", "last_day"]
    return _frame(rows, cols)


def version_id(conn: Connection, model: str, checkpoint_hash: str, schema_hash: str) -> int | None:
    q = select(_mv.c.id).select_from(_mv.join(_m, _m.c.id == _mv.c.model_id)).where(
        _m.c.name == model, _mv.c.checkpoint_hash == checkpoint_hash, _mv.c.schema_hash == schema_hash
    )
    return conn.execute(q).scalar_one_or_none()


def days(conn: Connection, *, model: str | None = None, version: int | None = None, run_kind: str | None = None,
         kind: str | None = None, last: bool = False) -> list[str]:  # fmt: skip
    conds = _selection(model, version, run_kind)
    frm = _runs_from()
    if kind is not None:
        frm = frm.join(_rr, and_(_rr.c.run_id == _r.c.id, _rr.c.kind == _kind(kind)))
    else:
        conds.append(_has_results())
    if last:
        d = conn.execute(select(func.max(_r.c.day)).select_from(frm).where(*conds)).scalar()
        return [] if d is None else [d.isoformat()]
    q = select(_r.c.day).select_from(frm).where(*conds).distinct().order_by(_r.c.day)
    return [d.isoformat() for d in conn.execute(q).scalars()]


def latest_days(conn: Connection, *, run_kind: str | None = None) -> pd.DataFrame:
    rn = func.row_number().over(partition_by=_mv.c.model_id, order_by=(_r.c.day.desc(), _r.c.finished_at.desc(), _r.c.id.desc()))
    ranked = (
        select(_m.c.name.label("model"), _r.c.day, _r.c.model_version_id, rn.label("rn"))
        .select_from(_runs_from())
        .where(*_selection(None, None, run_kind), _has_results())
        .subquery()
    )
    q = select(ranked.c.model, ranked.c.day, ranked.c.model_version_id).where(ranked.c.rn == 1).order_by(ranked.c.model)
    return _frame([(m, _iso(d), v) for m, d, v in conn.execute(q)], ["model", "day", "version_id"])


def runs(conn: Connection, *, model: str | None = None, version: int | None = None, days: DaysArg = None,
         run_kind: str | None = None) -> pd.DataFrame:  # fmt: skip
    base = _selection(model, version, run_kind)
    q = (
        select(_r.c.id, _m.c.name, _r.c.model_version_id, _r.c.day, _r.c.run_kind, _r.c.status, _r.c.started_at,
               _r.c.finished_at, _r.c.ctrlens_version, _r.c.host, _r.c.params_json, _r.c.error)  # fmt: skip
        .select_from(_runs_from())
        .where(*base, *_day_conds(conn, days, base))
        .order_by(_m.c.name, _r.c.day, _r.c.run_kind)
    )
    rows = [list(r) for r in conn.execute(q)]
    kinds: dict[int, list[str]] = {}
    if rows:
        ids = [r[0] for r in rows]
        for run_id, kind in conn.execute(select(_rr.c.run_id, _rr.c.kind).where(_rr.c.run_id.in_(ids)).order_by(_rr.c.kind)):
            kinds.setdefault(run_id, []).append(kind)
    for r in rows:
        r[3] = _iso(r[3])
        r[10] = loads(r[10])
        r.append(kinds.get(r[0], []))
    cols = ["run_id", "model", "version_id", "day", "run_kind", "status", "started_at", "finished_at", "ctrlens_version",
            "host", "params", "error", "kinds"]  # fmt: skip
    return _frame(rows, cols)


# ------------------------------------------------------------------------------ results


def read(conn: Connection, version: int, day: Any, kind: str, *, run_kind: str | None = None) -> Result | None:
    return read_kinds(conn, version, day, [_kind(kind)], run_kind=run_kind).get(kind)


def read_kinds(conn: Connection, version: int, day: Any, kinds: Sequence[str], *, run_kind: str | None = None) -> dict[str, Result]:
    """The Results of several kinds of one (version, day): per kind, the run finished last that holds it."""
    conds = [_r.c.model_version_id == int(version), _r.c.day == parse_day(day), _rr.c.kind.in_(list(kinds))]
    if run_kind is not None:
        conds.append(_r.c.run_kind == check_run_kind(run_kind))
    q = (
        select(_rr.c.kind, _rr.c.run_id, _rr.c.meta_json)
        .select_from(_r.join(_rr, _rr.c.run_id == _r.c.id))
        .where(*conds)
        .order_by(_r.c.finished_at, _r.c.id)  # the last one per kind wins below
    )
    chosen = {kind: (run_id, meta) for kind, run_id, meta in conn.execute(q)}
    out: dict[str, Result] = {}
    for kind in kinds:
        if kind not in chosen:
            continue
        run_id, meta = chosen[kind]
        table = RESULT_MODELS[kind].__table__
        rows = _raw_rows(conn, select(*[table.c[c] for c in COLUMNS[kind]]).where(table.c.run_id == run_id).order_by(table.c.pos))
        out[kind] = Result(kind, rows_to_frame(kind, rows), loads(meta))
    return out


def _check_columns(kind: str, names: Sequence[str], what: str, allow_keys: bool, allow_json: bool = True) -> None:
    spec = COLUMNS[kind]
    keys = set(key_columns(kind))
    ok = [c for c in spec if (allow_keys or c not in keys) and (allow_json or spec[c] != "json")]
    bad = [n for n in names if n not in ok]
    if bad:
        raise InputError(f"{what} {bad} not in result {kind!r}; expected one of {ok}")


def series(conn: Connection, kind: str, statistic: str | Sequence[str], *, model: str | None = None, version: int | None = None,
           days: DaysArg = None, run_kind: str | None = None, subject: dict[str, Any] | None = None) -> pd.DataFrame:  # fmt: skip
    _kind(kind)
    stats = [statistic] if isinstance(statistic, str) else list(statistic)
    if not stats:
        raise InputError("series: name at least one statistic")
    _check_columns(kind, stats, "statistic", allow_keys=False)
    subject = subject or {}
    _check_columns(kind, list(subject), "subject filter", allow_keys=True, allow_json=False)
    table = RESULT_MODELS[kind].__table__
    keys = key_columns(kind)
    chosen = chosen_runs(conn, kind, model=model, version=version, days=days, run_kind=run_kind)
    conds = []
    for col, val in subject.items():
        if isinstance(val, (list, tuple, set, frozenset, np.ndarray, pd.Index)):
            conds.append(table.c[col].in_([v.item() if isinstance(v, np.generic) else v for v in val]))
        else:
            conds.append(table.c[col] == (val.item() if isinstance(val, np.generic) else val))
    # The runs first (one row per day), then the rows of those runs with only their own columns:
    # day / model / version / run kind are attached in numpy, not carried by every row from SQL.
    runs_rows = _raw_rows(conn, select(chosen.c.run_id, _day_out(conn, chosen.c.day), chosen.c.model, chosen.c.version_id,
                                       chosen.c.run_kind))  # fmt: skip
    cols = ["day", "model", "version_id", "run_kind", *keys, *stats]
    if not runs_rows:
        return pd.DataFrame(columns=cols)
    run_ids = np.array([r[0] for r in runs_rows], dtype=np.int64)
    q = select(table.c.run_id, *[table.c[k] for k in keys], *[table.c[s] for s in stats]).where(
        table.c.run_id.in_(run_ids.tolist()), *conds
    )
    rows = _raw_rows(conn, q)
    data = _frame(rows, ["run_id", *keys, *stats])
    order = np.argsort(run_ids)
    at = order[np.searchsorted(run_ids, data["run_id"].to_numpy(dtype=np.int64), sorter=order)]
    info = list(zip(*runs_rows))
    out = pd.DataFrame({
        "day": np.array(_day_strs(info[1]), dtype=object)[at], "model": np.array(info[2], dtype=object)[at],
        "version_id": np.array(info[3], dtype=np.int64)[at], "run_kind": np.array(info[4], dtype=object)[at],
    })  # fmt: skip
    for c in [*keys, *stats]:
        out[c] = data[c].to_numpy()
    out = out.sort_values(["model", *keys, "day"], kind="stable", ignore_index=True)
    for s in stats:
        t = COLUMNS[kind][s]
        if t == "json":
            out[s] = [loads(v) for v in out[s]]
        elif t == "float":
            out[s] = out[s].astype(float)
        elif t == "bool" and not out[s].isna().any():
            out[s] = out[s].astype(bool)
    return out


def heatmap(conn: Connection, layer: str, statistic: str, *, model: str | None = None, version: int | None = None,
            days: DaysArg = None, run_kind: str | None = None) -> pd.DataFrame:  # fmt: skip
    """Neurons x days. One query reads, per chosen run, the layer's packed neuron ids and values
    (``neuron_vectors``: one row per day, whatever the layer's width); numpy scatters them into the
    matrix (no pivot over neurons x days rows). Values are exact."""
    if model is None and version is None:
        raise InputError("heatmap: name a model or a version")
    if statistic not in VECTOR_STATISTICS:
        raise InputError(f"heatmap statistic {statistic!r}: expected one of {list(VECTOR_STATISTICS)}")
    v, ids = NeuronVector.__table__.alias("v"), NeuronVector.__table__.alias("ids")
    chosen = chosen_runs(conn, "neuron_stats", model=model, version=version, days=days, run_kind=run_kind)
    q = (
        select(_day_out(conn, chosen.c.day), ids.c.data, v.c.data)
        .select_from(
            chosen.join(ids, and_(ids.c.run_id == chosen.c.run_id, ids.c.layer == layer, ids.c.statistic == "neuron"))
            .outerjoin(v, and_(v.c.run_id == chosen.c.run_id, v.c.layer == layer, v.c.statistic == statistic))
        )
        .order_by(chosen.c.day)
    )
    rows = _raw_rows(conn, q)
    idx = [np.frombuffer(n, dtype="<i8") for _, n, _ in rows]
    vals = [np.frombuffer(x, dtype="<f8") if x is not None else np.full(len(i), np.nan) for (_, _, x), i in zip(rows, idx)]
    day_labels = _day_strs([d for d, _, _ in rows])
    neurons = np.unique(np.concatenate(idx)) if idx else np.zeros(0, dtype=np.int64)
    mat = np.full((len(neurons), len(day_labels)), np.nan)
    for j, (i, x) in enumerate(zip(idx, vals)):
        mat[np.searchsorted(neurons, i), j] = x
    return pd.DataFrame(mat, index=pd.Index(neurons.astype(np.int64), name="neuron"), columns=pd.Index(day_labels, name="day"))


# ------------------------------------------------------------------------------ alerts and health


def _severity_rank(col: Any) -> Any:
    return case(*[(col == s, r) for s, r in SEVERITY_RANK.items()], else_=0)


def alerts(conn: Connection, *, model: str | None = None, states: Sequence[str] | None = None,
           severity: str | Sequence[str] | None = None, limit: int | None = None, alert_id: int | None = None) -> pd.DataFrame:  # fmt: skip
    a = Alert.__table__
    conds: list[Any] = []
    if model is not None:
        conds.append(_m.c.name == model)
    if states is not None:
        bad = [s for s in states if s not in STATES]
        if bad:
            raise InputError(f"alert states {bad}: expected some of {list(STATES)}")
        conds.append(a.c.state.in_(list(states)))
    if severity is not None:
        sev = [severity] if isinstance(severity, str) else list(severity)
        bad = [s for s in sev if s not in SEVERITY_RANK]
        if bad:
            raise InputError(f"alert severity {bad}: expected some of {list(SEVERITY_RANK)}")
        conds.append(a.c.severity.in_(sev))
    if alert_id is not None:
        conds.append(a.c.id == alert_id)
    q = (
        select(a.c.id, _m.c.name, a.c.model_version_id, a.c.finding, a.c.subject, a.c.severity, a.c.score, a.c.title,
               a.c.evidence_json, a.c.action, a.c.state, a.c.day, a.c.first_seen, a.c.last_seen, a.c.state_changed_by,
               a.c.state_changed_at, a.c.created_at)  # fmt: skip
        .select_from(a.join(_m, _m.c.id == a.c.model_id))
        .where(*conds)
        .order_by(_severity_rank(a.c.severity).desc(), a.c.score.desc().nulls_last(), a.c.last_seen.desc(), a.c.id)
    )
    if limit is not None:
        q = q.limit(int(limit))
    rows = []
    for r in conn.execute(q):
        r = list(r)
        r[8] = loads(r[8])
        r[11], r[12], r[13] = _iso(r[11]), _iso(r[12]), _iso(r[13])
        rows.append(r)
    cols = ["alert_id", "model", "version_id", "finding", "subject", "severity", "score", "title", "evidence", "action",
            "state", "day", "first_seen", "last_seen", "state_changed_by", "state_changed_at", "created_at"]  # fmt: skip
    out = _frame(rows, cols)
    out["score"] = out["score"].astype(float)
    return out


def alert_events(conn: Connection, *, alert_id: int | None = None, model: str | None = None) -> pd.DataFrame:
    e, a = AlertEvent.__table__, Alert.__table__
    conds = []
    if alert_id is not None:
        conds.append(e.c.alert_id == int(alert_id))
    if model is not None:
        conds.append(_m.c.name == model)
    q = (
        select(e.c.id, e.c.alert_id, _m.c.name, a.c.finding, a.c.subject, e.c.at, e.c.event, e.c.from_state, e.c.to_state,
               e.c.actor, e.c.day, e.c.note)  # fmt: skip
        .select_from(e.join(a, a.c.id == e.c.alert_id).join(_m, _m.c.id == a.c.model_id))
        .where(*conds)
        .order_by(e.c.at, e.c.id)
    )
    rows = [list(r[:10]) + [_iso(r[10]), r[11]] for r in conn.execute(q)]
    cols = ["event_id", "alert_id", "model", "finding", "subject", "at", "event", "from_state", "to_state", "actor", "day", "note"]
    return _frame(rows, cols)


_SEVERITY_NAME = {0: "ok", **{r: s for s, r in SEVERITY_RANK.items()}}


def health_matrix(conn: Connection, *, models: Sequence[str] | None = None, days: DaysArg = None, run_kind: str | None = None,
                  numeric: bool = False) -> pd.DataFrame:  # fmt: skip
    """Models x days of the worst severity among the alerts emitted that day (one grouped query)."""
    ar = AlertResult.__table__
    base = _selection(list(models) if models is not None else None, None, run_kind)
    conds = base + _day_conds(conn, days, base) + [_has_results()]
    worst = func.max(_severity_rank(ar.c.severity))
    q = (
        select(_m.c.name, _day_out(conn, _r.c.day), worst)
        .select_from(_runs_from().outerjoin(ar, ar.c.run_id == _r.c.id))
        .where(*conds)
        .group_by(_m.c.name, _r.c.day)
    )
    rows = conn.execute(q).fetchall()
    names = sorted({r[0] for r in rows})
    day_labels = sorted(set(_day_strs([r[1] for r in rows])))
    mat = np.full((len(names), len(day_labels)), np.nan)
    mi, di = {m: i for i, m in enumerate(names)}, {d: j for j, d in enumerate(day_labels)}
    for m, d, w in rows:
        mat[mi[m], di[d if isinstance(d, str) else d.isoformat()]] = 0 if w is None else w
    index, columns = pd.Index(names, name="model"), pd.Index(day_labels, name="day")
    if numeric:
        return pd.DataFrame(mat, index=index, columns=columns)
    labels = np.array([_SEVERITY_NAME[i] for i in range(4)], dtype=object)
    text = np.where(np.isnan(mat), None, labels[np.nan_to_num(mat).astype(int)])
    return pd.DataFrame(text, index=index, columns=columns, dtype=object)


# ------------------------------------------------------------------------------ info


def data_version(conn: Connection) -> str:
    """A token that changes whenever a run is written (or rewritten) or an alert changes state: two
    index lookups, for clients that poll for news (the dashboard)."""
    n, last = conn.execute(select(func.count(_r.c.id), func.max(_r.c.finished_at))).one()
    event = conn.execute(select(func.max(AlertEvent.__table__.c.id))).scalar()
    return f"{n}:{last}:{event}"


def info(conn: Connection) -> dict[str, Any]:
    state = migrate.revision_state(conn)
    counts = {}
    for table in sorted(RESULT_MODELS[k].__table__.name for k in RESULT_MODELS):
        counts[table] = conn.execute(select(func.count()).select_from(RESULT_MODELS_BY_TABLE[table])).scalar_one()
    for t in (_m, _mv, _r, Alert.__table__, AlertEvent.__table__):
        counts[t.name] = conn.execute(select(func.count()).select_from(t)).scalar_one()
    d = conn.execute(select(func.min(_r.c.day), func.max(_r.c.day))).one()
    return {
        "revision": state.current,
        "head": state.head,
        "status": state.status,
        "first_day": _iso(d[0]),
        "last_day": _iso(d[1]),
        "rows": counts,
    }


RESULT_MODELS_BY_TABLE = {m.__table__.name: m.__table__ for m in RESULT_MODELS.values()}
