"""Checkpoints: plain ``state_dict``s in a dict of tensors and numbers, written atomically.

Everything in a checkpoint loads with ``torch.load(..., weights_only=True)``: no pickled
classes, so a checkpoint from someone else cannot run code on your machine. The resolved config
travels inside every checkpoint, next to the weights. Training writes them (``train/loop.py``),
:mod:`convlens.runload` reads them back for a run folder, and :func:`read_weights` reads a bare
weights file (``convlens import``); this file format is all they share.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from .errors import RunError
from .utils import atomic_write_bytes


def save(path: Path, obj: dict[str, Any]) -> None:
    # serialised in memory first: torch writing into a file that hits a full disk fails with an
    # opaque "inline_container ... unexpected pos"; a plain write names the file and the size
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # a foreign file also draws a warning; the error below says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated or foreign files raise many different types
        raise RunError(f"cannot read checkpoint {path}: {_reason(exc, path)}") from None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``path`` (bare, or under a ``model`` / ``state_dict`` key)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled classes, truncated files: many types
        raise RunError(
            f"cannot read weights {path} (a state_dict of tensors is needed): {_reason(exc, path)}"
        ) from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunError(f"weights {path} hold no state_dict (a mapping of names to tensors), got {type(state).__name__}")
    return state


# torch's own message advises retrying with weights_only=False, which runs whatever code the file
# holds: never the advice for a file of unknown origin, so only the finding itself is kept
_ADVICE = re.compile(r"weights_only|trust|safe_globals|file an issue|documentation of torch\.load", re.I)


# what torch says of a file cut short: an empty file, a zip without its directory, a short read
_CUT = re.compile(r"Invalid argument|failed finding central directory|unexpected EOF|Ran out of input", re.I)


def _reason(exc: Exception, path: Path | None = None) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, without torch's advice."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if isinstance(exc, EOFError) or _CUT.search(text):
        size = Path(path).stat().st_size if path is not None and Path(path).is_file() else None
        what = "empty" if size == 0 else "cut short" + (f" ({size:,} bytes)" if size else "")
        return f"the file is {what}: it was not written or copied completely; copy or write it again"
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"it names {found.group(1)}, which a checkpoint never holds (refused: loading it could run "
            "code); convlens reads only tensors, numbers, strings and containers"
        )
    if isinstance(exc, pickle.UnpicklingError):
        op = re.search(r"Unsupported operand \d+", text)
        return (
            f"it is not a plain checkpoint ({op.group(0) if op else 'unsupported pickle content'}; "
            "refused: loading it could run code); convlens reads only tensors, numbers, strings and containers"
        )
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
    kept = " ".join(s.strip() for s in sentences if s.strip() and not _ADVICE.search(s))
    return kept or type(exc).__name__
