"""Cost of neuron statistics on DIN inference, against plain inference and the obvious approach.

    .venv/bin/python benchmarks/neuron_overhead.py            # 120k rows, batch 4096, CPU (~3 min)
    .venv/bin/python benchmarks/neuron_overhead.py --quick    # 40k rows, fewer repetitions

DIN (``reference_models.build("din", schema)``, default sizes) on the synthetic world's schema,
with random batches shaped like the world's (histories of ~8 of at most 20 behaviours). Measured
in one process, variants interleaved, median of ``--reps`` repetitions:

* plain inference (``model(batch)`` under ``no_grad``);
* inference with every layer of ``view.layers`` monitored (the two attention-unit layers over the
  history positions, the MLP input, the hidden layers and the logit) -- eager and compiled
  engines, every row in the histograms or 10% of them (``hist_rate=0.1``), every history position
  or a quarter of them (``seq_rate=0.25``: estimates for the attention unit's layers);
* the obvious approach: hooks that copy every (unpadded) activation out, then numpy statistics.

Timing: process CPU seconds (``time.process_time``; wall time on a shared machine mostly measures
the run queue) with one torch thread; the variants alternate batch by batch (in a rotating order)
so a busy moment hits them alike; a variant's ratio is the median over batches of
(its time / plain time on the same batch) plus its one-off end cost (summary, or the numpy pass
of the obvious approach) over the plain run's total. Per layer group (the attention unit's
sequence taps, the embedding output, the MLP layers and logit) the table adds the CPU time spent
inside that group's hooks over the plain run's time, ``1 + hook / plain``: the share of the
overhead each group causes (the whole-model ratio is measured end to end, so it also holds what no
hook sees, such as the embedding-row bookkeeping). Peak memory is the rise of the peak RSS
(``VmHWM``, reset after set-up through ``/proc/self/clear_refs``) over the RSS after set-up, in a
fresh child process per variant. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = 1.15


def make_setup(rows: int, batch_size: int, seed: int = 0):
    import torch

    import reference_models
    from ctrlens.data.random import random_batch
    from ctrlens.synth import WorldConfig, build_schema

    cfg = WorldConfig()
    schema = build_schema(cfg)
    torch.manual_seed(seed)
    model = reference_models.build("din", schema).eval()
    batches = [random_batch(schema, min(batch_size, rows - s), seed=seed + s, mean_len=cfg.mean_hist, click_rate=0.05, row0=s)
               for s in range(0, rows, batch_size)]
    return model, batches


def plain(model, batches) -> None:
    import torch

    with torch.no_grad():
        for b in batches:
            model(b)


def monitored(model, batches, **kw):
    from ctrlens.neurons import NeuronMonitor

    return NeuronMonitor(model, **kw).run(batches)


class Naive:
    """The obvious approach: hooks copy every activation out (padding dropped), numpy afterwards."""

    def __init__(self, model, bins: int = 32):
        self.model, self.bins = model, bins
        self.view = model.lens()
        self.store: dict[str, list] = {k: [] for k in self.view.layers}
        self.labels: dict[str, list] = {k: [] for k in self.view.layers}
        self.batch = None

    def _hook(self, name, spec):
        def hook(mod, args, out):
            x = out.detach()
            click = self.batch.labels["click"]
            if x.dim() == 3:
                m = self.batch.masks[spec.tap.mask]
                x, lab = x[m], click.unsqueeze(1).expand_as(m)[m]
            else:
                x, lab = x.reshape(x.shape[0], -1), click
            self.store[name].append(x.numpy().copy())
            self.labels[name].append(lab.numpy().copy())

        return hook

    def forward(self, b) -> None:
        import torch

        hs = [spec.tap.module.register_forward_hook(self._hook(k, spec)) for k, spec in self.view.layers.items()]
        self.batch = b
        try:
            with torch.no_grad():
                self.model(b)
        finally:
            for h in hs:
                h.remove()

    def finish(self) -> dict:
        import numpy as np

        out = {}
        for k in self.store:
            x = np.concatenate(self.store[k]).astype(np.float64)
            y = np.concatenate(self.labels[k])
            lo, hi = np.quantile(x, [0.001, 0.999])
            out[k] = dict(
                mean=x.mean(0), std=x.std(0), min=x.min(0), max=x.max(0), zero=(x == 0).mean(0),
                click=x[y == 1].mean(0), noclick=x[y == 0].mean(0),
                hist=[np.histogram(x[:, j], bins=self.bins, range=(lo, hi))[0] for j in range(x.shape[1])],
            )
        return out


def naive(model, batches) -> dict:
    n = Naive(model)
    for b in batches:
        n.forward(b)
    return n.finish()


VARIANTS = {
    "eager": dict(engine="eager"),
    "eager_h10": dict(engine="eager", hist_rate=0.1),
    "compiled": dict(engine="compiled"),
    "compiled_h10": dict(engine="compiled", hist_rate=0.1),
    # a quarter of the attention unit's history positions summarised (seq_rate, documented estimates)
    "eager_h10_s25": dict(engine="eager", hist_rate=0.1, seq_rate=0.25),
    "compiled_h10_s25": dict(engine="compiled", hist_rate=0.1, seq_rate=0.25),
}
#: layer groups of DIN's view: the attention unit's masked sequence taps, the embedding output
#: (MLP input), the MLP hidden layers and the logit
GROUPS = {"attention": "attention.", "embedding": "embedding", "mlp": "mlp.", "logit": "logit."}


def group_of(layer: str) -> str:
    return next(g for g, p in GROUPS.items() if layer.startswith(p))


def _run(name: str, model, batches) -> None:
    if name == "plain":
        plain(model, batches)
    elif name == "naive":
        naive(model, batches)
    else:
        monitored(model, batches, **VARIANTS[name])


def interleaved(
    model, batches, names: list[str], rep: int
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, dict[str, float]]]:
    """Per-batch seconds of every variant, variants alternating batch by batch (so a busy moment of a
    shared machine hits them alike), each variant's one-off end cost (summary / numpy), and each
    monitored variant's CPU seconds inside the hooks of every layer group."""
    import torch

    from ctrlens.neurons import NeuronMonitor

    mons = {n: NeuronMonitor(model, **VARIANTS[n]) for n in names if n in VARIANTS}
    in_hooks: dict[str, dict[str, float]] = {n: {g: 0.0 for g in GROUPS} for n in mons}
    for n, mon in mons.items():
        inner, acc = mon._session.callback, in_hooks[n]

        def timed(ev, inner=inner, acc=acc):
            t = time.process_time()
            r = inner(ev)
            acc[group_of(ev.name)] += time.process_time() - t
            return r

        mon._session.callback = timed
    nv = Naive(model)
    per: dict[str, list[float]] = {n: [] for n in names}
    for i, b in enumerate(batches):
        k = (i + rep) % len(names)
        for n in names[k:] + names[:k]:  # rotate the order too
            t = time.process_time()
            if n == "plain":
                with torch.no_grad():
                    model(b)
            elif n == "naive":
                nv.forward(b)
            else:
                with mons[n], torch.no_grad():
                    mons[n].forward(b)
            per[n].append(time.process_time() - t)
    end: dict[str, float] = {}
    for n in names:
        t = time.process_time()
        if n == "naive":
            nv.finish()
        elif n in mons:
            mons[n].summary()
        end[n] = time.process_time() - t
    return per, end, in_hooks


