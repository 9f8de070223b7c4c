"""A checkpoint's plain numbers (its epoch) read without torch and without its tensors.

A checkpoint written by ``torch.save`` is a zip: the tensors' bytes in ``data/`` entries and a
pickle (``data.pkl``) that describes the dict. Reading the epoch needs only the pickle, read with
an unpickler that rebuilds no tensor (torch's rebuild functions and storages become ``None``) and
no other class than ``OrderedDict`` (anything else fails, as ``weights_only=True`` would).
``runload.checkpoint_info`` (the identity eval.json, the analyses and the report record) reads the
epoch this way: a ResNet-50's last.pt, optimiser state included, is not loaded to learn one number.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class _Skeleton(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" or module.startswith("torch."):
            return _nothing  # a tensor, parameter, storage type or dtype: not rebuilt
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"{module}.{name} is not read from a checkpoint")

    def persistent_load(self, pid: Any) -> None:
        return None  # a storage: its bytes stay in the zip


def read_numbers(path: Path, keys: tuple[str, ...] = ("epoch",)) -> dict[str, Any] | None:
    """``{key: value}`` of the top-level ``keys`` that hold a number or a string (absent keys and
    tensors: None), or None where ``path`` is not a zip checkpoint this can read."""
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkl) != 1:
                return None
            with zf.open(pkl[0]) as f:
                obj = _Skeleton(f).load()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError):
        return None
    if not isinstance(obj, dict):
        return None
    return {k: obj.get(k) if isinstance(obj.get(k), (int, float, str)) else None for k in keys}
