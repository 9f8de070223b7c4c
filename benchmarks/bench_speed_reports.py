"""The course reports' networks with their reports' recipes: seconds per epoch on this machine.

Each network trains through `convlens.train` for one epoch on a subset of CIFAR-10's training
images (``--images``, default 5,000) with its recipe (preset, options, batch size, optimiser,
augmentation); the epoch time is scaled to the 45,000 training images of a run with a 10%
validation split. Runs whose whole recipe fits in ``--budget`` seconds at that rate (LeNet-5 on
28 x 28 grayscale usually does; the others need hours here) are then trained in full and their
test accuracy is printed; for the rest the estimated time is printed instead.

    PYTHONPATH=src python benchmarks/bench_speed_reports.py [--images 5000] [--budget 1200] [--only net4 ...]
        [--threads 1]

Net 1-3 have no example file: their recipes are written below from the CS7015 report (SGD,
lr 0.01, batch 128; Net 1 and 2 for 30 epochs without augmentation, Net 3 for 60 with the same
transforms as Net 4).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, HERE)

from _cifar import cifar_root  # noqa: E402

EX = os.path.join(ROOT, "examples")
NET4 = os.path.join(EX, "net4.yaml")
NO_AUG = ["data.augment.crop=null", "data.augment.flip=null", "data.augment.jitter=null"]

#: name -> (config file, overrides, what the report reached)
RECIPES: dict[str, tuple[str, list[str], str]] = {
    "net1": (
        NET4,
        [
            "name=net1",
            "model.preset=net1",
            "model.options={width: 18, multiplier: 2, kernel: 3, stride: 1}",
            "train.epochs=30",
            *NO_AUG,
        ],
        "67.0% after 30 epochs (CS7015)",
    ),
    "net2": (
        NET4,
        [
            "name=net2",
            "model.preset=net2",
            "model.options={width: 64, multiplier: 2, kernel: 5}",
            "train.epochs=30",
            *NO_AUG,
        ],
        "75.0% after 30 epochs (CS7015)",
    ),
    "net3": (
        NET4,
        ["name=net3", "model.preset=net3", "model.options={width: 96, dropout: 0.1}", "train.epochs=60"],
        "87.5% after 60 epochs (CS7015)",
    ),
    "net4": (NET4, [], "88.7% after 100 epochs, 8,562 s on a GPU (CS7015)"),
    "csci611": (os.path.join(EX, "csci611.yaml"), [], "83% after 50 epochs at batch 20 (CSCI-611)"),
    "lenet5-gray": (os.path.join(EX, "lenet5-gray.yaml"), [], "61.1% after 10 epochs (Rice)"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000, help="training images timed per network")
    ap.add_argument(
        "--budget", type=float, default=1200, help="train the full recipe when it fits in this many seconds"
    )
    ap.add_argument("--only", nargs="+", choices=sorted(RECIPES))
    ap.add_argument("--threads", type=int, help="train.threads (default: the configs' own, all cores)")
    ap.add_argument("--root", help="the CIFAR-10 archive (default: the shared copy, see _cifar.py)")
    args = ap.parse_args()
    args.root = args.root or cifar_root()

    from convlens.config import load_config
    from convlens.train import train

    tmp = tempfile.mkdtemp(prefix="bench-reports-")
    full_images = 45000
    rows = []
    try:
        for name, (path, sets, report) in RECIPES.items():
            if args.only and name not in args.only:
                continue
            base = [f"data.root={args.root}", *sets] + ([f"train.threads={args.threads}"] if args.threads else [])
            cfg = load_config(path, base)
            probe = base + [
                "data.val_fraction=0",
                f"data.train_subset={args.images}",
                "data.test_subset=100",
                "train.epochs=1",
                "eval.tta=none",
            ]
            run = train(path, os.path.join(tmp, f"{name}-probe"), overrides=probe, echo=lambda s: None)
            sec = run.metrics()[0]["epoch_seconds"] * full_images / args.images
            total = sec * cfg.train.epochs
            line = (
                f"{name:<12} batch {cfg.train.batch_size:>3}  {sec:>7.0f} s/epoch  "
                f"x {cfg.train.epochs:>3} epochs = {total / 3600:>5.1f} h   report: {report}"
            )
            print(line + f"   (load {os.getloadavg()[0]:.1f})", flush=True)
            acc = None
            if total <= args.budget:
                t0 = time.perf_counter()
                full = train(path, os.path.join(tmp, name), overrides=base, echo=lambda s: None)
                acc = full.eval["accuracy"]
                took = time.perf_counter() - t0
                print(f"{'':<12} full recipe: test accuracy {100 * acc:.2f}% in {took:.0f} s", flush=True)
            rows.append((name, sec, total, acc))
            shutil.rmtree(os.path.join(tmp, f"{name}-probe"), ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    skipped = [n for n, _, _, a in rows if a is None]
    if skipped:
        print(f"\nnot trained in full (over the {args.budget:.0f} s budget): {', '.join(skipped)}")


if __name__ == "__main__":
    main()
