"""Evaluation: accuracy overall and per class, confusion matrix, per-image predictions, TTA."""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import runload
from ..data import Split, batches
from ..data.augment import shift_crop
from ..heap import reuse_freed_blocks
from ..run import CHECKPOINTS, Layout
from ..trace import borrowed
from .precision import Precision, choose


def _views(x: torch.Tensor, tta: str) -> list[tuple[float, torch.Tensor]]:
    """Weighted input views whose logits are averaged."""
    if tta == "none":
        return [(1.0, x)]
    fx = x.flip(3)
    if tta == "flip":
        return [(0.5, x), (0.5, fx)]
    n = len(x)
    up = torch.zeros(n, dtype=torch.long, device=x.device)
    down = torch.full((n,), 2, dtype=torch.long, device=x.device)
    views = [(0.25, x), (0.25, fx)]
    for dy in (up, down):  # one pixel up-left and one down-right, each also flipped
        views += [(0.125, shift_crop(x, dy, dy, 1, "reflect")), (0.125, shift_crop(fx, dy, dy, 1, "reflect"))]
    return views


@torch.no_grad()
def predict(
    model: nn.Module,
    split: Split,
    batch_size: int = 500,
    tta: str = "none",
    precision: Precision | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Float32 logits (N, classes) of the whole split, in eval mode; the model's mode is restored."""
    prec = precision or choose(
        "cpu" if next(model.parameters()).device.type == "cpu" else "cuda", "fp32", "off", torch.get_num_threads()
    )
    out = []
    with borrowed(model), reuse_freed_blocks():
        it = batches(split, batch_size, device=prec.device, channels_last=prec.channels_last)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, total=-(-len(split) // batch_size), desc="evaluate", leave=False)
        for x, _, _ in it:
            logits = None
            for w, v in _views(x, tta):
                with prec.autocast():
                    y = model(v).float()
                logits = w * y if logits is None else logits + w * y
            out.append(logits.cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows: true class; columns: predicted class."""
    return torch.bincount(labels * num_classes + preds, minlength=num_classes**2).view(num_classes, num_classes)


def summarize_predictions(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    c = len(classes)
    preds = logits.argmax(1)
    cm = confusion_matrix(labels, preds, c)
    support = cm.sum(1).clamp(min=1)
    return {
        "n": len(labels),
        "accuracy": float((preds == labels).float().mean()) if len(labels) else 0.0,
        "loss": float(F.cross_entropy(logits, labels)) if len(labels) else 0.0,
        "classes": classes,
        "per_class_accuracy": (cm.diag().float() / support).tolist(),
        "confusion": cm.tolist(),
        "prediction_counts": cm.sum(0).tolist(),
    }


def predictions_csv(split: Split, logits: torch.Tensor) -> str:
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    p_label = probs.gather(1, split.labels.view(-1, 1)).squeeze(1)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["position", "index", "label", "pred", "confidence", "p_label", "correct"])
    for i in range(len(split)):
        w.writerow(
            [
                i,
                int(split.indices[i]),
                int(split.labels[i]),
                int(pred[i]),
                f"{float(conf[i]):.6f}",
                f"{float(p_label[i]):.6f}",
                int(pred[i] == split.labels[i]),
            ]
        )
    return buf.getvalue()


def test_precision(prec: Precision, which: str = "fp32") -> Precision:
    """The precision test metrics are computed in: float32 (``eval.precision: fp32``, the default,
    which every analysis and the report use too, so one checkpoint has one accuracy), or the
    run's own (``train``)."""
    return prec if which == "train" else dataclasses.replace(prec, bf16=False, fp16=False)


def evaluate_split(
    model: nn.Module,
    split: Split,
    classes: list[str],
    *,
    batch_size: int = 500,
    tta: str = "none",
    precision: Precision | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], torch.Tensor]:
    t0 = time.perf_counter()
    logits = predict(model, split, batch_size, tta, precision, progress)
    result = summarize_predictions(logits, split.labels, classes)
    result.update(
        tta=tta,
        precision=precision.name if precision is not None else "float32",
        seconds=round(time.perf_counter() - t0, 3),
    )
    return result, logits


def write_eval(run_dir: Path, result: dict[str, Any], split: Split, logits: torch.Tensor) -> None:
    """``eval.json`` and ``predictions.csv`` of the run folder.

    ``result["checkpoint"]`` names the checkpoint the logits came from (best or last); eval.json
    records that file's identity (name, epoch, sha256), which analyses and the report compare with.
    """
    if result.get("checkpoint") in CHECKPOINTS:
        info = runload.checkpoint_info(run_dir, result["checkpoint"])
        result.update(info, epoch=info["checkpoint_epoch"])
    Layout(run_dir).write_eval(result, predictions_csv(split, logits))
    write_examples(run_dir, split, logits)


def write_examples(run_dir: Path, split: Split, logits: torch.Tensor) -> None:
    """The test images the report shows (``examples.npz``), so it never reloads the data set."""
    from ..run.examples import kept_positions

    conf, pred = logits.float().softmax(1).max(1)
    labels = split.labels.to(pred.device)
    rows = [
        {"position": i, "label": int(y), "pred": int(p), "confidence": float(c), "correct": int(p) == int(y)}
        for i, (y, p, c) in enumerate(zip(labels.tolist(), pred.tolist(), conf.tolist()))
    ]
    keep = kept_positions(rows)
    Layout(run_dir).write_examples(split.images[keep].cpu().numpy(), keep, "test")
