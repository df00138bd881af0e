"""``ctrlens demo``: the main job on the embedded default (see :mod:`ctrlens.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the world, checkpoints, database and reports."),
        days: int = typer.Option(30, "--days", help="Days of synthetic impressions."),
        rows_per_day: int = typer.Option(20_000, "--rows-per-day", help="Impressions per day (bigger runs: 200000)."),
        train_days: int = typer.Option(7, "--train-days", help="Days the models are trained on; the rest are watched."),
        model: List[str] = typer.Option(["din"], "--model", help="Reference models to train and watch (repeatable)."),
        incident: Optional[List[str]] = typer.Option(None, "--incident",
                                                     help="DAY:KIND[:FIELD][:MAGNITUDE] (repeatable; default: three planted incidents)."),
        seed: int = typer.Option(1, "--seed"),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda (DDP over all GPUs when there are several)."),
        fresh: bool = typer.Option(False, "--fresh", help="Delete --out first and start over."),
        serve: bool = typer.Option(True, "--serve/--no-serve", help="Serve the dashboard when done."),
        port: int = typer.Option(8050, "--port", help="Dashboard port on 127.0.0.1."),
    ) -> None:
        """Generate a synthetic world with incidents, train, run the nightly job into SQLite, serve the dashboard."""
        from ctrlens.demo import DEFAULT_INCIDENTS, DemoConfig, print_summary, run_demo

        cfg = DemoConfig(out=out, days=days, rows_per_day=rows_per_day, train_days=train_days, models=tuple(model),
                         incidents=tuple(incident) if incident is not None else DEFAULT_INCIDENTS, seed=seed, device=device)
        res = run_demo(cfg, fresh=fresh)
        url = f"http://127.0.0.1:{port}/" if serve else None
        print_summary(res, url=url)
        if serve:
            from ctrlens.dashboard import create_app

            app = create_app(res.db_url)
            app.run(host="127.0.0.1", port=port, debug=False)
