"""Everything the nightly job measures for one model on one day.

:func:`compute_day` returns the results the store keeps (``field_stats``, ``quality``,
``neuron_stats``, ``layer_stats``, ``embedding_health``, ``probe``, ``saliency``) plus a few
*observations* -- statistics that have no result table of their own (the position-bias slope of
observed CTR, PAL's seen curve against it, a new checkpoint's train-vs-test checks); those are
stored as drift rows.

Passes over the data, each on a seeded sample of the day (``ModelWatch.rows``):

1. ``field_stats``: one streaming pass over the whole day (no model);
2. the **hooked pass**, streamed (each batch reduced as it passes, never collected: ``rows.neurons:
   0`` runs a whole day in bounded memory): :class:`~ctrlens.neurons.NeuronMonitor` summarises every
   watched layer and records the embedding rows looked up, and the model outputs of the same
   forward give the quality metrics (and PAL's seen curve) -- one inference for all of it;
3. on the same batches as they pass: the permutation importance of each field
   (:class:`PermutationImportance`: per chunk one forward, then per field only the blocks the
   field reaches) and a bounded sample for the dependence of every pair of fields (normalised
   mutual information). A *shuffled* column keeps its distribution; these two are what notice it;
4. probes (:class:`~ctrlens.probes.ProbeSuite`: its own hooked pass over its sample, as its API
   decides), one suite per head;
5. saliency (:func:`ctrlens.saliency.report`, gradient method by default);
6. observed CTR by position (two columns of the day, streamed).

Pixels are decoded only for models that read images (:func:`needs_images`); on CPU, forwards run
on pieces of :data:`CPU_FORWARD_ROWS` rows.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import torch

from ctrlens.data.batch import Batch
from ctrlens.errors import InputError
from ctrlens.models.interface import ModelView
from ctrlens.monitor.config import ModelWatch
from ctrlens.neurons.sketch import row_hash
from ctrlens.results import COLUMNS, Result

#: Observations (``(subject_kind, statistic)``) that depend on the checkpoint: a back-test recomputes them.
MODEL_OBSERVATIONS = frozenset({("position", "seen_gap")})
#: Rows per forward on CPU (the loader's batches are split): small enough for the CPU's caches
#: (measured on DIN: 1024-row forwards run ~1.7x faster per row than 4096-row ones, ~3x than 20k).
CPU_FORWARD_ROWS = 1024
#: Rows per forward of the permutation importance (any device; one permutation per chunk).
PERMUTATION_CHUNK = 1024
#: Rows kept per field and head for the permutation importance's p50 / p90 (exact up to this).
PERMUTATION_QUANTILE_ROWS = 100_000
#: Shuffle window of whole-day passes (rows mixed before they are cut into batches and permutation
#: chunks): bounded, so the loader's buffer does not grow with the day.
WHOLE_DAY_SHUFFLE_ROWS = 65_536
#: Rows of the day's sample whose field values give the field dependences (memory bounded; the
#: whole default sample).
DEPENDENCE_ROWS = 200_000


@dataclass
class DayResults:
    """What :func:`compute_day` measured: results for the store, observations, timings."""

    results: dict[str, Result]
    observations: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    neuron_summary: Any = None  # ctrlens.neurons.NeuronSummary of the hooked pass


def labelled_heads(view: ModelView, heads: tuple[str, ...] | None) -> list[str]:
    """The heads to analyse: the configured ones (checked), else every head with a label."""
    if heads is None:
        return [h for h, s in view.heads.items() if s.label is not None]
    out = []
    for h in heads:
        spec = view.head(h)  # names the model's heads when unknown
        if spec.label is None:
            raise InputError(f"model {view.name!r}: head {h!r} has no label to evaluate; heads: {sorted(view.heads)}")
        out.append(h)
    return out


def sample_batches(dataset: Any, day: str, rows: int, *, batch_size: int, seed: int, images: bool = True) -> list[Batch]:
    """A seeded sample of ``rows`` rows of ``day`` (``0``: the whole day), as batches."""
    return list(stream_batches(dataset, day, rows, batch_size=batch_size, seed=seed, images=images))


def stream_batches(dataset: Any, day: str, rows: int, *, batch_size: int, seed: int, images: bool = True,
                   rank: int = 0, world_size: int = 1, first: bool = False) -> Iterator[Batch]:  # fmt: skip
    """:func:`sample_batches` as a stream (one batch in memory at a time).

    With ``world_size > 1``: rank ``rank``'s share, the batches ``rank, rank + world_size, ...`` of
    the one-process stream (sharded by global batch index, so the union over the ranks is the same
    batches whatever the number of ranks); ``first``: preceded by the stream's first batch when
    that is not the rank's own (rank > 0)."""
    limit = None if rows <= 0 else rows
    kw: dict[str, Any] = {"images": images} if not images else {}
    if limit is None:  # the whole day: every row is used anyway; mixing windows need not hold a day
        kw["shuffle_buffer"] = WHOLE_DAY_SHUFFLE_ROWS
    if world_size > 1:
        kw.update(every=(rank, world_size), first=first)
    return iter(dataset.iter_batches(day, batch_size=batch_size, shuffle=True, seed=seed, limit=limit, **kw))


def needs_images(view: ModelView) -> bool:
    """Whether the model may read ``batch.images``: it has image fields, or fields of unknown kind
    (a model attached without kinds: load the images to be safe). Decoding a day's images costs
    more than a small model's forward, so models without image fields skip it."""
    return any(f.kind in ("image", "other") for f in view.fields.values())


def hooked_pass(view: ModelView, batches: Iterable[Batch], heads: list[str], *, layers: tuple[str, ...] | None,
                edges: dict[str, tuple[float, float]] | None, seed: int, device: torch.device,
                reference: Any = None, consumers: dict[str, Callable[[Batch], None]] | None = None,
                seconds: dict[str, float] | None = None, partial: bool = False) -> Any:  # fmt: skip
    """Neuron statistics and quality from one forward over ``batches``, streamed.

    Each batch is reduced as it passes and then dropped: memory does not grow with the number of
    batches (beyond the quality metrics' predictions). ``consumers`` (name -> ``fn(batch)``) see every
    batch too (the permutation importance, the dependence sample), so the day is read once;
    ``seconds`` (if given) receives the time spent in each consumer.

    Returns ``(NeuronSummary, Result("quality"), seen curve)``; the seen curve (position -> mean of
    the model's ``seen`` output) only for models with a ``seen`` head (PAL). ``partial=True``: the
    unfinished, mergeable :class:`PassPartial` instead (one rank's share of a sharded day).
    """
    from ctrlens.metrics import HeadAccumulator
    from ctrlens.neurons import NeuronMonitor

    # never the monitor's own cross-rank sync: a sharded day merges PassPartials (monitor/distributed.py),
    # and passes run by one rank alone (back-tests, checkpoint checks) must not wait for the others
    mon = NeuronMonitor(view, list(layers) if layers else None, edges=edges, seed=seed, reference=reference,
                        distributed=False)  # fmt: skip
    accs = {h: HeadAccumulator(h) for h in heads}
    seen_spec = view.heads.get("seen")
    pos_field = next((n for n, f in view.fields.items() if f.kind == "position"), None)
    seen_sum: dict[int, list[float]] = {}
    consumers = consumers or {}
    spent = {k: 0.0 for k in consumers}
    rows = 0
    model = view.model
    was = model.training
    model.eval()
    try:
        with mon, torch.no_grad():
            for b in batches:
                b = b.to(device) if device.type != "cpu" else b
                rows += len(b)
                # on CPU, forwards of at most CPU_FORWARD_ROWS rows: [B, L, H] activations that fit the
                # caches run ~1.5x faster per row than one 4096-row forward
                if device.type == "cpu" and len(b) > CPU_FORWARD_ROWS:
                    parts = [mon.forward(c) for c in b.split(CPU_FORWARD_ROWS)]
                    out = {k: torch.cat([o[k] for o in parts]) for k in parts[0]}
                    del parts
                else:
                    out = mon.forward(b)
                for h in heads:
                    spec = view.heads[h]
                    y, mask = spec.target(b)
                    p, p_cal = spec.predictions(out, mask)
                    users = b.user if mask is None or b.user is None else b.user[mask]
                    accs[h].add(y, p.float(), users, p_cal)
                if seen_spec is not None and pos_field and seen_spec.output in out and pos_field in b.features:
                    pos = b.features[pos_field].reshape(-1).cpu().numpy()
                    s = out[seen_spec.output].reshape(-1).float().cpu().numpy()
                    for v in np.unique(pos):
                        acc = seen_sum.setdefault(int(v), [0.0, 0.0])
                        acc[0] += float(s[pos == v].sum())
                        acc[1] += float((pos == v).sum())
                del out
                if consumers:
                    # their forwards are not watched: run them with the taps detached (no hook calls,
                    # and the attention unit may then skip padding: ~1.4x faster permutations)
                    mon.__exit__(None, None, None)
                    try:
                        for k, fn in consumers.items():
                            t0 = time.perf_counter()
                            fn(b)
                            spent[k] += time.perf_counter() - t0
                    finally:
                        mon.__enter__()
    finally:
        model.train(was)
    if seconds is not None:
        seconds.update(spent)
    part = PassPartial(mon.summary() if rows else None, accs, seen_sum, rows)
    return part if partial else part.finish()


