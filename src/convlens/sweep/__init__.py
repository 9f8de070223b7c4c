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

from .local import run_sweep
from .results import build_results, write_results
from .spec import Sweep, SweepError, load_sweep
from .study import StorageError
from .worker import run_worker

__all__ = ["StorageError", "Sweep", "SweepError", "build_results", "load_sweep", "run_sweep", "run_worker",
           "write_results"]
