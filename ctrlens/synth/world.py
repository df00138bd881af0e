"""The generating model: entities (users, items, shops, categories), daily dynamics, impression
sampling and the true click / conversion functions. All vectorised numpy; no per-row Python.

Shapes: ``n`` impressions per call, ``L = max_hist`` history slots (right-padded with ``-1``),
``d = 4`` latent item attributes. See docs/synthetic-world.md for the formulas.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from ctrlens.synth.config import LATENT_DIM, WorldConfig

# Independent random streams: an incident on one day never changes another day, and input
# corruptions never change the labels (they draw from their own stream).
STREAM_ENTITIES, STREAM_DRIFT, STREAM_DAY, STREAM_LABELS, STREAM_INCIDENT, STREAM_IMPORTANCE, STREAM_IMAGES = range(1, 8)
STREAM_TAGS = 8  # the opt-in item tags: their own stream, so worlds without tags are unchanged

_HOUR_BLOCKS = 6  # T3 uses hour // 4
_CAT_GROUPS = 4  # T3 uses category % 4
_STYLE_DRAWS = 3  # history item = best of 3 popularity draws by the user's style (Gumbel-max)
_IMAGE_QUALITY_DIR = np.array([0.8, 0.0, -0.6, 0.0])  # unit vector: quality a model can see in pixels


def rng_for(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _exact(x: np.ndarray, sd: float, mean: float = 0.0) -> np.ndarray:
    """``x`` rescaled to exactly ``mean`` and ``sd``: small effect tables (tens of cells) then carry the
    same strength for every seed, so the true importance ranking does not depend on the seed."""
    x = x - x.mean()
    std = x.std()
    return mean + (x / std * sd if std > 0 else x)


def _cum_within(groups: np.ndarray, weights: np.ndarray, n_groups: int) -> np.ndarray:
    """For entries sorted by ``groups``: cumulative weights normalised to ``(g, g + 1]`` per group.

    ``searchsorted(cum, g + u, side="right")`` with ``u ~ U[0, 1)`` then draws an entry of group ``g``
    with probability proportional to its weight -- one vectorised call for any mix of groups.
    """
    cs = np.cumsum(weights)
    sums = np.bincount(groups, weights=weights, minlength=n_groups)
    starts = np.concatenate([[0.0], np.cumsum(sums)[:-1]])
    cum = (cs - starts[groups]) / sums[groups]
    last = np.r_[groups[1:] != groups[:-1], True]
    cum[last] = 1.0  # exact ends: rounding must never spill into the next group
    return cum + groups


def _draw(cum: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = np.minimum(rng.random(groups.shape), 1.0 - 1e-9)
    return np.searchsorted(cum, groups + u, side="right")


@dataclass
class DayContext:
    """Everything about the world on one day that the sampler and the true functions need."""

    day: int
    date: str
    base: float  # b0 + weekly cycle + holiday shift
    eta: float  # examination exponent
    cat_eff: np.ndarray  # [C] per-category click effect (drifts)
    cat_pop: np.ndarray  # [C] category probabilities of untargeted impressions (drifts)
    items: np.ndarray  # [m] ids of items existing that day, sorted by category
    item_cum: np.ndarray  # [m] within-category cumulative exposure weights (see _cum_within)
    shifts: dict[str, float] = field(default_factory=dict)  # distribution_shift: field -> magnitude
    level_shift: float = 0.0

    def examine(self, position: np.ndarray) -> np.ndarray:
        return np.power(position.astype(np.float64), -self.eta)


class World:
    """The entities and rules of one synthetic world (everything drawn from ``cfg.seed``)."""

    def __init__(self, cfg: WorldConfig) -> None:
        self.cfg = cfg
        w = cfg.weights
        C, S, U, I = cfg.n_categories, cfg.n_shops, cfg.n_users, cfg.n_items_total
        rng = rng_for(cfg.seed, STREAM_ENTITIES)

        # categories: popularity, price level, click effect (+ its drift direction)
        self.cat_pop0 = rng.lognormal(0.0, 0.8, C)
        self.cat_pop0 /= self.cat_pop0.sum()
        self.cat_price = _exact(rng.normal(0.0, 1.0, C), 0.6, 3.5)
        self.cat_eff0 = _exact(rng.normal(0.0, 1.0, C), w.category)
        self.cat_drift_dir = rng.normal(0.0, 1.0, C)

        # items: category (every category has an item from day 0), shop of that category, price, latent
        cat = rng.choice(C, size=I, p=self.cat_pop0)
        cat[:C] = np.arange(C)
        self.item_cat = cat
        if S >= C:
            per_cat = (S - cat + C - 1) // C  # shops s with s % C == c
            self.item_shop = cat + C * np.floor(rng.random(I) * per_cat).astype(np.int64)
        else:
            self.item_shop = rng.integers(0, S, I)
        self.item_price = self.cat_price[cat] + rng.normal(0.0, 0.45, I)
        self.item_z = rng.normal(0.0, 1.0, (I, LATENT_DIM))
        self.item_q = rng.normal(0.0, w.item_quality, I)  # id-only quality
        self.item_pop = rng.lognormal(0.0, 1.0, I)
        created = np.full(I, -1, dtype=np.int64)  # -1: exists before the first day
        if cfg.new_items_per_day:
            created[cfg.n_items:] = np.repeat(np.arange(cfg.days), cfg.new_items_per_day)
        self.item_created = created
        self.price_mean = float(self.item_price[: cfg.n_items].mean())

        # shops
        self.shop_eff = rng.normal(0.0, w.shop, S)
        self.shop_trust = rng.normal(0.0, w.cvr_shop, S)

        # users: profile, activity, interests (Dirichlet mixture over categories), style, effects
        self.user_age = rng.choice(7, size=U, p=[0.05, 0.2, 0.25, 0.2, 0.15, 0.1, 0.05])
        self.user_gender = rng.choice(3, size=U, p=[0.1, 0.45, 0.45])
        self.user_activity = rng.lognormal(0.0, 1.0, U)
        self.user_hist_mean = np.clip(rng.lognormal(np.log(cfg.mean_hist), 0.6, U), 0.3, 4 * cfg.max_hist)
        k = cfg.interests
        g = -np.log(-np.log(rng.random((U, C)))) + np.log(self.cat_pop0)  # Gumbel top-k: popular interests likelier
        self.user_int_cat = np.argsort(-g, axis=1)[:, :k]
        self.user_int_w = rng.dirichlet(np.ones(k), size=U)
        self.user_style = rng.normal(0.0, 0.8, (U, LATENT_DIM))
        self.user_eff = rng.normal(0.0, w.user, U)
        self.user_prop = rng.normal(0.0, w.cvr_user, U)

        # interaction tables (xDeepFM effect): order 3 and order 2; conversion's own order 2
        self.t3 = _exact(rng.normal(0.0, 1.0, (7, _CAT_GROUPS, _HOUR_BLOCKS)), w.age_cat_hour)
        self.t2 = _exact(rng.normal(0.0, 1.0, (3, C)), w.gender_cat)
        self.tc = _exact(rng.normal(0.0, 1.0, (3, C)), w.cvr_gender_cat)

        hours = np.arange(24)
        self.hour_p = 1.0 + 0.7 * np.sin(2 * np.pi * (hours - 15) / 24)  # traffic peaks at 21h
        self.hour_p /= self.hour_p.sum()
        self.hour_eff = w.hour * np.cos(2 * np.pi * (hours - 21) / 24)
        pos = np.arange(1, cfg.positions + 1)
        self.pos_p = 0.85 ** (pos - 1)  # more impressions at the top; independent of relevance
        self.pos_p /= self.pos_p.sum()

        # slow drift: category popularity random walk, category effect linear drift
        drng = rng_for(cfg.seed, STREAM_DRIFT)
        steps = drng.normal(0.0, cfg.popularity_drift, (cfg.days, C))
        steps[0] = 0.0
        self.cat_logpop = np.log(self.cat_pop0)[None] + np.cumsum(steps, axis=0)  # [days, C]
        t = np.arange(cfg.days)[:, None]
        self.cat_eff = self.cat_eff0[None] + w.category_drift * t * self.cat_drift_dir[None]  # [days, C]

        if cfg.item_tags:
            self._init_tags(rng_for(cfg.seed, STREAM_TAGS))

        self.user_cum = np.cumsum(self.user_activity) / self.user_activity.sum()
        self.user_cum[-1] = 1.0
        self._zpad = np.vstack([self.item_z, np.zeros((1, LATENT_DIM))])  # index -1 -> zero latent

    def _init_tags(self, rng: np.random.Generator) -> None:
        """Item tags ``[I, max_tags]`` (distinct, left-aligned, ``-1`` padding; 0..max_tags per item,
        popular tags likelier) and the true effect of each tag (sd exactly ``tag_effect``)."""
        cfg = self.cfg
        T, K, I = cfg.item_tags, cfg.max_tags, cfg.n_items_total
        pop = rng.lognormal(0.0, 1.0, T)
        g = -np.log(-np.log(rng.random((I, T)))) + np.log(pop)  # Gumbel top-k: distinct, by popularity
        top = np.argsort(-g, axis=1)[:, :K]
        self.item_ntags = rng.integers(0, K + 1, I)
        self.item_tags = np.where(np.arange(K)[None, :] < self.item_ntags[:, None], top, -1)
        self.tag_eff = _exact(rng.normal(0.0, 1.0, T), cfg.tag_effect)

    def tag_term(self, tags: np.ndarray) -> np.ndarray:
        """The tags' part of the relevance logit ``[n]``: the mean effect of the ``[n, max_tags]`` tags
        (``-1`` padding), 0 without tags."""
        valid = tags >= 0
        eff = np.where(valid, self.tag_eff[np.maximum(tags, 0)], 0.0)
        return eff.sum(1) / np.maximum(valid.sum(1), 1)

    # -- days ----------------------------------------------------------------------------------
    def context(self, day: int, incidents=()) -> DayContext:
        """The world on ``day``; world-change incidents of that day (``Incident``) are applied."""
        cfg, w = self.cfg, self.cfg.weights
        date = cfg.date(day)
        dow = dt.date.fromisoformat(date).weekday()  # Monday 0 .. Sunday 6
        base = w.base + w.weekly * np.cos(2 * np.pi * (dow - 6) / 7)
        eta, level, shifts = w.eta, 0.0, {}
        for inc in incidents:
            if inc.kind == "ctr_level_shift":
                level += inc.value
            elif inc.kind == "position_bias_change":
                eta = eta * (1.0 + inc.value)
            elif inc.kind == "distribution_shift":
                shifts[inc.field] = inc.value
        pop = np.exp(self.cat_logpop[day])
        exists = np.flatnonzero(self.item_created <= day)
        order = exists[np.argsort(self.item_cat[exists], kind="stable")]
        age = day - self.item_created[order]
        wts = self.item_pop[order] * (1.0 + cfg.fresh_boost * np.exp(-np.where(self.item_created[order] < 0, 1e9, age) / 2.0))
        return DayContext(
            day=day, date=date, base=float(base + level), eta=float(eta), cat_eff=self.cat_eff[day],
            cat_pop=pop / pop.sum(), items=order, item_cum=_cum_within(self.item_cat[order], wts, cfg.n_categories),
            shifts=shifts, level_shift=level,
        )

    # -- sampling ------------------------------------------------------------------------------
    def sample(self, ctx: DayContext, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` impressions of day ``ctx`` as the true inputs ``X`` (see :meth:`relevance_logit`)."""
        cfg = self.cfg
        sh = ctx.shifts
        C = cfg.n_categories

        user = np.searchsorted(self.user_cum, np.minimum(rng.random(n), 1 - 1e-12), side="right")
        for f, pred in (("user_age_bucket", self.user_age == 6), ("user_gender", self.user_gender == 0), ("user_id", None)):
            if f in sh:  # a different user population shows up for a share of the traffic
                rows = rng.random(n) < sh[f]
                pool = np.arange(cfg.n_users) if pred is None else np.flatnonzero(pred)
                if pool.size:
                    user[rows] = pool[rng.integers(0, pool.size, rows.sum())]

        hour = rng.choice(24, size=n, p=self.hour_p)
        if "hour" in sh:
            rows = rng.random(n) < sh["hour"]
            hour[rows] = (hour[rows] + 12) % 24

        # candidate: category from the user's interests (targeted) or from today's popularity
        targeted = rng.random(n) < cfg.targeted
        comp = (rng.random(n)[:, None] > np.cumsum(self.user_int_w[user], axis=1)).sum(1)
        comp = np.minimum(comp, cfg.interests - 1)
        cat = np.where(targeted, self.user_int_cat[user, comp], rng.choice(C, size=n, p=ctx.cat_pop))
        if "category_id" in sh:  # a campaign pushes today's three least popular categories
            rows = rng.random(n) < sh["category_id"]
            campaign = np.argsort(ctx.cat_pop, kind="stable")[:3]
            cat[rows] = campaign[rng.integers(0, campaign.size, rows.sum())]
        item = ctx.items[_draw(ctx.item_cum, cat, rng)]
        if "item_id" in sh:  # exposure without popularity: the long tail floods in
            rows = rng.random(n) < sh["item_id"]
            item[rows] = ctx.items[rng.integers(0, ctx.items.size, rows.sum())]
        if "shop_id" in sh:  # three shops buy most of the traffic
            rows = rng.random(n) < sh["shop_id"]
            shops = self.item_shop[ctx.items[rng.integers(0, ctx.items.size, 3)]]
            pool = ctx.items[np.isin(self.item_shop[ctx.items], shops)]
            item[rows] = pool[rng.integers(0, pool.size, rows.sum())]
        cat = self.item_cat[item]

        price = self.item_price[item].copy()
        if "price" in sh:
            price += np.log1p(sh["price"])

        position = rng.choice(np.arange(1, cfg.positions + 1), size=n, p=self.pos_p)
        if "position" in sh:  # a layout change: a share of impressions placed uniformly
            rows = rng.random(n) < sh["position"]
            position[rows] = rng.integers(1, cfg.positions + 1, rows.sum())

        lengths = np.minimum(rng.poisson(self.user_hist_mean[user]), cfg.max_hist)
        for f in ("hist_item_id", "hist_category_id"):
            if f in sh:  # the behaviour window shrinks
                lengths = np.floor(lengths * (1.0 - sh[f])).astype(lengths.dtype)
        hist_item = self._histories(ctx, user, lengths, rng)
        hist_cat = np.where(hist_item >= 0, self.item_cat[np.maximum(hist_item, 0)], -1)
        X = {
            "user": user, "item": item, "cat": cat, "shop": self.item_shop[item],
            "age": self.user_age[user], "gender": self.user_gender[user], "hour": hour,
            "price": price, "position": position, "hist_item": hist_item, "hist_cat": hist_cat,
            "item_img": item.copy(), "hist_img": hist_item.copy(), "hist_len": lengths,
        }
        if cfg.item_tags:  # a lookup, no draws: the other fields are the same with or without tags
            X["tags"] = self.item_tags[item]
        return X

    def _histories(self, ctx: DayContext, user: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Behaviour histories ``[n, L]`` (item ids, ``-1`` padding): categories from the user's interests,
        items by popularity tilted towards the user's style (best of a few draws, Gumbel-max)."""
        cfg = self.cfg
        L = cfg.max_hist
        n = user.size
        out = np.full((n, L), -1, dtype=np.int64)
        mask = np.arange(L)[None, :] < lengths[:, None]
        chunk = 200_000  # rows at a time: bounds the [entries, draws, d] scratch
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            m = mask[s:e]
            eu = np.broadcast_to(user[s:e, None], m.shape)[m]  # [E] user of each entry
            E = eu.size
            if E == 0:
                continue
            on_int = rng.random(E) < cfg.history_on_interest
            comp = (rng.random(E)[:, None] > np.cumsum(self.user_int_w[eu], axis=1)).sum(1)
            comp = np.minimum(comp, cfg.interests - 1)
            ecat = np.where(on_int, self.user_int_cat[eu, comp], rng.choice(cfg.n_categories, size=E, p=ctx.cat_pop))
            cand = ctx.items[_draw(ctx.item_cum, np.repeat(ecat, _STYLE_DRAWS).reshape(E, _STYLE_DRAWS), rng)]
            score = np.einsum("ekd,ed->ek", self.item_z[cand], self.user_style[eu]) - np.log(-np.log(rng.random(cand.shape)))
            block = out[s:e]
            block[m] = cand[np.arange(E), np.argmax(score, axis=1)]
        return out

    # -- the truth -----------------------------------------------------------------------------
    def relevance_logit(self, X: dict[str, np.ndarray], ctx: DayContext) -> np.ndarray:
        """True click relevance logit ``r`` ``[n]`` (position excluded; it acts via examination).

        ``X`` holds the true inputs by field: ``user, item, cat, shop, age, gender, hour`` int ``[n]``,
        ``price`` float ``[n]``, ``hist_item, hist_cat`` ``[n, L]`` (``-1`` padding), ``item_img`` ``[n]``
        and ``hist_img`` ``[n, L]`` (ids whose *images* are shown: the latent ``z`` is read from them).
        """
        w = self.cfg.weights
        cat, hist_cat = X["cat"], X["hist_cat"]
        match = hist_cat == cat[:, None]  # [n, L]: history behaviours related to the candidate (DIN)
        n_match = match.sum(1)
        z_c = self._zpad[X["item_img"]]  # [n, d]
        zsum = np.zeros_like(z_c)
        hist_img = X["hist_img"]
        for j in range(hist_img.shape[1]):  # gather per slot: no [n, L, d] temporary
            mj = match[:, j]
            if mj.any():
                zsum[mj] += self._zpad[hist_img[mj, j]]
        style = (zsum * z_c).sum(1) / np.maximum(n_match, 1) / np.sqrt(z_c.shape[1])
        revisit = (X["hist_item"] == X["item"][:, None]).any(1)
        return (
            ctx.base
            + w.relevance * np.log1p(n_match)
            + w.revisit * revisit
            + w.style * style
            + w.image_quality * (z_c @ _IMAGE_QUALITY_DIR)
            + self.item_q[X["item"]]
            + w.price * (X["price"] - self.cat_price[cat])
            + ctx.cat_eff[cat]
            + self.shop_eff[X["shop"]]
            + self.user_eff[X["user"]]
            + self.hour_eff[X["hour"]]
            + self.t3[X["age"], cat % _CAT_GROUPS, X["hour"] // 4]
            + self.t2[X["gender"], cat]
            + (self.tag_term(X["tags"]) if self.cfg.item_tags else 0.0)
        )

    def click_logit(self, X: dict[str, np.ndarray], ctx: DayContext) -> np.ndarray:
        """``logit(p_click)`` with ``p_click = examine(position) * sigmoid(r)``."""
        log_p = np.log(ctx.examine(X["position"])) - np.logaddexp(0.0, -self.relevance_logit(X, ctx))
        return log_p - np.log(-np.expm1(log_p))

    def shared_logit(self, X: dict[str, np.ndarray]) -> np.ndarray:
        """The part ``h`` ``[n]`` of the relevance logit that conversion shares when ``cvr_shared > 0``:
        the user's interest in the candidate's category and the item's quality (id-only + image-visible),
        ``h = relevance*log1p(n_match) + revisit*[item in hist] + q_id[item] + image_quality*(0.8 z0 - 0.6 z2)``."""
        w = self.cfg.weights
        n_match = (X["hist_cat"] == X["cat"][:, None]).sum(1)
        revisit = (X["hist_item"] == X["item"][:, None]).any(1)
        return (
            w.relevance * np.log1p(n_match)
            + w.revisit * revisit
            + self.item_q[X["item"]]
            + w.image_quality * (self._zpad[X["item_img"]] @ _IMAGE_QUALITY_DIR)
        )

    def conversion_logit(self, X: dict[str, np.ndarray], ctx: DayContext) -> np.ndarray:
        """True post-click conversion logit ``s`` ``[n]``: price dominates; relevance does not enter
        unless ``cvr_shared > 0`` (then ``+ cvr_shared * h``, see :meth:`shared_logit`)."""
        w = self.cfg.weights
        s = (
            w.cvr_base
            + w.cvr_price * (X["price"] - self.price_mean)
            + w.cvr_image * self._zpad[X["item_img"], 1]
            + self.tc[X["gender"], X["cat"]]
            + self.user_prop[X["user"]]
            + self.shop_trust[X["shop"]]
        )
        if w.cvr_shared:  # only then: the default path stays bit-for-bit what it was
            s = s + w.cvr_shared * self.shared_logit(X)
        return s

    def truth(self, X: dict[str, np.ndarray], ctx: DayContext) -> dict[str, np.ndarray]:
        r = self.relevance_logit(X, ctx)
        ex = ctx.examine(X["position"])
        s = self.conversion_logit(X, ctx)
        return {"relevance_logit": r, "examine": ex, "p_click": ex * _sig(r), "conversion_logit": s, "p_conversion": _sig(s)}
