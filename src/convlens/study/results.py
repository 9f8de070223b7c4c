"""A study's results folder read back: one :class:`Row` per run folder (a config's run, or each
trial of a sweep), with the numbers the checks compare and the config that made it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import get_dotted
from ..run import Run, is_run
from ..utils import read_json, write_json

META = "study.json"  # name, budget and overrides of the results folder


@dataclass
class Row:
    experiment: str
    path: Path
    config: dict[str, Any]
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.numbers.get("status", "unknown")

    @property
    def done(self) -> bool:
        return self.status in ("finished", "diverged")

    def matches(self, where: dict[str, Any]) -> bool:
        for key, want in where.items():
            try:
                got = get_dotted(self.config, key)
            except (KeyError, IndexError, TypeError, ValueError):
                return False
            if not same(got, want):
                return False
        return True

    def replicate_key(self) -> str:
        """What the run is apart from its seed (and the trial's name): seeds of one point share it."""
        cfg = {k: v for k, v in self.config.items() if k not in ("seed", "name", "meta")}
        return json.dumps(cfg, sort_keys=True, default=str)


def same(got: Any, want: Any) -> bool:
    if isinstance(got, (int, float)) and isinstance(want, (int, float)) and not isinstance(got, bool):
        return math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(got, (list, tuple)) and isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    return got == want


def run_numbers(path: Path) -> dict[str, Any]:
    """summarize_run's numbers and the losses the reports quote."""
    from ..sweep.trial import summarize_run

    numbers = summarize_run(path)
    rows = Run(path).metrics()
    val = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    numbers["best_val_loss"] = min(val) if val else None
    last = rows[-1] if rows else {}
    numbers["final_val_loss"] = last.get("val_loss")
    numbers["final_train_loss"] = last.get("train_loss")
    return numbers


def run_folders(path: Path) -> list[Path]:
    """The run folder itself, or a sweep folder's trials in number order."""
    if is_run(path):
        return [path]
    trials = path / "trials"
    if not trials.is_dir():
        return []
    found = [p for p in trials.iterdir() if is_run(p)]
    return sorted(found, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def load_rows(out: Path, experiment: str) -> list[Row]:
    rows = []
    for path in run_folders(Path(out) / experiment):
        try:
            cfg = Run(path).config.to_dict()
        except Exception:  # a folder whose config cannot be read is no evidence
            continue
        rows.append(Row(experiment, path, cfg, run_numbers(path)))
    return rows


def read_meta(out: Path) -> dict[str, Any]:
    f = Path(out) / META
    return read_json(f) if f.is_file() else {}


def write_meta(out: Path, doc: dict[str, Any]) -> None:
    write_json(Path(out) / META, doc)
