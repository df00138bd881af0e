"""``ctrlens neurons``: neuron statistics of a checkpoint on one day (and a comparison with another)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ctrlens.cli._loading import load_view, open_inputs, print_json, split_layers, store_results
from ctrlens.cli._options import BatchSize, Checkpoint, Data, Day, Device, Layers, Loader, ResultsDb, ResultsModel
from ctrlens.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command("neurons")
    def neurons(
        *,
        checkpoint: Checkpoint,
        loader: Loader = None,
        data: Data,
        day: Day,
        compare_day: Optional[str] = typer.Option(
            None, "--compare", help="A second day, summarised with --day as reference and compared with it."
        ),
        reference: Optional[Path] = typer.Option(
            None, "--reference", help="Summary JSON of the reference day (from --out): its histogram edges and 2-D basis are reused."
        ),
        layers: Layers = None,
        out: Optional[Path] = typer.Option(None, "--out", help="Write the day's summary (mergeable state) as JSON here."),
        batch_size: BatchSize = 4096,
        limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N rows of each day."),
        bins: int = typer.Option(32, "--bins"),
        sample_size: int = typer.Option(2000, "--sample-size", help="Rows kept for the 2-D projection."),
        hist_rate: float = typer.Option(1.0, "--hist-rate", help="Share of rows in the histograms (1 = all)."),
        engine: str = typer.Option("eager", "--engine", help="eager | compiled (torch.compile kernels; faster on big days)."),
        tables: bool = typer.Option(False, "--tables", help="Also report embedding-table health."),
        device: Device = "cpu",
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object (layer rows, comparison, tables)."),
        db: ResultsDb = None,
        model_name: ResultsModel = None,
    ) -> None:
        """Per-layer dead / saturated fractions and activation size; per-neuron statistics with --out."""
        from ctrlens.neurons import NeuronMonitor, NeuronSummary, compare, embedding_health

        if engine not in ("eager", "compiled"):
            raise InputError(f"--engine must be 'eager' or 'compiled', got {engine!r}")
        ds, _ = open_inputs(checkpoint, data, device, {"--day": day, "--compare": compare_day})
        ref = NeuronSummary.load(reference) if reference is not None else None
        view = load_view(checkpoint, ds.schema, loader, device)
        layer_list = split_layers(layers)
        kw = dict(bins=bins, sample_size=sample_size, hist_rate=hist_rate, engine=engine)

        def summarise(d: str, r: NeuronSummary | None) -> NeuronSummary:
            mon = NeuronMonitor(view, layer_list, reference=r, **kw)  # type: ignore[arg-type]
            return mon.run(ds.iter_batches(d, batch_size, limit=limit, images=False))

        s = summarise(day, ref)
        if out is not None:
            s.save(out)
        cmp = None
        if compare_day is not None:
            cmp = compare(s, summarise(compare_day, s), names=(day, compare_day))
        health = embedding_health(view, s.seen) if tables else None
        version = view.version
        lay = s.layers().drop(columns=["edges_json", "projection_json"])
        stored = store_results(db, model_name, view, day, [*s.to_results(), *([health] if health is not None else [])],
                               {"command": "neurons", "checkpoint": str(checkpoint), "loader": loader, "layers": layer_list})  # fmt: skip
        if as_json:
            obj = {
                "kind": "neurons",
                "model": view.name,
                "model_version": version,
                "day": day,
                "layers": json.loads(lay.to_json(orient="records")),
                "compare": None if cmp is None else {"day": compare_day, "layers": json.loads(cmp.layers.to_json(orient="records"))},
                "tables": None if health is None else json.loads(health.frame.drop(columns=["hist_json"]).to_json(orient="records")),
                "out": None if out is None else str(out),
                "stored": stored,
            }
            print_json(obj)
            return
        _print(view.name, version, day, lay, cmp, health)
        if stored:
            print(stored)


def _fmt(x: float, spec: str = ".4f") -> str:
    return "n/a" if x != x else format(x, spec)


def _print(model: str, version: str | None, day: str, lay, cmp, health) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title=f"neurons of {model} {version or ''} on {day}")
    for c in ("layer", "activation", "neurons", "rows", "dead", "saturated", "mean |a|"):
        t.add_column(c, justify="left" if c in ("layer", "activation") else "right", no_wrap=c == "layer")
    for r in lay.itertuples(index=False):
        t.add_row(
            r.layer, r.activation, str(r.n_neurons), str(r.count), _fmt(r.dead_fraction, ".1%"),
            _fmt(r.saturated_fraction, ".1%"), _fmt(r.mean_abs),
        )
    con.print(t)
    if cmp is not None:
        c = Table(title=f"{cmp.meta['b']} against {cmp.meta['a']}")
        for col in ("layer", "dead delta", "max |shift|", "max PSI", "fluctuation"):
            c.add_column(col, justify="left" if col == "layer" else "right", no_wrap=col == "layer")
        for r in cmp.layers.itertuples(index=False):
            c.add_row(r.layer, _fmt(r.dead_fraction_delta, "+.1%"), _fmt(r.abs_shift_max, ".2f"), _fmt(r.psi_max, ".3f"), _fmt(r.fluctuation, ".3f"))
        con.print(c)
    if health is not None:
        h = Table(title="embedding tables")
        for col in ("table", "rows", "dim", "seen", "norm p50", "effective rank", "info abundance"):
            h.add_column(col, justify="left" if col == "table" else "right", no_wrap=col == "table")
        for r in health.frame.itertuples(index=False):
            h.add_row(r.table, str(r.rows), str(r.dim), str(r.seen_rows), _fmt(r.norm_p50), _fmt(r.effective_rank, ".2f"), _fmt(r.info_abundance, ".2f"))
        con.print(h)
