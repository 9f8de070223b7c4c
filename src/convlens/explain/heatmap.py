"""The one heat-map normalisation every explanation figure goes through.

Raw attributions have arbitrary units and a few extreme pixels; how they are turned into colours
decides what a reader sees, so every choice is explicit and printed on the figure:

- ``reduce``: how colour channels become one map: ``max_abs`` (largest magnitude over channels, as
  Simonyan et al. do for saliency), ``sum``, ``l2``, or ``none`` (keep channels, to show
  deconvnet / guided-backprop signals as images);
- ``sign``: ``absolute`` (magnitude), ``positive`` or ``negative`` (one side only, the other set
  to 0), ``signed`` (both, symmetric around 0, for a diverging colour map), or ``none`` (values as
  they are, e.g. probabilities);
- ``percentile``: values beyond this percentile of the magnitudes are clipped, so one outlier
  pixel does not wash out the rest (100 keeps the maximum);
- ``scale``: ``shared`` (one scale for the whole batch, so images can be compared),
  ``each`` (each image stretched on its own; comparisons across images mean nothing; the older
  name ``per_image`` is accepted), or ``fixed`` (given ``vmin``/``vmax``, e.g. 0 to 1 for
  probabilities).

The result lies in [0, 1] (``signed``: [-1, 1]); :attr:`HeatmapScale.label` says all of the above
in one line for the figure, and :attr:`HeatmapScale.limits` keeps each image's raw limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..jobs import SCALE_ALIASES
from ..jobs import SCALES as SHARED_SCALES
from .base import ExplainError

SIGNS = ("absolute", "positive", "negative", "signed", "none")
SCALES = (*SHARED_SCALES, "fixed")
REDUCE = ("max_abs", "sum", "l2", "none")


@dataclass(frozen=True)
class HeatmapScale:
    sign: str
    reduce: str
    percentile: float
    scale: str
    limits: list[tuple[float, float]] = field(default_factory=list)  # raw (low, high) per image

    @property
    def label(self) -> str:
        what = {
            "absolute": "|attribution|",
            "positive": "positive part",
            "negative": "negative part (as magnitude)",
            "signed": "signed (0 at the centre colour)",
            "none": "value",
        }[self.sign]
        if self.reduce != "none":
            what += {
                "max_abs": ", max |.| over channels",
                "sum": ", summed over channels",
                "l2": ", L2 norm over channels",
            }[self.reduce]
        if self.scale == "fixed":
            lo, hi = self.limits[0] if self.limits else (0.0, 1.0)
            return f"{what}; fixed scale {lo:.3g} to {hi:.3g}"
        clip = "max" if self.percentile >= 100 else f"{self.percentile:g}th percentile"
        if self.scale == "shared":
            hi = self.limits[0][1] if self.limits else 0.0
            return f"{what}; one scale for all {len(self.limits)} maps, clipped at the {clip} ({hi:.3g})"
        return f"{what}; each map on its own scale, clipped at its {clip}"


def _as_numpy(maps: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().float().cpu().numpy()
    return np.asarray(maps, dtype=np.float32)


def _check_options(sign: str, scale: str, reduce: str, percentile: float) -> None:
    for name, value, allowed in (("sign", sign, SIGNS), ("scale", scale, SCALES), ("reduce", reduce, REDUCE)):
        if value not in allowed:
            raise ExplainError(f"heat-map {name} {value!r} is not one of: {', '.join(allowed)}")
    if not (0 < percentile <= 100):
        raise ExplainError(f"heat-map percentile {percentile} is out of range; allowed: above 0 up to 100")


def _reduce_channels(a: np.ndarray, reduce: str) -> tuple[np.ndarray, str]:
    """(N, C, H, W) maps reduced over channels unless ``reduce="none"``; (N, H, W) maps have none to reduce."""
    if a.ndim == 4 and reduce != "none":
        a = {"max_abs": lambda x: np.abs(x).max(1), "sum": lambda x: x.sum(1), "l2": lambda x: np.sqrt((x * x).sum(1))}[
            reduce
        ](a)
    elif a.ndim == 3:
        reduce = "none"
    return a, reduce


def _apply_sign(a: np.ndarray, sign: str) -> np.ndarray:
    if sign == "absolute":
        return np.abs(a)
    if sign == "positive":
        return np.maximum(a, 0)
    if sign == "negative":
        return np.maximum(-a, 0)
    return a


def _scale_limits(
    a: np.ndarray, *, sign: str, scale: str, percentile: float, vmin: float | None, vmax: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per map, the values shown as the low and the high end of the colour scale."""
    n = len(a)
    axis = None if scale == "shared" else 1
    flat = a.reshape(n, -1)
    if scale == "fixed":
        if vmin is None or vmax is None or not vmax > vmin:
            raise ExplainError(f"scale 'fixed' needs vmin < vmax, got vmin={vmin}, vmax={vmax}")
        lo, hi = np.full(n, vmin, np.float32), np.full(n, vmax, np.float32)
    elif sign == "none":  # raw values: clip both tails
        lo = np.broadcast_to(np.percentile(flat, 100 - percentile, axis=axis), (n,)).astype(np.float32)
        hi = np.broadcast_to(np.percentile(flat, percentile, axis=axis), (n,)).astype(np.float32)
    else:  # magnitudes: clip the top; 0 stays 0
        hi = np.broadcast_to(np.percentile(np.abs(flat), percentile, axis=axis), (n,)).astype(np.float32)
        lo = -hi if sign == "signed" else np.zeros(n, np.float32)
    return lo, hi


def normalize_heatmaps(
    maps: torch.Tensor | np.ndarray,
    *,
    sign: str = "absolute",
    reduce: str = "max_abs",
    percentile: float = 99.0,
    scale: str = "shared",
    vmin: float | None = None,
    vmax: float | None = None,
) -> tuple[np.ndarray, HeatmapScale]:
    """Normalise a batch of maps, (N, H, W) or (N, C, H, W), for display.

    Returns ``(normed, scale)``: normed is (N, H, W) (or (N, C, H, W) with ``reduce="none"``),
    in [0, 1], or [-1, 1] for ``sign="signed"``; see the module docstring for the options.
    """
    scale = SCALE_ALIASES.get(scale, scale)
    _check_options(sign, scale, reduce, percentile)
    a, reduce = _reduce_channels(_as_numpy(maps), reduce)
    if a.ndim not in (3, 4):
        raise ExplainError(f"heat maps must have shape (N, H, W) or (N, C, H, W), got {a.shape}")
    n = len(a)
    a = _apply_sign(a, sign)
    lo, hi = _scale_limits(a, sign=sign, scale=scale, percentile=percentile, vmin=vmin, vmax=vmax)
    shape = (n,) + (1,) * (a.ndim - 1)
    lo_b, hi_b = lo.reshape(shape), hi.reshape(shape)
    out = np.clip((a - lo_b) / np.maximum(hi_b - lo_b, 1e-12), 0, 1)
    if sign == "signed":  # [low, high] -> [-1, 1], 0 stays 0 unless a fixed scale is off-centre
        out = out * 2 - 1
    limits = [(float(x), float(y)) for x, y in zip(lo, hi)]
    return out.astype(np.float32), HeatmapScale(sign, reduce, float(percentile), scale, limits)
