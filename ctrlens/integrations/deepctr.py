"""ctrlens for DeepCTR-Torch models (``DIN``, ``DeepFM``, ``xDeepFM``, ``WDL``, ... any ``BaseModel``).

DeepCTR-Torch feeds a model one float tensor ``X [B, C]`` whose columns are feature slots
(``model.feature_index``: feature name -> ``(start, end)``), looks ids up in ``model.embedding_dict``
(one ``nn.Embedding`` per ``embedding_name``, so features naming the same one share it) and, for the
linear part, in ``model.linear_model.embedding_dict`` (1-wide). A model may look one feature up several
times per forward (DIN: as the attention query, and again as DNN input). ::

    columns = feature_columns(schema, dim=8)          # ctrlens fields -> SparseFeat / VarLenSparseFeat / DenseFeat
    model = DIN(columns, history_feature_list=["item_id", "category_id"])
    view = attach(model, schema)                      # fields, tables, layers from the model's own modules

What ctrlens sees (docs/deepctr-torch.md):

* **fields**: every feature of ``feature_index`` (length columns aside). A field's embedding is its
  DNN embedding ``[B, 1, D]`` (``[B, L, D]`` for a ``VarLenSparseFeat``, masked) with its linear weight
  appended when the model has a linear part (``[..., D + 1]``); a dense field is its ``X`` columns
  ``[B, d]``. The view looks every field up once, before the model runs, and answers each of the
  model's own lookups of that field with that tensor -- so a field used three times is attributed once,
  through all its uses, and saliency's substitution reaches every use.
* **tables**: ``model.embedding_dict`` (shared ones once).
* **layers**: ``attention.<i>`` (DIN's local activation unit, ``[B, L, N]`` over the history),
  ``fm`` (DeepFM's FM term ``[B, 1]``), ``cin`` (xDeepFM's CIN output ``[B, sum(H)]``), ``dnn.<i>``
  (the DNN's activations); the head's logit is the ``PredictionLayer`` input plus its bias.

ctrlens's ids are ``raw id + 2`` (0 = missing / padding, which DeepCTR also pads with), so a feature's
``vocabulary_size`` is the schema's ``vocab_size + 2``. Only ``task="binary"`` models are read.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.errors import InputError
from ctrlens.models.interface import FieldSpec, HeadSpec, InterfaceError, LayerSpec, ModelView, Tap

def _import_quietly() -> None:
    """Import ``deepctr_torch`` without running its package ``__init__``, which starts a thread that asks
    PyPI for a newer version and *prints* to stdout when it cannot (a nightly job must neither reach the
    network nor spoil ``--json`` output). Its subpackages are imported as usual."""
    import importlib
    import importlib.util
    import sys

    if "deepctr_torch" in sys.modules:
        return
    spec = importlib.util.find_spec("deepctr_torch")
    if spec is None:
        raise ImportError("No module named 'deepctr_torch'")
    pkg = importlib.util.module_from_spec(spec)  # the package object, its __init__ not executed
    sys.modules["deepctr_torch"] = pkg
    try:
        from importlib.metadata import version

        pkg.__version__ = version("deepctr-torch")  # type: ignore[attr-defined]
        pkg.layers = importlib.import_module("deepctr_torch.layers")  # type: ignore[attr-defined]
        pkg.models = importlib.import_module("deepctr_torch.models")  # type: ignore[attr-defined]
    except BaseException:
        for k in [k for k in sys.modules if k == "deepctr_torch" or k.startswith("deepctr_torch.")]:
            del sys.modules[k]
        raise


try:
    import warnings as _warnings

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        _import_quietly()
        from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat
        from deepctr_torch.layers.activation import Dice
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"ctrlens.integrations.deepctr needs DeepCTR-Torch ({e}); install it with `pip install 'ctrlens[deepctr]'` "
        "(see docs/deepctr-torch.md)"
    ) from None

__all__ = ["attach", "feature_columns", "x_from_batch", "LENGTH_SUFFIX"]

#: name of the length column ctrlens gives each sequence field (DIN reads its history lengths from one)
LENGTH_SUFFIX = "__length"


# ------------------------------------------------------------------------------------- columns


def feature_columns(
    schema: Any, dim: int = 8, fields: Sequence[str] | None = None, *, lengths: bool = True
) -> list[Any]:
    """DeepCTR-Torch feature columns for ctrlens fields (default: every sparse, sequence, bag and dense field).

    * sparse -> ``SparseFeat(name, vocab_size + 2, dim, embedding_name=<table>)``: fields of one schema
      table share one embedding (``item_id`` and ``hist_item_id``);
    * sequence -> ``VarLenSparseFeat(..., maxlen=max_len, combiner="mean", length_name=name + "__length")``
      (DIN reads history lengths from that column; ``lengths=False`` masks by id != 0 instead);
    * bag -> ``VarLenSparseFeat`` pooled like the schema says (``sum`` / ``mean``); weighted bags are
      refused (DeepCTR-Torch 0.3 has no per-id weights);
    * dense -> ``DenseFeat(name, 1)``.
    """
    kinds = ("sparse", "sequence", "bag", "dense")
    names = list(fields) if fields is not None else [f.name for f in schema.fields if f.kind in kinds]
    out: list[Any] = []
    for n in names:
        if n not in schema:
            raise InputError(f"field {n!r} is not in the schema; fields: {list(schema.names)}")
        f = schema[n]
        if f.kind == "dense":
            out.append(DenseFeat(n, 1))
            continue
        if f.kind not in kinds:
            raise InputError(f"field {n!r} is a {f.kind} field; DeepCTR-Torch columns exist for {kinds}")
        vocab = schema.table_of(n).num_embeddings
        sf = SparseFeat(n, vocab, embedding_dim=dim, embedding_name=schema.table_name_of(n))
        if f.kind == "sparse":
            out.append(sf)
        elif f.kind == "sequence":
            out.append(VarLenSparseFeat(sf, maxlen=f.max_len, combiner="mean", length_name=n + LENGTH_SUFFIX if lengths else None))
        else:
            if getattr(f, "weights", None):
                raise InputError(f"bag field {n!r} has per-id weights ({f.weights!r}); DeepCTR-Torch 0.3 cannot use them")
            out.append(VarLenSparseFeat(sf, maxlen=f.max_len, combiner=f.pooling, length_name=None))
    return out


def _columns_of(model: nn.Module) -> dict[str, Any]:
    """Feature name -> column, over the model's linear and DNN columns."""
    cols: dict[str, Any] = {}
    lin = getattr(model, "linear_model", None)
    for attr in ("sparse_feature_columns", "dense_feature_columns", "varlen_sparse_feature_columns"):
        for c in getattr(lin, attr, None) or []:
            cols.setdefault(c.name, c)
    for c in getattr(model, "dnn_feature_columns", None) or []:
        cols.setdefault(c.name, c)
    return cols


