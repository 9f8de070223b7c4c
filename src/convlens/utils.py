"""Small helpers shared by every part: atomic writes, JSON, thread counts."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask is process-wide and not safe to toggle from threads


def human_size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def disk_full(path: Path, needed: int | None = None) -> Exception:
    """The error of a write that found no space left: the file, the space it needs, what is free."""
    from .errors import DiskFullError

    try:
        free = f", {human_size(shutil.disk_usage(Path(path).parent).free)} free"
    except OSError:
        free = ""
    need = f"; it needs {human_size(needed)}{free}" if needed is not None else free.replace(", ", "; ", 1)
    return DiskFullError(
        f"no space left on the device to write {path}{need}. Nothing was half-written (the previous file, "
        "if any, is intact): free some space and run the command again"
    )


def atomic_write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    """``data`` into ``path`` atomically; a full disk names the file and the size needed."""
    atomic_write(path, lambda f: f.write(data), mode="wb", sync=sync, size=len(data))


def atomic_write(
    path: Path, write: Callable[[Any], None], mode: str = "w", sync: bool = True, size: int | None = None
) -> None:
    """Write through ``write(fileobj)`` into a temp file beside ``path``, then rename over it.

    A reader (or a crash) never sees a half-written file: either the old one or the new one.
    ``sync=False`` skips flushing the file to the disk before the rename, for files that can be
    redrawn from others (figures): a reader still never sees half of one, but after a power cut
    it may be empty.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(path, size) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    data = text.encode()
    atomic_write(path, lambda f: f.write(data), mode="wb", size=len(data))


def _clean(obj: Any) -> Any:
    """JSON has no NaN or infinity: write them as null so every reader can parse the file."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return _clean(obj.tolist())
    return obj


def _pretty(obj: Any, level: int, indent: int) -> str:
    """Like ``json.dumps(indent=...)``, but lists of scalars stay on one line (readable matrices)."""
    pad, inner = " " * (indent * level), " " * (indent * (level + 1))
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_pretty(v, level + 1, indent)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and obj and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _pretty(v, level + 1, indent) for v in obj) + f"\n{pad}]"
    return json.dumps(obj, allow_nan=False)


def to_json(obj: Any, indent: int | None = 1) -> str:
    """JSON text with NaN/inf as null; ``indent=None`` gives one line (for JSONL)."""
    obj = _clean(obj)
    if indent is None:
        return json.dumps(obj, allow_nan=False)
    return _pretty(obj, 0, indent)


def write_json(path: Path, obj: Any, indent: int | None = 1) -> None:
    atomic_write_text(Path(path), to_json(obj, indent) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a hand-edited or cut-short file
        from .errors import DamagedFileError

        raise DamagedFileError(f"{path} is not valid JSON ({exc}); restore it or write it again") from None


def check_device(name: str) -> str:
    """``name`` if torch can place a model there now (cpu, cuda, cuda:N, mps), else an error naming it."""
    import torch

    from .errors import ConfigError

    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {name!r} is not a device convlens runs on; allowed: cpu, cuda, cuda:N, mps")
    if dev.type == "cuda" and not (torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()):
        raise ConfigError(f"device {name!r}: no such CUDA device here ({torch.cuda.device_count()} found); try cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}: MPS is not available here; try cpu")
    return name


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def interactive() -> bool:
    """True on a terminal: progress bars then; plain lines in CI and in logs."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def to_numpy(x: Any) -> Any:
    """A tensor as a NumPy array wherever it lives: detached from autograd and copied to the CPU
    first (``.numpy()`` alone fails on a CUDA or MPS tensor and on one that requires grad)."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x
