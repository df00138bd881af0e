"""What ctrlens sees of a model: named feature fields, watched layers and heads.

Every analysis in ctrlens (neuron statistics, probes, saliency, quality metrics) reads a model
through a :class:`ModelView`. Reference models build theirs in ``lens()``; a user's own model is
described in a few lines with :func:`attach` (see ``docs/own-model.md``)::

    view = ctrlens.attach(
        model,
        forward=lambda m, batch: {"ctr": torch.sigmoid(m(batch.features))},
        fields={"user_id": model.emb["user_id"], "item_id": model.emb["item_id"],
                "hist": (model.item_table, 1)},          # shared table: its 2nd call per forward
        layers={"mlp.0": model.mlp[1], "mlp.1": (model.relu, 1)},
        heads={"ctr": "click"},
    )

A *tap* is the output of one module on one of its calls within a forward pass. Canonical layer
names are ``<block>.<i>`` (e.g. ``embedding``, ``mlp.0``, ``mlp.1``, ``attention.hist_item_id.0``,
``cin.0``, ``tower.ctr.mlp.0``, ``logit.ctr``); they are what the store keys statistics by, so
they must stay stable across checkpoints of the same model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Union

from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.errors import InputError

LayerKind = Literal["embedding", "hidden", "attention", "interaction", "logit"]
Activation = Literal["relu", "prelu", "dice", "sigmoid", "tanh", "softmax", "identity"]
#: What a head predicts: a label column of the schema (``"click"``, ``"income"``, ``"purchase"``...) or a
#: product of label columns joined by ``*`` (ESMM's ``"click*conversion"``).
HeadLabel = str


class InterfaceError(InputError, TypeError):
    """A model that ctrlens cannot read, or a view that names something the model lacks."""


@dataclass(frozen=True, eq=False)
class Tap:
    """The output of ``module`` on a given call within one forward pass.

    Attributes:
        module: the module whose output is read (or replaced, for attribution).
        call: ``None`` -- the module must run exactly once per forward (a second call is refused
            with a clear message rather than mixed in); ``i`` -- its ``i``-th call (0-based), for
            modules reused within a forward (a shared embedding table, one ReLU object reused).
        mask: name of a sequence field when the output is ``[B, L, ...]`` along that sequence;
            padding positions (``batch.masks[mask] == False``) are then excluded by readers.
    """

    module: nn.Module
    call: int | None = None
    mask: str | None = None


@dataclass(frozen=True, eq=False)
class FieldSpec:
    """A feature field's embedding output: ``[B, D]`` (or ``[B, L, D]`` for sequences, masked)."""

    name: str
    tap: Tap
    kind: Literal["sparse", "sequence", "bag", "dense", "image", "position", "other"] = "other"


@dataclass(frozen=True, eq=False)
class LayerSpec:
    """A watched layer: output ``[B, N]`` (or ``[B, L, N]`` with ``tap.mask``) of ``N`` neurons.

    ``activation`` drives the saturation rule (see :mod:`ctrlens.neurons`): bounded units saturate
    near their bounds; ReLU-like units are "dead" when never positive.
    """

    name: str
    tap: Tap
    kind: LayerKind = "hidden"
    activation: Activation = "identity"


