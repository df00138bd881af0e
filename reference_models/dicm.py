"""DICM: Deep Image CTR Model (Ge et al., "Image Matters", CIKM 2018).

DIN plus two image fields: the ad's image and the images of the user's behaviours. One image
encoder (a small CNN here; VGG16 + FC 4096-256-64-12 in the paper) runs once per unique image of the
batch (AMS); the ad image's 12-d embedding is an MLP input, and the behaviour images are pooled by
MultiQueryAttentivePooling: one channel queried by the ad image, one by the ad's id embeddings,
concatenated.

Canonical names: DIN's (``attention.<group>.<i>``, ``embedding``, ``mlp.<i>``, ``logit.ctr``) plus
``attention.<image field>.image.<i>`` and ``attention.<image field>.id.<i>`` for the two channels'
hidden layers (``[B, L, H_i]``, masked by the behaviour images' source sequence). Fields: the id
fields plus the image fields (``[B, d]`` ad image, ``[B, L, d]`` behaviour images). Extra outputs:
``attention.<image field>.image`` and ``attention.<image field>.id`` weights ``[B, L]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.errors import InputError
from ctrlens.models.blocks import ImageEmbedding, MultiQueryAttentivePooling, masked_sum, sequence_mask
from ctrlens.models.blocks.embedding import module_key
from ctrlens.models.interface import FieldSpec, LayerSpec

from reference_models.din import DINConfig, DINModel, candidate_of


@dataclass(frozen=True)
class DICMConfig(DINConfig):
    """DICM sizes (on top of :class:`DINConfig`).

    Attributes:
        image_dim: image embedding width (12 in the paper).
        image_channels: CNN conv widths; image_hidden: FC widths down to ``image_dim``
            (paper: 256, 64 after a frozen VGG16).
        image_attention: hidden widths of each AttentivePooling channel (64-16, Fig. 3).
        aggregator: ``"mqap"`` (MultiQueryAttentivePooling, the paper's best), ``"attentive"``
            (ad-image query only) or ``"sum"`` (sum pooling).
    """

    image_dim: int = 12
    image_channels: tuple[int, ...] = (16, 32)
    image_hidden: tuple[int, ...] = (64,)
    image_attention: tuple[int, ...] = (64, 16)
    aggregator: str = "mqap"

    @classmethod
    def paper(cls) -> "DICMConfig":
        """Paper: PReLU, FC 200-80, image 12-d through FC 256-64-12, attention 64-16."""
        return cls(image_hidden=(256, 64), image_channels=(32, 64))


class DICMModel(DINModel, name="dicm", config=DICMConfig):
    """DIN + ad image + behaviour images. ``forward(batch)`` -> ``{"ctr", "ctr_logit", attention weights}``."""

    def build_extras(self) -> int:
        c, schema = self.config, self.schema
        if c.aggregator not in ("mqap", "attentive", "sum"):
            raise InputError(f"dicm: aggregator must be 'mqap', 'attentive' or 'sum', got {c.aggregator!r}")
        names = self.pick_fields(("image",))
        if not names:
            raise InputError("dicm needs image fields in the schema (e.g. item_image, hist_image); it has none")
        self.images = ImageEmbedding(schema, names, c.image_dim, c.image_channels, c.image_hidden)
        seq = [f for f in names if self.images.sequence[f]]
        ads = [f for f in names if not self.images.sequence[f]]
        self.ad_image = ads[0] if ads else None
        self.id_query: dict[str, tuple[str, ...]] = {}
        self.pools = nn.ModuleDict()
        for f in seq:
            src = self.images.source[f]
            group = next((g for g in self.groups if src in g), None)
            q = self.queries[group[0]] if group else (candidate_of(schema, src, self.embed.fields),)
            if None in q:
                raise InputError(f"dicm: behaviour images {f!r} (source {src!r}) have no candidate id field to query them")
            self.id_query[f] = q  # type: ignore[assignment]
            qdims = {"id": sum(self.embed.dims[n] for n in q)}  # type: ignore[index]
            if self.ad_image is not None:
                qdims = {"image": c.image_dim, **qdims}
            if c.aggregator == "attentive":
                if self.ad_image is None:
                    raise InputError("dicm: aggregator 'attentive' needs an ad image field (an image field whose source is a sparse field)")
                qdims = {"image": c.image_dim}
            if c.aggregator != "sum":
                self.pools[module_key(f)] = MultiQueryAttentivePooling(
                    c.image_dim, qdims, c.image_attention, c.attention_activation, c.softmax
                )
        width = len(ads) * c.image_dim
        for f in seq:
            width += self.pools[module_key(f)].out_dim if c.aggregator != "sum" else c.image_dim
        return width

    def extras(self, batch: Batch, emb: dict[str, Tensor], out: dict[str, Tensor]) -> list[Tensor]:
        img = self.images(batch)
        vecs: list[Tensor] = []
        for f in self.images.fields:
            if not self.images.sequence[f]:
                vecs.append(img[f])
                continue
            mask = sequence_mask(batch, self.images.source[f])
            if self.config.aggregator == "sum":
                vecs.append(masked_sum(img[f], mask))
                continue
            queries = {"id": torch.cat([emb[n] for n in self.id_query[f]], dim=-1)}
            if self.ad_image is not None:
                queries["image"] = img[self.ad_image]
            pooled, weights = self.pools[module_key(f)](queries, img[f], mask)
            vecs.append(pooled)
            out.update({f"attention.{f}.{c}": w for c, w in weights.items()})
        return vecs

    def field_specs(self) -> dict[str, FieldSpec]:
        return {**self.embed.field_specs(), **self.images.field_specs()}

    def attention_specs(self) -> list[LayerSpec]:
        out = super().attention_specs()
        for f in self.images.fields:
            if module_key(f) in self.pools:
                out += self.pools[module_key(f)].layer_specs(f"attention.{f}", mask=self.images.source[f])
        return out
