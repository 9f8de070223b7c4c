"""``convlens import``: a model trained elsewhere and its weights, written as a run folder.

The model is a preset or any ``nn.Module`` named by ``MODULE:FACTORY``
(:mod:`convlens.models.factory` resolves it and guards whose code may run); the weights load
with ``torch.load(weights_only=True)`` (:func:`convlens.checkpoint.read_weights`). The folder
gets what training writes (config, dataset, summary, checkpoints, status) and is evaluated on the
test split, so ``analyze``, ``explain``, ``report`` and ``diagnose`` read it like a trained run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from .. import __version__, checkpoint
from ..config import load_config
from ..data import load_data
from ..errors import RunError
from ..models import PRESETS, build_model, summarize, totals
from ..models.factory import resolve
from ..run import Layout, write_status
from .loop import evaluate_run


def import_run(
    factory: str,
    weights: str | Path | None,
    out: str | Path,
    data: str = "digits",
    kwargs: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    echo=None,
) -> Path:
    """Write a run folder for ``factory(**kwargs)`` with ``weights`` on data set ``data``;
    evaluates it on the test split (eval.json, predictions.csv). Returns the folder.

    ``factory`` may also name a preset (``kwargs`` are then its options): a torchvision ResNet or
    VGG checkpoint loads into ``resnet18`` ... ``vgg16``, whose keys are torchvision's."""
    if factory in PRESETS:  # a preset (torchvision's resnet50 layout, ...): kwargs are its options
        model_section: dict[str, Any] = {"preset": factory, "options": dict(kwargs or {})}
    else:
        resolve(factory)  # a bad MODULE:FACTORY fails here, with one line saying why
        model_section = {"factory": factory, "kwargs": dict(kwargs or {})}
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{out} already exists and is not empty; choose another --out")
    cfg = load_config({"name": out.name, "data": {"name": data}, "model": model_section}, overrides)
    bundle = load_data(cfg.data)
    cfg = cfg.model_copy(deep=True)
    cfg.data.mean, cfg.data.std = list(bundle.mean), list(bundle.std)
    if cfg.data.root and not Path(cfg.data.root).expanduser().is_absolute():
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    model = build_model(cfg.model, bundle.shape, bundle.num_classes)
    if weights is not None:
        try:
            model.load_state_dict(checkpoint.read_weights(weights))
        except RuntimeError as exc:
            raise RunError(f"weights {weights} do not fit {factory}: {exc}") from None
    model.eval()
    with torch.no_grad():
        try:
            y = model(torch.zeros(2, *bundle.shape))
        except Exception as exc:
            raise RunError(
                f"{factory} does not run on {bundle.name} images of shape {list(bundle.shape)}: {exc}"
            ) from None
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, bundle.num_classes):
        got = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise RunError(
            f"{factory} returns {got} for a batch of 2, but {bundle.name} needs logits of shape "
            f"[2, {bundle.num_classes}]"
        )
    cfg.meta = {
        "convlens_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join(sys.argv),
        "torch": torch.__version__,
        "imported": str(weights),
    }
    layout = Layout(out)
    layout.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    layout.write_config(cfg)
    layout.write_dataset(bundle.describe())
    rows = summarize(model, bundle.shape)
    layout.write_summary({"layers": [r.to_dict() for r in rows], **totals(rows)})
    state = {"model": model.state_dict(), "epoch": 0, "config": cfg.to_dict(), "version": __version__}
    for which in ("last", "best"):
        checkpoint.save(layout.checkpoint_file(which), state)
    write_status(out, "finished", epoch=0, epochs=0, message=f"imported from {factory}")
    evaluate_run(out, "last", echo=echo)
    return out
