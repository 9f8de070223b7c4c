"""`convlens demo`: the whole product on the embedded digits data, offline, in about a minute."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

DEMO_CONFIG = {
    "name": "demo",
    "seed": 0,
    "data": {"name": "digits", "val_fraction": 0.15, "augment": {"translate": {"pixels": 1}}},
    "model": {"preset": "tiny", "options": {"width": 16}},
    "train": {
        "epochs": 30,
        "batch_size": 64,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        "schedule": {"name": "warmup_cosine", "warmup_epochs": 2},
        "label_smoothing": 0.05,
    },
}


def run_demo(out: str | Path | None = None, epochs: int | None = None, echo: Callable[[str], None] = print) -> Path:
    """Train the demo model, write its report, and return its run folder."""
    from .config import load_config
    from .report import build_report, diagnose
    from .train import train

    cfg = load_config(DEMO_CONFIG, [f"train.epochs={epochs}"] if epochs else None)
    out = Path(out) if out else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    run = train(cfg, out, echo=echo)
    for finding in diagnose(run):
        echo(f"diagnosis: [{finding.severity}] {finding.title}")
    echo(f"report: {build_report(run.path)}")
    return run.path
