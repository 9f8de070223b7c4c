"""What the data layer saves: the uint8 array cache, and augmentation on whole batches.

1. CIFAR-10 from the shared JPEG archive: the first load (decode 60,000 JPEGs in parallel and
   write the uint8 cache) against a second load (read the cache). Target: the cached load well
   under a second.
2. Augmentation of one epoch's worth of images (crop with padding 4, horizontal flip, colour
   jitter, random erasing) done by ``convlens.data.augment.Augment`` on batches of 512, against
   the same operations applied image by image, the way per-sample transform pipelines
   (``Dataset.__getitem__`` + transforms) run them. Both on float tensors in [0, 1], one process,
   interleaved, best of ``--repeats``.
3. The cache key of an image folder: every file's name, size and modification time, hashed (so
   an image rewritten in place is seen). Measured on the full CIFAR-10 JPEG tree (60,000 files)
   extracted from the archive into a temporary folder, best of ``--repeats``, and the whole cached
   load of that folder (key + reading the arrays). Target: the key well under a second.

    PYTHONPATH=src python benchmarks/bench_data.py [--images 10000] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from _cifar import cifar_root  # noqa: E402


def per_image(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The same augmentations, one image at a time (what a per-sample pipeline does)."""
    out = torch.empty_like(x)
    _, h, w = x.shape[1:]
    for i in range(len(x)):
        img = torch.nn.functional.pad(x[i], (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2,), generator=g).tolist()
        img = img[:, dy : dy + h, dx : dx + w]
        if torch.rand((), generator=g) < 0.5:
            img = img.flip(-1)
        b, c, s = (1 + (torch.rand(3, generator=g) * 2 - 1) * 0.2).tolist()
        img = (img * b).clamp(0, 1)
        gray = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
        img = ((img - gray.mean()) * c + gray.mean()).clamp(0, 1)
        gray = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
        img = ((img - gray) * s + gray).clamp(0, 1)
        if torch.rand((), generator=g) < 0.5:
            area = h * w * float(torch.empty(()).uniform_(0.02, 0.33, generator=g))
            eh = max(1, min(h, int(round(area**0.5))))
            ew = max(1, min(w, int(round(area / eh))))
            top = int(torch.randint(0, h - eh + 1, (), generator=g))
            left = int(torch.randint(0, w - ew + 1, (), generator=g))
            img = img.clone()
            img[:, top : top + eh, left : left + ew] = 0.5
        out[i] = img
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10000, help="images augmented per timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", help="the CIFAR-10 archive (default: the shared copy, see _cifar.py)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from convlens.config import DataConfig
    from convlens.data.augment import Augment
    from convlens.data.bundle import load_arrays

    root = args.root or cifar_root()
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as cache:
        os.environ["CONVLENS_CACHE"] = cache
        cfg = DataConfig(name="cifar10", root=root, download=False)
        t0 = time.perf_counter()
        a = load_arrays(cfg)
        first = time.perf_counter() - t0
        cached = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            b = load_arrays(cfg)
            cached = min(cached, time.perf_counter() - t0)
        assert (a.train_x == b.train_x).all()
    print(f"CIFAR-10 ({len(a.train_x)} train + {len(a.test_x)} test images) from {os.path.basename(root)}:")
    print(
        f"  first load (decode + write cache) {first:.1f} s; cached load {cached:.2f} s; "
        f"first / cached = {first / cached:.0f}x"
    )

    from convlens.data.images import tree_signature

    with tempfile.TemporaryDirectory(prefix="bench-data-tree-") as tmp:
        with tarfile.open(root) as tar:
            tar.extractall(tmp, filter="data")
        folder = next(p for p in Path(tmp).iterdir() if p.is_dir())
        files = sum(1 for p in folder.rglob("*") if p.is_file())
        key = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            tree_signature(folder)
            key = min(key, time.perf_counter() - t0)
        os.environ["CONVLENS_CACHE"] = os.path.join(tmp, "cache")
        cfg = DataConfig(name="imagefolder", root=str(folder), download=False)
        load_arrays(cfg)  # decode once into the cache
        cached_dir = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            load_arrays(cfg)
            cached_dir = min(cached_dir, time.perf_counter() - t0)
    print(f"cache key of the extracted folder ({files:,} files: names, sizes, modification times):")
    print(f"  {key:.2f} s = {files / key:,.0f} files/s; cached load of the folder (key + arrays) {cached_dir:.2f} s")

    n = args.images
    x = torch.from_numpy(a.train_x[:n]).permute(0, 3, 1, 2).float().div_(255)
    aug = Augment(
        DataConfig.model_validate(
            {
                "name": "cifar10",
                "augment": {
                    "crop": {"padding": 4},
                    "flip": {"p": 0.5},
                    "jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2},
                    "erase": {"p": 0.5, "value": 0.5},
                },
            }
        ).augment,
        [0.5, 0.5, 0.5],
    )
    best_b = best_p = float("inf")
    for r in range(args.repeats):
        g = torch.Generator().manual_seed(r)
        t0 = time.perf_counter()
        for i in range(0, n, 512):
            aug(x[i : i + 512], g)
        best_b = min(best_b, time.perf_counter() - t0)
        t0 = time.perf_counter()
        per_image(x[: n // 5], g)  # a fifth of the images: the loop is slow; scaled below
        best_p = min(best_p, (time.perf_counter() - t0) * 5)
    print(f"augmentation of {n} images 3x32x32 (crop 4, flip, jitter 0.2, erase p=0.5):")
    print(
        f"  batched (512 per call) {best_b:.2f} s = {n / best_b:,.0f} images/s; per image {best_p:.2f} s = "
        f"{n / best_p:,.0f} images/s; per image / batched = {best_p / best_b:.1f}x"
    )


if __name__ == "__main__":
    main()
