"""The options of every explanation method, one dataclass each: the fields are the options
(``--name`` on the command line) with their defaults and help, the same way analyses declare
theirs. Torch-free, so that ``convlens explain --help`` is fast. ``run_kwargs`` turns the options
into the arguments of :func:`~convlens.explain.explain_run`.

The shared flags ``--images``, ``--layers``, ``--filters``, ``--batch-size`` and ``--device``
are not options of one method; :mod:`convlens.jobs` adds them to both commands.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..jobs import SCALE_ALIASES, SCALES, ExplainError, canonical, comma_floats, comma_ints, job, option


def fill_value(value: Any) -> Any:
    """``gray``, ``zero``, ``mean``, or one value (``0.5``) or one per channel (``0.49,0.48,0.45``)."""
    if not isinstance(value, str) or value in ("gray", "zero", "mean"):
        return value
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        raise ExplainError(
            f"--fill {value!r} is not gray, zero, mean or numbers (e.g. 0.5 or 0.49,0.48,0.45)"
        ) from None
    return parts[0] if len(parts) == 1 else parts


class MethodOptions:
    """Base of the methods' options: ``run_kwargs`` splits them into explain_run's arguments."""

    HEATMAP = ("sign", "percentile", "scale")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = canonical(f, getattr(self, f.name))  # an older name -> its choice
            setattr(self, f.name, value)
            if isinstance(value, float) and not math.isfinite(value):
                raise ExplainError(f"{f.name}={value!r} is not a finite number; NaN and infinity are no setting")

    def run_kwargs(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)  # type: ignore[call-overload]
        heatmap = {k: values.pop(k) for k in self.HEATMAP if k in values}
        kwargs: dict[str, Any] = {"heatmap": {k: v for k, v in heatmap.items() if v is not None}}
        if "target" in values:
            kwargs["target"] = values.pop("target")
        kwargs["options"] = self.method_options(values)
        return kwargs

    def method_options(self, values: dict[str, Any]) -> dict[str, Any]:
        return values


@dataclasses.dataclass
class Heatmap(MethodOptions):
    sign: str | None = option(
        None,
        "which sign of the attribution to show (default: the method's)",
        choices=("absolute", "positive", "negative", "signed", "none"),
    )
    percentile: float | None = option(None, "clip at this percentile of magnitudes (default 99)")
    scale: str | None = option(
        None,
        "heat maps: one colour scale for all images (shared), one per image (each), or fixed",
        choices=(*SCALES, "fixed"),
        aliases=SCALE_ALIASES,
    )


@dataclasses.dataclass
class Targeted(Heatmap):
    target: str = option("predicted", "class to explain", choices=("predicted", "true"))


@job("method", "actmax", "convlens.explain.actmax:ActMax")
class ActMaxOptions(MethodOptions):
    """Activation maximisation: one image per filter of --layers (or class logit), optimised at once."""

    steps: int = option(256, "optimisation steps")
    lr: float | None = option(None, "Adam step size (default: 0.5 for pixel, 0.05 for fourier)")
    param: str = option(
        "pixel", "image basis (pixel converges on small images; see README)", choices=("pixel", "fourier")
    )
    decorrelate: bool = option(True, "decorrelate colours with the data's covariance")
    jitter: float | None = option(None, "random shift in pixels per step (default: 1 per 16 pixels of image)")
    zoom: list[float] | None = option(
        None, "random scale range LOW,HIGH (default 0.95,1.05)", parse=comma_floats, metavar="LOW,HIGH"
    )
    rotate: float = option(5.0, "random rotation up to this many degrees")
    l2: float = option(0.0, "L2 penalty on (image - 0.5)")
    tv: float = option(0.0, "total-variation penalty")
    objective: str = option(
        "center",
        "the filter's unit at the centre of its map, shown at its receptive field's size (center), "
        "or its mean over the whole canvas (mean)",
        choices=("center", "mean"),
    )
    polish: float = option(0.25, "share of the steps spent on the untransformed image at the end (0 to 1)")
    seed: int = option(0, "random seed (actmax's jitter, SmoothGrad's noise)")

    def run_kwargs(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        zoom, jitter = values.pop("zoom"), values.pop("jitter")
        if jitter is not None:
            values["jitter"] = jitter
        if zoom is not None:
            if len(zoom) != 2:
                raise ExplainError(f"--zoom {','.join(map(str, zoom))} is not LOW,HIGH (two numbers, e.g. 0.9,1.1)")
            values["scale"] = tuple(zoom)
        return {"options": values}


@job("method", "concepts", "convlens.explain.concepts:Concepts")
class ConceptsOptions(Targeted):
    """Concepts: a layer's filters (--layers, default the last conv block) ranked by their contribution."""

    top: int = option(5, "filters shown per image, largest contribution first")
    patches: int = option(5, "top-k dataset patches shown per filter (from the run's topk of the layer)")
    lower: bool = option(False, "also one layer down: the filters that make up each top filter")
    below: str | None = option(None, "the layer one down (default: the block before)", metavar="LAYER")


@job("method", "deconv", "convlens.explain.deconv:Deconvnet")
class DeconvOptions(Targeted):
    """Deconvnet (Zeiler & Fergus): a filter's strongest activation (--layers, --filters) or a class."""


@job("method", "gradcam", "convlens.explain.gradcam:GradCAM")
class GradCAMOptions(Targeted):
    """Grad-CAM: a layer's maps (--layers, default the last conv) weighted by their mean gradient."""


@job("method", "guided", "convlens.explain.guided:GuidedBackprop")
class GuidedOptions(Targeted):
    """Guided backprop of the predicted class, or of a filter's strongest activation."""


@job("method", "occlusion", "convlens.explain.occlusion:Occlusion")
class OcclusionOptions(Heatmap):
    """Occlusion: p(true), p(predicted) with a patch at each position."""

    window: list[int] | None = option(
        None,
        "patch sizes, e.g. 4,8,12 (default: those of 4, 8, 12 that fit in half the image side; above 32 px "
        "the same shares of the side: 28,56,84 at 224 px)",
        parse=comma_ints,
        metavar="K,L",
    )
    stride: int | None = option(None, "patch step in pixels (default: 2 per 32 pixels of image side, 14 at 224 px)")
    fill: str = option(
        "gray", "gray (0.5), zero, mean (the data mean) or value(s) per channel", parse=fill_value, metavar="FILL"
    )
    padding: int = option(0, "pixels a patch may hang over the border")
    naive: bool = option(False, "recompute whole images (no incremental inference)")

    def method_options(self, values: dict[str, Any]) -> dict[str, Any]:
        out = {
            "windows": values["window"],
            "stride": values["stride"],
            "fill": fill_value(values["fill"]),
            "padding": values["padding"],
        }
        if values["naive"]:
            out["incremental"] = False
        return out


@job("method", "saliency", "convlens.explain.saliency:Saliency")
class SaliencyOptions(Targeted):
    """Saliency (input gradient); with --samples, SmoothGrad."""

    samples: int = option(0, "SmoothGrad: noisy copies per image (0: plain gradient)")
    noise: float = option(0.15, "SmoothGrad noise std in pixel units")
    seed: int = option(0, "random seed (actmax's jitter, SmoothGrad's noise)")

    def method_options(self, values: dict[str, Any]) -> dict[str, Any]:
        return values if values["samples"] else {}
