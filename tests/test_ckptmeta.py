"""A checkpoint's epoch read from its pickle alone: the same as torch reads, no torch, no code run."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile

import torch
from torch import nn

from convlens import checkpoint, runload
from convlens.report.checkpoints import Checkpoints
from convlens.run import Run
from convlens.run.ckptmeta import read_numbers
from convlens.train import train

from conftest import tiny_config


def saved(tmp_path, **extra):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), **extra})
    return path


def test_the_epoch_is_what_torch_reads(tmp_path):
    path = saved(tmp_path, epoch=7, val_acc=0.5, version="1.2", config={"seed": 0})
    assert read_numbers(path, ("epoch", "val_acc", "version", "config", "model", "absent")) == {
        "epoch": 7,
        "val_acc": 0.5,
        "version": "1.2",
        "config": None,  # not a number or a string
        "model": None,
        "absent": None,
    }
    assert checkpoint.load(path)["epoch"] == 7


def test_other_files_and_foreign_classes_are_not_read(tmp_path):
    assert read_numbers(tmp_path / "missing.pt") is None
    (tmp_path / "plain.pt").write_bytes(b"not a zip")
    assert read_numbers(tmp_path / "plain.pt") is None
    # a pickle that would call os.system on loading is refused before anything runs
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"epoch": 3, "x": Evil()}, protocol=2))
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    assert read_numbers(tmp_path / "evil.pt") is None
    assert not marker.exists()


def test_reading_the_epoch_does_not_import_torch(tmp_path):
    path = saved(tmp_path, epoch=3)
    code = (
        "import sys; from convlens.run.ckptmeta import read_numbers; "
        f"print(read_numbers({str(path)!r})['epoch'], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["3", "False"]


def test_the_report_names_the_same_checkpoints_as_runload(tmp_path):
    run = train(tiny_config(), tmp_path / "r", echo=lambda s: None)
    marks = Checkpoints(Run(run.path))
    for name in ("last", "best"):
        assert marks.current(name) == runload.checkpoint_info(run.path, name)
        # read from the pickle alone, the identity is the one the whole file gives
        path = run.path / "checkpoints" / f"{name}.pt"
        whole = checkpoint.load(path)
        assert runload.checkpoint_info(run.path, name) == runload.checkpoint_info(run.path, name, whole)
        assert marks.current(name)["checkpoint_epoch"] == whole["epoch"]
