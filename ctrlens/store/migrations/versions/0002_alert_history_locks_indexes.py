"""Alert history, nightly-job locks, packed neuron vectors, query indexes, info abundance.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

* ``alert_events``: who changed an alert's state, when and why. Existing alerts get their history
  back-filled: an ``opened`` event at creation, plus their current state change if not open.
* ``locks``: database-level named locks with an expiry (``Store.acquire`` / ``Store.release``).
* ``neuron_vectors``: per run, layer and neuron statistic the layer's values packed in one row
  (heat maps read one row per day); back-filled from existing ``neuron_stats`` rows.
* Indexes for the health matrix (runs by day) and the open-alerts list.
* ``embedding_health.info_abundance`` (new in the result contract); NULL (NaN) for older days.
"""

from __future__ import annotations

from itertools import groupby
from typing import Sequence, Union

import numpy as np
import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], name="fk_alert_events_alert_id_alerts", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_alert_events"),
    )
    op.create_index("ix_alert_events_alert_id_at", "alert_events", ["alert_id", "at"])
    op.create_table(
        "locks",
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("acquired_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_locks"),
    )
    vectors = op.create_table(
        "neuron_vectors",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("layer", sa.String(200), nullable=False),
        sa.Column("statistic", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_neuron_vectors_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "layer", "statistic", name="pk_neuron_vectors"),
    )
    _backfill_neuron_vectors(vectors)
    op.create_index("ix_runs_day_run_kind", "runs", ["day", "run_kind"])
    op.create_index("ix_alerts_state_severity", "alerts", ["state", "severity"])
    op.add_column("embedding_health", sa.Column("info_abundance", sa.Double(), nullable=True))

    # Back-fill the history of alerts that existed before this revision.
    op.execute(
        "INSERT INTO alert_events (alert_id, at, event, from_state, to_state, actor, day, note) "
        "SELECT id, created_at, 'opened', NULL, 'open', 'ctrlens', first_seen, 'back-filled by migration 0002' "
        "FROM alerts"
    )
    op.execute(
        "INSERT INTO alert_events (alert_id, at, event, from_state, to_state, actor, day, note) "
        "SELECT id, COALESCE(state_changed_at, created_at), "
        "CASE state WHEN 'acknowledged' THEN 'acknowledged' ELSE 'resolved' END, 'open', state, "
        "COALESCE(state_changed_by, 'unknown'), NULL, 'back-filled by migration 0002' "
        "FROM alerts WHERE state <> 'open'"
    )


# The neuron statistics of the result contract at this revision (frozen here on purpose).
_STATS = ("count", "mean", "std", "min", "max", "frac_zero", "frac_saturated", "mean_click", "mean_noclick")


def _backfill_neuron_vectors(vectors: sa.Table) -> None:
    """Pack the neuron rows written before this revision, one run at a time."""
    bind = op.get_bind()
    run_ids = [r[0] for r in bind.execute(sa.text("SELECT DISTINCT run_id FROM neuron_stats ORDER BY run_id"))]
    cols = ", ".join(_STATS)
    for run_id in run_ids:
        rows = bind.execute(
            sa.text(f"SELECT layer, neuron, {cols} FROM neuron_stats WHERE run_id = :r ORDER BY layer, neuron"), {"r": run_id}
        ).fetchall()
        out = []
        for layer, group in groupby(rows, key=lambda r: r[0]):
            g = list(group)
            out.append({"run_id": run_id, "layer": layer, "statistic": "neuron",
                        "data": np.array([r[1] for r in g], dtype="<i8").tobytes()})  # fmt: skip
            for j, stat in enumerate(_STATS):
                values = np.array([np.nan if r[2 + j] is None else r[2 + j] for r in g], dtype="<f8")
                out.append({"run_id": run_id, "layer": layer, "statistic": stat, "data": values.tobytes()})
        op.bulk_insert(vectors, out)


def downgrade() -> None:
    with op.batch_alter_table("embedding_health") as batch:
        batch.drop_column("info_abundance")
    op.drop_index("ix_alerts_state_severity", table_name="alerts")
    op.drop_index("ix_runs_day_run_kind", table_name="runs")
    op.drop_table("locks")
    op.drop_table("neuron_vectors")
    op.drop_index("ix_alert_events_alert_id_at", table_name="alert_events")
    op.drop_table("alert_events")
