"""Base: the Embedding&MLP ("GwEN") net of Guo et al. 2018 (paper 1) and of the DIN paper's baseline.

Every sparse field is embedded, every sequence field is sum-pooled over its real positions, every bag
field is pooled (sum or weighted mean, as its schema says), dense
fields are projected to vectors; the field vectors are concatenated and fed to an MLP
(256-128-64-32, ReLU in paper 1) and a logistic output.

Canonical names: ``embedding``, ``mlp.0`` ... ``mlp.<n-1>``, ``logit.ctr``; head ``ctr``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.data.schema import Schema
from ctrlens.models.base import CTRModel, ModelConfig
from ctrlens.models.blocks import MLP, FieldEmbedding
from ctrlens.models.interface import FieldSpec, LayerSpec


@dataclass(frozen=True)
class BaseConfig(ModelConfig):
    """Base model sizes.

    Attributes:
        mlp: hidden widths (paper 1: 256-128-64-32).
        activation: hidden activation (paper 1: ReLU).
        batch_norm, dropout: MLP options (off in the paper).
        use_position: embed the position field as an ordinary feature (the "position as a
            feature" baseline of the PAL paper; serve it at a default position).
    """

    mlp: tuple[int, ...] = (256, 128, 64, 32)
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0
    use_position: bool = False

    @classmethod
    def paper(cls) -> "BaseConfig":
        """Paper 1: embedding 8 for every group, MLP 256-128-64-32 ReLU, sum pooling."""
        return cls(embedding_dim=8)


class BaseModel(CTRModel):
    """Embedding & MLP with sum pooling. ``forward(batch)`` -> ``{"ctr": [B], "ctr_logit": [B]}``."""

    name = "base"
    config_class = BaseConfig
    config: BaseConfig

    def __init__(self, schema: Schema, config: BaseConfig | None = None):
        super().__init__(schema, config)
        c = self.config
        kinds = ("sparse", "sequence", "bag", "dense") + (("position",) if c.use_position else ())
        self.embed = FieldEmbedding(schema, self.pick_fields(kinds), c.embedding_dim)
        self.concat = nn.Identity()
        self.mlp = MLP(sum(self.embed.dims.values()), c.mlp, c.activation, c.batch_norm, c.dropout)
        self.logit = nn.Linear(self.mlp.out_dim, 1)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        fields = self.embed.pooled(self.embed(batch), batch)
        x = self.concat(torch.cat(list(fields.values()), dim=-1))  # [B, sum D]
        return self.head_outputs("ctr", self.logit(self.mlp(x)))

    def field_specs(self) -> dict[str, FieldSpec]:
        return self.embed.field_specs()

    def layer_specs(self) -> list[LayerSpec]:
        return [self.embedding_spec(self.concat), *self.mlp.layer_specs("mlp"), self.logit_spec("ctr", self.logit)]
