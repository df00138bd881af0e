"""The daily data contract: schema, loader, batches (see docs/data-format.md)."""

from ctrlens.data.batch import Batch
from ctrlens.data.schema import (
    DenseField,
    ImageField,
    PositionField,
    Schema,
    SchemaError,
    SequenceField,
    SparseField,
)

__all__ = ["Batch", "DenseField", "ImageField", "PositionField", "Schema", "SchemaError", "SequenceField", "SparseField"]
