"""Initial schema: models, versions, runs, one table per result kind, alerts.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

A frozen snapshot: it does not import ctrlens.store.models (which describes the head revision).
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

S, I, B, D, T, BOOL = sa.String, sa.Integer, sa.BigInteger, sa.Double, sa.Text, sa.Boolean


def _result_table(name: str, keys: list[tuple[str, sa.types.TypeEngine]], values: list[tuple[str, sa.types.TypeEngine]],
                  clustered: bool = False) -> None:  # fmt: skip
    """A result table: ``run_id`` + subject keys (primary key), ``pos``, value columns; cascades on run
    delete. ``clustered``: on SQLite a WITHOUT ROWID table (the big tables: one B-tree, not two)."""
    op.create_table(
        name,
        sa.Column("run_id", I(), nullable=False),
        *[sa.Column(k, t, nullable=False, autoincrement=False) for k, t in keys],
        sa.Column("pos", I(), nullable=False),
        *[sa.Column(v, t, nullable=True) for v, t in values],
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=f"fk_{name}_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", *[k for k, _ in keys], name=f"pk_{name}"),
        **({"sqlite_with_rowid": False} if clustered else {}),
    )


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", I(), nullable=False),
        sa.Column("name", S(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", I(), nullable=False),
        sa.Column("model_id", I(), nullable=False),
        sa.Column("checkpoint_hash", S(128), nullable=False),
        sa.Column("schema_hash", S(128), nullable=False),
        sa.Column("config_json", T(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_model_versions_model_id_models", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint(
            "model_id", "checkpoint_hash", "schema_hash", name="uq_model_versions_model_id_checkpoint_hash_schema_hash"
        ),
    )
    op.create_table(
        "runs",
        sa.Column("id", I(), nullable=False),
        sa.Column("model_version_id", I(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("run_kind", S(32), nullable=False),
        sa.Column("status", S(16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("ctrlens_version", S(32), nullable=False),
        sa.Column("host", S(255), nullable=False),
        sa.Column("params_json", T(), nullable=False),
        sa.Column("error", T(), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_versions.id"], name="fk_runs_model_version_id_model_versions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.UniqueConstraint("model_version_id", "day", "run_kind", name="uq_runs_model_version_id_day_run_kind"),
    )
    op.create_table(
        "run_results",
        sa.Column("run_id", I(), nullable=False),
        sa.Column("kind", S(32), nullable=False),
        sa.Column("n_rows", I(), nullable=False),
        sa.Column("meta_json", T(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_run_results_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "kind", name="pk_run_results"),
    )

    _result_table(
        "field_stats",
        [("field", S(200))],
        [("kind", S(32)), ("rows", B()), ("coverage", D()), ("missing_rate", D()), ("oov_rate", D()),
         ("cardinality", B()), ("mean", D()), ("std", D()), ("top_json", T()), ("hist_json", T())],
    )  # fmt: skip
    _result_table(
        "neuron_stats",
        [("layer", S(200)), ("neuron", I())],
        [("count", B()), ("mean", D()), ("std", D()), ("min", D()), ("max", D()), ("frac_zero", D()),
         ("frac_saturated", D()), ("mean_click", D()), ("mean_noclick", D()), ("hist_json", T())],
        clustered=True,
    )  # fmt: skip
    _result_table(
        "layer_stats",
        [("layer", S(200))],
        [("activation", S(32)), ("n_neurons", B()), ("count", B()), ("dead_fraction", D()),
         ("saturated_fraction", D()), ("mean_abs", D()), ("edges_json", T()), ("projection_json", T())],
    )  # fmt: skip
    _result_table(
        "embedding_health",
        [("table", S(200))],
        [("rows", B()), ("dim", B()), ("seen_rows", B()), ("never_updated_frac", D()), ("norm_mean", D()),
         ("norm_p50", D()), ("norm_p99", D()), ("effective_rank", D()), ("hist_json", T())],
    )  # fmt: skip
    _result_table(
        "probes",
        [("layer", S(200)), ("head", S(64)), ("train_day", S(32)), ("eval_day", S(32))],
        [("n_train", B()), ("n_eval", B()), ("auc", D()), ("logloss", D()), ("model_auc", D()), ("gap", D())],
    )
    _result_table(
        "saliency",
        [("head", S(64)), ("method", S(64)), ("field", S(200))],  # the dashboard reads all fields of one head+method
        [("rows", B()), ("mean", D()), ("std", D()), ("p50", D()), ("p90", D()), ("share", D()), ("delta", D())],
        clustered=True,
    )
    _result_table(
        "quality",
        [("head", S(64))],
        [("rows", B()), ("positives", B()), ("auc", D()), ("gauc", D()), ("logloss", D()), ("ne", D()),
         ("calibration", D()), ("mean_pred", D()), ("actual_rate", D()), ("score_hist_json", T())],
    )  # fmt: skip
    _result_table(
        "drift",
        [("subject_kind", S(32)), ("subject", S(300)), ("statistic", S(64)), ("method", S(200))],
        [("value", D()), ("reference", D()), ("threshold", D()), ("direction", S(8)), ("alert", BOOL())],
        clustered=True,
    )
    _result_table(
        "alert_results",
        [("finding", S(64)), ("subject", S(300))],
        [("severity", S(16)), ("score", D()), ("title", T()), ("evidence_json", T()), ("action", T())],
    )

    op.create_table(
        "alerts",
        sa.Column("id", I(), nullable=False),
        sa.Column("model_id", I(), nullable=False),
        sa.Column("model_version_id", I(), nullable=False),
        sa.Column("finding", S(64), nullable=False),
        sa.Column("subject", S(300), nullable=False),
        sa.Column("severity", S(16), nullable=False),
        sa.Column("score", D(), nullable=True),
        sa.Column("title", T(), nullable=True),
        sa.Column("evidence_json", T(), nullable=True),
        sa.Column("action", T(), nullable=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("first_seen", sa.Date(), nullable=False),
        sa.Column("last_seen", sa.Date(), nullable=False),
        sa.Column("state", S(16), nullable=False),
        sa.Column("state_changed_by", S(200), nullable=True),
        sa.Column("state_changed_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_alerts_model_id_models", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_versions.id"], name="fk_alerts_model_version_id_model_versions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("model_id", "finding", "subject", name="uq_alerts_model_id_finding_subject"),
    )


def downgrade() -> None:
    for name in ("alerts", "alert_results", "drift", "quality", "saliency", "probes", "embedding_health",
                 "layer_stats", "neuron_stats", "field_stats", "run_results", "runs", "model_versions", "models"):  # fmt: skip
        op.drop_table(name)
