"""Read class-folder image trees, from a directory or straight out of a tar archive.

Layouts understood (any leading folders are skipped)::

    <root>/train/<class>/*.png     <root>/test/<class>/*.jpg      (split folders)
    <root>/<class>/*.png                                           (no split folders)

Decoding 60,000 small JPEGs takes about 15 s on one core, so it is spread over worker processes
and its result cached as uint8 arrays by the caller.
"""

from __future__ import annotations

import contextvars
import hashlib
import io
import multiprocessing
import os
import posixpath
import sys
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..utils import interactive, usable_cores

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
SPLITS = ("train", "test")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
SIGNATURE_SPAN = 1 << 20  # bytes hashed at each end of an archive


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


# Pixels of one image decoded at most: 40 megapixels (a 15000x15000 PNG of a few kilobytes would
# take 675 MB; the classifiers here read 32x32 to 224x224). Pillow warns only past 89M.
MAX_PIXELS = 40_000_000


def _bounded(im: Image.Image, name: str) -> Image.Image:
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise DataError(
            f"cannot read image {name}: it is {w}x{h} ({w * h:,} pixels), more than the {MAX_PIXELS:,} convlens "
            "decodes (a decompression bomb, or a picture far larger than a classifier's input); shrink it first"
        )
    return im


def decode(name: str, data: bytes | None, size: int | None) -> np.ndarray:
    """One image as uint8 (H, W) for grayscale or (H, W, 3); ``data=None`` reads ``name``."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else name) as im:
            im = _bounded(im, name)
            im = _deep_to_8bit(im, name)
            im = im.convert("L" if im.mode in ("L", "1", "P") and _is_gray(im) else "RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
            return np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError:  # over twice Pillow's own limit: refused while opening
        raise DataError(
            f"cannot read image {name}: more than {MAX_PIXELS:,} pixels (a decompression bomb, or a picture far "
            "larger than a classifier's input); shrink it first"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {name}: {exc}") from None


def _deep_to_8bit(im: Image.Image, name: str) -> Image.Image:
    """16-bit grayscale (``I;16*``, and ``I`` as Pillow opens 16-bit PGMs) keeps its high byte.

    Pillow's own ``convert("L")`` clips such pixels at 255, which turns most images white.
    """
    if not (im.mode == "I" or im.mode.startswith("I;16") or im.mode == "F"):
        return im
    if im.mode == "F":
        raise DataError(f"cannot read image {name}: floating-point pixels (mode F); save it with 8 or 16 bits")
    a = np.asarray(im)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise DataError(
            f"cannot read image {name}: 32-bit integer pixels from {a.min()} to {a.max()}, outside the "
            "16-bit range 0..65535; save it with 8 or 16 bits"
        )
    return Image.fromarray((a.astype(np.uint32) >> 8).astype(np.uint8), "L")


def _is_gray(im: Image.Image) -> bool:
    if im.mode != "P":
        return True
    pal = np.asarray(im.convert("RGB"))
    return bool((pal[..., 0] == pal[..., 1]).all() and (pal[..., 1] == pal[..., 2]).all())


def _decode_chunk(chunk: list[tuple[str, bytes | None]], size: int | None) -> list[np.ndarray]:
    return [decode(name, data, size) for name, data in chunk]


#: where the caller caches what is decoded now (set by the array cache), for the notice
CACHE_NOTE: contextvars.ContextVar[str | None] = contextvars.ContextVar("convlens_cache_note", default=None)
NOTICE_MIN = 1000  # images: decoding fewer takes a moment and goes without a notice


def _announce(total: int) -> None:
    if total < NOTICE_MIN:
        return
    where = CACHE_NOTE.get()
    note = f" once (cached in {where}; later loads read the cache)" if where else ""
    print(f"decoding {total:,} images{note}", file=sys.stderr, flush=True)


def decode_all(items: list[tuple[str, bytes | None]], size: int | None = None, bar: Any = None) -> np.ndarray:
    """Decode ``(name, bytes-or-None)`` pairs into one uint8 (N, H, W, C) array; ``bar`` is a
    progress bar advanced as images are done."""
    if not items:
        return np.zeros((0, 1, 1, 1), np.uint8)
    workers = min(usable_cores(), 8)
    if workers > 1 and len(items) >= 2000 and "fork" in multiprocessing.get_all_start_methods():
        n = workers * 8
        chunks = [items[i::n] for i in range(n)]
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            parts = []
            for part in pool.map(_decode_chunk, chunks, [size] * n):
                parts.append(part)
                if bar is not None:
                    bar.update(len(part))
        arrays: list[np.ndarray] = [None] * len(items)  # type: ignore[list-item]
        for i, part in enumerate(parts):
            arrays[i::n] = part
    else:
        arrays = []
        for i in range(0, len(items), 256):
            arrays += _decode_chunk(items[i : i + 256], size)
            if bar is not None:
                bar.update(len(items[i : i + 256]))
    return _stack(arrays, [name for name, _ in items])


def _stack(arrays: list[np.ndarray], names: list[str]) -> np.ndarray:
    shape0 = arrays[0].shape[:2]
    for a, name in zip(arrays, names):
        if a.shape[:2] != shape0:
            raise DataError(
                f"images differ in size: {names[0]} is {shape0[1]}x{shape0[0]}, {name} is "
                f"{a.shape[1]}x{a.shape[0]}; set data.resize to bring them to one size"
            )
    color = any(a.ndim == 3 for a in arrays)
    out = np.empty((len(arrays), *shape0, 3 if color else 1), np.uint8)
    for i, a in enumerate(arrays):
        out[i] = a if a.ndim == 3 else (a[..., None] if not color else np.repeat(a[..., None], 3, 2))
    return out


# ----------------------------------------------------------------------------------------------
# listing a tree


def _classify(parts: tuple[str, ...]) -> tuple[str | None, str] | None:
    """``(..., split, class, file)`` -> (split, class); ``(..., class, file)`` -> (None, class)."""
    if len(parts) < 2 or Path(parts[-1]).suffix.lower() not in IMAGE_EXT or parts[-1].startswith("."):
        return None
    if len(parts) >= 3 and parts[-3] in SPLITS:
        return parts[-3], parts[-2]
    return None, parts[-2]


def list_tree(root: Path) -> dict[str | None, list[tuple[str, str]]]:
    """Map split (or None) -> sorted ``(class, file name or member)`` pairs, dir or tar.

    A class folder without images is an error: dropping it would shift the index of every class
    after it, so a model trained with it would not match one trained without it.
    """
    found: dict[str | None, list[tuple[str, str]]] = {}
    folders: set[PurePosixPath] = set()  # every non-hidden folder, relative to the root
    if is_archive(root):
        _list_archive(root, found, folders)
    elif root.is_dir():
        _list_folder(root, found, folders)
    if {"train", "test"} <= set(found):
        found.pop(None, None)
    _check_no_empty_class(root, found, folders)
    return {k: sorted(v) for k, v in found.items()}


def _list_archive(root: Path, found: dict[str | None, list[tuple[str, str]]], folders: set[PurePosixPath]) -> None:
    with tarfile.open(root) as tar:
        for m in tar:
            path = PurePosixPath(m.name)
            if not path.parts or any(p.startswith(".") for p in path.parts[:-1]):
                continue
            if m.isdir() and not path.name.startswith("."):
                folders.add(path)
            elif m.isfile():
                parent = path.parent
                while parent.parts and parent not in folders:  # folders implied by files
                    folders.add(parent)
                    parent = parent.parent
                key = _classify(path.parts)
                if key:
                    found.setdefault(key[0], []).append((key[1], m.name))


def _list_folder(root: Path, found: dict[str | None, list[tuple[str, str]]], folders: set[PurePosixPath]) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        folders.update(PurePosixPath(*rel.parts, d) for d in dirnames)
        for f in filenames:
            full = Path(dirpath) / f
            key = _classify(full.relative_to(root).parts)
            if key:
                found.setdefault(key[0], []).append((key[1], str(full)))


def _check_no_empty_class(
    root: Path, found: dict[str | None, list[tuple[str, str]]], folders: set[PurePosixPath]
) -> None:
    archive = is_archive(root)

    def rel(name: str) -> PurePosixPath:
        return PurePosixPath(name) if archive else PurePosixPath(*Path(name).relative_to(root).parts)

    class_dirs = {
        rel(d)
        for d in {posixpath.dirname(n) if archive else os.path.dirname(n) for items in found.values() for _, n in items}
    }
    parents = {d.parent for d in class_dirs}
    empty = sorted(d for d in folders if d.parent in parents and d not in class_dirs)
    if empty:
        where = f"{root} (archive member {empty[0]})" if archive else str(root / empty[0])
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise DataError(
            f"class folder {where} holds no images{more}: a class without images would shift the "
            f"index of every class after it; add images (any of {', '.join(sorted(IMAGE_EXT))}) or "
            "remove the folder"
        )


def read_tree(root: Path, size: int | None = None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Decode a class-folder tree. Returns ``{split: (images, labels)}`` and the class names.

    Without split folders the whole tree comes back under the key ``"all"``.
    """
    listing = list_tree(root)
    if not listing:
        raise DataError(
            f"{root} holds no images in class folders (expected <root>/<class>/*.png or "
            f"<root>/train/<class>/*.jpg and <root>/test/<class>/*.jpg)"
        )
    classes = sorted({c for items in listing.values() for c, _ in items})
    index = {c: i for i, c in enumerate(classes)}
    total = sum(len(items) for items in listing.values())
    _announce(total)
    blobs: dict[str, bytes] = {}
    if is_archive(root):
        wanted = {m for items in listing.values() for _, m in items}
        with tarfile.open(root) as tar:
            for m in tar:
                if m.name in wanted:
                    f = tar.extractfile(m)
                    blobs[m.name] = f.read() if f else b""
    from tqdm.auto import tqdm

    out = {}
    with tqdm(
        total=total, unit="img", desc="decode", file=sys.stderr, disable=total < NOTICE_MIN or not interactive()
    ) as bar:
        for split, items in listing.items():
            x = decode_all([(name, blobs.get(name)) for _, name in items], size, bar)
            y = np.array([index[c] for c, _ in items], dtype=np.int64)
            out[split or "all"] = (x, y)
    return out, classes


