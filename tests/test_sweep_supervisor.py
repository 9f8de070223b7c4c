"""Nothing lost, nothing doubled: the workers of `convlens sweep` die with it, and a rerun tells
trials whose worker is gone (queued again) from trials whose worker still runs them (left alone)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sweep_common import Watch, cli, load_trials, training, wait_for, worker_env, write_sweep

from convlens.sweep import load_sweep, run_sweep
from convlens.sweep.study import (
    claim,
    heartbeat_path,
    open_storage,
    open_study,
    optuna,
    pid_alive,
    recover_stale,
    write_beat,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def finished_cells(path: Path, out: Path) -> Counter:
    _, trials = load_trials(path, str(out / "study.journal"))
    return Counter(t.user_attrs["cell"] for t in trials if t.state.name == "COMPLETE")


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_rerun_requeues_trials_of_dead_workers_and_leaves_live_ones(tmp_path):
    path = write_sweep(tmp_path, params={"train.optimizer.lr": [0.05, 0.1, 0.2]})
    sweep = load_sweep(path)
    out = tmp_path / "out"
    st = open_storage(str(out / "study.journal"))
    study = open_study(st, sweep, 0)
    numbers = []
    for _ in range(3):
        claim(study, st, on_claim=lambda n: (numbers.append(n), write_beat(heartbeat_path(out, n))))
    live, dead, silent = numbers
    (heartbeat_path(out, dead)).write_text(f"{os.uname().nodename}:{dead_pid()}\n")  # a killed worker here
    heartbeat_path(out, silent).write_text("elsewhere:123\n")  # another machine, no beat for 2 minutes
    os.utime(heartbeat_path(out, silent), (time.time() - 120, time.time() - 120))

    redo, running = recover_stale(study, st, out, grace=60, max_retry=None)
    assert sorted(redo) == sorted([dead, silent])
    assert running == {live: f"{os.uname().nodename}:{os.getpid()}"}
    TS = optuna().trial.TrialState
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert trials[live].state == TS.RUNNING and trials[dead].state == trials[silent].state == TS.FAIL
    retries = [t for t in trials.values() if t.state == TS.WAITING]
    assert sorted(t.system_attrs["retry_history"][-1] for t in retries) == sorted([dead, silent])
    assert recover_stale(study, st, out, grace=60, max_retry=None)[0] == []  # nothing twice


@linux_only
@pytest.mark.timeout(300)
def test_killing_the_supervisor_kills_its_workers_and_a_rerun_runs_each_cell_once(tmp_path):
    """`kill -9` of `convlens sweep --workers 2` alone (not its process group): its workers die
    with it, and the same command again finishes every cell exactly once."""
    path = write_sweep(tmp_path, epochs=8, params={"train.optimizer.lr": [0.05, 0.1], "model.options.width": [4, 6]})
    out = tmp_path / "out"
    sup = subprocess.Popen(
        cli("sweep", str(path), "--workers", "2", "--out", str(out)),
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        watch = Watch(path, str(out / "study.journal"))
        wait_for(
            lambda: any(t.state.name == "RUNNING" and training(out, t.number) for t in watch.trials()),
            120,
            "a trial in training",
            [sup],
        )
        workers = children(sup.pid)
        assert len(workers) == 2
        sup.send_signal(signal.SIGKILL)
        sup.wait()
        killed = {t.number: t.state.name for t in watch.trials()}
        wait_for(lambda: not any(pid_alive(p) for p in workers), 10, "the workers to die with their supervisor")
        # they died at once: no trial moved on after the kill
        assert {t.number: t.state.name for t in watch.trials()} == killed and "RUNNING" in killed.values()
    finally:
        for p in [sup.pid, *workers]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    messages: list[str] = []
    run_sweep(path, out=out, echo=messages.append, table=False)
    assert any(m.startswith("rerunning") for m in messages)
    assert finished_cells(path, out) == {c: 1 for c in range(4)}


@pytest.mark.timeout(300)
def test_a_trial_still_running_in_a_live_worker_is_not_run_again(tmp_path):
    """A worker of the sweep is training a trial when `convlens sweep` is run: the command leaves
    that trial to it and waits for it; no cell runs twice."""
    path = write_sweep(tmp_path, epochs=6, params={"train.optimizer.lr": [0.05, 0.1]})
    out = tmp_path / "out"
    worker = subprocess.Popen(
        cli("sweep", "worker", str(path), "--out", str(out), "--index", "5", "--threads", "1"),
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        watch = Watch(path, str(out / "study.journal"))
        first = wait_for(
            lambda: next((t for t in watch.trials() if t.state.name == "RUNNING" and training(out, t.number)), None),
            120,
            "a trial in training",
            [worker],
        )
        messages: list[str] = []
        run_sweep(path, out=out, echo=messages.append, table=False)
        assert any(f"{first.number} (" in m and "live workers" in m for m in messages), messages
        assert worker.wait(timeout=120) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    _, trials = load_trials(path, str(out / "study.journal"))
    assert Counter(t.state.name for t in trials) == {"COMPLETE": 2}
    assert finished_cells(path, out) == {0: 1, 1: 1}
