"""topk's stored winners at 224 px: memory to write them and to read one filter's figure back.

topk keeps the pictures of its winning images (at most layers x filters x k, 150 KB each at
224 px) in its ``.npz`` so that per-filter figures can be drawn later without the data. For N
winners read from a memory-mapped split of random 224x224 images (as an image cache on disk is
read), each step in a fresh process:

- whole: the winners gathered into one array and written with ``numpy.savez`` through a buffer,
  then read back whole (``np.load(...)["images"]``) to draw one filter's 20 images;
- batched: written with ``Layout.save_arrays`` a batch of 256 rows at a time (``run.npz.Rows``),
  then the 20 images read through the memory map ``run.npz.mapped`` gives (what topk and the
  figure drawing do now).

Printed: CPU model and flags, file size, seconds and peak anonymous memory (RssAnon, sampled
every 5 ms: the heap, without the pages of mapped files, which the OS may drop at any time) of
writing and of reading, for each N.

    PYTHONPATH=src python benchmarks/bench_topk_store.py [--winners 2000 8000] [--work DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_topk_scale import AnonPeak, cpu  # noqa: E402

SIDE, K = 224, 20


def split_file(work: Path, n: int) -> Path:
    import numpy as np

    path = work / f"split-{n}.u8"
    if not path.is_file():
        m = np.lib.format.open_memmap(path, "w+", np.uint8, (n, 3, SIDE, SIDE))
        rng = np.random.default_rng(0)
        for i in range(0, n, 256):
            m[i : i + 256] = rng.integers(0, 256, (min(256, n - i), 3, SIDE, SIDE), dtype=np.uint8)
        m.flush()
        del m
    return path


def step(kind: str, split: str, out: str) -> dict:
    import numpy as np

    from convlens.run.npz import mapped

    images = np.load(split, mmap_mode="r")
    used = list(range(0, len(images)))  # every image of the split won somewhere
    pick = used[:: max(1, len(used) // K)][:K]
    watch = AnonPeak()
    base = watch._now()
    t = time.perf_counter()
    with watch:
        write(kind, images, used, out)
    write_s, write_peak = time.perf_counter() - t, watch.peak - base
    path = Path(out)
    watch = AnonPeak()
    base = watch._now()
    t = time.perf_counter()
    with watch:
        if kind == "whole":
            with np.load(path) as z:
                got = z["images"][pick].astype(np.float32) / 255
        else:
            got = mapped(path, "images")[pick].astype(np.float32) / 255
    read_s, read_peak = time.perf_counter() - t, watch.peak - base
    assert got.shape == (len(pick), 3, SIDE, SIDE)
    return {
        "bytes": path.stat().st_size,
        "write_s": write_s,
        "write_peak": max(write_peak, 0),
        "read_s": read_s,
        "read_peak": max(read_peak, 0),
    }


def write(kind: str, images, used: list[int], out: str) -> None:
    import numpy as np

    from convlens.run import Layout
    from convlens.run.npz import Rows

    if kind == "whole":
        buf = io.BytesIO()
        np.savez(buf, images=np.asarray(images[used]), positions=np.asarray(used))
        Path(out).write_bytes(buf.getvalue())
        return
    batch = 256
    Layout(Path(out).parent.parent).artifact("topk").save_arrays(
        compressed=False,
        images=Rows(
            (len(used), 3, SIDE, SIDE),
            np.uint8,
            lambda: (np.asarray(images[used[i : i + batch]]) for i in range(0, len(used), batch)),
        ),
        positions=np.asarray(used),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--winners", type=int, nargs="+", default=[2000, 8000])
    p.add_argument("--work", default=None, help="a folder for the split files (default: a temporary one)")
    p.add_argument("--step", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.step:
        print(json.dumps(step(*a.step)))
        return
    print(f"CPU: {cpu()}")
    print(f"topk's winners at {SIDE}x{SIDE} px (uint8): write all N, then read {K} of them to draw one figure")
    print(
        f"{'winners':>8} {'way':>8} {'file':>9} {'write s':>8} {'write peak anon':>16} {'read s':>7} "
        f"{'read peak anon':>15}"
    )
    work = Path(a.work or tempfile.mkdtemp(prefix="convlens-bench-store-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for n in a.winners:
            split = split_file(work, n)
            for kind in ("whole", "batched"):
                out = work / kind / "analysis" / "topk.npz"
                out.parent.mkdir(parents=True, exist_ok=True)
                env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "src"))
                done = subprocess.run(
                    [sys.executable, __file__, "--step", kind, str(split), str(out)],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                )
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"{n:>8,} {kind:>8} {r['bytes'] / 2**20:>7.0f}MB {r['write_s']:>8.1f} "
                    f"{r['write_peak'] / 2**20:>14.0f}MB {r['read_s']:>7.2f} {r['read_peak'] / 2**20:>13.0f}MB",
                    flush=True,
                )
                shutil.rmtree(work / kind, ignore_errors=True)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
