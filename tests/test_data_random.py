"""ctrlens.data.random_batch follows the index convention and the schema's shapes."""

import torch

import reference_models
from ctrlens.data import random_batch
from ctrlens.synth import WorldConfig, build_schema


def test_random_batch_follows_the_index_convention_and_runs_every_model():
    schema = build_schema(WorldConfig())
    b = random_batch(schema, 300, seed=4, mean_len=8, click_rate=0.25, row0=1000)
    assert len(b) == 300 and b.row.tolist() == list(range(1000, 1300))
    for f in schema.sparse:
        x = b.features[f.name]
        assert x.min() >= 2 and x.max() < f.num_embeddings
    masks = [b.masks[f.name] for f in schema.sequences]
    assert all(torch.equal(m, masks[0]) for m in masks)  # aligned histories
    lens = masks[0].sum(1).float()
    assert 6 < lens.mean() < 10  # Poisson(8), clipped
    for f in schema.sequences:
        x, m = b.features[f.name], b.masks[f.name]
        assert (x[~m] == 0).all() and (x[m] >= 2).all()
    for f in schema.images:
        ix = b.image_index[f.name]
        assert ((ix == 0) == (b.features[f.source] == 0)).all() and b.images[0].abs().sum() == 0
    assert 0.15 < b.labels["click"].mean() < 0.35
    assert torch.equal(random_batch(schema, 50, seed=1).features["item_id"], random_batch(schema, 50, seed=1).features["item_id"])
    for name in reference_models.MODEL_NAMES:
        out = reference_models.build(name, schema).eval()(b)
        assert all(torch.isfinite(v).all() for k, v in out.items() if k in ("ctr", "cvr", "ctcvr", "seen"))
