"""Do concepts explain? Silencing an image's top concept filters against as many random filters.

For correctly classified test images of a trained run (the classes in turn): the filters of the concept layer
(``explain --method concepts``'s default, the last conv block's output) ranked by contribution to
the predicted class (activation x gradient); then the class logit and probability with the top k
of them zeroed at that layer, against k random filters of the same layer (``--draws`` draws per
image, seeded). Prints, per k, the mean drop of the logit and of the probability for both, their
ratio, and the fraction of images where the top filters lower the logit more than the random
ones' mean. One process, one run; the numbers in BENCHMARKS.md come from it.

    PYTHONPATH=src python benchmarks/bench_concepts_ablation.py RUN [--images 200] [--ks 1,3,5]
    (data: the run's own data.root, or --data-root PATH)
"""

from __future__ import annotations

import argparse
import time

import torch

from convlens import runload
from convlens.analyses.base import stratified
from convlens.data import load_data
from convlens.explain.concepts import Concepts
from convlens.run import Run
from convlens.trace import Trace, borrowed


def scores(model, layer: str, x: torch.Tensor, t: torch.Tensor, silenced: torch.Tensor | None):
    """Logit and probability of class ``t`` with the channels ``silenced`` (N, C) bool zeroed at ``layer``."""

    def edit(out, _name):
        return out if silenced is None else out * (~silenced).to(out.dtype)[:, :, None, None]

    with torch.no_grad(), borrowed(model), Trace(model, layer, edit_output=edit, retain_output=False):
        logits = model(x).float()
    return logits.gather(1, t[:, None])[:, 0], torch.softmax(logits, 1).gather(1, t[:, None])[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--images", type=int, default=200, help="correctly classified test images measured")
    ap.add_argument("--ks", default="1,3,5", help="numbers of filters silenced")
    ap.add_argument("--draws", type=int, default=10, help="random filter sets per image and k")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Run(args.run)
    cfg = run.config.data if not args.data_root else run.config.data.model_copy(update={"root": args.data_root})
    split = load_data(cfg).test
    model = runload.load_model(run)
    x_all = split.images.float() / 255
    t0 = time.perf_counter()
    with torch.no_grad(), borrowed(model):
        pred = torch.cat([model(x_all[i : i + 256]).argmax(1) for i in range(0, len(x_all), 256)])
    correct = torch.nonzero(pred == split.labels).flatten()
    correct = correct[stratified(split.labels[correct], args.images)]  # the classes in turn
    x, t = x_all[correct], pred[correct]
    expl = Concepts(model)
    contrib = expl.attribute(x, t)
    layer, channels = expl.details["layer"], contrib.shape[1]
    base_logit, base_p = scores(model, layer, x, t, None)
    gen = torch.Generator().manual_seed(0)
    per_class = torch.bincount(split.labels[correct], minlength=len(run.classes)).tolist()
    print(
        f"{run.path.name}: {len(x)} correctly classified test images (per class {per_class}), "
        f"layer {layer} ({channels} filters), "
        f"test accuracy {float((pred == split.labels).float().mean()):.3f}"
    )
    head = ("k", 3), ("logit drop top", 15), ("random", 8), ("ratio", 6), ("p drop top", 11), ("random", 8)
    print(" ".join(f"{name:>{width}}" for name, width in head), f"{'top > random':>13}")
    for k in [int(v) for v in args.ks.split(",")]:
        top = torch.zeros(len(x), channels, dtype=torch.bool)
        top.scatter_(1, expl.details["order"][:, :k], True)
        logit, p = scores(model, layer, x, t, top)
        drop_top, pdrop_top = base_logit - logit, base_p - p
        rand_drops, rand_pdrops = [], []
        for _ in range(args.draws):
            pick = torch.argsort(torch.rand(len(x), channels, generator=gen), 1)[:, :k]
            mask = torch.zeros(len(x), channels, dtype=torch.bool).scatter_(1, pick, True)
            rl, rp = scores(model, layer, x, t, mask)
            rand_drops.append(base_logit - rl)
            rand_pdrops.append(base_p - rp)
        drop_rand = torch.stack(rand_drops).mean(0)
        pdrop_rand = torch.stack(rand_pdrops).mean(0)
        ratio = float(drop_top.mean()) / float(drop_rand.mean()) if float(drop_rand.mean()) else float("inf")
        wins = float((drop_top > drop_rand).float().mean())
        print(
            f"{k:>3} {float(drop_top.mean()):>15.3f} {float(drop_rand.mean()):>8.3f} {ratio:>6.1f} "
            f"{float(pdrop_top.mean()):>11.3f} {float(pdrop_rand.mean()):>8.3f} {wins:>13.2f}"
        )
    print(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
