"""NeuronMonitor: summarise every watched layer of a model over a day's batches.

::

    mon = NeuronMonitor(view)                 # all of view.layers; or layers="mlp.*"
    summary = mon.run(dataset.iter_batches(day))
    neuron_stats, layer_stats = summary.to_results()

    # or drive the forward yourself
    with NeuronMonitor(model, reference=ref) as mon:
        for batch in batches:
            outputs = mon.forward(batch)
    summary = mon.summary()

Hooks (one :class:`~ctrlens.models.taps.TapSession`) reduce each tapped output to sufficient
statistics inside the hook (:class:`~ctrlens.neurons.sketch.LayerSketch`) and are removed on
exit. Sequence taps (``Tap.mask``) keep only real positions. A module called more than once per
forward is refused unless its calls are named (``(module, call)`` taps).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from ctrlens.data.batch import Batch
from ctrlens.models.interface import LayerSpec, ModelView, Tap, as_view, infer_activation
from ctrlens.models.taps import TapEvent, TapSession
from ctrlens.neurons.embedding import SeenRows
from ctrlens.neurons.kernels import Engine
from ctrlens.neurons.sampling import HASH_BITS, BottomK, RowBatch, row_hash
from ctrlens.neurons.sketch import LayerSketch, SketchConfig
from ctrlens.neurons.stats import NeuronStatsError
from ctrlens.neurons.summary import NeuronSummary


class NeuronMonitor:
    """Per-neuron and per-layer statistics of a model's watched layers.

    Args:
        model: a :class:`ModelView`, a reference model (``.lens()``) or anything :func:`as_view` takes.
        layers: ``None`` (all of ``view.layers``), names / glob patterns (``"mlp.*"``), or a mapping
            name -> :class:`LayerSpec` / :class:`Tap` / module / ``(module, call[, mask])``.
        reference: a :class:`NeuronSummary` (or its ``to_dict()``) of the reference day: its
            histogram edges and PCA bases are reused so days compare.
        bins, sample_size, seed, hist_rate, seq_rate, eps: see :class:`SketchConfig`
            (``seq_rate < 1`` summarises a deterministic subsample of sequence positions).
            The CLI and nightly job use every position.
        edges: layer -> fixed ``(lo, hi)`` histogram range (overrides reference and defaults).
        tables: also record which embedding rows are looked up (``view.tables``), for
            :func:`~ctrlens.neurons.embedding_health`.
        engine: ``"eager"`` (default) or ``"compiled"`` (one ``torch.compile`` kernel per batch and
            layer: 2-3x cheaper hooks after a one-off compilation; see :mod:`ctrlens.neurons.kernels`).
        distributed: under ``torch.distributed``: agree on first-batch histogram edges across
            ranks and merge the ranks' summaries in :meth:`summary`. Default: when a process
            group with more than one rank is initialised.
    """

    def __init__(
        self,
        model: Any,
        layers: None | str | list[str] | Mapping[str, Any] = None,
        *,
        reference: NeuronSummary | Mapping[str, Any] | None = None,
        bins: int = 32,
        sample_size: int = 2000,
        seed: int = 0,
        hist_rate: float = 1.0,
        seq_rate: float = 1.0,
        eps: float = 0.01,
        edges: Mapping[str, tuple[float, float]] | None = None,
        tables: bool = True,
        distributed: bool | None = None,
        engine: Engine = "eager",
    ):
        self.view: ModelView = as_view(model)
        self.specs = self._layer_specs(layers)
        if not self.specs:
            raise NeuronStatsError(f"model {self.view.name!r}: no layers to monitor")
        if reference is not None and not isinstance(reference, NeuronSummary):
            reference = NeuronSummary.from_dict(reference)
        self.reference: NeuronSummary | None = reference  # type: ignore[assignment]
        self.config = SketchConfig(
            bins=bins, sample_size=sample_size, seed=seed, hist_rate=hist_rate, seq_rate=seq_rate, eps=eps
        )
        if engine not in ("eager", "compiled"):
            raise NeuronStatsError(f"engine must be 'eager' or 'compiled', got {engine!r}")
        self.engine = engine
        self.distributed = _dist_active() if distributed is None else bool(distributed)
        self.sketches: dict[str, LayerSketch] = {}
        for name, spec in self.specs.items():
            e, pca = None, None
            if reference is not None and name in reference.stats:
                r = reference.stats[name]
                e = (r.lo, r.hi)
                if r.bins != bins:
                    raise NeuronStatsError(f"layer {name!r}: the reference has {r.bins} histogram bins, this monitor {bins}")
                if r.pca_basis is None:
                    r.fit_pca()
                pca = (r.pca_mean, r.pca_basis)
            if edges and name in edges:
                e = tuple(map(float, edges[name]))  # type: ignore[assignment]
            sync = _sync_edges if self.distributed else None
            self.sketches[name] = LayerSketch(name, spec.activation, spec.kind, self.config, e, pca, sync, engine)  # type: ignore[arg-type]
        # packed=True: a model may hand sequence taps their real positions only (see ctrlens.models.taps)
        self._session = TapSession(self.view, {k: v.tap for k, v in self.specs.items()}, self._on_output, packed=True)
        self._seen = SeenRows(self.view.tables) if tables and self.view.tables else None
        self._rows: dict[tuple, RowBatch] = {}
        self._samplers: dict[tuple, BottomK] = {}
        self._next_row = 0
        self._batches = 0
        self._entered = False

    def _layer_specs(self, layers) -> dict[str, LayerSpec]:
        if layers is None or isinstance(layers, (str, list, tuple)):
            return self.view.select_layers(layers if layers is None or isinstance(layers, str) else list(layers))
        out: dict[str, LayerSpec] = {}
        for k, v in layers.items():
            if isinstance(v, LayerSpec):
                out[k] = v
                continue
            if isinstance(v, Tap):
                tap = v
            elif isinstance(v, tuple):
                tap = Tap(*v)
            else:
                tap = Tap(v)
            out[k] = LayerSpec(k, tap, "hidden", infer_activation(tap.module))
        return out

    # -- running ---------------------------------------------------------------------------------
    def __enter__(self) -> "NeuronMonitor":
        self._session.__enter__()
        if self._seen is not None:
            self._seen.__enter__()
        self._entered = True
        return self

    def __exit__(self, *exc) -> None:
        self._entered = False
        self._session.__exit__(*exc)
        if self._seen is not None:
            self._seen.__exit__(*exc)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """The model's outputs on ``batch``; its watched layers are summarised on the way."""
        if not self._entered:
            raise NeuronStatsError("NeuronMonitor.forward called outside 'with NeuronMonitor(...) as mon:'")
        self._rows.clear()
        if self._seen is not None:
            self._seen.active = True
        try:
            out = self._session.forward(batch)
        finally:
            if self._seen is not None:
                self._seen.active = False
            self._rows.clear()
            self._next_row += len(batch)
        self._batches += 1
        return out

    def run(self, batches: Iterable[Batch], *, eval_mode: bool = True) -> NeuronSummary:
        """Forward every batch (no gradients; in eval mode unless ``eval_mode=False``) and return
        :meth:`summary`. Batches are moved to the model's device."""
        model = self.view.model
        was_training = model.training
        device = self.view.device
        if eval_mode:
            model.eval()
        try:
            with self, torch.no_grad():
                for b in batches:
                    self.forward(b.to(device) if device.type != "cpu" else b)
        finally:
            model.train(was_training)
        return self.summary()

    # -- the hook ------------------------------------------------------------------------------
    def _on_output(self, ev: TapEvent) -> None:
        out = ev.output.detach()
        if out.dtype not in (torch.float32, torch.float64):
            out = out.float()
        mask = ev.mask
        if ev.packed:  # [n, N]: the real positions of the mask only (the model's packed inference path)
            rows = self._rows_for(ev.batch, ev.tap.mask, mask, mask.shape[1], out.device).packed()  # type: ignore[union-attr]
            if out.shape[0] != rows.n_positions:
                raise NeuronStatsError(
                    f"layer {ev.name!r}: output {tuple(out.shape)} does not match the mask of {ev.tap.mask!r} "
                    f"{tuple(mask.shape)} ({rows.n_positions} real positions); a masked layer's output must be "
                    "[B, L, N], or [n, N] over the n real positions in row-major order (packed)"
                )
            self.sketches[ev.name].update(out, rows)
            return None
        B = len(ev.batch)
        if out.dim() == 0 or out.shape[0] != B:
            raise NeuronStatsError(
                f"layer {ev.name!r}: output shape {tuple(out.shape)} does not start with the batch size {B}"
            )
        if out.dim() == 1:
            out = out.unsqueeze(1)
        N = out.shape[-1]
        if out.dim() == 2:
            x, L = out, 1
        else:
            x3 = out.reshape(B, -1, N)
            L = x3.shape[1]
            x = x3.reshape(B * L, N)
        if mask is not None:
            if out.dim() < 3 or tuple(mask.shape) != (B, L):
                raise NeuronStatsError(
                    f"layer {ev.name!r}: output {tuple(out.shape)} does not match the mask of {ev.tap.mask!r} "
                    f"{tuple(mask.shape)}; a masked layer's output must be [B, L, N]"
                )
        rows = self._rows_for(ev.batch, ev.tap.mask if mask is not None else None, mask, L, x.device)
        self.sketches[ev.name].update(x, rows)  # reads the real rows of x through rows' indices
        return None

    def _rows_for(self, batch: Batch, mask_name: str | None, mask: Tensor | None, L: int, device) -> RowBatch:
        ck = (mask_name, L)
        r = self._rows.get(ck)
        if r is not None:
            return r
        B = len(batch)
        # the click / no-click classes: of "click", or of the first label of a schema without one ("income")
        click = batch.labels.get("click", next(iter(batch.labels.values()), None))
        if click is not None:
            c = (click.to(device=device).reshape(B) > 0.5).to(torch.float32)
            weights = torch.stack([c, 1.0 - c])
            label = c
        else:
            weights = torch.zeros(2, B, device=device)
            weights[1] = 1.0
            label = torch.full((B,), float("nan"), device=device)
        row = batch.row.to(device=device, dtype=torch.int64) if batch.row is not None else (
            torch.arange(self._next_row, self._next_row + B, device=device)
        )
        idx, h, kept, n_pos = None, None, None, None
        seq_rate = self.config.seq_rate if L > 1 else 1.0
        if L > 1:
            # rows of the flattened [B * L] output: all positions, or the real ones under a mask
            if mask is not None:
                idx = torch.nonzero(mask.to(device).reshape(-1)).squeeze(1)
                pos = idx
            else:
                pos = torch.arange(B * L, device=device)
            r_of = torch.div(pos, L, rounding_mode="floor")
            key = row.index_select(0, r_of) * L + (pos - r_of * L)
            n_pos = int(pos.shape[0])
            if seq_rate < 1.0:
                # keep positions of priority u < seq_rate: the histogram's and the sample's hash,
                # so those subsamples nest inside this one
                h = row_hash(key, self.config.seed)
                keep = torch.nonzero(h < int(seq_rate * (1 << HASH_BITS))).squeeze(1)
                pos, r_of, key, h = (t.index_select(0, keep) for t in (pos, r_of, key, h))
                idx, kept = pos, keep
            weights = weights.index_select(1, r_of)
            label = label.index_select(0, r_of)
        else:
            key = row
        sampler = self._samplers.get(ck)
        if sampler is None and self.config.sample_size > 0:
            sampler = self._samplers[ck] = BottomK(self.config.sample_size, device)
        if h is None:
            h = row_hash(key, self.config.seed)
        r = RowBatch(
            idx,
            weights.contiguous(),
            click is not None,
            label.contiguous(),
            key,
            h,
            self.config.hist_rate,
            sampler,
            seq_rate,
            kept,
            n_pos,
        )
        self._rows[ck] = r
        return r

    # -- results -------------------------------------------------------------------------------
    def summary(self, sync: bool | None = None) -> NeuronSummary:
        """The :class:`NeuronSummary` so far. ``sync`` (default: :attr:`distributed`) gathers every
        rank's summary and merges them in rank order, so all ranks return the same result."""
        stats = {}
        for name, sk in self.sketches.items():
            if not sk._started:
                raise NeuronStatsError(
                    f"layer {name!r} produced no output; was the monitor run over any batch? "
                    f"(monitored layers: {list(self.sketches)})"
                )
            stats[name] = sk.result()
        seen = self._seen.result() if self._seen is not None else {}
        meta = {
            "model": self.view.name,
            "bins": self.config.bins,
            "sample_size": self.config.sample_size,
            "seed": self.config.seed,
            "hist_rate": self.config.hist_rate,
            "seq_rate": self.config.seq_rate,
            "eps": self.config.eps,
            "batches": self._batches,
            "reference": self.reference is not None,
        }
        s = NeuronSummary(stats, seen, meta)
        if self.distributed if sync is None else sync:
            from ctrlens.neurons.distributed import all_gather_summary

            s = all_gather_summary(s)
        for st in s.stats.values():  # the day's own 2-D basis unless a reference gave one
            if st.pca_basis is None:
                st.fit_pca()
        return s


def _dist_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sync_edges(lo: float, hi: float) -> tuple[float, float]:
    """Widest first-batch range over all ranks, so every rank bins with the same edges."""
    import torch.distributed as dist

    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([-lo, hi], dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(-t[0]), float(t[1])


__all__ = ["NeuronMonitor"]