@dataclass
class PassPartial:
    """A hooked pass over some of a day's batches, not yet finished: :meth:`merge` adds another
    share's (disjoint rows, e.g. another rank's), :meth:`finish` gives :func:`hooked_pass`'s result.
    Counts, samples and AUC / GAUC of merged shares equal one pass over all their batches; moments
    equal it up to float64 summation order."""

    summary: Any  # NeuronSummary of the share, None without rows
    accs: dict[str, Any]  # head -> ctrlens.metrics.HeadAccumulator
    seen_sum: dict[int, list[float]]  # position -> [sum of PAL's seen output, rows]
    rows: int

    def merge(self, other: "PassPartial") -> "PassPartial":
        if other.summary is not None:
            if self.summary is None:
                self.summary = other.summary
            else:
                batches = self.summary.meta.get("batches", 0) + other.summary.meta.get("batches", 0)
                self.summary = self.summary.merge(other.summary)
                self.summary.meta["batches"] = batches
        for h, a in other.accs.items():
            self.accs[h].merge(a)
        for k, (s_, n_) in other.seen_sum.items():
            acc = self.seen_sum.setdefault(k, [0.0, 0.0])
            acc[0] += s_
            acc[1] += n_
        self.rows += other.rows
        return self

    def finish(self) -> tuple[Any, Result, dict[int, float] | None]:
        """``(NeuronSummary, Result("quality"), seen curve)`` (see :func:`hooked_pass`)."""
        from ctrlens.metrics import quality_result

        if self.rows == 0 or self.summary is None:
            raise InputError("no rows to analyse")
        for st in self.summary.stats.values():  # a merge drops each share's own basis: fit the union's
            if st.pca_basis is None:
                st.fit_pca()
        quality = quality_result(self.accs.values(), meta={"rows": self.rows})
        seen = {k: v[0] / v[1] for k, v in sorted(self.seen_sum.items()) if v[1] > 0} if self.seen_sum else None
        return self.summary, quality, seen


class _Memo:
    """Replays the outputs of a model's top-level blocks whose inputs did not change.

    Permuting one field changes only what depends on it: in DIN, permuting ``user_id`` leaves the
    attention unit's query, keys and mask as they were, so its output (most of the forward's cost)
    is the same. ``record`` keeps each top-level block's inputs and output for one forward (per
    call, blocks called several times are kept per call); in ``replay``, a call whose inputs are
    equal (``torch.equal``, element by element) to the recorded ones returns the recorded output
    instead of running. Exact by construction (the same inputs give the same output); a block whose
    inputs cannot be compared (e.g. the :class:`Batch` itself) always runs.

    Blocks: the model's children, looking through ``ModuleDict`` / ``ModuleList`` containers. The
    assumption (true of the reference models, tested against the brute force): in eval mode a
    block's output depends only on its arguments and weights, not on state another block set during
    the forward. ``PermutationImportance(memo=False)`` runs every block; that is the default for
    models that are not ctrlens reference models.
    """

    def __init__(self, model: torch.nn.Module):
        self.blocks: list[torch.nn.Module] = []
        stack = list(model.children())
        while stack:
            m = stack.pop(0)
            if isinstance(m, (torch.nn.ModuleDict, torch.nn.ModuleList)):
                stack = list(m.children()) + stack
            else:
                self.blocks.append(m)
        self.mode = "record"
        self.saved: dict[tuple[int, int], tuple[Any, Any]] = {}
        self.calls = [0] * len(self.blocks)
        self.hits = 0
        #: ``(field, perm)`` of a replayed forward whose batch is the recorded one with that field's
        #: rows permuted (set by the caller): a field-wise embedding block then permutes its recorded
        #: output for that field instead of looking every field up again
        self.permuted: tuple[str, torch.Tensor] | None = None
        from ctrlens.models.blocks.embedding import FieldEmbedding

        self.fieldwise = {i for i, m in enumerate(self.blocks) if isinstance(m, FieldEmbedding)}

    def start(self, mode: str) -> None:
        """Begin a forward in ``record`` or ``replay`` mode."""
        self.mode = mode
        self.calls = [0] * len(self.blocks)
        self.permuted = None
        if mode == "record":
            self.saved = {}

    def __enter__(self) -> "_Memo":
        self._own = [m.__dict__.get("forward") for m in self.blocks]  # a forward set on the instance
        for i, m in enumerate(self.blocks):
            m.forward = self._wrap(i, m.forward)  # instance attribute: nn.Module.__call__ finds it
        return self

    def __exit__(self, *exc: Any) -> None:
        for m, own in zip(self.blocks, self._own):
            if own is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = own
        self.saved = {}

    def _wrap(self, i: int, forward: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            key = (i, self.calls[i])
            self.calls[i] += 1
            if self.mode == "replay":
                hit = self.saved.get(key)
                if i in self.fieldwise:
                    if hit is not None and self.permuted is not None:
                        out = self._permuted_embedding(self.blocks[i], hit[1], *self.permuted)
                        if out is not None:
                            self.hits += 1
                            return out
                elif hit is not None and _same((args, kwargs), hit[0]):
                    self.hits += 1
                    return _clone(hit[1])
                return forward(*args, **kwargs)
            out = forward(*args, **kwargs)
            if i in self.fieldwise and isinstance(out, dict):
                self.saved[key] = (None, _clone(out))
            elif _comparable((args, kwargs)):
                self.saved[key] = (_clone((args, kwargs)), _clone(out))
            return out

        return run


    @staticmethod
    def _permuted_embedding(block: Any, saved: dict[str, torch.Tensor], name: str, perm: torch.Tensor) -> dict | None:
        """A :class:`~ctrlens.models.blocks.embedding.FieldEmbedding`'s output with field ``name``'s
        rows permuted: each field's vectors depend on that field's values (and mask) alone, and a
        lookup, a masked lookup or a dense field's ``x * v`` of permuted rows is the permuted rows of
        the lookup (bit for bit). ``None`` (run the block) for other kinds (bags, linear dense)."""
        from ctrlens.models.blocks.embedding import module_key

        if name in block.fields:
            kind = block.kinds[name]
            if not (kind in ("sparse", "sequence", "position")
                    or (kind == "dense" and block.dense[module_key(name)].mode == "vector")):  # fmt: skip
                return None
        # the other fields' tensors as recorded, not copies: the reference models' blocks do not write
        # into their inputs (the memo runs only for them; tested against the brute force)
        return {k: v[perm] if k == name else v for k, v in saved.items()}


def _comparable(x: Any) -> bool:
    if isinstance(x, torch.Tensor) or x is None or isinstance(x, (bool, int, float, str)):
        return True
    if isinstance(x, (tuple, list)):
        return all(_comparable(v) for v in x)
    if isinstance(x, dict):
        return all(_comparable(v) for v in x.values())
    return False


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
                and bool(torch.equal(a, b)))  # fmt: skip
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _clone(x: Any) -> Any:
    # copies, so a caller writing into a block's output in place cannot change what is replayed
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, tuple):
        return tuple(_clone(v) for v in x)
    if isinstance(x, list):
        return [_clone(v) for v in x]
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