def _length_of(cols: Mapping[str, Any]) -> dict[str, str]:
    """Length column name -> the VarLenSparseFeat it measures."""
    return {c.length_name: c.name for c in cols.values() if isinstance(c, VarLenSparseFeat) and c.length_name}


def _ids(batch: Batch, name: str, width: int) -> Tensor:
    if name not in batch.features:
        raise InputError(f"field {name!r}: not in the batch; features are {sorted(batch.features)}")
    x = batch.features[name]
    if x.is_floating_point():
        raise InputError(f"field {name!r}: the model reads it as ids but the batch holds floats")
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != width:
        raise InputError(f"field {name!r}: the model's X has {width} column(s) for it, the batch {x.shape[1]} (max_len?)")
    m = batch.masks.get(name)
    return (x * m.to(x.dtype)) if m is not None else x  # DeepCTR masks by id != 0: padding must be 0


def x_from_batch(batch: Batch, model: nn.Module, dense: Mapping[str, Tensor] | None = None) -> Tensor:
    """The model's input ``X [B, C]`` (float32, ``model.feature_index`` layout) from a ctrlens batch.

    Id columns carry the ctrlens indices (exact in float32 below 2**24); a length column carries its
    sequence's ``mask.sum(1)``; dense columns come from ``dense`` (field -> ``[B, d]``) or the batch.
    """
    cols = _columns_of(model)
    lengths = _length_of(cols)
    B = len(batch)
    pieces = []
    for name, (s, e) in model.feature_index.items():
        w = e - s
        if name in lengths:
            f = lengths[name]
            m = batch.masks.get(f)
            v = m.sum(1) if m is not None else (batch.features[f] != 0).sum(1)
            pieces.append(v.reshape(B, 1).to(torch.float32))
        elif isinstance(cols.get(name), DenseFeat):
            v = dense[name] if dense is not None and name in dense else batch.features[name]
            pieces.append(v.reshape(B, w).to(torch.float32))
        elif name in cols:
            pieces.append(_ids(batch, name, w).to(torch.float32))
        else:
            raise InterfaceError(f"feature_index names {name!r}, which is no feature column of the model")
    return torch.cat(pieces, dim=1)


# ------------------------------------------------------------------------------------- field taps


class FieldInput(nn.Identity):
    """Where a field's embedding passes once per forward: the field's tap (read, or replaced by saliency)."""

    def __init__(self, field: str):
        super().__init__()
        self.field = field

    def extra_repr(self) -> str:
        return repr(self.field)


