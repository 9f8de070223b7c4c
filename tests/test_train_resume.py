"""Resume from any moment a run can die at: before its first checkpoint, between an epoch's
writes, before its config was written. The resumed run ends exactly as an uninterrupted one."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from convlens.errors import RunError
from convlens.run import Run
from convlens import checkpoint
from convlens.train import train
from convlens.train.metrics import MetricsLog

TIMELESS = ("epoch_seconds",)


class Killed(BaseException):
    """Stands in for SIGKILL: no handler of the training loop catches it, nothing is written."""


def quiet(msg: str) -> None:
    pass


def rows(run: Run) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMELESS} for r in run.metrics()]


def assert_same_run(a: Run, b: Run) -> None:
    assert rows(a) == rows(b)
    for which in ("last", "best"):
        wa = checkpoint.load(a.path / "checkpoints" / f"{which}.pt")
        wb = checkpoint.load(b.path / "checkpoints" / f"{which}.pt")
        assert wa["epoch"] == wb["epoch"]
        assert wa["model"].keys() == wb["model"].keys()
        assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    assert a.eval["accuracy"] == b.eval["accuracy"] and a.eval["confusion"] == b.eval["confusion"]
    assert b.status["status"] == "finished"


CFG = tiny_config(**{"train.epochs": 3, "data.augment": {"flip": {"p": 0.5}}})


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path, monkeypatch):
    ref = train(CFG, tmp_path / "ref", echo=quiet)
    real = checkpoint.save

    def die(path, obj):
        raise Killed

    monkeypatch.setattr(checkpoint, "save", die)
    with pytest.raises(Killed):
        train(CFG, tmp_path / "r", echo=quiet)
    monkeypatch.setattr(checkpoint, "save", real)
    assert not (tmp_path / "r" / "checkpoints" / "last.pt").exists()
    assert Run(tmp_path / "r").status["status"] == "running"  # what a kill leaves
    with pytest.raises(RunError, match="--resume"):  # a new run into it is still refused
        train(CFG, tmp_path / "r", echo=quiet)

    messages = []
    run = train(resume=tmp_path / "r", echo=messages.append)
    assert any("no checkpoint yet" in m for m in messages)
    assert_same_run(ref, run)


@pytest.mark.parametrize("where", ["best", "metrics"])
def test_killed_between_the_writes_of_an_epoch_resume_keeps_every_row(tmp_path, monkeypatch, where):
    """Killed while epoch 2's best.pt or metrics row is written (before last.pt commits it): the
    resume redoes epoch 2 and ends with every metrics row and the right best.pt."""
    cfg = tiny_config(**{"train.epochs": 3, "data.val_fraction": 0.0})  # no validation: best.pt every epoch
    ref = train(cfg, tmp_path / "ref", echo=quiet)
    real_save, real_write = checkpoint.save, MetricsLog.write

    def save(path, obj):
        if where == "best" and path.name == "best.pt" and obj["epoch"] == 2:
            raise Killed
        real_save(path, obj)

    def write(self, row):
        real_write(self, row)
        if where == "metrics" and row["epoch"] == 2:
            raise Killed

    monkeypatch.setattr(checkpoint, "save", save)
    monkeypatch.setattr(MetricsLog, "write", write)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "r", echo=quiet)
    monkeypatch.setattr(checkpoint, "save", real_save)
    monkeypatch.setattr(MetricsLog, "write", real_write)
    assert checkpoint.load(tmp_path / "r" / "checkpoints" / "last.pt")["epoch"] == 1
    assert_same_run(ref, train(resume=tmp_path / "r", echo=quiet))


def test_a_folder_left_before_the_config_was_written_is_started_afresh(tmp_path):
    run_dir = tmp_path / "r"
    (run_dir / "checkpoints").mkdir(parents=True)  # what a kill right after creating the folder leaves
    (run_dir / ".lock").write_text("12345 train\n")
    with pytest.raises(RunError, match="stopped before training began.*--out"):
        train(resume=run_dir, echo=quiet)
    run = train(tiny_config(**{"train.epochs": 1}), run_dir, echo=quiet)
    assert run.status["status"] == "finished"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")  # anything else is not ours to reuse
    with pytest.raises(RunError, match="not empty"):
        train(tiny_config(**{"train.epochs": 1}), tmp_path / "other", echo=quiet)
