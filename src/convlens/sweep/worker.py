"""A sweep worker: joins the study and runs trials until the sweep is done.

Any number of workers, on one machine or many, run this same loop against one storage.

- Grid: the cells are queued in the study; a worker claims one at a time and, when the queue is
  empty, waits while trials are still running elsewhere (with heartbeats, one of them may die and
  come back as a retry), then leaves.
- Random search and TPE: ``Study.optimize`` with the sweep's budget; a point's further seeds and
  retries are queued trials, which Optuna runs before it draws a new point.

Failed trials (an exception) are retried by Optuna's retry callback; killed ones too, found by
Optuna's heartbeats on a database storage, or by ``convlens sweep`` for its own workers.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .spec import Sweep
from .study import (
    claim,
    heartbeat_interval,
    heartbeat_path,
    is_database,
    open_storage,
    open_study,
    optuna,
    pending,
    recover_stale,
    retry_callback,
    write_beat,
)
from .trial import run_trial

POLL_SECONDS = 1.0
clock = time.monotonic  # what a time budget is measured on (a test substitutes its own)
SUPERVISOR_ENV = "CONVLENS_SWEEP_SUPERVISOR"  # set by `convlens sweep` for its workers: its PID
PR_SET_PDEATHSIG = 1


def follow_supervisor() -> None:
    """In a worker started by ``convlens sweep``: die with it. The kernel sends SIGKILL to this
    process when the supervisor exits, however it exits (Linux's parent-death signal); elsewhere a
    thread watches the parent PID. A worker left running would go on claiming trials that the
    next ``convlens sweep`` also runs."""
    pid = os.environ.pop(SUPERVISOR_ENV, None)  # not inherited by the worker's own children
    if not pid or not pid.isdigit():
        return
    parent = int(pid)
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the supervisor died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)
    if not armed:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(POLL_SECONDS)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True, name="supervisor-watch").start()


class Heartbeat:
    """Records heartbeats for a claimed trial while it runs: in a database storage (Optuna's, as
    ``Study.optimize`` does for the trials it asks for, when ``db`` is true) and in the trial's
    heartbeat file ``file``; on exit (normal or not) the thread is stopped and joined."""

    def __init__(self, storage: Any, trial_id: int, interval: int | None, db: bool = True, file: Path | None = None):
        self.storage, self.trial_id, self.interval, self.db, self.file = storage, trial_id, interval, db, file
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while True:
            if self.db:
                self.storage.record_heartbeat(self.trial_id)  # the first beat at once: no beat, never stale
            if self.file is not None:
                write_beat(self.file)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Heartbeat:
        if self.interval and (self.db or self.file is not None):
            self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{self.trial_id}")
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def describe(sweep: Sweep, frozen: Any) -> str:
    """One line per finished trial: its parameters, seed, status and best validation accuracy."""
    TS = optuna().trial.TrialState
    vals = ", ".join(f"{p.short}={_show(p.decode(frozen.params.get(p.key)))}" for p in sweep.params)
    res = frozen.user_attrs.get("result") or {}
    seed = frozen.user_attrs.get("seed")
    names = {TS.COMPLETE: res.get("status", "finished"), TS.PRUNED: "pruned", TS.FAIL: "failed"}
    state = names.get(frozen.state, frozen.state.name.lower())
    acc = res.get("best_val_acc")
    s = f"trial {frozen.number} ({vals}{', ' if vals else ''}seed {seed}): {state}"
    if acc is not None:
        s += f", best val acc {100 * acc:.2f}% at epoch {res.get('best_epoch')} of {res.get('epochs')}"
    if res.get("total_seconds") is not None:
        s += f", {res['total_seconds']:.1f}s"
    if frozen.state == TS.FAIL and frozen.user_attrs.get("error"):
        s += f": {frozen.user_attrs['error']}"
    return s


def _show(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (list, dict)) or v is None else str(v)


def run_worker(
    sweep: Sweep,
    out_dir: str | Path,
    storage: str | Any,
    *,
    worker_index: int | None = None,
    threads: int | None = None,
    echo: Callable[[str], None] | None = None,
    log_path: str | Path | None = None,
) -> int:
    """Run trials of ``sweep`` until it is done (or its time budget is spent); returns how many
    trials this worker ran. ``storage`` is a URL/path or an opened Optuna storage."""
    echo = echo or (lambda s: print(s, flush=True))
    follow_supervisor()
    out_dir = Path(out_dir)
    if isinstance(storage, str):
        hb = sweep.spec.heartbeat
        storage = open_storage(storage, (hb.interval, hb.grace) if is_database(storage) else None, sweep.spec.retries)
    study = open_study(storage, sweep, worker_index)
    log_path = Path(log_path or out_dir / "logs" / f"worker-{'x' if worker_index is None else worker_index}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = clock() + sweep.spec.budget.time if sweep.spec.budget.time else None
    with open(log_path, "a") as logf:

        def log(line: str) -> None:
            logf.write(line + "\n")
            logf.flush()

        if sweep.method == "grid":
            return _claim_loop(study, storage, sweep, out_dir, threads, echo, log, deadline)
        return _optimize(study, storage, sweep, out_dir, threads, echo, log, deadline)


def _claim_loop(study, storage, sweep, out_dir, threads, echo, log, deadline) -> int:
    op = optuna()
    beats = heartbeat_interval(storage)  # a database's heartbeats; a journal's are files
    retry = retry_callback(sweep.spec.retries)
    ran = 0
    while deadline is None or clock() < deadline:
        trial_id = _next_trial(study, storage, sweep, out_dir, beats, echo)
        if trial_id is None:
            break
        if trial_id is _AGAIN:
            continue
        frozen, state = _run_claimed(study, storage, sweep, out_dir, threads, log, trial_id, beats)
        ran += 1
        if frozen.state != state:
            echo(
                f"trial {frozen.number} was failed by another worker (no heartbeat for "
                f"{sweep.spec.heartbeat.grace} s) and has been requeued; this run's result is not kept"
            )
            continue
        echo(describe(sweep, frozen))
        if state == op.trial.TrialState.FAIL:
            retry(study, frozen)
    return ran


_AGAIN = object()  # no trial claimed now, but one may come: look again


def _next_trial(study, storage, sweep, out_dir, beats, echo):
    """Claim a queued trial: its id, ``_AGAIN`` when one may still come, None when all are done."""
    if beats:
        optuna().storages.fail_stale_trials(study)  # a dead worker's trial: failed, and a retry queued
    else:
        redo, _ = recover_stale(study, storage, out_dir, sweep.spec.heartbeat.grace, sweep.spec.retries)
        for n in redo:
            echo(f"trial {n} lost its worker; it goes back into the queue")
    trial_id = claim(study, storage, on_claim=None if beats else lambda n: write_beat(heartbeat_path(out_dir, n)))
    if trial_id is not None:
        return trial_id
    waiting, running = pending(study)
    if waiting:  # another worker took the one we saw; try the next
        time.sleep(0.05)
        return _AGAIN
    if running:  # one of them may die, be found by its heartbeat and come back
        time.sleep(POLL_SECONDS)
        return _AGAIN
    return None


def _run_claimed(study, storage, sweep, out_dir, threads, log, trial_id, beats):
    """Run a claimed trial under its heartbeat and tell the study; returns (frozen trial, state)."""
    op = optuna()
    TS = op.trial.TrialState
    trial = op.trial.Trial(study, trial_id)
    beat_file = None if beats else heartbeat_path(out_dir, trial.number)
    value, state = None, TS.FAIL
    with Heartbeat(storage, trial_id, beats or sweep.spec.heartbeat.interval, db=bool(beats), file=beat_file):
        try:
            value, state = run_trial(trial, sweep, out_dir, threads, log), TS.COMPLETE
        except op.TrialPruned:
            state = TS.PRUNED
        except KeyboardInterrupt:
            _requeue(study, trial.number)
            study.tell(trial, state=TS.FAIL)
            raise
        except Exception as exc:
            _record_error(trial, exc, log)
    # skip_if_finished: a trial whose heartbeats stopped reaching the storage for longer than
    # the grace period was failed (and requeued) by another worker; its retry stands
    frozen = study.tell(trial, value if state == TS.COMPLETE else None, state=state, skip_if_finished=True)
    if beat_file is not None:  # only now: a trial still RUNNING without a file may look stale
        beat_file.unlink(missing_ok=True)
    return frozen, state


def _optimize(study, storage, sweep, out_dir, threads, echo, log, deadline) -> int:
    op = optuna()
    TS = op.trial.TrialState
    retry = retry_callback(sweep.spec.retries)
    ran = [0]
    callbacks = []
    budget = sweep.spec.budget.trials
    if budget is not None:
        total = budget * len(sweep.seeds)
        if len(study.get_trials(deepcopy=False, states=(TS.COMPLETE, TS.PRUNED))) >= total:
            return 0
        callbacks.append(op.study.MaxTrialsCallback(total, states=(TS.COMPLETE, TS.PRUNED)))

    def after(study: Any, frozen: Any) -> None:
        ran[0] += 1
        if file_beats:
            heartbeat_path(out_dir, frozen.number).unlink(missing_ok=True)
        echo(describe(sweep, frozen))
        if frozen.state == TS.FAIL:
            retry(study, frozen)

    file_beats = not heartbeat_interval(storage)
    hb = sweep.spec.heartbeat

    def objective(trial: Any) -> float:
        beat = heartbeat_path(out_dir, trial.number) if file_beats else None
        try:
            with Heartbeat(None, trial.number, hb.interval, db=False, file=beat):
                return run_trial(trial, sweep, out_dir, threads, log)
        except KeyboardInterrupt:
            _requeue(study, trial.number)
            raise
        except op.TrialPruned:
            raise
        except Exception as exc:
            _record_error(trial, exc, log)
            raise

    timeout = max(0.0, deadline - clock()) if deadline is not None else None
    study.optimize(objective, timeout=timeout, callbacks=[after, *callbacks], catch=(Exception,), gc_after_trial=False)
    return ran[0]


def _record_error(trial: Any, exc: BaseException, log: Callable[[str], None]) -> None:
    msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    log(f"trial {trial.number} failed: {msg}")
    try:
        trial.set_user_attr("error", msg)
    except Exception:  # the storage itself failed: the state update below reports it
        print(f"trial {trial.number} failed: {msg}", file=sys.stderr)


def _requeue(study: Any, number: int) -> None:
    """Ctrl-C: queue the interrupted trial again (not counted as a retry), so the next run redoes it."""
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    retry_callback(None)(study, frozen)
