"""Base: the Embedding&MLP ("GwEN") net of Guo et al. 2018 (paper 1) and of the DIN paper's baseline.

Every sparse field is embedded, every sequence field is sum-pooled over its real positions, every bag
field is pooled (sum or weighted mean, as its schema says), dense
fields are projected to vectors; the field vectors are concatenated and fed to an MLP
(256-128-64-32, ReLU in paper 1) and a logistic output.

Canonical names: ``embedding``, ``mlp.0`` ... ``mlp.<n-1>``, ``logit.ctr``; head ``ctr``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.models.base import CTRModel, MLPConfig
from ctrlens.models.interface import LayerSpec


@dataclass(frozen=True)
class BaseConfig(MLPConfig):
    """Base model sizes (activation ReLU as in paper 1; batch_norm, dropout off as in the paper).

    Attributes:
        mlp: hidden widths (paper 1: 256-128-64-32).
        use_position: embed the position field as an ordinary feature (the "position as a
            feature" baseline of the PAL paper; serve it at a default position).
    """

    mlp: tuple[int, ...] = (256, 128, 64, 32)
    use_position: bool = False

    @classmethod
    def paper(cls) -> "BaseConfig":
        """Paper 1: embedding 8 for every group, MLP 256-128-64-32 ReLU, sum pooling."""
        return cls(embedding_dim=8)


class BaseModel(CTRModel, name="base", config=BaseConfig):
    """Embedding & MLP with sum pooling. ``forward(batch)`` -> ``{"ctr": [B], "ctr_logit": [B]}``."""

    def build(self, c: BaseConfig) -> None:
        self.mlp = self.mlp_block(self.embed_inputs(position=c.use_position), c.mlp)
        self.logit = nn.Linear(self.mlp.out_dim, 1)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return self.head_outputs("ctr", self.logit(self.mlp(self.concat_inputs(batch))))

    def layer_specs(self) -> list[LayerSpec]:
        return [self.embedding_spec(self.concat), *self.mlp.layer_specs("mlp"), self.logit_spec("ctr", self.logit)]
