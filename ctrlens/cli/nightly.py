"""``ctrlens nightly``: the nightly diagnostic job (drift tests, diagnosis, reports) from a YAML config."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("nightly")
    def nightly(
        config: Path = typer.Option(..., "--config", "-c", help="The job's YAML configuration (see docs/nightly.md)."),
        day: Optional[str] = typer.Option(None, "--day", help="Run this day (default: the data's latest day)."),
        start: Optional[str] = typer.Option(None, "--from", help="Backfill from this day (inclusive)..."),
        end: Optional[str] = typer.Option(None, "--to", help="...to this day (inclusive; default: the data's latest day)."),
        force: bool = typer.Option(False, "--force", help="Recompute days already done (replaces them, never duplicates)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object (outcomes, new alerts, exit code) on stdout."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
        workers: int = typer.Option(1, "--workers", "-w", help="Run this many models at a time in worker processes "
                                    "(each model's days stay in order; one summary, one exit code)."),
        nproc: int = typer.Option(1, "--nproc", help="Compute each model-day with this many processes on this machine "
                                  "(torch.distributed: gloo on CPU, NCCL with device cuda). Under torchrun, leave it out: "
                                  "the ranks come from the environment."),
    ) -> None:
        """Measure, drift-test and diagnose every configured model for a day or a range of days.

        Exit codes: 0 ran, no new alerts; 1 ran, new alerts (unless exit_on_alert: false); 2 bad input or
        configuration (nothing written); 3 some model-days failed or were locked, or were computed while an
        earlier day was missing (the next run redoes them), the others were written; 4 all written, but a
        notification channel failed (retried by the next run).
        """
        from ctrlens.errors import InputError
        from ctrlens.monitor.config import load_config
        from ctrlens.monitor.distributed import env_world, run_ranks
        from ctrlens.monitor.fleet import run_fleet
        from ctrlens.results import jsonable

        cfg = load_config(config)  # InputError -> one line, exit 2, before anything is written
        ranked = nproc != 1 or env_world() is not None
        if ranked and workers != 1:
            raise InputError("--workers (models in parallel) and ranks (--nproc / torchrun: one model-day in parallel) "
                             "do not combine; use one of them")  # fmt: skip
        rank0 = int(__import__("os").environ.get("RANK", "0")) == 0
        bar = _Progress(enabled=not quiet and rank0)
        try:
            if ranked:
                summary = run_ranks(cfg, nproc=nproc, day=day, start=start, end=end, force=force, progress=bar)
            else:
                summary = run_fleet(cfg, workers=workers, day=day, start=start, end=end, force=force, progress=bar)
        finally:
            bar.close()
        if isinstance(summary, int):  # a rank other than 0 under torchrun: rank 0 reports; the same exit code
            sys.exit(summary)
        if as_json:
            print(json.dumps(jsonable(summary.to_dict()), default=str))  # strict JSON: NaN -> null
        else:
            _print_summary(summary)
        # sys.exit, not typer.Exit: ctrlens.cli.main runs typer in non-standalone mode, which drops Exit codes
        sys.exit(summary.exit_code)


class _Progress:
    """Rich progress bars on stderr: one over model-days, with the current step."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.p = None
        self.task = None

    def __call__(self, event: str, **info: Any) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        if event == "start":
            self.p = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=Console(stderr=True), transient=False)  # fmt: skip
            self.p.start()
            self.task = self.p.add_task("nightly", total=info["total"])
        elif self.p is None:
            return
        elif event in ("model_day", "step"):
            step = f" · {info['step']}" if "step" in info else ""
            self.p.update(self.task, description=f"{info['model']} {info['day']}{step}")
        elif event == "done":
            self.p.advance(self.task)

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()


def _print_summary(summary: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = Console()
    t = Table(title=f"ctrlens nightly: {len(summary.outcomes)} model-day(s)")
    for c in ("model", "day", "version", "status", "alerts (new)", "top finding", "s"):
        # the finding keeps its width (a slow day's seconds must not squeeze it into broken words)
        t.add_column(c, justify="right" if c in ("alerts (new)", "s") else "left", min_width=30 if c == "top finding" else None)
    colours = {"ok": "green", "skipped": "dim", "failed": "red", "locked": "yellow"}
    for o in summary.outcomes:
        top = next((f for f in o.findings if f["severity"] in ("critical", "warning")), None)
        top_s = f"[{'red' if top['severity'] == 'critical' else 'yellow'}]{top['finding']}[/] {escape(top['subject'])}" if top else ""
        t.add_row(escape(o.model), o.day, (o.version or "")[:8], f"[{colours.get(o.status, 'white')}]{o.status}[/]",
                  f"{o.alerts} ({len(o.new_alerts)})" if o.status == "ok" else "", top_s, f"{o.seconds:.1f}")  # fmt: skip
    con.print(t)
    err = Console(stderr=True, soft_wrap=True)
    for o in summary.outcomes:
        if o.error:
            err.print(f"[red]{escape(o.model)} {o.day}: {o.status}[/]: {escape(o.error)}", highlight=False)
    for o in summary.outcomes:
        if o.took_over:
            err.print(f"[yellow]{escape(o.model)} {o.day}[/]: took over a stale lock {escape(o.took_over)}", highlight=False)
        if o.recomputed:
            err.print(f"[yellow]{escape(o.model)} {o.day}[/]: computed again: {escape(o.recomputed)}", highlight=False)
        if o.status == "ok" and o.incomplete:
            err.print(f"[yellow]{escape(o.model)} {o.day}: incomplete reference[/]: computed while earlier day(s) "
                      f"{', '.join(o.incomplete)} were missing; marked, the next run computes it again", highlight=False)
    for a in summary.new_alerts:
        con.print(f"[bold]new alert[/] #{a['alert_id']} {escape(a['model'])} {a['day']} {escape('[' + a['severity'] + ']')} "
                  f"{escape(a['title'])}", highlight=False, soft_wrap=True)
    n = summary.notify
    if n is not None:
        for c in n["channels"]:
            con.print(f"notify {escape(c['channel'])}: sent {len(c['sent'])}, failed {len(c['failed'])}"
                      + (f" ({escape(c['errors'][-1])})" if c["errors"] and c["failed"] else ""), highlight=False, soft_wrap=True)
        for e in n["errors"][:1]:
            err.print(f"[red]notify[/]: {escape(e)}", highlight=False)
        if n.get("textfile"):
            con.print(f"metrics written to {escape(n['textfile'])}", highlight=False, soft_wrap=True)
    con.print(f"exit code {summary.exit_code}", style="dim")
    sys.stdout.flush()
