"""``ctrlens alerts``: deliver alerts to the configured channels, look at the delivery log, export metrics.

    ctrlens alerts notify --config nightly.yaml --dry-run   # what would be sent, where (nothing sent or written)
    ctrlens alerts notify --config nightly.yaml             # send every open alert not delivered yet, retry failures
    ctrlens alerts deliveries --config nightly.yaml         # the delivery log, newest first
    ctrlens alerts metrics --db sqlite:///runs/ctrlens.sqlite [--textfile ctrlens.prom]

``notify`` exit codes: 0 delivered (or nothing to deliver), 4 a channel failed (recorded; retried by
the next call or nightly run), 2 bad configuration.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

DB_HELP = "Store URL (default: the config's db, else $CTRLENS_DB, else sqlite:///runs/ctrlens.sqlite)."


def register(app: typer.Typer) -> None:
    al = typer.Typer(help="Send alerts to Slack / webhooks / e-mail / commands; delivery log; Prometheus metrics.", no_args_is_help=True)

    @al.command("notify")
    def notify(
        config: Path = typer.Option(..., "--config", "-c", help="The nightly YAML holding the notify: channels."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be sent, and where; send and record nothing."),
        model: Optional[list[str]] = typer.Option(None, "--model", help="Only this model (repeatable)."),
        channel: Optional[list[str]] = typer.Option(None, "--channel", help="Only this channel (repeatable)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Deliver every open alert that a channel covers and has not received yet (failed ones are retried at once).

        Exit codes: 0 all delivered or nothing pending; 4 a delivery failed (it is retried later); 2 bad input.
        """
        from dataclasses import replace

        from ctrlens.monitor.config import load_config
        from ctrlens.notify.deliver import EXIT_NOTIFY, Notifier
        from ctrlens.store import Store

        cfg = load_config(config)
        ncfg = cfg.notify
        if channel:
            ncfg = replace(ncfg, channels=tuple(ncfg.channel(c) for c in channel))
        if not ncfg.channels:
            raise _input_error(f"{cfg.source}: no notify: channels configured (see docs/alerts.md, 'Getting alerts')")
        with Store(cfg.db) as store:
            # a person asked: failed deliveries are retried now, not after their backoff
            out = Notifier(ncfg).deliver(store, models=model or None, dry_run=dry_run, reports=_reports(cfg, store), retry_now=True)
        if as_json:
            print(json.dumps(out.to_dict(), default=str))
        else:
            _print(out)
        sys.exit(0 if out.ok else EXIT_NOTIFY)

    @al.command("deliveries")
    def deliveries(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="Read the store URL from this nightly YAML."),
        url: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
        channel: Optional[str] = typer.Option(None, "--channel"),
        model: Optional[str] = typer.Option(None, "--model"),
        status: Optional[str] = typer.Option(None, "--status", help="delivered | failed | sending"),
        limit: int = typer.Option(50, "--limit"),
        as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
    ) -> None:
        """The delivery log: every attempt to send an alert to a channel, newest first."""
        from ctrlens.store import Store, deliveries as dl

        with Store(_db(config, url)) as store:
            log = dl.log(store, channel=channel, model=model, status=status, limit=limit)
        if as_json:
            for r in log.to_dict("records"):
                print(json.dumps(r, default=str))
            return
        if log.empty:
            typer.echo("no deliveries recorded")
            return
        for r in log.itertuples(index=False):
            err = f"  {r.error}" if isinstance(r.error, str) and r.error else ""
            typer.echo(f"{r.started_at:%Y-%m-%d %H:%M:%S}  {r.channel:<16} {r.status:<9} try {r.attempt}  alert #{r.alert_id}  "
                       f"{r.model} {r.day} {r.finding} {r.subject} [{r.severity}]{err}")  # fmt: skip

    @al.command("metrics")
    def metrics(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="Read the store URL (and metrics.textfile) from this nightly YAML."),
        url: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
        textfile: Optional[Path] = typer.Option(None, "--textfile", help="Write a node_exporter textfile (atomically) instead of printing."),
    ) -> None:
        """The Prometheus metrics of the store (the dashboard's /metrics), in OpenMetrics text."""
        from ctrlens.notify.prometheus import render, write_textfile
        from ctrlens.store import Store

        if textfile is None and config is not None:
            from ctrlens.monitor.config import load_config

            textfile = load_config(config).notify.metrics_textfile
        with Store(_db(config, url)) as store:
            text = render(store)
        if textfile is None:
            sys.stdout.write(text)
        else:
            typer.echo(f"wrote {write_textfile(textfile, text)}")

    app.add_typer(al, name="alerts")


def _input_error(msg: str) -> Exception:
    from ctrlens.errors import InputError

    return InputError(msg)


def _db(config: Optional[Path], url: Optional[str]) -> Optional[str]:
    if url is not None or config is None:
        return url
    from ctrlens.monitor.config import load_config

    return load_config(config).db


def _reports(cfg: Any, store: Any) -> list[Path]:
    """The daily reports of the open alerts' latest days (for the e-mail digest)."""
    if not cfg.reports:
        return []
    from ctrlens.monitor.job import report_dir
    from ctrlens.store import deliveries as dl

    root = report_dir(cfg)
    out = []
    for m, d in sorted({(r.model, r.last_seen) for r in dl.open_alerts(store).itertuples(index=False)}):
        out += [p for p in (root / m / f"{d}.html", root / m / f"{d}.md") if p.is_file()]
    return out


def _print(out: Any) -> None:
    for c in out.channels:
        head = f"{c.channel} ({c.type} -> {c.target})"
        if out.dry_run:
            n = sum(len(p["alerts"]) for p in c.preview)
            typer.echo(f"{head}: would send {n} alert(s) in {len(c.preview)} message(s); {c.already} already delivered; "
                       f"{len(c.waiting)} waiting to retry")  # fmt: skip
            for p in c.preview:
                if "missing_env" in p:
                    typer.echo(f"  ! environment variable(s) not set: {', '.join(p['missing_env'])}")
                if "subject" in p:
                    typer.echo(f"  Subject: {p['subject']}")
                    typer.echo("  " + p["body"].replace("\n", "\n  "))
                    if p["attachments"]:
                        typer.echo(f"  Attachments: {', '.join(p['attachments'])}")
                else:
                    typer.echo("  " + json.dumps(p["payload"], ensure_ascii=False))
            continue
        typer.echo(f"{head}: sent {len(c.sent)}, failed {len(c.failed)}, already delivered {c.already}, waiting {len(c.waiting)}")
        for e in c.errors:
            typer.echo(f"  error: {e}", err=True)
