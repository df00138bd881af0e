"""Attribution methods: gradients vs hand formulas and autograd, IG completeness, padding, heads, cost."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ctrlens
from ctrlens.data.batch import Batch
from ctrlens.models.interface import HeadSpec
from ctrlens.saliency import InputXGradient, IntegratedGradients, Saliency, mean_embeddings, report

from saliency_fixtures import (
    EsmmToy,
    HandModel,
    UserModel,
    attach_esmm,
    attach_hand_model,
    attach_user_model,
    random_batch,
)


def hand_batch(n: int = 7) -> Batch:
    g = torch.Generator().manual_seed(5)
    return Batch(features={"a": torch.randint(0, 10, (n,), generator=g), "b": torch.randint(0, 10, (n,), generator=g)})


def test_gradients_match_hand_formula():
    m = HandModel()
    view = attach_hand_model(m)
    b = hand_batch()
    a, e = m.a(b.features["a"]).detach(), m.b(b.features["b"]).detach()
    w, v = m.w.detach(), m.v.detach()
    da, db = w + e, v + a  # d logit / d a, d logit / d b by hand

    sal = Saliency(view).attribute(b, "ctr")
    torch.testing.assert_close(sal.attributions["a"], da.abs())
    torch.testing.assert_close(sal.attributions["b"], db.abs())
    torch.testing.assert_close(sal.field_scores()["a"], da.norm(dim=1))
    z = a @ w + e @ v + (a * e).sum(1)
    torch.testing.assert_close(sal.output, z)

    ixg = InputXGradient(view).attribute(b, "ctr")
    torch.testing.assert_close(ixg.attributions["a"], da * a)
    torch.testing.assert_close(ixg.attributions["b"], db * e)

    # probability target: chain rule through the sigmoid
    p = torch.sigmoid(z)
    sp = Saliency(view, target="probability").attribute(b, "ctr")
    torch.testing.assert_close(sp.attributions["a"], (p * (1 - p))[:, None] * da.abs())
    assert sp.target == "probability"

    # a baseline shifts input x gradient to grad(x) * (x - baseline)
    base = {"a": torch.ones(3), "b": torch.zeros(3)}
    ixb = InputXGradient(view).attribute(b, "ctr", baselines=base)
    torch.testing.assert_close(ixb.attributions["a"], da * (a - 1))


def brute_force_grads(m: UserModel, b: Batch) -> dict[str, torch.Tensor]:
    """d logit / d field embedding by plain autograd on the model written from embeddings on."""
    with torch.no_grad():
        e = m.embed(b.features)
    e = {k: v.clone().requires_grad_() for k, v in e.items()}
    logit, _ = m.head(e, b.masks["hist_item_id"])
    grads = torch.autograd.grad(logit.sum(), list(e.values()))
    return dict(zip(e, grads))


def test_user_model_matches_autograd_shared_table_and_bag():
    """ModuleDict embeddings, an EmbeddingBag, and one item table read twice (candidate + history)."""
    m = UserModel(seed=2)
    view = attach_user_model(m)
    b = random_batch(48, seed=1)
    want = brute_force_grads(m, b)
    got = Saliency(view).attribute(b, "ctr")
    mask = b.masks["hist_item_id"][..., None]
    for f, g in want.items():
        if f == "hist_item_id":
            g = g * mask
        torch.testing.assert_close(got.attributions[f], g.abs(), msg=f"field {f}")
    ixg = InputXGradient(view).attribute(b, "ctr")
    with torch.no_grad():
        e = m.embed(b.features)
    torch.testing.assert_close(ixg.attributions["item_id"], want["item_id"] * e["item_id"])
    torch.testing.assert_close(ixg.attributions["hist_item_id"], want["hist_item_id"] * e["hist_item_id"] * mask)


def test_one_forward_and_backward_cover_all_fields():
    m = UserModel()
    view = attach_user_model(m)
    calls = {"mlp": 0, "bag": 0, "backward": 0}
    m.mlp.register_forward_hook(lambda *a: calls.__setitem__("mlp", calls["mlp"] + 1))
    m.cat_bag.register_forward_hook(lambda *a: calls.__setitem__("bag", calls["bag"] + 1))
    m.mlp.register_full_backward_hook(lambda *a: calls.__setitem__("backward", calls["backward"] + 1))
    b = random_batch(32)
    for method in (Saliency(view), InputXGradient(view)):
        calls.update(mlp=0, bag=0, backward=0)
        method.attribute(b, "ctr")
        # one full forward + one backward for the six fields; the capture pass stops at the embeddings
        assert calls == {"mlp": 1, "bag": 2, "backward": 1}


def test_integrated_gradients_completeness():
    m = UserModel(seed=4)
    view = attach_user_model(m)
    b = random_batch(40, seed=3)
    means = mean_embeddings(view, [b])
    for baselines in (None, means):
        ig = IntegratedGradients(view, n_steps=64).attribute(b, "ctr", baselines=baselines)
        total = sum(a.flatten(1).sum(1) for a in ig.attributions.values())
        # f(x) and f(baseline) computed independently of captum
        with torch.no_grad():
            e = m.embed(b.features)
            fx, _ = m.head(e, b.masks["hist_item_id"])
            eb = {k: (torch.zeros_like(v) if baselines is None else baselines[k].expand_as(v)) for k, v in e.items()}
            pad = ~b.masks["hist_item_id"][..., None]
            eb["hist_item_id"] = torch.where(pad, e["hist_item_id"], eb["hist_item_id"])
            fb, _ = m.head(eb, b.masks["hist_item_id"])
        torch.testing.assert_close(ig.output, fx)
        torch.testing.assert_close(ig.baseline_output, fb)
        # sum of attributions = f(x) - f(baseline) within captum's own convergence delta
        gap = (total - (fx - fb)).abs()
        assert torch.all(gap <= ig.delta.abs() + 1e-4)
        assert float(ig.delta.abs().mean()) < 0.02 * float((fx - fb).abs().mean())


def test_integrated_gradients_memory_is_bounded_by_the_batch():
    """captum stacks n_steps copies of the batch (its users' OOM); each pass here sees <= B rows."""
    m = UserModel()
    view = attach_user_model(m)
    sizes: list[int] = []
    m.mlp.register_forward_hook(lambda mod, args, out: sizes.append(int(args[0].shape[0])))
    b = random_batch(32)
    IntegratedGradients(view, n_steps=16).attribute(b, "ctr")
    assert len(sizes) == 16 + 2  # 16 steps, then f(baseline) and f(x) for the delta
    assert max(sizes) == 32
    one = IntegratedGradients(view, n_steps=16).attribute(b, "ctr")
    sizes.clear()
    four = IntegratedGradients(view, n_steps=16, internal_batch_size=128).attribute(b, "ctr")
    assert max(sizes) == 128 and len(sizes) == 4 + 2
    # 4 steps stacked per pass: the batch's other inputs are repeated the same way, same result
    for f in one.attributions:
        torch.testing.assert_close(four.attributions[f], one.attributions[f], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("leak", [False, True])
def test_padding_positions_get_exactly_zero(leak: bool):
    m = UserModel(leak_padding=leak)
    view = attach_user_model(m)
    b = random_batch(64, seed=7)
    pad = ~b.masks["hist_item_id"]
    assert pad.any() and (~pad).any()
    for method in (Saliency(view), InputXGradient(view), IntegratedGradients(view, n_steps=4)):
        fa = method.attribute(b, "ctr")
        a = fa.attributions["hist_item_id"]
        assert torch.count_nonzero(a[pad]) == 0
        assert torch.count_nonzero(fa.position_scores()["hist_item_id"][pad]) == 0
        assert torch.count_nonzero(a[~pad]) > 0
    # a model that lets padding reach its output is flagged (FuxiCTR #72-style mask bugs)
    sal = Saliency(view).attribute(b, "ctr")
    assert (sal.padding_leak["hist_item_id"] > 0) == leak


def test_sequence_field_whole_is_norm_over_valid_positions():
    m = UserModel()
    view = attach_user_model(m)
    b = random_batch(16, seed=2)
    fa = InputXGradient(view).attribute(b, "ctr")
    a = fa.attributions["hist_item_id"]
    mask = b.masks["hist_item_id"]
    for i in range(len(b)):
        valid = a[i][mask[i]]
        assert float(fa.field_scores()["hist_item_id"][i]) == pytest.approx(float(valid.norm()), rel=1e-5, abs=1e-7)
        assert fa.position_scores()["hist_item_id"][i].tolist() == pytest.approx(
            (a[i].norm(dim=1) * mask[i]).tolist(), rel=1e-5, abs=1e-7
        )


def test_multi_head_model_gives_one_result_per_head():
    m = EsmmToy()
    view = attach_esmm(m)
    bs = [random_batch(50, seed=s) for s in range(2)]
    rep = report(view, bs, head=None)
    f = rep.to_frame()
    assert rep.heads == ["ctr", "cvr", "ctcvr"]
    assert len(f) == 3 * 3
    for h, g in f.groupby("head"):
        assert g["share"].sum() == pytest.approx(1.0)
        assert set(g["field"]) == {"user_id", "item_id", "category_id"}
    assert rep.meta["target_source"] == {"ctr": "logit", "cvr": "logit", "ctcvr": "logit(probability)"}
    # the towers differ, so the heads' saliency differs
    s = f.pivot(index="field", columns="head", values="mean")
    assert not torch.allclose(torch.tensor(s["ctr"].to_numpy()), torch.tensor(s["cvr"].to_numpy()))
    # the ctr head alone gives the same numbers as in the multi-head run
    one = report(view, bs, head="ctr").to_frame().set_index("field")["mean"]
    multi = f[f["head"] == "ctr"].set_index("field")["mean"]
    assert one.sort_index().tolist() == pytest.approx(multi.sort_index().tolist())


def test_field_a_head_does_not_use_gets_zero_not_an_error():
    """PAL serves ``ctr`` without position: a tapped field outside a head's graph scores 0."""

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.pos = nn.Embedding(10, 4), nn.Embedding(10, 4)
            self.lin = nn.Linear(4, 1)

        def forward(self, f):
            a, p = self.a(f["a"]), self.pos(f["pos"])
            z = self.lin(a).squeeze(-1)
            seen = p.sum(1)
            return {"ctr": torch.sigmoid(z), "seen": torch.sigmoid(seen)}

    m = TwoHeads()
    view = ctrlens.attach(m, forward=lambda mm, b: mm(b.features), fields={"a": m.a, "pos": m.pos},
                          heads={"ctr": "click", "seen": HeadSpec("seen", "seen", None)})
    b = Batch(features={"a": torch.arange(8) % 10, "pos": torch.arange(8) % 3})
    rep = report(view, b, head=["ctr", "seen"])
    f = rep.to_frame().set_index(["head", "field"])
    assert f.loc[("ctr", "pos"), "mean"] == 0.0 and f.loc[("ctr", "a"), "share"] == pytest.approx(1.0)
    assert f.loc[("seen", "a"), "mean"] == 0.0 and f.loc[("seen", "pos"), "share"] == pytest.approx(1.0)
