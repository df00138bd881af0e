"""Named building blocks the reference models are composed of (see ``docs/models.md``)."""

from ctrlens.models.blocks.activations import ACTIVATIONS, Dice, PReLU, make_activation
from ctrlens.models.blocks.attention import (
    AttentionPooling,
    AttentivePooling,
    LocalActivationUnit,
    MultiQueryAttentivePooling,
)
from ctrlens.models.blocks.cin import CIN
from ctrlens.models.blocks.embedding import DenseEmbedding, FieldEmbedding, FieldLinear, masked_sum, sequence_mask
from ctrlens.models.blocks.image import ImageEmbedding, ImageEncoder
from ctrlens.models.blocks.mlp import MLP

__all__ = [
    "ACTIVATIONS",
    "AttentionPooling",
    "AttentivePooling",
    "CIN",
    "DenseEmbedding",
    "Dice",
    "FieldEmbedding",
    "FieldLinear",
    "ImageEmbedding",
    "ImageEncoder",
    "LocalActivationUnit",
    "MLP",
    "MultiQueryAttentivePooling",
    "PReLU",
    "make_activation",
    "masked_sum",
    "sequence_mask",
]
