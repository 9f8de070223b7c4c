"""Sweep throughput and pruning on a 12-point grid of small CIFAR-10 models.

    python benchmarks/bench_sweep.py [--part speed|prune] [--quick]

1. The same grid (Net 1 widths 4/8/12 x lr 0.01/0.05 x kernel 3/5, 2,000 training images, 3
   epochs) run by ``convlens sweep`` with 1 worker (all cores to it), 2 workers (the cores split
   between them) and, for reference, 1 worker on 1 thread. Prints wall time, the 1-worker/2-worker
   ratio and CPU utilisation (CPU seconds of the sweep and its workers / (wall x cores)).
2. Pruning: the grid at 8 epochs without a pruner, then with the median and with the successive
   halving pruner. Prints the best validation accuracy each reaches and the share of the full
   grid's epochs it trained -- the pruner's saving at (or not at) the grid's best accuracy. One
   worker on one thread: trials run in grid order, so the pruner's decisions and every trial's
   numbers are the same from run to run.

Each sweep runs as its own ``convlens sweep`` process, timed from outside. Needs the shared
CIFAR-10 copy; exits with a message if it is absent. The machine is shared and noisy: read the
ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from convlens.utils import usable_cores  # noqa: E402


def find_cifar() -> Path | None:
    env = os.environ.get("CONVLENS_SHARED_DATA")
    for folder in [Path(env)] if env else [ROOT.parent / "shared" / "data", ROOT.parents[1] / "shared" / "data"]:
        if (folder / "cifar10-jpeg.tar.gz").is_file():
            return folder / "cifar10-jpeg.tar.gz"
    return None


def grid(name: str, root: Path, epochs: int, train_subset: int, pruner: dict | None = None, threads=None) -> dict:
    train = {"epochs": epochs, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}
    if threads:
        train["threads"] = threads
    spec = {
        "name": name,
        "config": {
            "data": {
                "name": "cifar10",
                "root": str(root),
                "train_subset": train_subset,
                "test_subset": 1000,
                "val_fraction": 0.2,
            },
            "model": {"preset": "net1"},
            "train": train,
        },
        "params": {
            "model.options.width": [4, 8, 12],
            "train.optimizer.lr": [0.01, 0.05],
            "model.options.kernel": [3, 5],
        },
    }
    if pruner:
        spec["pruner"] = pruner
    return spec


def run(spec: dict, tmp: Path, workers: int) -> tuple[float, float, Path]:
    """Run one sweep in its own process; returns (wall seconds, CPU seconds, sweep folder)."""
    path = tmp / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp / spec["name"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "convlens.cli", "sweep", str(path), "--workers", str(workers), "--out", str(out)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out


def summary(out: Path) -> tuple[float, int, int, int]:
    """(best validation accuracy, epochs trained in all, trials, pruned trials) of a finished sweep."""
    from convlens.sweep import build_results

    rows = build_results(out).rows
    best = max(r["best_val_acc"] for r in rows if r["best_val_acc"] is not None)
    return best, sum(r["epochs"] or 0 for r in rows), len(rows), sum(r["status"] == "pruned" for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller: 1,000 images, 2 and 5 epochs")
    ap.add_argument("--part", choices=["speed", "prune"], help="run only part 1 (speed) or part 2 (prune)")
    args = ap.parse_args()
    root = find_cifar()
    if root is None:
        print("skipped: the shared CIFAR-10 copy (cifar10-jpeg.tar.gz) was not found; set CONVLENS_SHARED_DATA")
        return 0
    subset, e_speed, e_prune = (1000, 2, 5) if args.quick else (2000, 3, 8)
    cores = usable_cores()

    from convlens.config import load_config
    from convlens.data import load_data

    load_data(load_config(grid("warm", root, 1, subset)["config"]).data)  # decode once: timed runs hit the cache
    print(
        f"12-point grid (net1 width 4/8/12 x lr 0.01/0.05 x kernel 3/5), CIFAR-10 {subset} train images "
        f"(80% train / 20% val), {cores} cores, load average {os.getloadavg()[0]:.1f} before the start"
    )
    with tempfile.TemporaryDirectory() as d:
        if args.part in (None, "speed"):
            speed(root, Path(d), e_speed, subset, cores)
        if args.part in (None, "prune"):
            prune(root, Path(d), e_prune, subset)
    return 0


def speed(root: Path, tmp: Path, epochs: int, subset: int, cores: int) -> None:
    print(f"\n1. throughput, {epochs} epochs per trial")
    walls = {}
    for label, workers, threads in [("1 worker", 1, None), ("2 workers", 2, None), ("1 worker, 1 thread", 1, 1)]:
        name = label.replace(" ", "").replace(",", "-")
        wall, cpu, out = run(grid(name, root, epochs, subset, threads=threads), tmp, workers)
        walls[label] = wall
        best, _, n, _ = summary(out)
        print(
            f"   {label:<20} {wall:7.1f} s wall  CPU utilisation {100 * cpu / (wall * cores):5.1f}%  "
            f"({n} trials, best val acc {100 * best:.2f}%)"
        )
    print(
        f"   wall-time ratio 1 worker / 2 workers: {walls['1 worker'] / walls['2 workers']:.2f}x  "
        f"(1 worker on 1 thread / 2 workers: {walls['1 worker, 1 thread'] / walls['2 workers']:.2f}x)"
    )


def prune(root: Path, tmp: Path, epochs: int, subset: int) -> None:
    print(f"\n2. pruning, {epochs} epochs per trial, 1 worker on 1 thread")
    wall, _, out = run(grid("full", root, epochs, subset, threads=1), tmp, 1)
    full_best, full_epochs, n, _ = summary(out)
    print(f"   no pruner            {wall:7.1f} s  best val acc {100 * full_best:.2f}%  {full_epochs} epochs")
    pruners = [
        ("median", {"name": "median", "startup_trials": 4, "warmup_epochs": 2}),
        ("successive halving", {"name": "halving", "min_epochs": 2, "reduction": 3}),
    ]
    for label, pruner in pruners:
        wall, _, out = run(grid(pruner["name"], root, epochs, subset, pruner=pruner, threads=1), tmp, 1)
        best, used, n, pruned = summary(out)
        verdict = "within 1 point" if 100 * (full_best - best) <= 1 else "MORE than 1 point below"
        print(
            f"   {label:<20} {wall:7.1f} s  best val acc {100 * best:.2f}% ({verdict} of the grid's best)  "
            f"{used} epochs = {used / full_epochs:.2f} of the grid's, {pruned}/{n} trials pruned"
        )


if __name__ == "__main__":
    sys.exit(main())
