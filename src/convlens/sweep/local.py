"""``convlens sweep SWEEP.yaml --workers N``: a whole sweep on this machine.

The sweep folder is locked while the command runs. With N > 1 workers, each is a ``convlens
sweep worker`` process with 1/N of the CPU threads that dies with the command (a parent-death
signal), so no worker outlives it; a worker that dies has its trial requeued (through Optuna's
retry callback) and is replaced while queued trials remain. Every running trial has a heartbeat
file naming its worker: a restart after a crash queues again the trials left RUNNING whose worker
is gone, keeps finished ones, and waits for any still running in a live worker -- so each grid
cell finishes exactly once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ConvlensError
from ..utils import atomic_write_text, read_json, usable_cores, write_json
from .spec import Sweep, load_sweep
from .study import default_storage, is_database, mask, open_storage, open_study, pending, recover_orphans, recover_stale
from .worker import SUPERVISOR_ENV, run_worker

META = "sweep.json"


@contextlib.contextmanager
def folder_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir/.lock`` for the whole command; a second ``convlens sweep`` on it fails."""
    out_dir.mkdir(parents=True, exist_ok=True)
    f = open(out_dir / ".lock", "w")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConvlensError(
                f"another `convlens sweep` is running on {out_dir}; wait for it, or "
                "add workers to it with `convlens sweep worker`"
            ) from None
        yield
    finally:
        f.close()


def check_folder(out_dir: Path, sweep: Sweep) -> None:
    """A sweep folder belongs to one sweep: refuse to mix trials of another into it."""
    meta = out_dir / META
    if meta.is_file():
        old = read_json(meta)
        if old.get("fingerprint") != sweep.fingerprint() or old.get("study") != sweep.name:
            raise ConvlensError(
                f"{out_dir} holds the sweep {old.get('study')!r} made from a different sweep file (other "
                f"keys, values, seeds or base config); choose another --out, or delete the folder"
            )


def write_meta(out_dir: Path, sweep: Sweep, storage: str) -> None:
    """``sweep.yaml`` (the sweep, base config inlined) and ``sweep.json`` (study name and storage,
    without a password), which ``convlens sweep table`` reads."""
    atomic_write_text(out_dir / "sweep.yaml", sweep.to_yaml())
    if not is_database(storage):  # a journal inside the folder is named relative to it: the folder can move
        path = Path(storage).resolve()
        storage = path.name if path.parent == out_dir.resolve() else str(path)
    if not (out_dir / META).is_file():
        write_json(
            out_dir / META,
            {
                "study": sweep.name,
                "fingerprint": sweep.fingerprint(),
                "method": sweep.method,
                "storage": mask(storage),
                "params": {p.key: p.short for p in sweep.params},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "source": sweep.source,
            },
        )


def run_sweep(
    source: str | Path | dict[str, Any] | Sweep,
    workers: int = 1,
    out: str | Path | None = None,
    storage: str | None = None,
    echo: Callable[[str], None] | None = None,
    table: bool = True,
) -> Path:
    """Run (or resume) a sweep on this machine; returns the sweep folder."""
    echo = echo or (lambda s: print(s, flush=True))
    sweep = source if isinstance(source, Sweep) else load_sweep(source)
    if workers < 1:
        raise ConvlensError(f"--workers must be >= 1, got {workers}")
    out_dir = sweep.out_dir(out)
    url = storage or sweep.spec.storage or default_storage(out_dir)
    hb = sweep.spec.heartbeat
    if is_database(url):  # an unreachable server fails before the sweep folder is made
        st = open_storage(url, (hb.interval, hb.grace), sweep.spec.retries)
    with folder_lock(out_dir):
        check_folder(out_dir, sweep)
        if not is_database(url):
            st = open_storage(url, None, sweep.spec.retries)
        # With the folder locked, no other process uses its journal: a study left half-queued by
        # a crash can be completed here instead of waited for.
        study = open_study(st, sweep, 0, repair=not is_database(url))
        write_meta(out_dir, sweep, url)
        if not is_database(url):
            # RUNNING trials whose worker is gone (their heartbeat says so) are queued again; a
            # trial whose worker is still alive is left to it, and waited for
            redo, live = recover_stale(study, st, out_dir, sweep.spec.heartbeat.grace, None)
            if redo:
                echo(f"rerunning {len(redo)} trial(s) the last run left unfinished: {', '.join(map(str, redo))}")
            if live:
                echo(
                    f"{len(live)} trial(s) still run in live workers, not rerun: "
                    + ", ".join(f"{n} ({w or 'unknown worker'})" for n, w in sorted(live.items()))
                )
        cores = usable_cores()
        threads = max(1, cores // workers)
        done = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))
        what = f"{len(sweep.cells())} trials" if sweep.method == "grid" else f"{sweep.method} search"
        echo(
            f"sweep {sweep.name}: {what} ({done} done before), {workers} worker(s) x {threads} "
            f"thread(s), folder {out_dir}, storage {mask(url)}"
        )
        if workers > cores:
            echo(f"note: {workers} workers on {cores} cores share them; trials will run slower each")
        if workers == 1:
            run_worker(sweep, out_dir, st, worker_index=0, threads=threads, echo=echo)
        else:
            _supervise(sweep, out_dir, url, study, st, workers, threads, echo)
    if table:
        from .results import write_results

        res = write_results(out_dir, storage=url)
        echo(res.text("md"))
    return out_dir


