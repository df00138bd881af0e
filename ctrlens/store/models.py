"""SQLAlchemy 2 typed models of the ctrlens store (the schema at the head migration).

Layout, keyed so that every dashboard query is an index range scan:

* ``models`` -> ``model_versions`` (checkpoint hash, schema hash, config) -> ``runs``: one row per
  *slot* (model version, day, run kind). Rewriting a day reuses its slot row; that row is also
  what concurrent writers of the same day lock (see :mod:`ctrlens.store.store`).
* ``run_results``: which result kinds a run holds, their row counts and ``Result.meta``.
* One table per result kind of :data:`ctrlens.results.COLUMNS`: primary key ``(run_id, <subject>)``,
  ``pos`` (the row's position in the frame handed over) and the contract's columns in order. Model
  version and day live on ``runs`` only: queries reach them through the small ``runs`` table, and
  the composite key keeps one run's rows together, so a time series is one point lookup per day
  and a heat map one index range per day.
* ``neuron_vectors``: per run, layer and neuron statistic, the layer's values packed in one row
  (a copy of ``neuron_stats`` for heat maps).
* ``alerts`` (one row per model x finding x subject, with its open / acknowledged / resolved
  state) and ``alert_events`` (its history); ``locks`` for the nightly job.

All timestamps are naive UTC; days are ``DATE``. JSON columns (suffix ``_json``) are text written
by :mod:`ctrlens.store.codec` (NaN and infinities survive the round trip on both backends).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from sqlalchemy import BigInteger, Boolean, Date, DateTime, Double, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy import PrimaryKeyConstraint, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ctrlens.results import COLUMNS

#: Constraint names are fixed so that migrations can name them on both backends.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _run_fk() -> Mapped[int]:
    return mapped_column(Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)


def _pos() -> Mapped[int]:
    # Row position in the frame handed over, so a Result reads back in its original order.
    return mapped_column(Integer)


# --------------------------------------------------------------------------- models and runs


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "checkpoint_hash", "schema_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(Integer, ForeignKey("models.id", ondelete="CASCADE"))
    checkpoint_hash: Mapped[str] = mapped_column(String(128))
    schema_hash: Mapped[str] = mapped_column(String(128))
    config_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class Run(Base):
    """One slot (model version, day, run kind) and the outcome of its latest attempt."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("model_version_id", "day", "run_kind"),
        Index("ix_runs_day_run_kind", "day", "run_kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(Integer, ForeignKey("model_versions.id", ondelete="CASCADE"))
    day: Mapped[dt.date] = mapped_column(Date)
    run_kind: Mapped[str] = mapped_column(String(32))  # "nightly", "analysis", ...
    status: Mapped[str] = mapped_column(String(16))  # "complete" | "failed"
    started_at: Mapped[dt.datetime] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    ctrlens_version: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(255))
    params_json: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)


class RunResult(Base):
    """Which result kinds a run holds (also when a kind had zero rows) and their ``meta``."""

    __tablename__ = "run_results"

    run_id: Mapped[int] = _run_fk()
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    n_rows: Mapped[int] = mapped_column(Integer)
    meta_json: Mapped[str] = mapped_column(Text)


# --------------------------------------------------------------------------- result tables
# Columns mirror ctrlens.results.COLUMNS exactly, in order (tests/test_store_schema.py checks it).


class FieldStats(Base):
    __tablename__ = "field_stats"

    run_id: Mapped[int] = _run_fk()
    pos: Mapped[int] = _pos()
    field: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str | None] = mapped_column(String(32))
    rows: Mapped[int | None] = mapped_column(BigInteger)
    coverage: Mapped[float | None] = mapped_column(Double)
    missing_rate: Mapped[float | None] = mapped_column(Double)
    oov_rate: Mapped[float | None] = mapped_column(Double)
    cardinality: Mapped[int | None] = mapped_column(BigInteger)
    mean: Mapped[float | None] = mapped_column(Double)
    std: Mapped[float | None] = mapped_column(Double)
    top_json: Mapped[str | None] = mapped_column(Text)
    hist_json: Mapped[str | None] = mapped_column(Text)


