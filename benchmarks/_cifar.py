"""Where the benchmarks find the shared CIFAR-10 copy (the same search as tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cifar_root() -> str:
    """CONVLENS_CIFAR, else cifar10-jpeg.tar.gz in CONVLENS_SHARED_DATA or a `shared/data` folder
    beside the checkout (or beside the folder holding it, for a git worktree)."""
    if os.environ.get("CONVLENS_CIFAR"):
        return os.environ["CONVLENS_CIFAR"]
    folders = [os.environ.get("CONVLENS_SHARED_DATA"), ROOT.parent / "shared" / "data",
               ROOT.parent.parent / "shared" / "data"]  # fmt: skip
    for f in folders:
        if f and (Path(f) / "cifar10-jpeg.tar.gz").is_file():
            return str(Path(f) / "cifar10-jpeg.tar.gz")
    raise SystemExit("cannot find cifar10-jpeg.tar.gz: set CONVLENS_CIFAR or CONVLENS_SHARED_DATA")
