"""Alert state: one row per (model, finding, subject), followed across days and checkpoints.

The monitor hands over ``Result("alert")`` per (model version, day). The store keeps those rows as
they came (table ``alert_results``, per run) and maintains the stateful ``alerts`` row of each
(model, finding, subject) from them, inside the same transaction as the write:

* first / last seen = earliest / latest day with an observation; severity, score, title, evidence
  and action come from the latest observation;
* a new subject opens an alert (event ``opened``); a *resolved* alert seen again on a day later
  than any before reopens (event ``reopened``); acknowledged alerts stay acknowledged;
* rewriting a day that was the only evidence of an alert nobody touched removes that alert.

People change the state with :func:`set_state` (who, when, why -> ``alert_events``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from ctrlens.errors import InputError
from ctrlens.store.models import Alert, AlertEvent, AlertResult, ModelVersion, Run

SEVERITIES = ("critical", "warning", "info")
SEVERITY_RANK = {"critical": 3, "warning": 2, "info": 1}
STATES = ("open", "acknowledged", "resolved")
SYSTEM_ACTOR = "ctrlens"
_LOCK_CLASS = 0x6374  # pg_advisory_xact_lock(class, model_id): serialises alert syncs of one model


def sync(conn: Connection, model_id: int, day: dt.date, keys: Iterable[tuple[str, str]], new_keys: set[tuple[str, str]],
         now: dt.datetime) -> None:  # fmt: skip
    """Bring the ``alerts`` rows of ``keys`` in line with ``alert_results`` (call after the write).

    Args:
        keys: (finding, subject) pairs whose evidence changed (old and new rows of the run).
        new_keys: the pairs the run being written emitted on ``day``.
    """
    keys = set(keys)
    if not keys:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, model_id))
    findings = sorted({f for f, _ in keys})
    subjects = sorted({s for _, s in keys})
    ar = AlertResult.__table__
    obs_q = (
        select(ar.c.finding, ar.c.subject, Run.day, Run.id, Run.model_version_id, ar.c.severity, ar.c.score,
               ar.c.title, ar.c.evidence_json, ar.c.action)  # fmt: skip
        .join(Run, Run.id == ar.c.run_id)
        .join(ModelVersion, ModelVersion.id == Run.model_version_id)
        .where(ModelVersion.model_id == model_id, ar.c.finding.in_(findings), ar.c.subject.in_(subjects))
    )
    obs: dict[tuple[str, str], list[Any]] = {}
    for row in conn.execute(obs_q):
        key = (row.finding, row.subject)
        if key in keys:
            obs.setdefault(key, []).append(row)
    existing = {
        (a.finding, a.subject): a
        for a in conn.execute(
            select(Alert.__table__).where(Alert.model_id == model_id, Alert.finding.in_(findings), Alert.subject.in_(subjects))
        )
        if (a.finding, a.subject) in keys
    }
    # Collect, then one statement per action (not per alert).
    gone: list[int] = []
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for key in sorted(keys):
        rows = obs.get(key, [])
        cur = existing.get(key)
        if not rows:
            if cur is not None and cur.state == "open" and cur.state_changed_by is None:
                gone.append(cur.id)  # its only evidence was rewritten away
            continue
        latest = max(rows, key=lambda r: (r.day, r.id))
        values = dict(
            model_version_id=latest.model_version_id,
            severity=latest.severity if latest.severity in SEVERITY_RANK else "info",
            score=latest.score,
            title=latest.title,
            evidence_json=latest.evidence_json,
            action=latest.action,
            day=latest.day,
            first_seen=min(r.day for r in rows),
            last_seen=latest.day,
        )
        if cur is None:
            inserts.append(dict(model_id=model_id, finding=key[0], subject=key[1], state="open", state_changed_by=None,
                                state_changed_at=None, created_at=now, **values))  # fmt: skip
            continue
        state = dict(state=cur.state, state_changed_by=cur.state_changed_by, state_changed_at=cur.state_changed_at)
        if cur.state == "resolved" and key in new_keys and day > cur.last_seen:
            state = dict(state="open", state_changed_by=SYSTEM_ACTOR, state_changed_at=now)
            events.append(_event_row(cur.id, now, "reopened", "resolved", "open", SYSTEM_ACTOR, day, "seen again after it was resolved"))
        updates.append(dict(b_id=cur.id, **values, **state))
    if gone:
        conn.execute(delete(Alert).where(Alert.id.in_(gone)))
    if updates:
        t = Alert.__table__
        conn.execute(update(t).where(t.c.id == bindparam("b_id")), updates)
    if inserts:
        ids = conn.execute(insert(Alert).returning(Alert.id, sort_by_parameter_order=True), inserts).scalars().all()
        events += [_event_row(i, now, "opened", None, "open", SYSTEM_ACTOR, day, None) for i in ids]
    if events:
        conn.execute(insert(AlertEvent), events)


def set_state(conn: Connection, alert_id: int, state: str, by: str, note: str | None, now: dt.datetime) -> bool:
    """Move an alert to ``state`` (recorded with who / when / note). False if it already was there."""
    if state not in STATES:
        raise InputError(f"alert state {state!r}: expected one of {list(STATES)}")
    if not isinstance(by, str) or not by.strip():
        raise InputError("alert state change: `by` must name who made it (a user name or e-mail)")
    row = conn.execute(select(Alert.state).where(Alert.id == alert_id).with_for_update()).first()
    if row is None:
        raise InputError(f"alert id {alert_id} not found")
    if row.state == state:
        return False
    conn.execute(update(Alert).where(Alert.id == alert_id).values(state=state, state_changed_by=by, state_changed_at=now))
    event = {"open": "reopened", "acknowledged": "acknowledged", "resolved": "resolved"}[state]
    conn.execute(insert(AlertEvent), [_event_row(alert_id, now, event, row.state, state, by, None, note)])
    return True


def _event_row(alert_id: int, at: dt.datetime, event: str, from_state: str | None, to_state: str, actor: str,
               day: dt.date | None, note: str | None) -> dict[str, Any]:  # fmt: skip
    return dict(alert_id=alert_id, at=at, event=event, from_state=from_state, to_state=to_state, actor=actor, day=day, note=note)
