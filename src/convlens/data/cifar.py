"""CIFAR-10: the official python archive, its extracted folder, or an image-folder tree."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .download import data_home, download
from .images import is_archive, read_tree, tree_signature
from .registry import Arrays, register_dataset

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
BATCHES = "cifar-10-batches-py"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

OFFLINE = (
    "Give data.root: a folder with cifar-10-batches-py/ or cifar-10-python.tar.gz, or an image tree "
    "<root>/{train,test}/<class>/*.png (a .tar.gz of that tree works too)."
)


# The official batches are Python 2 pickles of a dict of byte strings, lists of ints and one numpy
# array. Unpickling may call any importable function a file names, so only the globals that
# rebuild an array are let through; a batch file naming anything else is refused before it runs.
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]  # numpy's _reconstruct, wherever numpy keeps it
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # numpy's _frombuffer (pickle protocol 5)
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # written by numpy 1.x (the official files)
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # written by numpy 2.x
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,  # pickle protocol 5 (numpy 1.x)
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,  # pickle protocol 5 (numpy 2.x)
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR-10 batch never does (refused: unpickling it "
                "could run code); only numpy arrays, byte strings, lists and numbers are read"
            ) from None


def safe_unpickle(blob: bytes) -> object:
    """Unpickle a CIFAR-10 batch, refusing every global but numpy's array reconstruction."""
    return _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()


def _from_batches(batches: dict[str, bytes], source: str) -> Arrays:
    """``batches`` maps member names (data_batch_1..5, test_batch) to pickled bytes."""

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in batches:
            raise DataError(f"{source} lacks {name}: not a complete CIFAR-10 python folder")
        try:
            d = safe_unpickle(batches[name])
            if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
                raise ValueError("not a dict with data and labels")
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            return np.ascontiguousarray(x), np.asarray(d[b"labels"], dtype=np.int64)
        except Exception as exc:  # any unpickling problem means a damaged file
            raise DataError(f"cannot read {source}/{name}: {exc}") from None

    train = [load(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = load("test_batch")
    return Arrays(
        np.concatenate([t[0] for t in train]),
        np.concatenate([t[1] for t in train]),
        test_x,
        test_y,
        list(CLASSES),
        source,
    )


def _read_batches_dir(folder: Path) -> Arrays:
    blobs = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    return _from_batches(blobs, str(folder))


def _archive_kind(path: Path) -> str:
    with tarfile.open(path) as tar:
        for m in tar:
            if m.name.rstrip("/").endswith(f"{BATCHES}/data_batch_1"):
                return "batches"
            if m.isfile():
                parts = m.name.split("/")
                if len(parts) >= 3 and parts[-3] in ("train", "test"):
                    return "tree"
    return "unknown"


def _read_batches_archive(path: Path) -> Arrays:
    blobs = {}
    with tarfile.open(path) as tar:
        for m in tar:
            if m.isfile() and f"{BATCHES}/" in m.name:
                f = tar.extractfile(m)
                blobs[m.name.rsplit("/", 1)[-1]] = f.read() if f else b""
    return _from_batches(blobs, str(path))


def _from_tree(root: Path) -> Arrays:
    splits, classes = read_tree(root)
    if "train" not in splits or "test" not in splits:
        raise DataError(f"{root} has no train/ and test/ folders of class folders. {OFFLINE}")
    return Arrays(*splits["train"], *splits["test"], classes, str(root))


def _locate(root: Path) -> tuple[str, Path] | None:
    """Find CIFAR-10 in ``root`` in any of the understood forms."""
    if is_archive(root):
        kind = _archive_kind(root)
        return (kind, root) if kind != "unknown" else None
    if not root.is_dir():
        return None
    for cand in (root / BATCHES, root):
        if (cand / "data_batch_1").is_file():
            return "batches_dir", cand
    if (root / ARCHIVE).is_file():
        return "batches", root / ARCHIVE
    listing_root = root
    children = [c for c in root.iterdir() if c.is_dir() and not c.name.startswith(".")]
    if not (root / "train").is_dir() and len(children) == 1:
        listing_root = children[0]
    if (listing_root / "train").is_dir() and (listing_root / "test").is_dir():
        return "tree", listing_root
    return None


def _default_root(root: str | None) -> Path:
    return Path(root).expanduser() if root else data_home() / "cifar10"


def _cache_key(root: str | None) -> str | None:
    found = _locate(_default_root(root))
    return f"cifar10|{found[0]}|{tree_signature(found[1])}" if found else None


@register_dataset(
    "cifar10",
    "CIFAR-10: 50,000 train + 10,000 test 32x32 colour images, 10 classes",
    OFFLINE,
    cache_key=_cache_key,
)
def load_cifar10(root: str | None, download_ok: bool, size: int | None) -> Arrays:
    base = _default_root(root)
    if root and not base.exists():  # a typo must not become a download into a new folder
        raise DataError(
            f"data.root={root!r}: {base} does not exist. Leave data.root out to download CIFAR-10 "
            f"into {data_home() / 'cifar10'}, or point it at your copy. {OFFLINE}"
        )
    found = _locate(base)
    if found is None:
        if base.exists() and base.is_file() and not is_archive(base):
            raise DataError(f"data.root {base} is a file but not a .tar/.tar.gz archive. {OFFLINE}")
        if base.exists() and root and not download_ok:
            raise DataError(f"no CIFAR-10 found in {base}. {OFFLINE}")
        if not download_ok:
            raise DataError(
                f"CIFAR-10 is not in {base} and data.download is false. {OFFLINE} "
                "Or set data.download: true to fetch the official archive."
            )
        target = base if not is_archive(base) else base.parent
        download(URL, target / ARCHIVE, MD5, "CIFAR-10", OFFLINE)
        found = ("batches", target / ARCHIVE)
    kind, path = found
    if kind == "batches_dir":
        return _read_batches_dir(path)
    if kind == "batches":
        return _read_batches_archive(path)
    return _from_tree(path)
