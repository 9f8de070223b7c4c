"""From a data config to uint8 tensors split into train / val / test, with the cache in between.

Images stay uint8 until a batch is drawn: 50,000 CIFAR-10 images are 150 MB as uint8 and four
times that as float32, and converting per batch costs nothing measurable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from ..utils import human_size
from .cached import CachedArrays, CachedImages, load_cached
from .images import CACHE_NOTE
from .registry import DATASETS, Arrays, stratified_holdout

CACHE_FORMAT = 1


@dataclass
class Split:
    images: torch.Tensor | CachedImages  # uint8 (N, C, H, W), in memory or read from the image cache
    labels: torch.Tensor  # int64 (N,)
    indices: torch.Tensor  # int64 (N,): position in the data set's own train or test split

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: torch.Tensor | np.ndarray | list[int]) -> Split:
        idx = torch.as_tensor(idx, dtype=torch.long)
        images = self.images.subset(idx) if isinstance(self.images, CachedImages) else self.images[idx]
        return Split(images, self.labels[idx], self.indices[idx])


@dataclass
class DataBundle:
    name: str
    classes: list[str]
    mean: list[float]
    std: list[float]
    source: str
    train: Split
    val: Split | None
    test: Split

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.test.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Split:
        allowed = ["train", "test"] + (["val"] if self.val is not None else [])
        if name not in allowed:
            raise DataError(f"split {name!r} does not exist here; allowed: {', '.join(allowed)}")
        return getattr(self, name)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "classes": self.classes,
            "shape": list(self.shape),
            "mean": self.mean,
            "std": self.std,
            "source": self.source,
            "sizes": {
                k: len(s) for k, s in (("train", self.train), ("val", self.val), ("test", self.test)) if s is not None
            },
        }


# ----------------------------------------------------------------------------------------------
# cache


def cache_home() -> Path:
    return Path(os.environ.get("CONVLENS_CACHE") or Path.home() / ".cache" / "convlens" / "arrays")


def _cache_dir(key: str) -> Path:
    return cache_home() / hashlib.sha1(f"{CACHE_FORMAT}|{key}".encode()).hexdigest()[:20]


def _read_cache(folder: Path) -> Arrays | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        arrays = {k: np.load(folder / f"{k}.npy") for k in ("train_x", "train_y", "test_x", "test_y")}
        a = Arrays(**arrays, classes=meta["classes"], source=meta["source"])
        a.train_moments = np.load(folder / "train_moments.npy")
    except (OSError, ValueError, KeyError):
        return None
    return a


def _write_cache(folder: Path, a: Arrays) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        for k in ("train_x", "train_y", "test_x", "test_y"):
            np.save(tmp / f"{k}.npy", getattr(a, k))
        np.save(tmp / "train_moments.npy", _train_moments(a))
        (tmp / "meta.json").write_text(json.dumps({"classes": a.classes, "source": a.source}))
        os.rename(tmp, folder)  # atomic; a concurrent writer that lost the race just cleans up
    except OSError:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# preprocessing on uint8 arrays


def to_grayscale(x: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, as Pillow's ``convert("L")``: (299 R + 587 G + 114 B) / 1000."""
    if x.shape[-1] == 1:
        return x
    w = np.array([299, 587, 114], dtype=np.uint32)
    return ((x.astype(np.uint32) @ w + 500) // 1000).astype(np.uint8)[..., None]


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear, antialiased resize of a whole uint8 (N, H, W, C) array to (N, size, size, C)."""
    if x.shape[1:3] == (size, size):
        return x
    _check_fits(len(x) * size * size * x.shape[-1], f"data.resize={size} makes {len(x):,} images of {size}x{size}")
    out = np.empty((len(x), size, size, x.shape[-1]), np.uint8)
    for i in range(0, len(x), 4096):
        t = torch.from_numpy(x[i : i + 4096]).permute(0, 3, 1, 2).float()
        r = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + 4096] = r.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def _check_fits(nbytes: int, what: str) -> None:
    """Refuse an array larger than the memory available now, before allocating it."""
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not available here
        return
    if nbytes > free:
        raise DataError(
            f"{what}: {human_size(nbytes)}, more than the {human_size(free)} of memory available; "
            "choose a smaller data.resize (or data.train_subset)"
        )


def _preprocess(a: Arrays, cfg: DataConfig) -> Arrays:
    tx, sx = a.train_x, a.test_x
    if cfg.grayscale:
        tx, sx = to_grayscale(tx), to_grayscale(sx)
    if cfg.resize:
        tx, sx = resize(tx, cfg.resize), resize(sx, cfg.resize)
    return Arrays(tx, a.train_y, sx, a.test_y, a.classes, a.source)


def load_arrays(cfg: DataConfig) -> Arrays:
    """The data set's decoded, preprocessed uint8 arrays, from the cache when possible."""
    info = DATASETS[cfg.name]
    key = info.cache_key(cfg.root)
    folder = _cache_dir(f"{key}|gray={cfg.grayscale}|size={cfg.resize}") if key else None
    if folder is not None and folder.is_dir():
        cached = _read_cache(folder)
        if cached is not None:
            return cached
    note = CACHE_NOTE.set(str(folder) if folder is not None else None)
    try:
        arrays = _preprocess(info.load(cfg.root, cfg.download, cfg.resize), cfg)
    finally:
        CACHE_NOTE.reset(note)
    if folder is not None:
        _write_cache(folder, arrays)
    return arrays


# ----------------------------------------------------------------------------------------------
# splits and statistics


def image_moments(x: np.ndarray) -> np.ndarray:
    """Per image and channel: exact sum and sum of squares of the uint8 values, int64 (N, C, 2)."""
    out = np.empty((len(x), x.shape[-1], 2), np.int64)
    for i in range(0, len(x), 4096):
        chunk = x[i : i + 4096].astype(np.int64)
        out[i : i + 4096, :, 0] = chunk.sum((1, 2))
        out[i : i + 4096, :, 1] = (chunk * chunk).sum((1, 2))
    return out


def channel_mean(images: torch.Tensor | CachedImages, chunk: int = 1024) -> torch.Tensor:
    """Per-channel mean on the [0, 1] scale of uint8 (N, C, H, W) images, read ``chunk`` images at
    a time (a split read from the image cache is never held whole)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    for i in range(0, len(images), chunk):
        total += images[i : i + chunk].to(torch.float64).sum((0, 2, 3))
    return (total / max(1, len(images) * images.shape[2] * images.shape[3]) / 255).float()


def channel_stats(moments: np.ndarray, pixels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the [0, 1] scale from :func:`image_moments` of a subset."""
    total = moments.sum(0).astype(np.float64)  # (C, 2)
    n = pixels * len(moments)
    mean = total[:, 0] / n
    var = np.maximum(total[:, 1] / n - mean**2, 1e-12)
    return [round(float(m) / 255, 6) for m in mean], [round(float(v) ** 0.5 / 255, 6) for v in var]


def _train_moments(a: Arrays | CachedArrays) -> np.ndarray:
    # computed once per source and cached, so the mean/std of any subset costs a sum over N rows
    if a.train_moments is None:
        a.train_moments = image_moments(a.train_x)
    return a.train_moments


def _to_split(x: np.ndarray | CachedImages, y: np.ndarray, idx: np.ndarray) -> Split:
    if isinstance(x, CachedImages):  # a view of the cache: nothing read now
        return Split(x.subset(idx), torch.from_numpy(y[idx].astype(np.int64)), torch.from_numpy(idx.astype(np.int64)))
    images = torch.from_numpy(np.ascontiguousarray(x[idx].transpose(0, 3, 1, 2)))
    return Split(images, torch.from_numpy(y[idx].astype(np.int64)), torch.from_numpy(idx.astype(np.int64)))


def _subset(n: int, size: int | None, seed: int) -> np.ndarray:
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


def _flat_channels(cfg: DataConfig, mean: list[float], std: list[float]) -> list[float]:
    """A channel with one value in every pixel of every training image has no spread to divide by
    (a NaN from the first batch, which would read as divergence): every channel so is an error,
    one among others is left unscaled (std 1)."""
    flat = [s < 1e-6 for s in std]
    if all(flat):
        value = ", ".join(f"{round(255 * m)}" for m in mean)
        raise DataError(
            f"{cfg.name}{f' ({cfg.root})' if cfg.root else ''}: every training image is the same flat colour "
            f"(pixel value {value} everywhere): there is nothing to learn from; check the images"
        )
    return [1.0 if f else s for f, s in zip(flat, std)]


def load_data(cfg: DataConfig) -> DataBundle:
    """Load, split and describe a data set as configured (``data.size``: through the on-disk
    image cache, :mod:`.cached`, whose splits read their images on demand).

    ``train_subset`` picks images from the official train split first; the validation split is
    then carved from those (stratified, by ``split_seed``), so train and val never overlap.
    """
    a = load_cached(cfg, cache_home() / "images") if cfg.size else load_arrays(cfg)
    train_idx = _subset(len(a.train_y), cfg.train_subset, cfg.split_seed)
    val_idx = np.zeros(0, np.int64)
    if cfg.val_fraction > 0:
        mask = stratified_holdout(a.train_y[train_idx], cfg.val_fraction, cfg.split_seed)
        train_idx, val_idx = train_idx[~mask], train_idx[mask]
        if len(val_idx) == 0:
            raise DataError(
                f"data.val_fraction={cfg.val_fraction} leaves no validation image out of "
                f"{len(mask)}; raise it or set it to 0"
            )
    if len(train_idx) == 0:
        raise DataError(f"{cfg.name}: no training images left (train_subset={cfg.train_subset})")
    test_idx = _subset(len(a.test_y), cfg.test_subset, cfg.split_seed + 1)
    if isinstance(a, CachedArrays):
        channels, pixels = a.train_x.shape[1], a.pixels
    else:
        channels, pixels = a.train_x.shape[-1], a.train_x.shape[1] * a.train_x.shape[2]
    if cfg.normalize and cfg.mean is None:
        mean, std = channel_stats(_train_moments(a)[train_idx], pixels)
        std = _flat_channels(cfg, mean, std)
    elif cfg.normalize:
        mean, std = list(cfg.mean), list(cfg.std or [1.0] * channels)
    else:
        mean, std = [0.0] * channels, [1.0] * channels
    if len(mean) != channels or len(std) != channels:
        raise DataError(
            f"data.mean / data.std have {len(mean)} / {len(std)} values; the images have {channels} channel(s)"
        )
    return DataBundle(
        name=cfg.name,
        classes=list(a.classes),
        mean=mean,
        std=std,
        source=a.source,
        train=_to_split(a.train_x, a.train_y, train_idx),
        val=_to_split(a.train_x, a.train_y, val_idx) if len(val_idx) else None,
        test=_to_split(a.test_x, a.test_y, test_idx),
    )
