"""Shared helpers for the synthetic-world tests: tiny worlds that generate in well under a second."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ctrlens.synth import SynthWorld, generate

SMALL = dict(n_users=2_000, n_items=600, n_categories=20, n_shops=100, new_items_per_day=20, importance_rows=2_000)


def small_world(root: Path, *, days: int = 6, rows_per_day: int = 3_000, seed: int = 7, **kw) -> SynthWorld:
    return generate(root, days=days, rows_per_day=rows_per_day, seed=seed, **{**SMALL, **kw})


def read_day(world: SynthWorld, day: int) -> pd.DataFrame:
    return pd.read_parquet(world.day_dir(day) / "part-0.parquet")


def read_all(world: SynthWorld) -> pd.DataFrame:
    return pd.concat([read_day(world, d).assign(day=d) for d in range(len(world.days))], ignore_index=True)


def history_match(df: pd.DataFrame) -> np.ndarray:
    """Rows whose history holds a behaviour of the candidate's category (the DIN relation)."""
    return np.array([c in h for c, h in zip(df["category_id"].to_numpy(), df["hist_category_id"])], dtype=bool)


def fit_eta(df: pd.DataFrame) -> float:
    """Least-squares slope of -log(CTR(pos) / CTR(1)) on log(pos), weighted by clicks."""
    g = df.groupby("position")["click"].agg(["mean", "sum"])
    pos = g.index.to_numpy(dtype=float)
    y = -np.log(g["mean"].to_numpy() / g["mean"].iloc[0])
    x = np.log(pos)
    w = g["sum"].to_numpy(dtype=float)
    return float((w * x * y).sum() / (w * x * x).sum())
