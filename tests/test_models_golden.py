"""Reference models keep their parameter names, init order and outputs across refactors.

``tests/data/reference_models_golden.json`` was written by :func:`snapshot` running on ``main``'s
code (commit 0930607) before the reference models were recomposed from shared blocks (``cd /tmp &&
PYTHONPATH=<that checkout> python <this file> > reference_models_golden.json``). A checkpoint saved before must load after (same state_dict keys, in the same order, so
optimizer states line up too), and the same seed must give the same weights and outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import reference_models as rm
from ctrlens.models.checkpoint import weights_hash
from models_fixtures import random_batch, world_schema

GOLDEN = Path(__file__).parent / "data" / "reference_models_golden.json"
#: (model, preset, overrides): every model, both presets, and the options that change the module tree.
VARIANTS: list[tuple[str, str, dict]] = [
    *[(n, "default", {}) for n in rm.MODEL_NAMES],
    *[(n, "paper", {}) for n in rm.MODEL_NAMES],
    ("base", "default", {"use_position": True, "batch_norm": True, "dropout": 0.1}),
    ("din", "default", {"softmax": True, "batch_norm": True, "attention_groups": ()}),
    ("dicm", "default", {"aggregator": "sum"}),
    ("dicm", "default", {"aggregator": "attentive"}),
    ("esmm", "default", {"batch_norm": True, "mba_lambda": 0.1}),
    ("pal", "default", {"ctr_net": "din", "seen_hidden": (4,)}),
    ("xdeepfm", "default", {"use_linear": False, "split_half": True, "cin": (6, 4)}),
    ("xdeepfm", "default", {"use_cin": False, "use_dnn": False}),
]


def _key(name: str, preset: str, kw: dict) -> str:
    return f"{name}/{preset}/{json.dumps(kw, sort_keys=True)}"


def snapshot(name: str, preset: str, kw: dict) -> dict:
    """Ordered state_dict names and shapes, the seed-0 weights hash, and output sums on a fixed batch."""
    torch.manual_seed(0)
    schema = world_schema()
    m = rm.build(name, schema, preset=preset, **kw).eval()
    sd = m.state_dict()
    with torch.no_grad():
        out = m(random_batch(schema, 12))
        loss = float(m.loss(out, random_batch(schema, 12)))
    return {
        "keys": [f"{k} {list(v.shape)}" for k, v in sd.items()],
        "weights_hash": weights_hash(sd),
        "outputs": {k: float(v.double().sum()) for k, v in sorted(out.items())},
        "loss": loss,
    }


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: _key(*v))
def test_same_names_init_and_outputs_as_before(variant, golden):
    want = golden[_key(*variant)]
    got = snapshot(*variant)
    assert got["keys"] == want["keys"]  # names, shapes and order: old checkpoints and optimizer states load
    assert got["weights_hash"] == want["weights_hash"]  # same seed -> same initial weights
    assert got["outputs"].keys() == want["outputs"].keys()
    for k, v in want["outputs"].items():
        assert got["outputs"][k] == pytest.approx(v, rel=1e-6, abs=1e-6), k
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)


if __name__ == "__main__":
    print(json.dumps({_key(*v): snapshot(*v) for v in VARIANTS}, indent=1))
