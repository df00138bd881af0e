"""ctrlens.metrics against sklearn and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from ctrlens import metrics as M
from ctrlens.errors import InputError


def brute_auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return (gt + 0.5 * eq) / (len(pos) * len(neg))


def brute_gauc(y: np.ndarray, p: np.ndarray, u: np.ndarray) -> float:
    num = den = 0.0
    for user in np.unique(u):
        m = u == user
        a = brute_auc(y[m], p[m])
        if not math.isnan(a):
            num += m.sum() * a
            den += m.sum()
    return num / den if den else float("nan")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    y = rng.integers(0, 2, n)
    p = np.round(rng.random(n) * 0.3 + 0.4 * y * rng.random(n), 2)  # heavy ties
    assert M.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert M.auc(y, p) == pytest.approx(brute_auc(y, p), abs=1e-12)
    # torch input works too
    assert M.auc(torch.tensor(y), torch.tensor(p)) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_edge_cases() -> None:
    assert math.isnan(M.auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(M.auc([], []))
    assert M.auc([0, 1], [0.5, 0.5]) == 0.5
    assert M.auc([0, 1], [0.2, 0.9]) == 1.0
    with pytest.raises(InputError, match="3 rows but predictions have 2"):
        M.auc([0, 1, 1], [0.1, 0.2])


@pytest.mark.parametrize("seed", [0, 1])
def test_gauc_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 4000
    u = rng.integers(0, 300, n) * 7 - 50  # arbitrary, negative ids included
    bias = rng.normal(size=u.max() + 100)[u + 50]
    y = (rng.random(n) < 1 / (1 + np.exp(-(bias - 1)))).astype(int)
    p = np.round(1 / (1 + np.exp(-(bias + y * rng.random(n)))), 2)  # ties within users
    want = brute_gauc(y, p, u)
    assert M.gauc(y, p, u) == pytest.approx(want, abs=1e-12)
    d = M.gauc_detail(y, p, u)
    single = [x for x in np.unique(u) if len(np.unique(y[u == x])) < 2]
    assert d.users_skipped == len(single)
    assert d.rows_skipped == int(np.isin(u, single).sum())
    assert d.rows + d.rows_skipped == n


def test_gauc_skips_single_class_users() -> None:
    y = np.array([1, 0, 1, 1, 0, 0])
    p = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5])
    u = np.array([1, 1, 2, 2, 3, 3])  # users 2 and 3 have one class
    assert M.gauc(y, p, u) == 1.0
    assert math.isnan(M.gauc([1, 1], [0.1, 0.2], [5, 6]))


def test_logloss_ne_calibration() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 1000)
    p = np.clip(rng.random(1000), 0.01, 0.99)
    assert M.logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-10)
    r = y.mean()
    h = -(r * np.log(r) + (1 - r) * np.log(1 - r))
    assert M.ne(y, p) == pytest.approx(log_loss(y, p) / h, rel=1e-10)
    # a constant predictor at the base rate has NE exactly 1
    assert M.ne(y, np.full(1000, r)) == pytest.approx(1.0, rel=1e-10)
    assert M.calibration(y, p) == pytest.approx(p.sum() / y.sum())
    assert math.isnan(M.calibration([0, 0], [0.1, 0.2]))
    assert math.isnan(M.ne([0, 0], [0.1, 0.2]))
    # clipping keeps logloss finite on hard 0/1 predictions
    assert np.isfinite(M.logloss([1, 0], [0.0, 1.0]))


def test_score_histogram_fixed_edges() -> None:
    p = np.array([0.05, 0.1, 0.2, 10.0])
    h = M.score_histogram(p, 0.1)
    assert len(h["edges"]) == 51 and len(h["counts"]) == 50
    assert sum(h["counts"]) == 4
    assert h["counts"][-1] == 1  # 100x the rate lands in the last bin
    assert h["counts"][5] == 1 and h["counts"][10] == 1 and h["counts"][20] == 1


# -- evaluate over a model ---------------------------------------------------------------------


def _esmm_like_view():
    """A fake three-head model (ctr / cvr on clicked rows / ctcvr) reading a score feature."""
    from ctrlens.models.interface import HeadSpec, ModelView

    model = torch.nn.Identity()

    def forward(m, b):
        s = b.features["score"]
        c = b.features["score_cvr"]
        return {"ctr": s, "cvr": c, "ctcvr": s * c}

    heads = {
        "ctr": HeadSpec("ctr", "ctr", "click"),
        "cvr": HeadSpec("cvr", "cvr", "conversion", rows="clicked"),
        "ctcvr": HeadSpec("ctcvr", "ctcvr", "click*conversion"),
        "aux": HeadSpec("aux", "ctr", None),
    }
    return ModelView(model, forward, {}, {}, heads, name="fake")


def _batches(seed: int, n: int, bs: int):
    from ctrlens.data.batch import Batch

    rng = np.random.default_rng(seed)
    s = rng.random(n).astype(np.float32)
    c = rng.random(n).astype(np.float32)
    click = (rng.random(n) < s).astype(np.float32)
    conv = click * (rng.random(n) < c).astype(np.float32)
    users = rng.integers(0, 50, n)
    full = Batch(
        features={"score": torch.tensor(s), "score_cvr": torch.tensor(c)},
        labels={"click": torch.tensor(click), "conversion": torch.tensor(conv)},
        user=torch.tensor(users),
    )
    return full, list(full.split(bs))


def test_evaluate_streams_and_scores_heads_on_their_rows() -> None:
    view = _esmm_like_view()
    full, batches = _batches(0, 2000, 300)
    r = M.evaluate(view, batches)
    f = r.frame.set_index("head")
    assert list(f.index) == ["ctr", "cvr", "ctcvr"]  # aux (no label) skipped
    s = full.features["score"].numpy()
    c = full.features["score_cvr"].numpy()
    click = full.labels["click"].numpy()
    conv = full.labels["conversion"].numpy()
    u = full.user.numpy()
    assert f.loc["ctr", "auc"] == pytest.approx(roc_auc_score(click, s), abs=1e-9)
    assert f.loc["ctr", "gauc"] == pytest.approx(brute_gauc(click, s, u), abs=1e-9)
    assert f.loc["ctr", "logloss"] == pytest.approx(log_loss(click, np.clip(s, 1e-7, 1 - 1e-7)), rel=1e-6)
    m = click > 0.5
    assert f.loc["cvr", "rows"] == m.sum()
    assert f.loc["cvr", "auc"] == pytest.approx(roc_auc_score(conv[m], c[m]), abs=1e-9)
    assert f.loc["ctcvr", "rows"] == 2000
    assert f.loc["ctcvr", "auc"] == pytest.approx(roc_auc_score(conv, s * c), abs=1e-6)
    assert f.loc["ctr", "calibration"] == pytest.approx(s.sum() / click.sum(), rel=1e-5)
    assert f.loc["ctr", "actual_rate"] == pytest.approx(click.mean())
    assert sum(f.loc["ctr", "score_hist_json"]["counts"]) == 2000
    assert r.meta["gauc_users"]["ctr"]["counted"] + r.meta["gauc_users"]["ctr"]["skipped"] == len(np.unique(u))


def test_evaluate_bad_heads() -> None:
    view = _esmm_like_view()
    _, batches = _batches(1, 100, 50)
    with pytest.raises(InputError, match="no head 'nope'"):
        M.evaluate(view, batches, heads=["nope"])
    with pytest.raises(InputError, match="no label"):
        M.evaluate(view, batches, heads=["aux"])
    with pytest.raises(InputError, match="without day"):
        M.evaluate(view, type("D", (), {"iter_batches": lambda *a, **k: []})())


def test_pal_ctr_head_is_calibrated_against_what_clicks_estimate() -> None:
    """PAL's pCTR is position-free; observed clicks estimate ProbSeen x pCTR. Its ctr head's
    calibration compares like with like (the model's click output), so a PAL that fits the clicks
    reads about 1, not 1 / mean(ProbSeen)."""
    import torch

    from ctrlens.data.batch import Batch
    from ctrlens.metrics import accumulate, quality_result
    from ctrlens.models.interface import HeadSpec, ModelView

    rng = np.random.default_rng(0)
    n = 20_000
    pctr = rng.uniform(0.05, 0.3, n)
    seen = np.where(rng.random(n) < 0.5, 0.9, 0.3)  # two positions
    click = (rng.random(n) < pctr * seen).astype(np.float32)

    class Fixed(torch.nn.Module):
        def forward(self, b: Batch) -> dict:
            i = b.row
            return {"ctr": torch.tensor(pctr)[i].float(), "click": torch.tensor(pctr * seen)[i].float()}

    heads = {"ctr": HeadSpec("ctr", "ctr", "click", "all", None, calibrated="click"),
             "plain": HeadSpec("plain", "ctr", "click", "all", None)}
    view = ModelView(Fixed(), lambda m, b: m(b), {}, {}, heads, name="pal-like")
    batches = [Batch(features={}, labels={"click": torch.tensor(click[s:s + 5000])}, row=torch.arange(s, s + 5000))
               for s in range(0, n, 5000)]
    q = quality_result(accumulate(view, batches).values()).frame.set_index("head")
    want = (pctr * seen).sum() / click.sum()
    assert q.loc["ctr", "calibration"] == pytest.approx(want, rel=1e-5)
    assert q.loc["ctr", "calibration"] == pytest.approx(1.0, abs=0.05)
    assert q.loc["plain", "calibration"] == pytest.approx(pctr.sum() / click.sum(), rel=1e-5)  # ~1 / mean(seen)
    assert q.loc["plain", "calibration"] > 1.5
    assert q.loc["ctr", "auc"] == q.loc["plain", "auc"]  # ranking still of the served pCTR


# -- the streaming accumulator ----------------------------------------------------------------


def _acc_of(y, p, u, *, bs: int, keep_rows: bool = False) -> M.HeadAccumulator:
    a = M.HeadAccumulator("ctr", keep_rows=keep_rows)
    for s in range(0, len(y), bs):
        a.add(y[s:s + bs], p[s:s + bs], None if u is None else u[s:s + bs])
    return a


@pytest.mark.parametrize("seed", [0, 1])
def test_accumulator_auc_gauc_exactly_the_one_shot_functions(seed: int, monkeypatch) -> None:
    """8 bytes a row, yet AUC and GAUC are the one-shot functions' numbers bit for bit (ties, users
    of one class, negative ids, -0.0), and shards merged (overlapping users, in any order) equal one
    accumulator over all rows. Small scan blocks and joins: the carries across blocks are exercised."""
    monkeypatch.setattr(M, "_SCAN_ROWS", 97)
    monkeypatch.setattr(M, "_JOIN_CHUNKS", 3)
    rng = np.random.default_rng(seed)
    n = 5000
    u = rng.integers(0, 400, n) * 13 - 2000  # many groups, negative ids
    y = (rng.random(n) < 0.3).astype(np.float32)
    u[:40] = 999_999  # one user, all negatives
    y[:40] = 0
    p = np.round(rng.random(n) * 0.5 + 0.3 * y, 2).astype(np.float32)  # heavy ties, within users too
    p[rng.random(n) < 0.05] = -0.0  # ties +0.0
    p[rng.random(n) < 0.05] = 0.0
    y64, p64 = y.astype(np.float64), p.astype(np.float64)
    want_auc, want = M.auc(y64, p64), M.gauc_detail(y64, p64, u)
    assert want_auc == pytest.approx(brute_auc(y, p), abs=1e-12)
    assert want.gauc == pytest.approx(brute_gauc(y, p, u), abs=1e-12)

    whole = _acc_of(y, p, u, bs=123)
    row = whole.row()
    assert row["auc"] == want_auc and row["gauc"] == want.gauc  # exact
    assert whole.gauc_info == want
    assert row["rows"] == n and row["positives"] == int(y.sum())
    assert row["logloss"] == pytest.approx(M.logloss(y64, p64), rel=1e-12)
    assert row["ne"] == pytest.approx(M.ne(y64, p64), rel=1e-12)
    assert row["calibration"] == pytest.approx(M.calibration(y64, p64), rel=1e-12)
    assert row["score_hist_json"] == M.score_histogram(p64, float(y64.mean()))
    assert whole.row() == row  # results do not consume the rows

    # shards (interleaved rows: users in several shards), merged in another order
    parts = [np.arange(n)[k::3] for k in range(3)]
    shards = [_acc_of(y[i], p[i], u[i], bs=77) for i in parts]
    merged = shards[2]
    merged.merge(shards[0])
    merged.merge(shards[1])
    mrow = merged.row()
    assert mrow["auc"] == want_auc and mrow["gauc"] == want.gauc and merged.gauc_info == want
    assert mrow["score_hist_json"] == row["score_hist_json"] and mrow["positives"] == row["positives"]
    assert mrow["logloss"] == pytest.approx(row["logloss"], rel=1e-12)

    # without user ids: AUC only
    nou = _acc_of(y, p, None, bs=500).row()
    assert nou["auc"] == want_auc and math.isnan(nou["gauc"])


def test_accumulator_edge_cases_and_kept_rows() -> None:
    a = M.HeadAccumulator("ctr")
    r = a.row()
    assert r["rows"] == 0 and math.isnan(r["auc"]) and math.isnan(r["gauc"]) and sum(r["score_hist_json"]["counts"]) == 0
    a.add(np.ones(5), np.linspace(0, 1, 5), np.arange(5))  # one class only
    r = a.row()
    assert math.isnan(r["auc"]) and math.isnan(r["gauc"]) and a.gauc_info.users_skipped == 5
    with pytest.raises(InputError, match="labels have 2 rows but user ids have 3"):
        a.add([0, 1], [0.1, 0.2], [1, 2, 3])
    with pytest.raises(InputError, match="keep_rows=True"):
        a.arrays()
    y, p = np.array([0, 1, 1, 0.0]), np.array([0.5, 0.25, 0.75, 0.125])
    k = _acc_of(y, p, np.array([3, 1, 3, 1]), bs=3, keep_rows=True)
    ky, kp, ku = k.arrays()
    assert ky.tolist() == y.tolist() and kp.tolist() == p.tolist() and ku.tolist() == [3, 1, 3, 1]
