"""xDeepFM (Lian et al., KDD 2018): linear part + CIN + DNN, summed into one logit (Eq. 15).

All fields share one embedding width ``D``; sequence (multivalent) fields are sum-pooled into one
field vector, dense fields projected, giving ``X^0 [B, m, D]``. The CIN reads ``X^0``; the DNN reads
it flattened; the linear part reads the raw ids and values.

Canonical names: ``embedding`` (``X^0`` flattened, ``[B, m * D]``), ``cin.<k>`` (pooled ``p^k``
``[B, H_k]``), ``mlp.<i>`` (DNN), ``logit.ctr`` (the summed logit ``[B, 1]``). Extra outputs:
``linear_logit``, ``cin_logit``, ``dnn_logit`` (``[B]``, the three parts) and ``cin_maps.<k>``
(the feature maps ``X^k [B, H_k, D]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.errors import InputError
from ctrlens.models.base import CTRModel, MLPConfig
from ctrlens.models.blocks import CIN, FieldLinear
from ctrlens.models.interface import LayerSpec


@dataclass(frozen=True)
class XDeepFMConfig(MLPConfig):
    """xDeepFM sizes. Defaults are small for our data; ``paper()`` has the Criteo sizes.

    Attributes:
        embedding_dim: one width for every field (CIN needs it); paper 10.
        cin: feature maps per CIN layer (paper: 200 on Criteo, 100 on Dianping/Bing; depth 3).
        cin_activation: ``identity`` (paper) or ``relu``/``sigmoid``/``tanh``.
        split_half: the official code's split of each layer's maps (off, as in the paper).
        dnn: the DNN part's widths (paper: 400 x 2, with ReLU, the default ``activation``).
        use_linear, use_cin, use_dnn: switch parts off (e.g. the DNN alone for an ablation).
    """

    embedding_dim: int | None = 8
    cin: tuple[int, ...] = (16, 16, 16)
    cin_activation: str = "identity"
    split_half: bool = False
    dnn: tuple[int, ...] = (64, 64)
    use_linear: bool = True
    use_cin: bool = True
    use_dnn: bool = True

    @classmethod
    def paper(cls) -> "XDeepFMConfig":
        return cls(embedding_dim=10, cin=(200, 200, 200), dnn=(400, 400))


class XDeepFMModel(CTRModel, name="xdeepfm", config=XDeepFMConfig):
    """xDeepFM. ``forward(batch)`` -> ``{"ctr", "ctr_logit", part logits, cin_maps.<k>}``."""

    def build(self, c: XDeepFMConfig) -> None:
        if not (c.use_linear or c.use_cin or c.use_dnn):
            raise InputError("xdeepfm: at least one of use_linear, use_cin, use_dnn must be on")
        width = self.embed_inputs()
        names = self.embed.fields
        dims = set(self.embed.dims.values())
        if len(dims) > 1:
            raise InputError(f"xdeepfm needs one embedding width for all fields (CIN); the schema's differ {sorted(dims)}: set embedding_dim")
        m, d = len(names), dims.pop()
        self.linear = FieldLinear(self.schema, names) if c.use_linear else None
        self.cin = CIN(m, c.cin, c.cin_activation, c.split_half) if c.use_cin else None
        self.cin_out = nn.Linear(self.cin.out_dim, 1) if self.cin is not None else None
        self.dnn = self.mlp_block(width, c.dnn) if c.use_dnn else None
        self.dnn_out = nn.Linear(self.dnn.out_dim, 1) if self.dnn is not None else None
        self.logit = nn.Identity()  # the summed logit, tapped as logit.ctr
        self.num_fields, self.dim = m, d

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        flat = self.concat_inputs(batch)  # [B, m * D]
        out: dict[str, Tensor] = {}
        parts: list[Tensor] = []
        if self.linear is not None:
            parts.append(self.linear(batch))
            out["linear_logit"] = parts[-1].squeeze(-1)
        if self.cin is not None:
            p, maps = self.cin(flat.view(-1, self.num_fields, self.dim))
            parts.append(self.cin_out(p))  # type: ignore[misc]
            out["cin_logit"] = parts[-1].squeeze(-1)
            out.update({f"cin_maps.{k}": x for k, x in enumerate(maps)})
        if self.dnn is not None:
            parts.append(self.dnn_out(self.dnn(flat)))  # type: ignore[misc]
            out["dnn_logit"] = parts[-1].squeeze(-1)
        out.update(self.head_outputs("ctr", self.logit(torch.stack(parts).sum(0))))
        return out

    def layer_specs(self) -> list[LayerSpec]:
        out = [self.embedding_spec(self.concat)]
        if self.cin is not None:
            out += self.cin.layer_specs("cin")
        if self.dnn is not None:
            out += self.dnn.layer_specs("mlp")
        return out + [self.logit_spec("ctr", self.logit)]
