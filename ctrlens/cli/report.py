"""``ctrlens report``: write the daily HTML + Markdown report of one model-day from the store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ctrlens.cli._options import Loader, StoreUrl


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        *,
        db: StoreUrl = None,
        model: str = typer.Option(..., "--model", help="Model name as in the nightly config."),
        day: Optional[str] = typer.Option(None, "--day", help="Day (default: the model's latest nightly day; with --checkpoint, "
                                          "the latest day that checkpoint's version ran)."),  # fmt: skip
        out: Path = typer.Option(Path("reports"), "--out", help="Output folder (files <day>.html and <day>.md)."),
        checkpoint: Optional[Path] = typer.Option(
            None, "--checkpoint", help="Report on this checkpoint's model version (worked out from the file; needs --data)."
        ),
        loader: Loader = None,
        data: Optional[Path] = typer.Option(None, "--data", help="Dataset root whose schema the checkpoint is loaded for (with --checkpoint)."),
    ) -> None:
        """The daily report of a model (findings, drift, quality, saliency, layers), built from the store."""
        import datetime as dt

        from ctrlens.errors import InputError
        from ctrlens.monitor.config import RUN_KIND
        from ctrlens.monitor.report import write_report
        from ctrlens.store import Store

        vid = view = None
        if checkpoint is not None or loader is not None:
            if checkpoint is None or data is None:
                raise InputError("--checkpoint/--loader: give both --checkpoint and --data (the dataset the model reads)")
            from ctrlens.cli._loading import load_view
            from ctrlens.data import DailyDataset

            view = load_view(checkpoint, DailyDataset(data).schema, loader)
        if day is not None:
            try:
                day = dt.date.fromisoformat(day).isoformat()
            except ValueError:
                raise InputError(f"--day {day!r} is not a day (expected YYYY-MM-DD)") from None
        with Store(db) as store:
            if view is not None:
                from ctrlens.store.versions import version_key

                ck, sh, _ = version_key(view)
                vid = store.version_id(model, ck, sh)
                if vid is None:
                    raise InputError(f"--checkpoint {checkpoint}: its version {ck} (schema {sh}) of model {model!r} has no runs "
                                     f"in {store.url_text}; its versions there: {list(store.versions(model)['checkpoint_hash'])}")  # fmt: skip
            if day is None:
                day = store.latest_day(model, version=vid, run_kind=RUN_KIND)
                if day is None:
                    known = sorted(store.models()["model"])
                    raise InputError(f"model {model!r} has no nightly runs in {store.url_text}; models: {known}")
            if vid is not None:
                r = store.runs(model=model, days=day, run_kind=RUN_KIND)
                r = r[r["status"] == "complete"] if len(r) else r
                if len(r) and int(r.sort_values("finished_at").iloc[-1]["version_id"]) != vid:
                    raise InputError(f"on {day} model {model!r} ran version #{int(r.sort_values('finished_at').iloc[-1]['version_id'])}, "
                                     f"not --checkpoint {checkpoint}'s version #{vid}; its days: {store.days(version=vid, run_kind=RUN_KIND)}")  # fmt: skip
            paths = write_report(store, model, day, out)
        for p in paths:
            print(p)
