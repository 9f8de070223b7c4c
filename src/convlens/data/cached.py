"""An image folder at a chosen size, read from its on-disk cache: ``data.size``, ``data.crop``, ``data.cache``.

With ``data.size: 224`` an imagefolder is decoded once (:mod:`.imagecache`, in worker
processes) into one uint8 file per split at the short side ``round(size / crop)`` (256 for 224
at the usual 0.875), centre-cropped square. A split's images are then a :class:`CachedImages`,
which stands in for the ``(N, C, size, size)`` uint8 tensor of an in-memory split: indexing it
reads those rows (positioned reads into one batch buffer) and returns their centre
``size`` x ``size``, the evaluation convention (short-side resize, centre crop), exactly those
pixels. Training draws :meth:`CachedImages.full` rows instead and crops them with
``random_resized_crop`` (a flip included) on the whole batch, on the device (``data/loader.py``).

``data.cache``: ``memmap`` reads every batch from the file (the page cache keeps what fits; the
process holds one batch), ``memory`` reads the file whole into RAM first, ``auto`` picks memmap
when the split files together exceed ``CONVLENS_MEMMAP_ABOVE`` bytes (default 1 GiB). Either way
the pixels are the same. The data set's mean and std come from per-image channel sums the
decoding workers stored beside the pixels (over the cached squares), so nothing reads the
images again for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from .. import heap
from ..errors import DataError
from ..utils import human_size
from .imagecache import ImageCache
from .imagefolder import TEST_SHARE  # a folder without split folders: the share held out as test
from .images import is_archive, list_tree, tree_signature
from .registry import stratified_holdout

MEMMAP_ABOVE = 1 << 30  # bytes; CONVLENS_MEMMAP_ABOVE overrides
MATERIALISE_LIMIT = 1 << 30  # bytes of float32 a whole-split .float() may make


class InMemory:
    """``data.cache: memory``: the cache file read whole into RAM, read like the file."""

    def __init__(self, cache: ImageCache):
        self.side, self.channels = cache.side, cache.channels
        shape = (len(cache), cache.side, cache.side, cache.channels)
        self.array = np.fromfile(cache.path, np.uint8).reshape(shape)

    def __len__(self) -> int:
        return len(self.array)

    def read(self, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.array[indices]).permute(0, 3, 1, 2)


class CachedImages:
    """The uint8 images ``rows`` of a cache as a split's ``(N, C, size, size)`` images, read on
    demand: ``images[i]``, ``images[[i, j]]``, ``images[a:b]`` return tensors of the centre crop;
    :meth:`full` the whole cached squares (for random crops); :meth:`subset` another view."""

    dtype = torch.uint8
    device = torch.device("cpu")
    ndim = 4

    def __init__(self, source: ImageCache | InMemory, rows: np.ndarray, size: int):
        if size > source.side:
            raise DataError(f"image cache: crop size {size} is larger than the cached side {source.side}")
        self.source, self.rows, self.size = source, np.asarray(rows, np.int64), size
        self.offset = (source.side - size) // 2

    @property
    def side(self) -> int:
        return self.source.side

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), self.source.channels, self.size, self.size))

    def __len__(self) -> int:
        return len(self.rows)

    def dim(self) -> int:
        return 4

    def positions(self, idx) -> np.ndarray:
        """Any index (slice, list, array, tensor, boolean mask) as int64 positions into this view."""
        if isinstance(idx, slice):
            return np.arange(len(self))[idx]
        a = np.asarray(idx.cpu() if torch.is_tensor(idx) else idx).reshape(-1)
        if a.dtype == bool:
            return np.flatnonzero(a)
        a = a.astype(np.int64)
        if a.size and (a.min() < -len(self) or a.max() >= len(self)):
            raise IndexError(f"image index out of range 0 to {len(self) - 1}")
        return np.where(a < 0, a + len(self), a)

    def full(self, idx) -> torch.Tensor:
        """uint8 (B, C, side, side): the cached squares of positions ``idx``, in that order. Rows
        are read in file order (runs of consecutive rows in one read), then put in the asked order."""
        rows = self.rows[self.positions(idx)]
        order = np.argsort(rows, kind="stable")
        x = self.source.read(rows[order])
        if np.all(order[1:] > order[:-1]):
            return x
        out = torch.empty_like(x)
        out[torch.from_numpy(order)] = x
        return out

    def centre(self, idx, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """uint8 (B, C, size, size): the centre crops of positions ``idx``. The rows are read
        channels-last; ``torch.channels_last`` keeps them so (the crop then copies whole pixel
        runs, about 2x faster than reordering to NCHW for 256 images of 128 px, and a conv
        model's channels_last input costs nothing more)."""
        o, s = self.offset, self.size
        return self.full(idx)[..., o : o + s, o : o + s].contiguous(memory_format=memory_format)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, (int, np.integer)) or (torch.is_tensor(idx) and idx.dim() == 0):
            return self.centre([int(idx)])[0]
        return self.centre(idx)

    def subset(self, idx) -> CachedImages:
        return CachedImages(self.source, self.rows[self.positions(idx)], self.size)

    def float(self) -> torch.Tensor:
        """Every image as float32 (0 to 255) in memory: for small views (a few images picked to
        explain); a whole large split is refused (stream it with ``data.batches`` instead)."""
        nbytes = 4 * int(np.prod(self.shape))
        if nbytes > MATERIALISE_LIMIT:
            raise DataError(
                f"{len(self):,} images of {self.size}x{self.size} as float32 would take {human_size(nbytes)}; "
                "read them in batches (convlens.data.batches) instead"
            )
        return self[:].float()