STORAGE_ENV = "CONVLENS_SWEEP_STORAGE"  # a storage URL kept out of argv (and so out of `ps`)


def worker_command(sweep_file: Path, out_dir: Path, index: int, threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "convlens.cli",
        "sweep",
        "worker",
        str(sweep_file),
        "--out",
        str(out_dir),
        "--threads",
        str(threads),
        "--index",
        str(index),
    ]


def _supervise(
    sweep: Sweep, out_dir: Path, url: str, study: Any, st: Any, workers: int, threads: int, echo: Callable[[str], None]
) -> None:
    import convlens

    env = dict(os.environ)
    # the workers import this very copy of convlens, installed or not
    src = str(Path(convlens.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env[STORAGE_ENV] = url
    env[SUPERVISOR_ENV] = str(os.getpid())  # the workers die with this process (see follow_supervisor)
    sweep_file = (out_dir / "sweep.yaml").resolve()

    def spawn(k: int) -> subprocess.Popen:
        return subprocess.Popen(worker_command(sweep_file, out_dir.resolve(), k, threads), env=env)

    procs = {k: spawn(k) for k in range(workers)}
    respawns, limit = 0, workers * (sweep.spec.retries + 1)
    host = socket.gethostname()  # as in the workers' ids
    try:
        while procs:
            time.sleep(0.5)
            for k, p in list(procs.items()):
                rc = p.poll()
                if rc is None:
                    continue
                del procs[k]
                if rc == 0:
                    continue
                owner = f"{host}:{p.pid}"
                lost = recover_orphans(study, st, sweep.spec.retries, owner, out_dir)
                how = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
                back = f"; its trial {', '.join(map(str, lost))} goes back into the queue" if lost else ""
                echo(f"worker {k} (pid {p.pid}) stopped with {how}{back}")
                if pending(study)[0] and respawns < limit:
                    respawns += 1
                    procs[k] = spawn(k)
    except KeyboardInterrupt:
        # the terminal's Ctrl-C reached the workers too: each requeues its trial and stops
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.terminate()
        raise
    if not is_database(url):
        # All our workers are gone: a trial still RUNNING either lost its worker (claimed, then
        # killed before it was signed) and is requeued, or runs in a live worker of someone else's
        # and is waited for; what is queued is finished here.
        lost, _ = recover_stale(study, st, out_dir, sweep.spec.heartbeat.grace, sweep.spec.retries)
        waiting, running = pending(study)
        if waiting or running:
            requeued = f" (requeued: {', '.join(map(str, lost))})" if lost else ""
            echo(
                f"finishing {waiting} queued trial(s) here{requeued}"
                + (f", after {running} still running elsewhere" if running else "")
            )
            run_worker(sweep, out_dir, st, worker_index=0, threads=usable_cores(), echo=echo)
