"""Downloads verified by md5, into the data home, atomically.

``CONVLENS_DATA`` moves the data home (default ``~/.cache/convlens/data``); ``CONVLENS_MIRROR``
points every download at another base URL that serves the same file names (a local mirror, or a
plain ``python -m http.server`` in a folder of the official files).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError


def data_home() -> Path:
    return Path(os.environ.get("CONVLENS_DATA") or Path.home() / ".cache" / "convlens" / "data")


def resolve_url(url: str) -> str:
    mirror = os.environ.get("CONVLENS_MIRROR")
    if mirror:
        return mirror.rstrip("/") + "/" + url.rsplit("/", 1)[-1]
    return url


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str | None, what: str, offline_hint: str) -> Path:
    """Fetch ``url`` to ``dest`` unless a file with the right md5 is already there."""
    dest = Path(dest)
    if dest.is_file() and (md5 is None or md5sum(dest) == md5):
        return dest
    url = resolve_url(url)
    # folders created here are removed again when the download fails, so a failed attempt
    # leaves nothing behind that looks like data
    created = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        from tqdm.auto import tqdm

        from ..utils import interactive

        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", disable=not interactive()
            ) as bar:
                while block := resp.read(1 << 16):
                    out.write(block)
                    bar.update(len(block))
        got = md5sum(Path(tmp))
        if md5 is not None and got != md5:
            raise DataError(
                f"downloaded {what} from {url} has md5 {got}, expected {md5}: the file is damaged or "
                "not the official one; remove it and try again"
            )
        os.chmod(tmp, 0o644)
        shutil.move(tmp, dest)
        created = []
        return dest
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataError(f"cannot download {what} from {url} ({exc}). {offline_hint}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        for folder in created:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break
