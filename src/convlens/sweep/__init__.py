"""Hyperparameter sweeps: a sweep file, Optuna as the engine, one run folder per trial, tables.

::

    from convlens.sweep import load_sweep, run_sweep, write_results

    out = run_sweep("examples/sweep-cs7015-batch-lr.yaml", workers=2)   # sweeps/<name>/
    res = write_results(out, by=[["lr", "batch_size"]])                  # tables, plots, best.yaml

- ``spec``: the sweep file, validated before anything runs
- ``study``: Optuna storage and study; the grid queue; recovery of dead trials
- ``trial``: one trial = one run folder, pruned through the epoch callback
- ``worker``: the loop every worker runs, here or on other machines
- ``local``: ``convlens sweep SWEEP.yaml --workers N`` (lock, workers, resume)
- ``results``, ``figures``: tables, plots, best.yaml
"""

import importlib
from typing import Any

_WHERE = {
    "run_sweep": "local",
    "build_results": "results",
    "write_results": "results",
    "Sweep": "spec",
    "SweepError": "spec",
    "load_sweep": "spec",
    "StorageError": "study",
    "run_worker": "worker",
}


def __getattr__(name: str) -> Any:  # imported on first use: `convlens --help` stays light
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "StorageError",
    "Sweep",
    "SweepError",
    "build_results",
    "load_sweep",
    "run_sweep",
    "run_worker",
    "write_results",
]
