"""How much of `convlens analyze`'s wall time goes to drawing figures, on a small CIFAR-10 run.

    python benchmarks/bench_drawing.py [--limit N] [--keep DIR]

A small run is trained once into a temporary folder (the csci611 preset at width 8, 2,000 CIFAR-10
training images, one epoch; the data from `_cifar.py`'s search), then every analysis runs on
N test images (default 1,000) twice in the same process: with `figures=False` (the numbers only)
and with figures. Printed: both wall times, the drawing time (their difference), the number of
PNGs written and the drawing share of the run with figures (target: at most 25 %); then the time
the per-filter figures `analyze` lists for later take to draw (`draw_pending`, as the report does
on its first build), and the load average.
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
    args = ap.parse_args()
    import torch

    from convlens.analyses import analyze
    from convlens.analyses.perfilter import draw_pending
    from convlens.train import train

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.keep or tmp) / "bench-drawing"
        if not (run / "checkpoints" / "last.pt").is_file():
            overrides = [f"data.root={cifar_root()}", *RECIPE]
            train(str(ROOT / "examples" / "csci611.yaml"), run, overrides=overrides, echo=lambda s: None)
        analyze(run, limit=args.limit, figures=False, echo=lambda s: None)  # warm the caches once
        t0 = time.perf_counter()
        analyze(run, limit=args.limit, figures=False, echo=lambda s: None)
        numbers = time.perf_counter() - t0
        t0 = time.perf_counter()
        analyze(run, limit=args.limit, figures=True, echo=lambda s: None)
        full = time.perf_counter() - t0
        pngs = len(list((run / "analysis").rglob("*.png")))
        t0 = time.perf_counter()
        later = len(draw_pending(run))
        pending = time.perf_counter() - t0
    drawing = max(0.0, full - numbers)
    print(f"analyze on {args.limit} CIFAR-10 test images, csci611 width 8")
    print(f"  without figures: {numbers:6.1f} s")
    print(f"  with figures:    {full:6.1f} s ({pngs} PNGs)")
    print(f"  drawing:         {drawing:6.1f} s = {100 * drawing / full:.0f} % of analyze (target <= 25 %)")
    print(f"  ratio with / without figures: {full / numbers:.2f}")
    print(f"  per-filter figures drawn when first needed (the report's first build): {later} in {pending:.1f} s")
    print(f"  load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
