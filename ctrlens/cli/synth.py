"""``ctrlens synth``: generate the synthetic CTR world (ctrlens.synth) into a folder."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

_INCIDENT_HELP = (
    "Plant an incident: DAY:KIND[:FIELD][:MAGNITUDE], DAY an index from 0 or a date YYYY-MM-DD. "
    "Repeatable. Kinds: stuck_value, shuffled, missing_spike, oov_surge, blank_images (corrupt the logged "
    "features only), distribution_shift, ctr_level_shift, position_bias_change (change the world). "
    "E.g. --incident 12:stuck_value:category_id --incident 20:ctr_level_shift:0.8"
)


def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the world into (must be empty, or use --overwrite)."),
    days: int = typer.Option(30, "--days", min=1, help="Number of days."),
    rows_per_day: int = typer.Option(50_000, "--rows-per-day", min=1, help="Impressions per day."),
    seed: int = typer.Option(1, "--seed", help="Random seed; same arguments give the same bytes."),
    start: str = typer.Option("2026-01-01", "--start", help="Date of the first day, YYYY-MM-DD."),
    incident: Optional[List[str]] = typer.Option(None, "--incident", help=_INCIDENT_HELP),
    n_users: int = typer.Option(20_000, "--n-users", min=1, help="Number of users."),
    n_items: int = typer.Option(5_000, "--n-items", min=1, help="Items existing on the first day."),
    new_items_per_day: int = typer.Option(50, "--new-items-per-day", min=0, help="Items created each day."),
    n_categories: int = typer.Option(40, "--n-categories", min=1, help="Number of categories."),
    n_shops: int = typer.Option(400, "--n-shops", min=1, help="Number of shops."),
    max_hist: int = typer.Option(20, "--max-hist", min=1, help="Maximum behaviour history length."),
    image_size: int = typer.Option(32, "--image-size", min=4, help="Item images are 3 x SIZE x SIZE."),
    item_tags: int = typer.Option(0, "--item-tags", min=0, help="Opt-in bag field item_tags: this many tags (0: off)."),
    max_tags: int = typer.Option(4, "--max-tags", min=1, help="Tags per item at most (with --item-tags)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a synthetic world already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Generate a synthetic e-commerce impression log with a known ground-truth click model.

    Writes the daily data contract layout (schema.json, day=YYYY-MM-DD/part-0.parquet, images.parquet)
    plus ground_truth.json (true importance per field, examination curve, incident log, daily rates).
    See docs/synthetic-world.md.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ctrlens.synth import Incident, generate, validate_incidents

    # validate everything before touching the disk or starting a bar
    incs = validate_incidents([Incident.parse(s, start=start) for s in incident or []], days, tags=item_tags > 0)
    tags = {"item_tags": item_tags, "max_tags": max_tags} if item_tags else {}
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]synth[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("days"), TimeElapsedColumn(),
        console=console, disable=quiet, transient=True,
    ) as bar:
        task = bar.add_task("days", total=days)
        world = generate(
            out, days=days, rows_per_day=rows_per_day, seed=seed, incidents=incs, start=start, n_users=n_users,
            n_items=n_items, new_items_per_day=new_items_per_day, n_categories=n_categories, n_shops=n_shops,
            max_hist=max_hist, image_size=image_size, overwrite=overwrite, **tags,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    gt = world.ground_truth
    t = gt["totals"]
    cvr = t["conversions"] / t["clicks"] if t["clicks"] else 0.0
    typer.echo(f"wrote {out}: {len(gt['days'])} days {gt['days'][0]['date']}..{gt['days'][-1]['date']}, "
               f"{t['rows']:,} rows, CTR {t['ctr']:.4f}, CVR {cvr:.4f}, {gt['config']['n_items'] + len(gt['days']) * gt['config']['new_items_per_day']:,} items")
    typer.echo(f"true importance (click): {', '.join(gt['importance_rank']['click'][:5])}, ...")
    if gt["incidents"]:
        for i in gt["incidents"]:
            field = f" {i['field']}" if i["field"] else ""
            typer.echo(f"incident day {i['day']} ({i['date']}): {i['kind']}{field} magnitude {i['magnitude']:g} [{i['effect']}]")
    else:
        typer.echo("incidents: none")


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
