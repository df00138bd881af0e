"""Permutation importance, streamed and with replayed blocks, against the brute-force computation.

The brute force runs the whole model once per field on every chunk with the same permutations;
the fast path (:class:`ctrlens.monitor.compute.PermutationImportance`) re-runs only the blocks whose
inputs a field's permutation changes. Same rows and permutations: the same figures, to rounding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import reference_models
from ctrlens.data.batch import Batch
from ctrlens.models.interface import as_view
from ctrlens.monitor.compute import PermutationImportance, _permuted, chunk_permutation, permutation_importance
from ctrlens.neurons.sketch import row_hash
from models_fixtures import random_batch, world_schema

EPS = 1e-7


def row_losses(view, batch: Batch, head: str) -> np.ndarray:
    spec = view.heads[head]
    y, mask = spec.target(batch)
    p = view(batch)[spec.output].reshape(-1).double().clamp(EPS, 1 - EPS)
    if mask is not None:
        p = p[mask]
    y = y.double()
    return (-(y * p.log() + (1 - y) * (1 - p).log())).numpy()


def brute_force(view, batches: list[Batch], heads: list[str], *, seed: int, chunk_rows: int,
                quantile_rows: int = 10**9) -> pd.DataFrame:  # fmt: skip
    """Every field of every chunk through the whole model, with the fast path's permutations."""
    deltas: dict[tuple[str, str], list[np.ndarray]] = {}
    keys: dict[tuple[str, str], list[np.ndarray]] = {}
    with torch.no_grad():
        for i, b in enumerate(batches):
            for j, c in enumerate(b.split(chunk_rows)):
                perm = chunk_permutation(len(c), seed, i, j)  # seeded by batch and chunk index
                base = {h: row_losses(view, c, h) for h in heads}
                for f in view.fields:
                    pc = _permuted(c, f, perm)
                    if pc is None:
                        continue
                    for h in heads:
                        _, mask = view.heads[h].target(c)
                        rows = c.row if mask is None else c.row[mask]
                        deltas.setdefault((f, h), []).append(row_losses(view, pc, h) - base[h])
                        keys.setdefault((f, h), []).append(row_hash(rows, seed).numpy())
    out = []
    for (f, h), ds in deltas.items():
        d, k = np.concatenate(ds), np.concatenate(keys[(f, h)])
        s = d if d.size <= quantile_rows else d[np.argsort(k, kind="stable")[:quantile_rows]]
        out.append({"field": f, "head": h, "rows": d.size, "mean": d.mean(), "std": d.std(),
                    "p50": np.percentile(s, 50), "p90": np.percentile(s, 90)})  # fmt: skip
    return pd.DataFrame(out)


