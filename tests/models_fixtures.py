"""Hand-built schemas and batches for model tests, shaped like the synthetic world's."""

from __future__ import annotations

import torch

from ctrlens.data.batch import Batch
from ctrlens.data.schema import DenseField, ImageField, PositionField, Schema, SequenceField, SparseField

HIST_LEN = 5
MAX_POSITION = 6
N_ITEMS = 30
N_CATEGORIES = 7


def world_schema(*, images: bool = True, image_size: int = 16, dim: int = 4, conversion: bool = True) -> Schema:
    """A miniature of the synthetic world's schema (same field names, tiny vocabularies)."""
    fields = [
        SparseField("user_id", 40, dim, role="user"),
        SparseField("item_id", N_ITEMS, dim, table="item", role="item"),
        SparseField("category_id", N_CATEGORIES, dim, table="category"),
        SparseField("shop_id", 12, dim),
        DenseField("price"),
        SequenceField("hist_item_id", "item", HIST_LEN),
        SequenceField("hist_category_id", "category", HIST_LEN),
        SparseField("user_age_bucket", 6, dim),
        SparseField("user_gender", 3, dim),
        SparseField("hour", 24, dim),
        PositionField("position", MAX_POSITION),
    ]
    kw: dict = {}
    if images:
        fields += [ImageField("item_image", "item_id"), ImageField("hist_image", "hist_item_id")]
        kw = dict(image_table="images.parquet", image_shape=(3, image_size, image_size))
    return Schema(tuple(fields), labels=("click", "conversion") if conversion else ("click",), **kw)


def _item_image(item: int, shape: tuple[int, int, int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + item)
    return torch.rand(shape, generator=g)


def random_batch(schema: Schema, n: int = 16, seed: int = 0) -> Batch:
    """Random indices per the index convention, ragged histories (some empty), labels, and images
    of the unique items referenced (row 0 the all-zero image)."""
    g = torch.Generator().manual_seed(seed)
    feats: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    for f in schema.fields:
        if f.kind == "sparse":
            feats[f.name] = torch.randint(2, f.num_embeddings, (n,), generator=g)
        elif f.kind == "dense":
            feats[f.name] = torch.rand(n, generator=g) * 3
        elif f.kind == "position":
            feats[f.name] = torch.randint(1, f.max_position + 1, (n,), generator=g)
    lengths = torch.randint(0, HIST_LEN + 1, (n,), generator=g)
    lengths[0] = HIST_LEN
    lengths[1] = 0  # one user with no history at all
    for f in schema.sequences:
        mask = torch.arange(f.max_len)[None, :] < lengths[:, None]
        rows = schema.table_of(f.name).num_embeddings
        feats[f.name] = torch.randint(2, rows, (n, f.max_len), generator=g) * mask
        masks[f.name] = mask
    click = (torch.rand(n, generator=g) < 0.4).float()
    click[0], click[1] = 1.0, 0.0
    labels = {"click": click}
    if schema.has_conversion:
        labels["conversion"] = click * (torch.rand(n, generator=g) < 0.5).float()
    images, image_index = None, {}
    if schema.images:
        shape = schema.image_shape
        refs = {}
        for f in schema.images:
            refs[f.name] = feats[f.source]
        items = torch.unique(torch.cat([r.reshape(-1) for r in refs.values()]))
        items = items[items > 0]
        lookup = {int(i): k + 1 for k, i in enumerate(items)}
        images = torch.stack([torch.zeros(shape)] + [_item_image(int(i), shape) for i in items])
        for name, r in refs.items():
            image_index[name] = r.clone().apply_(lambda v: lookup.get(v, 0))
    user = feats["user_id"] - 2 if "user_id" in feats else None
    return Batch(feats, masks, labels, images, image_index, user, torch.arange(n))


def with_padding_garbage(batch: Batch, seed: int = 1) -> Batch:
    """The same batch with random ids (and image indices) written at every padding position."""
    g = torch.Generator().manual_seed(seed)
    feats = dict(batch.features)
    for name, mask in batch.masks.items():
        junk = torch.randint(2, 2 + N_CATEGORIES, mask.shape, generator=g)  # valid in every table
        feats[name] = torch.where(mask, feats[name], junk)
    idx = dict(batch.image_index)
    if batch.images is not None:
        for name, ix in idx.items():
            if ix.dim() == 2:
                src_mask = next(m for m in batch.masks.values() if m.shape == ix.shape)
                junk = torch.randint(1, batch.images.shape[0], ix.shape, generator=g)
                idx[name] = torch.where(src_mask, ix, junk)
    return Batch(feats, dict(batch.masks), batch.labels, batch.images, idx, batch.user, batch.row)