class NeuronStats(Base):
    __tablename__ = "neuron_stats"
    __table_args__ = {"sqlite_with_rowid": False}  # SQLite: rows clustered by (run_id, layer, neuron)

    run_id: Mapped[int] = _run_fk()
    pos: Mapped[int] = _pos()
    layer: Mapped[str] = mapped_column(String(200), primary_key=True)
    neuron: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    count: Mapped[int | None] = mapped_column(BigInteger)
    mean: Mapped[float | None] = mapped_column(Double)
    std: Mapped[float | None] = mapped_column(Double)
    min: Mapped[float | None] = mapped_column(Double)
    max: Mapped[float | None] = mapped_column(Double)
    frac_zero: Mapped[float | None] = mapped_column(Double)
    frac_saturated: Mapped[float | None] = mapped_column(Double)
    mean_click: Mapped[float | None] = mapped_column(Double)
    mean_noclick: Mapped[float | None] = mapped_column(Double)
    hist_json: Mapped[str | None] = mapped_column(Text)


class LayerStats(Base):
    __tablename__ = "layer_stats"

    run_id: Mapped[int] = _run_fk()
    pos: Mapped[int] = _pos()
    layer: Mapped[str] = mapped_column(String(200), primary_key=True)
    activation: Mapped[str | None] = mapped_column(String(32))
    n_neurons: Mapped[int | None] = mapped_column(BigInteger)
    count: Mapped[int | None] = mapped_column(BigInteger)
    dead_fraction: Mapped[float | None] = mapped_column(Double)
    saturated_fraction: Mapped[float | None] = mapped_column(Double)
    mean_abs: Mapped[float | None] = mapped_column(Double)
    edges_json: Mapped[str | None] = mapped_column(Text)
    projection_json: Mapped[str | None] = mapped_column(Text)


class EmbeddingHealth(Base):
    __tablename__ = "embedding_health"

    run_id: Mapped[int] = _run_fk()
    pos: Mapped[int] = _pos()
    table: Mapped[str] = mapped_column(String(200), primary_key=True)
    rows: Mapped[int | None] = mapped_column(BigInteger)
    dim: Mapped[int | None] = mapped_column(BigInteger)
    seen_rows: Mapped[int | None] = mapped_column(BigInteger)
    never_updated_frac: Mapped[float | None] = mapped_column(Double)
    norm_mean: Mapped[float | None] = mapped_column(Double)
    norm_p50: Mapped[float | None] = mapped_column(Double)
    norm_p99: Mapped[float | None] = mapped_column(Double)
    effective_rank: Mapped[float | None] = mapped_column(Double)
    info_abundance: Mapped[float | None] = mapped_column(Double)  # added in revision 0002
    hist_json: Mapped[str | None] = mapped_column(Text)


class ProbeResult(Base):
    __tablename__ = "probes"

    run_id: Mapped[int] = _run_fk()
    pos: Mapped[int] = _pos()
    layer: Mapped[str] = mapped_column(String(200), primary_key=True)
    head: Mapped[str] = mapped_column(String(64), primary_key=True)
    train_day: Mapped[str] = mapped_column(String(32), primary_key=True)
    eval_day: Mapped[str] = mapped_column(String(32), primary_key=True)
    n_train: Mapped[int | None] = mapped_column(BigInteger)
    n_eval: Mapped[int | None] = mapped_column(BigInteger)
    auc: Mapped[float | None] = mapped_column(Double)
    logloss: Mapped[float | None] = mapped_column(Double)
    model_auc: Mapped[float | None] = mapped_column(Double)
    gap: Mapped[float | None] = mapped_column(Double)


