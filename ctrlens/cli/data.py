"""``ctrlens data ...``: check a dataset, print a day's field statistics, convert a plain table or MovieLens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ctrlens.errors import InputError

data_app = typer.Typer(
    help="The daily data contract (docs/data-format.md): validate, field statistics, table and MovieLens converters.",
    no_args_is_help=True,
)


@data_app.command("validate")
def validate(
    root: Path = typer.Argument(..., help="Dataset root (schema.json + day=YYYY-MM-DD/*.parquet)."),
    day: Optional[list[str]] = typer.Option(None, "--day", help="Check only this day (repeatable); default: all."),
) -> None:
    """Check every row of the dataset (or of the given days) against the data contract."""
    from ctrlens.data import DailyDataset

    ds = DailyDataset(root)
    days = list(day) if day else ds.days()
    if not days:
        raise InputError(f"{root}: no day=YYYY-MM-DD partitions found")
    rows = 0
    for d in days:
        report = ds.validate(d)
        rows += report.rows
        typer.echo(report.summary())
    typer.echo(f"{len(days)} day(s), {rows} rows: valid")


@data_app.command("stats")
def stats(
    root: Path = typer.Argument(..., help="Dataset root."),
    day: str = typer.Option(..., "--day", help="The day (YYYY-MM-DD)."),
    as_json: bool = typer.Option(False, "--json", help="Print the Result as JSON instead of a table."),
    top_k: int = typer.Option(20, "--top-k", min=1, help="Top values listed per field."),
    bins: int = typer.Option(20, "--bins", min=1, help="Histogram bins of dense fields."),
) -> None:
    """Per-field statistics of one day (coverage, missing, OOV, cardinality, moments, top values)."""
    from ctrlens.data import DailyDataset
    from ctrlens.data.stats import field_stats

    result = field_stats(DailyDataset(root), day, top_k=top_k, bins=bins)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{root} {day}: {result.meta['rows']} rows")
    for col in ("field", "kind", "coverage", "missing", "oov", "cardinality", "mean", "std", "top values"):
        t.add_column(col, justify="left" if col in ("field", "kind", "top values") else "right")
    for r in result.frame.itertuples():
        top = ", ".join(f"{v}:{s:.1%}" for v, s in r.top_json[:3])
        t.add_row(r.field, r.kind, f"{r.coverage:.1%}", f"{r.missing_rate:.1%}", f"{r.oov_rate:.2%}",
                  str(r.cardinality), f"{r.mean:.4g}", f"{r.std:.4g}", top)
    import sys

    Console(width=None if sys.stdout.isatty() else 200).print(t)


@data_app.command("movielens")
def movielens(
    src: Path = typer.Option(..., "--src", help="MovieLens folder with ratings.csv and movies.csv."),
    out: Path = typer.Option(..., "--out", help="Dataset root to write."),
    max_len: int = typer.Option(20, "--max-len", help="History length kept (most recent earlier ratings)."),
    partition: str = typer.Option("month", "--partition", help="'day', 'month' or '<N>d' (N-day slices)."),
    days_per_partition: Optional[int] = typer.Option(
        None, "--days-per-partition", help="Shorthand for --partition <N>d."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing ctrlens dataset at --out."),
) -> None:
    """Convert MovieLens ratings into the data contract (one row per rating, click = rating >= 4)."""
    from ctrlens.data.movielens import convert

    if days_per_partition is not None:
        if days_per_partition < 1:
            raise InputError(f"--days-per-partition must be >= 1, got {days_per_partition}")
        partition = f"{days_per_partition}d"
    info = convert(src, out, max_len=max_len, partition=partition, overwrite=overwrite)
    typer.echo(f"wrote {info.rows} rows ({info.users} users, {info.items} items, click rate "
               f"{info.click_rate:.1%}) in {info.partitions} partitions {info.first_day} .. {info.last_day} to {out}")


@data_app.command("convert")
def convert(
    src: Path = typer.Argument(..., help="The table: .csv (header row) or .parquet, one row per impression."),
    mapping: Path = typer.Option(..., "--mapping", help="YAML column mapping (time, fields, labels); see docs/data-format.md."),
    out: Path = typer.Option(..., "--out", help="Dataset root to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing ctrlens dataset at --out."),
) -> None:
    """Convert a plain table into the data contract (vocabularies and normalisation from the reference days)."""
    from ctrlens.data.convert import convert_table

    res = convert_table(src, mapping, out, overwrite=overwrite)
    f = res.schema
    typer.echo(f"wrote {res.rows} rows in {len(res.days)} day(s) {res.days[0]} .. {res.days[-1]} to {out}: "
               f"{len(f.fields)} field(s) ({', '.join(f'{x.name}:{x.kind}' for x in f.fields)}), "
               f"label(s) {', '.join(f.labels)}; vocabularies from {res.reference_days[0]} .. {res.reference_days[-1]}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
