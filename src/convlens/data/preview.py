"""A picture of what the configured augmentation does to training images (CSCI-611 Fig 1.1).

Each row is one training image: the original, then ``copies`` augmented versions drawn by the
same :class:`~convlens.data.augment.Augment` the training loop uses (copy ``e`` as on epoch
``e``). Tiles are upscaled by an integer factor with nearest neighbours and written as exact
pixels (no axes, no resampling), so a test can compare a tile with the image it shows; the
JSON written next to the PNG says which image and which copy each tile is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ExperimentConfig
from ..errors import DataError
from .augment import Augment
from .bundle import load_data

GAP = 2  # white pixels between tiles


def across_classes(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Positions of ``count`` images taken from the classes in turn (the first image of each class,
    then the second of each, ...), so a class-ordered image folder shows every class, not eight
    airplanes."""
    by_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
    picked: list[int] = []
    for rank in range(max((len(p) for p in by_class), default=0)):
        picked += [int(p[rank]) for p in by_class if rank < len(p)]
        if len(picked) >= count:
            break
    return torch.tensor(picked[:count], dtype=torch.long)


def augmented_samples(cfg: ExperimentConfig, count: int = 8, copies: int = 4, seed: int = 0) -> dict[str, Any]:
    """``count`` training images, taken from the classes in turn (:func:`across_classes`), as
    floats in [0, 1] (N, C, H, W) and ``copies`` augmentations of each (N, copies, C, H, W), drawn
    from a generator seeded with ``seed``."""
    augment_cfg = cfg.data.augment
    data = load_data(cfg.data)
    augment = Augment(augment_cfg, data.mean, cfg.seed)
    if not augment:
        raise DataError("data.augment is empty in this config; nothing to preview (add e.g. flip: {p: 0.5})")
    split = data.train.take(across_classes(data.train.labels, count))
    x = split.images.float() / 255
    g = torch.Generator().manual_seed(seed)
    out = torch.stack([augment(x, g, epoch=e, indices=split.indices) for e in range(copies)], 1)
    return {
        "images": x,
        "augmented": out.clamp(0, 1),
        "labels": split.labels.tolist(),
        "indices": split.indices.tolist(),
        "classes": data.classes,
    }


def tile_scale(height: int) -> int:
    """The integer upscaling that makes a tile at least 64 pixels tall."""
    return max(1, -(-64 // height))


def grid(images: torch.Tensor, augmented: torch.Tensor, scale: int) -> np.ndarray:
    """uint8 (rows, cols, 3) picture: a row per image, the original first, then its copies."""
    n, copies, c, h, w = augmented.shape
    th, tw = h * scale, w * scale
    canvas = np.full((n * (th + GAP) + GAP, (copies + 1) * (tw + GAP) + GAP, 3), 255, np.uint8)
    for i in range(n):
        for j, tile in enumerate([images[i], *augmented[i]]):
            px = (tile.clamp(0, 1) * 255).round().to(torch.uint8)
            px = px.repeat_interleave(scale, 1).repeat_interleave(scale, 2).permute(1, 2, 0).numpy()
            top, left = GAP + i * (th + GAP), GAP + j * (tw + GAP)
            canvas[top : top + th, left : left + tw] = px if c == 3 else px[..., :1]
    return canvas


def write_preview(cfg: ExperimentConfig, out: str | Path, count: int = 8, copies: int = 4, seed: int = 0) -> Path:
    """Write the augmentation picture to ``out`` (PNG) and its description to ``out`` .json."""
    from PIL import Image

    s = augmented_samples(cfg, count, copies, seed)
    scale = tile_scale(s["images"].shape[2])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(s["images"], s["augmented"], scale)).save(out)
    meta = {
        "what": "rows: training images; column 0: the original, columns 1..: augmented copies (copy e as on epoch e)",
        "data": cfg.data.name,
        "augment": cfg.data.augment.model_dump(exclude_none=True),
        "seed": seed,
        "scale": scale,
        "gap": GAP,
        "indices": s["indices"],
        "labels": [s["classes"][y] for y in s["labels"]],
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return out
