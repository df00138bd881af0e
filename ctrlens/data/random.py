"""Random batches shaped like a schema: for benchmarks, and for smoke-testing a model's adapter
before any real data is at hand."""

from __future__ import annotations

import torch

from ctrlens.data.batch import Batch
from ctrlens.data.schema import INDEX_OFFSET, Schema


def random_batch(
    schema: Schema,
    n: int,
    *,
    seed: int = 0,
    mean_len: float | None = None,
    click_rate: float = 0.1,
    n_images: int = 64,
    row0: int = 0,
) -> Batch:
    """``n`` random rows following the index convention of :mod:`ctrlens.data.schema`.

    Sparse ids are uniform over the vocabulary (never missing or OOV); dense values standard normal;
    positions uniform. Sequences of the same ``max_len`` share one length per row (behaviour
    histories are aligned, as in logged data): uniform in ``0..max_len``, or Poisson with mean
    ``mean_len`` clipped to ``max_len``; padding is index 0 and masked. Image fields index ``n_images``
    random images (row 0 is the blank image). Labels: ``click`` at ``click_rate``, ``conversion`` 0,
    and every other label of the schema at ``click_rate``. Bags: ids uniform over their table, lengths
    uniform in ``0..max_len`` (padding 0, masked), weights (if the bag has a weights column) uniform in
    ``[0.5, 1.5)`` at real positions.
    """
    g = torch.Generator().manual_seed(seed)
    feats: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    for f in schema.fields:
        if f.kind == "sparse":
            feats[f.name] = torch.randint(INDEX_OFFSET, f.num_embeddings, (n,), generator=g)
        elif f.kind == "dense":
            feats[f.name] = torch.randn(n, generator=g)
        elif f.kind == "position":
            feats[f.name] = torch.randint(1, f.max_position + 1, (n,), generator=g)
    lengths: dict[int, torch.Tensor] = {}
    for f in schema.sequences:
        if f.max_len not in lengths:
            if mean_len is None:
                lengths[f.max_len] = torch.randint(0, f.max_len + 1, (n,), generator=g)
            else:
                lengths[f.max_len] = torch.poisson(torch.full((n,), float(mean_len)), generator=g).clamp(max=f.max_len).long()
        mask = torch.arange(f.max_len)[None, :] < lengths[f.max_len][:, None]
        rows = schema.table_of(f.name).num_embeddings
        feats[f.name] = torch.randint(INDEX_OFFSET, rows, (n, f.max_len), generator=g) * mask
        masks[f.name] = mask
    images, index = None, {}
    if schema.images and schema.image_shape:
        images = torch.rand(n_images, *schema.image_shape, generator=g)
        images[0] = 0
        for f in schema.images:
            index[f.name] = torch.randint(1, n_images, feats[f.source].shape, generator=g) * (feats[f.source] != 0)
    labels = {"click": (torch.rand(n, generator=g) < click_rate).float(), "conversion": torch.zeros(n)}
    # drawn last, so schemas without bags or other labels get the same batches as before
    for name in schema.labels:
        if name not in labels:
            labels[name] = (torch.rand(n, generator=g) < click_rate).float()
    weights: dict[str, torch.Tensor] = {}
    for b in schema.bags:
        length = torch.randint(0, b.max_len + 1, (n,), generator=g)
        mask = torch.arange(b.max_len)[None, :] < length[:, None]
        rows = schema.table_of(b.name).num_embeddings
        feats[b.name] = torch.randint(INDEX_OFFSET, rows, (n, b.max_len), generator=g) * mask
        masks[b.name] = mask
        if b.weights:
            weights[b.name] = (0.5 + torch.rand(n, b.max_len, generator=g)) * mask
    return Batch(feats, masks, labels, images, index, row=torch.arange(row0, row0 + n), weights=weights)
