"""How close the fast presets run to this machine's matmul peak, at several widths.

Measures, in one process and interleaved so a busy machine affects both alike:

- the matmul peak: float32 (2048 x 2048) and bf16 (smaller: emulated bf16 is very slow on CPUs
  without AMX / AVX512-BF16), in GFLOP/s;
- for the `fast` network (airbench94-shaped) at each width: training images/s (forward, backward,
  Nesterov SGD step; batch 512, channels_last) and inference images/s (eval mode, batch 500);
- the FLOP rate those imply (2 FLOPs per multiply-accumulate from `summarize`; training counts
  3x the forward: the backward computes gradients for both inputs and weights) as a fraction of
  the float32 peak; and one bf16 training step at the smallest width against the bf16 peak.

    PYTHONPATH=src python benchmarks/bench_speed_throughput.py [--widths 16 32 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from convlens.config import load_config  # noqa: E402
from convlens.models import build_model, summarize, totals  # noqa: E402


def matmul_gflops(n: int, dtype: torch.dtype, reps: int = 3) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def fast_model(width: int):
    cfg = load_config({"model": {"preset": "fast", "options": {"width": width}}})
    torch.manual_seed(0)
    m = build_model(cfg.model, (3, 32, 32), 10, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
    macs = totals(summarize(m, (3, 32, 32)))["macs"]
    return m.to(memory_format=torch.channels_last), macs


def train_rate(model, batch: int, steps: int, bf16: bool = False) -> float:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.85, nesterov=True)
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = F.cross_entropy(out.float(), y, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # oneDNN builds its kernels on the first call
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


@torch.no_grad()
def infer_rate(model, batch: int, steps: int) -> float:
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    model.eval()
    model(x)
    t = time.perf_counter()
    for _ in range(steps):
        model(x)
    model.train()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-bf16", action="store_true", help="skip the (slow, emulated here) bf16 measurements")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}", flush=True)

    peaks = []
    rows = {w: {"train": [], "infer": []} for w in args.widths}
    models = {w: fast_model(w) for w in args.widths}
    for r in range(args.repeats):
        peaks.append(matmul_gflops(2048, torch.float32))
        for w, (m, _) in models.items():
            rows[w]["train"].append(train_rate(m, 512, 2))
            rows[w]["infer"].append(infer_rate(m, 500, 3))
        print(f"  repeat {r + 1}/{args.repeats} done, fp32 matmul {peaks[-1]:.0f} GFLOP/s", flush=True)
    peaks.append(matmul_gflops(2048, torch.float32))
    peak = statistics.median(peaks)
    print(
        f"\nfp32 matmul peak (2048^2, median of {len(peaks)}): {peak:.1f} GFLOP/s "
        f"(range {min(peaks):.0f}-{max(peaks):.0f})"
    )
    print(
        f"\n{'width':>6} {'MFLOP/img':>10} {'train img/s':>12} {'GFLOP/s':>8} {'of peak':>8} "
        f"{'infer img/s':>12} {'GFLOP/s':>8} {'of peak':>8}"
    )
    for w, (m, macs) in models.items():
        tr, inf = statistics.median(rows[w]["train"]), statistics.median(rows[w]["infer"])
        fwd = 2 * macs / 1e9
        tg, ig = tr * 3 * fwd, inf * fwd
        print(
            f"{w:>6} {fwd * 1e3:>10.1f} {tr:>12.0f} {tg:>8.1f} {tg / peak:>8.1%} "
            f"{inf:>12.0f} {ig:>8.1f} {ig / peak:>8.1%}"
        )
    if not args.no_bf16:
        bpeak = matmul_gflops(512, torch.bfloat16, reps=2)
        w = args.widths[0]
        m, macs = models[w]
        br = train_rate(m, 64, 1, bf16=True)
        fr = train_rate(m, 64, 1)
        bg = br * 3 * 2 * macs / 1e9
        print(f"\nbf16 matmul peak (512^2): {bpeak:.2f} GFLOP/s ({bpeak / peak:.1%} of fp32)")
        print(
            f"bf16 autocast training, width {w}, batch 64: {br:.0f} img/s ({bg:.1f} GFLOP/s, "
            f"{bg / bpeak:.0%} of the bf16 matmul peak) vs float32 {fr:.0f} img/s: "
            f"bf16/fp32 = {br / fr:.2f}"
        )


if __name__ == "__main__":
    main()
