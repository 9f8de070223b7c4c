import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import CIFAR_TAR, ROOT, needs_cifar, needs_fashion, tiny_config
from convlens import runload
from convlens.errors import DataError, RunError
from convlens.run import Run
from convlens.train import train
from convlens.checkpoint import load as load_checkpoint

TIMELESS = ("epoch_seconds",)


def rows(run: Run) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMELESS} for r in run.metrics()]


def quiet(msg: str) -> None:
    pass


def test_run_folder_contract(tmp_path):
    run = train(tiny_config(), tmp_path / "r", echo=quiet)
    p = run.path
    for f in (
        "config.yaml",
        "dataset.json",
        "summary.json",
        "metrics.jsonl",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "eval.json",
        "predictions.csv",
        "status.json",
    ):
        assert (p / f).is_file(), f
    assert any((p / "tb").glob("events.out.tfevents.*"))
    assert run.status["status"] == "finished"
    cfg = yaml.safe_load((p / "config.yaml").read_text())
    assert cfg["meta"]["convlens_version"] and cfg["seed"] == 0 and len(cfg["data"]["mean"]) == 1
    m = run.metrics()
    assert [r["epoch"] for r in m] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds", "gap"} <= set(m[0])
    ev = run.eval
    assert ev["classes"] == [str(i) for i in range(10)] and len(ev["confusion"]) == 10
    assert sum(map(sum, ev["confusion"])) == ev["n"] == len(runload.load_data(run).test)
    lines = (p / "predictions.csv").read_text().splitlines()
    assert lines[0].startswith("position,index,label,pred") and len(lines) == ev["n"] + 1
    # checkpoints are plain state_dicts that load with weights_only=True
    state = torch.load(p / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and "model" in state and "optimizer" in state and state["config"]["seed"] == 0
    model = runload.load_model(run, "best")
    assert not model.training


@pytest.mark.slow  # three trainings: half a minute on 2 busy cores
def test_same_seed_same_metrics(tmp_path):
    cfg = tiny_config(**{"data.augment": {"crop": {"padding": 1}, "flip": {"p": 0.5}, "erase": {"p": 0.5}}})
    cfg["model"]["preset"] = "lenet5"
    cfg["model"]["options"] = {"width": 4, "hidden": 16, "dropout": 0.3}
    a = train(cfg, tmp_path / "a", echo=quiet)
    b = train(cfg, tmp_path / "b", echo=quiet)
    assert rows(a) == rows(b)
    assert a.eval["accuracy"] == b.eval["accuracy"]
    cfg["seed"] = 1
    c = train(cfg, tmp_path / "c", echo=quiet)
    assert rows(c) != rows(a)


@pytest.mark.slow  # 8 epochs: up to a minute on 2 busy cores
def test_learns_digits(tmp_path):
    cfg = tiny_config(**{"train.epochs": 8, "model.options": {"width": 8}})
    cfg["train"]["optimizer"] = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True}
    run = train(cfg, tmp_path / "r", echo=quiet)
    assert run.eval["accuracy"] > 0.9


def test_divergence_stops_with_message(tmp_path):
    cfg = tiny_config(**{"train.epochs": 5})
    cfg["train"]["optimizer"] = {"name": "sgd", "lr": 100.0, "momentum": 0.99}
    run = train(cfg, tmp_path / "r", echo=quiet)
    st = run.status
    assert st["status"] == "diverged"
    assert "diverged in epoch 1" in st["message"] and "lower learning rate" in st["message"]
    assert run.metrics()  # the folder stays readable: the failing epoch is recorded
    assert not (run.path / "eval.json").exists()