@dataclass
class _DeltaAcc:
    """Streaming moments (Chan's merge) and a bottom-k sample (by row hash) of per-row loss rises."""

    k: int
    n: float = 0.0
    mean: float = 0.0
    m2: float = 0.0
    rank: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    held: int = 0
    #: the largest rank kept by the last prune (``k`` rows held): a later row of larger rank can never
    #: enter the bottom-k, so it is not held at all (memory stays ~k rows however long the day)
    bound: Any = None

    def add(self, d: np.ndarray, rank: np.ndarray) -> None:
        nb = float(d.size)
        if nb == 0:
            return
        mb = float(d.mean())
        m2b = float(((d - mb) ** 2).sum())
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * self.n * nb / n
        self.n = n
        if self.bound is not None:
            keep = rank <= self.bound
            d, rank = d[keep], rank[keep]
        self.rank.append(rank)
        self.values.append(d)
        self.held += d.size
        if self.held > 2 * self.k:
            self._prune()

    def merge(self, other: "_DeltaAcc") -> None:
        """Add another accumulator's rows (disjoint rows: Chan's merge of the moments, the union's
        bottom-k -- the same sample as one accumulator over all rows)."""
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean += delta * other.n / n
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.n = n
        self.rank += other.rank
        self.values += other.values
        self.held += other.held
        if self.held > 2 * self.k:
            self._prune()

    def _prune(self) -> None:
        r, v = np.concatenate(self.rank), np.concatenate(self.values)
        if r.size > self.k:
            keep = np.argpartition(r, self.k - 1)[: self.k]
            r, v = r[keep], v[keep]
        if r.size >= self.k and r.size:
            self.bound = r.max()
        self.rank, self.values, self.held = [r], [v], int(r.size)

    def sample(self) -> np.ndarray:
        self._prune()
        return self.values[0] if self.values else np.zeros(0)


class PermutationImportance:
    """Permutation importance accumulated batch by batch (bounded memory, any number of rows).

    Each batch is cut into chunks of ``chunk_rows`` rows; within a chunk, one permutation of its
    rows, seeded by (``seed``, the batch's index in the day's stream, the chunk's index in the batch:
    :func:`chunk_permutation`), is applied to each field in turn (the field's values -- mask or image index with them --
    move to other rows, everything else stays). Per field and head the per-row rise of the head's
    log loss is accumulated: exact mean and standard deviation, and p50/p90 from a sample of at most
    ``quantile_rows`` rows (all rows up to that; beyond, the rows of smallest hash of their day row
    number -- a uniform sample, the same whatever the order of the batches).

    Cost: one forward per chunk, then per field only what depends on the field (:class:`_Memo`:
    a top-level block whose inputs are unchanged is not re-run), on chunks small enough for the
    CPU's caches. Rows: ``COLUMNS["saliency"]`` with ``method="permutation"`` (:meth:`frame`).

    ``stride=(start, step)``: the batches added are the stream's batches ``start, start + step, ...``
    (one rank's share of a sharded day); :meth:`merge` adds another share's accumulators.
    """

    def __init__(self, view: ModelView, heads: list[str], *, seed: int = 0, device: torch.device | str = "cpu",
                 chunk_rows: int = PERMUTATION_CHUNK, quantile_rows: int = PERMUTATION_QUANTILE_ROWS,
                 memo: bool | None = None, stride: tuple[int, int] = (0, 1)):  # fmt: skip
        if memo is None:
            # replaying blocks is exact only when a block's output depends on its arguments alone: true
            # of ctrlens' reference blocks (tested against the brute force), not of every user model
            # (DeepCTR-Torch and torchrec views route embeddings to the model through shared state)
            from ctrlens.models.base import CTRModel

            memo = isinstance(view.model, CTRModel)
        self.view, self.heads, self.device = view, list(heads), torch.device(device)
        self.chunk_rows, self.quantile_rows, self.memo = int(chunk_rows), int(quantile_rows), memo
        self.seed = seed
        self._batch, self._step = int(stride[0]), int(stride[1])  # the next batch's index in the day's stream
        self.acc: dict[tuple[str, str], _DeltaAcc] = {}
        self.rows = 0
        self.hits = 0  # block calls replayed instead of run
        self._next_row = 0

    def merge(self, other: "PermutationImportance") -> "PermutationImportance":
        """Add another share's accumulators (disjoint rows: another rank's batches of the same day)."""
        for key, a in other.acc.items():
            mine = self.acc.get(key)
            if mine is None:
                self.acc[key] = a
            else:
                mine.merge(a)
        self.rows += other.rows
        self.hits += other.hits
        return self

    def add(self, batch: Batch) -> None:
        """Accumulate the rows of ``batch`` (on any device; moved to ``device``)."""
        b = batch.to(self.device) if self.device.type != "cpu" else batch
        model = self.view.model
        was = model.training
        model.eval()
        try:
            with torch.no_grad(), (_Memo(model) if self.memo else contextlib.nullcontext()) as memo:
                for j, c in enumerate(b.split(self.chunk_rows) if len(b) > self.chunk_rows else [b]):
                    self._chunk(c, memo, chunk_permutation(len(c), self.seed, self._batch, j))
                if memo is not None:
                    self.hits += memo.hits
        finally:
            model.train(was)
        self._batch += self._step

    def _chunk(self, c: Batch, memo: Any, perm: torch.Tensor) -> None:
        n = len(c)
        if n == 0:
            return
        perm = perm.to(c.row.device if c.row is not None else self.device)
        if c.row is not None:
            key = c.row.to("cpu", torch.int64)
        else:  # no row numbers: number the rows in arrival order
            key = torch.arange(self._next_row, self._next_row + n, dtype=torch.int64)
        self._next_row += n
        self.rows += n
        if memo is not None:
            memo.start("record")
        base = _row_losses(self.view, self.view(c), c, self.heads)
        hrank = row_hash(key, self.seed).numpy()
        ranks = {h: hrank if m is None else hrank[m.cpu().numpy()] for h, (_, m) in base.items()}
        for f in self.view.fields:
            pc = _permuted(c, f, perm)
            if pc is None:
                continue
            if memo is not None:
                memo.start("replay")
                memo.permuted = (f, perm)
            cur = _row_losses(self.view, self.view(pc), pc, self.heads)
            for h in self.heads:
                d = (cur[h][0] - base[h][0]).cpu().numpy()
                acc = self.acc.get((f, h))
                if acc is None:
                    acc = self.acc[(f, h)] = _DeltaAcc(self.quantile_rows)
                acc.add(d, ranks[h])

    def frame(self) -> pd.DataFrame:
        """One row per field and head (fields in the view's order)."""
        rows = []
        for (f, h), a in self.acc.items():
            if a.n == 0:
                continue
            s = a.sample()
            rows.append({"field": f, "head": h, "method": "permutation", "rows": int(a.n), "mean": a.mean,
                         "std": math.sqrt(max(a.m2 / a.n, 0.0)), "p50": float(np.percentile(s, 50)),
                         "p90": float(np.percentile(s, 90)), "share": 0.0, "delta": float("nan")})  # fmt: skip
        frame = pd.DataFrame(rows, columns=list(COLUMNS["saliency"]))
        for h, g_ in frame.groupby("head"):
            pos = g_["mean"].clip(lower=0)
            tot = pos.sum()
            frame.loc[g_.index, "share"] = pos / tot if tot > 0 else float("nan")
        return frame


