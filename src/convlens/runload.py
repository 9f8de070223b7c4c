"""A run folder's objects: its model (built from config.yaml, weights from a checkpoint) and its data.

:class:`~convlens.run.Run` reads the folder's documents and computes nothing; this module turns
them back into a ``torch`` model and a :class:`~convlens.data.DataBundle`, so everything that works
on a trained run (evaluation, analyses, explanations, comparisons) loads it the same way::

    from convlens import runload

    model = runload.load_model("runs/a", "best")  # eval mode, weights_only=True
    data = runload.load_data("runs/a")  # split exactly as in training

Imports point one way: ``run/`` knows paths and documents, this module knows models, data and
checkpoint files, and training, the jobs and the report import it. Every function takes a
:class:`~convlens.run.Run` or the folder's path. Call them by the module's name
(``runload.load_data(run)``): ``convlens.data.load_data`` builds data from a config instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from . import checkpoint
from .data import DataBundle
from .data import load_data as _data_of_config
from .errors import RunError
from .models import build_model as _build
from .models.graph import remember_shape
from .run import Run, file_sha256
from .run.ckptmeta import read_numbers
from .utils import check_device


def _run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else Run(run)


def build_model(run: Run | str | Path) -> nn.Module:
    """The run's network with fresh weights, as its config.yaml and dataset.json describe it."""
    run = _run(run)
    d = run.dataset
    model = _build(run.config.model, tuple(d["shape"]), len(d["classes"]), d["mean"], d["std"])
    remember_shape(model, tuple(d["shape"]))  # layer order and fields are traced for this input
    return model


def checkpoint_info(
    run: Run | str | Path, which: str | None = None, state: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``{"checkpoint": name, "checkpoint_epoch": epochs trained, "checkpoint_sha256": 12 hex}``
    of the file ``which`` resolves to (best falls back to last when there is no best.pt); ``state``,
    the file already loaded, spares reading it again. Without it the epoch comes from the
    checkpoint's pickle alone (:func:`~convlens.run.ckptmeta.read_numbers`: no tensor is read), or
    from the whole file where that cannot read it."""
    path = _run(run).checkpoint_path(which)
    digest = file_sha256(path)
    if state is None:
        numbers = read_numbers(path)
        state = numbers if numbers is not None else checkpoint.load(path)
    epoch = state.get("epoch")
    return {
        "checkpoint": path.stem,
        "checkpoint_epoch": int(epoch) if epoch is not None else None,
        "checkpoint_sha256": digest,
    }


def load_model(run: Run | str | Path, which: str | None = None, device: str = "cpu") -> nn.Module:
    """The trained model in eval mode, weights loaded with ``weights_only=True``; ``which``
    defaults to the checkpoint eval.json evaluated (best if there is none)."""
    return load_model_info(run, which, device)[0]


def load_model_info(
    run: Run | str | Path, which: str | None = None, device: str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, checkpoint_info)``: the model as :func:`load_model` and which file it is."""
    run = _run(run)
    check_device(device)
    model = build_model(run)
    state = checkpoint.load(run.checkpoint_path(which), map_location=device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise RunError(f"checkpoint of {run.path} does not fit its config.yaml: {exc}") from None
    return model.to(device).eval(), checkpoint_info(run, which, state)


def load_data(run: Run | str | Path) -> DataBundle:
    """The run's data, split exactly as in training (same seed, same mean/std)."""
    return _data_of_config(_run(run).config.data)
