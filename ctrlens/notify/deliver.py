"""Exactly-once delivery of open alerts to the configured channels, with retries.

For each channel, the alerts it covers (state ``open``, at least ``min_severity``, one of its
``models``) that the delivery log (:mod:`ctrlens.store.deliveries`) has not seen delivered are
*pending*. A delivery claims its attempt in the log, sends, and records ``delivered`` or
``failed``; a failed try is retried within the call with exponential backoff (``notify.retry``),
and what still fails is retried by later calls once its backoff has passed. Nothing here raises
because a channel is down: the outcome says so (the nightly job then exits with
:data:`EXIT_NOTIFY`), and the results in the store are untouched.

Who calls it: the nightly job after each model-day it wrote (webhooks and commands, for that
model-day's alerts), and once at the end of its run (every channel: the e-mail digest, retries);
``ctrlens alerts notify`` (all pending alerts; ``--dry-run`` only shows them).
"""

from __future__ import annotations

import datetime as dt
import http.client
import os
import smtplib
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ctrlens.notify import messages
from ctrlens.notify.config import Channel, NotifyConfig
from ctrlens.notify.messages import Item

#: the nightly job's exit code when results were written but a channel could not be reached
EXIT_NOTIFY = 4
IMMEDIATE = ("webhook", "command")  # sent per model-day; e-mail is one digest per run


class SendError(Exception):
    """One try failed; the message is safe to store and print (it never holds a secret).
    ``retriable``: False when trying again in the same call cannot help (a secret not set)."""

    def __init__(self, message: str, *, retriable: bool = True):
        super().__init__(message)
        self.retriable = retriable


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass
class ChannelOutcome:
    """What one call did on one channel (alert ids)."""

    channel: str
    type: str
    target: str
    sent: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)  # a failed delivery still backing off, or in flight elsewhere
    already: int = 0  # covered alerts delivered before
    tries: int = 0
    errors: list[str] = field(default_factory=list)
    preview: list[dict[str, Any]] = field(default_factory=list)  # dry run: what would be sent

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "type": self.type, "target": self.target, "sent": self.sent, "failed": self.failed,
                "waiting": self.waiting, "already_delivered": self.already, "tries": self.tries, "errors": self.errors,
                **({"would_send": self.preview} if self.preview else {})}  # fmt: skip


@dataclass
class NotifyOutcome:
    """What one call did on every channel; ``ok`` is False when a delivery failed."""

    channels: list[ChannelOutcome] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not any(c.failed for c in self.channels)

    def merge(self, other: "NotifyOutcome") -> None:
        self.channels.extend(other.channels)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "dry_run": self.dry_run, "channels": [c.to_dict() for c in self.channels]}


