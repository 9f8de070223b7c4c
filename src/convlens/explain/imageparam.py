"""Image parameterisations and random transforms for activation maximisation (after Lucent).

An image is not optimised pixel by pixel in [0, 1] directly: it is ``sigmoid(colour(z))`` where
``z`` is either a pixel grid or a Fourier spectrum, and ``colour`` mixes channels with the square
root of the data set's own colour covariance (``colour_matrix``). Optimising in decorrelated
colour and frequency space spreads the gradient's energy evenly, which on natural images gives
far less high-frequency noise than raw pixels (Olah et al., "Feature Visualization", 2017).
At the small sizes convlens models take, though, the Fourier basis's 1/f scaling mostly slows
the high frequencies small filters want: the pixel basis is the default (see :mod:`.actmax`
for the measurement).

Transforms (jitter, scale, rotate) are drawn per image and step and applied in one batched
``grid_sample``; they make the result robust instead of an adversarial pattern. Sizes stay the
model's own (28x28 grayscale, 32x32 colour): nothing is upsampled to ImageNet sizes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

PARAMS = ("fourier", "pixel")


COVARIANCE_PIXELS = 5000 * 32 * 32  # pixels read for the colour covariance: 5,000 CIFAR images, 102 of 224 px


def colour_covariance(images: torch.Tensor, max_images: int = 5000) -> torch.Tensor:
    """(C, C) covariance of pixel colours on the [0, 1] scale; uint8 or float (N, C, H, W).

    At most ``max_images`` evenly spaced images are used, and at most :data:`COVARIANCE_PIXELS`
    pixels (deterministic, and not just the first classes of a set stored class by class; plenty
    for a 3x3 statistic): 5,000 images of 224 px would take 15 GB of float copies.
    """
    max_images = max(1, min(max_images, COVARIANCE_PIXELS // max(1, images.shape[-1] * images.shape[-2])))
    picked = range(0, len(images), max(1, -(-len(images) // max_images)))
    c = images.shape[1]
    total, outer, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, c, dtype=torch.float64), 0
    for i in range(0, len(picked), 256):  # 256 images at a time: a split read from disk is never held whole
        x = images[list(picked[i : i + 256])]
        x = x.double() / 255 if x.dtype == torch.uint8 else x.double()
        px = x.permute(0, 2, 3, 1).reshape(-1, c)
        total += px.sum(0)
        outer += px.T @ px
        n += len(px)
    mean = total / max(n, 1)
    return ((outer - n * torch.outer(mean, mean)) / max(1, n - 1)).float()


def colour_matrix(cov: torch.Tensor | None, channels: int) -> torch.Tensor:
    """The square root of a colour covariance (U sqrt(S) from its SVD), scaled so its largest
    column has norm 1 (Lucent's normalisation); the identity without a covariance."""
    if cov is None:
        return torch.eye(channels)
    cov = torch.as_tensor(cov, dtype=torch.float64)
    if cov.shape != (channels, channels):
        raise ValueError(f"colour covariance has shape {tuple(cov.shape)}; the images have {channels} channel(s)")
    u, s, _ = torch.linalg.svd(cov)
    root = u * s.clamp(min=0).sqrt()
    return (root / root.norm(dim=0).max().clamp(min=1e-12)).float()


class ImageParam:
    """``image()`` -> (N, C, H, W) in [0, 1], differentiable in ``params``."""

    def __init__(self, kind: str, init: torch.Tensor, colour: torch.Tensor, size: tuple[int, int]):
        self.kind, self.colour, self.size = kind, colour, size
        self.z = init.clone().requires_grad_(True)
        if kind == "fourier":
            h, w = size
            fy = torch.fft.fftfreq(h)[:, None]
            fx = torch.fft.rfftfreq(w)[None, :]
            # 1/f amplitude: each frequency band gets an equal share of the update
            self.freq_scale = (1.0 / torch.sqrt(fy**2 + fx**2).clamp(min=1.0 / max(h, w))).to(init.device)

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.z]

    def _spatial(self) -> torch.Tensor:
        if self.kind == "pixel":
            return self.z
        spec = torch.view_as_complex(self.z.contiguous()) * self.freq_scale
        # the 1/4 keeps initial values small, as in Lucent's fft_image
        return torch.fft.irfft2(spec, s=self.size, norm="ortho") / 4

    def logits(self) -> torch.Tensor:
        """The image before the sigmoid (N, C, H, W): per pixel and channel, in data colours."""
        z = self._spatial()
        return torch.einsum("dc,nchw->ndhw", self.colour.to(z), z)

    def image(self) -> torch.Tensor:
        return torch.sigmoid(self.logits())


def param_shape(kind: str, channels: int, size: tuple[int, int]) -> tuple[int, ...]:
    h, w = size
    return (channels, h, w // 2 + 1, 2) if kind == "fourier" else (channels, h, w)


def make_param(
    kind: str, noise: torch.Tensor, colour: torch.Tensor, size: tuple[int, int], start: torch.Tensor | None = None
) -> ImageParam:
    """A parameterisation starting from small ``noise`` (N, *param_shape), or from ``start``
    images (N, C, H, W) exactly: image() returns them (to 1e-4) before the first step."""
    if start is None:
        return ImageParam(kind, noise, colour, size)
    # invert the sigmoid and the colour mixing, then (Fourier) the spectrum scaling
    z = torch.logit(start.clamp(1e-4, 1 - 1e-4))
    z = torch.einsum("dc,nchw->ndhw", torch.linalg.inv(colour.double()).float().to(z), z)
    if kind == "fourier":
        probe = ImageParam("fourier", noise, colour, size)
        z = torch.view_as_real(torch.fft.rfft2(z * 4, norm="ortho") / probe.freq_scale)
    return ImageParam(kind, z, colour, size)


def random_affine(
    draws: torch.Tensor, jitter: float, scale: tuple[float, float], rotate: float, size: tuple[int, int]
) -> torch.Tensor:
    """(N, 2, 3) affine matrices for ``grid_sample`` from uniform draws (N, 4) in [0, 1):
    shift up to ``jitter`` pixels, zoom in ``scale``, rotate up to ``rotate`` degrees."""
    h, w = size
    u = draws * 2 - 1  # [-1, 1)
    tx, ty = u[:, 0] * jitter * 2 / w, u[:, 1] * jitter * 2 / h
    s = scale[0] + draws[:, 2] * (scale[1] - scale[0])
    a = u[:, 3] * rotate * math.pi / 180
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)


def transform(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, per image (N,)."""
    dy = (x[:, :, 1:] - x[:, :, :-1]).abs().flatten(1).mean(1)
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dy + dx


def as_numpy_image(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().clamp(0, 1).numpy()
