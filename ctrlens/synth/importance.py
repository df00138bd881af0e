"""True field importance: the expected absolute change of a true logit when one field is permuted
across rows (resampled from its marginal, everything else kept), measured on a clean sample."""

from __future__ import annotations

import numpy as np

from ctrlens.synth.world import STREAM_DAY, STREAM_IMPORTANCE, World, rng_for

#: schema field name -> key of the true inputs ``X`` (see World.relevance_logit)
FIELD_INPUTS: dict[str, str] = {
    "user_id": "user",
    "item_id": "item",
    "category_id": "cat",
    "shop_id": "shop",
    "user_age_bucket": "age",
    "user_gender": "gender",
    "hour": "hour",
    "price": "price",
    "hist_item_id": "hist_item",
    "hist_category_id": "hist_cat",
    "position": "position",
    "item_image": "item_img",
    "hist_image": "hist_img",
}


#: the opt-in bag field (``WorldConfig.item_tags > 0``)
TAG_INPUTS: dict[str, str] = {"item_tags": "tags"}


def field_inputs(cfg) -> dict[str, str]:
    """Schema field -> key of ``X`` for a world with config ``cfg`` (tags only when on)."""
    return {**FIELD_INPUTS, **(TAG_INPUTS if cfg.item_tags else {})}


def true_importance(world: World, day: int = 0) -> dict[str, dict[str, float]]:
    """Permutation importance of every field on a clean sample of ``day`` (no incidents).

    Returns ``{"click": ..., "relevance": ..., "conversion": ...}``, each field -> mean ``|delta logit|``:
    ``click`` on ``logit(p_click)`` (position included), ``relevance`` on the relevance logit ``r``,
    ``conversion`` on the post-click conversion logit ``s``. Sequences and bags are permuted as whole lists.
    """
    n = world.cfg.importance_rows
    ctx = world.context(day)
    X = world.sample(ctx, n, rng_for(world.cfg.seed, STREAM_IMPORTANCE, STREAM_DAY))
    perm_rng = rng_for(world.cfg.seed, STREAM_IMPORTANCE)
    fns = {"click": world.click_logit, "relevance": world.relevance_logit, "conversion": world.conversion_logit}
    base = {k: f(X, ctx) for k, f in fns.items()}
    out: dict[str, dict[str, float]] = {k: {} for k in fns}
    for name, key in field_inputs(world.cfg).items():
        perm = perm_rng.permutation(n)
        Xp = dict(X)
        Xp[key] = X[key][perm]
        for k, f in fns.items():
            out[k][name] = round(float(np.mean(np.abs(f(Xp, ctx) - base[k]))), 5)
    return out


def ranking(importance: dict[str, float]) -> list[str]:
    """Field names by decreasing importance (fields with zero importance last, by name)."""
    return sorted(importance, key=lambda f: (-importance[f], f))
