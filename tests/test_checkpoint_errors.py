"""A checkpoint that cannot be read: the message says why and never advises weights_only=False."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from convlens.errors import RunError
from convlens import checkpoint


class _Call:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


class Custom:  # a class that is not a tensor, number or container
    pass


def _refused(path) -> str:
    with pytest.raises(RunError) as e:
        checkpoint.load(path)
    msg = str(e.value)
    assert msg.startswith(f"cannot read checkpoint {path}: ")
    assert "weights_only" not in msg and "trust" not in msg and "safe_globals" not in msg
    return msg


def test_code_in_a_checkpoint_is_refused_without_unsafe_advice(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"model": {}, "x": _Call(os.system, f"touch {marker}")}, tmp_path / "a.pt")
    msg = _refused(tmp_path / "a.pt")
    assert not marker.exists()
    assert "system" in msg and "refused" in msg


def test_unknown_class_is_named(tmp_path):
    torch.save({"model": Custom()}, tmp_path / "b.pt")
    assert "Custom" in _refused(tmp_path / "b.pt")


def test_plain_pickle_and_truncated_file(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "c.pt").write_bytes(pickle.dumps(_Call(os.system, f"touch {marker}"), protocol=4))
    assert "refused" in _refused(tmp_path / "c.pt") and not marker.exists()
    torch.save({"w": torch.zeros(3)}, tmp_path / "d.pt")
    (tmp_path / "e.pt").write_bytes((tmp_path / "d.pt").read_bytes()[:100])
    assert "the file is cut short (100 bytes)" in _refused(tmp_path / "e.pt")