_EPS = 1e-7


def chunk_permutation(n: int, seed: int, batch: int, chunk: int) -> torch.Tensor:
    """The permutation importance's permutation of chunk ``chunk`` (``n`` rows) of the day's batch
    ``batch``: a function of these alone, so a sharded day permutes as one process does."""
    state = np.random.SeedSequence([int(seed), 7919, int(batch), int(chunk)]).generate_state(2, np.uint32)
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1])))


def _row_losses(view: ModelView, out: dict, batch: Batch, heads: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Head -> (per-row log loss ``[n]`` float64 over the rows the head is evaluated on, row mask)."""
    res = {}
    for h in heads:
        spec = view.heads[h]
        y, mask = spec.target(batch)
        p = out[spec.output].reshape(-1).double().clamp(_EPS, 1 - _EPS)
        if mask is not None:
            p = p[mask]
        y = y.double()
        res[h] = (-(y * p.log() + (1 - y) * (1 - p).log()), mask)
    return res


def permutation_importance(view: ModelView, batches: Iterable[Batch], heads: list[str], *, seed: int,
                           device: torch.device, chunk_rows: int = PERMUTATION_CHUNK) -> pd.DataFrame:  # fmt: skip
    """Per field and head: how much the head's log loss rises when the field is permuted across rows.

    ``mean`` is the mean per-row increase of the log loss (nats), ``std``/``p50``/``p90`` over rows,
    ``share`` = max(mean, 0) / the head's total. A field the model relies on scores high; a field
    whose logged values no longer belong to their rows (shuffled, stuck, all missing) scores ~0.
    Rows are permuted within chunks of ``chunk_rows`` (see :class:`PermutationImportance`).
    Rows: ``COLUMNS["saliency"]`` with ``method="permutation"``.
    """
    acc = PermutationImportance(view, heads, seed=seed, device=device, chunk_rows=chunk_rows)
    for b in batches:
        acc.add(b)
    return acc.frame()


def _permuted(b: Batch, name: str, perm: torch.Tensor) -> Batch | None:
    """``b`` with field ``name``'s values permuted across rows (its mask / image index with it)."""
    feats, masks, index = dict(b.features), dict(b.masks), dict(b.image_index)
    if name in feats:
        feats[name] = feats[name][perm]
        if name in masks:
            masks[name] = masks[name][perm]
    elif name in index:
        index[name] = index[name][perm]
    else:
        return None
    return Batch(features=feats, masks=masks, labels=b.labels, images=b.images, image_index=index, user=b.user, row=b.row)


# ------------------------------------------------------------------------------------- dependence


def _raw_codes(batch: Batch, schema: Any) -> dict[str, np.ndarray]:
    """Per input field, one value per row (see :func:`field_codes`), before renumbering."""
    out: dict[str, np.ndarray] = {}
    for f in schema.fields:
        x = batch.features.get(f.name)
        if x is None:
            continue
        if f.kind == "sequence":
            m = batch.masks.get(f.name)
            if m is None:
                continue
            n = m.sum(1)
            last = (n - 1).clamp(min=0)
            v = x.gather(1, last[:, None]).squeeze(1)
            out[f.name] = torch.where(n > 0, v, torch.zeros_like(v)).cpu().numpy()
        elif f.kind in ("sparse", "position", "dense"):
            out[f.name] = x.reshape(-1).cpu().numpy()
    return out


def field_codes(batch: Batch, schema: Any) -> dict[str, np.ndarray]:
    """Per input field, one integer code per row: sparse fields their index, sequences their most
    recent entry (0 when empty), dense fields their exact value, position its value."""
    return _renumber(_raw_codes(batch, schema))


def _renumber(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.unique(v, return_inverse=True)[1].astype(np.int64).reshape(-1) for k, v in raw.items()}


class DependenceSample:
    """The field values of the first ``max_rows`` rows of the day's stream (a seeded sample when the
    stream is shuffled), for :func:`dependence`: memory bounded whatever the day's size.

    ``stride=(start, step)`` and ``batch_rows``: the batches added are the stream's batches
    ``start, start + step, ...`` of ``batch_rows`` rows (all but the last are full), so a rank's
    share keeps exactly its rows of the stream's first ``max_rows``; :meth:`merge` puts shares back
    in stream order."""

    def __init__(self, schema: Any, max_rows: int = DEPENDENCE_ROWS, *, stride: tuple[int, int] = (0, 1),
                 batch_rows: int | None = None):  # fmt: skip
        self.schema, self.max_rows = schema, int(max_rows)
        self.parts: list[dict[str, np.ndarray]] = []
        self.offsets: list[int] = []  # each part's first row in the day's stream
        self.rows = 0
        self._batch, self._step, self._batch_rows = int(stride[0]), int(stride[1]), batch_rows

    def add(self, batch: Batch) -> None:
        # the batch's first row in the stream: known from its index when batches are full, else counted
        offset = self.rows if self._batch_rows is None else self._batch * self._batch_rows
        self._batch += self._step
        room = self.max_rows - offset
        if room <= 0:
            return
        b = batch if len(batch) <= room else batch.select(slice(0, room))
        self.parts.append(_raw_codes(b, self.schema))
        self.offsets.append(offset)
        self.rows += len(b)

    def merge(self, other: "DependenceSample") -> "DependenceSample":
        """Add another share's rows, keeping the parts in stream order."""
        parts = sorted(zip(self.offsets + other.offsets, self.parts + other.parts), key=lambda t: t[0])
        self.offsets, self.parts = [o for o, _ in parts], [p for _, p in parts]
        self.rows += other.rows
        return self

    def observations(self) -> list[dict[str, Any]]:
        """``pair`` observations (``"a~b"``, statistic ``dependence``, alert when it falls)."""
        if not self.parts:
            return []
        raw = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        deps = dependence(_renumber(raw))
        return [{"subject_kind": "pair", "subject": f"{a}~{c}", "statistic": "dependence", "value": v, "sides": "below"}
                for (a, c), v in deps.items()]  # fmt: skip


#: Largest joint code range counted with ``np.bincount`` (a dense count array: 8 bytes per code);
#: beyond it the joint values are sorted instead.
BINCOUNT_CODES = 1 << 22


def _entropy(codes: np.ndarray) -> float:
    return _entropy_of_counts(np.bincount(codes))


def _entropy_of_counts(c: np.ndarray) -> float:
    """Plug-in entropy of counts ``c`` (zeros ignored), summed in the order given."""
    c = c.astype(np.float64)
    p = c[c > 0] / c.sum()
    return float(-(p * np.log(p)).sum())


def _joint_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Counts of the distinct pairs ``(a, b)`` of two code arrays ``[n]``, in increasing order of the
    pair (as ``np.unique`` orders them): counted directly when the code range is small, else sorted."""
    nb = int(b.max()) + 1
    joint = a * nb + b
    if (int(a.max()) + 1) * nb <= BINCOUNT_CODES:
        return np.bincount(joint)  # zero counts are skipped by the entropy: the same nonzero sequence
    return np.unique(joint, return_counts=True)[1]


def dependence(codes: dict[str, np.ndarray]) -> dict[tuple[str, str], float]:
    """Normalised mutual information ``I(a; b) / min(H(a), H(b))`` of every pair of fields (plug-in,
    exact values): 1 when one field determines the other (an item and its category), near the
    estimator's bias when they are unrelated. NaN when a field is constant. A shuffled or mis-joined
    column keeps its own distribution but loses its dependence on the fields it belonged with."""
    names = sorted(codes)
    h = {k: _entropy(v) for k, v in codes.items()}
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            lo = min(h[a], h[b])
            if not lo > 1e-9:
                out[(a, b)] = float("nan")
                continue
            hab = _entropy_of_counts(_joint_counts(codes[a], codes[b]))
            out[(a, b)] = float(min(max((h[a] + h[b] - hab) / lo, 0.0), 1.0))
    return out


def dependence_observations(batches: Iterable[Batch], schema: Any) -> list[dict[str, Any]]:
    """``pair`` observations (``"a~b"``, statistic ``dependence``, alert when it falls)."""
    acc = DependenceSample(schema, max_rows=1 << 62)
    for b in batches:
        acc.add(b)
    return acc.observations()


# ------------------------------------------------------------------------------------- position


def ctr_by_position(dataset: Any, day: str) -> pd.DataFrame | None:
    """Observed impressions, clicks and CTR per position of ``day`` (``None`` without a position field).

    Streams the two columns (counts per position only), so memory does not grow with the day."""
    pos = dataset.schema.position
    if pos is None:
        return None
    # the click label, else the schema's first label (data whose label is "purchase", "income", ...)
    label = "click" if "click" in dataset.schema.labels else dataset.schema.labels[0]
    rows = np.zeros(0, np.int64)
    clicks = np.zeros(0, np.float64)
    for rb, *_ in dataset.scan(day, columns=[pos.name, label]):
        p = rb.column(pos.name).to_numpy(zero_copy_only=False)
        c = rb.column(label).to_numpy(zero_copy_only=False)
        ok = ~(pd.isna(p) | pd.isna(c))
        ok &= np.where(ok, p, 0).astype(np.float64) >= 0
        p, c = p[ok].astype(np.int64), c[ok].astype(np.float64)
        if not p.size:
            continue
        n = int(p.max()) + 1
        if n > rows.size:
            rows, clicks = np.pad(rows, (0, n - rows.size)), np.pad(clicks, (0, n - clicks.size))
        rows += np.bincount(p, minlength=rows.size)
        clicks += np.bincount(p, weights=c, minlength=clicks.size)
    present = np.nonzero(rows)[0]
    g = pd.DataFrame({"rows": rows[present], "clicks": clicks[present]}, index=pd.Index(present, name=pos.name))
    g["ctr"] = g["clicks"] / g["rows"]
    return g


def examination_slope(curve: dict[int, float] | pd.Series, weights: dict[int, float] | pd.Series | None = None) -> float:
    """Slope ``eta`` of ``-log(c(pos) / c(1)) ~ eta * log(pos)`` (least squares through the origin,
    weighted): the exponent of a power-law examination curve. NaN with fewer than two positions."""
    s = pd.Series(curve, dtype=float).sort_index()
    s = s[(s > 0) & np.isfinite(s)]
    if len(s) < 2 or s.index[0] != s.index.min():
        return float("nan")
    x = np.log(s.index.to_numpy(dtype=float))
    y = -np.log(s.to_numpy() / s.iloc[0])
    w = np.ones_like(x) if weights is None else pd.Series(weights, dtype=float).reindex(s.index).fillna(0).to_numpy()
    den = float((w * x * x).sum())
    return float((w * x * y).sum() / den) if den > 0 else float("nan")


def position_observations(dataset: Any, day: str, seen: dict[int, float] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Observed position-bias slope (every model) and, for PAL, its gap to the trained seen curve."""
    g = ctr_by_position(dataset, day)
    if g is None or g["clicks"].sum() == 0:
        return [], {}
    obs_slope = examination_slope(g["ctr"], g["clicks"])
    out = [{"subject_kind": "position", "subject": "position", "statistic": "ctr_slope", "value": obs_slope}]
    info: dict[str, Any] = {"ctr_by_position": {int(k): float(v) for k, v in g["ctr"].items()}, "ctr_slope": obs_slope}
    if seen:
        seen_slope = examination_slope(seen, g["clicks"])
        out.append({"subject_kind": "position", "subject": "position", "statistic": "seen_gap",
                    "value": obs_slope - seen_slope})  # fmt: skip
        info.update(seen_curve={int(k): float(v) for k, v in seen.items()}, seen_slope=seen_slope)
    return out, info


# ------------------------------------------------------------------------------------- the day


def preload() -> None:
    """Import what :func:`compute_day` imports on first use (probes, saliency -- captum pulls in
    matplotlib --, neuron statistics, field statistics): a fleet's parent calls it before forking its
    workers, so that they share the imported modules instead of each importing them again (~1-2 s)."""
    import importlib

    for name in ("ctrlens.data.stats", "ctrlens.metrics", "ctrlens.neurons", "ctrlens.probes", "ctrlens.saliency",
                 "pyarrow.dataset", "reference_models"):  # fmt: skip
        try:
            importlib.import_module(name)
        except ImportError:  # reference_models lives beside the package (a source checkout): optional here
            pass


def compute_day(
    view: ModelView,
    dataset: Any,
    day: str,
    watch: ModelWatch,
    *,
    batch_size: int = 4096,
    seed: int = 0,
    device: str = "cpu",
    field_edges: dict[str, list[float]] | None = None,
    neuron_edges: dict[str, tuple[float, float]] | None = None,
    version: str | None = None,
    train_day: str | None = None,
    initial: Any = None,
    progress=None,
    model_only: bool = False,
    shard: Any = None,
) -> DayResults | None:
    """All results of ``view`` on ``day`` of ``dataset`` (see the module docstring).

    Args:
        watch: the model's configuration (heads, sample sizes, saliency method, layers).
        field_edges: dense field -> histogram edges of the reference (so days compare bin by bin).
        neuron_edges: layer -> ``(lo, hi)`` histogram range of this model version's first day.
        version: the checkpoint's weights hash (kept in the probe result's meta).
        train_day: a day the checkpoint was trained on: when given (a version seen for the first
            time), the hooked pass also runs there, for the over-fitting checks.
        initial: the model before training (its step-0 checkpoint), for the embedding rows looked up
            today that training never updated (new ids the model knows nothing about).
        progress: ``progress(step_name)`` callback.
        model_only: only the checkpoint-dependent results (quality, neurons, embedding health,
            probes, saliency / importance, PAL's seen-curve gap) -- for a back-test of a new
            checkpoint on reference days (:func:`ctrlens.monitor.job.backtest`); input statistics
            are checkpoint-free and already stored for those days.
        shard: a :class:`ctrlens.monitor.distributed.Shard` (every rank calls with the same
            arguments): the streamed pass is sharded by global batch index, the sample analyses
            (field statistics, probes, saliency) are spread over the ranks, and rank 0 merges
            everything and returns the results; the other ranks return ``None``.
    """
    from ctrlens.data.stats import field_stats

    step = progress or (lambda name: None)
    dev = torch.device(device)
    rank, world = (shard.rank, shard.world) if shard is not None else (0, 1)
    own = shard.owns if shard is not None else (lambda task: True)
    fwd_rows = min(batch_size, CPU_FORWARD_ROWS) if dev.type == "cpu" else batch_size  # probes, saliency
    t: dict[str, float] = {}
    out: dict[str, Result] = {}
    obs: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"heads": [], "skipped": {}}
    local: dict[str, Any] = {}  # what this rank computed (a sharded day gathers it to rank 0)
    # under a shard, everything up to the gather is inside the try: a rank that fails still joins
    # the gather (with its failure), so no rank waits for it and rank 0 fails the day
    try:
        if view.device != dev:
            view.model.to(dev)
        heads = meta["heads"] = labelled_heads(view, watch.heads)
        images = needs_images(view)
        t0 = time.perf_counter()
        if not model_only and own("field_stats"):
            step("field statistics")
            local["field_stats"] = field_stats(dataset, day, reference_edges=field_edges)
        t["field_stats"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        step("neurons + quality")
        # histogram edges of a version's first day: the day's first forward's, as one process takes them.
        # Rank 0's first batch is the stream's first: its pass takes them itself; another rank reads
        # that batch with its share (no second read of the day) and takes them from it
        edges_first = rank > 0 and neuron_edges is None
        batches = stream_batches(dataset, day, watch.rows.neurons, batch_size=batch_size, seed=seed, images=images,
                                 rank=rank, world_size=world, first=edges_first)  # fmt: skip
        if edges_first:
            first = next(batches, None)
            neuron_edges = _first_forward_edges(view, first, watch, seed=seed, device=dev) if first is not None else None
        # one streamed pass: each batch feeds the neuron statistics, quality, permutation importance
        # and dependence sample, then is dropped (whole-day mode keeps memory flat)
        perm = PermutationImportance(view, heads, seed=seed, device=dev, stride=(rank, world)) if watch.permutation else None
        dep = DependenceSample(dataset.schema, stride=(rank, world), batch_rows=batch_size)
        # a model-only pass (back-test of a checkpoint on reference days) needs no input dependences
        consumers: dict[str, Callable[[Batch], None]] = {} if model_only else {"dependence": dep.add}
        if perm is not None:
            consumers["permutation"] = perm.add
        spent: dict[str, float] = {}
        local["pass"] = hooked_pass(view, batches, heads, layers=watch.layers, edges=neuron_edges, seed=seed, device=dev,
                                    consumers=consumers, seconds=spent, partial=True)  # fmt: skip
        local.update(perm=perm, dep=dep, spent=spent)
        t["neurons_quality"] = time.perf_counter() - t0 - sum(spent.values())

        if watch.rows.probes > 0 and own("probes"):
            t0 = time.perf_counter()
            step("probes")
            local["probe"] = _probes(view, dataset, day, heads, watch, batch_size=fwd_rows, seed=seed, version=version,
                                     meta=meta)  # fmt: skip
            t["probes"] = time.perf_counter() - t0

        if watch.rows.saliency > 0 and own("saliency"):
            t0 = time.perf_counter()
            step("saliency")
            sb = sample_batches(dataset, day, watch.rows.saliency, batch_size=fwd_rows, seed=seed + 1, images=images)
            try:
                import ctrlens.saliency as sal

                rep = sal.report(view, sb, day=day, method=watch.saliency_method, head=heads, max_rows=watch.rows.saliency,
                                 batch_size=fwd_rows, seed=seed, device=device)  # fmt: skip
                local["saliency"] = (rep.result.frame, {k: rep.meta.get(k) for k in ("method", "target", "rows", "baseline")})
            except InputError as e:
                meta["skipped"]["saliency"] = str(e)
            t["saliency"] = time.perf_counter() - t0
        local.update(skipped=meta["skipped"], seconds=t)
    except Exception as e:
        if shard is None:
            raise
        local = {"error": shard.failure(e)}
    if shard is not None:
        local = shard.merge_day(local)  # rank 0: every rank's share merged (a failure on any rank raises)
        if local is None:
            return None
        meta["skipped"], t, meta["ranks"] = local["skipped"], local["seconds"], world
    if "field_stats" in local:
        out["field_stats"] = local["field_stats"]
    perm, dep, spent = local["perm"], local["dep"], local["spent"]
    try:
        summary, quality, seen = local["pass"].finish()
    except InputError as e:
        if str(e) == "no rows to analyse":
            raise InputError(f"day {day}: no rows in the data") from None
        raise
    ns, ls = summary.to_results()
    out.update(neuron_stats=ns, layer_stats=ls, quality=quality)
    from ctrlens.neurons import embedding_health

    if view.tables:
        out["embedding_health"] = embedding_health(view, summary.seen, initial=initial)
    if local.get("probe") is not None:
        out["probe"] = local["probe"]
    frames, sal_meta = ([local["saliency"][0]], local["saliency"][1]) if "saliency" in local else ([], {})
    if perm is not None:
        t0 = time.perf_counter()
        frames.append(perm.frame())
        t["permutation"] = spent.get("permutation", 0.0) + time.perf_counter() - t0
    frames = [f for f in frames if len(f)]
    if frames:
        out["saliency"] = Result("saliency", pd.concat(frames, ignore_index=True),
                                 {**sal_meta, "day": day, "permutation": watch.permutation,
                                  "permutation_rows": perm.rows if perm is not None else 0})  # fmt: skip
    if not model_only:
        t0 = time.perf_counter()
        obs += dep.observations()
        t["dependence"] = spent.get("dependence", 0.0) + time.perf_counter() - t0

    t0 = time.perf_counter()
    p_obs, p_info = position_observations(dataset, day, seen)
    obs += [o for o in p_obs if not model_only or (o["subject_kind"], o["statistic"]) in MODEL_OBSERVATIONS]
    meta["position"] = p_info
    t["position"] = time.perf_counter() - t0

    if train_day is not None and train_day != day and not model_only:
        t0 = time.perf_counter()
        step("checkpoint checks")
        c_obs, c_info = _checkpoint_checks(view, dataset, train_day, summary, quality, heads, watch,
                                           batch_size=batch_size, seed=seed, device=dev)  # fmt: skip
        obs += c_obs
        meta["checkpoint_check"] = c_info
        t["checkpoint_check"] = time.perf_counter() - t0
    meta["seconds"] = {k: round(v, 3) for k, v in t.items()}
    return DayResults(out, obs, meta, summary)


def _first_forward_edges(view: ModelView, first: Batch, watch: ModelWatch, *, seed: int,
                         device: torch.device) -> dict[str, tuple[float, float]]:  # fmt: skip
    """The histogram edges one process takes for each layer without frozen edges: those of the
    day's first forward over ``first``, the stream's first batch (its first :data:`CPU_FORWARD_ROWS`
    rows on CPU, as :func:`hooked_pass` splits it)."""
    if device.type == "cpu" and len(first) > CPU_FORWARD_ROWS:
        first = next(iter(first.split(CPU_FORWARD_ROWS)))
    part = hooked_pass(view, [first], [], layers=watch.layers, edges=None, seed=seed, device=device, partial=True)
    return {name: (float(st.lo), float(st.hi)) for name, st in part.summary.stats.items()}


def _probes(view: ModelView, dataset: Any, day: str, heads: list[str], watch: ModelWatch, *, batch_size: int, seed: int,
            version: str | None, meta: dict[str, Any]) -> Result | None:  # fmt: skip
    from ctrlens.probes import ProbeSuite, ProbeWarning

    holdout = 0.2
    offered = int(math.ceil(watch.rows.probes / (1 - holdout)))
    batches = sample_batches(dataset, day, offered, batch_size=batch_size, seed=seed + 2,
                             images=needs_images(view))
    frames, metas = [], {}
    for h in heads:
        try:
            suite = ProbeSuite(view, list(watch.layers) if watch.layers else None, h, max_rows=watch.rows.probes,
                               holdout=holdout, seed=seed, batch_size=batch_size)  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ProbeWarning)
                suite.fit(batches, day=day)
                suite.score()
            r = suite.to_result(model_version=version)
        except InputError as e:  # e.g. a day without conversions for a CVR head: not a failure of the day
            meta["skipped"][f"probe:{h}"] = str(e)
            continue
        frames.append(r.frame)
        metas[h] = r.meta
    if not frames:
        return None
    return Result("probe", pd.concat(frames, ignore_index=True), {"heads": metas, "day": day})


