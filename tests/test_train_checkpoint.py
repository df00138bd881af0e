"""Checkpoint format: round trip, hash, atomic write, schema refusal, latest."""

from __future__ import annotations

import pytest
import torch

from ctrlens.models.checkpoint import (
    CheckpointError,
    checkpoint_info,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    weights_hash,
)
from train_fixtures import OTHER_SCHEMA, SCHEMA, TinyConfig, TinyModel, build_tiny


def _model(seed: int = 0, hidden: int = 8) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel(SCHEMA, TinyConfig(hidden=hidden))


def test_round_trip_and_info(tmp_path) -> None:
    m = _model(hidden=6)
    opt = torch.optim.Adam(m.parameters())
    p = checkpoint_path(tmp_path, 12)
    info = save_checkpoint(p, m, optimizer=opt, step=12, days_seen=["2026-01-01"], extra={"note": "x"})
    assert p.name == "ckpt-step000000012.pt" and p.exists()
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed away
    i2 = checkpoint_info(p)
    assert i2 == info
    assert (i2.model_name, i2.step, i2.days_seen, i2.config, i2.schema_hash) == ("tiny", 12, ("2026-01-01",), {"hidden": 6, "dropout": 0.0}, SCHEMA.hash)
    assert i2.version == weights_hash(m.state_dict()) and len(i2.version) == 16
    assert i2.has_optimizer and i2.extra == {"note": "x"}
    m2 = load_checkpoint(p, SCHEMA, builder=build_tiny)
    assert m2.config.hidden == 6 and not m2.training
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert m2.ctrlens_checkpoint.version == info.version
    ck = read_checkpoint(p)
    assert set(ck["rng"][0]) >= {"torch", "numpy", "python"}


def test_hash_changes_with_weights_only(tmp_path) -> None:
    a, b = _model(0), _model(0)
    assert weights_hash(a.state_dict()) == weights_hash(b.state_dict())
    with torch.no_grad():
        b.out.bias += 1e-6
    assert weights_hash(a.state_dict()) != weights_hash(b.state_dict())


def test_other_schema_refused_with_both_hashes_and_field(tmp_path) -> None:
    p = tmp_path / "c.pt"
    save_checkpoint(p, _model(), step=1)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p, OTHER_SCHEMA, builder=build_tiny)
    msg = str(e.value)
    assert SCHEMA.hash in msg and OTHER_SCHEMA.hash in msg
    assert "field 'item_id' changed" in msg and "vocab_size: 30 -> 35" in msg


def test_missing_corrupt_and_nonfinite(tmp_path) -> None:
    save_checkpoint(tmp_path / "a.pt", _model(), step=1)
    with pytest.raises(CheckpointError, match=r"nope\.pt: file not found; checkpoints in .*a\.pt"):
        load_checkpoint(tmp_path / "nope.pt", builder=build_tiny)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        checkpoint_info(tmp_path / "bad.pt")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a ctrlens checkpoint"):
        checkpoint_info(tmp_path / "other.pt")
    m = _model()
    with torch.no_grad():
        m.out.weight[0, 0] = float("nan")
    with pytest.raises(Exception, match="non-finite weights .*out.weight"):
        save_checkpoint(tmp_path / "nan.pt", m, step=2)
    assert not (tmp_path / "nan.pt").exists()


def test_latest_checkpoint(tmp_path) -> None:
    assert latest_checkpoint(tmp_path) is None
    m = _model()
    for s in (5, 20, 10):
        save_checkpoint(checkpoint_path(tmp_path, s), m, step=s)
    (tmp_path / "junk.pt").write_bytes(b"no")
    assert [i.step for i in list_checkpoints(tmp_path)] == [5, 10, 20]
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 20)
    with pytest.raises(CheckpointError, match="not found"):
        latest_checkpoint(tmp_path / "none")
