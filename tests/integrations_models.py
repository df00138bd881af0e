"""What a team using torchrec or DeepCTR-Torch writes: the model as the library builds it, a few lines of
training, a checkpoint (their own ``state_dict`` file plus a sidecar saying which days it was trained on),
and a loader ``(checkpoint, schema) -> ModelView`` that the nightly YAML names.

Used by the end-to-end tests (tests/integrations_world.py); docs/torchrec.md and docs/deepctr-torch.md show
the same steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

HIST = ["item_id", "category_id"]  # DIN's history features: hist_item_id, hist_category_id


def build(kind: str, schema: Any) -> torch.nn.Module:
    """The model of ``kind`` (``dlrm``, ``din``, ``deepfm``), built by its library, seeded."""
    torch.manual_seed(0)
    if kind == "dlrm":
        from ctrlens.integrations.torchrec import make_dlrm

        return make_dlrm(schema, dim=8, dense_arch=(16,), over_arch=(32, 16), seed=0)
    from ctrlens.integrations.deepctr import feature_columns  # first: it imports deepctr_torch quietly
    from deepctr_torch.models import DIN, DeepFM

    cols = feature_columns(schema, dim=8)
    if kind == "din":
        return DIN(cols, HIST, dnn_hidden_units=(32, 16), att_hidden_size=(16, 8), init_std=0.05, seed=0)
    if kind == "deepfm":
        return DeepFM(cols, cols, dnn_hidden_units=(32, 16), init_std=0.05, seed=0)
    raise ValueError(f"unknown model kind {kind!r}")


def view_of(kind: str, model: torch.nn.Module, schema: Any):
    if kind == "dlrm":
        from ctrlens.integrations.torchrec import attach_dlrm

        return attach_dlrm(model, schema, name="dlrm")
    from ctrlens.integrations.deepctr import attach

    return attach(model, schema, name=kind)


def train_and_save(kind: str, data: Path, days: Sequence[str], out: Path, *, epochs: int = 2, lr: float = 3e-3) -> Path:
    """Train ``kind`` on ``days`` of the dataset at ``data`` (BCE on click, Adam); write ``out`` (the
    state_dict) and ``out.json`` (``{"trained_through": last day}``). Returns ``out``."""
    from ctrlens.data import DailyDataset

    ds = DailyDataset(data)
    model = build(kind, ds.schema)
    view = view_of(kind, model, ds.schema)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        for d in days:
            for b in ds.iter_batches(d, 256, shuffle=True, seed=epoch, images=False):
                p = view(b)["ctr"].clamp(1e-6, 1 - 1e-6)
                loss = torch.nn.functional.binary_cross_entropy(p, b.labels["click"])
                opt.zero_grad()
                loss.backward()
                opt.step()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    Path(str(out) + ".json").write_text(json.dumps({"trained_through": max(days)}))
    return out


def _load(kind: str, checkpoint: Path, schema: Any):
    model = build(kind, schema)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return view_of(kind, model.eval(), schema)


# the loaders the nightly YAML names: "<this file>:load_dlrm" etc.
def load_dlrm(checkpoint: Path, schema: Any):
    return _load("dlrm", checkpoint, schema)


def load_din(checkpoint: Path, schema: Any):
    return _load("din", checkpoint, schema)


def load_deepfm(checkpoint: Path, schema: Any):
    return _load("deepfm", checkpoint, schema)