def _checkpoint_checks(view: ModelView, dataset: Any, train_day: str, today_summary: Any, today_quality: Result,
                       heads: list[str], watch: ModelWatch, *, batch_size: int, seed: int,
                       device: torch.device) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """A new checkpoint against its own last training day (the founding paper's over-fitting signs):
    train-vs-test neuron fluctuation per layer and the model's train-vs-test AUC gap."""
    from ctrlens.neurons import compare

    batches = stream_batches(dataset, train_day, watch.rows.neurons, batch_size=batch_size, seed=seed,
                             images=needs_images(view))
    train_summary, train_quality, _ = hooked_pass(view, batches, heads, layers=watch.layers, edges=None, seed=seed,
                                                  device=device, reference=today_summary)  # fmt: skip
    cmp = compare(train_summary, today_summary, names=("train", "today"))
    obs: list[dict[str, Any]] = []
    info: dict[str, Any] = {"train_day": train_day, "fluctuation": {}, "auc": {}}
    for r in cmp.layers.itertuples(index=False):
        if not np.isfinite(r.fluctuation):
            continue
        info["fluctuation"][r.layer] = float(r.fluctuation)
        obs.append({"subject_kind": "checkpoint", "subject": r.layer, "statistic": "fluctuation", "value": float(r.fluctuation),
                    "sides": "above", "fixed_threshold": 1.0,
                    "why": "mean |log(test std / train std)| of the layer's neurons > 1 (a factor e)"})  # fmt: skip
    tq = today_quality.frame.set_index("head")
    for r in train_quality.frame.itertuples(index=False):
        if r.head not in tq.index:
            continue
        gap = float(r.auc - tq.loc[r.head, "auc"])
        info["auc"][r.head] = {"train": float(r.auc), "today": float(tq.loc[r.head, "auc"]),
                               "train_positives": float(r.positives), "train_rows": float(r.rows)}
        obs.append({"subject_kind": "checkpoint", "subject": r.head, "statistic": "train_test_auc_gap", "value": gap,
                    "sides": "above", "fixed_threshold": 0.1,
                    "why": "AUC on its last training day exceeds today's by more than 0.1"})  # fmt: skip
    return obs, info


