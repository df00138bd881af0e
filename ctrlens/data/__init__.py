"""The daily data contract: schema, loader, batches, field statistics (see docs/data-format.md)."""

from ctrlens.data.batch import Batch
from ctrlens.data.random import random_batch
from ctrlens.data.rows import rows_to_batch
from ctrlens.data.loader import DailyDataset, DailyIterable
from ctrlens.data.schema import (
    BagField,
    DenseField,
    ImageField,
    PositionField,
    Schema,
    SchemaError,
    SequenceField,
    SparseField,
)
from ctrlens.data.validate import DataError, DayCounts, FieldCounts, ValidationReport

__all__ = [
    "BagField",
    "random_batch",
    "rows_to_batch",
    "Batch",
    "DailyDataset",
    "DailyIterable",
    "DataError",
    "DayCounts",
    "DenseField",
    "FieldCounts",
    "ImageField",
    "PositionField",
    "Schema",
    "SchemaError",
    "SequenceField",
    "SparseField",
    "ValidationReport",
]
