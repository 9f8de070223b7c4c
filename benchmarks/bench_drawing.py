"""How much of `convlens analyze`'s wall time goes to drawing figures, on a small CIFAR-10 run.

    python benchmarks/bench_drawing.py [--limit N] [--keep DIR] [--repeat R]

A small run is trained once into a temporary folder (the csci611 preset at width 8, 2,000 CIFAR-10
training images, one epoch; the data from `_cifar.py`'s search), then every analysis runs on
N test images (default 1,000) in the same process: with `figures=False` (the numbers only), then
with figures, R times in turn (default 3; the fastest of each is kept, as the machine's other work
only ever adds time; the first run with figures pays any import its drawing needs). Printed, in
wall time and in CPU time (on a shared machine the CPU time of one thread, `--threads 1`, is what
an idle core's wall time would be): each run, the fastest of each kind, the drawing time (their
difference) and its share of the run with figures (target: at most 25 %); then the time the
per-filter figures `analyze` lists for later take to draw (`draw_pending`, as the report does on
its first build), and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

from _cifar import cifar_root  # noqa: E402

RECIPE = [
    "model.options.width=8",
    "model.options.hidden=64",
    "data.train_subset=2000",
    "data.val_fraction=0.1",
    "train.epochs=1",
    "train.batch_size=128",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=1000, help="test images the analyses read")
    ap.add_argument("--keep", help="train into (and keep) this folder instead of a temporary one")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each kind; the fastest is kept")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1: CPU time is what a free core takes)")
    args = ap.parse_args()
    import torch

    from convlens.analyses import analyze
    from convlens.train import train

    try:
        from convlens.analyses.perfilter import draw_pending
    except ImportError:  # a version that draws every figure in analyze
        draw_pending = None

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.keep or tmp) / "bench-drawing"
        if not (run / "checkpoints" / "last.pt").is_file():
            overrides = [f"data.root={cifar_root()}", *RECIPE]
            train(str(ROOT / "examples" / "csci611.yaml"), run, overrides=overrides, echo=lambda s: None)
        analyze(run, limit=args.limit, figures=False, echo=lambda s: None)  # warm the caches once
        numbers, full = {"wall": [], "cpu": []}, {"wall": [], "cpu": []}
        for _ in range(max(1, args.repeat)):
            for figures, times in ((False, numbers), (True, full)):
                t0, c0 = time.perf_counter(), time.process_time()
                analyze(run, limit=args.limit, figures=figures, echo=lambda s: None)
                times["wall"].append(time.perf_counter() - t0)
                times["cpu"].append(time.process_time() - c0)
        pngs = len(list((run / "analysis").rglob("*.png")))
        t0, c0 = time.perf_counter(), time.process_time()
        later = len(draw_pending(run)) if draw_pending else 0
        pending, pending_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"analyze on {args.limit} CIFAR-10 test images, csci611 width 8, {args.threads} torch thread(s); "
        f"runs without and with figures in turn, {pngs} PNGs:"
    )
    for clock, what in (("wall", "wall time"), ("cpu", "CPU time (user+system, all threads)")):
        print(f"  {what}:")
        print(f"    without figures: {' '.join(f'{t:.2f}' for t in numbers[clock])} s")
        print(f"    with figures:    {' '.join(f'{t:.2f}' for t in full[clock])} s")
        lo, hi = min(numbers[clock]), min(full[clock])
        drawing = max(0.0, hi - lo)
        print(
            f"    fastest: {lo:.2f} s and {hi:.2f} s; drawing {drawing:.2f} s = {100 * drawing / hi:.0f} % of "
            f"analyze (target <= 25 %); ratio {hi / lo:.2f}"
        )
    print(
        f"  per-filter figures drawn when first needed (the report's first build): {later} in {pending:.2f} s "
        f"({pending_cpu:.2f} s CPU)"
    )
    print(f"  load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