def _status_kib(key: str) -> int:
    import re

    m = re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text())
    return int(m.group(1)) if m else 0


def _peak_child(name: str, rows: int, batch_size: int, threads: int, q) -> None:
    import torch

    torch.set_num_threads(threads)
    model, batches = make_setup(rows, batch_size)
    if name.startswith("compiled"):
        _run(name, model, batches[:2])  # compile (and load the kernels) before measuring
    plain(model, batches[:1])
    try:  # reset the peak RSS (VmHWM) to the current RSS: Linux >= 4.0
        Path("/proc/self/clear_refs").write_text("5")
        base, how = _status_kib("VmRSS"), "VmHWM"
    except OSError:
        base, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
    _run(name, model, batches)
    peak = _status_kib("VmHWM") if how == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q.put((peak - base) / 1024.0)  # KiB -> MiB


def peak_mb(name: str, rows: int, batch_size: int, threads: int) -> float:
    import os

    # a fixed mmap threshold makes glibc return every big tensor's memory on free, so the RSS
    # follows the live memory instead of keeping freed arenas (the child inherits the variable)
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_child, args=(name, rows, batch_size, threads, q))
    p.start()
    v = q.get()
    p.join()
    return float(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=120_000)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="40k rows, 2 repetitions, no memory children")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.reps = min(args.rows, 40_960), 2

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, batches = make_setup(args.rows, args.batch_size)
    print(f"DIN, {args.rows} rows in {len(batches)} batches of {args.batch_size}, {args.threads} thread(s); "
          f"layers: {list(model.lens().layers)} (set-up {time.perf_counter() - t0:.1f}s)", flush=True)

    # warm up: the first compiled run compiles the inductor kernels
    t = time.perf_counter()
    monitored(model, batches[:2], engine="compiled")
    monitored(model, batches[:2], engine="compiled", hist_rate=0.1)
    monitored(model, batches[:2], engine="compiled", hist_rate=0.1, seq_rate=0.25)
    compile_s = time.perf_counter() - t
    plain(model, batches[:2])
    print(f"compile + warm-up of the compiled kernels: {compile_s:.1f}s (one-off per process; cached on disk by inductor)", flush=True)

    import numpy as np

    names = ["plain", *VARIANTS, "naive"]
    ratios: dict[str, list[float]] = {n: [] for n in names}
    groups: dict[str, dict[str, list[float]]] = {n: {g: [] for g in GROUPS} for n in VARIANTS}
    plain_s: list[float] = []
    for rep in range(args.reps):
        per, end, in_hooks = interleaved(model, batches, names, rep)
        base = np.asarray(per["plain"])
        plain_s.append(float(base.sum()))
        for n in names:
            # median per-batch ratio (robust to a busy moment) + the one-off end cost over the run
            r = float(np.median(np.asarray(per[n]) / base)) + end[n] / float(base.sum())
            ratios[n].append(r)
        for n, by_group in in_hooks.items():
            for g, sec in by_group.items():
                groups[n][g].append(1.0 + sec / float(base.sum()))
        print(f"rep {rep + 1}: plain {base.sum():.2f}s; " + ", ".join(f"{n} {ratios[n][-1]:.3f}x" for n in names[1:]), flush=True)
    ratio = {n: float(np.median(v)) for n, v in ratios.items()}
    gratio = {n: {g: float(np.median(v)) for g, v in gs.items()} for n, gs in groups.items()}

    peaks: dict[str, float] = {}
    if not args.quick:
        for n in ("plain", "eager", "compiled_h10", "naive"):
            peaks[n] = peak_mb(n, args.rows, args.batch_size, args.threads)

    print()
    print(f"{'variant':<17} {'all layers':>10} {'min':>6} {'max':>6} " + " ".join(f"{g:>10}" for g in GROUPS) + f" {'peak MiB':>9}")
    for n in names:
        pk = f"{peaks[n]:9.1f}" if n in peaks else f"{'':>9}"
        gs = " ".join(f"{gratio[n][g]:10.3f}" for g in GROUPS) if n in gratio else " ".join(f"{'':>10}" for _ in GROUPS)
        print(f"{n:<17} {ratio[n]:10.3f} {min(ratios[n]):6.3f} {max(ratios[n]):6.3f} {gs} {pk}")
    print("(layer-group columns: 1 + CPU time inside that group's hooks / plain time)")
    head = "compiled_h10"
    print(f"\nall layers monitored ({head}): {ratio[head]:.3f}x plain (target {TARGET}x); compiled, every row in the "
          f"histograms {ratio['compiled']:.3f}x; eager {ratio['eager_h10']:.3f}x (hist_rate=0.1), {ratio['eager']:.3f}x "
          f"(default); a quarter of the history positions: compiled {ratio['compiled_h10_s25']:.3f}x, eager "
          f"{ratio['eager_h10_s25']:.3f}x; obvious approach {ratio['naive']:.3f}x")
    result = {
        "benchmark": "neuron_overhead",
        "model": "din",
        "rows": args.rows,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "plain_s": round(min(plain_s), 3),
        "ratios": {n: round(ratio[n], 3) for n in names if n != "plain"},
        "ratio_spread": {n: [round(min(v), 3), round(max(v), 3)] for n, v in ratios.items() if n != "plain"},
        "group_ratios": {n: {g: round(v, 3) for g, v in gs.items()} for n, gs in gratio.items()},
        "peak_mb": {n: round(v, 1) for n, v in peaks.items()},
        "compile_s": round(compile_s, 1),
        "target_ratio": TARGET,
        "met": {
            "all_layers_compiled_h10": ratio[head] <= TARGET,
            "all_layers_compiled": ratio["compiled"] <= TARGET,
            "all_layers_compiled_h10_s25": ratio["compiled_h10_s25"] <= TARGET,
            "all_layers_eager_h10_s25": ratio["eager_h10_s25"] <= TARGET,
            "all_layers_eager_h10": ratio["eager_h10"] <= TARGET,
            "all_layers_eager": ratio["eager"] <= TARGET,
            "beats_naive": ratio[head] < ratio["naive"],
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
