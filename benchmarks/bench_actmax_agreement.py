"""Does actmax's default picture agree with the data? On a trained CIFAR-10 net, for every live
filter of the chosen layers: the Pearson correlation between the picture (the centre unit's
receptive field, ``objective="center"``) and the mean of the filter's top-9 test patches at the same
size, and whether the objective reached exceeds the best test image's value (the filter's best
unit anywhere in any of the 10,000 test images). The whole-canvas objective (``--objective mean``)
is measured the same way, against the mean of the top-9 whole images.

    PYTHONPATH=src python benchmarks/bench_actmax_agreement.py [RUN] [--layers conv1,conv2]
        [--figure docs/actmax.png --figure-filters conv2:0,2,4,6,10,11,21,25]

RUN defaults to the benchmark model (benchmarks/_cifar.py: csci611 width 16, 4 epochs on 25,000
images), trained once into runs/ when absent; the test images come from the shared CIFAR-10 copy.
``--figure`` draws the side-by-side sheet (picture, top-9 patches, their mean) that ``convlens
explain --method actmax`` draws, for the chosen filters.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_explain_occlusion.py

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cifar import trained_run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", help="run folder (default: the benchmark model)")
    ap.add_argument("--layers", default="conv1,conv2")
    ap.add_argument("--objective", default="center", choices=["center", "mean"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--figure", help="also draw the sheet of --figure-filters to this PNG")
    ap.add_argument("--figure-filters", default="conv1:0,1,2,3;conv2:0,2,4,6,10,11,21,25")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from convlens.explain import ActMax, colour_covariance
    from convlens.explain.actmax_run import tiles
    from convlens.explain.base import channel_count
    from convlens import runload
    from convlens.run import Run

    run = Run(args.run or trained_run())
    model = runload.load_model(run)
    bundle = runload.load_data(run)
    cov = colour_covariance(bundle.train.images)
    test = bundle.test
    print(
        f"{run.config.model.preset or run.config.model.factory} from {run.path} "
        f"(test accuracy {100 * run.eval['accuracy']:.2f}%); actmax defaults, objective={args.objective}, "
        f"colours decorrelated; yardstick: {len(test)} test images; {args.threads} thread(s)"
    )
    shown = {}
    for layer in args.layers.split(","):
        t = list(range(channel_count(model, layer)))
        am = ActMax(model, layer, colour_cov=cov, objective=args.objective)
        t0 = time.perf_counter()
        imgs = am.attribute(None, t)
        wall = time.perf_counter() - t0
        out = tiles(am, imgs, test, t)
        shown[layer] = (am, out)
        d = am.details
        live = [j for j in range(len(t)) if not bool(d["dead"][j])]
        corr = [out[j]["agrees_with_top"] for j in live if out[j]["agrees_with_top"] is not None]
        above = sum(1 for j in live if float(d["final"][j]) > out[j]["top"][0]["value"])
        # a filter whose optimum is a uniform white or black patch: some test image has it too
        level = sum(1 for j in live if abs(float(d["final"][j]) / out[j]["top"][0]["value"] - 1) < 1e-3)
        ratio = [float(d["final"][j]) / out[j]["top"][0]["value"] for j in live if out[j]["top"][0]["value"] > 0]
        size = "x".join(str(s) for s in out[0]["image"].shape[1:])
        print(
            f"  {layer}: {len(live)} live of {len(t)} filters, pictures {size}; correlation with the mean of the "
            f"top 9 patches: median {statistics.median(corr):.2f} (min {min(corr):.2f}, max {max(corr):.2f}, "
            f"{sum(c > 0.5 for c in corr)}/{len(corr)} above 0.5, {len(live) - len(corr)} uniform pictures); "
            f"above the best test image: {above}/{len(live)}, level with it (within 0.1%): {level} "
            f"(median {statistics.median(ratio):.2f}x its value); converged {int(d['converged'].sum())}/{len(t)}; "
            f"{wall:.0f} s"
        )
    if args.figure:
        figure(args, shown, run)


def figure(args, shown, run) -> None:
    from convlens.explain.actmax_figure import Block, sheet

    blocks = []
    for part in args.figure_filters.split(";"):
        layer, idx = part.split(":")
        if layer not in shown:
            continue
        am, out = shown[layer]
        for k in map(int, idx.split(",")):
            o = out[k]
            blocks.append(
                Block(
                    [
                        f"{layer} filter {k}",
                        f"reached {float(am.details['final'][k]):.3g}, best test image {o['top'][0]['value']:.3g}",
                        "uniform picture: no correlation"
                        if o["agrees_with_top"] is None
                        else f"correlation with the mean {o['agrees_with_top']:.2f}",
                    ],
                    [[o["image"]], o["patches"], [o["mean"]]],
                )
            )
    s = sheet(
        blocks,
        Path(args.figure),
        title=f"actmax of {run.config.model.preset} (CIFAR-10): the centre unit's picture at its receptive field, "
        "beside its top 9 test patches and their mean",
        headers=["actmax", "top 9 test patches", "their mean"],
    )
    print(f"wrote {s.path} ({s.size[0]}x{s.size[1]} px)")


if __name__ == "__main__":
    main()