VERIFY_ENV = "CONVLENS_VERIFY_CACHE"


def verify_contents() -> bool:
    """``CONVLENS_VERIFY_CACHE=1`` (``convlens train --verify-cache``): key the cache by every
    byte of the data instead of names, sizes and times."""
    return os.environ.get(VERIFY_ENV, "") not in ("", "0")


def _content_signature(root: Path) -> str:
    """Every file's relative name and a hash of all its bytes: a file rewritten in place with the
    same size and time (``cp -p``, an archive restored from a backup) changes it. Reads the
    whole data set once (CIFAR-10's 160 MB in about a second), so it is asked for, not the default."""
    h = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        rel = p.relative_to(root).as_posix() if p != root else p.name
        if any(part.startswith(".") for part in Path(rel).parts):
            continue
        h.update(f"{rel}\0".encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return f"{root.resolve()}|{len(files)} files|content {h.hexdigest()}"


def tree_signature(root: Path) -> str:
    """What a tree holds, for the array cache: a rewritten file changes it.

    A folder: every file's relative name, size and modification time (ns), hashed (folder times do
    not change when a file is rewritten in place). An archive: its size, modification time and a
    hash of its first and last MiB (a .tar.gz ends with the CRC and length of its contents).
    """
    root = Path(root)
    h = hashlib.sha1()
    if verify_contents():
        return _content_signature(root)
    if root.is_file():
        st = root.stat()
        with open(root, "rb") as f:
            h.update(f.read(SIGNATURE_SPAN))
            if st.st_size > SIGNATURE_SPAN:
                f.seek(max(SIGNATURE_SPAN, st.st_size - SIGNATURE_SPAN))
                h.update(f.read())
        return f"{root.resolve()}|{st.st_size}|{st.st_mtime_ns}|{h.hexdigest()}"
    count = 0
    stack = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                stack.append((Path(e.path), f"{rel}{e.name}/"))
            elif e.is_file():
                st = e.stat()
                h.update(f"{rel}{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                count += 1
    return f"{root.resolve()}|{count} files|{h.hexdigest()}"
