"""Layer features for probes, streamed from forward hooks in the pass that computes the model's outputs.

One forward pass per batch (:class:`~ctrlens.models.taps.TapSession`) yields every watched layer's
output *and* the model's own prediction; only the rows of a seeded sample are kept.

Row sampling. Each row gets a pseudo-random key from a hash of ``(row number, seed)`` (the batch's
``row`` numbers within the day when present, else a running count over the pass). The kept rows are
the ``k`` rows with the smallest keys (a bottom-k / priority sample = a uniform sample without
replacement), so the sample does not depend on batch size, order, shuffling or sharding. A second
hash decides whether a row is *held out* (evaluation) or may be used for training; both are
deterministic per row, so scoring the training day later can leave the training rows out.

Layer outputs become ``[B, N]`` features:

* ``[B, N]`` as is; ``[B]`` -> ``[B, 1]``;
* masked sequence outputs ``[B, L, N]`` (a tap with ``mask``, e.g. DIN's attention MLP) -> the masked
  mean over the valid positions (rows without any valid position -> zeros);
* any other ``[B, ...]`` output -> flattened.

Pseudo-layers (added when ``layers=None`` and the view lacks them): ``embedding`` -- the
concatenation of every field's (pooled) embedding output, when the view has no layer of kind
``"embedding"``; ``logit.<head>`` -- the model's own logit for the head (``outputs[head.logit]``, else
``logit(p)``), the reference a probe on the last hidden layer is compared with.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from ctrlens.data.batch import Batch
from ctrlens.errors import InputError
from ctrlens.models.interface import HeadSpec, InterfaceError, ModelView, Tap
from ctrlens.models.taps import TapSession

EMBEDDING = "embedding"
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


# ---------------------------------------------------------------------------------------------
# Which layers


@dataclass(frozen=True)
class ProbeLayer:
    """A probed layer: a real tap, the concatenation of field outputs, or the head's own logit.

    Attributes:
        name: canonical layer name (``"embedding"``, ``"mlp.0"``, ``"logit.ctr"``...).
        source: ``"layer"`` (a view layer), ``"fields"`` (pseudo embedding) or ``"output"``
            (the head's logit from the forward's outputs).
        kind: the view's layer kind (``"embedding"``, ``"hidden"``, ``"attention"``, ``"logit"``...).
        taps: tap name -> :class:`Tap` the feature is built from (in concatenation order).
    """

    name: str
    source: str
    kind: str
    taps: tuple[tuple[str, Tap], ...] = ()


def resolve_layers(view: ModelView, head: HeadSpec, layers: list[str] | str | None) -> list[ProbeLayer]:
    """The probed layers in forward order: view layers plus the pseudo-layers (see module doc).

    ``layers``: exact names or glob patterns over the available names; ``None`` = all.
    Raises :class:`InterfaceError` naming the available layers when a name matches nothing.
    """
    avail: dict[str, ProbeLayer] = {}
    has_emb = any(spec.kind == "embedding" for spec in view.layers.values())
    if not has_emb:
        fields = tuple(
            (f"field:{n}", fs.tap) for n, fs in view.fields.items() if fs.kind not in ("image",)
        )
        if fields and EMBEDDING not in view.layers:
            avail[EMBEDDING] = ProbeLayer(EMBEDDING, "fields", "embedding", fields)
    for n, spec in view.layers.items():
        avail[n] = ProbeLayer(n, "layer", spec.kind, ((n, spec.tap),))
    logit = f"logit.{head.name}"
    if logit not in avail:
        avail[logit] = ProbeLayer(logit, "output", "logit")
    if layers is None:
        return list(avail.values())
    pats = [layers] if isinstance(layers, str) else list(layers)
    if not pats:
        raise InputError(f"no layers to probe; model {view.name!r} has layers: {list(avail)}")
    chosen: list[str] = []
    for p in pats:
        hits = [n for n in avail if fnmatch.fnmatchcase(n, p)]
        if not hits:
            raise InterfaceError(f"model {view.name!r} has no layer matching {p!r}; layers: {list(avail)}")
        chosen += [h for h in hits if h not in chosen]
    order = list(avail)
    return [avail[n] for n in sorted(chosen, key=order.index)]


# ---------------------------------------------------------------------------------------------
# Rows


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of ``x`` (uint64, wraps silently)."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def row_keys(rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(key [B] float64 in [0, 1), u [B] float64 in [0, 1))`` for int64 row numbers ``rows``.

    ``key`` orders rows for the bottom-k sample; ``u`` (an independent hash) decides the holdout
    (``u < holdout``).
    """
    r = rows.astype(np.int64).view(np.uint64)
    s = _splitmix64(np.full(1, seed, dtype=np.int64).view(np.uint64))[0]
    with np.errstate(over="ignore"):
        h1 = _splitmix64(r ^ s)
        h2 = _splitmix64(h1 ^ np.uint64(0xD1B54A32D192ED03))
    scale = 1.0 / float(1 << 53)
    return (h1 >> np.uint64(11)).astype(np.float64) * scale, (h2 >> np.uint64(11)).astype(np.float64) * scale


