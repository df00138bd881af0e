"""ctrlens for torchrec models: ``KeyedJaggedTensor`` from a ``Batch``, and a ``ModelView`` of any model
built on ``EmbeddingBagCollection`` -- torchrec's own ``DLRM`` class included, unmodified.

What ctrlens sees (see docs/torchrec.md)::

    view = attach_dlrm(model, schema)            # torchrec.models.dlrm.DLRM (or DLRM_DCN, ...)
    view = attach(model, forward=..., layers=...)  # any other model with an EmbeddingBagCollection

* **fields**: every feature key of the collection's ``KeyedJaggedTensor``. A field's embedding is its
  pooled ``[B, D]`` embedding: exactly the slice of the ``KeyedTensor`` the collection returns. It is
  read (and, for saliency, replaced) at the table's ``nn.EmbeddingBag`` call for that feature -- the
  unsharded collection pools each feature with one call of its table, in ``EmbeddingBagConfig``
  order, so a table shared by two features is tapped on its 1st and 2nd call.
* **tables**: every ``EmbeddingBagConfig`` table, once, however many features share it; embedding
  health marks the rows looked up by all of them.
* **layers**: for DLRM the dense arch perceptrons (``dense_arch.<i>``), the interaction
  (``interaction``), the over arch perceptrons (``over_arch.<i>``) and the final linear
  (``logit.<head>``); for other models the modules you name.

Not supported directly: ``DistributedModelParallel`` with sharded tables (the sharded collection runs
fused fbgemm kernels, not one ``nn.EmbeddingBag`` call per feature, and keeps table shards on other
ranks). Watch the unsharded model with the same weights: :func:`unshard` gathers them. See
docs/torchrec.md, "Sharded models".
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.data.schema import PAD_INDEX
from ctrlens.errors import InputError
from ctrlens.models.interface import FieldSpec, HeadSpec, InterfaceError, LayerSpec, ModelView, Tap

try:
    from torchrec.models.dlrm import DLRM
    from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.modules.mlp import Perceptron
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"ctrlens.integrations.torchrec needs torchrec ({e}); install it with "
        "`pip install 'ctrlens[torchrec]'` and then `pip install --no-deps torchrec==1.8.0` (see docs/torchrec.md)"
    ) from None

__all__ = [
    "attach",
    "attach_dlrm",
    "dense_from_batch",
    "embedding_bag_configs",
    "jagged",
    "kjt_from_batch",
    "make_dlrm",
    "feature_taps",
    "unshard",
]


# ------------------------------------------------------------------------------------- batches


def jagged(batch: Batch, name: str, weights: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """One field of ``batch`` as a jagged feature: ``(values [N] int64, lengths [B] int64, weights [N] or None)``.

    A sparse field (``[B]``) gives one value per row, none where it is missing (index 0); a sequence or
    bag field (``[B, L]``) gives the row's real positions in order (the batch mask, or ``!= 0``).
    ``weights`` (``[B]`` or ``[B, L]`` float) are kept at the same positions. The ids keep ctrlens's
    index convention (``raw id + 2``, 1 = out of vocabulary), so tables need ``vocab_size + 2`` rows.
    """
    if name not in batch.features:
        raise InputError(f"field {name!r}: not in the batch; features are {sorted(batch.features)}")
    x = batch.features[name]
    if x.is_floating_point():
        raise InputError(f"field {name!r} is a float feature ({list(x.shape)}); only id fields can be jagged features")
    if x.dim() == 1:
        keep = x != PAD_INDEX
        lengths = keep.long()
    elif x.dim() == 2:
        keep = x != PAD_INDEX
        m = batch.masks.get(name)
        if m is not None:
            keep = keep & m.bool()
        lengths = keep.sum(1)
    else:
        raise InputError(f"field {name!r}: expected ids [B] or [B, L], got shape {list(x.shape)}")
    w = None
    if weights is not None:
        if weights.shape != x.shape:
            raise InputError(f"field {name!r}: weights have shape {list(weights.shape)}, the ids {list(x.shape)}")
        w = weights[keep].to(torch.float32)
    return x[keep].long(), lengths.long(), w


def kjt_from_batch(
    batch: Batch, keys: Sequence[str], *, weights: Mapping[str, Tensor] | None = None, weighted: bool | None = None
) -> KeyedJaggedTensor:
    """A ``KeyedJaggedTensor`` of ``batch``'s id fields ``keys`` (in that order), on the batch's device.

    Args:
        batch: ``B`` rows.
        keys: field names; sparse, sequence and bag fields (see :func:`jagged`).
        weights: field -> per-id weights ``[B]`` / ``[B, L]``; when any field has weights, the others
            get weight 1 (a KJT has weights for all keys or none). Default: the bag fields' weights
            the batch carries (``batch.weights``, from the schema's ``weights`` column).
        weighted: ``True``: always give weights (1 where none), as a weighted collection
            (``is_weighted=True``) needs; ``False``: never; ``None``: when any field has weights.
    """
    if not keys:
        raise InputError("kjt_from_batch: no keys")
    ws = dict(getattr(batch, "weights", None) or {}) if weights is None else dict(weights)
    ws = {k: w for k, w in ws.items() if k in keys}
    vals, lens, wts = [], [], []
    for k in keys:
        v, n, w = jagged(batch, k, ws.get(k))
        vals.append(v)
        lens.append(n)
        wts.append(w if w is not None else torch.ones(v.shape[0], dtype=torch.float32, device=v.device))
    return KeyedJaggedTensor(
        keys=list(keys),
        values=torch.cat(vals),
        lengths=torch.cat(lens),
        weights=torch.cat(wts) if (bool(ws) if weighted is None else weighted) else None,
    )


def dense_from_batch(batch: Batch, names: Sequence[str]) -> Tensor:
    """``[B, len(names)]`` float32: the batch's dense fields side by side (DLRM's ``dense_features``)."""
    cols = []
    for n in names:
        if n not in batch.features:
            raise InputError(f"dense field {n!r}: not in the batch; features are {sorted(batch.features)}")
        x = batch.features[n]
        if x.dim() != 1:
            raise InputError(f"dense field {n!r}: expected [B] values, got shape {list(x.shape)}")
        cols.append(x.to(torch.float32))
    if not cols:
        raise InputError("dense_from_batch: no dense fields (DLRM needs at least one)")
    return torch.stack(cols, dim=1)


# ------------------------------------------------------------------------------------- tables


def embedding_bag_configs(
    schema: Any, dim: int, fields: Sequence[str] | None = None, *, pooling: str = "SUM"
) -> list[EmbeddingBagConfig]:
    """One ``EmbeddingBagConfig`` per embedding table of the schema, its features the id fields using it.

    Fields that share a schema table (``item_id`` and the history ``hist_item_id``) become features of
    one config -- one table, as torchrec shares tables. Tables have ``vocab_size + 2`` rows (ctrlens's
    index convention). ``fields``: the id fields to include (default: every sparse, sequence and bag field).
    """
    kinds = ("sparse", "sequence", "bag")
    names = list(fields) if fields is not None else [f.name for f in schema.fields if f.kind in kinds]
    by_table: dict[str, list[str]] = {}
    rows: dict[str, int] = {}
    for n in names:
        if n not in schema:
            raise InputError(f"field {n!r} is not in the schema; fields: {list(schema.names)}")
        if schema[n].kind not in kinds:
            raise InputError(f"field {n!r} is a {schema[n].kind} field; only {kinds} fields have embedding tables")
        t = schema.table_of(n)
        by_table.setdefault(schema.table_name_of(n), []).append(n)
        rows[schema.table_name_of(n)] = t.num_embeddings
    pool = getattr(PoolingType, pooling.upper(), None)
    if pool is None:
        raise InputError(f"pooling must be one of {[p.name for p in PoolingType]}, got {pooling!r}")
    return [
        EmbeddingBagConfig(name=t, embedding_dim=dim, num_embeddings=rows[t], feature_names=fs, pooling=pool)
        for t, fs in by_table.items()
    ]


def feature_taps(ebc: nn.Module) -> tuple[dict[str, Tap], dict[str, nn.Module]]:
    """``(feature key -> Tap, table name -> nn.EmbeddingBag)`` of an unsharded ``EmbeddingBagCollection``.

    The collection pools feature ``j`` of table ``t`` with the ``j``-th call of ``embedding_bags[t]``
    (features in ``EmbeddingBagConfig.feature_names`` order); the tap reads that call's ``[B, D]``
    output. A feature listed in two tables is keyed ``feature@table``, as torchrec names it.
    """
    if not isinstance(ebc, EmbeddingBagCollection):
        raise InterfaceError(
            f"{type(ebc).__name__} is not an unsharded torchrec EmbeddingBagCollection "
            "(sharded collections under DistributedModelParallel are not supported: see docs/torchrec.md)"
        )
    configs = ebc.embedding_bag_configs()
    count: dict[str, int] = {}
    for c in configs:
        for f in c.feature_names:
            count[f] = count.get(f, 0) + 1
    taps: dict[str, Tap] = {}
    tables: dict[str, nn.Module] = {}
    for c in configs:
        bag = ebc.embedding_bags[c.name]
        tables[c.name] = bag
        shared = len(c.feature_names) > 1
        for j, f in enumerate(c.feature_names):
            key = f if count[f] == 1 else f"{f}@{c.name}"
            # one call per feature; a table of one feature must run exactly once (call=None checks it)
            taps[key] = Tap(bag, j if shared else None)
    return taps, tables


def _find_ebcs(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, EmbeddingBagCollection)]


def _field_kind(schema: Any, key: str) -> str:
    if schema is None or key not in schema:
        return "sparse" if schema is None else "other"
    k = schema[key].kind
    return k if k in ("sparse", "sequence", "bag", "dense") else "other"


# ------------------------------------------------------------------------------------- views


def attach(
    model: nn.Module,
    *,
    forward: Callable[[nn.Module, Batch], Mapping[str, Tensor]],
    layers: Mapping[str, Any] | None = None,
    heads: Mapping[str, str | HeadSpec] | None = None,
    schema: Any = None,
    name: str | None = None,
    ebc: nn.Module | None = None,
) -> ModelView:
    """A :class:`ModelView` of any model built on torchrec ``EmbeddingBagCollection`` (s).

    Args:
        model: the model.
        forward: ``forward(model, batch) -> {head: [B] probability, ...}``; build the model's inputs
            with :func:`kjt_from_batch` / :func:`dense_from_batch`.
        layers: watched layers, as for :func:`ctrlens.attach` (module, ``(module, call)`` or LayerSpec).
        heads: as for :func:`ctrlens.attach` (default ``{"ctr": "click"}``).
        schema: the data schema, to give fields their kinds (optional).
        ebc: the collection to read fields and tables from (default: every collection in the model;
            their feature keys and table names must not collide).
    """
    from ctrlens.models.interface import attach as _attach

    ebcs = [ebc] if ebc is not None else _find_ebcs(model)
    if not ebcs:
        raise InterfaceError(
            f"{type(model).__name__} has no torchrec EmbeddingBagCollection (a sharded model under "
            "DistributedModelParallel is not supported: watch the unsharded model, see docs/torchrec.md)"
        )
    fields: dict[str, FieldSpec] = {}
    tables: dict[str, nn.Module] = {}
    for e in ebcs:
        taps, tabs = feature_taps(e)
        for k, tap in taps.items():
            if k in fields:
                raise InterfaceError(f"feature key {k!r} is in two EmbeddingBagCollections; pass ebc= to pick one")
            fields[k] = FieldSpec(k, tap, _field_kind(schema, k))  # type: ignore[arg-type]
        for t, m in tabs.items():
            if t in tables:
                raise InterfaceError(f"table {t!r} is in two EmbeddingBagCollections; pass ebc= to pick one")
            tables[t] = m
    return _attach(model, forward=forward, fields=fields, layers=layers, heads=heads, name=name, tables=tables)


def _activation_of(p: nn.Module) -> str:
    act = getattr(p, "_activation_fn", None)
    if act in (torch.relu, torch.nn.functional.relu) or isinstance(act, nn.ReLU):
        return "relu"
    if act in (torch.sigmoid,) or isinstance(act, nn.Sigmoid):
        return "sigmoid"
    if act in (torch.tanh,) or isinstance(act, nn.Tanh):
        return "tanh"
    return "identity"


def dlrm_layers(model: nn.Module, head: str = "ctr") -> dict[str, LayerSpec]:
    """Watched layers of a torchrec DLRM (``DLRM``, ``DLRM_DCN``, ``DLRM_Projection``), in forward order.

    ``dense_arch.<i>``: the dense arch perceptrons ``[B, N]`` (after their activation);
    ``interaction``: the interaction arch output ``[B, D + F(F+1)/2]`` for ``DLRM`` (wider or
    narrower for the variants); ``over_arch.<i>``: the over arch perceptrons; ``logit.<head>``: its
    final ``nn.Linear`` ``[B, 1]``.
    """
    out: dict[str, LayerSpec] = {}
    for arch in ("dense_arch", "over_arch"):
        sub = getattr(model, arch, None)
        if sub is None:
            raise InterfaceError(f"{type(model).__name__} has no {arch}; is it a torchrec DLRM? Use attach() instead")
        ps = [m for m in sub.modules() if isinstance(m, Perceptron)]
        if arch == "over_arch" and "interaction" not in out:
            out["interaction"] = LayerSpec("interaction", Tap(model.inter_arch), "interaction", "identity")
        for i, p in enumerate(ps):
            out[f"{arch}.{i}"] = LayerSpec(f"{arch}.{i}", Tap(p), "hidden", _activation_of(p))  # type: ignore[arg-type]
    seq = getattr(model.over_arch, "model", None)
    last = list(seq.children())[-1] if isinstance(seq, nn.Sequential) and len(seq) else None
    if isinstance(last, nn.Linear) and last.out_features == 1:
        out[f"logit.{head}"] = LayerSpec(f"logit.{head}", Tap(last), "logit", "identity")
    return out


def attach_dlrm(
    model: nn.Module,
    schema: Any = None,
    *,
    dense: Sequence[str] | None = None,
    head: str = "ctr",
    label: str = "click",
    name: str = "dlrm",
) -> ModelView:
    """A :class:`ModelView` of torchrec's ``DLRM`` (or a subclass) as torchrec builds it.

    The view's forward feeds ``model(dense_features, sparse_features)`` with the batch's ``dense``
    fields (default: the schema's dense fields, in schema order) and a ``KeyedJaggedTensor`` of every
    feature key of ``model.sparse_arch.embedding_bag_collection``; its outputs are ``{head: [B]
    probability, head_logit: [B] logit}``.
    """
    sparse_arch = getattr(model, "sparse_arch", None)
    ebc = getattr(sparse_arch, "embedding_bag_collection", None)
    if ebc is None:
        raise InterfaceError(f"{type(model).__name__} is not a torchrec DLRM (no sparse_arch.embedding_bag_collection)")
    if dense is None:
        if schema is None:
            raise InputError("attach_dlrm: give the schema or the dense field names (dense=[...])")
        dense = [f.name for f in schema.dense]
    dense = list(dense)
    keys = [k for c in ebc.embedding_bag_configs() for k in c.feature_names]
    keys = list(dict.fromkeys(keys))
    weighted = bool(ebc.is_weighted())
    if schema is not None:
        missing = [k for k in [*keys, *dense] if k not in schema]
        if missing:
            raise InputError(f"DLRM features {missing} are not fields of the schema; fields: {list(schema.names)}")

    def forward(m: nn.Module, batch: Batch) -> dict[str, Tensor]:
        z = m(dense_from_batch(batch, dense), kjt_from_batch(batch, keys, weighted=weighted)).reshape(-1)
        return {head: torch.sigmoid(z), f"{head}_logit": z}

    view = attach(model, forward=forward, layers=dlrm_layers(model, head), schema=schema, name=name, ebc=ebc,
                  heads={head: HeadSpec(head, head, label, "all", f"{head}_logit")})  # type: ignore[arg-type]
    return view


def make_dlrm(
    schema: Any,
    *,
    dim: int = 8,
    dense_arch: Sequence[int] = (16,),
    over_arch: Sequence[int] = (16,),
    fields: Sequence[str] | None = None,
    seed: int | None = 0,
) -> nn.Module:
    """torchrec's ``DLRM`` for a ctrlens schema: one table per schema table (shared ones shared), the
    schema's dense fields into the dense arch. ``dense_arch`` / ``over_arch`` are hidden widths (the
    dense arch ends at ``dim``, the over arch at one logit). A convenience for examples and tests; any
    DLRM you build yourself works the same."""
    if seed is not None:
        torch.manual_seed(seed)
    configs = embedding_bag_configs(schema, dim, fields)
    used = {f for c in configs for f in c.feature_names}
    # per-id weights (a bag's `weights` column) need torchrec's weighted collection: sum pooling of w * e
    weighted = any(getattr(schema[f], "weights", None) for f in used)
    ebc = EmbeddingBagCollection(tables=configs, is_weighted=weighted, device=torch.device("cpu"))
    n_dense = len(schema.dense)
    if n_dense == 0:
        raise InputError("make_dlrm: the schema has no dense field (DLRM's dense arch needs at least one)")
    return DLRM(
        embedding_bag_collection=ebc,
        dense_in_features=n_dense,
        dense_arch_layer_sizes=[*dense_arch, dim],
        over_arch_layer_sizes=[*over_arch, 1],
    )


def unshard(sharded: nn.Module, into: nn.Module, *, dst: int = 0) -> nn.Module | None:
    """Copy the weights of a ``DistributedModelParallel`` (sharded) model into ``into``, an unsharded
    model of the same architecture, on rank ``dst`` -- the model ctrlens then watches.

    Collective: every rank of the process group must call it (each sharded table is gathered to
    ``dst``). Returns ``into`` (weights loaded) on rank ``dst`` and ``None`` on the others.
    """
    import torch.distributed as dist

    try:
        from torch.distributed._shard.sharded_tensor import ShardedTensor
    except ImportError:  # pragma: no cover - torch without sharded tensors
        ShardedTensor = ()  # type: ignore[assignment,misc]
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    full: dict[str, Tensor] = {}
    for k, v in sharded.state_dict().items():
        if isinstance(v, ShardedTensor):
            out = torch.empty(tuple(v.size()), dtype=v.dtype) if rank == dst else None
            v.gather(dst=dst, out=out)
            v = out
        elif hasattr(v, "full_tensor"):  # a DTensor (replicated or sharded)
            v = v.full_tensor()
        if rank == dst:
            full[k[len("module."):] if k.startswith("module.") else k] = v.detach().cpu()
    if rank != dst:
        return None
    missing, unexpected = into.load_state_dict(full, strict=False)
    if missing or unexpected:
        raise InterfaceError(
            f"unshard: the sharded model's state_dict does not fit {type(into).__name__}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return into