@dataclass
class CachedArrays:
    """What ``load_arrays`` gives for an in-memory data set, read from the cache instead."""

    train_x: CachedImages
    train_y: np.ndarray
    test_x: CachedImages
    test_y: np.ndarray
    classes: list[str]
    source: str
    train_moments: np.ndarray  # (N, C, 2) per-image channel sums of train_x's rows
    pixels: int  # pixels per image the moments sum over


def memmap_above() -> int:
    raw = os.environ.get("CONVLENS_MEMMAP_ABOVE", "").strip()
    if not raw:
        return MEMMAP_ABOVE
    try:
        return int(float(raw))
    except ValueError:
        raise DataError(f"CONVLENS_MEMMAP_ABOVE={raw!r}; allowed: a number of bytes (e.g. 1e9)") from None


def _caches(root: Path, side: int, channels: int, folder: Path) -> dict[str, ImageCache]:
    """The cache of each split of ``root`` (``train`` and ``test``, or ``all``), built if missing.
    A tree decoded before is found by its signature alone, without listing it again."""
    signature = tree_signature(root)
    found = {}
    for split in ("train", "test", "all"):
        meta = ImageCache.stem(root, split, side, folder, channels, signature).with_suffix(".json")
        if meta.is_file():
            found[split] = ImageCache.open(meta)
    if "all" in found:
        return {"all": found["all"]}
    if {"train", "test"} <= set(found):
        return found
    listing = list_tree(root)
    if not listing:
        raise DataError(
            f"{root} holds no images in class folders (expected <root>/<class>/*.png or "
            "<root>/train/<class>/*.jpg and <root>/test/<class>/*.jpg)"
        )
    splits = ["all"] if None in listing else ["train", "test"]
    if None not in listing and set(listing) != {"train", "test"}:
        raise DataError(f"{root} has {sorted(listing)} split folders; need both train/ and test/")
    return {s: ImageCache.build(root, s, side, folder, channels, listing=listing) for s in splits}


def load_cached(cfg: DataConfig, folder: Path) -> CachedArrays:
    """``cfg.root`` decoded (once) into ``folder`` at the short side ``round(size / crop)`` and
    opened as configured (``data.cache``)."""
    if not cfg.root:
        raise DataError("data.size needs data.root: a folder (or .tar/.tar.gz) of class folders")
    root = Path(cfg.root).expanduser()
    if not (root.is_dir() or is_archive(root)):
        raise DataError(f"data.root {root} is not a folder or a .tar/.tar.gz archive of class folders")
    side = round(cfg.size / cfg.crop)
    if side > 1024:
        raise DataError(f"data.size={cfg.size} with data.crop={cfg.crop} caches {side} px; at most 1024 allowed")
    caches = _caches(root, side, 1 if cfg.grayscale else 3, folder)
    total = sum(c.path.stat().st_size for c in caches.values())
    memmap = cfg.cache == "memmap" or (cfg.cache == "auto" and total > memmap_above())
    if memmap:
        heap.return_large_blocks()
    sources = {k: c if memmap else InMemory(c) for k, c in caches.items()}
    first = next(iter(caches.values()))
    if "all" in caches:
        c = caches["all"]
        test = stratified_holdout(c.labels, TEST_SHARE, seed=0)
        tr, te = np.flatnonzero(~test), np.flatnonzero(test)
        parts = ((sources["all"], tr, c.labels[tr], c.moments[tr]), (sources["all"], te, c.labels[te], None))
    else:
        a, b = caches["train"], caches["test"]
        rows_a, rows_b = np.arange(len(a)), np.arange(len(b))
        parts = ((sources["train"], rows_a, a.labels, a.moments), (sources["test"], rows_b, b.labels, None))
    (s1, r1, y1, m1), (s2, r2, y2, _) = parts
    return CachedArrays(
        CachedImages(s1, r1, cfg.size),
        np.asarray(y1, np.int64),
        CachedImages(s2, r2, cfg.size),
        np.asarray(y2, np.int64),
        list(first.classes),
        str(root),
        m1,
        side * side,
    )
