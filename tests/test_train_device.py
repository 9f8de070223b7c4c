"""The device side of training: float16 autocast with gradient scaling (CUDA's, exercised here on
the CPU through the same code), and the precision names the run folder records."""

import pytest
import torch

from conftest import tiny_config
from convlens.config import load_config
from convlens.errors import ConfigError
from convlens.train import loop
from convlens.train import evaluate
from convlens.train.precision import Precision, choose


def test_fp16_is_for_cuda_only_and_evaluates_in_float32():
    with pytest.raises(ConfigError, match="train.precision=fp16 needs train.device=cuda"):
        choose("cpu", "fp16")
    half = Precision(torch.device("cpu"), False, False, 1, fp16=True)
    assert half.name == "fp16 autocast" and evaluate.test_precision(half).name == "float32"
    with half.autocast():
        y = torch.nn.Linear(4, 2)(torch.ones(3, 4))
    assert y.dtype == torch.float16


def test_an_fp16_run_scales_its_loss_and_keeps_the_scaler_in_its_checkpoint(tmp_path, monkeypatch):
    half = Precision(torch.device("cpu"), False, False, 1, fp16=True)
    monkeypatch.setattr(loop, "choose", lambda *a, **k: half)  # what choose("cuda", "fp16") gives on a GPU
    cfg = load_config(tiny_config(**{"train.epochs": 1, "train.grad_clip": 1.0, "data.train_subset": 256}))
    run = loop.train(cfg, tmp_path / "run", echo=lambda s: None)
    state = torch.load(run.path / "checkpoints" / "last.pt", weights_only=False)
    assert state["scaler"]["scale"] > 0 and run.config.meta["precision"].startswith("cpu, fp16 autocast")
    assert run.metrics()[-1]["train_loss"] < 10


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no CUDA device is")
def test_train_device_flag_sets_train_device(tmp_path, capsys):
    import yaml

    from convlens.cli import main

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config()))
    assert main(["train", str(tmp_path / "c.yaml"), "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "error: train.device=cuda, but no CUDA device is available" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
