"""The nightly job's two calls into notifications: after each model-day it wrote, and at the end.

Kept apart from the job's run loop so that the loop gains two lines only. Nothing here fails the
job: a channel that is down, a textfile that cannot be written or an error of the notifier itself
is recorded in the summary (``notify``) and turns the exit code into
:data:`~ctrlens.notify.deliver.EXIT_NOTIFY` unless something worse happened; the results are
already committed by then, and what was not delivered is retried by the next run.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, Sequence

from ctrlens.notify.config import NotifyConfig
from ctrlens.notify.deliver import IMMEDIATE, Notifier, NotifyOutcome


class RunNotifications:
    """Notifications of one job run (a no-op without channels and textfile)."""

    def __init__(self, cfg: NotifyConfig, notifier: Notifier | None = None):
        self.cfg = cfg
        self.notifier = notifier or Notifier(cfg)
        self.outcome = NotifyOutcome()
        self.errors: list[str] = []
        self.textfile: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.cfg.channels) or self.cfg.metrics_textfile is not None

    def after_day(self, store: Any, model: str, day: str) -> None:
        """Webhooks and commands for the alerts of a model-day just committed."""
        if not any(c.type in IMMEDIATE for c in self.cfg.channels):
            return
        try:
            self.outcome.merge(self.notifier.deliver(store, scope=[(model, day)], types=IMMEDIATE))
        except Exception as e:  # noqa: BLE001 - notifications never fail the night
            self.errors.append(f"notify after {model} {day}: {type(e).__name__}: {e}")
            self.errors.append(traceback.format_exc()[-2000:])

    def finish(self, store: Any, done: Sequence[tuple[str, str]], reports: Sequence[str] = ()) -> dict[str, Any] | None:
        """Every channel for the run's model-days (the e-mail digest), due retries, the textfile."""
        if not self.active:
            return None
        if self.cfg.channels:
            try:
                self.outcome.merge(self.notifier.deliver(store, scope=list(done), reports=[Path(p) for p in reports]))
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"notify at the end of the run: {type(e).__name__}: {e}")
        if self.cfg.metrics_textfile is not None:
            try:
                from ctrlens.notify.prometheus import render, write_textfile

                self.textfile = str(write_textfile(self.cfg.metrics_textfile, render(store)))
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"metrics textfile {self.cfg.metrics_textfile}: {type(e).__name__}: {e}")
        return self.summary()

    def summary(self) -> dict[str, Any]:
        per: dict[str, dict[str, Any]] = {}
        for c in self.outcome.channels:
            s = per.setdefault(c.channel, {"channel": c.channel, "type": c.type, "sent": [], "failed": [], "errors": []})
            s["sent"] += c.sent
            s["failed"] = [a for a in s["failed"] if a not in c.sent] + [a for a in c.failed if a not in s["failed"]]
            s["errors"] += [e for e in c.errors if e not in s["errors"]]
        channels = list(per.values())
        ok = not self.errors and not any(c["failed"] for c in channels)
        return {"ok": ok, "channels": channels, "errors": self.errors, "textfile": self.textfile}


__all__ = ["RunNotifications"]
