"""One trial: an ordinary run folder ``SWEEP_DIR/trials/<number>/`` trained by ``convlens.train``.

The epoch callback reports validation accuracy to Optuna's pruner and stops a hopeless run with
``Stop("pruned")``, which the training loop records as status ``pruned``. The trial's summary
(best validation accuracy and its epoch, final train accuracy, gap, parameters, seconds) is
stored on the Optuna trial as well, so tables can be built where the run folders are not.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from ..run import Run, is_run
from .spec import Sweep
from .study import optuna, worker_id


def trial_dir(out_dir: Path, number: int) -> Path:
    return Path(out_dir) / "trials" / str(number)


def run_trial(trial: Any, sweep: Sweep, out_dir: Path, threads: int | None, log: Callable[[str], None]) -> float:
    """Train the trial's config; return its best validation accuracy (the value Optuna maximises).

    Raises ``optuna.TrialPruned`` when the pruner stopped it.
    """
    import torch

    from ..train import Stop, train

    op = optuna()
    values = {p.key: p.suggest(trial) for p in sweep.params}
    attrs = trial.user_attrs
    if "seed" in attrs:  # a queued grid cell, a point's further seed, or a retry
        seed = attrs["seed"]
    else:  # a point the sampler just drew: its other seeds go into the queue, ahead of new points
        seed = sweep.seeds[0]
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("point", trial.number)
        for s in sweep.seeds[1:]:
            trial.study.enqueue_trial(dict(trial.params), user_attrs={"seed": s, "point": trial.number})
    trial.set_user_attr("worker", worker_id())
    cfg = sweep.trial_config(values, seed, threads)
    cfg.name = f"{sweep.name}-trial{trial.number}"
    run_dir = trial_dir(out_dir, trial.number)
    pruner = sweep.spec.pruner.name

    def on_epoch(row: dict[str, Any]) -> None:
        acc = row.get("val_acc")
        if acc is None:
            return
        trial.report(acc, row["epoch"])
        if trial.should_prune():
            raise Stop("pruned", f"by the {pruner} pruner after epoch {row['epoch']} (val acc {100 * acc:.2f}%)")

    # train() seeds data order, augmentation and dropout from the config's seed; the weights'
    # initialisation draws from torch's global generator, seeded here so a seed means one run
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    run = train(cfg, run_dir, echo=log, callback=on_epoch)
    result = summarize_run(run.path, time.perf_counter() - t0)
    trial.set_user_attr("result", result)
    if result["status"] == "pruned":
        raise op.TrialPruned(run.status.get("message", ""))
    if result["status"] not in ("finished", "diverged"):
        raise RuntimeError(f"the run ended with status {result['status']}: {run.status.get('message', '')}")
    return float(result["best_val_acc"] or 0.0)


def summarize_run(run_dir: Path, seconds: float | None = None) -> dict[str, Any]:
    """The per-trial numbers of the tables, read from a run folder (complete or not)."""
    run_dir = Path(run_dir)
    run = Run(run_dir) if is_run(run_dir) else None
    rows = run.metrics() if run else []
    vals = [(r["val_acc"], -r["epoch"]) for r in rows if r.get("val_acc") is not None]
    best = max(vals) if vals else None  # ties go to the earlier epoch
    last = rows[-1] if rows else {}
    summary = (run.summary if run else None) or {}
    ev = run.eval if run else None
    secs = [r["epoch_seconds"] for r in rows if r.get("epoch_seconds") is not None]
    return {
        "status": run.status.get("status", "unknown") if run else "unknown",
        "best_val_acc": best[0] if best else None,
        "best_epoch": -best[1] if best else None,
        "epochs": last.get("epoch", 0),
        "final_train_acc": last.get("train_acc"),
        "final_val_acc": last.get("val_acc"),
        "gap": last.get("gap"),
        "test_acc": ev.get("accuracy") if ev else None,
        "params": summary.get("params"),
        "sec_per_epoch": sum(secs) / len(secs) if secs else None,
        "total_seconds": round(seconds, 3) if seconds is not None else None,
    }
