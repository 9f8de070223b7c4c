"""The input pipeline and training on a GPU: a prepared check for a machine with CUDA.

Without a CUDA device it prints "not measured: ..." and exits 0 (``--device cpu`` runs the same
steps on the CPU, small, to check the script itself). On ``--device cuda``, each step timed:

1. a folder of ``--images`` JPEGs at 160x160 in 10 classes, generated (class-coloured noise) under
   ``--work`` (default: a temporary folder), decoded once into the memmapped uint8 cache at
   ``data.size`` / 0.875;
2. the loader alone: one shuffled epoch of ``convlens.data.batches`` with random resized crops to
   ``--size`` on the device (pinned host batches, non-blocking copies), images per second;
3. ``convlens train`` of ResNet-18 at ``--size`` px for 1 epoch, once per precision (bf16, fp16:
   autocast on CUDA, fp16 with gradient scaling): training images per second (the epoch's
   ``epoch_seconds`` in metrics.jsonl) and test accuracy;
4. ``convlens analyze --device cuda --only stats,topk`` on the test split: seconds and images/s.

    PYTHONPATH=src python benchmarks/gpu_check.py [--images 8000] [--size 128] [--batch 256]
    PYTHONPATH=src nice python benchmarks/gpu_check.py --device cpu --images 300 --size 32 --batch 32
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

SIDE = 160


def make_folder(root: Path, n: int) -> Path:
    """``root/{train,test}/c<k>/*.jpg``: 5/6 train, 1/6 test; class k tints noise with its own colour."""
    import numpy as np
    from PIL import Image

    if (root / "done").is_file():
        return root
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, (10, 3))
    for i in range(n):
        k = i % 10
        split = "test" if (i // 10) % 6 == 5 else "train"
        d = root / split / f"c{k}"
        d.mkdir(parents=True, exist_ok=True)
        noise = rng.normal(0, 40, (SIDE, SIDE, 3))
        Image.fromarray(np.clip(colours[k] + noise, 0, 255).astype(np.uint8)).save(d / f"{i:06d}.jpg", quality=90)
    (root / "done").write_text("ok")
    return root


def config(root: Path, size: int, batch: int, device: str, precision: str) -> dict:
    return {
        "name": f"gpu-check-{precision}",
        "seed": 0,
        "data": {"name": "imagefolder", "root": str(root), "size": size, "cache": "memmap", "val_fraction": 0.0},
        "model": {"preset": "resnet18"},
        "train": {
            "epochs": 1,
            "batch_size": batch,
            "device": device,
            "precision": precision,
            "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        },
    }


def loader_throughput(root: Path, size: int, batch: int, device: str) -> float:
    import torch

    from convlens.config import DataConfig
    from convlens.data import batches, load_data

    data = load_data(DataConfig(name="imagefolder", root=str(root), size=size, cache="memmap", val_fraction=0.0))
    g = torch.Generator().manual_seed(0)
    n, t = 0, time.perf_counter()
    for x, y, _ in batches(data.train, batch, shuffle=True, generator=g, device=device, random_crop=True):
        n += len(y)
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--images", type=int, default=8000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--work", default=None)
    a = p.parse_args()
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("not measured: no CUDA device here (torch.cuda.is_available() is False)")
        return
    work = Path(a.work or tempfile.mkdtemp(prefix="convlens-gpu-check-"))
    os.environ.setdefault("CONVLENS_CACHE", str(work / "cache"))
    try:
        check(a, work)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


def check(a: argparse.Namespace, work: Path) -> None:
    import torch

    from convlens.analyses.pipeline import analyze
    from convlens.train.loop import train

    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(f"device {name}; torch {torch.__version__}; {a.images:,} images, size {a.size}, batch {a.batch}")
    t = time.perf_counter()
    root = make_folder(work / "folder", a.images)
    print(f"folder of {SIDE}x{SIDE} JPEGs ready in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    rate = loader_throughput(root, a.size, a.batch, a.device)  # the first call decodes the cache
    print(f"cache built and one loader epoch in {time.perf_counter() - t:.1f} s")
    rate = loader_throughput(root, a.size, a.batch, a.device)
    print(f"loader, random resized crops on {a.device}: {rate:,.0f} img/s")
    precisions = ["bf16", "fp16"] if a.device == "cuda" else ["fp32"]
    for prec in precisions:
        run = train(config(root, a.size, a.batch, a.device, prec), work / f"run-{prec}", echo=lambda s: None)
        epoch = json.loads((run.path / "metrics.jsonl").read_text().splitlines()[-1])
        acc = json.loads((run.path / "eval.json").read_text())["accuracy"]
        per_s = run.dataset["sizes"]["train"] / epoch["epoch_seconds"]
        print(f"train resnet18 {prec}: {per_s:,.0f} img/s ({epoch['epoch_seconds']:.1f} s epoch), test acc {acc:.3f}")
    t = time.perf_counter()
    analyze(run.path, ["stats", "topk"], device=a.device, figures=False, progress=False)
    s = time.perf_counter() - t
    n = run.dataset["sizes"]["test"]
    print(f"analyze stats,topk on {a.device}: {s:.1f} s for {n:,} test images ({n / s:,.0f} img/s incl. start-up)")


if __name__ == "__main__":
    main()
