"""Distributed sweeps through a real PostgreSQL server (.ci/run starts one and exports its URL as
CONVLENS_TEST_PG): two workers share a grid, one is SIGKILLed mid-trial, and still every grid
point ends with exactly one finished trial -- the killed one found by Optuna's heartbeats and
rerun through its retry callback."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections import Counter

import pytest
from sweep_common import Watch, cli, training, wait_for, worker_env, write_sweep

from convlens.cli import main

PG = os.environ.get("CONVLENS_TEST_PG")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not PG, reason="CONVLENS_TEST_PG is not set: no PostgreSQL server (.ci/run starts one)"),
]


def test_two_workers_share_a_grid_and_a_killed_trial_is_retried(tmp_path, capsys):
    name = f"pg-{uuid.uuid4().hex[:10]}"  # a fresh study in a database other runs may share
    path = write_sweep(
        tmp_path,
        name=name,
        epochs=4,
        heartbeat={"interval": 1, "grace": 2},
        params={"train.optimizer.lr": [0.05, 0.1], "model.options.width": [4, 5, 6]},
    )
    out = tmp_path / "out"
    watch = Watch(path, PG)

    def worker():
        return subprocess.Popen(
            cli("sweep", "worker", str(path), "--storage", PG, "--out", str(out)),
            env=worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def owner(t):
        return int(t.user_attrs.get("worker", ":0").rsplit(":", 1)[1])

    def a_mid_trial_while_b_works():
        trials = watch.trials()
        if not any(t.state.name in ("RUNNING", "COMPLETE") and owner(t) == b.pid for t in trials):
            return None
        return next(
            (t for t in trials if t.state.name == "RUNNING" and owner(t) == a.pid and training(out, t.number)), None
        )

    a, b = worker(), worker()
    try:
        victim = wait_for(a_mid_trial_while_b_works, 120, "worker A mid-trial while B works", [a, b])
        a.send_signal(signal.SIGKILL)
        a.wait()
        log, _ = b.communicate(timeout=180)  # B finishes the grid, the killed trial's retry included
        assert b.returncode == 0, log
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()

    sweep = watch.sweep
    trials = watch.trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    cells = Counter(t.user_attrs["cell"] for t in complete)
    assert cells == Counter(range(len(sweep.cells())))  # every grid point exactly once: none lost, none twice
    states = Counter(t.state.name for t in trials)
    assert states == {"COMPLETE": len(sweep.cells()), "FAIL": 1}
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state.name == "FAIL"
    retry = next(t for t in trials if t.system_attrs.get("retry_history") == [victim.number])
    assert retry.state.name == "COMPLETE" and owner(retry) == b.pid
    assert retry.user_attrs["cell"] == victim.user_attrs["cell"] and retry.params == victim.params
    assert len(list((out / "trials").iterdir())) == len(trials)  # one run folder per trial, the killed one's too

    assert main(["sweep", "table", str(out), "--storage", PG]) == 0
    printed = capsys.readouterr().out
    assert f"| {victim.number} |" in printed and "killed" in printed and f"rerun as {retry.number}" in printed

    from convlens.sweep.study import open_storage, optuna

    optuna().delete_study(study_name=name, storage=open_storage(PG))
