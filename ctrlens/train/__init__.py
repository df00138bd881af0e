"""Training of reference models: one process or DDP (``torchrun`` / ``--nproc``), checkpoints, evaluation.

Example::

    from ctrlens.train import train
    res = train("din", "world/", "2026-01-01:2026-01-07", out_dir="runs/din", checkpoint_every=500,
                eval_days=["2026-01-08"])
    res.eval["2026-01-08"].frame   # Result("quality"): auc, gauc, logloss, ne, calibration per head

See docs/training.md.
"""

from ctrlens.train.config import MODEL_NAMES, TrainConfig, TrainingError, parse_days
from ctrlens.train.trainer import StepInfo, TrainResult, train

__all__ = ["MODEL_NAMES", "StepInfo", "TrainConfig", "TrainResult", "TrainingError", "parse_days", "train"]
