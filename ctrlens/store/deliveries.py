"""The notification delivery log (table ``alert_deliveries``): what was sent where, and what is due.

:mod:`ctrlens.notify.deliver` decides what to send; this module keeps the log in the store so that
delivery is exactly-once across processes, reruns and ``--force``:

* a delivery is keyed on ``(channel, model, finding, subject, episode)`` -- ``episode`` counts the
  times the alert was reopened after a resolution, so a reopened alert is sent again while a
  rewritten one (same key) is not;
* a sender *claims* an attempt by inserting its row (``status='sending'``); the unique
  ``(key, attempt)`` makes a second, concurrent claimer of the same attempt fail quietly;
* the row is then finished as ``delivered`` or ``failed`` (with the error and ``next_attempt_at``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pandas as pd
from sqlalchemy import and_, func, or_, select, update

from ctrlens.store.codec import loads
from ctrlens.store.models import Alert, AlertDelivery, AlertEvent, Model

Key = tuple[str, str, str, int]  # (model, finding, subject, episode) within one channel

#: a claim older than this without a result is from a crashed sender: tried again
STALE_SENDING = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class KeyState:
    """The delivery state of one key on one channel."""

    delivered: bool
    attempts: int  # the highest attempt number so far
    last_status: str | None
    last_started: dt.datetime | None
    next_attempt_at: dt.datetime | None


def open_alerts(store: Any, *, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Alerts in state ``open`` with their ``episode``: alert_id, model, finding, subject, severity,
    score, title, evidence (dict), action, day, first_seen, last_seen (ISO days), episode."""
    a, m, e = Alert.__table__, Model.__table__, AlertEvent.__table__
    reopened = (
        select(e.c.alert_id, func.count().label("n"))
        .where(e.c.event == "reopened", e.c.from_state == "resolved")
        .group_by(e.c.alert_id)
        .subquery()
    )
    q = (
        select(a.c.id, m.c.name, a.c.finding, a.c.subject, a.c.severity, a.c.score, a.c.title, a.c.evidence_json, a.c.action,
               a.c.day, a.c.first_seen, a.c.last_seen, func.coalesce(reopened.c.n, 0))  # fmt: skip
        .select_from(a.join(m, m.c.id == a.c.model_id).outerjoin(reopened, reopened.c.alert_id == a.c.id))
        .where(a.c.state == "open", *([m.c.name.in_(list(models))] if models is not None else []))
        .order_by(m.c.name, a.c.last_seen, a.c.score.desc(), a.c.id)
    )
    cols = ["alert_id", "model", "finding", "subject", "severity", "score", "title", "evidence", "action", "day", "first_seen",
            "last_seen", "episode"]  # fmt: skip
    with store._read() as conn:
        rows = [list(r) for r in conn.execute(q)]
    for r in rows:
        r[7] = loads(r[7]) if r[7] else {}
        r[9], r[10], r[11] = (_iso(x) for x in r[9:12])
        r[12] = int(r[12])
    return pd.DataFrame(rows, columns=cols)


def states(store: Any, channel: str, keys: Iterable[Key]) -> dict[Key, KeyState]:
    """The delivery state of ``keys`` on ``channel`` (keys never tried are absent)."""
    keys = set(keys)
    if not keys:
        return {}
    d = AlertDelivery.__table__
    models = sorted({k[0] for k in keys})
    q = select(d.c.model, d.c.finding, d.c.subject, d.c.episode, d.c.attempt, d.c.status, d.c.started_at,
               d.c.next_attempt_at).where(d.c.channel == channel, d.c.model.in_(models)).order_by(d.c.attempt)  # fmt: skip
    out: dict[Key, KeyState] = {}
    with store._read() as conn:
        for r in conn.execute(q):
            k = (r.model, r.finding, r.subject, int(r.episode))
            if k not in keys:
                continue
            prev = out.get(k)
            delivered = (prev.delivered if prev else False) or r.status == "delivered"
            out[k] = KeyState(delivered, int(r.attempt), r.status, r.started_at, r.next_attempt_at)
    return out


