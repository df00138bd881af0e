"""The base class of ctrlens' reference models: config, named parts, ``lens()`` and losses.

A subclass builds its blocks in :meth:`CTRModel.build` (called by ``__init__`` once the config is
checked; the shared parts come from :meth:`CTRModel.embed_inputs`, :meth:`CTRModel.concat_inputs` and
:meth:`CTRModel.mlp_block`), computes a dict of named outputs in ``forward``
(head probabilities ``[B]`` under the head name, logits under ``<head>_logit``, extras such as
attention weights), and names its parts:

* :meth:`CTRModel.field_specs` -- one tap per embedded schema field;
* :meth:`CTRModel.layer_specs` -- watched layers with canonical names, in forward order;
* :meth:`CTRModel.head_specs` -- the heads (default: ``ctr`` on ``click``);
* :meth:`CTRModel.embedding_tables` -- the ``nn.Embedding`` per table.

:meth:`CTRModel.lens` assembles them into the :class:`~ctrlens.models.interface.ModelView` every
analysis reads. Canonical names are listed in ``docs/models.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.data.schema import Schema
from ctrlens.errors import InputError
from ctrlens.models.blocks.embedding import FieldEmbedding, module_key, sequence_mask
from ctrlens.models.blocks.mlp import MLP
from ctrlens.models.interface import FieldSpec, HeadSpec, LayerSpec, ModelView, Tap


@dataclass(frozen=True)
class ModelConfig:
    """Options every reference model has.

    Attributes:
        embedding_dim: width of every embedding table; ``None`` uses each table's
            ``embedding_dim`` from the schema.
        exclude_fields: schema fields the model leaves out.
        mba_lambda: weight of DIN's mini-batch aware regularisation (0 = off); see
            :meth:`CTRModel.regularization`.
    """

    embedding_dim: int | None = None
    exclude_fields: tuple[str, ...] = ()
    mba_lambda: float = 0.0

    @classmethod
    def paper(cls) -> "ModelConfig":
        """The sizes of the model's paper (overridden per model)."""
        return cls()

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class MLPConfig(ModelConfig):
    """:class:`ModelConfig` plus the options of the model's MLPs (see :meth:`CTRModel.mlp_block`).

    Attributes:
        activation: hidden activation (:data:`ctrlens.models.blocks.ACTIVATIONS` name).
        batch_norm: batch normalisation before each activation.
        dropout: dropout probability after each activation (0 = none).
    """

    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0


#: The schema kinds a reference model embeds as its ordinary inputs (images and the position are opt-in).
INPUT_KINDS: tuple[str, ...] = ("sparse", "sequence", "bag", "dense")