def sensitive(model: torch.nn.Module, scale: float = 0.2) -> torch.nn.Module:
    """Larger random weights, so that every field moves the output (a fresh init barely does)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def batches_for(schema, n_batches: int, n: int) -> list[Batch]:
    out = []
    for i in range(n_batches):
        b = random_batch(schema, n, seed=10 + i)
        b.row = torch.arange(i * n, (i + 1) * n)  # distinct day rows across batches
        out.append(b)
    return out


@pytest.mark.parametrize("name", ["din", "dicm", "esmm"])
def test_streamed_importance_equals_brute_force(name):
    torch.manual_seed(0)
    schema = world_schema()
    view = as_view(sensitive(reference_models.build(name, schema)))
    heads = [h for h, s in view.heads.items() if s.label is not None]
    batches = batches_for(schema, 3, 70)  # chunks of 32 rows: several per batch, a short last one
    fast = PermutationImportance(view, heads, seed=5, chunk_rows=32)
    for b in batches:
        fast.add(b)
    got = fast.frame().set_index(["field", "head"])
    want = brute_force(view, batches, heads, seed=5, chunk_rows=32).set_index(["field", "head"])
    assert sorted(got.index) == sorted(want.index)
    assert set(got.index.get_level_values("field")) == set(view.fields)  # every field, image fields too
    g = got.loc[want.index]
    assert (g["rows"].to_numpy() == want["rows"].to_numpy()).all()
    for col in ("mean", "std", "p50", "p90"):
        np.testing.assert_allclose(g[col].to_numpy(), want[col].to_numpy(), rtol=1e-9, atol=1e-12, err_msg=col)
    assert g["std"].min() > 1e-3  # every field moves the loss of its rows: not a test of zeros
    assert (g["share"] >= 0).all() and np.isclose(g.groupby(level="head")["share"].sum(), 1.0).all()
    if name == "din":  # the replay did skip the attention unit for the fields that do not reach it
        assert fast.hits > 0


def test_quantiles_from_a_bounded_sample_of_rows():
    """Beyond ``quantile_rows`` rows, p50/p90 come from the rows of smallest row hash (a uniform
    sample, memory bounded); mean and std stay exact over every row."""
    torch.manual_seed(1)
    schema = world_schema(images=False)
    view = as_view(sensitive(reference_models.build("din", schema)))
    batches = batches_for(schema, 4, 50)
    fast = PermutationImportance(view, ["ctr"], seed=2, chunk_rows=16, quantile_rows=40)
    for b in batches:
        fast.add(b)
    got = fast.frame().set_index(["field", "head"])
    want = brute_force(view, batches, ["ctr"], seed=2, chunk_rows=16, quantile_rows=40).set_index(["field", "head"])
    g = got.loc[want.index]
    for col in ("mean", "std", "p50", "p90"):
        np.testing.assert_allclose(g[col].to_numpy(), want[col].to_numpy(), rtol=1e-9, atol=1e-12, err_msg=col)
    assert (g["rows"] == 200).all()
    assert max(len(a.sample()) for a in fast.acc.values()) == 40


def test_chunked_permutation_agrees_with_one_permutation_of_all_rows():
    """Permuting within chunks instead of across the whole sample changes the figures only within
    sampling noise: the old computation (one permutation of every row, one forward per field over
    the whole sample) against the new one on the same rows."""
    torch.manual_seed(3)
    schema = world_schema(images=False)
    view = as_view(sensitive(reference_models.build("din", schema, mlp=(32, 16))))
    rows = Batch.concat(batches_for(schema, 8, 250))  # 2000 rows
    old = brute_force(view, [rows], ["ctr"], seed=0, chunk_rows=len(rows)).set_index("field")
    new = permutation_importance(view, [rows], ["ctr"], seed=0, device=torch.device("cpu"), chunk_rows=256)
    new = new.set_index("field").loc[old.index]
    # the two estimates are independent draws of the same expectation: within 5 standard errors
    se = np.sqrt(old["std"] ** 2 + new["std"] ** 2) / np.sqrt(len(rows))
    assert (np.abs(new["mean"] - old["mean"]) <= 5 * se + 1e-9).all(), pd.DataFrame({"old": old["mean"], "new": new["mean"], "se": se})


# -- the streamed day's other parts against the collected computation ------------------------------


def test_streamed_day_parts_equal_the_collected_computation(tmp_path):
    """Whole-day streaming pieces: the stream covers every row once, the dependence sample (below its
    cap) equals the dependences of the concatenated rows, CTR by position equals a pandas group-by."""
    from ctrlens.data import DailyDataset
    from ctrlens.monitor.compute import DependenceSample, ctr_by_position, dependence_observations, stream_batches
    from data_fixtures import write_dataset

    _, frames = write_dataset(tmp_path, rows=500)
    ds = DailyDataset(tmp_path)
    d = "2026-01-01"
    batches = list(stream_batches(ds, d, 0, batch_size=64, seed=3, images=False))
    rows = torch.cat([b.row for b in batches])
    assert sorted(rows.tolist()) == list(range(ds.num_rows(d)))  # the whole day, each row once
    assert all(b.images is None for b in batches)
    acc = DependenceSample(ds.schema, max_rows=10_000)
    for b in batches:
        acc.add(b)
    assert acc.observations() == dependence_observations([Batch.concat(batches)], ds.schema)
    capped = DependenceSample(ds.schema, max_rows=100)
    for b in batches:
        capped.add(b)
    first = Batch.concat(batches).select(slice(0, 100))
    assert capped.rows == 100 and capped.observations() == dependence_observations([first], ds.schema)
    f = frames[d]
    want = f.dropna(subset=["position", "click"]).groupby("position")["click"].agg(["count", "sum"])
    got = ctr_by_position(ds, d)
    assert list(got.index) == [int(i) for i in want.index]
    assert got["rows"].tolist() == want["count"].tolist()
    np.testing.assert_allclose(got["clicks"], want["sum"].astype(float))
    np.testing.assert_allclose(got["ctr"], want["sum"] / want["count"])


def test_sharded_stream_shares_cover_the_stream_once(tmp_path):
    """The ranks' shares of a whole-day stream (``every=(rank, world)``) are the one-process stream's
    batches, each exactly once, for 1, 2 and 3 ranks; ``first`` puts the stream's first batch ahead of
    another rank's share (where it takes the histogram edges) without making it part of the share."""
    from ctrlens.data import DailyDataset
    from ctrlens.monitor.compute import stream_batches
    from data_fixtures import write_dataset

    write_dataset(tmp_path, rows=500)
    ds = DailyDataset(tmp_path)
    d = "2026-01-01"
    one = [b.row.tolist() for b in stream_batches(ds, d, 0, batch_size=64, seed=3, images=False)]
    assert len(one) == 8 and sorted(sum(one, [])) == list(range(500))
    for world in (1, 2, 3):
        got: dict[int, list[int]] = {}
        for rank in range(world):
            share = [b.row.tolist() for b in stream_batches(ds, d, 0, batch_size=64, seed=3, images=False, rank=rank,
                                                            world_size=world, first=True)]  # fmt: skip
            if rank > 0:
                assert share[0] == one[0]  # the stream's first batch, for the edges
                share = share[1:]
            own = list(range(rank, len(one), world))
            assert len(share) == len(own)
            got.update(zip(own, share))
        assert [got[i] for i in range(len(one))] == one, world