class Saliency(Base):
    __tablename__ = "saliency"
    # key order (head, method, field): the dashboard reads all fields of one head and method
    __table_args__ = (PrimaryKeyConstraint("run_id", "head", "method", "field"), {"sqlite_with_rowid": False})

    run_id: Mapped[int] = _run_fk()
    pos: Mapped[int] = _pos()
    field: Mapped[str] = mapped_column(String(200), primary_key=True)
    head: Mapped[str] = mapped_column(String(64), primary_key=True)
    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    rows: Mapped[int | None] = mapped_column(BigInteger)
    mean: Mapped[float | None] = mapped_column(Double)
    std: Mapped[float | None] = mapped_column(Double)
    p50: Mapped[float | None] = mapped_column(Double)
    p90: Mapped[float | None] = mapped_column(Double)
    share: Mapped[float | None] = mapped_column(Double)
    delta: Mapped[float | None] = mapped_column(Double)


class Quality(Base):
    __tablename__ = "quality"

    run_id: Mapped[int] = _run_fk()
    pos: Mapped[int] = _pos()
    head: Mapped[str] = mapped_column(String(64), primary_key=True)
    rows: Mapped[int | None] = mapped_column(BigInteger)
    positives: Mapped[int | None] = mapped_column(BigInteger)
    auc: Mapped[float | None] = mapped_column(Double)
    gauc: Mapped[float | None] = mapped_column(Double)
    logloss: Mapped[float | None] = mapped_column(Double)
    ne: Mapped[float | None] = mapped_column(Double)
    calibration: Mapped[float | None] = mapped_column(Double)
    mean_pred: Mapped[float | None] = mapped_column(Double)
    actual_rate: Mapped[float | None] = mapped_column(Double)
    score_hist_json: Mapped[str | None] = mapped_column(Text)


class Drift(Base):
    __tablename__ = "drift"
    __table_args__ = {"sqlite_with_rowid": False}

    run_id: Mapped[int] = _run_fk()
    pos: Mapped[int] = _pos()
    subject_kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject: Mapped[str] = mapped_column(String(300), primary_key=True)
    statistic: Mapped[str] = mapped_column(String(64), primary_key=True)
    method: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[float | None] = mapped_column(Double)
    reference: Mapped[float | None] = mapped_column(Double)
    threshold: Mapped[float | None] = mapped_column(Double)
    direction: Mapped[str | None] = mapped_column(String(8))
    alert: Mapped[bool | None] = mapped_column(Boolean)


class NeuronVector(Base):
    """A layer's values of one neuron statistic in one run, packed: ``data`` is a little-endian
    float64 array (statistic ``"neuron"``: the int64 neuron ids, in the same order).

    A copy of ``neuron_stats`` written in the same transaction, so that a heat map reads one row per
    day instead of one per neuron and day (365 rows for a year, whatever the layer's width).
    """

    __tablename__ = "neuron_vectors"

    run_id: Mapped[int] = _run_fk()
    layer: Mapped[str] = mapped_column(String(200), primary_key=True)
    statistic: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


#: neuron statistics packed into ``neuron_vectors`` (the numeric columns of the contract).
VECTOR_STATISTICS = tuple(c for c, t in COLUMNS["neuron_stats"].items() if t in ("int", "float") and c != "neuron")


class AlertResult(Base):
    """The alerts one run emitted, as handed over (the stateful view is :class:`Alert`)."""

    __tablename__ = "alert_results"

    run_id: Mapped[int] = _run_fk()
    pos: Mapped[int] = _pos()
    finding: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(300), primary_key=True)
    severity: Mapped[str | None] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Double)
    title: Mapped[str | None] = mapped_column(Text)
    evidence_json: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str | None] = mapped_column(Text)


#: result kind -> model class.
RESULT_MODELS: dict[str, type[Base]] = {
    "field_stats": FieldStats,
    "neuron_stats": NeuronStats,
    "layer_stats": LayerStats,
    "embedding_health": EmbeddingHealth,
    "probe": ProbeResult,
    "saliency": Saliency,
    "quality": Quality,
    "drift": Drift,
    "alert": AlertResult,
}


