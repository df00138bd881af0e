"""``ctrlens saliency``: per-field saliency report of a checkpoint on a day (HTML or JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ctrlens.cli._loading import load_view, store_results
from ctrlens.cli._options import BatchSize, Checkpoint, Data, Device, Heads, LatestDay, Loader, ResultsDb, ResultsModel, Seed
from ctrlens.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command("saliency")
    def saliency(
        *,
        checkpoint: Checkpoint,
        loader: Loader = None,
        data: Data,
        out: Path = typer.Option(..., "--out", help="report.html (standalone page) or report.json."),
        day: LatestDay = None,
        method: str = typer.Option("input_x_gradient", "--method",
                                   help="input_x_gradient (default: ranks fields like permutation importance) | saliency "
                                        "| integrated_gradients."),
        head: Heads = ["ctr"],  # noqa: B006 (typer reads the default; never mutated)
        compare_day: Optional[str] = typer.Option(
            None, "--compare-day", help="Reference day: the report shows each field's change of share from it."
        ),
        baseline: Optional[str] = typer.Option(
            None, "--baseline", help="mean | zero (input_x_gradient, integrated_gradients; default: mean, the day's "
                                     "analysed rows' mean embedding per field)."
        ),
        target: str = typer.Option("logit", "--target", help="logit (recommended) | probability."),
        max_rows: int = typer.Option(20000, "--max-rows", help="Rows sampled from the day."),
        batch_size: BatchSize = 4096,
        n_steps: int = typer.Option(16, "--n-steps", help="Integrated Gradients steps."),
        seed: Seed = 0,
        device: Device = "cpu",
        db: ResultsDb = None,
        model_name: ResultsModel = None,
    ) -> None:
        """Which feature fields drive the model's predictions on a day (captum gradients per field)."""
        suffix = out.suffix.lower()
        if suffix not in (".html", ".htm", ".json"):
            raise InputError(f"--out {out}: expected a .html or .json file name")
        from rich.console import Console

        from ctrlens.saliency import report
        from ctrlens.saliency._inputs import open_dataset

        ds = open_dataset(str(data))
        view = load_view(checkpoint, ds.schema, loader, device)
        heads = None if head == ["all"] else head
        kw = dict(method=method, head=heads, max_rows=max_rows, batch_size=batch_size, n_steps=n_steps,
                  baseline=baseline, seed=seed, device=device, target=target)
        rep = report(view, ds, day=day, **kw)
        ref = report(view, ds, day=compare_day, **kw) if compare_day else None
        if suffix == ".json":
            rep.to_json(out, reference=ref)
        else:
            rep.to_html(out, reference=ref)
        con = Console(stderr=True)
        top = rep.top(5)
        con.print(
            f"saliency of {rep.meta['model']} on {rep.meta['day']} ({rep.meta['rows']} rows, {method}): "
            + ", ".join(f"{r.field} {r.share:.0%}" for r in top.itertuples())
        )
        if ref is not None:
            ch = ref.compare(rep).head(3)
            con.print(f"largest changes vs {compare_day}: " + ", ".join(f"{r.field} {r.delta:+.1%}" for r in ch.itertuples()))
        con.print(f"wrote {out}")
        stored = store_results(db, model_name, view, rep.meta["day"], [rep.to_result()],
                               {"command": "saliency", "checkpoint": str(checkpoint), "loader": loader, "method": method})  # fmt: skip
        if stored:
            con.print(stored)
