"""One writer per run folder: an OS file lock on ``RUN/.lock``.

Every command that writes into a run folder (``train``, ``train --resume``, ``eval``,
``analyze``, ``explain``, ``report``) holds an exclusive, non-blocking ``flock`` on
``RUN/.lock`` while it runs, with its PID and command written inside. A second writer fails at
once with an error naming the holder; readers (``diagnose``) can ask who holds it and warn. The
kernel drops the lock when its holder exits, however it exits (SIGKILL included), so a stale
``.lock`` file never blocks anyone. The lock is re-entrant within one process.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import functools
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from .errors import RunError

LOCK = ".lock"
_held: dict[str, int] = {}  # resolved run folder -> nesting depth, in this process
F = TypeVar("F", bound=Callable[..., Any])


class RunBusy(RunError):
    """Another process is writing the run folder."""


def _owner(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _describe(owner: str) -> str:
    pid, _, command = owner.partition(" ")
    if not pid.isdigit():
        return "another process"
    return f"process {pid}" + (f" (convlens {command})" if command else "")


@contextlib.contextmanager
def run_lock(run_dir: str | Path, command: str) -> Iterator[None]:
    """Hold ``run_dir/.lock`` for the block; raise :class:`RunBusy` naming the holder's PID
    when another process holds it. ``command`` (e.g. ``"train"``) is written next to the PID."""
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no truncation: the holder's PID stays readable
    try:
        # a reader's probe (`holder`) holds a shared lock for microseconds: try a few times
        for attempt in range(20):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 19:
                    raise RunBusy(
                        f"{run_dir} is in use by {_describe(_owner(path))}; wait for it to finish, or stop "
                        f"it, then run this again"
                    ) from None
                time.sleep(0.025)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        remove_stale_temp_files(run_dir)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temp files of atomic writes (``.<name>.<random>.tmp``) that a killed process left
    in ``run_dir``: called with the lock held, so no write of this folder is under way. A sweep's
    trials (``trials/``) have locks of their own and are left to them."""
    removed = []
    for top, dirs, files in os.walk(run_dir):
        if top == str(run_dir) and "trials" in dirs:
            dirs.remove("trials")  # not walked: a sweep's folder holds every trial's files
        for p in (Path(top) / name for name in fnmatch.filter(files, ".*.tmp")):
            if not p.is_file():
                continue
            try:
                p.unlink()
                removed.append(p)
            except OSError:  # not ours to delete (permissions): harmless, it is hidden
                pass
    return removed


def holder(run_dir: str | Path) -> str | None:
    """Who holds ``run_dir``'s lock (``"process PID (convlens COMMAND)"``), or None when no
    process does. A probe only: it never blocks, and a writer starting meanwhile is not refused."""
    path = Path(run_dir) / LOCK
    if _held.get(str(Path(run_dir).resolve())):
        return f"process {os.getpid()} (this one)"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe(_owner(path))
    else:
        return None
    finally:
        os.close(fd)


def writes_run(command: str) -> Callable[[F], F]:
    """Decorate a function whose first argument is a run folder (a path or a ``Run``) so that it
    runs holding that folder's lock; any other first argument (a model in memory) is passed on."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def locked(run: Any, *args: Any, **kwargs: Any) -> Any:
            from .run import Run

            if isinstance(run, (str, os.PathLike)):
                run = Run(run)  # not a run folder: the usual error, before any lock file is made
            if not isinstance(run, Run):
                return fn(run, *args, **kwargs)
            with run_lock(run.path, command):
                return fn(run, *args, **kwargs)

        return locked  # type: ignore[return-value]

    return wrap
