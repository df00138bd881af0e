"""Cost of per-field gradient saliency on DIN, as a ratio of one plain inference pass.

Compares, on the same model (each ratio against plain inference on the same rows):

* ``inference``: ``model(batch)`` under ``torch.no_grad`` (the unit);
* ``ctrlens saliency``: |gradient| for *all* fields (``ctrlens.saliency.report``, aggregation included):
  one forward + one backward per batch (target <= 3x inference);
* ``captum per field``: captum used the obvious way -- one ``LayerGradientXActivation`` call per
  field embedding module (``multiply_by_inputs=False``: the plain layer gradient), i.e. one forward +
  backward per field;
* ``ctrlens IG (16 steps)``: Integrated Gradients, all fields, 16 steps, memory-bounded chunks.

Inference and ctrlens saliency run on all rows (200k); captum per field (``--captum-rows``, 40k)
and IG (``--ig-rows``, 20k) on the first batches, each divided by inference on those same rows,
so a CPU run ends in minutes. The benchmark also checks that ctrlens' per-field means equal
captum's per-field layer gradients.

Rows are random batches matching the synthetic world's schema (the numbers do not depend on the
values). Peak memory: growth of the process' peak RSS over its level at the start of the phase
(freed heap is returned with ``malloc_trim`` and the peak reset through ``/proc/self/clear_refs``
between phases) on CPU; ``torch.cuda.max_memory_allocated`` on CUDA.

    .venv/bin/python benchmarks/saliency_speed.py            # 200k rows
    .venv/bin/python benchmarks/saliency_speed.py --quick    # 20k rows

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctrlens.data.batch import Batch  # noqa: E402
from ctrlens.data.random import random_batch  # noqa: E402
from ctrlens.data.schema import Schema  # noqa: E402


def world_schema() -> Schema:
    from ctrlens.synth import WorldConfig, build_schema

    return build_schema(WorldConfig())


def _reset_peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    import gc

    gc.collect()
    try:  # hand freed heap back to the OS, so the phase's own peak shows (glibc)
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _rss("VmRSS")


def _rss(key: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak(device: torch.device, start: int) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    return max(0, _rss("VmHWM") - start)


def measure(name: str, fn: Callable[[], object], device: torch.device, repeat: int = 1) -> dict[str, float]:
    best = float("inf")
    peak = 0
    for _ in range(repeat):
        start = _reset_peak(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
        peak = max(peak, _peak(device, start))
    print(f"  {name:<28} {best:8.2f} s   peak +{peak / 2**20:8.1f} MiB", flush=True)
    return {"seconds": best, "peak_mib": peak / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--quick", action="store_true", help="20k rows")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--n-steps", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--captum-rows", type=int, default=40_000,
                    help="rows for the captum-per-field measurement (its ratio uses inference on the same rows)")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs for inference and ctrlens saliency")
    ap.add_argument("--ig-rows", type=int, default=20_000,
                    help="rows for the IG measurement (its ratio uses inference on the same rows)")
    ap.add_argument("--skip-ig", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    rows = 20_000 if args.quick else args.rows
    if args.quick:
        args.captum_rows, args.ig_rows = min(args.captum_rows, 8192), min(args.ig_rows, 4096)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    import reference_models
    from captum.attr import LayerGradientXActivation

    from ctrlens.saliency import report

    schema = world_schema()
    model = reference_models.build("din", schema).to(dev).eval()
    view = model.lens()
    batches = [random_batch(schema, min(args.batch_size, rows - s), seed=s, row0=s).to(dev) for s in range(0, rows, args.batch_size)]
    fields = list(view.fields)
    print(f"DIN on {rows} rows ({len(batches)} batches of {args.batch_size}), {len(fields)} fields, device {dev}, "
          f"torch threads {torch.get_num_threads()}")

    def inference() -> None:
        with torch.no_grad():
            for b in batches:
                view(b)

    def ours() -> None:
        report(view, batches, method="saliency", head="ctr", max_rows=rows, batch_size=args.batch_size, device=str(dev))

    ig_rows = min(rows, args.ig_rows)
    ig_batches = batches[: -(-ig_rows // args.batch_size)]

    def ig() -> None:
        report(view, ig_batches, method="integrated_gradients", head="ctr", max_rows=ig_rows, batch_size=args.batch_size,
               n_steps=args.n_steps, device=str(dev))

    def ig_inference() -> None:
        with torch.no_grad():
            for b in ig_batches:
                view(b)

    cap_rows = min(rows, args.captum_rows)
    cap_batches = batches[: -(-cap_rows // args.batch_size)]
    cap_rows = sum(len(b) for b in cap_batches)

    def cap_inference() -> None:
        with torch.no_grad():
            for b in cap_batches:
                view(b)

    def captum_per_field() -> dict[str, float]:
        """One LayerGradientXActivation call per field: the obvious way (one forward+backward each)."""
        totals = {f: 0.0 for f in fields}
        for b in cap_batches:
            names = list(b.features)

            def fwd(*feats: torch.Tensor, _b: Batch = b) -> torch.Tensor:
                n = feats[0].shape[0]
                bb = _b if n == len(_b) else _b.select(torch.arange(n, device=feats[0].device) % len(_b))
                bb = bb.with_features(**dict(zip(names, feats)))
                return view(bb)["ctr_logit"]

            inputs = tuple(b.features[k] for k in names)
            for f in fields:
                lg = LayerGradientXActivation(fwd, view.fields[f].tap.module, multiply_by_inputs=False)
                a = lg.attribute(inputs).detach()
                m = b.masks.get(view.fields[f].tap.mask or "")
                if m is not None:
                    a = a * m.reshape(*m.shape, *([1] * (a.dim() - 2)))
                totals[f] += float(a.flatten(1).norm(dim=1).sum())
        return totals

    with torch.no_grad():  # warm up (allocator, lazy init)
        view(batches[0])
    res = {"inference": measure("inference (no_grad)", inference, dev, repeat=args.repeat)}
    res["ctrlens_saliency"] = measure("ctrlens saliency, all fields", ours, dev, repeat=args.repeat)
    captum_out: dict[str, float] = {}
    cap_unit = measure(f"inference on the captum rows ({cap_rows})", cap_inference, dev)["seconds"]
    res["captum_per_field"] = measure(f"captum, one call per field ({len(fields)} fields, {cap_rows} rows)",
                                      lambda: captum_out.update(captum_per_field()), dev)
    ig_unit = None
    if not args.skip_ig:
        ig_unit = measure(f"inference on the IG rows ({ig_rows})", ig_inference, dev, repeat=2)["seconds"]
        res["ctrlens_ig"] = measure(f"ctrlens IG, {args.n_steps} steps ({ig_rows} rows)", ig, dev)

    # same numbers both ways (sanity): mean per-row L2 of the gradient per field
    ours_mean = report(view, cap_batches, max_rows=cap_rows, batch_size=args.batch_size, device=str(dev)).to_frame().set_index("field")["mean"]
    worst = max(abs(ours_mean[f] - captum_out[f] / cap_rows) / max(abs(ours_mean[f]), 1e-12) for f in fields)

    t0 = res["inference"]["seconds"]
    unit = {"ctrlens_ig": ig_unit or t0, "captum_per_field": cap_unit}
    ratio = {k: v["seconds"] / unit.get(k, t0) for k, v in res.items()}
    print()
    for k, r in ratio.items():
        print(f"  {k:<22} {r:6.2f}x inference")
    print(f"  captum per field / ctrlens saliency: {ratio['captum_per_field'] / ratio['ctrlens_saliency']:.2f}x")
    print(f"  max relative difference of per-field means, ctrlens vs captum per field: {worst:.2e}")
    out = {
        "benchmark": "saliency_speed",
        "model": "din",
        "rows": rows,
        "batch_size": args.batch_size,
        "device": str(dev),
        "fields": len(fields),
        "seconds": {k: round(v["seconds"], 3) for k, v in res.items()},
        "peak_mib": {k: round(v["peak_mib"], 1) for k, v in res.items()},
        "ratio_vs_inference": {k: round(v, 2) for k, v in ratio.items()},
        "speedup_vs_captum_per_field": round(ratio["captum_per_field"] / ratio["ctrlens_saliency"], 2),
        "captum_rows": cap_rows,
        "max_rel_diff_vs_captum": float(worst),
        "targets": {"saliency_ratio_max": 3.0},
        "met": {"saliency_ratio": bool(ratio["ctrlens_saliency"] <= 3.0), "matches_captum": bool(worst < 1e-3)},
    }
    if "ctrlens_ig" in ratio:
        out["ig"] = {"steps": args.n_steps, "rows": ig_rows, "inference_seconds_same_rows": round(ig_unit or 0, 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
