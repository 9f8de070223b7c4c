"""Data-parallel training under torchrun (gloo, CPU) equals one process on the same global batch."""

import json
import math
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


# torchrun starts this instead of `-m convlens.cli`: the same command, and each process records how
# many images every DDP step it took (so a process that read the whole batch is caught, not only
# weights that differ)
PROBE = """
import json, os, sys
from torch.nn.parallel import DistributedDataParallel
from convlens.cli import main

sizes, forward = [], DistributedDataParallel.forward
def counted(self, x, *args, **kwargs):
    sizes.append(len(x))
    return forward(self, x, *args, **kwargs)
DistributedDataParallel.forward = counted
code = main(sys.argv[2:])
with open(os.path.join(sys.argv[1], "sizes-" + os.environ["RANK"] + ".json"), "w") as f:
    json.dump(sizes, f)
sys.exit(code)
"""


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
            "train.batch_size": 64,  # 1,151 training images: the last batch of 63 splits 32 + 31
            "train.precision": "fp32",
            "train.threads": 1,
            "train.optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "data.val_fraction": 0.2,
        }
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    train(tmp_path / "c.yaml", tmp_path / "one", echo=lambda m: None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    (tmp_path / "probe.py").write_text(PROBE)
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(tmp_path / "probe.py"), str(tmp_path)]
    cmd += ["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "two")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=380)
    assert done.returncode == 0, done.stderr[-3000:]
    # each process stepped on its half of every batch, the first taking the odd image
    sizes = [json.loads((tmp_path / f"sizes-{rank}.json").read_text()) for rank in (0, 1)]
    n = json.loads((tmp_path / "one" / "dataset.json").read_text())["sizes"]["train"]
    batches = [64] * (n // 64) + [n % 64] * (n % 64 > 0)
    assert batches[-1] % 2 == 1  # the shares differ: each process's loss must be scaled by the whole batch
    assert sizes == [[math.ceil(b / 2) for b in batches] * 2, [b // 2 for b in batches] * 2]
    one = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert one.keys() == two.keys()
    for k in one:
        # equal up to float32 summation order (each step adds two partial gradients); scaling each
        # process's loss by its own share instead of half the batch moves weights by ~1e-3
        assert torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-5), k
    rows = [
        [json.loads(line) for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in ("one", "two")
    ]
    for a, b in zip(*rows):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["train_acc"] == a["train_acc"] and b["val_acc"] == a["val_acc"]