class Notifier:
    """Delivers pending alerts of a store to the channels of ``cfg``.

    Args:
        cfg: the ``notify:`` configuration.
        env: where ``*_env`` secrets are read (default ``os.environ``).
        now, sleep: clock and wait (tests pass fakes to skip the backoff waits).
    """

    def __init__(self, cfg: NotifyConfig, *, env: Mapping[str, str] | None = None, now: Callable[[], dt.datetime] = utcnow,
                 sleep: Callable[[float], None] = time.sleep):  # fmt: skip
        self.cfg, self.env, self.now, self.sleep = cfg, os.environ if env is None else env, now, sleep

    def deliver(self, store: Any, *, scope: Sequence[tuple[str, str]] | None = None, types: Sequence[str] | None = None,
                models: Sequence[str] | None = None, reports: Sequence[Path] = (), dry_run: bool = False,
                retry_now: bool = False) -> NotifyOutcome:  # fmt: skip
        """Send what is pending.

        Args:
            scope: only alerts last seen on these (model, day) pairs, plus failed deliveries due
                for a retry (None: every open alert not yet delivered).
            types: only channels of these types (None: all).
            models: only these models.
            reports: daily report files for the e-mail digest.
            dry_run: send nothing, write nothing: ``preview`` holds what would be sent.
            retry_now: retry failed deliveries without waiting for their backoff (a person asked).
        """
        from ctrlens.store import deliveries

        out = NotifyOutcome(dry_run=dry_run)
        channels = [c for c in self.cfg.channels if types is None or c.type in types]
        if not channels:
            return out
        frame = deliveries.open_alerts(store, models=models)
        alerts = messages.items(frame)
        if self.cfg.max_age_days is not None:  # old news: a backfill, not last night
            oldest = (self.now().date() - dt.timedelta(days=self.cfg.max_age_days)).isoformat()
            alerts = [a for a in alerts if a.last_seen >= oldest]
        in_scope = set(scope) if scope is not None else None
        for ch in channels:
            co = ChannelOutcome(ch.name, ch.type, ch.target)
            out.channels.append(co)
            covered = [a for a in alerts if ch.covers(a.model, a.severity)]
            st = deliveries.states(store, ch.name, [a.key for a in covered])
            now = self.now()
            todo: list[tuple[Item, int]] = []
            for a in covered:
                s = st.get(a.key)
                if s is not None and s.delivered:
                    co.already += 1
                    continue
                retry = s is not None
                if in_scope is not None and not retry and (a.model, a.last_seen) not in in_scope:
                    continue
                if (s is not None and s.last_status == "failed" and s.next_attempt_at is not None and s.next_attempt_at > now
                        and not retry_now):  # fmt: skip
                    co.waiting.append(a.alert_id)
                    continue
                if s is not None and s.last_status == "sending" and s.last_started is not None and now - s.last_started < deliveries.STALE_SENDING:
                    co.waiting.append(a.alert_id)
                    continue
                todo.append((a, (s.attempts if s else 0) + 1))
            if not todo:
                continue
            if dry_run:
                co.preview = [self._preview(ch, [a for a, _ in todo], reports)] if ch.type == "email" else \
                    [self._preview(ch, [a], reports) for a, _ in todo]  # fmt: skip
                continue
            if ch.type == "email":
                self._send_batch(store, ch, todo, co, reports)
            else:
                for a, attempt in todo:
                    self._send_batch(store, ch, [(a, attempt)], co, reports)
        return out

    # --------------------------------------------------------------------------------- sending

    def _send_batch(self, store: Any, ch: Channel, todo: list[tuple[Item, int]], co: ChannelOutcome, reports: Sequence[Path]) -> None:
        """Claim, send (retrying within the call), record; one message for the whole batch."""
        from ctrlens.store import deliveries

        pending = list(todo)
        retry = self.cfg.retry
        for k in range(1, retry.attempts + 1):
            claimed: list[tuple[Item, int, int]] = []
            for a, attempt in pending:
                rid = deliveries.claim(store, ch.name, a.key, attempt, alert_id=a.alert_id, day=a.day, severity=a.severity, now=self.now())
                if rid is not None:
                    claimed.append((a, attempt, rid))
            if not claimed:
                return  # another sender has them
            co.tries += 1
            try:
                self._send(ch, [a for a, _, _ in claimed], reports)
            except Exception as e:  # noqa: BLE001 - a failed try is recorded, never raised
                # anything but our own SendError is named by type only: its text might quote a secret
                err = (str(e) if isinstance(e, SendError) else f"{ch.type} failed: {type(e).__name__}")[:1000]
                now = self.now()
                last = k == retry.attempts or (isinstance(e, SendError) and not e.retriable)
                deliveries.finish(store, [rid for _, _, rid in claimed], status="failed", now=now, error=err,
                                  next_attempt_at=now + dt.timedelta(seconds=retry.wait(max(at for _, at, _ in claimed))))  # fmt: skip
                if err not in co.errors:
                    co.errors.append(err)
                if last:
                    co.failed.extend(a.alert_id for a, _, _ in claimed)
                    return
                self.sleep(retry.wait(k))
                pending = [(a, attempt + 1) for a, attempt, _ in claimed]
                continue
            deliveries.finish(store, [rid for _, _, rid in claimed], status="delivered", now=self.now())
            co.sent.extend(a.alert_id for a, _, _ in claimed)
            return

    def _send(self, ch: Channel, its: list[Item], reports: Sequence[Path]) -> None:
        base = self.cfg.base_url
        if ch.type == "webhook":
            post(self._url(ch), messages.payload(ch, its[0], base), self._headers(ch), ch.timeout_s)
        elif ch.type == "command":
            run_command(list(ch.command or ()), messages.payload(ch, its[0], base), ch.timeout_s)
        else:
            send_mail(ch, messages.digest(ch, its, base, reports), self._secret)

    def _secret(self, name: str | None, what: str) -> str:
        if name is None:
            raise SendError(f"{what}: no environment variable named", retriable=False)
        v = self.env.get(name)
        if not v:
            raise SendError(f"{what}: environment variable {name} is not set", retriable=False)
        return v

    def _url(self, ch: Channel) -> str:
        return ch.url if ch.url else self._secret(ch.url_env, f"channel {ch.name!r} url_env")

    def _headers(self, ch: Channel) -> dict[str, str]:
        return {h: self._secret(var, f"channel {ch.name!r} header {h}") for h, var in ch.headers_env}

    def _preview(self, ch: Channel, its: list[Item], reports: Sequence[Path]) -> dict[str, Any]:
        """What would be sent (secrets named, never read out)."""
        import json

        missing = [v for v in ([ch.url_env] if ch.url_env else []) + [v for _, v in ch.headers_env]
                   + ([ch.smtp.password_env] if ch.smtp and ch.smtp.password_env else []) if not self.env.get(v)]  # fmt: skip
        doc: dict[str, Any] = {"alerts": [a.alert_id for a in its], "to": ch.target}
        if missing:
            doc["missing_env"] = missing
        if ch.type == "email":
            m = messages.digest(ch, its, self.cfg.base_url, reports)
            doc["subject"] = m["Subject"]
            doc["body"] = m.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            doc["attachments"] = [p.get_filename() for p in m.iter_attachments()]
        else:
            doc["payload"] = json.loads(messages.payload(ch, its[0], self.cfg.base_url))
        return doc


