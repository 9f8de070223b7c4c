"""Occlusion: convlens (batched, and incremental) against Captum's ``Occlusion``, one process.

Same model, images, window, stride and fill for both; Captum runs at several
``perturbations_per_eval`` and its best time counts. Both produce per-pixel attributions in
Captum's convention (mean drop of the target probability over the windows covering a pixel):
convlens's position map goes through :func:`convlens.explain.spread_to_pixels`, and the maximum
absolute difference is printed next to the speed ratio.

    PYTHONPATH=src python benchmarks/bench_explain_occlusion.py            # fixture weights if present
    PYTHONPATH=src python benchmarks/bench_explain_occlusion.py --threads 1 --images 16
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
from _cifar import trained_run  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run",
        help="run folder with trained csci611 weights (default: the benchmark model, "
        "see _cifar.py; random init when it is absent and the shared CIFAR-10 copy is not here)",
    )
    ap.add_argument("--width", type=int, default=None, help="csci611 width when no run folder is used (default 32)")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ppe", type=int, nargs="+", default=[1, 16, 64, 169])
    ap.add_argument("--chunk", type=int, default=256, help="convlens: occluded images per batch (the default)")
    args = ap.parse_args()
    if args.run is None:
        try:
            args.run = str(trained_run())
        except SystemExit as exc:  # no CIFAR-10 to train it on
            print(f"{exc}; using random weights")
            args.run = ""
    torch.set_num_threads(args.threads)
    from captum.attr import Occlusion as CaptumOcclusion

    from convlens import runload
    from convlens.config import load_config
    from convlens.explain import Occlusion, spread_to_pixels
    from convlens.models import build_model
    from convlens.run import is_run

    torch.manual_seed(0)
    if args.width is None and is_run(args.run) and (Path(args.run) / "checkpoints").is_dir():
        model = runload.load_model(args.run, "last")
        source = f"trained weights from {args.run}"
    else:
        width = args.width or 32
        cfg = load_config({"model": {"preset": "csci611", "options": {"width": width}}})
        model = build_model(cfg.model, (3, 32, 32), 10).eval()
        source = f"random init, width {width}"
    x = torch.rand(args.images, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = model(x).argmax(1)
    k, s = args.window, args.stride
    n_pos = ((32 - k) // s + 1) ** 2
    print(
        f"csci611 ({source}); {args.images} images 3x32x32, window {k}, stride {s} ({n_pos} positions), "
        f"gray fill, probability of the predicted class, float32, {args.threads} thread(s), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )

    def prob(inp: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(inp), 1)

    captum = CaptumOcclusion(prob)
    results = {}
    print(f"  {'':<52s} {'wall s':>8s} {'cpu s':>8s}")
    for ppe in args.ppe:
        wall, cpu, attr = best_of(
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
        results[ppe] = (wall, cpu, attr)
        print(f"  {'captum Occlusion, perturbations_per_eval=' + str(ppe):<52s} {wall:8.3f} {cpu:8.3f}")
    best_wall = min(results, key=lambda p: results[p][0])
    best_cpu = min(results, key=lambda p: results[p][1])
    ref = results[best_wall][2].sum(1) / 3  # Captum spreads the same value over the 3 channels of a window

    for name, inc in (("convlens, batched (all positions at once)", False), ("convlens, incremental", True)):
        occ = Occlusion(model, k, s, fill="gray", incremental=inc, chunk=args.chunk)
        wall, cpu, maps = best_of(lambda: occ.attribute(x, target), args.repeats)
        drop = occ.details["base"][torch.arange(len(x)), target].view(-1, 1, 1) - maps
        diff = (spread_to_pixels(drop, k, s, (32, 32)) - ref).abs().max().item()
        print(
            f"  {name:<52s} {wall:8.3f} {cpu:8.3f}   "
            f"{results[best_wall][0] / wall:5.1f}x wall (captum ppe={best_wall}), "
            f"{results[best_cpu][1] / cpu:5.1f}x cpu (ppe={best_cpu}); max |diff| {diff:.1e}"
        )


if __name__ == "__main__":
    main()
