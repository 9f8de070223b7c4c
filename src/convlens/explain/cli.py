"""`convlens explain RUN --method NAME`: one explanation method on a run's model and images."""

from __future__ import annotations

import argparse

from ..errors import ConvlensError

# the registry's names (convlens.explain.METHODS), listed here so `--help` does not import torch
METHOD_NAMES = ("actmax", "deconv", "gradcam", "guided", "occlusion", "saliency")


def cmd_explain(args: argparse.Namespace) -> int:
    from ..cli import check_writable
    from .outputs import explain_run

    check_writable(args.run)
    m = args.method
    options: dict = {}
    if m == "occlusion":
        options = {"windows": args.window, "stride": args.stride, "fill": _fill(args.fill), "padding": args.padding,
                   "chunk": args.chunk}  # fmt: skip
        if args.naive:
            options["incremental"] = False
    elif m == "actmax":
        options = {"steps": args.steps, "lr": args.lr, "param": args.param, "rotate": args.rotate, "l2": args.l2,
                   "tv": args.tv, "seed": args.seed, "decorrelate": not args.no_decorrelate,
                   "objective": args.objective}  # fmt: skip
        if args.jitter is not None:
            options["jitter"] = args.jitter
        if args.zoom is not None:
            options["scale"] = tuple(args.zoom)
    elif m == "saliency" and args.samples:
        options = {"samples": args.samples, "noise": args.noise, "seed": args.seed}
    heatmap = {k: v for k, v in (("sign", args.sign), ("percentile", args.percentile), ("scale", args.scale)) if v is not None}
    explain_run(args.run, m, images=args.images, split=args.split, layer=args.layer, filters=args.filter,
                target=args.target, checkpoint=args.checkpoint, data_root=args.data_root, heatmap=heatmap,
                options=options)  # fmt: skip
    return 0


def _fill(value: str):
    if value in ("gray", "zero", "mean"):
        return value
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        raise ConvlensError(f"--fill {value!r} is not gray, zero, mean or numbers (e.g. 0.5 or 0.49,0.48,0.45)") from None
    return parts[0] if len(parts) == 1 else parts


def add_commands(sub) -> None:
    p = sub.add_parser(
        "explain", help="explain a run's predictions: occlusion, actmax, deconv, guided, saliency, gradcam",
        description="Run one per-image explanation method on a run's model; writes RUN/analysis/<method>.json, "
                    ".npz and figures under RUN/analysis/<method>/.",
    )  # fmt: skip
    p.add_argument("run", help="run folder")
    p.add_argument("--method", required=True, choices=METHOD_NAMES)
    p.add_argument("--images", type=int, nargs="+", metavar="I",
                   help="image positions in the split (default: the first image of each class, up to 10)")
    p.add_argument("--split", default="test", help="test (default), val or train")
    p.add_argument("--layer", help="layer to explain (actmax, deconv, guided, saliency: a filter's strongest "
                   "activation; gradcam: the layer whose maps are weighted); actmax without it: class logits")  # fmt: skip
    p.add_argument("--filter", type=int, nargs="+", metavar="F", help="filter index(es) of --layer (actmax default: all)")
    p.add_argument("--target", choices=["predicted", "true"], default="predicted", help="class to explain (default: predicted)")
    p.add_argument("--checkpoint", choices=["best", "last"],
                   help="weights to explain (default: the checkpoint eval.json evaluated, else best)")
    p.add_argument("--data-root", help="where the run's data set is now, if it moved since training")
    g = p.add_argument_group("occlusion")
    g.add_argument("--window", type=int, nargs="+", metavar="K",
                   help="patch sizes (default: 4 8 12 where they fit in half the image side)")
    g.add_argument("--stride", type=int, default=2, help="patch step in pixels (default 2)")
    g.add_argument("--fill", default="gray", help="gray (0.5), zero, mean (the data mean) or value(s) per channel")
    g.add_argument("--padding", type=int, default=0, help="pixels a patch may hang over the border (default 0)")
    g.add_argument("--chunk", type=int, default=256, help="occluded images per batch (results do not depend on it)")
    g.add_argument("--naive", action="store_true", help="recompute whole images (no incremental inference)")
    g = p.add_argument_group("actmax")
    g.add_argument("--steps", type=int, default=256)
    g.add_argument("--lr", type=float, help="Adam step size (default: 0.5 for pixel, 0.05 for fourier)")
    g.add_argument("--param", choices=["pixel", "fourier"], default="pixel",
                   help="image basis (default pixel: it converges on small images; see README)")
    g.add_argument("--no-decorrelate", action="store_true", help="do not decorrelate colours with the data's covariance")
    g.add_argument("--jitter", type=float, help="random shift in pixels per step (default: 1 per 16 pixels of image)")
    g.add_argument("--zoom", type=float, nargs=2, metavar=("LOW", "HIGH"), help="random scale range (default 0.95 1.05)")
    g.add_argument("--rotate", type=float, default=5.0, help="random rotation up to this many degrees (default 5)")
    g.add_argument("--l2", type=float, default=0.0, help="L2 penalty on (image - 0.5)")
    g.add_argument("--tv", type=float, default=0.0, help="total-variation penalty")
    g.add_argument("--objective", choices=["mean", "center"], default="mean", help="filter's mean activation or its centre unit")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("saliency")
    g.add_argument("--samples", type=int, default=0, help="SmoothGrad: noisy copies per image (0: plain gradient)")
    g.add_argument("--noise", type=float, default=0.15, help="SmoothGrad noise std in pixel units (default 0.15)")
    g = p.add_argument_group("heat maps")
    g.add_argument("--sign", choices=["absolute", "positive", "negative", "signed", "none"])
    g.add_argument("--percentile", type=float, help="clip at this percentile of magnitudes (default 99)")
    g.add_argument("--scale", choices=["shared", "per_image", "fixed"], help="one scale for all images, or each its own")
    p.set_defaults(func=cmd_explain)
