"""``ctrlens train``: train a reference model on days of a dataset (one process, --nproc N, or torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ctrlens.cli._options import Data
from ctrlens.errors import InputError


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["mlp=[64,32]", "mba_lambda=0.01"]`` -> ``{"mlp": [64, 32], "mba_lambda": 0.01}`` (YAML values)."""
    import yaml

    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise InputError(f"--set {it!r}: expected KEY=VALUE, e.g. --set mlp=[64,32]")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            raise InputError(f"--set {it!r}: value is not valid YAML ({e})") from None
    return out


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        *,
        data: Data,
        model: str = typer.Option(..., "--model", help="base | din | dicm | esmm | pal | xdeepfm."),
        days: str = typer.Option(..., "--days", help="Training days: A:B (inclusive), A,B,C or 'all'."),
        out: Path = typer.Option(..., "--out", help="Run directory for checkpoints and train.json."),
        nproc: int = typer.Option(1, "--nproc", help="DDP processes to spawn (gloo on CPU, NCCL on CUDA)."),
        device: str = typer.Option("cpu", "--device", help="cpu | cuda (rank r uses cuda:r)."),
        resume: Optional[Path] = typer.Option(None, "--resume", help="Continue an interrupted run exactly from this checkpoint."),
        init: Optional[Path] = typer.Option(None, "--init", help="Warm start from this checkpoint (incremental daily training)."),
        eval_days: Optional[str] = typer.Option(None, "--eval-days", help="Days to evaluate at the end (same syntax as --days)."),
        epochs: int = typer.Option(1, "--epochs"),
        batch_size: int = typer.Option(1024, "--batch-size", help="Global batch (split across processes)."),
        lr: float = typer.Option(1e-3, "--lr"),
        optimizer: str = typer.Option("adam", "--optimizer", help="adam | adamw | sgd | adagrad."),
        seed: int = typer.Option(0, "--seed"),
        checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Save a checkpoint every N steps (a final one is always saved)."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N steps of this run."),
        limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N rows of each training day."),
        eval_limit: Optional[int] = typer.Option(None, "--eval-limit", help="Use only the first N rows of each eval day."),
        preset: str = typer.Option("default", "--preset", help="Model sizes: default (small) | paper."),
        set_: list[str] = typer.Option([], "--set", help="Model config override KEY=VALUE (repeatable), e.g. --set mlp=[64,32]."),
        save_initial: bool = typer.Option(False, "--save-initial", help="Also checkpoint the weights before the first step."),
        overwrite: bool = typer.Option(False, "--overwrite", help="A fresh run may delete the checkpoints already in --out."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    ) -> None:
        """Train a reference model on days of the data contract; write checkpoints and eval metrics."""
        from rich.console import Console

        from ctrlens.train import train

        config = parse_overrides(set_)
        if preset != "default":
            config["preset"] = preset
        con = Console(stderr=True)
        res = train(
            model, data, days, out_dir=out, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
            seed=seed, device=device, checkpoint_every=checkpoint_every, resume_from=resume, init_from=init,
            eval_days=eval_days or (), max_steps=max_steps, nproc=nproc, model_config=config,
            show_progress=progress, limit=limit, eval_limit=eval_limit, save_initial=save_initial, overwrite=overwrite,
        )
        if res is None:  # a non-zero torchrun rank
            return
        print_summary(res, Console())
        con.print(f"wrote {len(res.checkpoints)} checkpoint(s) to {res.out_dir}; final: {res.final}")


def print_summary(res: Any, console: Any) -> None:
    """A table of eval metrics per day and head, plus the run's numbers."""
    from rich.table import Table

    info = res.final_info
    last = f"; last loss {res.losses[-1]:.4f}" if res.losses else ""
    console.print(
        f"[bold]{info.model_name}[/] version {info.version}: {res.steps_run} steps this run (step {res.step}), "
        f"{res.world_size} process(es), {res.seconds:.1f} s; days seen {', '.join(info.days_seen)}{last}"
    )
    if not res.eval:
        return
    t = Table(title="evaluation")
    for c in ("day", "head", "rows", "AUC", "GAUC", "LogLoss", "NE", "calib."):
        t.add_column(c, justify="right" if c not in ("day", "head") else "left")
    fmt = lambda x: "-" if x != x else f"{x:.4f}"  # noqa: E731  (nan -> "-")
    for day, r in res.eval.items():
        for row in r.frame.itertuples():
            t.add_row(day, row.head, str(row.rows), fmt(row.auc), fmt(row.gauc), fmt(row.logloss), fmt(row.ne), fmt(row.calibration))
    console.print(t)