def test_dependence_equals_the_brute_force_mutual_information():
    """Normalised mutual information from joint counts (bincount for small code ranges, sorting for
    large ones) against a dictionary count of the pairs, bit for bit where the summation order agrees."""
    from collections import Counter

    from ctrlens.monitor import compute

    rng = np.random.default_rng(0)
    n = 3000
    a = rng.integers(0, 5, n)
    codes = {"a": a, "b": (a * 7 + rng.integers(0, 3, n)) % 11, "noise": rng.integers(0, 4, n),
             "big": rng.integers(0, 2500, n), "const": np.zeros(n, np.int64)}  # fmt: skip
    codes = compute._renumber(codes)

    def h(values) -> float:
        c = np.array([v for _, v in sorted(Counter(values).items())], dtype=np.float64)
        p = c / c.sum()
        return float(-(p * np.log(p)).sum())

    for limit in (compute.BINCOUNT_CODES, 0):  # counted directly; every pair sorted
        old = compute.BINCOUNT_CODES
        compute.BINCOUNT_CODES = limit
        try:
            got = compute.dependence(codes)
        finally:
            compute.BINCOUNT_CODES = old
        for (x, y), v in got.items():
            lo = min(h(codes[x].tolist()), h(codes[y].tolist()))
            if lo <= 1e-9:
                assert np.isnan(v), (x, y)
                continue
            hxy = h(list(zip(codes[x].tolist(), codes[y].tolist())))
            want = min(max((h(codes[x].tolist()) + h(codes[y].tolist()) - hxy) / lo, 0.0), 1.0)
            assert v == pytest.approx(want, rel=1e-12, abs=1e-12), (x, y, limit)
        assert got[("a", "b")] > 0.5 and got[("a", "noise")] < 0.05
