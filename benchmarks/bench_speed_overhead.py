"""Trainer overhead: `convlens train` against a bare PyTorch loop doing the same work.

Both train the `fast` preset (same initial weights: same seed, same whitening) for one epoch on
the same CIFAR-10 images with the same recipe: reflect-padded 2-pixel translations and
alternating flips on uint8 batches, label smoothing, Nesterov SGD with a bias group, the
triangular learning rate, lookahead every 5 steps; then both predict the same test images.
The bare loop is what one would write by hand in a notebook, with no run folder, checkpoints,
metrics or validation. Runs alternate (bare, convlens, bare, convlens, ...) so a busy machine
slows both alike; the fastest of each is compared.

    PYTHONPATH=src python benchmarks/bench_speed_overhead.py [--subset 10000] [--repeats 2]

Prints the epoch-only ratio (convlens' own epoch_seconds against the bare epoch) and the
whole-call ratio (data from the cache, model, whitening, epoch, test predictions, and for
convlens also its run folder). Target: <= 1.05.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _cifar import cifar_root  # noqa: E402

from convlens.config import load_config  # noqa: E402
from convlens.data import load_data  # noqa: E402
from convlens.models import build_model  # noqa: E402
from convlens.models.whiten import init_whitening  # noqa: E402
from convlens.train import train  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")


def recipe(root: str, subset: int, width: int, test: int) -> list[str]:
    return [
        f"data.root={root}",
        "data.val_fraction=0",
        f"data.train_subset={subset}",
        f"data.test_subset={test}",
        "train.epochs=1",
        f"model.options.width={width}",
        "eval.tta=none",
    ]


def bare(cfg, out_note: dict) -> tuple[float, float]:
    """A hand-written loop; returns (epoch seconds, whole seconds)."""
    t0 = time.perf_counter()
    t = cfg.train
    data = load_data(cfg.data)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.shape, data.num_classes, data.mean, data.std)
    model = model.to(memory_format=torch.channels_last)
    init_whitening(model, data.train.images)
    o = t.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    weights = [p for p in params if p.ndim > 1]
    biases = [p for p in params if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": weights, "weight_decay": o.weight_decay}, {"params": biases, "weight_decay": o.bias_weight_decay}],
        lr=o.lr,
        momentum=o.momentum,
        nesterov=True,
    )
    scales = [1.0, o.bias_lr_scale]
    slow = [p.detach().clone() for p in model.state_dict().values() if p.is_floating_point()]
    images, labels = data.train.images, data.train.labels
    n, bs = len(labels), t.batch_size
    steps = math.ceil(n / bs)
    s = t.schedule
    peak = max(1, round(s.pct_start * steps))

    def lr_at(i: int) -> float:
        if i < peak:
            return s.start_factor + (1 - s.start_factor) * i / peak
        return 1 + (s.final_factor - 1) * min(1.0, (i - peak) / max(1, steps - peak))

    g = torch.Generator().manual_seed(1)
    model.train()
    e0 = time.perf_counter()
    order = torch.randperm(n, generator=g)
    flip_half = torch.rand(n, generator=g) < 0.5
    for i in range(steps):
        pos = order[i * bs : (i + 1) * bs]
        x = images[pos].float().div_(255)
        # translate: reflect-pad by 2 and cut each image at its own offset (two gathers)
        k = len(pos)
        dy = torch.randint(0, 5, (k,), generator=g)
        dx = torch.randint(0, 5, (k,), generator=g)
        xp = F.pad(x, (2, 2, 2, 2), mode="reflect")
        rows = (dy.view(k, 1, 1, 1) + torch.arange(32).view(1, 1, 32, 1)).expand(k, 3, 32, 36)
        cols = (dx.view(k, 1, 1, 1) + torch.arange(32).view(1, 1, 1, 32)).expand(k, 3, 32, 32)
        x = xp.gather(2, rows).gather(3, cols)
        x = torch.where(flip_half[pos].view(-1, 1, 1, 1), x.flip(3), x).contiguous(memory_format=torch.channels_last)
        for group, scale in zip(opt.param_groups, scales):
            group["lr"] = o.lr * scale * lr_at(i)
        loss = F.cross_entropy(model(x), labels[pos], label_smoothing=t.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (i + 1) % 5 == 0:  # lookahead
            decay = t.average.decay * ((i + 1) / steps) ** t.average.power
            with torch.no_grad():
                for a, w in zip(slow, (p for p in model.state_dict().values() if p.is_floating_point())):
                    a.lerp_(w, 1 - decay)
                    w.copy_(a)
    with torch.no_grad():
        for a, w in zip(slow, (p for p in model.state_dict().values() if p.is_floating_point())):
            w.copy_(a)
    epoch = time.perf_counter() - e0
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data.test), 500):
            x = data.test.images[i : i + 500].float().div_(255).contiguous(memory_format=torch.channels_last)
            correct += int((model(x).argmax(1) == data.test.labels[i : i + 500]).sum())
    out_note["acc"] = correct / len(data.test)
    return epoch, time.perf_counter() - t0


def with_convlens(cfg_path: str, overrides: list[str], out: str) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run = train(cfg_path, out, overrides=overrides, echo=lambda s: None)
    whole = time.perf_counter() - t0
    return run.metrics()[-1]["epoch_seconds"], whole


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=os.path.join(ROOT, "examples", "fast-cpu.yaml"))
    ap.add_argument("--root", help="the CIFAR-10 archive (default: the shared copy, see _cifar.py)")
    ap.add_argument("--subset", type=int, default=10000, help="training images in the epoch")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--test", type=int, default=1000, help="test images predicted at the end")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    args.root = args.root or cifar_root()
    torch.set_num_threads(args.threads)
    overrides = recipe(args.root, args.subset, args.width, args.test) + [f"train.threads={args.threads}"]
    cfg = load_config(args.config, overrides)
    tmp = tempfile.mkdtemp(prefix="bench-overhead-")
    load_data(cfg.data)  # fill the uint8 cache first, so neither side pays for decoding
    print(
        f"fast preset width {args.width}, one epoch of {args.subset} CIFAR-10 images, batch {cfg.train.batch_size}, "
        f"{args.threads} threads, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    # warm-up, not timed: oneDNN builds its kernels and the allocator grows on the first steps
    bare(load_config(args.config, recipe(args.root, 1024, args.width, 100)), {})
    b_ep, b_all, c_ep, c_all = [], [], [], []
    try:
        for r in range(args.repeats):
            note: dict = {}
            e, w = bare(cfg, note)
            b_ep.append(e)
            b_all.append(w)
            e, w = with_convlens(args.config, overrides, os.path.join(tmp, f"run{r}"))
            c_ep.append(e)
            c_all.append(w)
            print(
                f"  repeat {r + 1}: bare epoch {b_ep[-1]:.1f}s (whole {b_all[-1]:.1f}s, test acc {note['acc']:.3f}); "
                f"convlens epoch {c_ep[-1]:.1f}s (whole {c_all[-1]:.1f}s)",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nepoch only:  convlens {min(c_ep):.1f}s / bare {min(b_ep):.1f}s = {min(c_ep) / min(b_ep):.3f}")
    ratio = min(c_all) / min(b_all)
    print(f"whole call:  convlens {min(c_all):.1f}s / bare {min(b_all):.1f}s = {ratio:.3f}  (target <= 1.05)")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
