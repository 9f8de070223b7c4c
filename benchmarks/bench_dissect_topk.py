"""How much the dataset-level analyses cost, as ratios measured in one process.

1. ``topk`` over every conv layer of a trained CIFAR-10 model on the 10,000 test images, against
   one plain inference pass over the same images (target: at most 1.5x). Passes are interleaved
   and the best of each kind is kept, because the machine is shared and timings are noisy. Then
   stats, classnorms and topk together, in the one pass ``convlens analyze`` shares between them.
2. The single-filter ablation ranking of every conv layer (batched: the layers up to the silenced
   one run once per data batch, the filters' effects are added at the next linear or conv layer,
   and only the layers after it run per filter) against a naive ranking that silences the weights
   of one filter and re-evaluates the images, per filter.

    PYTHONPATH=src python benchmarks/bench_dissect_topk.py [RUN] [--repeats 2] [--ablate-images 1000]

RUN defaults to the benchmark model (benchmarks/_cifar.py: a csci611 net, width 16, trained 4
epochs on 25,000 images), trained once into runs/ when absent; without the shared CIFAR-10 copy the
benchmark says so and exits.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _cifar import trained_run  # noqa: E402


def shared_cifar() -> Path | None:
    candidates = [Path(os.environ["CONVLENS_SHARED_DATA"])] if os.environ.get("CONVLENS_SHARED_DATA") else []
    candidates += [ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data"]
    for c in candidates:
        if (c / "cifar10-jpeg.tar.gz").is_file():
            return c / "cifar10-jpeg.tar.gz"
    return None


def get_run(arg: str | None) -> Path:
    return Path(arg) if arg else trained_run()


def plain_pass(subject, channels_last: bool = True) -> float:
    """One inference pass over the split; channels_last inputs as the analyses feed them."""
    from convlens.analyses import inference
    from convlens.data import batches

    t0 = time.perf_counter()
    with inference(subject.model):
        for x, _, _ in batches(subject.split, subject.batch_size, channels_last=channels_last):
            subject.model(x)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ablate-images", type=int, default=1000)
    ap.add_argument("--naive-filters", type=int, default=3, help="filters timed with the naive ranking")
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()

    cifar = shared_cifar()
    if cifar is None:
        print(
            "skipped: the shared CIFAR-10 copy (cifar10-jpeg.tar.gz) is not on this machine "
            "(set CONVLENS_SHARED_DATA to its folder)"
        )
        return 0
    from convlens.analyses import Subject, TopK, analyze, inference, silenced
    from convlens.analyses.ablate import rank_layer
    from convlens.run import Run
    from convlens.trace import conv_layers
    from convlens.utils import usable_cores

    torch.set_num_threads(usable_cores())
    run = Run(get_run(args.run))
    root = run.config.data.root  # relative to where the run was trained; often not resolvable from here
    data_root = None if root and Path(root).is_file() else str(cifar)
    subject = Subject.from_run(
        run, "test", data_root=data_root, batch_size=args.batch_size, figures=False, progress=False
    )
    subject.root = None  # measure only: never write into the run folder (the fixture is shared)
    model = subject.model
    convs = conv_layers(model)
    print(
        f"run {run.path}: {run.config.model.preset} {dict(run.config.model.options)}, "
        f"conv layers {', '.join(convs)}; {len(subject.split)} test images, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )

    # -- 1. topk against plain inference ----------------------------------------------------------
    plain, topk = [], []
    for r in range(args.repeats):
        plain.append(plain_pass(subject))
        t0 = time.perf_counter()
        result = TopK(k=20)(subject)
        topk.append(time.perf_counter() - t0)
        print(
            f"  round {r + 1}: plain inference {plain[-1]:.2f} s, topk (k=20, {len(convs)} layers, "
            f"{sum(v['channels'] for v in result['layers'].values())} filters) {topk[-1]:.2f} s"
        )
    # for reference: plain NCHW inputs, as evaluate.predict feeds them (the baseline above is the faster one)
    print(f"  plain inference with contiguous (NCHW) inputs instead: {plain_pass(subject, channels_last=False):.2f} s")
    ratio = min(topk) / min(plain)
    print(f"topk / plain inference = {min(topk):.2f} s / {min(plain):.2f} s = {ratio:.2f}x (target <= 1.5x)")
    t0 = time.perf_counter()
    analyze(subject, ["stats", "classnorms", "topk"])
    shared = time.perf_counter() - t0
    print(
        f"stats + classnorms + topk in one shared pass / plain inference = {shared:.2f} s / {min(plain):.2f} s "
        f"= {shared / min(plain):.2f}x"
    )

    # -- 2. ablation ranking: batched against naive -------------------------------------------------
    part = subject.split.take(torch.arange(min(args.ablate_images, len(subject.split))))
    small = Subject(model, part, subject.classes, batch_size=args.batch_size, figures=False, progress=False)
    print(f"ablation ranking on the first {len(part)} test images:")
    for layer in reversed(convs):
        n = getattr(model, layer).out_channels
        batched, naive = [], []
        for _ in range(args.repeats):  # interleaved, best of each: the machine is shared
            with inference(model):
                t0 = time.perf_counter()
                for f in range(args.naive_filters):
                    with silenced(model, {layer: [f]}):
                        for x, _, _ in small.batches("naive"):
                            model(x).argmax(1)
                naive.append((time.perf_counter() - t0) / args.naive_filters)
                r = rank_layer(small, layer)
            batched.append(r["seconds"] / n)
        per = min(naive)
        print(
            f"  {layer} ({n} filters, {r['method']}): batched {min(batched):.3f} s per filter; naive {per:.3f} s "
            f"per filter; naive / batched = {per / min(batched):.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