# ------------------------------------------------------------------------------------- checkpoint change

#: Fixed thresholds of the checkpoint change report (old vs new checkpoint on the same rows). They are
#: physical sizes, wide enough for an ordinary retrain (a new day of data, the same recipe) and far below
#: what a broken training run produces; the AUC one is widened by its sampling noise.
CHANGE_THRESHOLDS = {
    "auc_delta": -0.02,  # new AUC - old AUC on the same rows (a regression)
    "log_mean_abs_ratio": math.log(10.0),  # a layer's mean |activation| grew tenfold (exploding scale)
    "dead_fraction_delta": 0.2,  # share of the layer's units that are newly dead
    "saturated_fraction_delta": 0.2,  # share of activations newly in saturation
    "reinit_frac": 0.05,  # looked-up rows whose vector no longer resembles the old one (cos < 0.3)
    "log_rank_ratio": math.log(0.5),  # effective rank of the looked-up rows halved (collapse)
    "excess_train_test_gap": 0.05,  # over-fitting: train-vs-test AUC gap beyond the old checkpoint's own
}
#: The excess train-vs-test gap alerts beyond this many standard errors of its sampling noise (the job's
#: default band width ``k``), and beyond ``CHANGE_THRESHOLDS["excess_train_test_gap"]`` whatever the noise.
EXCESS_GAP_Z = 4.0


