"""Checkpoints: plain ``state_dict``s in a dict of tensors and numbers, written atomically.

Everything in a checkpoint loads with ``torch.load(..., weights_only=True)``: no pickled
classes, so a checkpoint from someone else cannot run code on your machine. The resolved config
travels inside every checkpoint, next to the weights.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import RunError
from ..utils import atomic_write


def save(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(Path(path), lambda f: torch.save(obj, f), mode="wb")


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # a foreign file also draws a warning; the error below says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated or foreign files raise many different types
        # torch's own text runs over many lines and suggests weights_only=False, which would let
        # a foreign file run code: keep its last line, the reason
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "torch.load" not in ln]
        why = lines[-1].split(". ")[0].rstrip(".") if lines else type(exc).__name__
        raise RunError(f"cannot read checkpoint {path}: not a convlens checkpoint, or damaged ({why})") from None
