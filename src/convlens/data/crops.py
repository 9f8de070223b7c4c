"""Crops at ImageNet-like sizes, on whole uint8 batches: one interpolation call per batch.

``center_crop``: the evaluation convention (short side resized to ``size / 0.875``, then the
centre ``size`` x ``size``; 224 from 256). ``random_resized_crop``: the training convention of
Szegedy et al. 2015 (a box of 8% to 100% of the area with aspect ratio 3/4 to 4/3, resized to
``size``) with a horizontal flip, as one ``grid_sample`` over the batch: each image's box and
flip is one affine map. Both return float [0, 1] images; the model normalises them itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def center_crop(x: torch.Tensor, size: int, ratio: float = 0.875) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float (N, C, size, size): short side to ``round(size / ratio)``
    (bilinear, antialiased), then the centre crop."""
    short = round(size / ratio)
    h, w = x.shape[-2:]
    y = x.float().div_(255)
    if min(h, w) != short:
        scale = short / min(h, w)
        y = F.interpolate(y, (round(h * scale), round(w * scale)), mode="bilinear", antialias=True, align_corners=False)
        y = y.clamp_(0, 1)
    h, w = y.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return y[..., top : top + size, left : left + size]


def crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(n, 4) boxes ``(left, top, width, height)`` in pixels: area uniform in ``scale`` of the
    image, log aspect ratio uniform in ``ratio``, position uniform. A box larger than the image
    along a side is clipped to it (torchvision retries ten times, then falls back to the centre)."""
    u = torch.rand(n, 4, generator=generator)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
    r = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1])
    w = torch.sqrt(area * r).clamp(max=width)
    h = torch.sqrt(area / r).clamp(max=height)
    return torch.stack([(width - w) * u[:, 2], (height - h) * u[:, 3], w, h], 1)


def crop(x: torch.Tensor, boxes: torch.Tensor, size: int, flips: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 or float (N, C, H, W) -> float (N, C, size, size): box ``i`` of image ``i`` resized
    to ``size`` (bilinear), mirrored where ``flips[i]``."""
    n, c, h, w = x.shape
    y = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    left, top, bw, bh = boxes.to(torch.float32).unbind(1)
    sign = 1 - 2 * flips.to(torch.float32) if flips is not None else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    # output coordinates in [-1, 1] (pixel edges) -> input coordinates, align_corners=False
    theta[:, 0, 0] = sign * bw / w
    theta[:, 0, 2] = (2 * left + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * top + bh) / h - 1
    grid = F.affine_grid(theta.to(y.device), [n, c, size, size], align_corners=False)
    return F.grid_sample(y, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The training crop: a random box per image (:func:`crop_boxes`), resized to ``size``, and
    a horizontal flip with probability ``flip``."""
    n, _, h, w = x.shape
    boxes = crop_boxes(n, h, w, scale, ratio, generator)
    flips = torch.rand(n, generator=generator) < flip
    return crop(x, boxes, size, flips)
