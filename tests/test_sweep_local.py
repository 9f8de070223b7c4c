"""Sweeps on this machine: a grid runs every cell exactly once, pruned trials are marked, random
search runs each point once per seed, and a crashed sweep resumes where it stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections import Counter

from sweep_common import Watch, cli, load_trials, sweep_dict, training, wait_for, worker_env, write_sweep

from convlens.cli import main
from convlens.config import load_config
from convlens.run import Run
from convlens.sweep import build_results, load_sweep, run_sweep, worker
from convlens.sweep.trial import run_trial
from convlens.utils import read_json


def _states(trials):
    return Counter(t.state.name for t in trials)


def test_grid_runs_every_cell_exactly_once_and_writes_results(tmp_path):
    path = write_sweep(tmp_path, params={"train.optimizer.lr": [0.05, 0.1], "model.options.width": [4, 6]})
    out = run_sweep(path, out=tmp_path / "out", echo=lambda s: None)
    sweep, trials = load_trials(path, str(out / "study.journal"))
    assert _states(trials) == {"COMPLETE": 4}
    assert sorted(t.user_attrs["cell"] for t in trials) == list(range(4))
    for t in trials:  # each trial trained exactly its cell's config, in its own run folder
        cell = sweep.cells()[t.user_attrs["cell"]]
        run = Run(out / "trials" / str(t.number))
        assert run.status["status"] == "finished"
        assert (run.config.train.optimizer.lr, run.config.model.options["width"], run.config.seed) == (
            cell["params"]["train.optimizer.lr"],
            cell["params"]["model.options.width"],
            cell["seed"],
        )
        assert t.value == max(r["val_acc"] for r in run.metrics())

    # the same command again: everything is finished, nothing runs twice
    run_sweep(path, out=out, echo=lambda s: None, table=False)
    assert len(load_trials(path, str(out / "study.journal"))[1]) == 4

    res = read_json(out / "results.json")
    assert [r["trial"] for r in res["trials"]] == list(range(4))
    assert {f["path"] for f in res["figures"]} == {
        "plots/acc_vs_lr.png",
        "plots/acc_vs_width.png",
        "plots/parallel.png",
        "plots/heatmap_lr_width.png",
        "plots/curves_by_lr.png",
        "plots/curves.png",
    }
    assert all((out / f["path"]).stat().st_size > 1000 for f in res["figures"])
    assert (out / "trials.csv").read_text().splitlines()[0].startswith("trial,lr,width,seed,status,best_val_acc")
    best = res["best"]
    assert best["best_val_acc"] == max(r["best_val_acc"] for r in res["trials"])
    cfg = load_config(out / "best.yaml")  # ready to train: the best point and seed, nothing else changed
    assert (cfg.train.optimizer.lr, cfg.model.options["width"], cfg.seed) == (
        best["values"]["train.optimizer.lr"],
        best["values"]["model.options.width"],
        best["seed"],
    )
    assert cfg.train.epochs == 2 and cfg.data.name == "digits"


def test_pruned_trials_are_marked_in_tables(tmp_path, capsys):
    # lr 1e-4 learns nothing in an epoch: once both lr 0.1 trials are done, the median pruner
    # stops both lr 1e-4 trials after their first epoch
    path = write_sweep(
        tmp_path,
        epochs=3,
        params={"train.optimizer.lr": [0.1, 0.0001]},
        seeds=2,
        pruner={"name": "median", "startup_trials": 2, "warmup_epochs": 0},
    )
    out = run_sweep(path, out=tmp_path / "out", echo=lambda s: None, table=False)
    _, trials = load_trials(path, str(out / "study.journal"))
    assert _states(trials) == {"COMPLETE": 2, "PRUNED": 2}
    for t in trials:
        if t.state.name == "PRUNED":
            assert Run(out / "trials" / str(t.number)).status["status"] == "pruned"
            assert t.params["train.optimizer.lr"] == 0.0001 and list(t.intermediate_values) == [1]

    assert main(["sweep", "table", str(out), "--format", "csv"]) == 0
    printed = capsys.readouterr().out
    rows = {r["trial"]: r for r in build_results(out).rows}
    assert {r["status"] for r in rows.values() if r["lr"] == 0.0001} == {"pruned"}
    assert all(r["epochs"] == 1 for r in rows.values() if r["status"] == "pruned")
    group = {g["lr"]: g for g in build_results(out).groups[0].rows}
    assert (group[0.0001]["n"], group[0.0001]["pruned"], group[0.0001]["best_val_acc"]) == (0, 2, None)
    assert (group[0.1]["n"], group[0.1]["pruned"]) == (2, 0)
    assert "lr,n,pruned,best_val_acc" in printed and ",pruned," in printed
    md = (out / "results.md").read_text()
    assert "| pruned |" in md and "2 pruned" in md


def test_random_search_runs_each_point_once_per_seed(tmp_path):
    path = write_sweep(
        tmp_path,
        method="random",
        seeds=2,
        budget={"trials": 2},
        epochs=1,
        params={"train.optimizer.lr": {"low": 0.01, "high": 0.2, "log": True}, "model.options.width": [4, 6]},
    )
    out = run_sweep(path, out=tmp_path / "out", echo=lambda s: None, table=False)
    _, trials = load_trials(path, str(out / "study.journal"))
    assert _states(trials) == {"COMPLETE": 4}
    points = Counter((t.params["train.optimizer.lr"], t.params["model.options.width"]) for t in trials)
    assert sorted(points.values()) == [2, 2]  # two points, each run with both seeds
    for point in points:
        seeds = {
            t.user_attrs["seed"]
            for t in trials
            if (t.params["train.optimizer.lr"], t.params["model.options.width"]) == point
        }
        assert seeds == {0, 1}
    assert all(0.01 <= lr <= 0.2 for lr, _ in points)


def test_a_killed_worker_and_a_crashed_sweep_lose_nothing(tmp_path):
    """`--workers 2`: one worker is SIGKILLed mid-trial (its trial is requeued and rerun), later
    the whole sweep is killed; the same command resumes it: every cell finishes exactly once and
    trials finished before the crash are kept as they were."""
    path = write_sweep(tmp_path, epochs=5, params={"train.optimizer.lr": [0.05, 0.1], "model.options.width": [4, 5, 6]})
    out = tmp_path / "out"
    journal = str(out / "study.journal")
    parent = subprocess.Popen(
        cli("sweep", str(path), "--workers", "2", "--out", str(out)),
        env=worker_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        watch = Watch(path, journal)

        def running_trial(exclude=()):
            for t in watch.trials():
                if t.state.name == "RUNNING" and t.number not in exclude and training(out, t.number):
                    return t
            return None

        first = wait_for(running_trial, 120, "a trial in training", [parent])
        os.kill(int(first.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        wait_for(
            lambda: any(t.system_attrs.get("retry_history") == [first.number] for t in watch.trials()),
            60,
            "the killed trial to be requeued",
            [parent],
        )

        def done_and_running():
            return any(t.state.name == "COMPLETE" for t in watch.trials()) and running_trial(exclude=[first.number])

        wait_for(done_and_running, 120, "a finished trial and another in training", [parent])
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the machine "crashes": the sweep and its workers die at once
        parent.wait()
    _, before = load_trials(path, journal)
    kept = {
        t.number: os.stat(out / "trials" / str(t.number) / "metrics.jsonl").st_mtime_ns
        for t in before
        if t.state.name == "COMPLETE"
    }
    orphans = [t.number for t in before if t.state.name == "RUNNING"]
    assert kept and orphans

    messages = []
    run_sweep(path, out=out, echo=messages.append, table=False)  # the same command again
    sweep, after = load_trials(path, journal)
    complete = [t for t in after if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["cell"] for t in complete) == list(range(len(sweep.cells())))  # each cell once
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in after)
    for number, mtime in kept.items():  # finished before the crash: kept, not rerun
        assert os.stat(out / "trials" / str(number) / "metrics.jsonl").st_mtime_ns == mtime
    assert any(m.startswith("rerunning") and str(orphans[0]) in m for m in messages)
    rows = {r["trial"]: r for r in build_results(out).rows}
    for number in [first.number, *orphans]:  # every interrupted trial was rerun, and the table says so
        assert rows[number]["status"] == "killed"
        retry = int(re.search(r"rerun as (\d+)", rows[number]["note"]).group(1))
        assert f"rerun of {number}" in rows[retry]["note"]
        assert rows[retry]["lr"] == rows[number]["lr"] and rows[retry]["width"] == rows[number]["width"]
    assert load_sweep(out / "sweep.yaml").fingerprint() == sweep.fingerprint()


def test_a_time_budget_stops_starting_trials_and_the_sweep_continues_later(tmp_path, monkeypatch):
    # the budget's clock is a counter each trial moves on by 0.3 s: trials start at 0 and 0.3,
    # and at 0.6 the budget of 0.5 s is spent
    now = [0.0]

    def trial_then_tick(*args, **kwargs):
        try:
            return run_trial(*args, **kwargs)
        finally:
            now[0] += 0.3

    monkeypatch.setattr(worker, "clock", lambda: now[0])
    monkeypatch.setattr(worker, "run_trial", trial_then_tick)
    spec = sweep_dict(budget={"time": 0.5}, epochs=3)
    out = run_sweep(spec, out=tmp_path / "out", echo=lambda s: None, table=False)
    _, trials = load_trials(out / "sweep.yaml", str(out / "study.journal"))
    assert _states(trials) == {"COMPLETE": 2, "WAITING": 2}
    del spec["budget"]  # the budget is not part of what the trials are: the same study goes on
    run_sweep(spec, out=out, echo=lambda s: None, table=False)
    _, trials = load_trials(out / "sweep.yaml", str(out / "study.journal"))
    assert _states(trials) == {"COMPLETE": 4} and sorted(t.user_attrs["cell"] for t in trials) == [0, 1, 2, 3]