def _predictions(view: ModelView, batches: list[Batch], heads: list[str], device: torch.device) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """head -> (labels ``[n]``, predicted probabilities ``[n]``) over ``batches`` (masked rows removed)."""
    from ctrlens.metrics import accumulate

    accs = accumulate(view, batches, heads, device=device, keep_rows=True)
    return {h: a.arrays()[:2] for h, a in accs.items() if a.rows}


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(q / (1 - q))


def _auc_of(y: np.ndarray, p: np.ndarray) -> float:
    from ctrlens.metrics import auc

    try:
        return float(auc(y, p))
    except Exception:  # one class only
        return float("nan")


def embedding_change(old: ModelView, new: ModelView, seen: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per embedding table, the rows looked up today (``seen``: table -> row indices) in the old and the
    new checkpoint: the share of rows whose vector no longer resembles the old one (cosine < 0.3: a row
    re-initialised or overwritten), the median row-norm ratio and the effective-rank ratio.

    Columns: ``table, rows, reinit_frac, norm_ratio, rank_ratio, cos_p10``."""
    from ctrlens.neurons.embedding import effective_rank, spectrum, table_weight

    rows = []
    for t, mod in new.tables.items():
        if t not in old.tables or t not in seen:
            continue
        idx = torch.as_tensor(np.asarray(seen[t], dtype=np.int64))
        wn, wo = table_weight(mod, t).detach().cpu().double(), table_weight(old.tables[t], t).detach().cpu().double()
        if wn.shape != wo.shape or idx.numel() < 2:
            continue
        a, b = wo[idx], wn[idx]
        na, nb = a.norm(dim=1), b.norm(dim=1)
        cos = (a * b).sum(1) / (na * nb).clamp_min(1e-12)
        ratio = nb / na.clamp_min(1e-12)
        # a row is "replaced" when its direction is no longer the old one's, or it shrank threefold; a row
        # that only grew is a rare id being learned (its old vector was still near its initial value)
        replaced = ((cos < 0.3) | (ratio < 1 / 3.0)) & (na > 1e-12)
        ra = effective_rank(spectrum(a))
        rb = effective_rank(spectrum(b))
        rows.append({"table": t, "rows": int(idx.numel()), "reinit_frac": float(replaced.double().mean()),
                     "reinit_rows": int(replaced.sum()), "norm_ratio": float(ratio.median()),
                     "rank_ratio": float(rb / ra) if ra > 0 else float("nan"), "cos_median": float(cos.median()),
                     "cos_p10": float(torch.quantile(cos, 0.1))})  # fmt: skip
    return pd.DataFrame(rows, columns=EMBEDDING_CHANGE_COLUMNS)


EMBEDDING_CHANGE_COLUMNS = ["table", "rows", "reinit_frac", "reinit_rows", "norm_ratio", "rank_ratio", "cos_median", "cos_p10"]


def bulk_unchanged(cos_median: float, norm_ratio: float) -> bool:
    """The bulk of a table's rows is as the previous checkpoint left it (median cosine >= 0.9, median
    norm ratio within 1.5x): then rows replaced are a partial overwrite, not the whole training run
    moving (a diverged or over-trained run moves every row)."""
    return bool(cos_median >= 0.9 and 1 / 1.5 <= norm_ratio <= 1.5)


def checkpoint_change(old: ModelView, new: ModelView, dataset: Any, day: str, watch: ModelWatch, *, new_summary: Any,
                      batch_size: int, seed: int, device: str = "cpu", old_train_day: str | None = None,
                      new_train_day: str | None = None, new_check: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """The **checkpoint change report**: the previous checkpoint ``old`` against the new one ``new`` on
    the *same rows* (today's seeded neuron sample, the rows of ``new_summary``).

    Per head: AUC of each (and their difference), calibration, prediction agreement (Pearson
    correlation of the logits, mean |p_new - p_old|). Per layer: mean |activation| ratio, dead and
    saturated fractions (old, new). Per embedding table: :func:`embedding_change`. Over-fitting,
    calibrated on the old checkpoint: the new checkpoint's AUC gap between its last training day
    (``new_check`` from :func:`compute_day`) and today, minus the old checkpoint's gap between *its*
    last training day ``old_train_day`` and today -- an ordinary recipe memorises as much as its
    predecessor did, an over-trained run much more.

    Returns ``(observations, info)``: observations are drift rows with fixed thresholds
    (:data:`CHANGE_THRESHOLDS`, subject kind ``checkpoint_change``); info holds every number for the
    report and the findings' evidence.
    """
    from ctrlens.monitor.drift import auc_se

    dev = torch.device(device)
    for v in (old, new):
        if v.device != dev:
            v.model.to(dev)
    heads = [h for h in labelled_heads(new, watch.heads) if h in old.heads]
    batches = sample_batches(dataset, day, watch.rows.neurons, batch_size=batch_size, seed=seed)
    obs: list[dict[str, Any]] = []
    info: dict[str, Any] = {"day": day, "rows": sum(len(b) for b in batches), "heads": {}, "layers": {}, "tables": {},
                            "overfit": {}}  # fmt: skip
    T = CHANGE_THRESHOLDS
    po, pn = _predictions(old, batches, heads, dev), _predictions(new, batches, heads, dev)
    for h in heads:
        if h not in po or h not in pn:
            continue
        y, p_old = po[h]
        _, p_new = pn[h]
        a_old, a_new = _auc_of(y, p_old), _auc_of(y, p_new)
        pos = float(y.sum())
        se = auc_se(a_old, pos, len(y) - pos)
        lo, ln = _logit(p_old), _logit(p_new)
        corr = float(np.corrcoef(lo, ln)[0, 1]) if lo.std() > 0 and ln.std() > 0 else float("nan")
        cal_o = float(p_old.sum() / pos) if pos else float("nan")
        cal_n = float(p_new.sum() / pos) if pos else float("nan")
        info["heads"][h] = {"auc_old": a_old, "auc_new": a_new, "auc_se": se, "calibration_old": cal_o,
                            "calibration_new": cal_n, "logit_corr": corr,
                            "mean_abs_dp": float(np.abs(p_new - p_old).mean())}  # fmt: skip
        # the two AUCs are paired (same rows): their difference is noisier than neither, quieter than both
        thr = min(T["auc_delta"], -1.5 * se)
        obs.append({"subject_kind": "checkpoint_change", "subject": h, "statistic": "auc_delta", "value": a_new - a_old,
                    "sides": "below", "fixed_threshold": thr, "fixed_only": True,
                    "why": f"new checkpoint's AUC minus the old one's on the same {len(y)} rows < {thr:.3g}"})  # fmt: skip
    # layers: the old checkpoint's hooked pass on the same rows
    old_summary, _, _ = hooked_pass(old, batches, [], layers=watch.layers, edges=None, seed=seed, device=dev)
    lo_, ln_ = old_summary.layers().set_index("layer"), new_summary.layers().set_index("layer")
    for la in ln_.index.intersection(lo_.index):
        o_, n_ = lo_.loc[la], ln_.loc[la]
        rec = {"activation": n_["activation"], "mean_abs_old": float(o_["mean_abs"]), "mean_abs_new": float(n_["mean_abs"]),
               "dead_old": float(o_["dead_fraction"]), "dead_new": float(n_["dead_fraction"]),
               "saturated_old": float(o_["saturated_fraction"]), "saturated_new": float(n_["saturated_fraction"])}  # fmt: skip
        info["layers"][la] = rec
        if rec["mean_abs_old"] > 0 and rec["mean_abs_new"] > 0:
            obs.append({"subject_kind": "checkpoint_change", "subject": la, "statistic": "log_mean_abs_ratio",
                        "value": math.log(rec["mean_abs_new"] / rec["mean_abs_old"]), "sides": "above",
                        "fixed_threshold": T["log_mean_abs_ratio"], "fixed_only": True,
                        "why": "the layer's mean |activation| on the same rows grew more than tenfold"})  # fmt: skip
        obs.append({"subject_kind": "checkpoint_change", "subject": la, "statistic": "dead_fraction_delta",
                    "value": rec["dead_new"] - rec["dead_old"], "sides": "above", "fixed_threshold": T["dead_fraction_delta"],
                    "fixed_only": True, "why": "share of the layer's units newly dead on the same rows"})  # fmt: skip
        if np.isfinite(rec["saturated_new"]) and np.isfinite(rec["saturated_old"]):
            obs.append({"subject_kind": "checkpoint_change", "subject": la, "statistic": "saturated_fraction_delta",
                        "value": rec["saturated_new"] - rec["saturated_old"], "sides": "above",
                        "fixed_threshold": T["saturated_fraction_delta"], "fixed_only": True,
                        "why": "share of the layer's activations newly in saturation on the same rows"})  # fmt: skip
    # embedding tables: the rows looked up today
    seen = getattr(new_summary, "seen", None) or {}
    emb = embedding_change(old, new, seen)
    for r in emb.itertuples(index=False):
        rec = {k: getattr(r, k) for k in EMBEDDING_CHANGE_COLUMNS[1:]}
        rec["bulk_unchanged"] = bulk_unchanged(r.cos_median, r.norm_ratio)
        info["tables"][r.table] = rec
        if r.reinit_rows >= 5:  # a handful of rows of a tiny table is not evidence
            obs.append({"subject_kind": "checkpoint_change", "subject": r.table, "statistic": "reinit_frac",
                        "value": r.reinit_frac, "sides": "above", "fixed_threshold": T["reinit_frac"], "fixed_only": True,
                        "why": "share of today's looked-up rows replaced (cos < 0.3 or norm shrank > 3x) vs the old checkpoint"})  # fmt: skip
        if np.isfinite(r.rank_ratio) and r.rank_ratio > 0:
            obs.append({"subject_kind": "checkpoint_change", "subject": r.table, "statistic": "log_rank_ratio",
                        "value": math.log(r.rank_ratio), "sides": "below", "fixed_threshold": T["log_rank_ratio"],
                        "fixed_only": True, "why": "effective rank of the looked-up rows halved (collapse)"})  # fmt: skip
    # over-fitting, calibrated on the old checkpoint's own train-vs-test gap
    new_auc = (new_check or {}).get("auc", {})
    if old_train_day is not None and old_train_day != day and new_auc:
        tb = sample_batches(dataset, old_train_day, watch.rows.neurons, batch_size=batch_size, seed=seed)
        pt = _predictions(old, tb, list(new_auc), dev)
        for h, v in new_auc.items():
            if h not in pt or h not in po:
                continue
            old_train_auc = _auc_of(*pt[h])
            old_gap = old_train_auc - _auc_of(*po[h])
            new_gap = float(v["train"] - v["today"])
            # the excess is a difference of two gaps measured on two different training days' rows: the
            # noise of those two AUCs adds up (today's two AUCs share their rows and nearly cancel)
            yt = pt[h][0]
            pos_n, rows_n = float(v.get("train_positives", yt.sum())), float(v.get("train_rows", len(yt)))
            se = math.hypot(auc_se(float(v["train"]), pos_n, rows_n - pos_n),
                            auc_se(old_train_auc, float(yt.sum()), float(len(yt) - yt.sum())))
            thr = max(T["excess_train_test_gap"], EXCESS_GAP_Z * se)
            info["overfit"][h] = {"new_train_day": new_train_day, "old_train_day": old_train_day, "new_gap": new_gap,
                                  "old_gap": old_gap, "threshold": thr}  # fmt: skip
            obs.append({"subject_kind": "checkpoint_change", "subject": h, "statistic": "excess_train_test_gap",
                        "value": new_gap - old_gap, "sides": "above", "fixed_threshold": thr, "fixed_only": True,
                        "why": f"(train - today AUC) of the new checkpoint minus the same gap of the old one > {thr:.3g}"})  # fmt: skip
    return obs, info


__all__ = [
    "CHANGE_THRESHOLDS",
    "preload",
    "DayResults",
    "MODEL_OBSERVATIONS",
    "checkpoint_change",
    "compute_day",
    "bulk_unchanged",
    "embedding_change",
    "ctr_by_position",
    "dependence",
    "examination_slope",
    "hooked_pass",
    "labelled_heads",
    "PermutationImportance",
    "permutation_importance",
    "position_observations",
    "sample_batches",
]
