"""How close actmax gets to a known optimum, on a preset and on networks convlens did not build.

A first conv's output is affine in the image (at the centre unit, and its mean over the map), so
its maximum over images in [0, 1] is known exactly: b + sum(relu(g)), g the input gradient, at the
image that is 1 where g > 0 and 0 elsewhere. For the first 16 filters of the first conv of each
net this prints the objective actmax reaches as a fraction of that optimum (median, min), how many
filters it calls converged, for both objectives, at the defaults and at the former defaults
(``polish=0``: Adam on the transformed image to the end; the centre unit then also under the
canvas's 2-pixel jitter).

Nets: the csci611 preset (the trained benchmark model when it exists, see _cifar.py), and the
foreign nets of _foreign_nets.py (airbench-like GELU net with a 2x2 whitening conv, a hand-written
ResNet, a LeakyReLU/SiLU net with a dilated conv and an adaptive pool), each trained ``--epochs``
on ``--train-images`` CIFAR-10 images when the shared copy is here, else at random init.

    PYTHONPATH=src python benchmarks/bench_actmax_converge.py [--epochs 1] [--train-images 5000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_explain_occlusion.py

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cifar import trained_run  # noqa: E402
from _foreign_nets import NETS, train_briefly  # noqa: E402

# CIFAR-10's pixel colour covariance on the [0, 1] scale (see bench_explain_actmax.py)
CIFAR_COV = [[0.0606, 0.0555, 0.0522], [0.0555, 0.0598, 0.0587], [0.0522, 0.0587, 0.0689]]


def analytic_optimum(am, targets: torch.Tensor) -> torch.Tensor:
    x = torch.full((len(targets), *am.shape), 0.5, requires_grad=True)
    (g,) = torch.autograd.grad(am._objective(x, targets).sum(), x)
    with torch.no_grad():
        return am._objective((g > 0).float(), targets)


def nets(args):
    """(name, model, first conv, where the weights come from)."""
    from convlens import runload

    run = trained_run(train_if_missing=False)
    if run is not None:
        yield "csci611", runload.load_model(run), "conv1", f"trained ({run.name})"
    data = None
    try:
        from _cifar import cifar_root

        from convlens.config import load_config
        from convlens.data import load_data

        cfg = load_config({"data": {"name": "cifar10", "root": cifar_root(), "train_subset": args.train_images}})
        data = load_data(cfg.data).train
    except SystemExit as exc:
        print(f"{exc}: foreign nets at random init")
    for name, cls in NETS.items():
        torch.manual_seed(0)
        model = cls().eval()
        source = "random init"
        if data is not None and args.epochs:
            train_briefly(model, data.images, data.labels, args.epochs)
            source = f"trained {args.epochs} epoch(s) on {len(data)} images"
        yield name, model, cls.first_conv, source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-images", type=int, default=5000)
    ap.add_argument("--filters", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from convlens.explain import ActMax
    from convlens.explain.base import channel_count

    cov = torch.tensor(CIFAR_COV)
    settings = {
        "defaults": {},
        "former (no polish)": {"polish": 0.0, "jitter": 2.0},
    }
    print(f"actmax, 256 steps, colours decorrelated; first {args.filters} filters of each net's first conv")
    for name, model, layer, source in nets(args):
        t = torch.arange(min(args.filters, channel_count(model, layer)))
        for objective in ("center", "mean"):
            for setting, kw in settings.items():
                am = ActMax(model, layer, colour_cov=cov, objective=objective, image_shape=(3, 32, 32), **kw)
                t0 = time.perf_counter()
                am.attribute(None, t)
                wall = time.perf_counter() - t0
                r = am.details["final"] / analytic_optimum(am, t)
                print(
                    f"  {name:<9s} {layer:<11s} {objective:<6s} {setting:<19s} / optimum: median {r.median():.4f}, "
                    f"min {r.min():.4f}; converged {int(am.details['converged'].sum())}/{len(t)}; "
                    f"{wall:5.1f} s  [{source}]"
                )


if __name__ == "__main__":
    main()
