"""Per-epoch metrics: one JSON object per line in ``metrics.jsonl``, and TensorBoard's view of the run.

Besides the scalars, TensorBoard gets (as ``train.tensorboard`` switches them): the resolved config
as text, the HParams tab's hyperparameters and final metrics (a sweep's trials line up there),
weight and gradient histograms per layer and the first conv layer's filters as an image once per
epoch, the test metrics and confusion matrix, and optionally penultimate embeddings for the
projector. Test accuracy after each epoch (``eval.every_epoch``) is logged under ``*/test``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..run import Layout, read_metrics
from ..utils import atomic_write_text, to_json

TB_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "lr": "lr",
    "epoch_seconds": "time/epoch_seconds",
    "gap": "accuracy/train_val_gap",
    "train_clean_acc": "accuracy/train_clean",  # train.clean_subset: eval mode, no augmentation
    "clean_gap": "accuracy/clean_train_val_gap",
    "test_loss": "loss/test",
    "test_acc": "accuracy/test",
}
# the HParams tab's metrics: scalar tags written at the end of a run (or left absent when it stops)
HPARAM_METRICS = {
    "best_val_acc": "hparams/best_val_acc",
    "test_acc": "hparams/test_acc",
    "final_train_acc": "hparams/final_train_acc",
}


class MetricsLog:
    """Appends epoch rows; on resume, drops rows after the epoch the checkpoint holds."""

    def __init__(self, run_dir: Path, resume_epoch: int = 0, tensorboard: bool = True):
        layout = Layout(run_dir)
        self.path = layout.metrics_file
        kept = [r for r in read_metrics(self.path) if r.get("epoch", 0) <= resume_epoch]
        atomic_write_text(self.path, "".join(to_json(r, None) + "\n" for r in kept))  # appended to below
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run wrote after its last checkpoint
            self.tb = SummaryWriter(str(layout.tb_dir), purge_step=resume_epoch + 1 if resume_epoch else None)

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(to_json(row, None) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.tb is not None:
            for key, tag in TB_TAGS.items():
                if row.get(key) is not None:
                    self.tb.add_scalar(tag, row[key], row["epoch"])
            self.tb.flush()

    # -- beyond the scalars ----------------------------------------------------------------------
    def text_config(self, cfg: Any) -> None:
        if self.tb is not None:  # indented: markdown shows it as code
            self.tb.add_text("config", "\n".join("    " + line for line in cfg.to_yaml().splitlines()), 0)

    def hparams(self, cfg: Any) -> None:
        """Hyperparameters of the run (the usual keys, and ``train.tensorboard.hparams``) in the
        HParams tab; its metrics are the ``hparams/*`` scalars :meth:`final` writes."""
        if self.tb is None:
            return
        from torch.utils.tensorboard.summary import hparams

        values = hparam_values(cfg)
        metrics = dict.fromkeys(HPARAM_METRICS.values(), 0.0)
        for summary in hparams(values, metrics):
            self.tb.file_writer.add_summary(summary)
        self.tb.flush()

    def epoch_state(self, model: Any, epoch: int, histograms: bool = True, images: bool = True) -> None:
        """Weight and gradient histograms per layer and the first conv layer's filters: once an
        epoch, from the weights (and the last step's gradients) as the epoch left them."""
        if self.tb is None:
            return
        if histograms:
            for name, p in model.named_parameters():
                self.tb.add_histogram(f"weights/{name}", p.detach().float().cpu(), epoch)
                if p.grad is not None:
                    self.tb.add_histogram(f"gradients/{name}", p.grad.detach().float().cpu(), epoch)
        if images:
            first = first_conv(model)
            if first is not None:
                self.tb.add_image(f"filters/{first[0]}", filter_grid(first[1].weight), epoch, dataformats="HWC")
        self.tb.flush()

    def test(self, result: dict[str, Any], epoch: int, images: bool = True) -> None:
        """The test split's metrics, per-class accuracy and confusion matrix (as a figure)."""
        if self.tb is None:
            return
        self.tb.add_scalar("test/accuracy", result["accuracy"], epoch)
        if result.get("loss") is not None:
            self.tb.add_scalar("test/loss", result["loss"], epoch)
        for name, acc in zip(result.get("classes") or [], result.get("per_class_accuracy") or []):
            self.tb.add_scalar(f"test_class/{name}", acc, epoch)
        if images and result.get("confusion") is not None:
            self.tb.add_image("test/confusion", confusion_image(result), epoch, dataformats="HWC")
        self.tb.flush()

    def final(self, summary: dict[str, Any], epoch: int) -> None:
        if self.tb is None:
            return
        for key, tag in HPARAM_METRICS.items():
            if summary.get(key) is not None:
                self.tb.add_scalar(tag, summary[key], epoch)
        self.tb.flush()

    def embeddings(self, features: Any, labels: Sequence[str], images: Any, epoch: int) -> None:
        if self.tb is not None:
            self.tb.add_embedding(
                features, metadata=list(labels), label_img=images, global_step=epoch, tag="penultimate"
            )
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def hparam_values(cfg: Any) -> dict[str, Any]:
    """``{dotted key: value}`` for the HParams tab: numbers, strings and booleans as they are,
    anything else (None, lists) as its text."""
    from ..config import HPARAM_KEYS, get_dotted

    raw = cfg.to_dict()
    out = {}
    for key in dict.fromkeys([*HPARAM_KEYS, *cfg.train.tensorboard.hparams]):
        value = get_dotted(raw, key)
        out[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


def first_conv(model: Any) -> tuple[str, Any] | None:
    import torch.nn as nn

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    return None


def filter_grid(weight: Any, pad: int = 1) -> Any:
    """A conv weight ``(out, in, kh, kw)`` as one HWC float image in [0, 1]: a near-square grid of
    filters, each scaled by its own largest |value| around mid-grey; RGB when ``in`` is 3, else
    the mean over input channels as grey."""
    import numpy as np

    w = weight.detach().float().cpu().numpy()
    w = w if w.shape[1] == 3 else w.mean(1, keepdims=True)
    n, c, kh, kw = w.shape
    scale = np.abs(w).reshape(n, -1).max(1).reshape(n, 1, 1, 1)
    w = 0.5 + 0.5 * w / np.maximum(scale, 1e-12)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.ones((rows * (kh + pad) + pad, cols * (kw + pad) + pad, c), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (kh + pad), pad + q * (kw + pad)
        grid[y : y + kh, x : x + kw] = w[i].transpose(1, 2, 0)
    return np.repeat(grid, 3, axis=2) if c == 1 else grid


def confusion_image(result: dict[str, Any]) -> Any:
    """The confusion matrix drawn as the report draws it, as an HWC float image."""
    import tempfile

    from matplotlib.image import imread

    from .. import plots

    classes = result.get("classes") or [str(i) for i in range(len(result["confusion"]))]
    with tempfile.TemporaryDirectory() as tmp:
        path = plots.confusion(result["confusion"], classes, Path(tmp) / "confusion.png", title="test confusion")
        img = imread(path)
    return img[..., :3]