class BottomK:
    """The ``k`` entries with the smallest keys seen so far, with row-aligned tensors.

    ``add`` drops rows whose key can no longer enter, then buffers; a compaction (sort, keep ``k``)
    runs when ``2k`` rows are buffered, so the cost is amortised linear in the rows offered. Columns
    are compacted one at a time, so the peak memory is the buffer plus one column's copy.
    """

    def __init__(self, k: int):
        self.k = int(k)
        self._keys: list[Tensor] = []
        self._cols: dict[str, list[Tensor]] = {}
        self._buffered = 0
        self.threshold = float("inf")  # keys >= threshold can no longer enter

    def add(self, keys: Tensor, data: dict[str, Tensor]) -> None:
        """``keys [m]`` float64 (CPU); ``data``: name -> ``[m, ...]`` tensors (any device)."""
        if self.k <= 0 or keys.numel() == 0:
            return
        if self.threshold < float("inf"):
            keep = keys < self.threshold
            if not bool(keep.any()):
                return
            if not bool(keep.all()):
                idx = keep.nonzero()[:, 0]
                keys = keys[idx]
                data = {n: t.index_select(0, idx.to(t.device)) for n, t in data.items()}
        self._keys.append(keys)
        for n, t in data.items():
            self._cols.setdefault(n, []).append(t)
        self._buffered += int(keys.numel())
        if self._buffered >= 2 * self.k:
            self._compact()

    def _compact(self) -> None:
        if not self._keys:
            return
        keys = torch.cat(self._keys) if len(self._keys) > 1 else self._keys[0]
        order = torch.argsort(keys, stable=True)[: self.k]
        keys = keys[order]
        for n, parts in self._cols.items():
            col = torch.cat(parts) if len(parts) > 1 else parts[0]
            parts.clear()  # free the buffered chunks before the sorted copy is made
            parts.append(col.index_select(0, order.to(col.device)))
            del col
        self._keys, self._buffered = [keys], int(keys.numel())
        if keys.numel() >= self.k:
            self.threshold = float(keys[-1])

    def result(self) -> tuple[Tensor, dict[str, Tensor]]:
        """``(keys [k'], data)`` sorted by key (so independent of the order rows were offered)."""
        self._compact()
        if not self._keys:
            return torch.zeros(0, dtype=torch.float64), {}
        return self._keys[0], {n: parts[0] for n, parts in self._cols.items()}


# ---------------------------------------------------------------------------------------------
# Features


def pool_output(out: Tensor, mask: Tensor | None, batch_size: int, what: str) -> Tensor:
    """A tap output as ``[B, N]`` features (see the module doc for the rules)."""
    if out.ndim == 0 or out.shape[0] != batch_size:
        raise InterfaceError(
            f"probe layer {what!r}: output of shape {tuple(out.shape)} is not per row (batch of {batch_size}); "
            "probe per-row layers only"
        )
    if mask is not None and out.ndim >= 3:
        B, L = mask.shape[0], mask.shape[1]
        m = mask.to(out.dtype)
        # masked mean over positions as one batched product: no [B, L, N] temporary
        s = torch.bmm(m[:, None, :], out.reshape(B, L, -1))[:, 0]  # [B, N']
        out = (s / m.sum(1, keepdim=True).clamp_min(1.0)).reshape(B, *out.shape[2:])
    # A copy, not a view: a later in-place op of the model (ReLU(inplace=True)) must not change it.
    if out.ndim == 1:
        return out[:, None].clone()
    return out.reshape(batch_size, -1).clone()


@dataclass
class Sample:
    """Rows kept from one pass.

    Attributes:
        x: layer name -> ``[k, N]`` float features (fit) or ``[k]`` probe logits (score).
        y: ``[k]`` 0/1 targets of the head.
        p: ``[k]`` the model's own probability for the head.
        key: ``[k]`` float64 sampling keys (ascending).
        rows: rows offered (after the head's row filter, e.g. clicked rows only for ESMM's CVR).
        positives: positives among them.
    """

    x: dict[str, Tensor]
    y: Tensor
    p: Tensor
    key: Tensor
    rows: int = 0
    positives: int = 0

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class StreamConfig:
    """What one pass keeps: ``parts`` name -> (bottom-k size, row filter on ``(key, u)``)."""

    seed: int
    parts: dict[str, tuple[int, Callable[[np.ndarray, np.ndarray], np.ndarray]]] = field(default_factory=dict)


