"""DICM's image embedding model, run once per unique image of a batch (the AMS idea).

A batch carries each referenced item's image once (``batch.images [U, C, H, W]``) and, per image
field, indices into it (``batch.image_index[field]``, ``[B]`` or ``[B, L]``). The encoder runs once
per forward on the distinct images the indices reference, and the codes are gathered per row and
position -- the same saving AMS gets by computing image embeddings on the server, per image, not
per sample.

DICM's encoder is a frozen VGG16 (to FC6, 4096-d) followed by a trainable FC 4096-256-64-12. We have
no pre-trained network on small synthetic images, so the whole encoder is a small CNN trained
end-to-end; its trainable head keeps the paper's shape (FC layers down to ``d = 12``).

Index 0 of ``images`` is the all-zero image used for padding and for items without an image; its
embedding is set to exactly 0 (like the padding row of an ``nn.Embedding``), so a missing image
contributes nothing downstream.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.data.schema import ImageField, Schema, SequenceField
from ctrlens.errors import InputError
from ctrlens.models.blocks.embedding import module_key, sequence_mask
from ctrlens.models.interface import FieldSpec, Tap


class ImageEncoder(nn.Module):
    """Small CNN: ``(conv3x3 -> ReLU -> maxpool2)`` per channel width, global average pool, FC head.

    The first convolution has stride ``stem_stride`` (2 by default): the encoder runs on thousands
    of images per batch (every behaviour's image), so a cheap stem keeps DICM trainable on a CPU.

    Args:
        in_channels: ``C`` of the images.
        out_dim: embedding width ``d`` (12 in DICM).
        channels: conv widths, e.g. ``(16, 32)``.
        hidden: FC widths between the pooled features and ``d`` (DICM: 256, 64).
        stem_stride: stride of the first convolution.

    Shape: ``[U, C, H, W]`` (any ``H, W``) -> ``[U, d]``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_dim: int = 12,
        channels: Sequence[int] = (16, 32),
        hidden: Sequence[int] = (64,),
        stem_stride: int = 2,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for i, c in enumerate(channels):
            stride = stem_stride if i == 0 else 1
            layers += [nn.Conv2d(prev, c, 3, stride=stride, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            prev = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        layers.append(nn.Linear(prev, out_dim))
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class ImageEmbedding(nn.Module):
    """Embeds image fields with one shared :class:`ImageEncoder`, one tap per field.

    Args:
        schema: the dataset schema (gives ``image_shape`` and each image field's ``source``).
        fields: image field names, in output order.
        dim, channels, hidden: see :class:`ImageEncoder`.

    ``forward(batch)`` -> image field -> ``[B, d]`` (source is a sparse field) or ``[B, L, d]``
    (source is a sequence field; zero at its padding). Tap masks name the *source* sequence field,
    whose mask the batch carries.
    """

    def __init__(
        self, schema: Schema, fields: Sequence[str], dim: int = 12, channels: Sequence[int] = (16, 32), hidden: Sequence[int] = (64,)
    ):
        super().__init__()
        if schema.image_shape is None:
            raise InputError("the schema has no image_shape; image fields need an image table")
        self.fields = tuple(fields)
        self.source: dict[str, str] = {}
        self.sequence: dict[str, bool] = {}
        for f in self.fields:
            spec = schema[f] if f in schema else None
            if not isinstance(spec, ImageField):
                raise InputError(f"{f!r} is not an image field of the schema; image fields: {[g.name for g in schema.images]}")
            self.source[f] = spec.source
            self.sequence[f] = isinstance(schema[spec.source], SequenceField)
        self.encoder = ImageEncoder(schema.image_shape[0], dim, channels, hidden)
        self.taps = nn.ModuleDict({module_key(f): nn.Identity() for f in self.fields})
        self.dim = dim

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        if batch.images is None:
            raise InputError(f"batch has no images, but the model embeds image fields {list(self.fields)}")
        missing = [f for f in self.fields if f not in batch.image_index]
        if missing:
            raise InputError(f"batch has no image_index for image field(s) {missing}; it has {sorted(batch.image_index)}")
        # Encode only the images this batch references, each once: a batch cut with
        # Batch.select() still carries every image of its parent.
        idx = [batch.image_index[f] for f in self.fields]
        used, inverse = torch.unique(torch.cat([i.reshape(-1) for i in idx]), return_inverse=True)
        codes = self.encoder(batch.images[used])  # [U', d]
        out: dict[str, Tensor] = {}
        start = 0
        for f, ix in zip(self.fields, idx):
            rows = inverse[start : start + ix.numel()].reshape(ix.shape)
            start += ix.numel()
            keep = ix != 0
            if self.sequence[f]:
                keep = keep & sequence_mask(batch, self.source[f])
            e = codes[rows] * keep.unsqueeze(-1).to(codes.dtype)
            out[f] = self.taps[module_key(f)](e)
        return out

    def field_specs(self) -> dict[str, FieldSpec]:
        return {
            f: FieldSpec(f, Tap(self.taps[module_key(f)], None, self.source[f] if self.sequence[f] else None), "image")
            for f in self.fields
        }
