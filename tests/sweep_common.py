"""Small sweeps on the bundled digits data, and tools to start and watch worker processes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import yaml
from conftest import tiny_config

import convlens

SRC = str(Path(convlens.__file__).resolve().parents[1])


def sweep_dict(name: str = "s", params: dict | None = None, epochs: int = 2, **spec) -> dict:
    """A grid over lr x width on digits: one thread per trial, about a second a trial."""
    base = tiny_config(**{"train.epochs": epochs, "train.threads": 1})
    params = params if params is not None else {"train.optimizer.lr": [0.05, 0.1], "model.options.width": [4, 6]}
    return {"name": name, "config": base, "params": params, **spec}


def write_sweep(folder: Path, **kw) -> Path:
    path = Path(folder) / f"{kw.get('name', 's')}.yaml"
    path.write_text(yaml.safe_dump(sweep_dict(**kw), sort_keys=False))
    return path


def worker_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("CI", None)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "convlens.cli", *args]


def wait_for(cond, timeout: float, what: str, procs=()):
    """Poll ``cond()`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        for p in procs:
            if p.poll() not in (None, 0):
                raise AssertionError(f"a worker exited with {p.returncode} while waiting for {what}")
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Watch:
    """Reads a sweep's trials straight from its storage, cheaply enough to poll while it runs."""

    def __init__(self, sweep_file: Path, storage: str):
        from convlens.sweep import load_sweep

        self.sweep = load_sweep(sweep_file)
        self.storage = storage
        self._study = None

    def trials(self):
        from convlens.sweep.study import open_storage, optuna

        if self._study is None:
            if "://" not in self.storage and not Path(self.storage).is_file():
                return []
            op = optuna()
            try:
                self._study = op.load_study(study_name=self.sweep.name, storage=open_storage(self.storage))
            except KeyError:  # not created yet
                return []
        return self._study.get_trials(deepcopy=False)


def load_trials(sweep_file: Path, storage: str):
    """The sweep and all trials of its study, read straight from the storage."""
    w = Watch(sweep_file, storage)
    return w.sweep, w.trials()


def training(out_dir: Path, number: int) -> bool:
    """True once the trial's run folder has at least one finished epoch."""
    m = Path(out_dir) / "trials" / str(number) / "metrics.jsonl"
    return m.is_file() and bool(m.read_text().strip())
