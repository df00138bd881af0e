"""DIN: Deep Interest Network (Zhou et al., KDD 2018).

Each behaviour sequence is pooled by a local activation unit queried by the candidate ad (weights
from an MLP over ``[q, k, q - k, q * k]``, *not* softmax-normalised by default, as in the paper),
instead of Base's plain sum. Aligned sequences form one attention group whose behaviour vector is
the concatenation of their embeddings, as in the official code (goods = item ⊕ category); the query
is the concatenation of the matching candidate fields (same table; the ``role="item"`` field first).

Canonical names: ``attention.<group>.<i>`` (hidden layers of the unit, ``[B, L, H_i]``, masked by the
group's first sequence field, which names the group), ``embedding``, ``mlp.<i>``, ``logit.ctr``.
Extra outputs: ``attention.<group>`` -- the weights ``[B, L]`` (0 at padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.data.schema import Schema
from ctrlens.errors import InputError
from ctrlens.models.base import CTRModel, MLPConfig
from ctrlens.models.blocks import LocalActivationUnit, sequence_mask
from ctrlens.models.blocks.embedding import module_key
from ctrlens.models.interface import LayerSpec


@dataclass(frozen=True)
class DINConfig(MLPConfig):
    """DIN sizes.

    Attributes:
        attention: hidden widths of the local activation unit. Default ``(80, 40)`` from the
            official code; the paper's figure shows a single layer of 36 (``paper()``).
        attention_activation, activation: ``prelu`` (default) or ``dice`` (the paper's Dice), or
            any :data:`ctrlens.models.blocks.ACTIVATIONS` name.
        softmax: normalise attention weights (off, as in the paper).
        mlp: main MLP hidden widths (200-80, as in the paper and DICM's base net).
        attention_groups: sequence fields pooled together, e.g.
            ``(("hist_item_id", "hist_category_id"),)``. ``None`` (default): sequence fields with a
            candidate field on the same table and equal ``max_len`` form one group (the schema's
            aligned behaviour log); ``()``: no attention at all (sum pooling, i.e. Base).
        use_position: embed the position field as a feature.
        mba_lambda: mini-batch aware regularisation weight (off by default; see docs/models.md).
    """

    attention: tuple[int, ...] = (80, 40)
    attention_activation: str = "prelu"
    softmax: bool = False
    mlp: tuple[int, ...] = (200, 80)
    activation: str = "prelu"
    attention_groups: tuple[tuple[str, ...], ...] | None = None
    use_position: bool = False

    @classmethod
    def paper(cls) -> "DINConfig":
        """The paper's figure: unit 36 with Dice, MLP 200-80 with Dice."""
        return cls(attention=(36,), attention_activation="dice", activation="dice")


def candidate_of(schema: Schema, seq: str, embedded: tuple[str, ...]) -> str | None:
    """The embedded sparse field on the same table as sequence ``seq`` (``role="item"`` first)."""
    table = schema.table_of(seq).table_name
    cands = [f for f in schema.sparse if f.name in embedded and f.table_name == table]
    if not cands:
        return None
    return next((f.name for f in cands if f.role == "item"), cands[0].name)


def attention_groups(schema: Schema, embedded: tuple[str, ...], groups: tuple[tuple[str, ...], ...] | None) -> list[tuple[str, ...]]:
    """The attention groups (tuples of sequence fields) for the embedded fields; see :class:`DINConfig`."""
    seqs = [s for s in schema.sequences if s.name in embedded]
    if groups is None:
        by_len: dict[int, list[str]] = {}
        for s in seqs:
            if candidate_of(schema, s.name, embedded) is not None:
                by_len.setdefault(s.max_len, []).append(s.name)
        return [tuple(g) for g in by_len.values()]
    names = {s.name: s for s in seqs}
    for g in groups:
        for f in g:
            if f not in names:
                raise InputError(f"attention_groups: {f!r} is not an embedded sequence field; sequences: {sorted(names)}")
            if candidate_of(schema, f, embedded) is None:
                raise InputError(f"attention_groups: sequence {f!r} has no candidate field on table {names[f].table!r} to query it")
        if len({names[f].max_len for f in g}) > 1:
            raise InputError(f"attention_groups: {g} mixes sequences of different max_len; grouped sequences must be aligned")
    return [tuple(g) for g in groups]


class DINModel(CTRModel, name="din", config=DINConfig):
    """DIN. ``forward(batch)`` -> ``{"ctr", "ctr_logit", "attention.<group>"}``."""

    def build(self, c: DINConfig) -> None:
        schema = self.schema
        width = self.embed_inputs(position=c.use_position)
        fields = self.embed.fields
        self.groups = attention_groups(schema, fields, c.attention_groups)
        self.queries = {g[0]: tuple(candidate_of(schema, s, fields) for s in g) for g in self.groups}
        self.attention = nn.ModuleDict(
            {
                module_key(g[0]): LocalActivationUnit(
                    sum(self.embed.dims[s] for s in g), c.attention, c.attention_activation, c.softmax
                )
                for g in self.groups
            }
        )
        self.mlp = self.mlp_block(width + self.build_extras(), c.mlp)
        self.logit = nn.Linear(self.mlp.out_dim, 1)

    # DICM adds image fields through these two hooks.
    def build_extras(self) -> int:
        """Build extra blocks; return the width they add to the MLP input."""
        return 0

    def extras(self, batch: Batch, emb: dict[str, Tensor], out: dict[str, Tensor]) -> list[Tensor]:
        """Extra ``[B, n]`` MLP inputs (appended after the id fields)."""
        return []

    def attend(self, batch: Batch, emb: dict[str, Tensor], out: dict[str, Tensor]) -> dict[str, Tensor]:
        """Field -> ``[B, D]`` MLP inputs: attention-pooled groups (under their first field), others pooled."""
        grouped = {s for g in self.groups for s in g}
        vecs = self.embed.pooled(emb, batch, skip=grouped)
        for g in self.groups:
            q = torch.cat([emb[f] for f in self.queries[g[0]]], dim=-1)  # [B, H]
            k = torch.cat([emb[s] for s in g], dim=-1)  # [B, L, H]
            pooled, w = self.attention[module_key(g[0])](q, k, sequence_mask(batch, g[0]))
            vecs[g[0]] = pooled
            out[f"attention.{g[0]}"] = w
        return {n: vecs[n] for n in self.embed.fields if n in vecs}  # schema order

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        emb = self.embed(batch)
        out: dict[str, Tensor] = {}
        vecs = list(self.attend(batch, emb, out).values()) + self.extras(batch, emb, out)
        x = self.concat(torch.cat(vecs, dim=-1))
        out.update(self.head_outputs("ctr", self.logit(self.mlp(x))))
        return out

    def attention_specs(self) -> list[LayerSpec]:
        out: list[LayerSpec] = []
        for g in self.groups:
            out += self.attention[module_key(g[0])].layer_specs(f"attention.{g[0]}", mask=g[0])
        return out

    def layer_specs(self) -> list[LayerSpec]:
        return [
            *self.attention_specs(),
            self.embedding_spec(self.concat),
            *self.mlp.layer_specs("mlp"),
            self.logit_spec("ctr", self.logit),
        ]