# ------------------------------------------------------------------------------------- transports


def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> None:
    """POST JSON; any status but 2xx is a failure. Errors never quote the URL (it may be a secret)."""
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "ctrlens", **headers})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - the URL is the user's webhook
            resp.read(1 << 16)
            status = resp.status
    except urllib.error.HTTPError as e:
        raise SendError(f"webhook answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise SendError(f"webhook unreachable: {type(reason).__name__}: {reason}") from None
    except (ValueError, http.client.HTTPException) as e:  # their messages may quote the URL: name the type only
        raise SendError(f"webhook: {type(e).__name__} (is the URL a valid http(s):// URL?)") from None
    if not 200 <= status < 300:
        raise SendError(f"webhook answered HTTP {status}")


def run_command(cmd: list[str], body: bytes, timeout_s: float) -> None:
    """Run ``cmd`` (no shell) with ``body`` on stdin; a non-zero exit is a failure."""
    try:
        r = subprocess.run(cmd, input=body, capture_output=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise SendError(f"command {cmd[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise SendError(f"command {cmd[0]!r} did not finish within {timeout_s:g} s") from None
    except OSError as e:
        raise SendError(f"command {cmd[0]!r} could not start: {e.strerror}") from None
    if r.returncode != 0:
        tail = r.stderr.decode("utf-8", "replace").strip()[-300:]
        raise SendError(f"command {cmd[0]!r} exited with {r.returncode}" + (f": {tail}" if tail else ""))


def send_mail(ch: Channel, msg: Any, secret: Callable[[str | None, str], str]) -> None:
    """Send ``msg`` through the channel's SMTP server (STARTTLS / TLS / none; login if configured)."""
    s = ch.smtp
    assert s is not None
    user = s.username or (secret(s.username_env, f"channel {ch.name!r} smtp.username_env") if s.username_env else None)
    password = secret(s.password_env, f"channel {ch.name!r} smtp.password_env") if s.password_env else None
    try:
        ctx = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        if s.security == "tls":
            server: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=ctx)
        else:
            server = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        with server:
            if s.security == "starttls":
                server.starttls(context=ctx)
            if user:
                server.login(user, password or "")
            server.send_message(msg)
    except smtplib.SMTPAuthenticationError as e:
        raise SendError(f"SMTP {s.host}:{s.port} refused the login ({e.smtp_code})") from None
    except smtplib.SMTPException as e:
        raise SendError(f"SMTP {s.host}:{s.port}: {type(e).__name__}: {str(e)[:300]}") from None
    except (OSError, ssl.SSLError) as e:
        raise SendError(f"SMTP {s.host}:{s.port} unreachable: {type(e).__name__}: {e}") from None


__all__ = ["EXIT_NOTIFY", "ChannelOutcome", "Notifier", "NotifyOutcome", "SendError", "post", "run_command", "send_mail"]
