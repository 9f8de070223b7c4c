"""Occlusion: convlens (incremental, and batched) against Captum's ``Occlusion``, per model, one process.

Every model of ``_reuse_models.py`` (flat presets, residual presets, foreign nets) in one run;
same model, images, window, stride and fill for both; Captum runs at several
``perturbations_per_eval`` and its best time counts. For the graph path the share of the
convolutions' multiply-adds that run on windows is printed: exact incremental inference cannot
beat whole images by more than its inverse. Both produce per-pixel attributions in
Captum's convention (mean drop of the target probability over the windows covering a pixel):
convlens's position map goes through :func:`convlens.explain.spread_to_pixels`, and the maximum
absolute difference is printed next to the speed ratio.

    PYTHONPATH=src python benchmarks/bench_explain_occlusion.py            # every model, random weights
    PYTHONPATH=src python benchmarks/bench_explain_occlusion.py --models csci611 --run runs/bench-csci611-small
    PYTHONPATH=src python benchmarks/bench_explain_occlusion.py --threads 1 --images 16 --batched
    OMP_WAIT_POLICY=ACTIVE PYTHONPATH=src python benchmarks/bench_explain_occlusion.py --threads 2

OpenMP's wait policy is PASSIVE unless set (see below); it applies to Captum and convlens alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Before torch starts OpenMP: on a shared machine, threads that spin at every barrier while their
# partner waits for a core stall each short operation for a scheduler time slice, which swamps
# operations of a millisecond or less (BENCHMARKS.md, explain, shows both policies). Sleeping is
# fairer to both tools; OMP_WAIT_POLICY=ACTIVE measures the spinning default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _reuse_models import MODELS, bench_model, machine  # noqa: E402


def best_of(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall-clock and best process CPU time over ``repeats`` calls, and the last result.

    On a shared machine the wall clock includes time spent waiting for a core; with one thread
    the CPU time is the work itself, so both are printed."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu, out


def _model(name: str, run: str | None, width: int | None):
    """The model and where its weights come from: a run folder's trained csci611 when given."""
    from convlens import runload
    from convlens.run import is_run

    if name == "csci611" and run and is_run(run) and (Path(run) / "checkpoints").is_dir():
        return runload.load_model(run, "last"), f"trained weights from {run}"
    options = {"width": width} if name == "csci611" and width else {}
    return bench_model(name, **options), "random init, batch-norm statistics of noise images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument(
        "--run", help="run folder with trained csci611 weights (default: random weights, see _reuse_models.py)"
    )
    ap.add_argument("--width", type=int, default=None, help="csci611 width without a run folder (preset default)")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ppe", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--chunk", type=int, default=256, help="convlens: occluded images per batch (the default)")
    ap.add_argument("--batched", action="store_true", help="also time convlens on whole occluded images")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from captum.attr import Occlusion as CaptumOcclusion

    from convlens.explain import Occlusion, spread_to_pixels
    from convlens.explain.occlusion import fill_values, positions
    from convlens.explain.occlusion_graph import GraphOcclusion
    from convlens.models.reuse import trace_fx

    x = torch.rand(args.images, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    k, s = args.window, args.stride
    n_pos = ((32 - k) // s + 1) ** 2
    print(machine())
    print(
        f"{args.images} images 3x32x32, window {k}, stride {s} ({n_pos} positions), gray fill, probability of the "
        f"predicted class, float32, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; Captum's best "
        f"perturbations_per_eval of {args.ppe} counts (best of {args.repeats})"
    )
    rows = []
    for name in args.models:
        model, _ = _model(name, args.run, args.width)
        with torch.no_grad():
            target = model(x).argmax(1)

        def prob(inp: torch.Tensor, model=model) -> torch.Tensor:
            return torch.softmax(model(inp), 1)

        captum = CaptumOcclusion(prob)
        results = {}
        for ppe in args.ppe:
            results[ppe] = best_of(
                lambda: captum.attribute(
                    x,
                    sliding_window_shapes=(3, k, k),
                    strides=(3, s, s),
                    baselines=0.5,
                    target=target,
                    perturbations_per_eval=ppe,
                ),
                args.repeats,
            )
        best = min(results, key=lambda p: results[p][1])  # CPU time: the work itself, whatever the load
        ref = results[best][2].sum(1) / 3  # Captum spreads the same value over the 3 channels of a window
        times = {}
        for label, inc in (("incremental", "auto"), ("batched", False)) if args.batched else (("incremental", "auto"),):
            occ = Occlusion(model, k, s, fill="gray", incremental=inc, chunk=args.chunk)
            wall, cpu, maps = best_of(lambda: occ.attribute(x, target), args.repeats)
            drop = occ.details["base"][torch.arange(len(x)), target].view(-1, 1, 1) - maps
            diff = (spread_to_pixels(drop, k, s, (32, 32)) - ref).abs().max().item()
            times[label] = (wall, cpu, diff, occ.details["path"])
        work = "-"
        if times["incremental"][3] == "incremental graph":
            ys = positions(32, k, s)
            engine = GraphOcclusion(model, trace_fx(model), x[:1], fill_values(model, "gray", 3), ys, ys, k)
            windows, full = engine.conv_work()
            work = f"{windows / full:.2f}"
        cap_wall, cap_cpu = min(r[0] for r in results.values()), results[best][1]
        rows.append((name, cap_wall, cap_cpu, best, times, work))
        wall, cpu, diff, path = times["incremental"]
        extra = ""
        if "batched" in times:
            extra = f"  batched cpu {times['batched'][1]:6.3f} s {cap_cpu / times['batched'][1]:4.1f}x"
        print(
            f"  {name:<16s} captum cpu {cap_cpu:6.3f} s (ppe {best:>3d}) wall {cap_wall:6.3f} s;  convlens cpu "
            f"{cpu:6.3f} s wall {wall:6.3f} s;  {cap_cpu / cpu:4.1f}x cpu {cap_wall / wall:4.1f}x wall  "
            f"[{path}; conv work on windows {work}; max |diff| {diff:.1e}]{extra}",
            flush=True,
        )
    print(f"\n({source_of(args)})")
    print("| model | Captum best cpu s (ppe) | convlens cpu s | ratio cpu | ratio wall | path | conv work on windows |")
    print("|---|---|---|---|---|---|---|")
    for name, cap_wall, cap_cpu, best, times, work in rows:
        wall, cpu, diff, path = times["incremental"]
        cells = [
            f"{cap_cpu:.3f} ({best})",
            f"{cpu:.3f}",
            f"{cap_cpu / cpu:.1f}x",
            f"{cap_wall / wall:.1f}x",
            path,
            work,
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


def source_of(args) -> str:
    trained = " (csci611: trained weights from " + args.run + ")" if args.run else ""
    return f"random weights, batch-norm statistics of noise images{trained}; max |diff| to Captum printed above"


if __name__ == "__main__":
    main()