class DeepCTRLens(nn.Module):
    """What :func:`attach` returns as ``view.model``: the DeepCTR-Torch model (``.model``, untouched) and
    the fields' tap modules (``.fields``; no parameters, so ``state_dict`` is the model's, prefixed
    ``model.``). ``.eval()`` / ``.to()`` reach both."""

    def __init__(self, model: nn.Module, fields: nn.ModuleDict):
        super().__init__()
        self.model = model
        self.fields = fields
        self.training = model.training  # not nn.Module's default (train): .train(was) must restore the model's mode

    def forward(self, X: Tensor) -> Tensor:
        return self.model(X)


class _Router:
    """Forward hooks on the model's tables that answer each lookup of a field with that field's tensor.

    A lookup is matched to the field whose ids it is (same table, same ids); when two fields of one
    table carry identical ids in a batch, the one used least so far in this forward gets it.
    """

    def __init__(self, tables: list[tuple[nn.Module, str, str]], table_of: Mapping[str, str], ids: dict[str, Tensor],
                 emb: dict[str, Tensor], slices: dict[tuple[str, str], slice]):  # fmt: skip
        self.tables, self.table_of, self.ids, self.emb, self.slices = tables, table_of, ids, emb, slices
        self.uses: dict[str, int] = {}
        self.handles: list = []

    def __enter__(self) -> "_Router":
        for mod, table, part in self.tables:
            self.handles.append(mod.register_forward_hook(self._hook(table, part)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _hook(self, table: str, part: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
            idx = args[0]
            hits = [f for (f, p), _ in self.slices.items() if p == part and self.table_of[f] == table
                    and self.ids[f].shape == idx.shape and torch.equal(self.ids[f], idx)]  # fmt: skip
            if not hits:
                raise InterfaceError(
                    f"the model looked up its {part} table {table!r} with ids of shape {list(idx.shape)} that are no "
                    f"field's column of this batch; ctrlens attributes only lookups of X's own columns"
                )
            f = min(hits, key=lambda h: self.uses.get(h, 0))
            self.uses[f] = self.uses.get(f, 0) + 1
            return self.emb[f][..., self.slices[(f, part)]]

        return hook


def _activation(m: nn.Module) -> str:
    if isinstance(m, nn.ReLU):
        return "relu"
    if isinstance(m, Dice):
        return "dice"
    if isinstance(m, nn.PReLU):
        return "prelu"
    if isinstance(m, nn.Sigmoid):
        return "sigmoid"
    if isinstance(m, nn.Tanh):
        return "tanh"
    return "identity"


def _dnn_layers(prefix: str, dnn: nn.Module, kind: str, mask: str | None = None) -> dict[str, LayerSpec]:
    acts = getattr(dnn, "activation_layers", None)
    if acts is None:
        return {}
    return {f"{prefix}.{i}": LayerSpec(f"{prefix}.{i}", Tap(a, None, mask), kind, _activation(a))  # type: ignore[arg-type]
            for i, a in enumerate(acts)}  # fmt: skip


def model_layers(model: nn.Module, history_mask: str | None = None) -> dict[str, LayerSpec]:
    """Watched layers found from the model's own modules, in forward order (see the module docstring)."""
    out: dict[str, LayerSpec] = {}
    att = getattr(model, "attention", None)
    local = getattr(att, "local_att", None)
    if local is not None and getattr(local, "dnn", None) is not None:
        out.update(_dnn_layers("attention", local.dnn, "attention", history_mask))
    if getattr(model, "use_fm", False) and getattr(model, "fm", None) is not None:
        out["fm"] = LayerSpec("fm", Tap(model.fm), "interaction", "identity")
    if getattr(model, "use_cin", False) and getattr(model, "cin", None) is not None:
        out["cin"] = LayerSpec("cin", Tap(model.cin), "interaction", "identity")
    dnn = getattr(model, "dnn", None)
    if dnn is not None and (getattr(model, "use_dnn", True)):
        out.update(_dnn_layers("dnn", dnn, "hidden"))
    return out


def attach(
    model: nn.Module,
    schema: Any = None,
    *,
    head: str = "ctr",
    label: str = "click",
    name: str | None = None,
    layers: Mapping[str, Any] | None = None,
) -> ModelView:
    """A :class:`ModelView` of a DeepCTR-Torch model (any ``deepctr_torch.models.basemodel.BaseModel``).

    Args:
        model: the model, as DeepCTR-Torch builds it (``task="binary"``).
        schema: the data schema (gives fields their kinds; optional).
        head, label: the head's name and the label column it predicts.
        name: model name for reports (default: the class name, lower case).
        layers: watched layers instead of the ones found (see :func:`model_layers`).

    The view's forward builds ``X`` from the batch (:func:`x_from_batch`) and returns
    ``{head: [B] probability, head + "_logit": [B] logit}``. ``view.model`` is a :class:`DeepCTRLens`
    holding your model as ``view.model.model``.
    """
    from ctrlens.models.interface import attach as _attach

    index = getattr(model, "feature_index", None)
    emb_dict = getattr(model, "embedding_dict", None)
    if index is None or emb_dict is None or not hasattr(model, "out"):
        raise InterfaceError(f"{type(model).__name__} is not a DeepCTR-Torch model (no feature_index / embedding_dict / out)")
    if getattr(model.out, "task", "binary") != "binary":
        raise InterfaceError(f"{type(model).__name__}: task {model.out.task!r}; ctrlens reads task='binary' models")
    cols = _columns_of(model)
    lengths = _length_of(cols)
    lin_dict = getattr(getattr(model, "linear_model", None), "embedding_dict", None) or {}
    taps = nn.ModuleDict()
    fields: dict[str, FieldSpec] = {}
    table_of: dict[str, str] = {}
    slices: dict[tuple[str, str], slice] = {}
    history = None
    hist_names = set(getattr(model, "history_fc_names", []) or [])
    for fname, (s, e) in index.items():
        if fname in lengths:
            continue
        c = cols[fname]
        tap = FieldInput(fname)
        taps[_key(fname)] = tap
        if isinstance(c, DenseFeat):
            fields[fname] = FieldSpec(fname, Tap(tap), "dense")
            continue
        t = c.embedding_name
        if t not in emb_dict and t not in lin_dict:
            raise InterfaceError(f"feature {fname!r}: embedding {t!r} is in neither embedding_dict nor the linear part")
        table_of[fname] = t
        d = emb_dict[t].embedding_dim if t in emb_dict else 0
        if t in emb_dict:
            slices[(fname, "dnn")] = slice(0, d)
        if t in lin_dict:
            slices[(fname, "linear")] = slice(d, d + 1)
        varlen = isinstance(c, VarLenSparseFeat)
        kind = schema[fname].kind if schema is not None and fname in schema else ("sequence" if varlen else "sparse")
        mask = fname if varlen else None
        if varlen and fname in hist_names and history is None:
            history = fname
        fields[fname] = FieldSpec(fname, Tap(tap, None, mask), kind)  # type: ignore[arg-type]
    if history is None and hist_names:
        history = next(iter(sorted(hist_names)))
    tables = [(m, t, "dnn") for t, m in emb_dict.items()] + [(m, t, "linear") for t, m in lin_dict.items()]

    def forward(lens: nn.Module, batch: Batch) -> dict[str, Tensor]:
        m = lens.model if isinstance(lens, DeepCTRLens) else lens
        ids: dict[str, Tensor] = {}
        emb: dict[str, Tensor] = {}
        dense: dict[str, Tensor] = {}
        B = len(batch)
        for f, (s, e) in index.items():
            if f in lengths:
                continue
            if f in table_of:
                ids[f] = _ids(batch, f, e - s).long()
                t = table_of[f]
                parts = []
                if t in emb_dict:
                    parts.append(F.embedding(ids[f], emb_dict[t].weight))
                if t in lin_dict:
                    parts.append(F.embedding(ids[f], lin_dict[t].weight))
                emb[f] = taps[_key(f)](torch.cat(parts, dim=-1))  # [B, w, D (+1)]
            else:
                dense[f] = taps[_key(f)](batch.features[f].reshape(B, e - s).to(torch.float32))
        X = x_from_batch(batch, m, dense)
        logit: list[Tensor] = []

        def grab(module: nn.Module, args: tuple) -> None:
            b = module.bias if getattr(module, "use_bias", False) else 0.0
            logit.append(args[0] + b)  # before PredictionLayer adds its bias in place

        router = _Router(tables, table_of, ids, emb, slices)
        h = m.out.register_forward_pre_hook(grab)
        try:
            with router:
                p = m(X)
        finally:
            h.remove()
        z = logit[-1].reshape(-1)
        return {head: p.reshape(-1), f"{head}_logit": z}

    ls = dict(layers) if layers is not None else model_layers(model, history)
    view = _attach(DeepCTRLens(model, taps), forward=forward, fields=fields, layers=ls, name=name or type(model).__name__.lower(),
                   heads={head: HeadSpec(head, head, label, "all", f"{head}_logit")},
                   tables={t: m for t, m in emb_dict.items()})  # fmt: skip
    return view


def _key(name: str) -> str:
    return name.replace(".", "_")
