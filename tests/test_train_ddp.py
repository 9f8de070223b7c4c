"""Data-parallel training under torchrun (gloo, CPU) equals one process on the same global batch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config

from convlens.train import train

# no batch norm and no dropout: each process's share of a batch then gives exactly its share of
# the gradient (batch norm would normalise by the share, dropout draw other masks)
LAYERS = [
    {"type": "conv", "out": 6, "kernel": 3, "padding": 1},
    "relu",
    {"type": "maxpool"},
    {"type": "conv", "out": 8, "kernel": 3, "padding": 1},
    "relu",
    {"type": "globalpool", "mode": "max"},
    {"type": "linear", "out": "classes"},
]


@pytest.mark.torchrun
@pytest.mark.slow  # two torch processes start: about a minute on 2 busy cores
@pytest.mark.timeout(400)
def test_two_processes_train_the_one_process_weights(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun is not installed beside this Python")
    cfg = tiny_config(
        **{
            "model": {"layers": LAYERS},
            "train.epochs": 2,
            "train.batch_size": 50,  # 1,437 training images: the last batch of 37 splits 19 + 18
            "train.precision": "fp32",
            "train.threads": 1,
            "train.optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "data.val_fraction": 0.2,
        }
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    train(tmp_path / "c.yaml", tmp_path / "one", echo=lambda m: None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "convlens.cli", "train", str(tmp_path / "c.yaml")]
    done = subprocess.run([*cmd, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=380)
    assert done.returncode == 0, done.stderr[-3000:]
    one = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-5), k
    rows = [
        [json.loads(line) for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in ("one", "two")
    ]
    for a, b in zip(*rows):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["train_acc"] == a["train_acc"] and b["val_acc"] == a["val_acc"]
