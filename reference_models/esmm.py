"""ESMM: Entire Space Multi-task Model (Ma et al., SIGIR 2018).

A CTR tower and a CVR tower, each a Base-style MLP over the same (shared) field embeddings;
``pCTCVR = pCTR * pCVR``. Both are trained over *all* impressions with
``BCE(pCTR, click) + BCE(pCTCVR, click * conversion)``; there is no loss on pCVR itself, which is
what removes the sample selection bias of a CVR model trained on clicks only.

Canonical names: ``embedding``, ``tower.ctr.mlp.<i>``, ``logit.ctr``, ``tower.cvr.mlp.<i>``,
``logit.cvr``. Heads: ``ctr`` (click, all rows), ``cvr`` (conversion, clicked rows), ``ctcvr``
(click*conversion, all rows).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.errors import InputError
from ctrlens.models.base import CTRModel, MLPConfig, bce_product, bce_with_logits
from ctrlens.models.interface import HeadSpec, LayerSpec


@dataclass(frozen=True)
class ESMMConfig(MLPConfig):
    """ESMM sizes: towers 360-200-80 with ReLU (the paper's); embedding 18 in the paper."""

    tower: tuple[int, ...] = (360, 200, 80)

    @classmethod
    def paper(cls) -> "ESMMConfig":
        return cls(embedding_dim=18)


class ESMMModel(CTRModel, name="esmm", config=ESMMConfig):
    """ESMM. ``forward(batch)`` -> ``{"ctr", "cvr", "ctcvr", "ctr_logit", "cvr_logit"}`` (all ``[B]``)."""

    def build(self, c: ESMMConfig) -> None:
        if not self.schema.has_conversion:
            raise InputError("esmm needs the 'conversion' label; this schema's labels are " + str(list(self.schema.labels)))
        width = self.embed_inputs()
        # both towers before both logits: the order parameters are initialised (and named) in
        self.towers = nn.ModuleDict({h: self.mlp_block(width, c.tower) for h in ("ctr", "cvr")})
        self.logits = nn.ModuleDict({h: nn.Linear(self.towers[h].out_dim, 1) for h in ("ctr", "cvr")})

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        x = self.concat_inputs(batch)
        out: dict[str, Tensor] = {}
        for h in ("ctr", "cvr"):
            out.update(self.head_outputs(h, self.logits[h](self.towers[h](x))))
        out["ctcvr"] = out["ctr"] * out["cvr"]
        return out

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        click = batch.labels["click"]
        ctcvr = click * batch.labels["conversion"]
        return (
            bce_with_logits(outputs["ctr_logit"], click)
            + bce_product(outputs["ctr_logit"], outputs["cvr_logit"], ctcvr)
            + self.regularization(batch)
        )

    def layer_specs(self) -> list[LayerSpec]:
        out = [self.embedding_spec(self.concat)]
        for h in ("ctr", "cvr"):
            out += [*self.towers[h].layer_specs(f"tower.{h}.mlp"), self.logit_spec(h, self.logits[h])]
        return out

    def head_specs(self) -> dict[str, HeadSpec]:
        return {
            "ctr": HeadSpec("ctr", "ctr", "click", "all", "ctr_logit"),
            "cvr": HeadSpec("cvr", "cvr", "conversion", "clicked", "cvr_logit"),
            "ctcvr": HeadSpec("ctcvr", "ctcvr", "click*conversion", "all", None),
        }
