"""Chaos: processes SIGKILLed at random (seeded) moments, then the same command again.

Training killed several times and resumed ends bit-identical to an uninterrupted run; a local
2-worker sweep whose supervisor or workers are killed several times, then run again, finishes
every grid cell exactly once.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from sweep_common import cli, load_trials, sweep_dict, worker_env

from conftest import tiny_config
from convlens.run import Run
from convlens.sweep.study import pid_alive
from convlens import checkpoint

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

TIMELESS = ("epoch_seconds",)


def _run_for(cmd: list[str], seconds: float) -> int | None:
    """Start ``cmd``; SIGKILL it after ``seconds`` unless it ended first. Its return code, or None."""
    p = subprocess.Popen(cmd, env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return p.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_training_killed_at_random_moments_ends_as_an_uninterrupted_run(tmp_path):
    cfg = tiny_config(
        **{
            "train.epochs": 6,
            "train.batch_size": 16,
            "train.threads": 1,
            "model.options": {"width": 12},
            "data.augment": {"flip": {"p": 0.5}},
        }
    )
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    t0 = time.monotonic()
    ref = subprocess.Popen(
        cli("train", str(cfg_path), "--out", str(tmp_path / "ref")),
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = tmp_path / "ref" / "metrics.jsonl"
    while ref.poll() is None and not (first.is_file() and first.read_text()):
        time.sleep(0.02)
    start = time.monotonic() - t0  # start-up and the first epoch
    assert ref.wait(timeout=300) == 0
    whole = time.monotonic() - t0

    run_dir = tmp_path / "r"
    rng = random.Random(7)
    saved = []  # epochs in last.pt after each kill, to see where the kills landed
    for _ in range(4):
        cmd = (
            cli("train", "--resume", str(run_dir))
            if (run_dir / "config.yaml").is_file()
            else cli("train", str(cfg_path), "--out", str(run_dir))
        )
        # anywhere from the last moments of start-up (before any checkpoint) to the final evaluation
        if _run_for(cmd, rng.uniform(0.7 * start, whole)) is not None:
            break
        last = run_dir / "checkpoints" / "last.pt"
        saved.append(checkpoint.load(last)["epoch"] if last.is_file() else None)
    print(f"killed {len(saved)} time(s); epochs saved at each kill: {saved}")
    if not (run_dir / "status.json").is_file() or Run(run_dir).status["status"] != "finished":
        cmd = (
            cli("train", "--resume", str(run_dir))
            if (run_dir / "config.yaml").is_file()
            else cli("train", str(cfg_path), "--out", str(run_dir))
        )
        assert _run_for(cmd, 300) == 0
    a, b = Run(tmp_path / "ref"), Run(run_dir)
    assert [{k: v for k, v in r.items() if k not in TIMELESS} for r in a.metrics()] == [
        {k: v for k, v in r.items() if k not in TIMELESS} for r in b.metrics()
    ]
    for which in ("last", "best"):
        wa, wb = (checkpoint.load(r.path / "checkpoints" / f"{which}.pt") for r in (a, b))
        assert wa["epoch"] == wb["epoch"] and all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    assert a.eval["accuracy"] == b.eval["accuracy"] and a.eval["confusion"] == b.eval["confusion"]
    assert b.status["status"] == "finished"


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    except OSError:
        return []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_sweep_killed_at_random_moments_finishes_every_cell_exactly_once(tmp_path):
    spec = sweep_dict(
        epochs=3, params={"train.optimizer.lr": [0.05, 0.1], "model.options.width": [4, 6]}, retries=20
    )  # every kill is a retry: let none give a cell up
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "out"
    cmd = cli("sweep", str(path), "--workers", "2", "--out", str(out))
    rng = random.Random(11)
    kills = []
    for _ in range(4):
        sup = subprocess.Popen(cmd, env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if sup.wait(timeout=rng.uniform(2.0, 9.0)) == 0:
                break  # it finished before the kill
        except subprocess.TimeoutExpired:
            pass
        workers = _children(sup.pid)
        if workers and rng.random() < 0.5:  # first one worker, a moment later the supervisor
            os.kill(rng.choice(workers), signal.SIGKILL)
            kills.append("worker")
            time.sleep(rng.uniform(0.5, 4.0))
            workers = _children(sup.pid)
        sup.send_signal(signal.SIGKILL)
        sup.wait()
        kills.append("supervisor")
        deadline = time.monotonic() + 20  # the workers die with it
        while any(pid_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphans = [w for w in workers if pid_alive(w)]
        for w in orphans:
            os.kill(w, signal.SIGKILL)
        assert not orphans, f"workers {orphans} outlived their supervisor"
    print(f"kills: {kills}")
    assert _run_for(cmd, 600) == 0  # the same command again, to the end

    sweep, trials = load_trials(path, str(out / "study.journal"))
    assert not [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")]
    complete = Counter(t.user_attrs["cell"] for t in trials if t.state.name == "COMPLETE")
    assert complete == {c: 1 for c in range(len(sweep.cells()))}
    with open(out / "trials.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "finished"]
    assert Counter((r["lr"], r["width"], r["seed"]) for r in rows) == {
        (str(c["params"]["train.optimizer.lr"]), str(c["params"]["model.options.width"]), str(c["seed"])): 1
        for c in sweep.cells()
    }