@dataclass(frozen=True)
class HeadSpec:
    """A named output of the model: a probability ``[B]`` at ``outputs[output]``.

    Attributes:
        label: which label the head predicts (``None`` for auxiliary heads such as PAL's ``seen``).
        rows: ``"all"`` impressions, or only ``"clicked"`` ones (ESMM's CVR).
        logit: key of the matching logit in the outputs, if the model provides one.
        calibrated: key of the output whose probabilities the observed labels estimate, when that is
            not the head's own output. PAL's served pCTR is position-free while observed clicks carry
            the position bias: its ``ctr`` head is calibrated against ``ProbSeen x pCTR`` (its
            ``click`` output), so that a well-trained PAL reads about 1, not ``1 / mean(ProbSeen)``.
            Falls back to the head's own output when the forward did not return it (no position).
    """

    name: str
    output: str
    label: HeadLabel | None = "click"
    rows: Literal["all", "clicked"] = "all"
    logit: str | None = None
    calibrated: str | None = None

    def predictions(self, out: Mapping[str, Tensor], mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``(p [B'], p_calibration [B'] or None)`` of this head from a forward's outputs, on the rows of
        ``mask`` (from :meth:`target`); the second is the output named by ``calibrated``, if returned."""
        p = out[self.output].reshape(-1)
        c = out[self.calibrated].reshape(-1) if self.calibrated is not None and self.calibrated in out else None
        if mask is not None:
            p = p[mask]
            c = None if c is None else c[mask]
        return p, c

    def target(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """``(y [B'], row_mask [B] or None)`` for this head on ``batch``."""
        if self.label is None:
            raise InterfaceError(f"head {self.name!r} has no label")
        parts = self.label.split("*")
        need = parts + (["click"] if self.rows == "clicked" else [])
        missing = [p for p in dict.fromkeys(need) if p not in batch.labels]
        if missing:
            raise InterfaceError(f"head {self.name!r} needs the {', '.join(repr(p) for p in missing)} label, which this "
                                 f"data lacks; its labels: {sorted(batch.labels)}")
        y = batch.labels[parts[0]]
        for p in parts[1:]:
            y = y * batch.labels[p]
        if self.rows == "clicked":
            m = batch.labels["click"] > 0.5
            return y[m], m
        return y, None


ForwardFn = Callable[[nn.Module, Batch], Mapping[str, Tensor]]


@dataclass(eq=False)
class ModelView:
    """Everything ctrlens needs to read one model.

    Attributes:
        model: the ``nn.Module`` (owns the parameters; ``.eval()``/``.to()`` apply to it).
        forward: ``forward(model, batch) -> {output name: tensor}``; head outputs are ``[B]``
            probabilities.
        fields: field name -> :class:`FieldSpec` (attribution targets).
        layers: canonical layer name -> :class:`LayerSpec` (neuron statistics and probe features),
            in forward order.
        heads: head name -> :class:`HeadSpec`.
        name: a model name for reports (e.g. ``"din"``).
        tables: embedding table name -> ``nn.Embedding``/``nn.EmbeddingBag`` (embedding health).
        checkpoint: where the weights came from (a
            :class:`~ctrlens.models.checkpoint.CheckpointInfo`: path, model version, days seen); set by
            :func:`ctrlens.models.loader.load_model`, ``None`` for a model built in memory.
    """

    model: nn.Module
    forward: ForwardFn
    fields: dict[str, FieldSpec]
    layers: dict[str, LayerSpec]
    heads: dict[str, HeadSpec]
    name: str = "model"
    tables: dict[str, nn.Module] = field(default_factory=dict)
    checkpoint: Any = None

    def __call__(self, batch: Batch) -> dict[str, Tensor]:
        return dict(self.forward(self.model, batch))

    @property
    def version(self) -> str | None:
        """The model version the store keys results by (the checkpoint's weights or content hash),
        ``None`` when the view did not come from a checkpoint."""
        return getattr(checkpoint_of(self), "version", None)

    def field(self, name: str) -> FieldSpec:
        if name not in self.fields:
            raise InterfaceError(f"model {self.name!r} has no field {name!r}; fields: {sorted(self.fields)}")
        return self.fields[name]

    def layer(self, name: str) -> LayerSpec:
        if name not in self.layers:
            raise InterfaceError(f"model {self.name!r} has no layer {name!r}; layers: {list(self.layers)}")
        return self.layers[name]

    def head(self, name: str) -> HeadSpec:
        if name not in self.heads:
            raise InterfaceError(f"model {self.name!r} has no head {name!r}; heads: {sorted(self.heads)}")
        return self.heads[name]

    @property
    def device(self):
        for p in self.model.parameters():
            return p.device
        import torch

        return torch.device("cpu")

    def select_layers(self, names: list[str] | str | None = None) -> dict[str, LayerSpec]:
        """Layers by exact names, a glob pattern (``"mlp.*"``), or all when ``None``."""
        if names is None:
            return dict(self.layers)
        import fnmatch

        pats = [names] if isinstance(names, str) else list(names)
        out: dict[str, LayerSpec] = {}
        for p in pats:
            hits = [n for n in self.layers if fnmatch.fnmatchcase(n, p)]
            if not hits:
                raise InterfaceError(f"model {self.name!r} has no layer matching {p!r}; layers: {list(self.layers)}")
            for n in hits:
                out[n] = self.layers[n]
        return out


TapLike = Union[nn.Module, tuple, Tap]


def _as_tap(x: TapLike, what: str) -> Tap:
    if isinstance(x, Tap):
        return x
    if isinstance(x, nn.Module):
        return Tap(x)
    if isinstance(x, tuple) and 1 <= len(x) <= 3 and isinstance(x[0], nn.Module):
        return Tap(*x)
    raise InterfaceError(f"{what}: expected a module, (module, call[, mask]) or Tap, got {type(x).__name__}")


def attach(
    model: nn.Module,
    *,
    forward: ForwardFn,
    fields: Mapping[str, TapLike | FieldSpec],
    layers: Mapping[str, TapLike | LayerSpec] | None = None,
    heads: Mapping[str, str | HeadSpec] | None = None,
    name: str | None = None,
    tables: Mapping[str, nn.Module] | None = None,
    activations: Mapping[str, Activation] | None = None,
    kinds: Mapping[str, LayerKind] | None = None,
) -> ModelView:
    """Describe a model ctrlens did not define.

    Args:
        model: the user's module.
        forward: ``forward(model, batch) -> dict`` of named ``[B]`` probabilities (and anything else).
        fields: field name -> the module whose output is that field's embedding, ``(module, call)``
            for a module called several times per forward (a shared table), or a :class:`FieldSpec`.
        layers: layer name -> module / ``(module, call)`` / :class:`LayerSpec`, in forward order.
        heads: head name -> label column (``"click"``, ``"income"``..., or a product ``"click*conversion"``) or a
            :class:`HeadSpec`; defaults to ``{"ctr": "click"}``. A head's output key is its name.
        activations: layer name -> activation, for the saturation rule (default ``"identity"``,
            or inferred when the tapped module is an activation module).
        kinds: layer name -> kind (``"embedding"``, ``"hidden"``, ``"attention"``, ``"interaction"``,
            ``"logit"``); by default inferred from the name's first segment (:func:`infer_kind`:
            ``logit.ctr`` is a logit, ``embedding`` the embedding layer, ``attention.*`` attention,
            anything else hidden). Probes compare each layer with its real predecessor by these kinds.
    """
    fs = {k: v if isinstance(v, FieldSpec) else FieldSpec(k, _as_tap(v, f"field {k!r}")) for k, v in fields.items()}
    acts = dict(activations or {})
    kinds = dict(kinds or {})
    for k, v in kinds.items():
        if k not in (layers or {}):
            raise InterfaceError(f"kinds names layer {k!r}, which is not in layers: {list(layers or {})}")
        if v not in LAYER_KINDS:
            raise InterfaceError(f"kinds[{k!r}]: {v!r} is not a layer kind; kinds: {list(LAYER_KINDS)}")
    ls: dict[str, LayerSpec] = {}
    for k, v in (layers or {}).items():
        if isinstance(v, LayerSpec):
            ls[k] = v
            continue
        tap = _as_tap(v, f"layer {k!r}")
        ls[k] = LayerSpec(k, tap, kinds.get(k) or infer_kind(k), acts.get(k) or infer_activation(tap.module))
    hs: dict[str, HeadSpec] = {}
    for k, v in (heads or {"ctr": "click"}).items():
        hs[k] = v if isinstance(v, HeadSpec) else HeadSpec(k, k, v)  # type: ignore[arg-type]
    return ModelView(model, forward, fs, ls, hs, name or type(model).__name__, dict(tables or {}))


LAYER_KINDS: tuple[str, ...] = ("embedding", "hidden", "attention", "interaction", "logit")
_KIND_OF_BLOCK: dict[str, LayerKind] = {"embedding": "embedding", "logit": "logit", "attention": "attention",
                                        "interaction": "interaction", "cin": "interaction", "fm": "interaction",
                                        "cross": "interaction"}  # fmt: skip


def infer_kind(name: str) -> LayerKind:
    """A layer's kind from its canonical name's first segment (``logit.ctr`` -> ``logit``,
    ``embedding`` -> ``embedding``, ``attention.hist.0`` -> ``attention``, ``cin.0``/``fm``/``cross.0``
    -> ``interaction``); anything else is ``hidden``."""
    return _KIND_OF_BLOCK.get(name.split(".", 1)[0].split("#", 1)[0], "hidden")


def checkpoint_of(view: "ModelView") -> Any:
    """The :class:`~ctrlens.models.checkpoint.CheckpointInfo` a view came from (``view.checkpoint``,
    else the ``ctrlens_checkpoint`` that ``load_checkpoint`` sets on a model), or ``None``."""
    if view.checkpoint is not None:
        return view.checkpoint
    return getattr(view.model, "ctrlens_checkpoint", None)


def infer_activation(module: nn.Module) -> Activation:
    """Best guess of a tapped module's activation from its type (identity when unknown)."""
    table: list[tuple[type, Activation]] = [
        (nn.ReLU, "relu"),
        (nn.PReLU, "prelu"),
        (nn.Sigmoid, "sigmoid"),
        (nn.Tanh, "tanh"),
        (nn.Softmax, "softmax"),
    ]
    for t, a in table:
        if isinstance(module, t):
            return a
    if isinstance(module, nn.Sequential) and len(module) > 0:
        return infer_activation(module[-1])
    return getattr(module, "ctrlens_activation", "identity")


def as_view(obj: Any) -> ModelView:
    """The :class:`ModelView` of a reference model, or a view made with :func:`attach`.

    Raises :class:`InterfaceError` saying how to attach a model that has neither.
    """
    if isinstance(obj, ModelView):
        return obj
    lens = getattr(obj, "lens", None)
    if callable(lens):
        v = lens()
        if isinstance(v, ModelView):
            return v
    raise InterfaceError(
        f"{type(obj).__name__} does not expose the ctrlens interface. Describe it with "
        "ctrlens.attach(model, forward=..., fields={...}, layers={...}, heads={...}) "
        "(see docs/own-model.md), or use a model from reference_models/."
    )
