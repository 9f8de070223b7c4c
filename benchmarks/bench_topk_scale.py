"""Top-k at 224 px: its throughput against plain inference on the same batches, and its memory
against the number of images.

A ResNet-18 (random weights: the cost does not depend on them) reads a split of N random
224x224 images held in a memory-mapped file, as an image cache on disk is read. For N and 4N, each
in a fresh process: one plain inference pass over the split (eval mode, no gradients, channels-last
batches, as the analyses feed them) and one streaming top-k pass over the default layers (the
output of each stage) with k=20, interleaved and repeated, the best of each kept (the machine is
shared). Printed: images per second of both, their ratio (target: top-k at least 0.8x inference),
the same ratio in CPU time (the process' seconds on a core, which other jobs on a shared machine
disturb far less than the wall clock),
the process' peak RSS, its peak anonymous memory (sampled every 5 ms: the heap, without the pages
of the mapped image file, which the OS may drop at any time) and the bytes of top-k's running
state (layers x filters x k scores, positions and argmax locations), which must not grow with N.

    PYTHONPATH=src nice -n 5 python benchmarks/bench_topk_scale.py [--images 32] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import FLAGS, cpu_model_and_flags  # noqa: E402

SIDE = 224


def cpu() -> str:
    """The CPU model and the vector extensions that decide the kernels' speed."""
    model, flags = cpu_model_and_flags()
    return f"{model}; {os.cpu_count()} logical CPUs; flags: {' '.join(flags) or 'none of ' + ' '.join(FLAGS)}"


class AnonPeak:
    """The largest RssAnon of this process, sampled on a thread (ru_maxrss counts mapped file pages too)."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _now(self) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._now())

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def images_file(folder: Path, n: int):
    """N random uint8 images (N, 3, 224, 224) in a memory-mapped file, written in chunks."""
    import numpy as np

    path = folder / f"images-{n}.u8"
    data = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 3, SIDE, SIDE))
    rng = np.random.default_rng(0)
    for i in range(0, n, 64):
        data[i : i + 64] = rng.integers(0, 256, data[i : i + 64].shape, dtype=np.uint8)
    data.flush()
    del data
    return np.load(path, mmap_mode="c")  # copy-on-write: torch may wrap it; nothing writes


def measure(n: int, batch_size: int, repeats: int, k: int) -> dict:
    """One process' measurements for N images (see the module's docstring)."""
    import numpy as np
    import torch

    from convlens.analyses import Subject, TopK, inference
    from convlens.config import ModelConfig
    from convlens.data import batches
    from convlens.data.bundle import Split
    from convlens.models.builder import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="resnet18"), (3, SIDE, SIDE), 10)
    with tempfile.TemporaryDirectory() as tmp, AnonPeak() as anon:
        mapped = images_file(Path(tmp), n)
        split = Split(torch.from_numpy(mapped), torch.arange(n) % 10, torch.arange(n))
        subject = Subject(model, split, [str(c) for c in range(10)], batch_size=batch_size, progress=False)
        best = {"plain": float("inf"), "topk": float("inf"), "plain_cpu": float("inf"), "topk_cpu": float("inf")}
        state = 0
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            with inference(model):
                for x, _, _ in batches(split, batch_size, channels_last=True):
                    model(x)
            best["plain"] = min(best["plain"], time.perf_counter() - t0)
            best["plain_cpu"] = min(best["plain_cpu"], time.process_time() - c0)
            topk = TopK(k=k)
            t0, c0 = time.perf_counter(), time.process_time()
            result = topk(subject)
            best["topk"] = min(best["topk"], time.perf_counter() - t0)
            best["topk_cpu"] = min(best["topk_cpu"], time.process_time() - c0)
            state = sum(
                t.numel() * t.element_size()
                for r in topk._running.values()
                for t in vars(r).values()
                if torch.is_tensor(t)
            )
            layers = list(result["layers"])
            filters = sum(info["channels"] for info in result["layers"].values())
        del split, subject, mapped
    return {
        "images": n,
        "plain": n / best["plain"],
        "topk": n / best["topk"],
        "cpu_ratio": best["plain_cpu"] / best["topk_cpu"],
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "anon_mb": anon.peak / 2**20,
        "state_kb": state / 1024,
        "layers": layers,
        "filters": filters,
        "threads": torch.get_num_threads(),
        "bytes_per_image": int(np.prod((3, SIDE, SIDE))),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32, help="N: the smaller split (the larger is 4N)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.batch_size, args.repeats, args.k)))
        return 0
    print(f"CPU: {cpu()}")
    rows = []
    for n in (args.images, 4 * args.images):
        cmd = [sys.executable, __file__, "--child", str(n), "--batch-size", str(args.batch_size)]
        cmd += ["--repeats", str(args.repeats), "--k", str(args.k)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    first = rows[0]
    layers = f"{len(first['layers'])} layers ({', '.join(first['layers'])}; {first['filters']} filters)"
    print(
        f"ResNet-18, {SIDE}x{SIDE} px, batch {args.batch_size}, {first['threads']} threads; "
        f"top-k k={args.k} over {layers}; best of {args.repeats}"
    )
    head = ["images", "inference img/s", "top-k img/s", "ratio", "CPU-time ratio", "peak RSS", "peak anon"]
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (7, 16, 12, 6, 15, 9, 10))) + "  top-k state")
    for r in rows:
        print(
            f"{r['images']:>7} {r['plain']:>16.1f} {r['topk']:>12.1f} {r['topk'] / r['plain']:>6.2f} "
            f"{r['cpu_ratio']:>15.2f} {r['rss_mb']:>7.0f}MB {r['anon_mb']:>8.0f}MB {r['state_kb']:>10.0f}KB"
        )
    grow = rows[1]["anon_mb"] - rows[0]["anon_mb"]
    data = (rows[1]["images"] - rows[0]["images"]) * first["bytes_per_image"] / 2**20
    print(
        f"4x the images: peak anonymous memory {grow:+.0f} MB (the extra images themselves are {data:.0f} MB, "
        f"read from the mapped file); top-k state {rows[1]['state_kb'] - rows[0]['state_kb']:+.0f} KB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