def claim(store: Any, channel: str, key: Key, attempt: int, *, alert_id: int | None, day: str, severity: str,
          now: dt.datetime) -> int | None:  # fmt: skip
    """Insert the ``sending`` row of ``attempt``; its id, or None when another sender claimed it or
    the key was delivered meanwhile."""
    d = AlertDelivery.__table__
    model, finding, subject, episode = key
    same = and_(d.c.channel == channel, d.c.model == model, d.c.finding == finding, d.c.subject == subject, d.c.episode == episode)
    with store._write() as conn:
        if conn.execute(select(d.c.id).where(same, or_(d.c.status == "delivered", d.c.attempt >= attempt)).limit(1)).first():
            return None
        row = conn.execute(
            store._insert(d)
            .values(channel=channel, model=model, finding=finding, subject=subject, episode=episode, alert_id=alert_id,
                    day=dt.date.fromisoformat(day), severity=severity, attempt=attempt, status="sending", started_at=now)  # fmt: skip
            .on_conflict_do_nothing(index_elements=["channel", "model", "finding", "subject", "episode", "attempt"])
            .returning(d.c.id)
        ).first()
    return None if row is None else int(row[0])


def finish(store: Any, ids: Sequence[int], *, status: str, now: dt.datetime, error: str | None = None,
           next_attempt_at: dt.datetime | None = None) -> None:  # fmt: skip
    """Record the outcome of claimed attempts (``delivered`` or ``failed``)."""
    if not ids:
        return
    d = AlertDelivery.__table__
    with store._write() as conn:
        conn.execute(update(d).where(d.c.id.in_(list(ids))).values(status=status, finished_at=now, error=error,
                                                                    next_attempt_at=next_attempt_at))  # fmt: skip


def log(store: Any, *, channel: str | None = None, model: str | None = None, status: str | None = None,
        limit: int | None = None) -> pd.DataFrame:  # fmt: skip
    """The delivery log, newest first: id, channel, model, finding, subject, episode, alert_id, day,
    severity, attempt, status, error, started_at, finished_at, next_attempt_at."""
    d = AlertDelivery.__table__
    conds = [c for c in (d.c.channel == channel if channel else None, d.c.model == model if model else None,
                         d.c.status == status if status else None) if c is not None]  # fmt: skip
    q = select(d).where(*conds).order_by(d.c.started_at.desc(), d.c.id.desc())
    if limit is not None:
        q = q.limit(int(limit))
    with store._read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    cols = [c.name for c in d.columns]
    out = pd.DataFrame(rows, columns=cols)
    if len(out):
        out["day"] = [_iso(x) for x in out["day"]]
    return out


def failing(store: Any) -> pd.DataFrame:
    """Per channel: open alerts whose latest delivery attempt failed (to be retried): channel, failing."""
    d = AlertDelivery.__table__
    q = (select(d.c.channel, d.c.model, d.c.finding, d.c.subject, d.c.episode, d.c.attempt, d.c.status)
         .where(d.c.alert_id.in_(select(Alert.id).where(Alert.state == "open"))))  # fmt: skip
    with store._read() as conn:
        rows = pd.DataFrame([tuple(r) for r in conn.execute(q)],
                            columns=["channel", "model", "finding", "subject", "episode", "attempt", "status"])  # fmt: skip
    if rows.empty:
        return pd.DataFrame(columns=["channel", "failing"])
    keys = ["channel", "model", "finding", "subject", "episode"]
    delivered = rows.groupby(keys)["status"].agg(lambda s: (s == "delivered").any())
    last = rows.sort_values("attempt").groupby(keys)["status"].last()
    bad = last[(last == "failed") & ~delivered].reset_index()
    return bad.groupby("channel").size().rename("failing").reset_index()


def _iso(x: Any) -> str | None:
    if x is None:
        return None
    return x.isoformat() if hasattr(x, "isoformat") else str(x)[:10]


__all__ = ["Key", "KeyState", "STALE_SENDING", "claim", "failing", "finish", "log", "open_alerts", "states"]
