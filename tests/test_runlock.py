"""One writer per run folder: while `convlens train` trains RUN, every other writer is refused with
an error naming its PID, readers warn; the lock dies with its holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, tiny_config
from convlens.analyses.pipeline import analyze
from convlens.cli import main
from convlens.errors import RunError
from convlens.explain.outputs import explain_run
from convlens.run import Run
from convlens.runlock import RunBusy, holder, run_lock
from convlens.train import evaluate_run, train


def quiet(msg: str) -> None:
    pass


def _wait_rows(run_dir, n, proc, timeout=120.0):
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    raise AssertionError(f"no {n} epochs after {timeout} s")


@pytest.mark.timeout(300)
def test_a_second_writer_is_refused_while_a_run_trains(tmp_path, capsys):
    cfg = tiny_config(**{"train.epochs": 500, "train.batch_size": 16, "train.threads": 1})
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "convlens.cli", "train", str(cfg_path), "--out", str(run_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_rows(run_dir, 1, proc)
        assert holder(run_dir) == f"process {proc.pid} (convlens train)"

        # `convlens train --resume R` while R trains: one error line naming the PID, exit 2
        assert main(["train", "--resume", str(run_dir)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and f"process {proc.pid} " in err[0], err
        # so is every other writer
        for write in (
            lambda: train(resume=run_dir, echo=quiet),
            lambda: train(cfg, run_dir, echo=quiet),
            lambda: evaluate_run(run_dir),
            lambda: analyze(run_dir, ["filters"], figures=False),
            lambda: explain_run(Run(run_dir), "saliency", images=[0]),
        ):
            with pytest.raises(RunBusy, match=f"in use by process {proc.pid} "):
                write()
        assert main(["report", str(run_dir)]) == 2 and str(proc.pid) in capsys.readouterr().err
        assert main(["eval", str(run_dir)]) == 2 and str(proc.pid) in capsys.readouterr().err
        assert not (run_dir / "eval.json").exists() and not (run_dir / "report.html").exists()
        # a reader goes on, and says that the run is still being written
        assert main(["diagnose", str(run_dir)]) == 0
        assert f"still being written by process {proc.pid}" in capsys.readouterr().err
        _wait_rows(run_dir, 2, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert holder(run_dir) is None  # the kernel dropped the lock with its holder
    epochs = len(Run(run_dir).metrics()) + 1
    run = train(resume=run_dir, overrides=[f"train.epochs={epochs}"], echo=quiet)
    assert [r["epoch"] for r in run.metrics()] == list(range(1, epochs + 1))  # trained by one process


def test_the_lock_is_reentrant_in_one_process_and_names_no_one_when_free(tmp_path):
    run = train(tiny_config(**{"train.epochs": 1}), tmp_path / "r", echo=quiet)
    assert holder(run.path) is None
    with run_lock(run.path, "analyze"):
        with run_lock(run.path, "explain"):  # analyze calling explain: the same process, no conflict
            assert holder(run.path) == f"process {os.getpid()} (this one)"
        evaluate_run(run.path)
    assert holder(run.path) is None
    assert (run.path / ".lock").read_text().split()[0] == str(os.getpid())
    with pytest.raises(RunError, match="not a run folder"):  # no lock file is made outside run folders
        evaluate_run(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
