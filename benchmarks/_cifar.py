"""Where the benchmarks find the shared CIFAR-10 copy (the same search as tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shared_file(name: str) -> Path | None:
    """`name` in CONVLENS_SHARED_DATA or a `shared/data` folder beside the checkout (or beside the
    folder holding it, for a git worktree); None when none has it."""
    folders = [
        os.environ.get("CONVLENS_SHARED_DATA"),
        ROOT.parent / "shared" / "data",
        ROOT.parent.parent / "shared" / "data",
    ]
    for f in folders:
        if f and (Path(f) / name).exists():
            return Path(f) / name
    return None


def cifar_root() -> str:
    """CONVLENS_CIFAR, else cifar10-jpeg.tar.gz in the shared data folder (`shared_file`)."""
    if os.environ.get("CONVLENS_CIFAR"):
        return os.environ["CONVLENS_CIFAR"]
    found = shared_file("cifar10-jpeg.tar.gz")
    if found is None or not found.is_file():
        raise SystemExit("cannot find cifar10-jpeg.tar.gz: set CONVLENS_CIFAR or CONVLENS_SHARED_DATA")
    return str(found)


#: The trained model the dissect and explain benchmarks measure: the csci611 network at width 16
#: (conv 16-32-64 with batch norm, fc 128), 4 epochs on 25,000 CIFAR-10 training images.
BENCH_RUN = ROOT / "runs" / "bench-csci611-small"
BENCH_RECIPE = [
    "model.options.width=16",
    "model.options.hidden=128",
    "data.train_subset=25000",
    "data.val_fraction=0.1",
    "train.epochs=4",
    "train.batch_size=128",
    "train.optimizer.lr=0.1",
    "train.optimizer.weight_decay=0.0005",
]


def trained_run(train_if_missing: bool = True) -> Path | None:
    """CONVLENS_BENCH_RUN, else runs/bench-csci611-small, trained once (a few minutes) when absent."""
    if os.environ.get("CONVLENS_BENCH_RUN"):
        return Path(os.environ["CONVLENS_BENCH_RUN"])
    if (BENCH_RUN / "checkpoints" / "best.pt").is_file():
        return BENCH_RUN
    if not train_if_missing:
        return None
    from convlens.train import train

    print(f"training the benchmark model once into {BENCH_RUN} (csci611 width 16, 4 epochs, 25,000 images)")
    train(
        str(ROOT / "examples" / "csci611.yaml"),
        BENCH_RUN,
        overrides=[f"data.root={cifar_root()}", *BENCH_RECIPE],
        echo=print,
    )
    return BENCH_RUN
