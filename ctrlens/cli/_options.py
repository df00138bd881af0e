"""One definition of each option several commands share, as typer ``Annotated`` aliases.

A command declares ``checkpoint: Checkpoint`` (a required option) or ``device: Device = "cpu"`` (the
default stays in the signature); flag, type and help text live here once, so ``ctrlens neurons
--help``, ``ctrlens probes --help`` and ``ctrlens saliency --help`` describe them in the same words.
Options whose meaning differs between commands (``--out``, ``--json``, ``--max-rows``, train's
``--device``) stay with their command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

CHECKPOINT_HELP = "Model checkpoint: a ctrlens train output, or any file (or folder) your --loader reads."
LOADER_HELP = (
    "Your model's loader, 'package.module:function' or 'path/to/file.py:function': function(checkpoint path, schema) "
    "-> ctrlens ModelView (docs/own-model.md). Default: the reference models' loader (ctrlens train checkpoints)."
)
DATA_HELP = "Dataset root (schema.json + day=YYYY-MM-DD/)."
RESULTS_DB_HELP = ("Also write the results to this store (sqlite:///path or postgresql://...), run kind 'analysis', under the "
                   "model version worked out from the checkpoint (no hashes to give).")  # fmt: skip
RESULTS_MODEL_HELP = "Model name in the store (with --db; default: the view's name)."
STORE_HELP = "Store URL: sqlite:///path or postgresql://user:pass@host/db (default: $CTRLENS_DB, else sqlite:///runs/ctrlens.sqlite)."

# -- the model and the data an analysis reads ---------------------------------------------------
Checkpoint = Annotated[Path, typer.Option("--checkpoint", help=CHECKPOINT_HELP)]
Loader = Annotated[Optional[str], typer.Option("--loader", help=LOADER_HELP)]
Data = Annotated[Path, typer.Option("--data", help=DATA_HELP)]
Day = Annotated[str, typer.Option("--day", help="Day to analyse (YYYY-MM-DD).")]
LatestDay = Annotated[Optional[str], typer.Option("--day", help="Day to analyse (YYYY-MM-DD; default: the latest).")]
Device = Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Rows per forward pass.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed of the row sampling (same seed, same rows).")]
Layers = Annotated[Optional[str], typer.Option("--layers", help="Comma-separated layer names or globs (default: all), e.g. 'embedding,mlp.*'.")]
Heads = Annotated[list[str], typer.Option("--head", help="Head(s) to analyse; repeat (e.g. --head ctr --head cvr) or 'all'.")]

# -- the store ------------------------------------------------------------------------------------
ResultsDb = Annotated[Optional[str], typer.Option("--db", help=RESULTS_DB_HELP)]
ResultsModel = Annotated[Optional[str], typer.Option("--model", help=RESULTS_MODEL_HELP)]
StoreUrl = Annotated[Optional[str], typer.Option("--db", help=STORE_HELP)]


def check_device(device: str) -> None:
    """Refuse ``--device cuda...`` on a machine without CUDA (an InputError naming the flag)."""
    if device.startswith("cuda"):
        import torch

        from ctrlens.errors import InputError

        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine")
