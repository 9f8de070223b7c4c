"""Drawing batches from a split: uint8 -> float in [0, 1] on the device, then batch augmentation."""

from __future__ import annotations

from typing import Iterator

import torch

from .augment import Augment
from .bundle import Split


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: Augment | None = None,
    epoch: int = 0,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    drop_last: bool = False,
    shard: tuple[int, int] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels, positions)``; positions index into ``split``. ``shard=(rank,
    world)`` yields batches ``rank``, ``rank + world``, ... only: the same batches, cut the same
    way, as one process reads, so the shards' results merge into one process' result.

    Loading uint8 and converting on the device is cheaper than keeping float copies (4x the
    memory); the shuffle order and every augmentation draw come from ``generator`` alone.
    """
    n = len(split)
    if shuffle and generator is None:
        raise ValueError("shuffle=True needs a generator, so the order is reproducible")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for b, start in enumerate(range(0, n, batch_size)):
        if shard is not None and b % shard[1] != shard[0]:
            continue
        pos = order[start : start + batch_size]
        if drop_last and len(pos) < batch_size:
            break
        x = split.images[pos.to(split.images.device)].to(device, non_blocking=True).float().div_(255)
        if augment:
            x = augment(x, generator, epoch, split.indices[pos])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, split.labels[pos.to(split.labels.device)].to(device, non_blocking=True), pos
