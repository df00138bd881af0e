"""``ctrlens probes``: layer-wise linear probes of a checkpoint, trained on one day, scored on others."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ctrlens.cli._loading import load_view, open_inputs, print_json, split_layers, store_results
from ctrlens.cli._options import BatchSize, Checkpoint, Data, Device, Heads, Layers, Loader, ResultsDb, ResultsModel, Seed


def register(app: typer.Typer) -> None:
    @app.command("probes")
    def probes(
        *,
        checkpoint: Checkpoint,
        loader: Loader = None,
        data: Data,
        train_day: str = typer.Option(..., "--train-day", help="Day the probes are fitted on (its held-out rows are scored too)."),
        eval_days: Optional[str] = typer.Option(
            None, "--eval-days", help="Days to score: 'D1,D2', a range 'D1:D5' or 'all' (default: up to 7 days after --train-day)."
        ),
        layers: Layers = None,
        head: Heads = ["ctr"],  # noqa: B006 (typer reads the default; never mutated)
        C: float = typer.Option(1.0, "--C", help="Inverse L2 strength, as scikit-learn's LogisticRegression(C=...)."),
        max_rows: int = typer.Option(20000, "--max-rows", help="Training rows sampled from --train-day."),
        holdout: float = typer.Option(0.2, "--holdout", help="Share of --train-day rows held out for scoring."),
        max_eval_rows: int = typer.Option(100000, "--max-eval-rows", help="Rows sampled per scored day."),
        tol: float = typer.Option(0.01, "--tol", help="AUC drop from a layer's input that is reported as information loss."),
        batch_size: BatchSize = 4096,
        seed: Seed = 0,
        device: Device = "cpu",
        as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object (rows, meta, findings)."),
        db: ResultsDb = None,
        model_name: ResultsModel = None,
    ) -> None:
        """How much click (or conversion) signal each layer carries, and how it decays over days."""
        import pandas as pd

        from ctrlens.probes import ProbeSuite
        from ctrlens.train import parse_days

        ds, days = open_inputs(checkpoint, data, device, {"--train-day": train_day})
        if eval_days is None:
            later = [d for d in days if d > train_day][:7]
        else:
            later = [d for d in parse_days(eval_days, days, "--eval-days") if d != train_day]
        view = load_view(checkpoint, ds.schema, loader, device)
        version = view.version
        heads = [h for h, spec in view.heads.items() if spec.label is not None] if head == ["all"] else head
        layer_list = split_layers(layers)

        frames, findings, metas, results = [], [], [], []
        for h in heads:
            suite = ProbeSuite(
                view, layer_list, h, C=C, max_rows=max_rows, holdout=holdout, max_eval_rows=max_eval_rows,
                seed=seed, device=device, batch_size=batch_size,
            ).fit(ds, day=train_day)
            suite.decay(ds, later)
            res = suite.to_result(model_version=version, checkpoint=str(checkpoint))
            frames.append(res.frame)
            results.append(res)
            metas.append(res.meta)
            for d in [train_day] + later:
                f = suite.findings(tol=tol, eval_day=d) if suite.n_holdout_ or d != train_day else pd.DataFrame()
                for r in f.to_dict("records"):
                    findings.append({"head": h, **r})
        frame = pd.concat(frames, ignore_index=True)
        stored = store_results(db, model_name, view, train_day, results,
                               {"command": "probes", "checkpoint": str(checkpoint), "loader": loader, "eval_days": later})  # fmt: skip

        if as_json:
            rows = json.loads(frame.to_json(orient="records"))
            print_json({"kind": "probe", "model_version": version, "checkpoint": str(checkpoint),
                        "rows": rows, "meta": metas, "findings": findings, "stored": stored})
            return
        _print_tables(frame, findings, view.name, version, tol)
        if stored:
            print(stored)


def _print_tables(frame, findings: list[dict], model: str, version: str | None, tol: float) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    for h, hf in frame.groupby("head", sort=False):
        days = list(dict.fromkeys(hf["eval_day"]))
        train_day = hf["train_day"].iloc[0]
        t = Table(title=f"probe AUC, {model} {version or ''} head {h}: trained on {train_day}")
        t.add_column("layer")
        for d in days:
            t.add_column(f"{d}{' (held out)' if d == train_day else ''}", justify="right")
        piv = hf.pivot_table(index="layer", columns="eval_day", values="auc", sort=False, dropna=False)
        for layer in dict.fromkeys(hf["layer"]):
            t.add_row(layer, *[_fmt(piv.loc[layer, d]) for d in days])
        model_auc = hf.drop_duplicates("eval_day").set_index("eval_day")["model_auc"]
        t.add_row("[bold]model[/bold]", *[_fmt(model_auc[d]) for d in days])
        con.print(t)
    if findings:
        for f in findings:
            con.print(
                f"[yellow]information lost[/yellow] head {f['head']} on {f['eval_day']}: {f['layer']} AUC {f['auc']:.4f} "
                f"< {f['previous']} {f['previous_auc']:.4f} (drop {f['drop']:.4f} > {tol})"
            )
    else:
        con.print(f"no layer loses more than {tol} AUC from its input")


def _fmt(x: float) -> str:
    return "n/a" if x != x else f"{x:.4f}"
