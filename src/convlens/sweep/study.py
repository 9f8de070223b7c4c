"""Optuna storage and study: open (or fail early), create or join, queue a grid, recover trials.

Optuna is the engine: its storages hold the study (a journal file for one machine, PostgreSQL or
another database for many), its heartbeats find trials whose worker died, and its retry callback
queues a fresh copy of such a trial. This module only wires those together for a sweep.

Exactly-once grids. Optuna's ``GridSampler`` may run a point twice when several workers ask at
the same moment (its docs say so: a point counts as done only when its trial finishes), so a grid
here is Optuna's trial queue instead: the process that creates the study enqueues every
(point, seed) cell once, and workers claim queued trials atomically (a database row lock or the
journal's file lock decides who gets each). Retries are queued copies of the same cell.
"""

from __future__ import annotations

import os
import random
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from ..errors import ConvlensError
from .spec import Sweep

STUDY_ATTR = "convlens"  # study user attr: {"fingerprint", "cells", "queued"}
JOURNAL = "study.journal"


class StorageError(ConvlensError):
    """The Optuna storage cannot be reached or holds a different sweep."""


def optuna():
    """Import Optuna quietly: its per-trial INFO lines and experimental-feature warnings are noise here."""
    import optuna as _optuna

    _optuna.logging.set_verbosity(_optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=_optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    return _optuna


def retry_callback(max_retry: int | None):
    """Optuna's retry callback: queues a WAITING copy (same params and attrs) of a dead trial."""
    storages = optuna().storages
    cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    return cls(max_retry=max_retry)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def mask(url: str) -> str:
    """A storage URL fit to print or save: the password replaced by ***."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL: print as given
        return url


def is_database(url: str | None) -> bool:
    return url is not None and "://" in url


def default_storage(sweep_dir: Path) -> str:
    return str(Path(sweep_dir) / JOURNAL)


def open_storage(url: str, heartbeat: tuple[int, int] | None = None, retries: int | None = None):
    """An Optuna storage for ``url``: a database URL (``postgresql://``, ``sqlite:///``, ...) or a
    journal file path. Connects now, so an unreachable server fails before any trial runs.

    ``heartbeat=(interval, grace)`` turns on Optuna's heartbeats for a database storage: a trial
    whose worker stops beating is failed by whichever worker notices, and ``retries`` copies of it
    are queued by Optuna's retry callback.
    """
    op = optuna()
    if not is_database(url):
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        journal = op.storages.journal
        backend_cls = getattr(journal, "JournalFileBackend", None) or op.storages.JournalFileStorage
        lock_cls = getattr(journal, "JournalFileOpenLock", None) or op.storages.JournalFileOpenLock
        try:
            return op.storages.JournalStorage(backend_cls(str(path), lock_obj=_lock(lock_cls, path)))
        except OSError as exc:
            raise StorageError(f"cannot open the journal storage {path}: {exc}") from None
    kwargs: dict[str, Any] = {}
    engine: dict[str, Any] = {}
    given, url = url, _with_driver(url)
    if url.startswith("postgresql"):
        engine["connect_args"] = {"connect_timeout": 10}  # an unreachable host fails in 10 s, not minutes
    elif url.startswith("sqlite"):
        engine["connect_args"] = {"timeout": 60}  # several local workers wait for the file lock
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
    if heartbeat is not None:
        import inspect

        params = inspect.signature(op.storages.RDBStorage).parameters
        cb_arg = "heartbeat_stale_trial_callback"
        if cb_arg not in params:  # older Optuna
            cb_arg = "failed_trial_callback"
        kwargs = {"heartbeat_interval": heartbeat[0], "grace_period": heartbeat[1], cb_arg: retry_callback(retries)}
    for attempt in range(6):
        try:
            return op.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)
        except ImportError as exc:
            raise StorageError(
                f"cannot use the storage {mask(given)}: its database driver is missing ({exc}); "
                "for PostgreSQL: pip install 'convlens[postgres]'"
            ) from None
        except Exception as exc:  # sqlalchemy wraps every connection failure differently
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            # Workers starting together on an empty database race to create Optuna's tables; the
            # losers see a duplicate-key error from PostgreSQL and find the tables made on retry.
            if ("duplicate key" in reason or "already exists" in reason) and attempt < 5:
                time.sleep(0.2 + random.random())
                continue
            raise StorageError(f"cannot reach the storage {mask(given)}: {reason}") from None
    raise AssertionError("unreachable")


def _lock(lock_cls: Any, path: Path) -> Any:
    # A process killed while writing leaves the journal's lock file behind; others break it after
    # the grace period. Writes take milliseconds, so 10 s (Optuna's default: 30) is ample.
    try:
        return lock_cls(str(path), grace_period=10)
    except TypeError:  # an Optuna without the argument
        return lock_cls(str(path))


def _with_driver(url: str) -> str:
    """``postgresql://`` means psycopg (3) to SQLAlchemy 2.1 and psycopg2 to 2.0; use whichever
    is installed (convlens[postgres] installs psycopg2)."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return url.replace("postgresql://", f"postgresql+{driver}://", 1)
    return url


def heartbeat_interval(storage: Any) -> int | None:
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if get else None


# ----------------------------------------------------------------------------------------------
# the study


def make_sampler(sweep: Sweep, worker_index: int | None):
    samplers = optuna().samplers
    # Workers must not share a seed, or they would all draw the same points (Optuna's advice for
    # distributed runs); a local worker's seed is reproducible, a remote one's is not.
    seed = sweep.spec.sampler_seed + worker_index if worker_index is not None else None
    if sweep.method == "tpe":
        startup = 10
        if sweep.spec.budget.trials:
            startup = max(2, min(10, sweep.spec.budget.trials // 3))
        return samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    return samplers.RandomSampler(seed=seed)  # grid trials are all queued: the sampler is never asked


def make_pruner(sweep: Sweep):
    pruners = optuna().pruners
    p = sweep.spec.pruner
    if p.name == "median":
        return pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs)
    if p.name == "halving":
        return pruners.SuccessiveHalvingPruner(min_resource=p.min_epochs, reduction_factor=p.reduction)
    return pruners.NopPruner()


def open_study(storage: Any, sweep: Sweep, worker_index: int | None = None, wait: float = 60.0, repair: bool = False):
    """Create the sweep's study, or join it. The creator queues a grid's cells; a joiner checks that
    the study was made from the same sweep and waits until the grid is queued -- or, with
    ``repair`` (only when no other process can be creating it), queues what is missing itself."""
    op = optuna()
    kw = dict(
        study_name=sweep.name, storage=storage, sampler=make_sampler(sweep, worker_index), pruner=make_pruner(sweep)
    )
    try:
        study = op.create_study(direction="maximize", **kw)
        created = True
    except op.exceptions.DuplicatedStudyError:
        study = op.load_study(**kw)
        created = False
    if created:
        cells = sweep.cells() if sweep.method == "grid" else []
        study.set_user_attr(STUDY_ATTR, {"fingerprint": sweep.fingerprint(), "cells": len(cells), "queued": False})
        for cell in cells:
            _enqueue_cell(study, cell)
        study.set_user_attr(STUDY_ATTR, {"fingerprint": sweep.fingerprint(), "cells": len(cells), "queued": True})
        return study
    deadline = time.monotonic() + wait
    while True:
        info = study.user_attrs.get(STUDY_ATTR)
        if info is not None and info["fingerprint"] != sweep.fingerprint():
            raise StorageError(
                f"the storage already holds a study {sweep.name!r} made from a different sweep (other "
                f"keys, values, seeds or base config); give the sweep another `name`, or another storage"
            )
        if info is not None and info["queued"]:
            return study
        if repair:
            repair_grid(study, sweep)
            return study
        if time.monotonic() > deadline:
            raise StorageError(
                f"study {sweep.name!r} exists but its grid was never completely queued (the process "
                f"creating it stopped during setup). Delete it (`optuna delete-study --study-name "
                f"{sweep.name} --storage URL`) or give the sweep another name, and start again."
            )
        time.sleep(0.5)


def _enqueue_cell(study: Any, cell: dict[str, Any]) -> None:
    study.enqueue_trial(cell["params"], user_attrs={"cell": cell["cell"], "point": cell["point"], "seed": cell["seed"]})


def repair_grid(study: Any, sweep: Sweep) -> int:
    """Queue the cells a crash during setup left out (only with the sweep folder's lock held)."""
    info = study.user_attrs.get(STUDY_ATTR) or {}
    if sweep.method != "grid" or info.get("queued"):
        return 0
    have = {t.user_attrs.get("cell") for t in study.get_trials(deepcopy=False)}
    missing = [c for c in sweep.cells() if c["cell"] not in have]
    for cell in missing:
        _enqueue_cell(study, cell)
    study.set_user_attr(STUDY_ATTR, {"fingerprint": sweep.fingerprint(), "cells": len(sweep.cells()), "queued": True})
    return len(missing)


def claim(study: Any, storage: Any, on_claim: Any = None) -> int | None:
    """Atomically take one queued trial (RUNNING now) and return its trial id, or None.

    Two workers may both see a queued trial; the storage lets only one move it from WAITING to
    RUNNING; ``on_claim(number)`` is called at once for the winner. This is what ``Study.ask``
    does first, without its fallback of creating a new trial when the queue is empty -- the
    fallback that makes grids run a point twice.
    """
    op = optuna()
    TS = op.trial.TrialState
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TS.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TS.RUNNING):
                if on_claim is not None:  # e.g. the first beat of a heartbeat file
                    on_claim(t.number)
                if heartbeat_interval(storage):
                    # Optuna never calls a trial without a heartbeat stale: beat at once, so a
                    # worker killed from here on leaves a trial that others will find
                    storage.record_heartbeat(trial_id)
                return trial_id
        except op.exceptions.UpdateFinishedTrialError:
            continue
    return None


def fail_and_retry(study: Any, storage: Any, number: int, max_retry: int | None) -> int | None:
    """Mark a trial that will never report (its worker is gone) as failed, and queue a retry
    through Optuna's retry callback. Returns the number of the retry's predecessor, or None."""
    op = optuna()
    TS = op.trial.TrialState
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    try:
        if not storage.set_trial_state_values(trial_id, state=TS.FAIL):
            return None
    except op.exceptions.UpdateFinishedTrialError:
        return None
    retry_callback(max_retry)(study, storage.get_trial(trial_id))
    return number


def recover_orphans(
    study: Any, storage: Any, max_retry: int | None, owner: str, out_dir: Path | None = None
) -> list[int]:
    """Fail and requeue the RUNNING trials of ``owner`` (a worker id), a worker known to be dead:
    those it signed, and, with the sweep folder ``out_dir``, those its heartbeat file names."""
    TS = optuna().trial.TrialState
    out = []
    for t in study.get_trials(deepcopy=False, states=(TS.RUNNING,)):
        mine = t.user_attrs.get("worker") == owner
        if not mine and out_dir is not None:
            mine = read_beat(heartbeat_path(out_dir, t.number))[0] == owner
        if mine and fail_and_retry(study, storage, t.number, max_retry) is not None:
            out.append(t.number)
    return out


# ----------------------------------------------------------------------------------------------
# heartbeat files: who runs a trial, and whether it is still alive (journal storages)
#
# A worker writes SWEEP_DIR/heartbeats/<trial number> (its id, host:pid) when it claims a trial and
# touches it every `heartbeat.interval` seconds while the trial runs. A RUNNING trial is stale when
# its worker is on this machine and no longer exists, or when its file is older than
# `heartbeat.grace`; a stale trial is failed and queued again, a live one is left to its worker.

HEARTBEATS = "heartbeats"


def heartbeat_path(out_dir: Path, number: int) -> Path:
    return Path(out_dir) / HEARTBEATS / str(number)


def write_beat(path: Path) -> None:
    """Write (first beat) or touch (later beats) a trial's heartbeat file."""
    try:
        os.utime(path)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(worker_id() + "\n")
        os.replace(tmp, path)


def read_beat(path: Path) -> tuple[str | None, float | None]:
    """(worker id, seconds since the last beat) of a heartbeat file; (None, None) without one."""
    try:
        age = time.time() - path.stat().st_mtime
        return path.read_text().strip() or None, age
    except FileNotFoundError:
        return None, None


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine is alive (a zombie, killed but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): existence is all we know


def trial_liveness(out_dir: Path, frozen: Any, grace: float) -> tuple[bool, str | None]:
    """(alive, worker id) of a RUNNING trial, from its heartbeat file. Without a file (claimed a
    moment ago), its start time counts as its last beat and its signature names the worker."""
    from datetime import datetime

    owner, age = read_beat(heartbeat_path(out_dir, frozen.number))
    if age is None:
        owner = frozen.user_attrs.get("worker")
        start = frozen.datetime_start
        age = (datetime.now() - start).total_seconds() if start is not None else float("inf")
    host, _, pid = (owner or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
        return False, owner
    return age <= grace, owner


def recover_stale(
    study: Any, storage: Any, out_dir: Path, grace: float, max_retry: int | None
) -> tuple[list[int], dict[int, str | None]]:
    """Fail and requeue the RUNNING trials whose worker is gone (see the heartbeat files above).
    Returns (the trials requeued, {trial number: worker id} of those still running)."""
    TS = optuna().trial.TrialState
    redo, live = [], {}
    for t in study.get_trials(deepcopy=False, states=(TS.RUNNING,)):
        alive, owner = trial_liveness(out_dir, t, grace)
        if alive:
            live[t.number] = owner
        elif fail_and_retry(study, storage, t.number, max_retry) is not None:
            redo.append(t.number)
    return redo, live


def pending(study: Any) -> tuple[int, int]:
    """(queued, running) trial counts."""
    TS = optuna().trial.TrialState
    trials = study.get_trials(deepcopy=False, states=(TS.WAITING, TS.RUNNING))
    waiting = sum(t.state == TS.WAITING for t in trials)
    return waiting, len(trials) - waiting
