"""Knobs of the synthetic world: sizes (:class:`WorldConfig`) and the true model's coefficients
(:class:`Weights`). Every value ends up in ``ground_truth.json`` so a world can be re-created."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

from ctrlens.errors import InputError

LATENT_DIM = 4  # item latent attributes z_i; all four are painted into the item's image


@dataclass(frozen=True)
class Weights:
    """Coefficients of the true click-relevance logit ``r`` and conversion logit ``s``.

    See ``docs/synthetic-world.md`` for the formulas. Defaults are tuned so that each field's true
    importance is clearly distinct (a saliency ranking can be checked against them).
    """

    # -- click relevance r (position enters only through the examination curve)
    base: float = -2.9  # b0: overall level (about 21 % mean relevance, 10 % CTR)
    weekly: float = 0.15  # amplitude of the weekly cycle, peak on Sunday
    relevance: float = 1.45  # DIN: w_rel * log1p(#history items of the candidate's category)
    revisit: float = 0.5  # candidate item itself is in the history
    style: float = 0.43  # DICM: mean latent of category-matched history images . candidate latent
    image_quality: float = 0.55  # quality visible in the image: w * (0.8 z0 - 0.6 z2)
    item_quality: float = 0.33  # sd of the id-only item quality (invisible in the image)
    price: float = -0.6  # per unit of log price above the category's mean
    category: float = 0.25  # sd of the per-category effect
    category_drift: float = 0.012  # per-day drift of the category effect (sd units of N(0,1) direction)
    shop: float = 0.155  # sd of the per-shop effect
    user: float = 0.06  # sd of the per-user effect
    hour: float = 0.28  # amplitude of the diurnal main effect
    age_cat_hour: float = 0.26  # sd of the order-3 table T3[age, category % 4, hour // 4]
    gender_cat: float = 0.16  # sd of the order-2 table T2[gender, category]
    eta: float = 0.7  # examination curve: examine(pos) = pos ** -eta
    # -- conversion after click s (its own factors: price dominates, relevance does not enter)
    cvr_base: float = -1.9
    cvr_price: float = -1.2  # per unit of log price above the global mean
    cvr_image: float = 0.38  # latent z1 (painted into the green channel)
    cvr_user: float = 0.57  # sd of the user's purchase propensity
    cvr_shop: float = 0.3  # sd of the shop's trust effect
    cvr_gender_cat: float = 0.15  # sd of Tc[gender, category]
    # Opt-in coupling of conversion to click relevance (ESMM's premise): s += cvr_shared * h, with h the
    # user-category interest + item quality part of r. 0 (default) keeps conversion on its own factors
    # (and every world byte-identical); > 0 makes the clicked population selection-biased for CVR.
    cvr_shared: float = 0.0


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and dynamics of one synthetic world. ``days`` x ``rows_per_day`` impressions."""

    days: int = 30
    rows_per_day: int = 50_000
    seed: int = 1
    start: str = "2026-01-01"
    n_users: int = 20_000
    n_items: int = 5_000
    n_categories: int = 40
    n_shops: int = 400
    new_items_per_day: int = 50
    max_hist: int = 20
    mean_hist: float = 8.0  # typical history length (per-user Poisson mean ~ lognormal around it)
    image_size: int = 32
    positions: int = 10
    interests: int = 3  # latent interest categories per user (Dirichlet mixture weights)
    targeted: float = 0.5  # share of impressions whose category comes from the user's interests
    history_on_interest: float = 0.85  # share of history behaviours on the user's interests
    fresh_boost: float = 3.0  # extra exposure of items in their first days
    popularity_drift: float = 0.05  # sd per day of the category popularity random walk
    importance_rows: int = 20_000
    weights: Weights = field(default_factory=Weights)
    # Opt-in bag field ``item_tags``: every item carries 0..max_tags tags out of ``item_tags`` (0 = no
    # tags: the default world, byte-identical to worlds made before tags existed); the relevance logit
    # gains ``tag_effect``-sd effects averaged over the candidate's tags.
    item_tags: int = 0
    max_tags: int = 4
    tag_effect: float = 0.5

    def __post_init__(self) -> None:
        def need(cond: bool, what: str) -> None:
            if not cond:
                raise InputError(f"synth: {what}")

        need(self.days >= 1, f"days must be >= 1, got {self.days}")
        need(self.rows_per_day >= 1, f"rows_per_day must be >= 1, got {self.rows_per_day}")
        need(self.n_users >= 1, f"n_users must be >= 1, got {self.n_users}")
        need(self.n_categories >= 1, f"n_categories must be >= 1, got {self.n_categories}")
        need(self.n_items >= self.n_categories, f"n_items ({self.n_items}) must be >= n_categories ({self.n_categories})")
        need(self.n_shops >= 1, f"n_shops must be >= 1, got {self.n_shops}")
        need(self.new_items_per_day >= 0, f"new_items_per_day must be >= 0, got {self.new_items_per_day}")
        need(self.max_hist >= 1, f"max_hist must be >= 1, got {self.max_hist}")
        need(self.image_size >= 4, f"image_size must be >= 4, got {self.image_size}")
        need(2 <= self.positions <= 100, f"positions must be in 2..100, got {self.positions}")
        need(1 <= self.interests <= self.n_categories, f"interests must be in 1..n_categories, got {self.interests}")
        need(self.weights.cvr_shared >= 0, f"weights.cvr_shared must be >= 0, got {self.weights.cvr_shared}")
        need(self.importance_rows >= 100, f"importance_rows must be >= 100, got {self.importance_rows}")
        need(self.item_tags >= 0, f"item_tags must be >= 0, got {self.item_tags}")
        need(self.max_tags >= 1, f"max_tags must be >= 1, got {self.max_tags}")
        need(self.item_tags == 0 or self.max_tags <= self.item_tags,
             f"max_tags ({self.max_tags}) must be <= item_tags ({self.item_tags}): an item's tags are distinct")
        try:
            dt.date.fromisoformat(self.start)
        except (TypeError, ValueError):
            raise InputError(f"synth: start must be a date YYYY-MM-DD, got {self.start!r}") from None

    @property
    def n_items_total(self) -> int:
        """Items ever created (initial + new ones): the item vocabulary covers all of them."""
        return self.n_items + self.days * self.new_items_per_day

    def date(self, day: int) -> str:
        return (dt.date.fromisoformat(self.start) + dt.timedelta(days=day)).isoformat()

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.weights.cvr_shared:  # opt-in knob: absent from the record when off (old worlds unchanged)
            del d["weights"]["cvr_shared"]
        if not self.item_tags:  # likewise the tag knobs
            for k in ("item_tags", "max_tags", "tag_effect"):
                del d[k]
        return d
