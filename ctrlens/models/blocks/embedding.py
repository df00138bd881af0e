"""Per-field embeddings with one tap per field, even when fields share a table.

Index convention (``ctrlens.data.schema``): 0 = padding/missing, 1 = OOV, raw id ``r`` -> ``r + 2``.
Tables are ``nn.Embedding(V + 2, D, padding_idx=0)``: the padding/missing row is a zero vector that
never receives gradient, so a missing value contributes nothing to sums and attention. OOV (row 1)
is a learned vector shared by all unknown ids.

Sequence embeddings are multiplied by the field's mask, so whatever id sits at a padding position,
the ``[B, L, D]`` output (and everything downstream) is the same.

Bag fields are pooled inside the block (:func:`pool_bag`, sum or weighted mean as the schema's
``pooling`` says), so a bag's output -- and its tap, which saliency attributes -- is ``[B, D]``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.data.schema import PAD_INDEX, BagField, DenseField, PositionField, Schema, SequenceField, SparseField
from ctrlens.errors import InputError
from ctrlens.models.interface import FieldSpec, Tap


#: Names a ``ModuleDict``/``ParameterDict`` key cannot take (its own attributes: ``items``, ``keys``...).
_RESERVED = frozenset(dir(nn.ModuleDict())) | frozenset(dir(nn.ParameterDict()))


def module_key(name: str) -> str:
    """A ``ModuleDict`` key for a field/table name (``.`` is not allowed in module names, and a field
    called ``items`` or ``keys`` would shadow the dict's own methods)."""
    k = name.replace(".", "__dot__")
    return f"{k}__field" if k in _RESERVED else k


def masked_sum(x: Tensor, mask: Tensor) -> Tensor:
    """Sum pooling over real positions: ``[B, L, D]``, bool ``[B, L]`` -> ``[B, D]``."""
    return (x * mask.unsqueeze(-1).to(x.dtype)).sum(1)


def sequence_mask(batch: Batch, name: str) -> Tensor:
    """The bool ``[B, L]`` mask of sequence field ``name`` (from the batch, else ``ids != 0``)."""
    m = batch.masks.get(name)
    return m if m is not None else batch.features[name] != 0


def bag_weights(batch: Batch, name: str) -> Tensor:
    """Float ``[B, L]`` per-id weights of bag ``name``: the batch's weights (if any) times its mask."""
    m = sequence_mask(batch, name).to(torch.float32)
    w = batch.weights.get(name)
    return m if w is None else m * w.to(torch.float32)


def pool_bag(weight: Tensor, ids: Tensor, w: Tensor, mode: str = "sum") -> Tensor:
    """EmbeddingBag pooling of padded bags: ``[V, D]`` table, int64 ``[B, L]`` ids, float ``[B, L]``
    weights (0 at padding) -> ``[B, D]``.

    ``mode="sum"``: ``sum_j w_j E[id_j]``; ``mode="mean"``: ``sum_j w_j E[id_j] / sum_j w_j`` (the
    plain mean when every weight is 1), 0 for an empty bag. Row 0 (padding) never contributes.
    """
    if ids.shape[1] == 0:
        return weight.new_zeros(ids.shape[0], weight.shape[1])
    out = F.embedding_bag(ids, weight, mode="sum", per_sample_weights=w.to(weight.dtype), padding_idx=PAD_INDEX)
    if mode == "mean":
        den = w.sum(1, keepdim=True).to(out.dtype)
        out = out / torch.where(den == 0, torch.ones_like(den), den)  # an empty bag stays 0
    elif mode != "sum":
        raise InputError(f"bag pooling must be 'sum' or 'mean', got {mode!r}")
    return out


class DenseEmbedding(nn.Module):
    """A numeric field as a ``D``-vector.

    ``mode="vector"``: ``e = x * v`` with a learned ``v`` (FuxiCTR/DeepCTR style; 0 maps to 0);
    ``mode="linear"``: ``e = W x + b`` (``nn.Linear(1, D)``).

    Shape: ``[B]`` -> ``[B, D]``.
    """

    def __init__(self, dim: int, mode: str = "vector", init_std: float = 1e-2):
        super().__init__()
        if mode not in ("vector", "linear"):
            raise InputError(f"dense embedding mode must be 'vector' or 'linear', got {mode!r}")
        self.mode = mode
        if mode == "vector":
            self.weight = nn.Parameter(torch.randn(dim) * init_std)
        else:
            self.linear = nn.Linear(1, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(torch.float32).unsqueeze(-1)
        return x * self.weight if self.mode == "vector" else self.linear(x)


#: Field kinds looked up in an embedding table (``schema.table_name_of``).
ID_FIELD_TYPES = (SparseField, SequenceField, BagField)


class FieldTables(nn.Module):
    """What :class:`FieldEmbedding` and :class:`FieldLinear` share: per field its kind, its table
    (id fields: sparse, sequence, bag) and a bag's pooling, the ``tables`` ``ModuleDict`` (filled by
    the subclass, keyed by :func:`module_key` of the table name), and the lookup of an id field.

    Holds no parameters itself, so subclasses' ``state_dict`` names are theirs alone.
    """

    def __init__(self, schema: Schema, fields: Sequence[str]):
        super().__init__()
        self.fields: tuple[str, ...] = tuple(fields)
        self.kinds: dict[str, str] = {}
        self.table_of: dict[str, str] = {}
        self.pooling: dict[str, str] = {}
        self.tables = nn.ModuleDict()
        for name in self.fields:
            if name not in schema:
                raise InputError(f"field {name!r} is not in the schema; fields are {list(schema.names)}")
            f = schema[name]
            self.kinds[name] = f.kind
            if isinstance(f, BagField):
                self.pooling[name] = f.pooling
            if isinstance(f, ID_FIELD_TYPES):
                self.table_of[name] = schema.table_name_of(name)

    def lookup(self, batch: Batch, name: str) -> Tensor:
        """Id field ``name`` looked up in its table ``[V, D]``: sparse ``[B, D]``; sequence ``[B, L, D]``,
        zero at padding; bag ``[B, D]``, pooled by :func:`pool_bag` as the schema says."""
        table = self.tables[module_key(self.table_of[name])]
        x = batch.features[name]
        kind = self.kinds[name]
        if kind == "bag":
            return pool_bag(table.weight, x, bag_weights(batch, name), self.pooling[name])
        e = table(x)
        if kind == "sequence":
            e = e * sequence_mask(batch, name).unsqueeze(-1).to(e.dtype)
        return e

    def table_modules(self) -> dict[str, nn.Embedding]:
        """Table name -> its ``nn.Embedding``."""
        return {t: self.tables[module_key(t)] for t in dict.fromkeys(self.table_of.values())}  # type: ignore[misc]

    def fields_of_table(self, table: str) -> list[str]:
        """The fields (sparse, sequence and bag) that look up ``table``."""
        return [f for f, t in self.table_of.items() if t == table]


class FieldEmbedding(FieldTables):
    """Embeds chosen sparse, sequence, dense and position fields of a schema.

    Args:
        schema: the dataset schema.
        fields: names to embed, in output order (sparse, sequence, dense or position fields).
        dim: embedding width for every table; ``None`` uses each table's ``embedding_dim`` from
            the schema (the table-defining sparse field's).
        init_std: std of the normal initialisation of table rows (the padding row stays 0).
        dense_mode: see :class:`DenseEmbedding`.

    Dense and position fields get width ``dim``, or (``dim=None``) the widest table's width.

    ``forward(batch)`` returns field -> ``[B, D]`` (sparse, bag -- pooled by :func:`pool_bag` --, dense,
    position) or ``[B, L, D]`` (sequence, zero at padding). Each field's output passes through its own ``nn.Identity`` in
    :attr:`taps`, called once per forward, which :meth:`field_specs` names as the field's tap.
    """

    def __init__(
        self,
        schema: Schema,
        fields: Sequence[str],
        dim: int | None = None,
        init_std: float = 1e-2,
        dense_mode: str = "vector",
    ):
        super().__init__(schema, fields)
        self.schema = schema
        self.dims: dict[str, int] = {}
        self.dense = nn.ModuleDict()
        self.taps = nn.ModuleDict()
        self.position: nn.Embedding | None = None
        defining = schema.tables()
        width = dim or max([defining[t].embedding_dim for t in self.table_of.values()] or [8])
        for name in self.fields:
            f = schema[name]
            if name in self.table_of:
                t = self.table_of[name]
                spec = defining[t]
                d = dim or spec.embedding_dim
                if module_key(t) not in self.tables:
                    emb = nn.Embedding(spec.num_embeddings, d, padding_idx=0)
                    nn.init.normal_(emb.weight, std=init_std)
                    with torch.no_grad():
                        emb.weight[0].zero_()
                    self.tables[module_key(t)] = emb
                self.dims[name] = d
            elif isinstance(f, DenseField):
                self.dense[module_key(name)] = DenseEmbedding(width, dense_mode, init_std)
                self.dims[name] = width
            elif isinstance(f, PositionField):
                if self.position is not None:
                    raise InputError("at most one position field can be embedded")
                # rows 0..max_position: 0 is padding/missing, positions are 1-based
                self.position = nn.Embedding(f.max_position + 1, width, padding_idx=0)
                nn.init.normal_(self.position.weight, std=init_std)
                with torch.no_grad():
                    self.position.weight[0].zero_()
                self.dims[name] = width
            else:
                raise InputError(f"field {name!r} is a {f.kind} field; FieldEmbedding embeds sparse, sequence, bag, dense and position fields")
            self.taps[module_key(name)] = nn.Identity()

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name in self.fields:
            if name not in batch.features:
                raise InputError(f"batch has no feature {name!r}, which the model embeds; batch features: {sorted(batch.features)}")
            if name in self.table_of:
                e = self.lookup(batch, name)
            elif self.kinds[name] == "dense":
                e = self.dense[module_key(name)](batch.features[name])
            else:
                e = self.position(batch.features[name])  # type: ignore[misc]
            out[name] = self.taps[module_key(name)](e)
        return out

    def field_specs(self) -> dict[str, FieldSpec]:
        """Field name -> :class:`FieldSpec` on its tap (sequence taps carry ``mask=<field>``)."""
        out = {}
        for name in self.fields:
            kind = self.kinds[name]
            tap = Tap(self.taps[module_key(name)], None, name if kind == "sequence" else None)
            out[name] = FieldSpec(name, tap, kind)  # type: ignore[arg-type]
        return out

    def pooled(self, out: dict[str, Tensor], batch: Batch, skip: Sequence[str] = ()) -> dict[str, Tensor]:
        """Field -> ``[B, D]``: sequences sum-pooled over real positions; ``skip`` left out."""
        return {
            n: masked_sum(out[n], sequence_mask(batch, n)) if self.kinds[n] == "sequence" else out[n]
            for n in self.fields
            if n not in skip
        }


class FieldLinear(FieldTables):
    """The linear (LR) part of a model: ``b + sum_fields w(field value)``.

    Sparse fields look up a scalar weight per id (one ``[V + 2, 1]`` table per embedding table,
    zero at padding and initialised to 0); sequences sum their ids' weights over real positions;
    bags pool them as their embeddings are pooled (:func:`pool_bag`); dense fields contribute ``w * x``.

    Shape: batch -> ``[B, 1]``.
    """

    def __init__(self, schema: Schema, fields: Sequence[str]):
        super().__init__(schema, fields)
        self.dense = nn.ParameterDict()
        defining = schema.tables()
        for name in self.fields:
            f = schema[name]
            if name in self.table_of:
                t = self.table_of[name]
                if module_key(t) not in self.tables:
                    w = nn.Embedding(defining[t].num_embeddings, 1, padding_idx=0)
                    nn.init.zeros_(w.weight)
                    self.tables[module_key(t)] = w
            elif isinstance(f, DenseField):
                self.dense[module_key(name)] = nn.Parameter(torch.zeros(1))
            else:
                raise InputError(f"field {name!r} is a {f.kind} field; the linear part takes sparse, sequence, bag and dense fields")
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> Tensor:
        n = len(batch)
        total = self.bias.expand(n).clone()
        for name in self.fields:
            if self.kinds[name] == "dense":
                total = total + batch.features[name].to(torch.float32) * self.dense[module_key(name)]
                continue
            w = self.lookup(batch, name)  # [B, 1], or [B, L, 1] for a sequence (0 at padding)
            if self.kinds[name] == "sequence":
                w = w.sum(1)
            total = total + w.squeeze(-1)
        return total.unsqueeze(-1)
