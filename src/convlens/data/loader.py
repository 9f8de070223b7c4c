"""Drawing batches from a split: uint8 -> float in [0, 1] on the device, then batch augmentation."""

from __future__ import annotations

from typing import Iterator

import torch

from .augment import Augment
from .bundle import Split
from .cached import CachedImages
from .crops import random_resized_crop
from .imagecache import prefetched


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
    random_crop: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels, positions)``; positions index into ``split``. ``shard=(rank,
    world)`` yields batches ``rank``, ``rank + world``, ... only: the same batches, cut the same
    way, as one process reads, so the shards' results merge into one process' result.

    Loading uint8 and converting on the device is cheaper than keeping float copies (4x the
    memory); the shuffle order and every augmentation draw come from ``generator`` alone.

    A split read from the image cache (``data.size``) is read one batch ahead on a background
    thread (the reads release the GIL); with ``random_crop`` (training) each batch is its cached
    squares, cut by ``random_resized_crop`` (a box of 8-100% of the area, a flip) to the split's
    size in one ``grid_sample`` on the device; otherwise the centre crop (evaluation). On a GPU
    the host batch is pinned and copied asynchronously.
    """
    n = len(split)
    if shuffle and generator is None:
        raise ValueError("shuffle=True needs a generator, so the order is reproducible")
    device = torch.device(device)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    spans = []
    for b, start in enumerate(range(0, n, batch_size)):
        if shard is not None and b % shard[1] != shard[0]:
            continue
        pos = order[start : start + batch_size]
        if drop_last and len(pos) < batch_size:
            break
        spans.append(pos)
    cached = isinstance(split.images, CachedImages)
    crop = random_crop and cached
    pin = device.type == "cuda" and torch.cuda.is_available()

    def load(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if cached:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            x = split.images.full(pos) if crop else split.images.centre(pos, fmt)
        else:
            x = split.images[pos.to(split.images.device)]
        if pin and x.device.type == "cpu":
            x = x.pin_memory()  # a page-locked buffer: the copy below overlaps the GPU's work
        return pos, x

    for pos, x in prefetched(load, spans, 2) if cached else map(load, spans):
        x = x.to(device, non_blocking=True)
        x = random_resized_crop(x, split.images.size, generator=generator) if crop else x.float().div_(255)
        if augment:
            x = augment(x, generator, epoch, split.indices[pos])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, split.labels[pos.to(split.labels.device)].to(device, non_blocking=True), pos
