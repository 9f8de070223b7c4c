"""`convlens demo`: the whole product on the embedded digits data, offline, in seconds on an idle 2-core CPU.

Train a small CNN, diagnose the run, run every dataset-level analysis, explain a few test images
by occlusion and synthesise an image per first-layer filter by activation maximisation, then
write the run's report (``RUN/report.html``), whose filter browser shows each filter's weights,
class-wise norms, top-k images and patches and activation-maximisation image side by side.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

DEMO_CONFIG = {
    "name": "demo",
    "seed": 0,
    "data": {"name": "digits", "val_fraction": 0.15, "augment": {"translate": {"pixels": 1}}},
    "model": {"preset": "tiny", "options": {"width": 8}},
    "train": {
        "epochs": 30,
        "batch_size": 64,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        "schedule": {"name": "warmup_cosine", "warmup_epochs": 2},
        "label_smoothing": 0.05,
        "threads": 1,  # a model this small gains nothing from a second thread, and loses much on a busy machine
    },
}

# What the demo dissects: every analysis with its defaults except fewer top-k images per filter;
# occlusion of the first test image of each class with 2- and 4-pixel patches (digits are 8x8);
# activation maximisation of every filter of the first conv layer, all optimised as one batch.
DEMO_ANALYSES: dict[str, Any] = {"k": 10}
DEMO_OCCLUSION: dict[str, Any] = {"windows": [2, 4], "stride": 1}


def run_demo(out: str | Path | None = None, epochs: int | None = None, echo: Callable[[str], None] = print) -> Path:
    """Train the demo model, analyse and explain it, write its report, and return its run folder."""
    from . import runload
    from .analyses import analyze
    from .config import load_config
    from .explain.outputs import explain_run
    from .report import build_report, diagnose
    from .train import train
    from .trace import conv_layers

    cfg = load_config(DEMO_CONFIG, [f"train.epochs={epochs}"] if epochs else None)
    out = Path(out) if out else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    run = train(cfg, out, echo=echo)
    analyze(run.path, echo=echo, **DEMO_ANALYSES)
    explain_run(run.path, "occlusion", options=dict(DEMO_OCCLUSION), echo=echo)
    first = conv_layers(runload.load_model(run))[0]
    explain_run(run.path, "actmax", layer=first, echo=echo)
    for finding in diagnose(run):  # after the analyses: dead filters come from the stats analysis
        echo(f"diagnosis: [{finding.severity}] {finding.title}")
    echo(f"report: {build_report(run.path)}")
    return run.path
