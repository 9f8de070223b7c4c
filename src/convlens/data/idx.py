"""MNIST and Fashion-MNIST from their IDX files (``.gz`` or plain)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError
from .download import data_home, download
from .registry import Arrays, register_dataset

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}

SOURCES = {
    "mnist": {
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "md5": {
            "train_x": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_y": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_x": "9fb629c4189551a2d022fa330f9573f3",
            "test_y": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "classes": [str(i) for i in range(10)],
        "system": None,
    },
    "fashion-mnist": {
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "md5": {
            "train_x": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_y": "25c81989df183df01b3e8a0aad5dffbe",
            "test_x": "bef4ecab320f06d8554ea6380940ec79",
            "test_y": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "classes": [
            "t-shirt/top",
            "trouser",
            "pullover",
            "dress",
            "coat",
            "sandal",
            "shirt",
            "sneaker",
            "bag",
            "ankle boot",
        ],
        # Debian's dataset-fashion-mnist package installs the four files here
        "system": Path("/usr/share/datasets/fashion-mnist"),
    },
}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file of unsigned bytes (magic 0x0801 labels, 0x0803 images)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(data) < 8:
        raise DataError(f"{path} is not an IDX file: only {len(data)} bytes")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or ndim not in (1, 3):
        raise DataError(f"{path} is not an IDX file of unsigned bytes (header {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}, found {body.size} bytes of data")
    return body.reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def _default_root(name: str, root: str | None) -> Path:
    if root:
        return Path(root).expanduser()
    system = SOURCES[name]["system"]
    if system is not None and system.is_dir():
        return system
    return data_home() / name


def _make_loader(name: str):
    src = SOURCES[name]
    offline = f"Give data.root: a folder with the four IDX files ({', '.join(v + '.gz' for v in FILES.values())})" + (
        "; on Debian, `apt-get install dataset-fashion-mnist` puts them in /usr/share/datasets/fashion-mnist."
        if src["system"]
        else "."
    )

    def load(root: str | None, download_ok: bool, size: int | None) -> Arrays:
        base = _default_root(name, root)
        if root and not base.exists():  # a typo must not become a download into a new folder
            raise DataError(
                f"data.root={root!r}: {base} does not exist. Leave data.root out to download {name} "
                f"into {data_home() / name}, or point it at your copy. {offline}"
            )
        paths = {k: _find(base, stem) for k, stem in FILES.items()}
        missing = [FILES[k] + ".gz" for k, p in paths.items() if p is None]
        if missing:
            if not download_ok:
                raise DataError(f"{name}: {base} lacks {', '.join(missing)} and data.download is false. {offline}")
            target = base if _writable(base) else data_home() / name
            for k, p in paths.items():
                if p is None:
                    paths[k] = download(
                        src["url"] + FILES[k] + ".gz",
                        target / (FILES[k] + ".gz"),
                        src["md5"][k],
                        f"{name} {FILES[k]}",
                        offline,
                    )
        arrays = {k: read_idx(p) for k, p in paths.items()}
        for split in ("train", "test"):
            x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise DataError(f"{name}: {split} images {x.shape} and labels {y.shape} do not match")
        return Arrays(
            arrays["train_x"][..., None].copy(),
            arrays["train_y"].astype(np.int64),
            arrays["test_x"][..., None].copy(),
            arrays["test_y"].astype(np.int64),
            list(src["classes"]),
            str(base),
        )

    return load, offline


def _writable(path: Path) -> bool:
    probe = path if path.exists() else path.parent
    return os.access(probe, os.W_OK)


for _name, _desc in (
    ("mnist", "MNIST: 60,000 train + 10,000 test 28x28 handwritten digits"),
    ("fashion-mnist", "Fashion-MNIST: 60,000 train + 10,000 test 28x28 clothing images, 10 classes"),
):
    # IDX files parse in a fraction of a second: no cache key, nothing cached
    _load, _offline = _make_loader(_name)
    register_dataset(_name, _desc, _offline)(_load)
