"""Image folders larger than memory through convlens's data path: peak RSS against the number of
images, and throughput against a plain DataLoader over the same cache file.

Makes image folders of N = 5,000 / 20,000 / 50,000 JPEGs at 128x128 (CIFAR-10 training images
from the shared archive, upscaled bicubic, quality 90; class folders without split folders, so
20% is held out as test) under a temporary folder (``--work``, default /tmp/convlens-bench-cache;
never the repository), then, each step in a fresh process so its peak resident set is its own,
everything through ``load_data`` with ``data.size: 112`` (the cache at 128 px = 112 / 0.875),
``data.cache: memmap``:

1. build: the first ``load_data``, which decodes the folder into the cache with its worker
   processes (2 here); peak RSS of the process and of its largest worker, images decoded per s;
2. train: ``load_data`` and ``batches(train, 256, shuffle=True, random_crop=True)``, the training
   loop's input (random resized crop and flip to 112 on each batch), for ``--train-batches``
   batches (the crop sets the pace; all of it on a busy CPU would take long); peak RSS, img/s;
3. eval: ``load_data`` and one whole pass of ``batches(split, 256, channels_last=True)`` over the
   train split (what ``analyze`` and ``evaluate`` read for a conv net: centre crops); peak RSS, img/s;
4. on the largest N, a plain ``torch.utils.data.DataLoader`` over a map-style dataset that
   indexes an ``np.memmap`` of the same cache file (batch 256, shuffled, 0 and 2 workers, default
   collate): one whole epoch with the centre crop and the conversion to float in the main process
   (against 3.) and ``--train-batches`` batches with ``random_resized_crop(x, 112)`` there
   (against 2.).

Peak RSS must not grow with N through convlens's path (only labels, moments and file names do,
~150 B per image); a memory map counts every page it has touched in the reader's resident set.

    PYTHONPATH=src nice python benchmarks/bench_data_cache.py [--sizes 5000,20000,50000] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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
    """``work/jpeg/train/<class>/*.jpg`` (the largest N), and for each N a folder
    ``n<N>/<class>/`` of symlinks to its first N/10 images per class."""
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
        if not (work / f"n{n}.done").is_file():
            for cls_dir in sorted((master / "train").iterdir()):
                d = root / cls_dir.name
                d.mkdir(parents=True, exist_ok=True)
                for f in sorted(cls_dir.iterdir())[: n // 10]:
                    if not (d / f.name).exists():
                        os.symlink(f, d / f.name)
            (work / f"n{n}.done").write_text("ok")
        out[n] = root
    return out


def peak_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------------------------------------
# the steps, each run in its own process


def _data(root: str):
    from convlens.config import DataConfig
    from convlens.data import load_data

    return load_data(DataConfig(name="imagefolder", root=root, size=OUT, cache="memmap", val_fraction=0.0))


def step_build(root: str, cache_dir: str) -> dict:
    t = time.perf_counter()
    data = _data(root)
    s = time.perf_counter() - t
    n = len(data.train) + len(data.test)
    return {"images": n, "seconds": s, "rss_mb": peak_mb(), "worker_rss_mb": peak_mb(resource.RUSAGE_CHILDREN)}


def _epoch(batches, crop: int, limit: int | None = None) -> tuple[int, float]:
    import torch

    from convlens.data.crops import random_resized_crop

    g = torch.Generator().manual_seed(0)
    n, t = 0, time.perf_counter()
    o = (SIDE - OUT) // 2
    for b, (x, y, *_) in enumerate(batches):
        if crop == 1:
            random_resized_crop(x, OUT, generator=g)
        elif crop == 2:  # what convlens's evaluation batches hold: the centre crop, as floats
            x[..., o : o + OUT, o : o + OUT].contiguous(memory_format=torch.channels_last).float().div_(255)
        n += len(y)
        if limit is not None and b + 1 >= limit:
            break
    return n, time.perf_counter() - t


def step_train(root: str, cache_dir: str, limit: int) -> dict:
    import torch

    from convlens.data import batches

    data = _data(root)
    g = torch.Generator().manual_seed(0)
    n, s = _epoch(batches(data.train, BATCH, shuffle=True, generator=g, random_crop=True), 0, limit)
    return {"images": n, "per_second": n / s, "rss_mb": peak_mb()}


def step_eval(root: str, cache_dir: str) -> dict:
    from convlens.data import batches

    data = _data(root)
    n, s = _epoch(batches(data.train, BATCH, channels_last=True), 0)  # as analyze reads for a conv net
    return {"images": n, "per_second": n / s, "rss_mb": peak_mb()}


def step_dataloader(root: str, cache_dir: str, crop: int, workers: int, limit: int) -> dict:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

    images = _data(root).train.images
    cache = images.source

    class Rows(Dataset):
        def __init__(self):
            self.rows = np.memmap(cache.path, np.uint8, "r", shape=(len(cache), SIDE, SIDE, cache.channels))

        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            row = int(images.rows[i])
            return torch.from_numpy(np.array(self.rows[row])).permute(2, 0, 1), int(cache.labels[row])

    loader = DataLoader(Rows(), BATCH, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0))
    n, s = _epoch(loader, crop, limit if crop == 1 else None)
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
    p.add_argument("--train-batches", type=int, default=20)
    p.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.step:
        kind, root, cache_dir, *rest = a.step
        fn = {"build": step_build, "train": step_train, "eval": step_eval, "dataloader": step_dataloader}[kind]
        os.environ["CONVLENS_CACHE"] = cache_dir
        print(json.dumps(fn(root, cache_dir, *map(int, rest))))
        return
    import torch

    sizes = sorted(int(s) for s in a.sizes.split(","))
    work = Path(a.work)
    t = time.perf_counter()
    folders = make_folders(work, sizes)
    lim = str(a.train_batches)
    print(f"folders of 128x128 JPEGs under {work} ready in {time.perf_counter() - t:.0f} s; torch {torch.__version__}")
    print(
        f"load_data(data.size={OUT}, data.cache=memmap); train: {a.train_batches} batches of {BATCH} with random_crop"
    )
    print(
        f"{'images':>7} {'build s':>8} {'img/s':>6} {'build RSS':>10} {'worker RSS':>11} "
        f"{'train img/s':>12} {'train RSS':>10} {'eval img/s':>11} {'eval RSS':>9}"
    )
    for n in sizes:
        cache_dir = str(work / f"cache-{n}")
        shutil.rmtree(cache_dir, ignore_errors=True)  # decode from scratch each run
        b = child(["build", str(folders[n]), cache_dir])
        tr = child(["train", str(folders[n]), cache_dir, lim])
        ev = child(["eval", str(folders[n]), cache_dir])
        print(
            f"{n:>7,} {b['seconds']:>8.1f} {n / b['seconds']:>6.0f} {b['rss_mb']:>8.0f}MB {b['worker_rss_mb']:>9.0f}MB "
            f"{tr['per_second']:>12.0f} {tr['rss_mb']:>8.0f}MB {ev['per_second']:>11.0f} {ev['rss_mb']:>7.0f}MB"
        )
    n = sizes[-1]
    root, cache_dir = str(folders[n]), str(work / f"cache-{n}")
    ev = child(["eval", root, cache_dir])
    tr = child(["train", root, cache_dir, lim])
    for crop, ours, what in (
        (2, ev, f"one epoch of the train split, centre crops to {OUT} as floats (convlens: batches(split))"),
        (1, tr, f"{a.train_batches} batches with random resized crop to {OUT} (convlens: random_crop=True)"),
    ):
        print(f"\n{n:,} images, batches of {BATCH}: {what}")
        rate = f"{ours['per_second']:>7.0f} img/s"
        print(f"  convlens data path (1 reader thread)      {rate}  peak RSS {ours['rss_mb']:.0f} MB")
        for workers in (0, 2):
            d = child(["dataloader", root, cache_dir, str(crop), str(workers), lim])
            rss = f"peak RSS {d['rss_mb']:.0f} MB" + (f", worker {d['worker_rss_mb']:.0f} MB" if workers else "")
            print(
                f"  DataLoader over np.memmap, {workers} workers   {d['per_second']:>7.0f} img/s  {rss}  "
                f"(convlens / DataLoader {ours['per_second'] / d['per_second']:.2f}x)"
            )


if __name__ == "__main__":
    main()