@pytest.mark.parametrize("which", ["best", "last"])
def test_diverged_run_is_tested_on_the_weights_saved_before(tmp_path, monkeypatch, which):
    from convlens.train import loop

    real = loop.Trainer.train_epoch

    def nan_in_epoch_2(self, epoch):
        row = real(self, epoch)
        return {**row, "train_loss": float("nan")} if epoch == 1 else row

    monkeypatch.setattr(loop.Trainer, "train_epoch", nan_in_epoch_2)
    run = train(tiny_config(**{"train.epochs": 4, "eval.checkpoint": which}), tmp_path / "r", echo=quiet)
    assert run.status["status"] == "diverged" and "epoch 2" in run.status["message"]
    assert run.eval["checkpoint"] == which and run.eval["epoch"] == 1  # the only epoch that finished
    saved = load_checkpoint(run.path / "checkpoints" / f"{which}.pt")
    assert run.eval["checkpoint_epoch"] == saved["epoch"] == 1
    assert run.eval["checkpoint_sha256"] == runload.checkpoint_info(run, which)["checkpoint_sha256"]
    assert run.eval["n"] > 0 and 0 <= run.eval["accuracy"] <= 1


def test_diverge_factor_null_trains_on_through_a_finite_loss(tmp_path, monkeypatch):
    from convlens.train import loop

    real = loop.Trainer.train_epoch

    def huge_loss_in_epoch_1(self, epoch):
        row = real(self, epoch)
        return {**row, "train_loss": 1e6} if epoch == 0 else row

    monkeypatch.setattr(loop.Trainer, "train_epoch", huge_loss_in_epoch_1)
    run = train(tiny_config(**{"train.diverge_factor": None}), tmp_path / "on", echo=quiet)
    assert run.status["status"] == "finished" and run.metrics()[0]["train_loss"] == 1e6
    assert run.eval is not None
    run = train(tiny_config(), tmp_path / "stops", echo=quiet)  # the default factor (10) stops it
    assert run.status["status"] == "diverged" and "reached 1e+06" in run.status["message"]


def test_bad_input_leaves_no_run_folder(tmp_path):
    with pytest.raises(DataError):
        train(
            tiny_config(**{"data.name": "cifar10", "data.root": str(tmp_path / "none"), "data.download": False}),
            tmp_path / "r",
            echo=quiet,
        )
    assert not (tmp_path / "r").exists()


def test_existing_run_folder_is_not_overwritten(tmp_path):
    train(tiny_config(**{"train.epochs": 1}), tmp_path / "r", echo=quiet)
    with pytest.raises(RunError, match="--resume"):
        train(tiny_config(), tmp_path / "r", echo=quiet)


def test_schedules_shape():
    from convlens.config import ScheduleConfig
    from convlens.train.optim import lr_factor

    f = lr_factor(ScheduleConfig(name="warmup_cosine", warmup_epochs=2, start_factor=0.1), 1.0, 100, 10)
    assert f(0) == pytest.approx(0.1) and f(20) == pytest.approx(1.0) and f(100) == pytest.approx(0.0)
    f = lr_factor(ScheduleConfig(name="step", step_epochs=3, gamma=0.5), 1.0, 100, 10)
    assert [f(s) for s in (0, 29, 30, 60)] == [1.0, 1.0, 0.5, 0.25]
    f = lr_factor(ScheduleConfig(name="onecycle", pct_start=0.2, start_factor=0.0, final_factor=0.0), 1.0, 100, 10)
    assert f(0) == 0 and f(20) == 1 and f(60) == pytest.approx(0.5) and f(100) == 0
    f = lr_factor(ScheduleConfig(name="cosine", min_lr=0.01), 0.1, 10, 5)
    assert f(10) == pytest.approx(0.1)


def _default_sigint() -> None:
    # A test run started in the background of a non-interactive shell inherits SIGINT ignored, and
    # Python then never turns Ctrl-C into KeyboardInterrupt; give the child the terminal's default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "convlens.cli", *args],
        env=env,
        cwd=ROOT,
        preexec_fn=_default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


