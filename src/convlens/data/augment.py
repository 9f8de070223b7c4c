"""Augmentation of whole batches of float images in [0, 1], shape (N, C, H, W).

Each transform draws one random number per image from the generator it is handed and works on
the whole batch with tensor ops: no per-image Python loop, so it runs at memory speed on the CPU
and stays on the device on a GPU. The same generator state gives the same batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import AugmentConfig


def _rand(n: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g).to(device)


def shift_crop(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    """Crop every image of ``x`` padded by ``pad`` at its own offset ``(dy, dx)`` in [0, 2 * pad]."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect" if mode == "reflect" else "constant")
    # two gathers (rows, then columns) instead of a per-image loop
    rows = (dy.view(n, 1, 1, 1) + torch.arange(h, device=x.device).view(1, 1, h, 1)).expand(n, c, h, w + 2 * pad)
    cols = (dx.view(n, 1, 1, 1) + torch.arange(w, device=x.device).view(1, 1, 1, w)).expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def random_crop(x: torch.Tensor, pad: int, mode: str, g: torch.Generator) -> torch.Tensor:
    if pad == 0:
        return x
    n = x.shape[0]
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    return shift_crop(x, dy, dx, pad, mode)


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def rotate(x: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    angle = (_rand(n, g, x.device) * 2 - 1) * math.radians(degrees)
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float, g: torch.Generator) -> torch.Tensor:
    """Colour jitter as torchvision defines it: factors drawn uniformly from [1 - s, 1 + s]."""
    n = x.shape[0]

    def factor(s: float) -> torch.Tensor:
        return (1 + (_rand(n, g, x.device) * 2 - 1) * s).view(n, 1, 1, 1).to(x.dtype)

    if brightness:
        x = (x * factor(brightness)).clamp_(0, 1)
    if contrast:
        m = _gray(x).mean((1, 2, 3), keepdim=True)
        x = ((x - m) * factor(contrast) + m).clamp_(0, 1)
    if saturation and x.shape[1] == 3:
        gray = _gray(x)
        x = ((x - gray) * factor(saturation) + gray).clamp_(0, 1)
    return x


def noise(x: torch.Tensor, sigma: float, clip: bool, g: torch.Generator) -> torch.Tensor:
    x = x + sigma * torch.randn(x.shape, generator=g).to(x.device, x.dtype)
    return x.clamp_(0, 1) if clip else x


def _boxes_mask(
    top: torch.Tensor, left: torch.Tensor, hh: torch.Tensor, ww: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    rows = torch.arange(h, device=top.device).view(1, h, 1)
    cols = torch.arange(w, device=top.device).view(1, 1, w)
    inside = (rows >= top.view(-1, 1, 1)) & (rows < (top + hh).view(-1, 1, 1))
    return inside & (cols >= left.view(-1, 1, 1)) & (cols < (left + ww).view(-1, 1, 1))


def erase(
    x: torch.Tensor,
    p: float,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    value: torch.Tensor | None,
    g: torch.Generator,
) -> torch.Tensor:
    """Random erasing (Zhong et al.): a rectangle of random area and aspect ratio per image."""
    n, c, h, w = x.shape
    dev = x.device
    apply = _rand(n, g, dev) < p
    area = (scale[0] + _rand(n, g, dev) * (scale[1] - scale[0])) * h * w
    logr = math.log(ratio[0]) + _rand(n, g, dev) * (math.log(ratio[1]) - math.log(ratio[0]))
    aspect = logr.exp()
    hh = (area * aspect).sqrt().round().clamp(1, h).long()
    ww = (area / aspect).sqrt().round().clamp(1, w).long()
    top = (_rand(n, g, dev) * (h - hh + 1).float()).floor().long()
    left = (_rand(n, g, dev) * (w - ww + 1).float()).floor().long()
    mask = (_boxes_mask(top, left, hh, ww, h, w) & apply.view(n, 1, 1)).unsqueeze(1)
    fill = torch.rand(x.shape, generator=g).to(dev, x.dtype) if value is None else value.view(1, c, 1, 1).to(x)
    return torch.where(mask, fill, x)


def cutout(x: torch.Tensor, size: int, p: float, value: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Cutout (DeVries & Taylor): a size x size square centred anywhere, clipped at the borders."""
    n, c, h, w = x.shape
    dev = x.device
    apply = _rand(n, g, dev) < p
    cy = torch.randint(0, h, (n,), generator=g).to(dev)
    cx = torch.randint(0, w, (n,), generator=g).to(dev)
    top, left = cy - size // 2, cx - size // 2
    sz = torch.full((n,), size, device=dev)
    mask = (_boxes_mask(top, left, sz, sz, h, w) & apply.view(n, 1, 1)).unsqueeze(1)
    return torch.where(mask, value.view(1, c, 1, 1).to(x), x)


def flip_phase(indices: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A fixed pseudo-random bit per image index and seed: about half of them are True.

    A small integer hash (multiply, xor-shift, multiply) on 32 bits; the low bit of a plain
    multiplicative hash would just be the index's parity.
    """
    m = 4294967296
    h = (indices * 2654435761 + seed * 2246822519) % m
    h = ((h ^ (h >> 15)) * 668265261) % m
    return ((h ^ (h >> 13)) >> 16) % 2 == 1


class Augment:
    """The configured augmentations as one callable on batches.

    ``mean`` (the data set's per-channel mean, in [0, 1]) is the fill of erased and cut-out
    regions: after normalisation it is zero, the value torchvision's RandomErasing writes.
    ``seed`` picks which half of the images alternating flips mirror on even epochs.
    """

    def __init__(self, cfg: AugmentConfig, mean: list[float], seed: int = 0):
        self.cfg = cfg
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.seed = seed

    def __bool__(self) -> bool:
        return any(getattr(self.cfg, k) is not None for k in type(self.cfg).model_fields)

    def __call__(
        self, x: torch.Tensor, g: torch.Generator, epoch: int = 0, indices: torch.Tensor | None = None
    ) -> torch.Tensor:
        cfg = self.cfg
        if cfg.crop is not None:
            x = random_crop(x, cfg.crop.padding, cfg.crop.fill, g)
        if cfg.translate is not None:
            x = random_crop(x, cfg.translate.pixels, "reflect", g)
        if cfg.flip is not None:
            if cfg.flip.alternate and indices is not None:
                # derandomised flips: a fixed random half of the images flips on even epochs, the
                # other half on odd ones, so over two epochs every image is seen both ways
                base = flip_phase(indices.to(x.device), self.seed)
                mask = base ^ bool(epoch % 2)
            else:
                mask = _rand(len(x), g, x.device) < cfg.flip.p
            x = flip(x, mask)
        if cfg.rotate is not None and cfg.rotate.degrees > 0:
            x = rotate(x, cfg.rotate.degrees, g)
        if cfg.jitter is not None:
            x = jitter(x, cfg.jitter.brightness, cfg.jitter.contrast, cfg.jitter.saturation, g)
        if cfg.noise is not None and cfg.noise.sigma > 0:
            x = noise(x, cfg.noise.sigma, cfg.noise.clip, g)
        if cfg.erase is not None:
            value = (
                None
                if cfg.erase.value == "random"
                else (self.mean if cfg.erase.value == "mean" else torch.full_like(self.mean, float(cfg.erase.value)))
            )
            x = erase(x, cfg.erase.p, cfg.erase.scale, cfg.erase.ratio, value, g)
        if cfg.cutout is not None:
            x = cutout(x, cfg.cutout.size, cfg.cutout.p, self.mean, g)
        return x
