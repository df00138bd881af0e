"""PAL: Position-bias Aware Learning (Guo et al., RecSys 2019).

``p(click | x, pos) = ProbSeen(pos) * pCTR(x)`` (Eq. 2). ProbSeen sees only the position (an
embedding, then an optional small MLP, then a logistic output); pCTR is any CTR net that never
sees the position (Base by default, or DIN). Both are trained jointly on
``bCTR = ProbSeen * pCTR`` (Eq. 3); at serving only pCTR is used, so no position is needed.

Canonical names: the pCTR net's (``embedding``, ``mlp.<i>``, DIN's ``attention.*``, ``logit.ctr``),
then ``tower.seen.mlp.<i>`` and ``logit.seen``. Fields: the pCTR net's plus ``position``.
Heads: ``ctr`` = pCTR (label click; what is served and evaluated), ``seen`` = ProbSeen (no label),
``click`` = bCTR (label click; the training target).

Batches without the position feature give only ``ctr``/``ctr_logit`` (serving).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.errors import InputError
from ctrlens.models.base import CTRModel, ModelConfig, bce_product
from ctrlens.models.blocks import MLP, FieldEmbedding
from ctrlens.models.interface import FieldSpec, HeadSpec, LayerSpec

from reference_models.base import BaseConfig, BaseModel
from reference_models.din import DINConfig, DINModel


@dataclass(frozen=True)
class PALConfig(ModelConfig):
    """PAL sizes.

    Attributes:
        ctr_net: ``"base"`` (default; the same net as the position-as-a-feature baseline, so a
            comparison isolates how position is handled) or ``"din"``.
        mlp, activation: the pCTR net's MLP (Base defaults; DIN uses them for its main MLP).
        attention: DIN's attention widths when ``ctr_net="din"``.
        position_dim: width of the position embedding.
        seen_hidden: ProbSeen MLP widths; ``()`` (default) = logistic regression on the position
            embedding, i.e. one free logit per position.
    """

    ctr_net: str = "base"
    mlp: tuple[int, ...] = (256, 128, 64, 32)
    activation: str = "relu"
    attention: tuple[int, ...] = (80, 40)
    position_dim: int = 4
    seen_hidden: tuple[int, ...] = ()

    @classmethod
    def paper(cls) -> "PALConfig":
        """The paper fills both modules with DeepFM; we keep Base as pCTR and a logistic ProbSeen."""
        return cls()


class PALModel(CTRModel, name="pal", config=PALConfig):
    """PAL. ``forward(batch)`` -> ``{"ctr", "ctr_logit"}`` plus ``{"seen", "seen_logit", "click"}`` with a position."""

    def build(self, c: PALConfig) -> None:
        schema, pos = self.schema, self.schema.position
        if pos is None or pos.name in c.exclude_fields:
            raise InputError("pal needs a position field in the schema (PositionField); it has none")
        self.position_field = pos.name
        # the options every model has (embedding_dim, exclude_fields, mba_lambda) pass to the pCTR net
        common = {f.name: getattr(c, f.name) for f in dataclasses.fields(ModelConfig)}
        if c.ctr_net == "base":
            self.ctr_net: CTRModel = BaseModel(schema, BaseConfig(mlp=c.mlp, activation=c.activation, **common))
        elif c.ctr_net == "din":
            self.ctr_net = DINModel(schema, DINConfig(mlp=c.mlp, activation=c.activation, attention=c.attention, **common))
        else:
            raise InputError(f"pal: ctr_net must be 'base' or 'din', got {c.ctr_net!r}")
        self.position = FieldEmbedding(schema, [pos.name], c.position_dim)
        self.seen_mlp = MLP(c.position_dim, c.seen_hidden, "relu")
        self.seen_logit = nn.Linear(self.seen_mlp.out_dim, 1)

    def field_embedding(self) -> FieldEmbedding:
        return self.ctr_net.field_embedding()

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        out = dict(self.ctr_net(batch))  # pCTR: never sees the position
        if self.position_field in batch.features:
            p = self.position(batch)[self.position_field]  # [B, position_dim]
            out.update(self.head_outputs("seen", self.seen_logit(self.seen_mlp(p))))
            out["click"] = out["seen"] * out["ctr"]
        return out

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        if "seen_logit" not in outputs:
            raise InputError(f"pal is trained on bCTR = ProbSeen * pCTR and needs the {self.position_field!r} feature in the batch")
        return bce_product(outputs["seen_logit"], outputs["ctr_logit"], batch.labels["click"]) + self.regularization(batch)

    def field_specs(self) -> dict[str, FieldSpec]:
        return {**self.ctr_net.field_specs(), **self.position.field_specs()}

    def layer_specs(self) -> list[LayerSpec]:
        return [*self.ctr_net.layer_specs(), *self.seen_mlp.layer_specs("tower.seen.mlp"), self.logit_spec("seen", self.seen_logit)]

    def head_specs(self) -> dict[str, HeadSpec]:
        return {
            # served pCTR is position-free; observed clicks estimate ProbSeen x pCTR ("click")
            "ctr": HeadSpec("ctr", "ctr", "click", "all", "ctr_logit", calibrated="click"),
            "seen": HeadSpec("seen", "seen", None, "all", "seen_logit"),
            "click": HeadSpec("click", "click", "click", "all", None),
        }
