"""Ablation ranking: seconds per filter by full forward passes against graph reuse, per model.

For each model, one conv layer's filters are ranked by silencing each alone. "full pass" runs
the whole network per filter with the filter's weights zeroed (how a residual net, or a conv
called twice, was ranked before graph reuse; measured on the first ``--old-filters`` filters,
whose accuracies must equal the new ranking's); "reuse" is ``rank_layer`` as it runs now (flat
nets: the sequential path; other graphs: :mod:`convlens.models.reuse`, which runs what no filter
changes once per batch and only the nodes after the silenced channel per filter, many filters
stacked along the batch). Random weights with measured batch-norm statistics, random images.

    PYTHONPATH=src python benchmarks/bench_ablate_rank.py                  # every model, 256 images
    PYTHONPATH=src python benchmarks/bench_ablate_rank.py --models resnet20 --images 1024
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_explain_occlusion.py

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _reuse_models import MODELS, SHAPE, bench_model, machine  # noqa: E402


def _layers(model, which: str) -> list[str]:
    from convlens.trace import conv_layers

    convs = conv_layers(model, SHAPE)
    picks = {"last": [convs[-1]], "middle": [convs[len(convs) // 2]], "both": [convs[len(convs) // 2], convs[-1]]}
    return list(dict.fromkeys(picks[which]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--layers", default="both", choices=("last", "middle", "both"))
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--old-filters", type=int, default=4, help="filters timed by full passes (the rest extrapolated)")
    ap.add_argument("--threads", type=int, default=1, help="1: CPU time is the work itself on a shared machine")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from convlens.analyses import Subject, silenced
    from convlens.analyses.ablate import rank_layer
    from convlens.data import Split

    print(machine())
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(args.images, *SHAPE, generator=g) * 255).round().to(torch.uint8)
    labels = torch.randint(0, 10, (args.images,), generator=g)
    split = Split(images, labels, torch.arange(args.images))
    x = images.float() / 255
    print(f"{args.images} random images 3x32x32, batches of {args.batch}, float32, channel mode")
    head = (
        f"{'model':<17s} {'layer':<16s} {'filters':>7s} {'wall s/f: full':>13s} {'reuse':>10s} {'ratio':>6s} "
        f"{'cpu s/f: full':>9s} {'reuse':>8s} {'ratio':>7s}  method"
    )
    print(head)
    for name in args.models:
        model = bench_model(name)
        for layer in _layers(model, args.layers):
            subject = Subject(
                model, split, [str(c) for c in range(10)], batch_size=args.batch, figures=False, progress=False
            )
            c0 = time.process_time()
            r = rank_layer(subject, layer, "channel")
            cpu_new = (time.process_time() - c0) / len(r["accuracy"])
            n_old = min(args.old_filters, len(r["accuracy"]))
            t0, c0 = time.perf_counter(), time.process_time()
            old = []
            with torch.no_grad():
                for f in range(n_old):
                    with silenced(model, {layer: [f]}):
                        pred = torch.cat([model(x[i : i + args.batch]).argmax(1) for i in range(0, len(x), args.batch)])
                    old.append(float((pred == labels).double().mean()))
            per_old, cpu_old = (time.perf_counter() - t0) / n_old, (time.process_time() - c0) / n_old
            same = all(abs(a - b) < 1e-9 for a, b in zip(old, r["accuracy"]))
            new = r["seconds_per_filter"]
            print(
                f"{name:<17s} {layer:<16s} {len(r['accuracy']):>7d} {per_old:>13.4f} {new:>10.4f} "
                f"{per_old / max(new, 1e-9):>5.1f}x {cpu_old:>9.4f} {cpu_new:>8.4f} "
                f"{cpu_old / max(cpu_new, 1e-9):>6.1f}x"
                f"  {r['method']}{'' if same else '  ACCURACIES DIFFER'}",
                flush=True,
            )


if __name__ == "__main__":
    main()