def contract_mismatches() -> list[str]:
    """Differences between :data:`ctrlens.results.COLUMNS` and the result tables (empty: in sync).

    Someone who adds a column to the contract must add it here and in a new migration; until then
    the store refuses to open (a clear message instead of an SQL error on the first write).
    """
    out = []
    for kind in sorted(set(COLUMNS) | set(RESULT_MODELS)):
        if kind not in RESULT_MODELS:
            out.append(f"result kind {kind!r} has no table")
            continue
        if kind not in COLUMNS:
            out.append(f"table for {kind!r} but no such result kind")
            continue
        have = [c.name for c in RESULT_MODELS[kind].__table__.columns if c.name not in ("run_id", "pos")]
        want = list(COLUMNS[kind])
        if set(have) != set(want):
            extra, missing = sorted(set(have) - set(want)), [c for c in want if c not in have]
            out.append(f"{kind}: columns missing from the store table {missing}, extra {extra}")
    return out


@lru_cache(maxsize=None)
def _key_columns(kind: str) -> tuple[str, ...]:
    table = RESULT_MODELS[kind].__table__
    return tuple(c.name for c in table.primary_key.columns if c.name != "run_id")


def key_columns(kind: str) -> list[str]:
    """The subject columns of a result kind (its primary key without ``run_id``)."""
    return list(_key_columns(kind))


# --------------------------------------------------------------------------- alerts and locks


class Alert(Base):
    """One finding about one subject of one model, followed across days and checkpoints."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("model_id", "finding", "subject"),
        Index("ix_alerts_state_severity", "state", "severity"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(Integer, ForeignKey("models.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(Integer, ForeignKey("model_versions.id", ondelete="CASCADE"))
    finding: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(300))
    severity: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Double)
    title: Mapped[str | None] = mapped_column(Text)
    evidence_json: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str | None] = mapped_column(Text)
    day: Mapped[dt.date] = mapped_column(Date)  # day of the evidence shown (the latest observation)
    first_seen: Mapped[dt.date] = mapped_column(Date)
    last_seen: Mapped[dt.date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16))  # open | acknowledged | resolved
    state_changed_by: Mapped[str | None] = mapped_column(String(200))
    state_changed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class AlertEvent(Base):
    """History of an alert: opened, reopened, acknowledged, resolved (who, when, why)."""

    __tablename__ = "alert_events"
    __table_args__ = (Index("ix_alert_events_alert_id_at", "alert_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(Integer, ForeignKey("alerts.id", ondelete="CASCADE"))
    at: Mapped[dt.datetime] = mapped_column(DateTime)
    event: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    day: Mapped[dt.date | None] = mapped_column(Date)
    note: Mapped[str | None] = mapped_column(Text)


class Lock(Base):
    """A named database-level lock (``nightly:<model>:<day>``) with an expiry for stale holders."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(300), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[dt.datetime] = mapped_column(DateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


class AlertDelivery(Base):
    """One attempt to deliver one alert to one notification channel (``ctrlens.notify``).

    Keyed on what survives a forced rerun -- channel, model name, finding, subject and ``episode``
    (how many times the alert was reopened after a resolution) -- not on the alert row's id, which a
    rewrite may change. ``(key, attempt)`` is unique: two senders cannot both claim an attempt.
    ``status``: ``sending`` (claimed, in flight), ``delivered`` or ``failed`` (retried from
    ``next_attempt_at`` on).
    """

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        UniqueConstraint("channel", "model", "finding", "subject", "episode", "attempt", name="uq_alert_deliveries_attempt"),
        Index("ix_alert_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    finding: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(300))
    episode: Mapped[int] = mapped_column(Integer)
    alert_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("alerts.id", ondelete="SET NULL"))
    day: Mapped[dt.date] = mapped_column(Date)  # the alert's evidence day when sent
    severity: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
