"""The models the graph-reuse benchmarks run on: convlens presets (flat ``csci611`` and ``fast``,
residual ``resnet8`` and ``resnet20``) and the foreign nets of ``_foreign_nets.py``, with random
weights whose batch-norm statistics are measured on noise images (so the softmax is not
saturated and every filter and patch changes the numbers), and the machine they ran on."""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _foreign_nets import NETS as FOREIGN  # noqa: E402
from _machine import FLAGS, cpu_model_and_flags  # noqa: E402

SHAPE = (3, 32, 32)
PRESETS = ("csci611", "fast", "resnet8", "resnet20")
MODELS = PRESETS + tuple(f"foreign-{k}" for k in FOREIGN)


def bench_model(name: str, classes: int = 10, **options) -> nn.Module:
    """A model of :data:`MODELS` by name (a preset's ``options`` given), in eval mode."""
    from convlens.config import load_config
    from convlens.models import build_model

    torch.manual_seed(0)
    if name.startswith("foreign-"):
        model = FOREIGN[name.removeprefix("foreign-")]()
    else:
        cfg = load_config({"model": {"preset": name, "options": options}})
        model = build_model(cfg.model, SHAPE, classes)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(1)))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def machine() -> str:
    """CPU model, the SIMD flags that decide float32 speed, cores, torch version and load."""
    model, flags = cpu_model_and_flags()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"CPU {model}; flags {' '.join(flags) or 'none of ' + ' '.join(FLAGS)}; "
        f"{os.cpu_count()} cores; torch {torch.__version__}; {torch.get_num_threads()} thread(s); load {load}"
    )