def stream(
    view: ModelView,
    layers: list[ProbeLayer],
    head: HeadSpec,
    batches: Iterable[Batch],
    config: StreamConfig,
    *,
    store_device: torch.device,
    store_dtype: torch.dtype = torch.float32,
    transform: Callable[[str, Tensor], Tensor] | None = None,
) -> dict[str, Sample]:
    """One pass over ``batches``: forward with taps, keep each part's sampled rows.

    ``transform(layer, features [B, N]) -> [B, ...]`` is applied before storing (scoring stores
    probe logits ``[B]`` instead of features). The model runs in eval mode under ``no_grad``; its
    training flag is restored afterwards.
    """
    taps: dict[str, Tap] = {}
    for pl in layers:
        for tname, tap in pl.taps:
            taps[tname] = tap
    current: dict[str, Tensor] = {}

    def on_tap(ev) -> None:
        current[ev.name] = pool_output(ev.output.detach(), ev.mask, len(ev.batch), ev.name)

    reservoirs = {name: BottomK(k) for name, (k, _) in config.parts.items()}
    rows_seen = 0
    positives = 0
    offset = 0
    model = view.model
    was_training = model.training
    model_device = view.device
    model.eval()
    try:
        with torch.no_grad(), TapSession(view, taps, on_tap) as session:
            for batch in _iter_checked(batches):
                n = len(batch)
                if n == 0:
                    continue
                if batch.features and next(iter(batch.features.values())).device != model_device:
                    batch = batch.to(model_device)
                current.clear()
                outputs = session.forward(batch)
                y, rmask = head.target(batch)
                p = _head_output(outputs, head, view)
                rows = batch.row.cpu().numpy() if batch.row is not None else np.arange(offset, offset + n)
                offset += n
                feats: dict[str, Tensor] = {}
                for pl in layers:
                    feats[pl.name] = _layer_features(pl, current, outputs, head, p)
                if rmask is not None:
                    idx = rmask.nonzero()[:, 0]
                    p = p.index_select(0, idx)
                    feats = {k: v.index_select(0, idx) for k, v in feats.items()}
                    rows = rows[rmask.cpu().numpy()]
                rows_seen += int(y.shape[0])
                positives += int((y > 0.5).sum())
                if y.shape[0] == 0:
                    continue
                key, u = row_keys(rows, config.seed)
                for part, (k, select) in config.parts.items():
                    sel = select(key, u)
                    if not sel.any():
                        continue
                    # Drop rows that cannot enter before touching (and moving) the features.
                    sel = sel & (key < reservoirs[part].threshold)
                    if not sel.any():
                        continue
                    keys_t = torch.from_numpy(key[sel])
                    take = None if sel.all() else torch.from_numpy(np.nonzero(sel)[0])
                    data: dict[str, Tensor] = {}
                    for name, f in {**feats, "__y": y, "__p": p}.items():
                        g = f if take is None else f.index_select(0, take.to(f.device))
                        if name.startswith("__"):
                            data[name] = g.to(store_device, torch.float32)
                            continue
                        g = transform(name, g) if transform is not None else g
                        data[name] = g.to(store_device, store_dtype)
                    reservoirs[part].add(keys_t, data)
    finally:
        model.train(was_training)
    out: dict[str, Sample] = {}
    for part, res in reservoirs.items():
        keys, data = res.result()
        if not data:
            empty = torch.zeros(0, device=store_device)
            out[part] = Sample({pl.name: empty for pl in layers}, empty, empty, keys, rows_seen, positives)
            continue
        y = data.pop("__y")
        p = data.pop("__p")
        out[part] = Sample(data, y, p, keys, rows_seen, positives)
    return out


def _iter_checked(batches: Iterable[Batch]) -> Iterator[Batch]:
    for b in batches:
        if not isinstance(b, Batch):
            raise InputError(f"probes: expected ctrlens Batch objects, got {type(b).__name__}")
        yield b


def _head_output(outputs: dict[str, Tensor], head: HeadSpec, view: ModelView) -> Tensor:
    if head.output not in outputs:
        raise InterfaceError(
            f"model {view.name!r}: head {head.name!r} reads output {head.output!r}, but the forward returned {sorted(outputs)}"
        )
    p = outputs[head.output].detach().reshape(-1)
    return p


def _layer_features(pl: ProbeLayer, current: dict[str, Tensor], outputs: dict[str, Tensor], head: HeadSpec, p: Tensor) -> Tensor:
    if pl.source == "output":
        if head.logit and head.logit in outputs:
            z = outputs[head.logit].detach().reshape(-1)
        else:
            z = torch.logit(p.double(), eps=1e-7)
        return z.float()[:, None]
    parts = []
    for tname, _ in pl.taps:
        if tname not in current:  # pragma: no cover - TapSession checks call counts
            raise InterfaceError(f"probe layer {pl.name!r}: tap {tname!r} did not fire")
        parts.append(current[tname].float())
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)