@pytest.mark.slow
@pytest.mark.timeout(1500)  # three training processes; minutes on 2 cores shared with other work
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    cfg = tiny_config(
        **{
            "train.epochs": 6,
            "train.batch_size": 16,
            "train.threads": 1,
            "model.options": {"width": 24},
            "data.augment": {"flip": {"p": 0.5}},
        }
    )
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    ref = _cli("train", str(cfg_path), "--out", str(tmp_path / "ref"))
    out_ref = ref.communicate(timeout=400)[0]
    assert ref.returncode == 0, out_ref

    run_dir = tmp_path / "killed"
    proc = _cli("train", str(cfg_path), "--out", str(run_dir))
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 400
    # wait until epoch 2's last.pt is saved (it follows the epoch's metrics row; the atomic write
    # means a last.pt that exists is whole), then kill in the middle of the third
    while time.time() < deadline and not (last.is_file() and load_checkpoint(last)["epoch"] >= 2):
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"]
    assert 2 <= saved < 6
    assert json.loads((run_dir / "status.json").read_text())["status"] == "running"  # what a kill leaves

    res = _cli("train", "--resume", str(run_dir))
    out = res.communicate(timeout=400)[0]
    assert res.returncode == 0, out
    a, b = Run(tmp_path / "ref"), Run(run_dir)
    assert rows(a) == rows(b)
    assert a.eval["accuracy"] == b.eval["accuracy"] and a.eval["confusion"] == b.eval["confusion"]
    assert b.status["status"] == "finished"


@pytest.mark.slow
@pytest.mark.timeout(600)  # a child process that imports torch and trains: slow to start on busy cores
def test_sigint_marks_interrupted(tmp_path):
    cfg = tiny_config(**{"train.epochs": 200, "train.batch_size": 16, "model.options": {"width": 16}})
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = _cli("train", str(cfg_path), "--out", str(tmp_path / "r"))
    metrics = tmp_path / "r" / "metrics.jsonl"
    deadline = time.time() + 400
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=150)[0]
    assert proc.returncode == 130, out
    st = json.loads((tmp_path / "r" / "status.json").read_text())
    assert st["status"] == "interrupted" and "--resume" in st["message"]
    assert "convlens train --resume" in out


def test_resume_of_finished_run_is_a_no_op(tmp_path):
    train(tiny_config(**{"train.epochs": 1}), tmp_path / "r", echo=quiet)
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    run = train(resume=tmp_path / "r", echo=quiet)
    assert run.status["status"] == "finished" and (tmp_path / "r" / "metrics.jsonl").read_text() == before


def test_resume_can_extend_epochs(tmp_path):
    train(tiny_config(**{"train.epochs": 1}), tmp_path / "r", echo=quiet)
    run = train(resume=tmp_path / "r", overrides=["train.epochs=2"], echo=quiet)
    assert [r["epoch"] for r in run.metrics()] == [1, 2] and run.config.train.epochs == 2
    with pytest.raises(RunError, match="only train.epochs"):
        train(resume=tmp_path / "r", overrides=["train.optimizer.lr=1"], echo=quiet)


def test_resume_with_fewer_epochs_than_done_is_refused(tmp_path):
    train(tiny_config(**{"train.epochs": 2}), tmp_path / "r", echo=quiet)
    before = (tmp_path / "r" / "metrics.jsonl").read_text(), (tmp_path / "r" / "status.json").read_text()
    with pytest.raises(RunError, match=r"train.epochs=1 is fewer than the 2 epochs .* has trained already"):
        train(resume=tmp_path / "r", overrides=["train.epochs=1"], echo=quiet)
    assert ((tmp_path / "r" / "metrics.jsonl").read_text(), (tmp_path / "r" / "status.json").read_text()) == before


def test_a_busy_machine_draws_a_note_about_threads(monkeypatch):
    from convlens.train.precision import busy_note

    assert busy_note(2, load=0.5) is None and busy_note(1, load=9.0) is None
    note = busy_note(2, load=8.0)
    assert "load 8.0 on 2 cores" in note and "train.threads: 1" in note and "differ slightly" in note


def test_training_on_a_busy_machine_says_so_unless_threads_are_set(monkeypatch, tmp_path):
    import convlens.train.precision as precision

    monkeypatch.setattr(os, "getloadavg", lambda: (6.0, 6.0, 6.0))
    monkeypatch.setattr(precision, "usable_cores", lambda: 2)
    for threads, said in ((None, True), (1, False), (2, False)):
        lines = []
        train(tiny_config(**{"train.epochs": 1, "train.threads": threads}), tmp_path / str(threads), echo=lines.append)
        assert any("the machine is busy (load 6.0 on 2 cores)" in x for x in lines) == said, lines