def call_model(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    """The :class:`ModelView` forward of a reference model (module level so views pickle)."""
    return model(batch)


def bce_with_logits(logit: Tensor, y: Tensor) -> Tensor:
    """Mean binary cross-entropy of ``sigmoid(logit)`` against ``y`` (both ``[B]``)."""
    return F.binary_cross_entropy_with_logits(logit, y.to(logit.dtype))


def bce_product(logit_a: Tensor, logit_b: Tensor, y: Tensor) -> Tensor:
    """Mean BCE of ``p = sigmoid(a) * sigmoid(b)`` against ``y``, computed in log space.

    ``log p = logsigmoid(a) + logsigmoid(b)`` and ``log(1 - p) = log(-expm1(log p))`` stay finite
    where the product of two rounded probabilities would hit 0 or 1 (ESMM's CTCVR, PAL's bCTR).
    """
    logp = F.logsigmoid(logit_a) + F.logsigmoid(logit_b)
    log1mp = torch.log(-torch.expm1(logp.clamp(max=-1e-7)))
    y = y.to(logp.dtype)
    return -(y * logp + (1 - y) * log1mp).mean()


class CTRModel(nn.Module):
    """A CTR model ctrlens can read: named fields, layers and heads.

    Args:
        schema: the dataset schema the model is built for (kept as ``self.schema``).
        config: the model's frozen config (``self.config``); ``None`` = the default config.

    Subclasses set :attr:`name` and :attr:`config_class` (``class M(CTRModel, name=..., config=...)``), build their blocks in :meth:`build` (or
    in their own ``__init__`` after ``super().__init__``), and implement ``forward`` and
    :meth:`layer_specs` (and :meth:`field_specs` when the fields are not ``self.embed``'s).
    """

    name: ClassVar[str] = "model"
    config_class: ClassVar[type] = ModelConfig

    def __init_subclass__(cls, *, name: str | None = None, config: type | None = None, **kw: Any) -> None:
        """``class DINModel(CTRModel, name="din", config=DINConfig)`` sets :attr:`name` and
        :attr:`config_class` (class attributes of the same names work too)."""
        super().__init_subclass__(**kw)
        if name is not None:
            cls.name = name
        if config is not None:
            cls.config_class = config

    def __init__(self, schema: Schema, config: ModelConfig | None = None):
        super().__init__()
        cfg = config if config is not None else self.config_class()
        if not isinstance(cfg, self.config_class):
            raise InputError(f"model {self.name!r} needs a {self.config_class.__name__}, got {type(cfg).__name__}")
        self.schema = schema
        self.config = cfg
        self._freq_buffers: dict[str, str] = {}
        for f in cfg.exclude_fields:
            if f not in schema:
                raise InputError(f"model {self.name!r}: exclude_fields names {f!r}, which is not in the schema; fields: {list(schema.names)}")
        self.build(cfg)

    # -- what a subclass provides -------------------------------------------------------------
    def build(self, config: Any) -> None:
        """Build the model's blocks from its (checked) ``config``; modules are registered, and so
        initialised from the RNG, in the order this assigns them. Default: nothing."""

    def field_specs(self) -> dict[str, FieldSpec]:
        """One tap per embedded field: :meth:`field_embedding`'s."""
        return self.field_embedding().field_specs()

    def layer_specs(self) -> list[LayerSpec]:
        raise NotImplementedError

    @property
    def label(self) -> str:
        """The label the ``ctr`` head predicts: ``click`` when the schema has it, else its first label
        (so a dataset whose label is ``income`` trains and is measured on ``income``)."""
        return "click" if "click" in self.schema.labels else self.schema.labels[0]

    def head_specs(self) -> dict[str, HeadSpec]:
        return {"ctr": HeadSpec("ctr", "ctr", self.label, "all", "ctr_logit")}

    def field_embedding(self) -> FieldEmbedding:
        """The block embedding the id fields (used for tables and regularisation)."""
        return self.embed  # type: ignore[return-value]

    def embedding_tables(self) -> dict[str, nn.Module]:
        return dict(self.field_embedding().table_modules())

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """BCE of the ``ctr`` head on its label (:attr:`label`), plus :meth:`regularization`. Scalar."""
        return bce_with_logits(outputs["ctr_logit"], batch.labels[self.label]) + self.regularization(batch)

    # -- shared helpers ----------------------------------------------------------------------
    def pick_fields(self, kinds: Sequence[str]) -> list[str]:
        """Schema fields of the given kinds, in schema order, minus ``config.exclude_fields``."""
        return [f.name for f in self.schema.fields if f.kind in kinds and f.name not in self.config.exclude_fields]

    def embed_inputs(self, *, position: bool = False) -> int:
        """Build ``self.embed`` (the :class:`FieldEmbedding` of the :data:`INPUT_KINDS` fields, plus the
        position field when ``position``; widths from ``config.embedding_dim``) and ``self.concat``
        (the ``nn.Identity`` whose output is the ``embedding`` layer). Returns the summed field width."""
        kinds = INPUT_KINDS + (("position",) if position else ())
        self.embed = FieldEmbedding(self.schema, self.pick_fields(kinds), self.config.embedding_dim)
        self.concat = nn.Identity()
        return sum(self.embed.dims.values())

    def concat_inputs(self, batch: Batch) -> Tensor:
        """``self.embed``'s fields (sequences sum-pooled) concatenated through ``self.concat``: ``[B, sum D]``."""
        fields = self.embed.pooled(self.embed(batch), batch)
        return self.concat(torch.cat(list(fields.values()), dim=-1))

    def mlp_block(self, in_dim: int, hidden: Sequence[int]) -> MLP:
        """An :class:`MLP` ``[B, in_dim] -> [B, hidden[-1]]`` with the :class:`MLPConfig` options
        (activation, batch_norm, dropout) of ``self.config``."""
        c = self.config
        return MLP(in_dim, hidden, c.activation, c.batch_norm, c.dropout)  # type: ignore[attr-defined]

    @staticmethod
    def logit_spec(head: str, module: nn.Module) -> LayerSpec:
        """``logit.<head>``: the ``[B, 1]`` output of ``module``."""
        return LayerSpec(f"logit.{head}", Tap(module), "logit", "identity")

    @staticmethod
    def embedding_spec(module: nn.Module) -> LayerSpec:
        """``embedding``: the concatenated MLP input ``[B, N]`` (output of an ``nn.Identity``)."""
        return LayerSpec("embedding", Tap(module), "embedding", "identity")

    @staticmethod
    def head_outputs(head: str, logit: Tensor) -> dict[str, Tensor]:
        """``{head: sigmoid(logit) [B], head_logit: logit [B]}`` from a ``[B, 1]`` logit."""
        z = logit.squeeze(-1)
        return {head: torch.sigmoid(z), f"{head}_logit": z}

    def config_dict(self) -> dict[str, Any]:
        """The config as plain data; ``reference_models.build(model.name, schema, **d)`` rebuilds it."""
        return dataclasses.asdict(self.config)

    def lens(self) -> ModelView:
        """The :class:`ModelView` of this model (fields, layers in forward order, heads, tables)."""
        layers: dict[str, LayerSpec] = {}
        for spec in self.layer_specs():
            if spec.name in layers:
                raise RuntimeError(f"model {self.name!r}: duplicate layer name {spec.name!r}")
            layers[spec.name] = spec
        return ModelView(self, call_model, self.field_specs(), layers, self.head_specs(), self.name, self.embedding_tables())

    # -- DIN's mini-batch aware regularisation -----------------------------------------------
    def set_feature_frequency(self, table: str, counts: Tensor | Sequence[float]) -> None:
        """Give the occurrence count of every row of ``table`` over the training data.

        ``counts`` has one entry per table row (``V + 2``); the trainer computes it from the
        training days. Stored as a non-persistent buffer: it follows ``.to(device)`` but is not
        in the ``state_dict`` (it describes data, not the model), so set it again after loading.
        """
        tables = self.embedding_tables()
        if table not in tables:
            raise InputError(f"model {self.name!r} has no embedding table {table!r}; tables: {sorted(tables)}")
        n = tables[table].num_embeddings  # type: ignore[union-attr]
        c = torch.as_tensor(counts, dtype=torch.float32).flatten()
        if c.numel() != n:
            raise InputError(f"feature frequency for table {table!r}: expected {n} counts (one per row), got {c.numel()}")
        buf = f"mba_freq_{module_key(table)}"
        dev = next(tables[table].parameters()).device
        if buf in self._buffers:
            self._buffers[buf] = c.to(dev)
        else:
            self.register_buffer(buf, c.to(dev), persistent=False)
        self._freq_buffers[table] = buf

    def regularization(self, batch: Batch) -> Tensor:
        """DIN's mini-batch aware L2 (Zhou et al. 2018): ``lambda * sum_j ||w_j||^2 / n_j``.

        The sum runs over the embedding rows ``j`` present in the batch (any embedded field,
        padding excluded); ``n_j`` is the row's frequency over the training data when
        :meth:`set_feature_frequency` gave it, else its count in this batch (an approximation that
        still regularises rare ids more than frequent ones). Zero when ``config.mba_lambda`` is 0.
        """
        lam = float(getattr(self.config, "mba_lambda", 0.0))
        emb = self.field_embedding()
        dev = next(self.parameters()).device
        total = torch.zeros((), device=dev)
        if lam == 0.0:
            return total
        for table, module in emb.table_modules().items():
            ids = []
            for f in emb.fields_of_table(table):
                x = batch.features[f]
                ids.append(x[sequence_mask(batch, f)] if x.dim() == 2 else x)
            flat = torch.cat(ids)
            flat = flat[flat > 0]
            if flat.numel() == 0:
                continue
            uniq, cnt = torch.unique(flat, return_counts=True)
            buf = self._freq_buffers.get(table)
            n = self._buffers[buf][uniq].clamp_min(1.0) if buf else cnt.to(torch.float32)  # type: ignore[index]
            total = total + (module.weight[uniq].pow(2).sum(-1) / n).sum()
        return lam * total
