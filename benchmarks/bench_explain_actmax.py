"""Activation maximisation of every filter of a layer: one batched run against one filter at a time.

Both use the same ActMax settings (Fourier parameterisation, colours decorrelated with a fixed
covariance, jitter/scale/rotate, the same steps); "one by one" calls ``attribute`` with a single
filter, as a per-filter loop would. Prints seconds per filter for both, wall and process CPU
time (on a shared machine the wall clock includes waiting for a core), and checks that the
batched objective rose for every filter.

    PYTHONPATH=src python benchmarks/bench_explain_actmax.py                  # conv2 of the fixture
    PYTHONPATH=src python benchmarks/bench_explain_actmax.py --layer conv3 --threads 2

``--converge`` measures how far the optimisation gets instead, for the defaults and for the
Fourier basis at Lucent's lr 0.05, in the same number of steps (256 unless ``--steps``): on conv1
the ratio to the analytic optimum (a conv1 filter's output is affine in the image, so its
maximum over images in [0, 1] is the image that is 1 where the input gradient is positive, 0
elsewhere), and on every ``--converge-layers`` layer the ratio to the best test image's value
and how many filters beat that image. ``bench_actmax_converge.py`` measures convergence on
foreign nets too, ``bench_actmax_agreement.py`` the pictures against the data::

    PYTHONPATH=src python benchmarks/bench_explain_actmax.py --converge
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# see bench_explain_occlusion.py: OpenMP threads sleep rather than spin while waiting for a core
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cifar import trained_run  # noqa: E402

# CIFAR-10's pixel colour covariance on the [0, 1] scale (colour_covariance of the fixture's
# training split), so the benchmark needs no data set; `convlens explain` computes it from the
# run's own training data
CIFAR_COV = [[0.0606, 0.0555, 0.0522], [0.0555, 0.0598, 0.0587], [0.0522, 0.0587, 0.0689]]


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run",
        help="run folder with trained csci611 weights (default: the benchmark model, "
        "see _cifar.py; random init when it is absent and the shared CIFAR-10 copy is not here)",
    )
    ap.add_argument("--layer", default="conv2")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--param", default="fourier", choices=["fourier", "pixel"])
    ap.add_argument("--converge", action="store_true", help="measure the objective reached, not the time")
    ap.add_argument("--converge-layers", default="conv1,conv2,conv3", help="layers for --converge")
    ap.add_argument("--filters", type=int, default=16, help="filters per layer for --converge")
    args = ap.parse_args()
    if args.run is None:
        try:
            args.run = str(trained_run())
        except SystemExit as exc:  # no CIFAR-10 to train it on
            print(f"{exc}; using random weights")
            args.run = ""
    torch.set_num_threads(args.threads)

    from convlens import runload
    from convlens.config import load_config
    from convlens.explain import ActMax
    from convlens.explain.base import channel_count
    from convlens.models import build_model
    from convlens.run import is_run

    if is_run(args.run) and (Path(args.run) / "checkpoints").is_dir():
        model, source = runload.load_model(args.run, "last"), f"trained weights from {args.run}"
    else:
        torch.manual_seed(0)
        model = build_model(load_config({"model": {"preset": "csci611"}}).model, (3, 32, 32), 10).eval()
        source = "random init, width 32"
    if args.converge:
        return converge(model, source, args)
    n = channel_count(model, args.layer)
    am = ActMax(model, args.layer, steps=args.steps, param=args.param, colour_cov=torch.tensor(CIFAR_COV))
    am.attribute(None, [0])  # warm-up (first-call allocations, FFT plans)
    print(
        f"csci611 ({source}); actmax of all {n} filters of {args.layer}, 3x32x32, {args.steps} steps, "
        f"{args.param} parameterisation, float32, {args.threads} thread(s), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )

    wall_b, cpu_b, _ = timed(lambda: am.attribute(None, range(n)))
    rose = bool((am.details["final"] > am.details["initial"]).all())
    wall_1, cpu_1, _ = timed(lambda: [am.attribute(None, [k]) for k in range(n)])
    print(f"  {'':<30s} {'wall s/filter':>14s} {'cpu s/filter':>13s}")
    print(f"  {'one by one (' + str(n) + ' runs)':<30s} {wall_1 / n:14.3f} {cpu_1 / n:13.3f}")
    print(
        f"  {'batched (one run)':<30s} {wall_b / n:14.3f} {cpu_b / n:13.3f}   {wall_1 / wall_b:5.1f}x wall, "
        f"{cpu_1 / cpu_b:5.1f}x cpu; objective rose for every filter: {rose}"
    )


def analytic_optimum(am, targets: torch.Tensor) -> torch.Tensor:
    x = torch.full((len(targets), *am.shape), 0.5, requires_grad=True)
    (g,) = torch.autograd.grad(am._objective(x, targets).sum(), x)
    with torch.no_grad():
        return am._objective((g > 0).float(), targets)


def converge(model, source: str, args) -> None:
    from convlens.data import load_data
    from convlens.explain import ActMax
    from convlens.explain.base import channel_count
    from convlens.run import Run, is_run

    steps = args.steps if "--steps" in sys.argv else 256
    test = load_data(Run(args.run).config.data).test if is_run(args.run) else None
    cov = torch.tensor(CIFAR_COV)
    settings = {"defaults (pixel, lr 0.5)": {}, "fourier, lr 0.05": {"param": "fourier"}}
    print(
        f"csci611 ({source}); actmax, {steps} steps, colours decorrelated, default transforms; "
        f"best image over {len(test) if test is not None else 0} test images"
    )
    for layer in args.converge_layers.split(","):
        t = torch.arange(min(args.filters, channel_count(model, layer)))
        probe = ActMax(model, layer, steps=1)
        best = probe.best_images(test.images, t)[0] if test is not None else None
        optimum = analytic_optimum(probe, t) if layer == "conv1" else None
        for name, kw in settings.items():
            am = ActMax(model, layer, steps=steps, colour_cov=cov, **kw)
            wall, _, _ = timed(lambda: am.attribute(None, t))
            final = am.details["final"]
            line = f"  {layer} {name:<24s} {wall / len(t):6.3f} s/filter"
            if optimum is not None:
                r = final / optimum
                line += f"; / analytic optimum: median {r.median():.3f}, min {r.min():.3f}"
            if best is not None:
                r = final / best
                line += f"; / best test image: median {r.median():.2f}, {int((final > best).sum())}/{len(t)} above it"
            print(line)


if __name__ == "__main__":
    main()
