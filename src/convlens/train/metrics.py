"""Per-epoch metrics: one JSON object per line in ``metrics.jsonl``, and TensorBoard scalars."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..utils import atomic_write_text, to_json

TB_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "lr": "lr",
    "epoch_seconds": "time/epoch_seconds",
    "gap": "accuracy/train_val_gap",
}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a metrics file (a line cut short by a crash is skipped)."""
    rows = []
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class MetricsLog:
    """Appends epoch rows; on resume, drops rows after the epoch the checkpoint holds."""

    def __init__(self, run_dir: Path, resume_epoch: int = 0, tensorboard: bool = True):
        from ..run.layout import Layout

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

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
