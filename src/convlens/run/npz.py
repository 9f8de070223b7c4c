"""``.npz`` files written a batch of rows at a time and read a few rows at a time.

An analysis may keep pictures of thousands of images (topk's winners: at most layers x filters x k
of them, 150 KB each at 224 px). :class:`Rows` hands :func:`write_npz` an array as batches of rows,
so writing holds one batch, not the array; :func:`mapped` opens an array stored uncompressed in an
``.npz`` as a read-only memory map, so drawing one filter's figure reads its k images, not all.
The file is an ordinary ``.npz``: ``numpy.load`` reads it whole as before.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import numpy as np


@dataclass
class Rows:
    """An array of ``shape`` and ``dtype`` given as consecutive batches of rows by ``batches()``."""

    shape: tuple[int, ...]
    dtype: Any
    batches: Callable[[], Iterable[np.ndarray]]


def write_npz(f: BinaryIO, compressed: bool, arrays: dict[str, Any]) -> None:
    """What ``numpy.savez`` (or ``savez_compressed``) writes, into the open binary file ``f``;
    a :class:`Rows` value is written batch by batch."""
    mode = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, "w", compression=mode, allowZip64=True) as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                if not isinstance(value, Rows):
                    np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)
                    continue
                dtype = np.dtype(value.dtype)
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": value.shape}
                np.lib.format.write_array_header_2_0(out, header)
                rows, tail = 0, tuple(value.shape[1:])
                for batch in value.batches():
                    batch = np.ascontiguousarray(batch, dtype=dtype)
                    if batch.shape[1:] != tail:
                        raise ValueError(f"{name}: a batch of shape {batch.shape} in rows of shape {tail}")
                    out.write(batch.tobytes())
                    rows += len(batch)
                if rows != value.shape[0]:
                    raise ValueError(f"{name}: {rows} rows written, {value.shape[0]} announced")


def mapped(path: Path, name: str) -> np.ndarray | None:
    """Array ``name`` of the ``.npz`` at ``path`` as a read-only memory map, or None where it is
    not stored plainly (compressed, absent, or of an object dtype)."""
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{name}.npy")
        except KeyError:
            return None
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if dtype.hasobject:
        return None
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
