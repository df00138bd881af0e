"""``ctrlens report``: write the daily HTML + Markdown report of one model-day from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        db: Optional[str] = typer.Option(None, "--db", help="Database URL (default: $CTRLENS_DB or sqlite:///runs/ctrlens.sqlite)."),
        model: str = typer.Option(..., "--model", help="Model name as in the nightly config."),
        day: Optional[str] = typer.Option(None, "--day", help="Day (default: the model's latest nightly day)."),
        out: Path = typer.Option(Path("reports"), "--out", help="Output folder (files <day>.html and <day>.md)."),
    ) -> None:
        """The daily report of a model (findings, drift, quality, saliency, layers), built from the store."""
        import datetime as dt

        from ctrlens.errors import InputError
        from ctrlens.monitor.config import RUN_KIND
        from ctrlens.monitor.report import write_report
        from ctrlens.store import Store

        with Store(db) as store:
            if day is None:
                day = store.latest_day(model, run_kind=RUN_KIND)
                if day is None:
                    known = sorted(store.models()["model"])
                    raise InputError(f"model {model!r} has no nightly runs in {store.url_text}; models: {known}")
            else:
                try:
                    day = dt.date.fromisoformat(day).isoformat()
                except ValueError:
                    raise InputError(f"--day {day!r} is not a day (expected YYYY-MM-DD)") from None
            paths = write_report(store, model, day, out)
        for p in paths:
            print(p)
