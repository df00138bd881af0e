"""Write a synthetic world in the daily data contract layout (docs/data-format.md):

    <root>/schema.json                        Schema.save
    <root>/images.parquet                     item_id int64, image binary (3*S*S uint8 bytes), one row per item
    <root>/day=YYYY-MM-DD/part-0.parquet      one row per impression (features + click, conversion)
    <root>/day=YYYY-MM-DD/_images.parquet     only on blank_images days: per-day image override rows
    <root>/ground_truth.json                  parameters, examination curve, true importance, incidents, per-day rates
    <root>/_truth/                            row-aligned true probabilities per day, item and user tables

Names starting with ``_`` are invisible to Parquet dataset discovery (pyarrow, Spark), so the extra
files never look like impression rows.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, fields as dc_fields
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctrlens.data.schema import BagField, DenseField, ImageField, PositionField, Schema, SequenceField, SparseField
from ctrlens.errors import InputError
from ctrlens.metrics import auc
from ctrlens.results import jsonable
from ctrlens.synth.config import LATENT_DIM, Weights, WorldConfig
from ctrlens.synth.images import render_images
from ctrlens.synth.importance import FIELD_INPUTS, ranking, true_importance
from ctrlens.synth.incidents import IMAGE_FIELDS, SEQ_FIELDS, Incident, corrupt, validate_incidents
from ctrlens.synth.world import (
    _IMAGE_QUALITY_DIR,
    STREAM_IMAGES,
    STREAM_INCIDENT,
    STREAM_LABELS,
    STREAM_DAY,
    World,
    rng_for,
)

GROUND_TRUTH_FILE = "ground_truth.json"
IMAGE_TABLE = "images.parquet"
IMAGE_OVERRIDE = "_images.parquet"  # inside a day folder
TRUTH_DIR = "_truth"
PART_FILE = "part-0.parquet"

# logged column -> key of the true inputs X (image fields are not columns: images live per item)
_LOGGED = {k: v for k, v in FIELD_INPUTS.items() if k not in IMAGE_FIELDS}


@dataclass(frozen=True)
class SynthWorld:
    """A generated world: its root folder, schema and the parsed ``ground_truth.json``."""

    root: Path
    schema: Schema
    ground_truth: dict

    @property
    def days(self) -> list[str]:
        return [d["date"] for d in self.ground_truth["days"]]

    def day_dir(self, day: int | str) -> Path:
        date = self.days[day] if isinstance(day, int) else day
        return self.root / f"day={date}"

    @classmethod
    def open(cls, root: str | Path) -> "SynthWorld":
        root = Path(root)
        p = root / GROUND_TRUTH_FILE
        if not p.exists():
            raise InputError(f"{p}: not found; {root} is not a synthetic world (run `ctrlens synth` first)")
        return cls(root=root, schema=Schema.load(root), ground_truth=json.loads(p.read_text()))


def build_schema(cfg: WorldConfig) -> Schema:
    """The world's schema. Item vocabulary covers items created on later days (headroom).

    With ``cfg.item_tags > 0`` a bag field ``item_tags`` (the candidate's tags, mean-pooled) follows
    the sequences."""
    L = cfg.max_hist
    tags = (BagField("item_tags", cfg.item_tags, max_len=cfg.max_tags, table="tag", pooling="mean"),) if cfg.item_tags else ()
    return Schema(
        fields=(
            SparseField("user_id", cfg.n_users, role="user"),
            SparseField("item_id", cfg.n_items_total, table="item", role="item"),
            SparseField("category_id", cfg.n_categories, table="category"),
            SparseField("shop_id", cfg.n_shops),
            SparseField("user_age_bucket", 7),
            SparseField("user_gender", 3),
            SparseField("hour", 24),
            DenseField("price", fill=0.0),  # log price; nulls (missing_spike) load as 0.0
            SequenceField("hist_item_id", table="item", max_len=L),
            SequenceField("hist_category_id", table="category", max_len=L),
            *tags,
            PositionField("position", max_position=cfg.positions),
            ImageField("item_image", source="item_id"),
            ImageField("hist_image", source="hist_item_id"),
        ),
        labels=("click", "conversion"),
        image_table=IMAGE_TABLE,
        image_shape=(3, cfg.image_size, cfg.image_size),
        extra={
            "generator": "ctrlens.synth",
            "seed": cfg.seed,
            "ground_truth": GROUND_TRUTH_FILE,
            "image_override": f"day=YYYY-MM-DD/{IMAGE_OVERRIDE}",
        },
    )


def _binary(images: np.ndarray) -> pa.Array:
    """uint8 ``[n, ...]`` -> arrow binary array of ``n`` equal-length values, zero Python loops."""
    n = images.shape[0]
    flat = np.ascontiguousarray(images).reshape(n, -1)
    width = flat.shape[1]
    offsets = np.arange(n + 1, dtype=np.int32) * width
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(flat.tobytes())])


def _image_table(ids: np.ndarray, images: np.ndarray) -> pa.Table:
    return pa.table({"item_id": pa.array(ids, pa.int64()), "image": _binary(images)})


def _list(padded: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """Right-padded ``[n, L]`` ids -> ``list<int64>`` with the first ``lengths[i]`` entries per row."""
    mask = np.arange(padded.shape[1])[None, :] < lengths[:, None]
    offsets = np.zeros(lengths.size + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(padded[mask].astype(np.int64)))


def _logged_columns(X: dict[str, np.ndarray]) -> dict[str, pa.Array]:
    cols: dict[str, pa.Array] = {}
    for name, key in _LOGGED.items():
        if name in SEQ_FIELDS:
            cols[name] = _list(X[key], X["hist_len"])
        elif name == "price":
            cols[name] = pa.array(X[key].astype(np.float32))
        else:
            cols[name] = pa.array(X[key].astype(np.int64))
    if "tags" in X:  # left-aligned, -1 padding
        cols["item_tags"] = _list(X["tags"], (X["tags"] >= 0).sum(1))
    return cols


def _prepare(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: output path exists and is not a folder")
    if not root.exists() or not any(root.iterdir()):
        root.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise InputError(f"{root}: output folder is not empty (pass overwrite=True / --overwrite to replace a world there)")
    ours = {"schema.json", GROUND_TRUTH_FILE, IMAGE_TABLE, TRUTH_DIR}
    foreign = sorted(p.name for p in root.iterdir() if p.name not in ours and not p.name.startswith("day="))
    if foreign:
        raise InputError(f"{root}: refusing to overwrite, the folder holds files that are not a synthetic world: {foreign[:5]}")
    for p in root.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def generate(
    out_dir: str | Path,
    *,
    days: int = 30,
    rows_per_day: int = 50_000,
    seed: int = 1,
    incidents: Iterable[Incident | str] = (),
    start: str = "2026-01-01",
    n_users: int = 20_000,
    n_items: int = 5_000,
    n_categories: int = 40,
    n_shops: int = 400,
    max_hist: int = 20,
    image_size: int = 32,
    new_items_per_day: int = 50,
    positions: int = 10,
    weights: Weights | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **options,
) -> SynthWorld:
    """Generate a synthetic CTR world of ``days`` x ``rows_per_day`` impressions into ``out_dir``.

    ``incidents``: :class:`Incident` objects or ``"DAY:KIND[:FIELD][:MAGNITUDE]"`` strings (day index
    from 0, or a date). ``options``: any other :class:`WorldConfig` field (e.g. ``mean_hist``,
    ``targeted``, ``importance_rows``). ``progress(done, total)`` is called after each day.
    Same arguments, same bytes. Raises :class:`InputError` for bad arguments or a non-empty ``out_dir``.
    """
    known = {f.name for f in dc_fields(WorldConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"synth: unknown option(s) {unknown}; options are {sorted(known)}")
    cfg = WorldConfig(
        days=days, rows_per_day=rows_per_day, seed=seed, start=start, n_users=n_users, n_items=n_items,
        n_categories=n_categories, n_shops=n_shops, max_hist=max_hist, image_size=image_size,
        new_items_per_day=new_items_per_day, positions=positions, weights=weights or Weights(), **options,
    )
    incs = validate_incidents([Incident.parse(i, start=start) if isinstance(i, str) else i for i in incidents], days,
                              tags=bool(cfg.item_tags))
    root = Path(out_dir)
    _prepare(root, overwrite)

    world = World(cfg)
    schema = build_schema(cfg)
    schema.save(root)
    vocab = {f.name: f.vocab_size for f in schema.sparse}
    vocab.update({s.name: schema.table_of(s.name).vocab_size for s in (*schema.sequences, *schema.bags)})

    item_ids = np.arange(cfg.n_items_total)
    images = render_images(world.item_z, cfg.image_size, rng_for(seed, STREAM_IMAGES))
    pq.write_table(_image_table(item_ids, images), root / IMAGE_TABLE)
    (root / TRUTH_DIR).mkdir()
    _write_entities(world, root / TRUTH_DIR)

    day_stats = []
    for day in range(days):
        todays = [i for i in incs if i.day == day]
        ctx = world.context(day, [i for i in todays if i.effect == "world"])
        X = world.sample(ctx, rows_per_day, rng_for(seed, STREAM_DAY, day))
        T = world.truth(X, ctx)
        lab = rng_for(seed, STREAM_LABELS, day)
        click = lab.random(rows_per_day) < T["p_click"]
        conversion = click & (lab.random(rows_per_day) < T["p_conversion"])

        cols = _logged_columns(X)
        details = []
        ddir = root / f"day={ctx.date}"
        ddir.mkdir()
        for k, inc in enumerate(incs):
            if inc.day != day or inc.effect != "input":
                continue
            irng = rng_for(seed, STREAM_INCIDENT, day, k)
            if inc.kind == "blank_images":
                details.append(_blank_images(ddir, X, inc, irng, cfg.image_size))
            else:
                details.append(corrupt(cols, inc, irng, vocab))
        table = pa.table(
            {**{f.name: cols[f.name] for f in schema.fields if f.name in cols},
             "click": pa.array(click.astype(np.int64)), "conversion": pa.array(conversion.astype(np.int64))}
        )
        pq.write_table(table, ddir / PART_FILE)
        pq.write_table(
            pa.table({k: pa.array(v.astype(np.float32)) for k, v in T.items()}),
            root / TRUTH_DIR / f"rows-{ctx.date}.parquet",
        )
        n_click = int(click.sum())
        day_stats.append({
            "day": day,
            "date": ctx.date,
            "rows": rows_per_day,
            "clicks": n_click,
            "conversions": int(conversion.sum()),
            "ctr": round(n_click / rows_per_day, 6),
            "cvr": round(int(conversion.sum()) / n_click, 6) if n_click else None,
            "true_ctr": round(float(T["p_click"].mean()), 6),
            "true_cvr": round(float(T["p_conversion"][click].mean()), 6) if n_click else None,
            "true_ctcvr": round(float((T["p_click"] * T["p_conversion"]).mean()), 6),
            "oracle_auc": None if math.isnan(a := auc(click, T["p_click"])) else round(a, 6),
            "base_logit": round(ctx.base, 6),
            "eta": round(ctx.eta, 6),
            "items_existing": int(ctx.items.size),
            "new_items": [cfg.n_items + day * cfg.new_items_per_day, cfg.n_items + (day + 1) * cfg.new_items_per_day]
            if cfg.new_items_per_day else [],
            "incidents": [{**i.to_dict(start), **d} for i, d in zip([i for i in todays if i.effect == "input"], details)]
            + [i.to_dict(start) for i in todays if i.effect == "world"],
        })
        if progress is not None:
            progress(day + 1, days)

    gt = _ground_truth(world, schema, incs, day_stats)
    (root / GROUND_TRUTH_FILE).write_text(json.dumps(jsonable(gt), indent=1, sort_keys=False))
    return SynthWorld(root=root, schema=schema, ground_truth=json.loads((root / GROUND_TRUTH_FILE).read_text()))


def _blank_images(ddir: Path, X: dict[str, np.ndarray], inc: Incident, rng: np.random.Generator, size: int) -> dict:
    """Write the day's image override: a share of the items shown that day get an all-zero image."""
    shown = []
    if inc.field in (None, "item_image"):
        shown.append(X["item"])
    if inc.field in (None, "hist_image"):
        h = X["hist_item"]
        shown.append(h[h >= 0])
    ids = np.unique(np.concatenate(shown))
    if inc.value < 1.0:
        ids = ids[rng.random(ids.size) < inc.value]
    pq.write_table(_image_table(ids, np.zeros((ids.size, 3, size, size), np.uint8)), ddir / IMAGE_OVERRIDE)
    return {"items": int(ids.size), "override": f"{ddir.name}/{IMAGE_OVERRIDE}"}


def _write_entities(world: World, tdir: Path) -> None:
    cfg = world.cfg
    z = world.item_z
    items = {
        "item_id": np.arange(cfg.n_items_total), "category_id": world.item_cat, "shop_id": world.item_shop,
        "log_price": world.item_price, "created_day": world.item_created, "popularity": world.item_pop,
        "quality_id": world.item_q, "quality_image": cfg.weights.image_quality * (z @ _IMAGE_QUALITY_DIR),
        **{f"z{j}": z[:, j] for j in range(LATENT_DIM)},
    }
    if cfg.item_tags:
        items["tags"] = _list(world.item_tags, world.item_ntags)
        pq.write_table(pa.table({"tag_id": np.arange(cfg.item_tags), "effect": world.tag_eff}), tdir / "tags.parquet")
    pq.write_table(pa.table(items), tdir / "items.parquet")
    k = cfg.interests
    users = {
        "user_id": np.arange(cfg.n_users), "user_age_bucket": world.user_age, "user_gender": world.user_gender,
        "activity": world.user_activity, "hist_mean": world.user_hist_mean, "effect": world.user_eff,
        "propensity": world.user_prop,
        "interest_category": pa.FixedSizeListArray.from_arrays(pa.array(world.user_int_cat.reshape(-1).astype(np.int64)), k),
        "interest_weight": pa.FixedSizeListArray.from_arrays(pa.array(world.user_int_w.reshape(-1)), k),
        **{f"style{j}": world.user_style[:, j] for j in range(LATENT_DIM)},
    }
    pq.write_table(pa.table(users), tdir / "users.parquet")


def _ground_truth(world: World, schema: Schema, incs: tuple[Incident, ...], day_stats: list[dict]) -> dict:
    cfg, w = world.cfg, world.cfg.weights
    imp = true_importance(world)
    pos = np.arange(1, cfg.positions + 1)
    curve = lambda eta: [round(float(v), 6) for v in pos ** -eta]  # noqa: E731
    changed = {d["date"]: {"eta": d["eta"], "values": curve(d["eta"])} for d in day_stats if d["eta"] != round(w.eta, 6)}
    rows = sum(d["rows"] for d in day_stats)
    clicks = sum(d["clicks"] for d in day_stats)
    return {
        "generator": "ctrlens.synth",
        "version": 1,
        "config": cfg.to_dict(),
        "schema_hash": schema.hash,
        "examination": {"formula": "examine(pos) = pos ** -eta", "eta": w.eta, "positions": pos.tolist(),
                        "values": curve(w.eta), "per_day": changed},
        "click_model": {
            "formula": "p_click = examine(position) * sigmoid(r); r = base(day) + relevance*log1p(n_match) "
            "+ revisit*[item in hist] + style*mean_matched(z_hist).z_item/2 + image_quality*(0.8 z0 - 0.6 z2) "
            "+ q_id[item] + price*(price - cat_price[cat]) + cat_eff(day)[cat] + shop_eff[shop] + user_eff[user] "
            "+ hour_eff[hour] + T3[age, cat % 4, hour // 4] + T2[gender, cat]"
            + (" + mean(tag_eff[tags of item]) (0 without tags; tag_eff sd tag_effect, _truth/tags.parquet)"
               if cfg.item_tags else ""),
            "weights": {k: v for k, v in w.__dict__.items() if not k.startswith("cvr_")},
        },
        "conversion_model": {
            "formula": "p_conversion | click = sigmoid(s); s = cvr_base + cvr_price*(price - price_mean) "
            "+ cvr_image*z1 + Tc[gender, cat] + propensity[user] + shop_trust[shop]"
            + (" + cvr_shared*(relevance*log1p(n_match) + revisit*[item in hist] + q_id[item] "
               "+ image_quality*(0.8 z0 - 0.6 z2))" if w.cvr_shared else ""),
            "weights": {k: v for k, v in w.__dict__.items() if k.startswith("cvr_") and (k != "cvr_shared" or v)},
            "price_mean": round(world.price_mean, 6),
        },
        "importance": {
            "method": "mean |delta logit| when the field is permuted across rows (whole lists for sequences) "
            f"on {cfg.importance_rows} clean rows of day 0; click: logit(p_click), relevance: r, conversion: s",
            **imp,
        },
        "importance_rank": {k: ranking(v) for k, v in imp.items()},
        "vocab": {f.name: f.vocab_size for f in schema.sparse},
        "images": {"table": IMAGE_TABLE, "shape": [3, cfg.image_size, cfg.image_size],
                   "override": f"day=YYYY-MM-DD/{IMAGE_OVERRIDE}",
                   "encoding": "colour from z0, z1; stripe amplitude from z2, frequency from z3; see docs/synthetic-world.md"},
        "incidents": [i.to_dict(cfg.start) for i in incs],
        "totals": {"rows": rows, "clicks": clicks, "conversions": sum(d["conversions"] for d in day_stats),
                   "ctr": round(clicks / rows, 6)},
        "days": day_stats,
    }
