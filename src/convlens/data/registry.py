"""The data set registry: a plain dict filled by a decorator.

A loader takes ``(root, download, size)`` and returns :class:`Arrays`: decoded uint8 images (N, H, W, C)
with int64 labels for the train and test splits, and the class names. Everything after that
(caching, grayscale, resizing, subsets, the validation split, normalisation) is shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Arrays:
    train_x: np.ndarray  # uint8 (N, H, W, C)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    source: str = ""  # where the data was read from, for the run folder
    train_moments: np.ndarray | None = None  # per-image channel sums, see bundle.image_moments

    def __post_init__(self) -> None:
        for name in ("train_x", "test_x"):
            a = getattr(self, name)
            if a.dtype != np.uint8 or a.ndim != 4:
                raise ValueError(f"{name} must be uint8 (N, H, W, C), got {a.dtype} {a.shape}")


@dataclass
class DatasetInfo:
    name: str
    load: Callable[[str | None, bool, int | None], Arrays]
    description: str
    offline: str  # how to use it without the internet
    cache_key: Callable[[str | None], str | None] = field(default=lambda root: None)


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(name: str, description: str, offline: str, cache_key=None):
    """Register ``fn(root, download, size) -> Arrays`` under ``name``.

    ``size`` is the requested square side (``data.resize``) for loaders that decode images of
    varying sizes; others ignore it and the shared preprocessing resizes.

    ``cache_key(root)`` returns a string identifying what the source files hold (see
    :func:`~convlens.data.images.tree_signature`); when
    given, decoded arrays are cached under it so a second load skips decoding.
    """

    def deco(fn: Callable[[str | None, bool, int | None], Arrays]):
        DATASETS[name] = DatasetInfo(name, fn, description, offline, cache_key or (lambda root: None))
        return fn

    return deco


def stratified_holdout(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A boolean mask selecting ``round(share * n_c)`` items of every class ``c``, reproducibly."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        mask[rng.choice(idx, int(round(len(idx) * share)), replace=False)] = True
    return mask
