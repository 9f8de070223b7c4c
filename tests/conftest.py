"""Shared fixtures: tiny hand-made data and models, and the real data when it is present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CONVLENS_SHARED_DATA", ROOT.parent / "shared" / "data"))
CIFAR_TAR = SHARED_DATA / "cifar10-jpeg.tar.gz"
MNIST_TEST = SHARED_DATA / "mnist-test"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def need(path: Path, why: str):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is missing: {why}")


needs_cifar = need(CIFAR_TAR, "the shared CIFAR-10 copy (../shared/data) is not on this machine")
needs_mnist = need(MNIST_TEST, "the shared MNIST test set (../shared/data) is not on this machine")
needs_fashion = need(FASHION / "train-images-idx3-ubyte.gz", "install Debian's dataset-fashion-mnist (.ci/run does)")


def pytest_addoption(parser):
    parser.addoption(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="what train.precision: auto resolves to in every training (CONVLENS_PRECISION): bf16 runs the "
        "suite as a CPU with AMX or AVX-512 BF16 does, fp32 as one without; auto: this machine's own choice",
    )


def pytest_configure(config):
    # for the whole session (module-scoped fixtures train too) and the commands tests start
    forced = config.getoption("--precision")
    if forced != "auto":
        os.environ["CONVLENS_PRECISION"] = forced


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory, monkeypatch):
    """Every test gets its own data home; the array cache is shared per session (it is keyed by
    source), and torch runs on 2 threads so results do not depend on the machine."""
    monkeypatch.setenv("CONVLENS_DATA", str(tmp_path_factory.getbasetemp() / "data-home"))
    monkeypatch.setenv("CONVLENS_CACHE", str(tmp_path_factory.getbasetemp() / "array-cache"))
    monkeypatch.delenv("CONVLENS_MIRROR", raising=False)
    torch.set_num_threads(2)
    yield


def tiny_config(**overrides) -> dict:
    """A config that trains on digits in about a second."""
    cfg = {
        "name": "t",
        "seed": 0,
        "data": {"name": "digits", "val_fraction": 0.2},
        "model": {"preset": "tiny", "options": {"width": 4}},
        "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05}},
    }
    for key, value in overrides.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg
