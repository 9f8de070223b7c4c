"""Training with glibc's defaults against training with freed blocks kept for the next step.

Each run is one ``convlens train`` process of an example config (1 epoch on a subset of the
CIFAR-10 JPEG copy, at full size: no progressive resizing, one thread, test predictions without
TTA), once with ``CONVLENS_REUSE_HEAP=0`` (glibc maps every large block fresh and unmaps it when
freed) and once as convlens runs by default (``convlens.heap.reuse_freed_blocks``). Runs alternate
(default, kept, default, kept, ...) so a busy machine slows both alike; each process's own CPU
time, minor page faults and peak RSS come from ``wait4``. Prints the CPU model and flags, every
run, and the ratio of the medians of CPU time (kept / default).

``--step`` measures one training step alone instead, in a fresh process per setting: the
full-width network (``fast-cpu-full.yaml``'s model), a batch of 2000 random 32-px images (each
size of ``--batch``),
channels_last, bf16 autocast where the CPU computes in bf16 (float32 elsewhere), one thread;
CPU time per image (user and system) and minor faults per step, after two warm-up steps.

    PYTHONPATH=src python benchmarks/bench_speed_heap.py [--configs examples/fast-cpu-full.yaml ...]
        [--subset 4000] [--repeats 2] [--step [--batch 1024 2000]]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _cifar import cifar_root  # noqa: E402
from _machine import cpu_model_and_flags  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")


def run_env(kept: bool) -> dict[str, str]:
    """The environment of one measured process: one thread, this checkout's convlens, and glibc's
    defaults (``CONVLENS_REUSE_HEAP=0``) unless ``kept``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.join(ROOT, "src"))
    env.pop("CONVLENS_REUSE_HEAP", None)
    if not kept:
        env["CONVLENS_REUSE_HEAP"] = "0"
    return env


def one(config: str, kept: bool, subset: int, test: int, work: str) -> dict:
    out = os.path.join(work, "run")
    shutil.rmtree(out, ignore_errors=True)
    sets = [
        f"data.root={cifar_root()}",
        f"data.train_subset={subset}",
        f"data.test_subset={test}",
        "train.epochs=1",
        "train.threads=1",
        "train.resize_schedule=null",
        "eval.tta=none",
    ]
    cmd = [sys.executable, "-m", "convlens.cli", "train", config, "--out", out]
    cmd += [arg for item in sets for arg in ("--set", item)]
    t = time.perf_counter()
    with open(os.path.join(work, "stderr.txt"), "w+") as err:  # a file: a full pipe would block the run
        proc = subprocess.Popen(cmd, env=run_env(kept), stdout=subprocess.DEVNULL, stderr=err)
        _, status, use = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.read()}")
    return {
        "user": use.ru_utime,
        "sys": use.ru_stime,
        "cpu": use.ru_utime + use.ru_stime,
        "faults": use.ru_minflt,
        "rss_mb": use.ru_maxrss / 1024,
        "wall": wall,
    }


STEP = """
import resource, sys, torch, torch.nn.functional as F
from convlens.config import load_config
from convlens.heap import reuse_freed_blocks
from convlens.models import build_model
from convlens.train.precision import choose

torch.set_num_threads(1)
torch.manual_seed(0)
cfg = load_config(sys.argv[1])
prec = choose("cpu", "auto", "auto", 1, True)
model = build_model(cfg.model, (3, 32, 32), 10).to(memory_format=torch.channels_last)
batch = int(sys.argv[2])
x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (batch,))
opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

def step():
    with prec.autocast():
        loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

with reuse_freed_blocks() as kept:
    step(), step()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    steps = max(3, 6000 // batch)
    for _ in range(steps):
        step()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
per = steps * batch / 1000
print(kept, prec.describe(), (r1.ru_utime - r0.ru_utime) / per, (r1.ru_stime - r0.ru_stime) / per,
      (r1.ru_minflt - r0.ru_minflt) / steps)
"""


def step_probe(config: str, repeats: int, batch: int) -> dict[bool, float]:
    print(f"one training step of {os.path.basename(config)}'s model, batch {batch} at 32 px, 1 thread, alternating")
    rows: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for kept in (False, True):
            out = subprocess.run(
                [sys.executable, "-c", STEP, config, str(batch)],
                env=run_env(kept),
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            user, system, faults = float(out[-3]), float(out[-2]), float(out[-1])
            rows[kept].append(user + system)
            print(
                f"  {'kept' if kept else 'glibc default':14s} {' '.join(out[1:-3])}: "
                f"{user + system:.3f} ms CPU per image "
                f"(user {user:.3f}, system {system:.3f}), {faults:,.0f} minor faults per step",
                flush=True,
            )
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"step CPU kept / default {med[True] / med[False]:.3f}")
    return med


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["examples/fast-cpu-full.yaml", "examples/fast-cpu.yaml"])
    p.add_argument("--subset", type=int, default=4000, help="training images (default 4000)")
    p.add_argument("--test", type=int, default=2000, help="test images (default 2000)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--step", action="store_true", help="one training step alone, not whole train runs")
    p.add_argument("--batch", type=int, nargs="+", default=[2000], help="--step's batch sizes (default 2000)")
    a = p.parse_args()
    model, flags = cpu_model_and_flags()
    import torch

    print(
        f"CPU {model}; flags {' '.join(flags) or '-'}; {os.cpu_count()} cores; torch {torch.__version__}; "
        f"load {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    if a.step:
        config = os.path.join(ROOT, a.configs[0]) if not os.path.isabs(a.configs[0]) else a.configs[0]
        got = {b: step_probe(config, a.repeats, b) for b in a.batch}
        if len(got) > 1:
            first = a.batch[0]
            for b in a.batch[1:]:
                print(
                    f"CPU per image, batch {b} / batch {first}: glibc default "
                    f"{got[b][False] / got[first][False]:.3f}, kept {got[b][True] / got[first][True]:.3f}"
                )
        return
    print(
        f"convlens train, 1 epoch on {a.subset:,} CIFAR-10 images at 32 px, {a.test:,} test images, "
        "1 thread, precision as configured (auto); one process per run, alternating"
    )
    work = tempfile.mkdtemp(prefix="convlens-bench-heap-")
    try:
        for config in a.configs:
            rows: dict[bool, list[dict]] = {False: [], True: []}
            for _ in range(a.repeats):
                for kept in (False, True):
                    r = one(
                        os.path.join(ROOT, config) if not os.path.isabs(config) else config,
                        kept,
                        a.subset,
                        a.test,
                        work,
                    )
                    rows[kept].append(r)
                    print(
                        f"  {os.path.basename(config):22s} {'kept' if kept else 'glibc default':14s} "
                        f"cpu {r['cpu']:7.1f} s (user {r['user']:6.1f}, sys {r['sys']:5.1f})  "
                        f"wall {r['wall']:6.1f} s  minor faults {r['faults']:>10,}  peak RSS {r['rss_mb']:6.0f} MB",
                        flush=True,
                    )
            med = {
                k: {f: statistics.median(r[f] for r in v) for f in ("cpu", "sys", "faults", "rss_mb")}
                for k, v in rows.items()
            }
            d, k = med[False], med[True]
            print(
                f"{os.path.basename(config)}: CPU kept / default {k['cpu'] / d['cpu']:.3f} "
                f"(median {k['cpu']:.1f} s against {d['cpu']:.1f} s; system time {k['sys']:.1f} "
                f"against {d['sys']:.1f} s); minor faults {k['faults']:,.0f} against "
                f"{d['faults']:,.0f}; peak RSS {k['rss_mb']:.0f} against {d['rss_mb']:.0f} MB",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
