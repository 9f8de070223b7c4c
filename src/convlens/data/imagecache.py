"""An image folder larger than memory: decoded once into an on-disk uint8 array, read in batches.

``ImageCache.build(root, "train", 146)`` decodes ``<root>/train/<class>/*`` (or
``<root>/<class>/*`` as split ``"all"``; ``root`` may be a .tar/.tar.gz of such a tree, read once
in its own order) in worker processes, each image resized so its short side is ``side`` and
centre-cropped to ``side`` x ``side``, into one raw file of shape ``(N, side, side, C)``
(``np.memmap(path, np.uint8, "r", shape=...)`` reads it anywhere), with its labels, per-image
channel sums (for the mean and std) and class names beside it; one file per split and size,
named by a hash of the file list (names, sizes, modification times), so a changed folder is
decoded again. The workers write straight into the file: no process holds more than a chunk of
decoded pixels. Progress goes to stderr. The pixels are written to a temporary file renamed
when complete and the JSON is written last, so a decode that is interrupted (Ctrl-C, an
unreadable image, named) or killed is never read as a cache; a killed one's temporary file is
removed by the next build. ``data/cached.py`` puts this behind ``data.size``.

``cache.batches(batch_size, shuffle=True)`` yields ``(uint8 NCHW, labels)``; a background thread
reads the next batch while the caller works. Rows are read with positioned reads into one batch
buffer rather than through a memory map: pages of a mapped file count in the reader's resident
set once touched, so an epoch over a memory-mapped 2.4 GB cache would grow it by 2.4 GB; the OS
page cache still keeps what fits (benchmarks/bench_data_cache.py measures both).

The usual conventions at larger sizes, on whole batches (``data/crops.py``): ``center_crop``
for evaluation (short side to ``size / 0.875``, centre ``size`` crop), ``random_resized_crop``
(with a horizontal flip) for training.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import queue
import sys
import tarfile
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from ..utils import interactive, usable_cores
from .images import decode, is_archive, list_tree, tree_signature

CHUNK = 256  # images per worker task: a task holds CHUNK decoded images at most
FORMAT = 2  # bumped when the file layout changes (2: per-image channel moments beside the pixels)


def _square(name: str, data: bytes | None, side: int, channels: int) -> np.ndarray:
    """One image, short side resized to ``side`` (bilinear, antialiased), centre-cropped square."""
    a = decode(name, data, None)
    im = Image.fromarray(a).convert("RGB" if channels == 3 else "L")
    w, h = im.size
    scale = side / min(w, h)
    nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - side) // 2, (nh - side) // 2
    out = np.asarray(im.crop((left, top, left + side, top + side)), dtype=np.uint8)
    return out.reshape(side, side, channels)


def _decode_into(
    path: str, shape: tuple[int, ...], rows: list[int], items: list[tuple[str, bytes | None]], side: int
) -> tuple[list[int], np.ndarray]:
    """Worker task: decode ``items`` into ``rows`` of the file at ``path``. Returns the rows and
    their per-image channel sums and sums of squares (int64 (n, C, 2), for the data set's mean/std)."""
    out = np.memmap(path, np.uint8, "r+", shape=shape)
    moments = np.empty((len(rows), shape[3], 2), np.int64)
    try:
        for i, (row, (name, data)) in enumerate(zip(rows, items)):
            a = _square(name, data, side, shape[3])
            out[row] = a
            v = a.reshape(-1, shape[3]).astype(np.int64)
            moments[i, :, 0] = v.sum(0)
            moments[i, :, 1] = (v * v).sum(0)
        out.flush()
    finally:
        del out
    return rows, moments


@dataclass
class ImageCache:
    """One split of an image folder at one size, on disk; see the module docstring."""

    path: Path  # the raw (N, side, side, C) uint8 file
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    side: int
    channels: int
    moments: np.ndarray | None = None  # (N, C, 2) int64: per image and channel, sum and sum of squares

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def row_bytes(self) -> int:
        return self.side * self.side * self.channels

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        root: str | Path,
        split: str,
        side: int,
        cache_dir: str | Path | None = None,
        channels: int = 3,
        workers: int | None = None,
        echo=None,
        listing: dict | None = None,
    ) -> ImageCache:
        """The cache of ``split`` (``train``, ``test``, or ``all`` for a folder without split
        folders) at ``side`` px, decoded now if it is missing or the folder changed. ``root`` is a
        folder or a .tar/.tar.gz of one (read once, in order; workers decode what it streams);
        ``listing`` is its :func:`list_tree`, when the caller has it."""
        root = Path(root).expanduser()
        stem = cls.stem(root, split, side, cache_dir, channels)
        meta = stem.with_suffix(".json")
        if meta.is_file():  # built from this very tree: its listing is not needed
            return cls.open(meta)
        archive = is_archive(root)
        folder = stem.parent
        listing = list_tree(root) if listing is None else listing
        key = None if split == "all" else split
        if key not in listing:
            raise DataError(f"image cache: {root} has no split {split!r}; found: {sorted(k or 'all' for k in listing)}")
        classes = sorted({c for items in listing.values() for c, _ in items})
        items = listing[key]
        folder.mkdir(parents=True, exist_ok=True)
        _remove_orphans(folder, stem.name)
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[c] for c, _ in items], np.int64)
        shape = (len(items), side, side, channels)
        names = [n for _, n in items]
        tmp = stem.with_suffix(f".u8.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.truncate(int(np.prod(shape)))
            say = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
            say(f"decoding {len(items):,} images of {root} ({split}) once into {stem.with_suffix('.u8')}")
            tasks = _archive_tasks(root, names) if archive else _folder_tasks(names)
            moments = _fill(str(tmp), shape, tasks, side, workers, _Progress(len(items), say))
            np.save(stem.with_suffix(".labels.npy"), labels)
            np.save(stem.with_suffix(".moments.npy"), moments)
            os.replace(tmp, stem.with_suffix(".u8"))
        finally:
            tmp.unlink(missing_ok=True)
        doc = {"format": FORMAT, "root": str(root), "split": split, "count": len(items), "side": side}
        doc |= {"channels": channels, "classes": classes}
        tmp_meta = meta.with_suffix(f".json.tmp{os.getpid()}")
        tmp_meta.write_text(json.dumps(doc, indent=1))
        os.replace(tmp_meta, meta)  # last: a cache without its JSON is incomplete and rebuilt
        return cls.open(meta)

    @staticmethod
    def stem(
        root: Path, split: str, side: int, cache_dir: str | Path | None = None, channels: int = 3, signature=None
    ) -> Path:
        """The cache files' common path (``.u8``, ``.json``, ...) for ``split`` of ``root`` at ``side``,
        named by what the tree holds (:func:`tree_signature`: names, sizes, times)."""
        if not (root.is_dir() or is_archive(root)):
            raise DataError(
                f"image cache: {root} is not a folder or a .tar/.tar.gz archive "
                "(expected <root>/[train|test/]<class>/<images>)"
            )
        if not 16 <= side <= 1024 or channels not in (1, 3):
            raise DataError(f"image cache: side={side}, channels={channels}; allowed: side 16 to 1024, channels 1 or 3")
        signature = tree_signature(root) if signature is None else signature
        digest = hashlib.sha1(f"{FORMAT}|{signature}|{side}|{channels}".encode()).hexdigest()[:16]
        folder = (
            Path(cache_dir) if cache_dir is not None else (root.parent if root.is_file() else root) / ".convlens-cache"
        )
        return folder / f"{split}-{side}px-{channels}c-{digest}"

    @classmethod
    def open(cls, meta: str | Path) -> ImageCache:
        meta = Path(meta)
        try:
            doc = json.loads(meta.read_text())
            labels = np.load(meta.with_suffix(".labels.npy"))
            moments = np.load(meta.with_suffix(".moments.npy"))
        except (OSError, ValueError) as exc:
            raise DataError(f"image cache {meta} cannot be read ({exc}); delete it to decode again") from None
        path = meta.with_suffix(".u8")
        expected = doc["count"] * doc["side"] ** 2 * doc["channels"]
        if (
            not path.is_file()
            or path.stat().st_size != expected
            or len(labels) != doc["count"]
            or moments.shape != (doc["count"], doc["channels"], 2)
        ):
            raise DataError(f"image cache {path} is damaged (size or labels differ from {meta}); delete it")
        return cls(path, labels, list(doc["classes"]), int(doc["side"]), int(doc["channels"]), moments)

    # -- reading ---------------------------------------------------------------------------------
    def read(self, indices: np.ndarray | list[int]) -> torch.Tensor:
        """Images ``indices`` as uint8 (B, C, side, side), channels-last in memory; runs of
        consecutive indices are read in one call."""
        idx = np.asarray(indices, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"image index out of range 0 to {len(self) - 1}")
        buf = np.empty((len(idx), self.side, self.side, self.channels), np.uint8)
        flat = buf.reshape(len(idx), -1)
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(idx)]):
                view = memoryview(flat[lo:hi].reshape(-1))
                got = os.preadv(fd, [view], int(idx[lo]) * self.row_bytes)
                if got != view.nbytes:
                    raise DataError(f"image cache {self.path} is truncated; delete it to decode again")
        finally:
            os.close(fd)
        return torch.from_numpy(buf).permute(0, 3, 1, 2)

    def order(self, shuffle: bool, seed: int = 0, epoch: int = 0) -> np.ndarray:
        if not shuffle:
            return np.arange(len(self))
        return np.random.default_rng([seed, epoch]).permutation(len(self))

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        prefetch: int = 2,
        indices: np.ndarray | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(uint8 images NCHW, labels)`` over ``indices`` (default: every image, shuffled by
        ``seed`` and ``epoch`` when ``shuffle``); each batch's rows are read in index order."""
        order = self.order(shuffle, seed, epoch) if indices is None else np.asarray(indices, np.int64)
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        spans = [order[i : min(i + batch_size, stop)] for i in range(0, stop, batch_size)]

        def load(span: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            span = np.sort(span)
            return self.read(span), torch.from_numpy(self.labels[span])

        if prefetch < 1:
            yield from (load(s) for s in spans)
            return
        yield from prefetched(load, spans, prefetch)


def prefetched(load, spans: list[np.ndarray], depth: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``load(span)`` for each span, ``depth`` ahead on one background thread (reads release the
    GIL); an error there is raised here, and leaving the loop early stops the thread."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for span in spans:
                if stop.is_set():
                    return
                q.put(("ok", load(span)))
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(("error", exc))
        q.put(("done", None))

    thread = threading.Thread(target=work, daemon=True, name="imagecache-prefetch")
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a put() waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.01)


def _folder_tasks(names: list[str]) -> Iterator[tuple[list[int], list[tuple[str, bytes | None]]]]:
    for start in range(0, len(names), CHUNK):
        chunk = names[start : start + CHUNK]
        yield list(range(start, start + len(chunk))), [(n, None) for n in chunk]


def _archive_tasks(root: Path, names: list[str]) -> Iterator[tuple[list[int], list[tuple[str, bytes | None]]]]:
    """The archive read once, in its own order (a .tar.gz cannot seek): chunks of CHUNK members'
    bytes with the rows they go to; the caller keeps only a few chunks in flight."""
    row_of = {n: i for i, n in enumerate(names)}
    rows: list[int] = []
    chunk: list[tuple[str, bytes | None]] = []
    with tarfile.open(root) as tar:
        for m in tar:
            if m.name not in row_of:
                continue
            f = tar.extractfile(m)
            rows.append(row_of.pop(m.name))
            chunk.append((f"{m.name} (in {root})", f.read() if f else b""))
            if len(rows) == CHUNK:
                yield rows, chunk
                rows, chunk = [], []
    if rows:
        yield rows, chunk


class _Progress:
    """Images decoded so far, on stderr: a bar on a terminal, else a line every tenth."""

    def __init__(self, total: int, say) -> None:
        self.total, self.say, self.done, self.told = total, say, 0, 0
        self.bar = None
        if interactive() and total >= 1000:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="img", desc="decode", file=sys.stderr, leave=False)

    def __call__(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if self.done >= self.total:
                self.bar.close()
        elif self.total >= 1000 and self.done * 10 // self.total > self.told:
            self.told = self.done * 10 // self.total
            self.say(f"  decoded {self.done:,} of {self.total:,} images")


def _remove_orphans(folder: Path, stem: str) -> None:
    """Temporary files of decodes whose process is gone (killed mid-way): never read, only removed."""
    for f in folder.glob(f"{stem}.*.tmp*"):
        pid = f.name.rsplit(".tmp", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            f.unlink(missing_ok=True)
        except OSError:  # alive, another user's: leave it
            pass


def _fill(path: str, shape: tuple[int, ...], tasks, side: int, workers: int | None, progress) -> np.ndarray:
    """Decode every task into the file at ``path`` (serially, or in ``workers`` forked processes
    with at most two tasks each in flight); returns the (N, C, 2) moments. An error in a worker
    (an unreadable image, named) or Ctrl-C cancels the rest; the caller removes the file."""
    moments = np.zeros((shape[0], shape[3], 2), np.int64)
    filled = np.zeros(shape[0], bool)

    def finish(rows: list[int], m: np.ndarray) -> None:
        moments[rows] = m
        filled[rows] = True
        progress(len(rows))

    workers = workers if workers is not None else min(usable_cores(), 8)
    if workers <= 1 or shape[0] <= CHUNK or "fork" not in multiprocessing.get_all_start_methods():
        for rows, items in tasks:
            finish(*_decode_into(path, shape, rows, items, side))
    else:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        pending: set = set()
        try:
            for rows, items in tasks:
                pending.add(pool.submit(_decode_into, path, shape, rows, items, side))
                if len(pending) >= 2 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        finish(*f.result())  # a DataError in a worker (an unreadable image) is raised here
            for f in as_completed(pending):
                finish(*f.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    if not filled.all():
        raise DataError(f"image cache: {int((~filled).sum())} listed images were not found while decoding; try again")
    return moments
