"""Image folders larger than memory: peak RSS against the number of images, and read throughput.

Makes image folders of N = 5,000 / 20,000 / 50,000 JPEGs at 128x128 (CIFAR-10 training images
from the shared archive, upscaled bicubic, quality 90) under a temporary folder (``--work``,
default /tmp/convlens-bench-cache; never the repository), then, each step in a fresh process so
its peak resident set is its own:

1. build: ``ImageCache.build(folder, "train", 128)`` with 2 decoding workers; peak RSS of the
   building process and of its largest worker, and images decoded per second;
2. epoch: one shuffled epoch of ``cache.batches(256)``; peak RSS and images per second;
3. on the largest N, the same epoch read by a plain ``torch.utils.data.DataLoader`` over a
   map-style dataset that indexes an ``np.memmap`` of the same cache file (batch 256, shuffled,
   0 and 2 workers, default collate); peak RSS (the main process; with workers, the largest
   worker) and images per second, reading only and with ``random_resized_crop(x, 112)`` in the
   main process.

Peak RSS must not grow with N for the cache (only labels and file names do, ~100 B per image);
a memory map counts every page it has touched in the reader's resident set.

    PYTHONPATH=src nice python benchmarks/bench_data_cache.py [--sizes 5000,20000,50000] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

SIDE, OUT, BATCH = 128, 112, 256


def make_folders(work: Path, sizes: list[int]) -> dict[int, Path]:
    """``work/jpeg/train/<class>/*.jpg`` (the largest N), and for each N a folder of symlinks to
    its first N/10 images per class."""
    from PIL import Image

    from _cifar import cifar_root

    top = max(sizes)
    master = work / "jpeg"
    done = master / f"done-{top}"
    if not done.is_file():
        per_class: dict[str, int] = {}
        with tarfile.open(cifar_root()) as tar:
            for m in tar:
                parts = Path(m.name).parts
                if not m.isfile() or "train" not in parts or not m.name.endswith(".jpg"):
                    continue
                cls = parts[-2]
                if per_class.get(cls, 0) >= top // 10:
                    continue
                d = master / "train" / cls
                d.mkdir(parents=True, exist_ok=True)
                with Image.open(tar.extractfile(m)) as im:
                    im.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BICUBIC).save(
                        d / f"{per_class.get(cls, 0):05d}.jpg", quality=90
                    )
                per_class[cls] = per_class.get(cls, 0) + 1
        done.write_text("ok")
    out = {}
    for n in sizes:
        root = work / f"n{n}"
        if not (root / "done").is_file():
            for cls_dir in sorted((master / "train").iterdir()):
                d = root / "train" / cls_dir.name
                d.mkdir(parents=True, exist_ok=True)
                for f in sorted(cls_dir.iterdir())[: n // 10]:
                    if not (d / f.name).exists():
                        os.symlink(f, d / f.name)
            (root / "done").write_text("ok")
        out[n] = root
    return out


def peak_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------------------------------------
# the steps, each run in its own process


def step_build(root: str, cache_dir: str) -> dict:
    from convlens.data.imagecache import ImageCache

    t = time.perf_counter()
    cache = ImageCache.build(root, "train", SIDE, cache_dir, workers=2)
    s = time.perf_counter() - t
    return {"images": len(cache), "seconds": s, "rss_mb": peak_mb(), "worker_rss_mb": peak_mb(resource.RUSAGE_CHILDREN)}


def _epoch(batches, crop: int) -> tuple[int, float]:
    import torch

    from convlens.data.crops import random_resized_crop

    g = torch.Generator().manual_seed(0)
    n, t = 0, time.perf_counter()
    for x, y in batches:
        if crop:
            random_resized_crop(x, OUT, generator=g)
        n += len(y)
    return n, time.perf_counter() - t


def step_epoch(root: str, cache_dir: str, crop: int) -> dict:
    from convlens.data.imagecache import ImageCache

    cache = ImageCache.build(root, "train", SIDE, cache_dir)
    n, s = _epoch(cache.batches(BATCH, shuffle=True), crop)
    return {"images": n, "per_second": n / s, "rss_mb": peak_mb()}


def step_dataloader(root: str, cache_dir: str, crop: int, workers: int) -> dict:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

    from convlens.data.imagecache import ImageCache

    cache = ImageCache.build(root, "train", SIDE, cache_dir)

    class Rows(Dataset):
        def __init__(self):
            self.rows = np.memmap(cache.path, np.uint8, "r", shape=(len(cache), SIDE, SIDE, cache.channels))

        def __len__(self):
            return len(cache)

        def __getitem__(self, i):
            return torch.from_numpy(np.array(self.rows[i])).permute(2, 0, 1), int(cache.labels[i])

    loader = DataLoader(Rows(), BATCH, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0))
    n, s = _epoch(loader, crop)
    return {"images": n, "per_second": n / s, "rss_mb": peak_mb(), "worker_rss_mb": peak_mb(resource.RUSAGE_CHILDREN)}


def child(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--step", *args], check=True, capture_output=True, text=True, env=os.environ
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="5000,20000,50000")
    p.add_argument("--work", default="/tmp/convlens-bench-cache")
    p.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.step:
        kind, root, cache_dir, *rest = a.step
        fn = {"build": step_build, "epoch": step_epoch, "dataloader": step_dataloader}[kind]
        print(json.dumps(fn(root, cache_dir, *map(int, rest))))
        return
    import torch

    sizes = sorted(int(s) for s in a.sizes.split(","))
    work = Path(a.work)
    t = time.perf_counter()
    folders = make_folders(work, sizes)
    print(f"folders of 128x128 JPEGs under {work} ready in {time.perf_counter() - t:.0f} s; torch {torch.__version__}")
    print(
        f"{'images':>7} {'build s':>8} {'img/s':>7} {'build RSS':>10} {'worker RSS':>11} "
        f"{'epoch img/s':>12} {'epoch RSS':>10}"
    )
    for n in sizes:
        cache_dir = str(work / f"cache-{n}")
        for f in Path(cache_dir).glob("*"):
            f.unlink()  # decode from scratch each run
        b = child(["build", str(folders[n]), cache_dir])
        e = child(["epoch", str(folders[n]), cache_dir, "0"])
        print(
            f"{n:>7,} {b['seconds']:>8.1f} {n / b['seconds']:>7.0f} {b['rss_mb']:>8.0f}MB {b['worker_rss_mb']:>9.0f}MB "
            f"{e['per_second']:>12.0f} {e['rss_mb']:>8.0f}MB"
        )
    n = sizes[-1]
    cache_dir = str(work / f"cache-{n}")
    for crop in (0, 1):
        what = f"random resized crop to {OUT}" if crop else "reading only"
        print(f"\none shuffled epoch of {n:,} images, batches of {BATCH}, {what}:")
        ours = child(["epoch", str(folders[n]), cache_dir, str(crop)])
        print(
            f"  ImageCache.batches (1 reader thread)    {ours['per_second']:>7.0f} img/s  "
            f"peak RSS {ours['rss_mb']:.0f} MB"
        )
        for workers in (0, 2):
            d = child(["dataloader", str(folders[n]), cache_dir, str(crop), str(workers)])
            rss = f"peak RSS {d['rss_mb']:.0f} MB" + (f", worker {d['worker_rss_mb']:.0f} MB" if workers else "")
            print(
                f"  DataLoader over np.memmap, {workers} workers {d['per_second']:>7.0f} img/s  {rss}  "
                f"(cache / DataLoader {ours['per_second'] / d['per_second']:.2f}x)"
            )


if __name__ == "__main__":
    main()
