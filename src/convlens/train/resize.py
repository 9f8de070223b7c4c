"""Progressive resizing: the first epochs train on smaller images, which cost fewer FLOPs.

``train.resize_schedule: {sizes: [16, 24], fraction: 0.5}`` spreads the listed sizes evenly over
the first half of the epochs (in order) and trains the rest at the data's own size; the last
epoch is always at full size (a 1-epoch run does not resize at all). The network
must accept any input size (the ``fast`` preset ends in a global pool); batch norm's running
statistics come from the last, full-size epochs, so evaluation is at full size as before.
A conv network's cost grows with the pixel count: an epoch at 24x24 costs about (24/32)^2 = 56%
of one at 32x32 on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def epoch_size(sizes: list[int], fraction: float, epoch: int, epochs: int) -> int | None:
    """The training image size of ``epoch`` (0-based) of ``epochs``; None: the data's own size."""
    early = min(int(round(fraction * epochs)), epochs - 1)
    if not sizes or epoch >= early:
        return None
    return int(sizes[min(len(sizes) - 1, epoch * len(sizes) // early)])


def resize_batch(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Area-average resize of a batch (N, C, H, W) to size x size (each output pixel is the mean
    of the input pixels it covers)."""
    if size is None or (x.shape[-2] == size and x.shape[-1] == size):
        return x
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    y = F.interpolate(x, size=(size, size), mode="area")
    return y.contiguous(memory_format=torch.channels_last) if cl else y
