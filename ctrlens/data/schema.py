"""Declarative, immutable feature specs: the schema half of the daily data contract.

A dataset root holds one ``schema.json`` (written by :meth:`Schema.save`) and one folder per day,
``<root>/day=YYYY-MM-DD/*.parquet``. See ``docs/data-format.md`` for the whole contract.

Index convention shared by every embedding in ctrlens (the loader produces it, models consume it):

* index ``0``  -- padding / missing value (null in Parquet, padding positions of a sequence);
* index ``1``  -- the out-of-vocabulary bucket (id outside ``[0, vocab_size)``, or a string not in the
  field's vocabulary);
* index ``r + 2`` -- raw id ``r`` (integer fields), or the ``r``-th entry of the vocabulary (string fields).

So an embedding table for a field with ``vocab_size = V`` has ``V + 2`` rows (:attr:`SparseField.num_embeddings`).

Bag fields (:class:`BagField`, an unordered ``list<int64>`` or ``list<string>`` of ids per row, e.g. tags)
follow the same convention per element; in a :class:`~ctrlens.data.batch.Batch` they are padded
``[B, max_len]`` indices plus a bool mask (and optional float weights), like sequences.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields as dc_fields
from pathlib import Path
from typing import Literal, Union

PAD_INDEX = 0
OOV_INDEX = 1
INDEX_OFFSET = 2

SCHEMA_FILE = "schema.json"
SCHEMA_VERSION = 1


from ctrlens.errors import InputError, read_json


class SchemaError(InputError):
    """A schema file or schema object that does not describe a valid dataset."""


@dataclass(frozen=True)
class SparseField:
    """A categorical id field, one value per row.

    Attributes:
        name: column name in the Parquet files.
        vocab_size: number of valid raw ids; integer ids must lie in ``[0, vocab_size)``.
        embedding_dim: default embedding width models use for this field.
        table: name of the embedding table; fields with the same ``table`` share embeddings
            (e.g. the candidate ``item_id`` and the history ``hist_item_id``). Defaults to ``name``.
        dtype: ``"int64"`` ids, or ``"string"`` values mapped through ``vocabulary``.
        vocabulary: for ``dtype="string"``: the known values, in index order.
        oov: ``"bucket"`` maps unknown ids to :data:`OOV_INDEX` (and the loader counts them);
            ``"error"`` makes the loader refuse them.
        role: optional meaning ctrlens can use: ``"user"`` (grouping for GAUC), ``"item"``
            (the candidate item; keys images), or ``None``.
    """

    name: str
    vocab_size: int
    embedding_dim: int = 8
    table: str | None = None
    dtype: Literal["int64", "string"] = "int64"
    vocabulary: tuple[str, ...] | None = None
    oov: Literal["bucket", "error"] = "bucket"
    role: Literal["user", "item"] | None = None
    kind: Literal["sparse"] = "sparse"

    @property
    def table_name(self) -> str:
        return self.table or self.name

    @property
    def num_embeddings(self) -> int:
        return self.vocab_size + INDEX_OFFSET


@dataclass(frozen=True)
class SequenceField:
    """A variable-length list of ids (e.g. behaviour history), stored as a Parquet list column.

    Ids follow the vocabulary of the field/table named by ``table`` (a :class:`SparseField`'s
    ``table_name``), so history items share the candidate's embedding table. Lists longer than
    ``max_len`` keep their *last* ``max_len`` entries (the most recent behaviours); shorter ones are
    right-padded with :data:`PAD_INDEX` and masked.
    """

    name: str
    table: str
    max_len: int
    kind: Literal["sequence"] = "sequence"


@dataclass(frozen=True)
class BagField:
    """An unordered multi-value categorical field: a ``list<int64>`` (or ``list<string>``) of ids per
    row that models pool (sum or mean) into one vector -- tags, query terms, torchrec's jagged features.

    Attributes:
        name: column name in the Parquet files (a list column).
        vocab_size: number of valid raw ids of the field's own table. ``None``: the field uses the
            table named by ``table``, defined by another sparse or bag field (a shared table).
        max_len: the batch holds at most ``max_len`` ids per row; longer bags keep their *first*
            ``max_len`` ids (the order within a bag carries no meaning), and field statistics count
            how many rows were cut.
        embedding_dim, dtype, vocabulary, oov: as for :class:`SparseField` (own table only).
        table: embedding table name; defaults to ``name`` (its own table).
        weights: name of a companion ``list<float>`` column with one finite weight per id (same list
            lengths as the ids); ``None`` = every id weighs 1.
        pooling: how the reference models pool the bag: ``"sum"`` of (weighted) id embeddings, or
            ``"mean"`` (the weighted average, ``sum(w e) / sum(w)``; 0 for an empty bag).
    """

    name: str
    vocab_size: int | None = None
    max_len: int = 16
    embedding_dim: int = 8
    table: str | None = None
    dtype: Literal["int64", "string"] = "int64"
    vocabulary: tuple[str, ...] | None = None
    oov: Literal["bucket", "error"] = "bucket"
    weights: str | None = None
    pooling: Literal["sum", "mean"] = "sum"
    kind: Literal["bag"] = "bag"

    @property
    def table_name(self) -> str:
        return self.table or self.name

    @property
    def defines_table(self) -> bool:
        """Whether this field carries a vocabulary (own table) rather than borrowing one."""
        return self.vocab_size is not None

    @property
    def num_embeddings(self) -> int:
        if self.vocab_size is None:
            raise SchemaError(f"bag field {self.name!r} borrows table {self.table_name!r}; ask the schema "
                              "(schema.table_of(name).num_embeddings)")
        return self.vocab_size + INDEX_OFFSET

    @property
    def role(self) -> None:  # tables() mixes bag and sparse definers; only sparse fields have roles
        return None


@dataclass(frozen=True)
class DenseField:
    """A numeric field (float). NaN/inf are refused by the loader; nulls are refused unless
    ``fill`` is given."""

    name: str
    fill: float | None = None
    kind: Literal["dense"] = "dense"


@dataclass(frozen=True)
class PositionField:
    """The display position of the impression, ``1..max_position`` (PAL's ProbSeen input)."""

    name: str = "position"
    max_position: int = 10
    kind: Literal["position"] = "position"


@dataclass(frozen=True)
class ImageField:
    """Images of the items referenced by another field, stored once per item (the AMS idea).

    ``source`` names a :class:`SparseField` (one image per row, e.g. the candidate ad) or a
    :class:`SequenceField` (one image per history position). The pixels live in the schema's image
    table (``<root>/images.parquet``: columns ``item_id`` int64 raw id and ``image`` binary of
    ``C*H*W`` uint8 bytes), never repeated per row.
    """

    name: str
    source: str
    kind: Literal["image"] = "image"


Field = Union[SparseField, SequenceField, BagField, DenseField, PositionField, ImageField]
#: A field that defines an embedding table's vocabulary.
TableField = Union[SparseField, BagField]
_KINDS: dict[str, type] = {
    "sparse": SparseField,
    "sequence": SequenceField,
    "bag": BagField,
    "dense": DenseField,
    "position": PositionField,
    "image": ImageField,
}
#: The label names with a built-in meaning (``conversion`` can only be 1 where ``click`` is 1).
LABELS = ("click", "conversion")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Schema:
    """The whole description of a dataset: its fields, labels and image table.

    Attributes:
        fields: the feature fields, in a stable order (models embed them in this order).
        labels: the 0/1 label columns, any names (``("click",)``, ``("income",)``,
            ``("click", "purchase")``...); models' heads name the label they predict. When both
            ``click`` and ``conversion`` are present, conversion may only be 1 where click is 1.
        image_table: file name (relative to the root) of the per-item image table, if any.
        image_shape: ``(C, H, W)`` of every image in the table.
        extra: free-form notes; ``extra["passthrough_columns"]`` lists extra Parquet columns the loader
            tolerates and ignores (see docs/data-format.md).
    """

    fields: tuple[Field, ...]
    labels: tuple[str, ...] = ("click",)
    image_table: str | None = None
    image_shape: tuple[int, int, int] | None = None
    version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        self.validate()

    # -- lookups -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"schema has no field {name!r}; fields are {[f.name for f in self.fields]}")

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.fields)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def of_kind(self, kind: str) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.kind == kind)

    @property
    def sparse(self) -> tuple[SparseField, ...]:
        return self.of_kind("sparse")  # type: ignore[return-value]

    @property
    def sequences(self) -> tuple[SequenceField, ...]:
        return self.of_kind("sequence")  # type: ignore[return-value]

    @property
    def bags(self) -> tuple[BagField, ...]:
        return self.of_kind("bag")  # type: ignore[return-value]

    @property
    def dense(self) -> tuple[DenseField, ...]:
        return self.of_kind("dense")  # type: ignore[return-value]

    @property
    def images(self) -> tuple[ImageField, ...]:
        return self.of_kind("image")  # type: ignore[return-value]

    @property
    def position(self) -> PositionField | None:
        p = self.of_kind("position")
        return p[0] if p else None  # type: ignore[return-value]

    def role(self, role: str) -> SparseField | None:
        for f in self.sparse:
            if f.role == role:
                return f
        return None

    def tables(self) -> dict[str, TableField]:
        """Embedding table name -> the field that defines its vocabulary: the first sparse field of
        the table, else the first bag field with a ``vocab_size``."""
        out: dict[str, TableField] = {}
        for f in self.sparse:
            out.setdefault(f.table_name, f)
        for b in self.bags:
            if b.defines_table:
                out.setdefault(b.table_name, b)
        return out

    def table_of(self, name: str) -> TableField:
        """The field whose vocabulary a sparse, sequence or bag field uses."""
        return self.tables()[self.table_name_of(name)]

    def table_name_of(self, name: str) -> str:
        """The embedding table a sparse, sequence or bag field looks up."""
        f = self[name]
        if isinstance(f, SequenceField):
            return f.table
        if isinstance(f, (SparseField, BagField)):
            return f.table_name
        raise SchemaError(f"field {name!r} is {f.kind}, it has no embedding table")

    def weight_columns(self) -> dict[str, str]:
        """Bag field name -> its per-id weights column, for bags that have one."""
        return {b.name: b.weights for b in self.bags if b.weights}

    @property
    def has_conversion(self) -> bool:
        return "conversion" in self.labels

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        names = [f.name for f in self.fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SchemaError(f"schema: duplicate field names {dup}")
        labels = list(self.labels)
        if not labels or any(not isinstance(l, str) or not _NAME.match(l) for l in labels):
            raise SchemaError(f"schema: labels must be a non-empty list of column names (letters, digits, '_', "
                              f"'.', '-'), got {self.labels}")
        if len(set(labels)) != len(labels):
            raise SchemaError(f"schema: duplicate label names in {self.labels}")
        if "conversion" in labels and "click" not in labels:
            raise SchemaError("schema: label 'conversion' needs label 'click' (a conversion follows a click); "
                              "name a conversion label without clicks differently, e.g. 'purchase'")
        for n in names:
            if n in labels:
                raise SchemaError(f"schema: field {n!r} has the name of a label")
        weight_cols = [f.weights for f in self.fields if isinstance(f, BagField) and f.weights]
        for w in weight_cols:
            if w in names or w in labels or weight_cols.count(w) > 1:
                raise SchemaError(f"schema: bag weights column {w!r} clashes with a field, a label or another "
                                  "bag's weights column")
        tables = {}
        for f in self.fields:
            if isinstance(f, BagField) and f.vocab_size is None:
                if f.table is None:
                    raise SchemaError(f"schema: bag field {f.name!r} needs a vocab_size (its own table) or a "
                                      "table defined by a sparse or bag field")
                if f.vocabulary is not None or f.dtype != "int64":
                    raise SchemaError(f"schema: bag field {f.name!r} borrows table {f.table!r}: give dtype and "
                                      "vocabulary on the field that defines the table")
                continue
            if isinstance(f, (SparseField, BagField)):
                if f.vocab_size < 1:
                    raise SchemaError(f"schema: field {f.name!r}: vocab_size must be >= 1, got {f.vocab_size}")
                if f.dtype == "string" and not f.vocabulary:
                    raise SchemaError(f"schema: string field {f.name!r} needs a vocabulary")
                if f.vocabulary is not None and len(f.vocabulary) != f.vocab_size:
                    raise SchemaError(
                        f"schema: field {f.name!r}: vocabulary has {len(f.vocabulary)} entries but vocab_size is {f.vocab_size}"
                    )
                prev = tables.setdefault(f.table_name, f)
                if prev.vocab_size != f.vocab_size or prev.dtype != f.dtype:
                    raise SchemaError(
                        f"schema: fields {prev.name!r} and {f.name!r} share table {f.table_name!r} but differ in vocab_size/dtype"
                    )
        for f in self.fields:
            if isinstance(f, BagField):
                if f.max_len < 1:
                    raise SchemaError(f"schema: bag field {f.name!r}: max_len must be >= 1, got {f.max_len}")
                if f.pooling not in ("sum", "mean"):
                    raise SchemaError(f"schema: bag field {f.name!r}: pooling must be 'sum' or 'mean', got {f.pooling!r}")
                if f.table_name not in tables:
                    raise SchemaError(
                        f"schema: bag field {f.name!r} uses table {f.table_name!r}, which no sparse or bag field "
                        f"defines (tables: {sorted(tables)})"
                    )
            if isinstance(f, SequenceField):
                if f.table not in tables:
                    raise SchemaError(
                        f"schema: sequence field {f.name!r} uses table {f.table!r}, which no sparse or bag field defines "
                        f"(tables: {sorted(tables)})"
                    )
                if f.max_len < 1:
                    raise SchemaError(f"schema: sequence field {f.name!r}: max_len must be >= 1")
            if isinstance(f, ImageField):
                src = next((g for g in self.fields if g.name == f.source), None)
                if not isinstance(src, (SparseField, SequenceField)):  # (bags have no images: no order, no item)
                    raise SchemaError(f"schema: image field {f.name!r}: source {f.source!r} must be a sparse or sequence field")
                if self.image_table is None or self.image_shape is None:
                    raise SchemaError(f"schema: image field {f.name!r} needs image_table and image_shape")
        if len(self.of_kind("position")) > 1:
            raise SchemaError("schema: at most one position field")

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = []
        for f in self.fields:
            d = {k: v for k, v in asdict(f).items() if v is not None}
            if "vocabulary" in d:
                d["vocabulary"] = list(d["vocabulary"])
            out.append(d)
        return {
            "version": self.version,
            "labels": list(self.labels),
            "image_table": self.image_table,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "fields": out,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "schema") -> "Schema":
        if not isinstance(d, dict) or "fields" not in d:
            raise SchemaError(f"{source}: expected an object with a 'fields' list")
        if d.get("version", SCHEMA_VERSION) > SCHEMA_VERSION:
            raise SchemaError(f"{source}: schema version {d['version']} is newer than this ctrlens understands ({SCHEMA_VERSION})")
        fs = []
        for i, fd in enumerate(d["fields"]):
            kind = fd.get("kind") if isinstance(fd, dict) else None
            if kind not in _KINDS:
                raise SchemaError(f"{source}: field #{i} ({fd.get('name') if isinstance(fd, dict) else fd!r}): kind must be one of {sorted(_KINDS)}, got {kind!r}")
            klass = _KINDS[kind]
            allowed = {f.name for f in dc_fields(klass)}
            unknown = set(fd) - allowed
            if unknown:
                raise SchemaError(f"{source}: field {fd.get('name')!r}: unknown keys {sorted(unknown)} for kind {kind!r}")
            kw = dict(fd)
            if "vocabulary" in kw and kw["vocabulary"] is not None:
                kw["vocabulary"] = tuple(kw["vocabulary"])
            try:
                fs.append(klass(**kw))
            except TypeError as e:
                raise SchemaError(f"{source}: field {fd.get('name')!r}: {e}") from None
        shape = d.get("image_shape")
        return cls(
            fields=tuple(fs),
            labels=tuple(d.get("labels", ("click",))),
            image_table=d.get("image_table"),
            image_shape=tuple(shape) if shape else None,
            version=d.get("version", SCHEMA_VERSION),
            extra=d.get("extra") or {},
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @property
    def hash(self) -> str:
        """Stable content hash of what a model depends on (fields, labels, image shape); 16 hex chars.

        ``extra`` is excluded: it carries free-form notes that must not invalidate checkpoints.
        """
        d = self.to_dict()
        d.pop("extra", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def save(self, root: str | Path) -> Path:
        p = Path(root) / SCHEMA_FILE
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_json())
        return p

    @classmethod
    def load(cls, root: str | Path) -> "Schema":
        root = Path(root)
        p = root / SCHEMA_FILE if root.is_dir() or not root.suffix else root
        d = read_json(p, SchemaError, f"schema file not found (every dataset root needs a {SCHEMA_FILE}; see docs/data-format.md)")
        return cls.from_dict(d, source=str(p))