def test_recurrent_model_trains(tmp_path):
    cfg = tiny_config(**{"model": {"preset": "lstm", "options": {"hidden": 16}}, "train.epochs": 1})
    run = train(cfg, tmp_path / "r", echo=quiet)
    assert run.status["status"] == "finished" and "precision" in run.config.meta


@needs_cifar
@pytest.mark.slow
@pytest.mark.timeout(1800)  # about a minute alone; several times that on 2 cores shared with other work
def test_real_cifar10_small_run(tmp_path):
    # 10,000 training images, 3 epochs of a small BN net: well above chance (10%)
    cfg = {
        "data": {
            "name": "cifar10",
            "root": str(CIFAR_TAR),
            "train_subset": 10000,
            "test_subset": 2000,
            "val_fraction": 0.1,
            "augment": {"flip": {"p": 0.5}},
        },
        "model": {"preset": "tiny", "options": {"width": 32}},
        "train": {
            "epochs": 3,
            "batch_size": 128,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
            "schedule": {"name": "onecycle", "pct_start": 0.3},
            "label_smoothing": 0.1,
        },
    }
    run = train(cfg, tmp_path / "c", echo=quiet)
    assert run.eval["accuracy"] > 0.40, run.eval["accuracy"]


@needs_fashion
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fashion_mnist_beats_85_percent(tmp_path):
    cfg = {
        "data": {"name": "fashion-mnist", "val_fraction": 0.05},
        "model": {
            "layers": [
                {"type": "conv", "out": 16, "kernel": 3, "padding": 1},
                "bn",
                "relu",
                {"type": "maxpool"},
                {"type": "conv", "out": 32, "kernel": 3, "padding": 1},
                "bn",
                "relu",
                {"type": "maxpool"},
                "flatten",
                {"type": "linear", "out": "classes"},
            ]
        },
        "train": {
            "epochs": 2,
            "batch_size": 128,
            "optimizer": {"name": "adam", "lr": 0.003},
            "schedule": {"name": "cosine"},
        },
    }
    run = train(cfg, tmp_path / "f", echo=quiet)
    assert run.eval["accuracy"] > 0.85, run.eval["accuracy"]


def test_relative_data_root_is_kept_absolute(tmp_path, monkeypatch):
    # a run folder is read later from anywhere (analyze, report): the data path it records must not
    # depend on the directory training was started from
    from test_data import write_tree

    write_tree(tmp_path / "pets", size=(8, 8), per_class=4)
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(**{"data.name": "imagefolder", "data.root": "pets", "data.val_fraction": 0.0, "train.epochs": 1})
    run = train(cfg, tmp_path / "r", echo=quiet)
    assert run.config.data.root == str(tmp_path / "pets")
    monkeypatch.chdir("/")
    assert runload.load_data(run).classes == ["cat", "dog"]


def test_train_clean_acc_is_eval_mode_accuracy_on_clean_training_images(tmp_path):
    """train.clean_subset: each validated epoch measures the first N training images without
    augmentation, in eval mode (dropout off), and logs clean_gap = train_clean_acc - val_acc."""
    from convlens.config import load_config
    from convlens.data import load_data
    from convlens.train.evaluate import evaluate_split

    cfg = load_config(
        tiny_config(
            **{
                "train.epochs": 1,
                "train.precision": "fp32",
                "train.clean_subset": 60,
                "data.augment": {"flip": {"p": 1.0}},  # every training image flipped
                "model.options.width": 4,
            }
        )
    )
    run = train(cfg, tmp_path / "run", echo=lambda s: None)
    rows = Run(run.path).metrics()
    assert all(r["clean_gap"] == pytest.approx(r["train_clean_acc"] - r["val_acc"]) for r in rows)
    data = load_data(cfg.data)
    model = runload.load_model(run.path, "last")
    res, _ = evaluate_split(model, data.train.take(list(range(60))), data.classes)
    assert rows[-1]["train_clean_acc"] == pytest.approx(res["accuracy"])
    assert load_config(tiny_config()).train.clean_subset == 0  # off by default: no extra cost
