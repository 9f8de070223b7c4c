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
MIN_ABOVE_CHANCE = 0.05  # test accuracy under chance + this: the network learned nothing to judge


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


def at_chance(r: Row) -> bool:
    """Whether a run's test accuracy is under chance + ``MIN_ABOVE_CHANCE`` (an untrained or
    collapsed network; a run without a test accuracy is not)."""
    acc = r.numbers.get("test_acc")
    if acc is None:
        return False
    return acc < 1 / (r.numbers.get("n_classes") or 10) + MIN_ABOVE_CHANCE


def trained(rows: list[Row]) -> tuple[list[Row], str | None]:
    """The rows above chance (tested and not :func:`at_chance`), and a note on those left out."""
    keep = [r for r in rows if r.numbers.get("test_acc") is not None and not at_chance(r)]
    out = [r for r in rows if r not in keep]
    if not out:
        return keep, None
    accs = ", ".join(
        f"{100 * r.numbers['test_acc']:.1f}%" if r.numbers.get("test_acc") is not None else "n/a" for r in out
    )
    return keep, f"{len(out)} run(s) at chance level or untested ({accs}) are no evidence"


def learned_nothing(*sides: list[Row]) -> str | None:
    """Why a comparison of these runs is no evidence: every tested run of every side is at chance
    (an untrained or collapsed network gives any two settings the same numbers)."""
    rows = [r for side in sides for r in side if r.numbers.get("test_acc") is not None]
    if rows and all(at_chance(r) for r in rows):
        accs = ", ".join(f"{100 * r.numbers['test_acc']:.1f}%" for r in rows[:6])
        more = f" and {len(rows) - 6} more" if len(rows) > 6 else ""
        return f"every run is at chance level ({accs}{more}): no evidence"
    return None


def run_numbers(path: Path) -> dict[str, Any]:
    """summarize_run's numbers, the losses the reports quote, the generalisation gap on clean
    training images (``train.clean_subset``), trends over the epochs, and how many images each
    accuracy was measured on (for its binomial error)."""
    from ..sweep.trial import summarize_run

    numbers = summarize_run(path)
    run = Run(path)
    rows = run.metrics()
    val = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    numbers["best_val_loss"] = min(val) if val else None
    last = rows[-1] if rows else {}
    numbers["final_val_loss"] = last.get("val_loss")
    numbers["final_train_loss"] = last.get("train_loss")
    numbers.update(_clean(rows, numbers.get("test_acc")))
    numbers.update(_trends(rows))
    numbers.update(_sizes(run))
    return numbers


def _clean(rows: list[dict[str, Any]], test_acc: float | None) -> dict[str, Any]:
    clean = [r for r in rows if r.get("train_clean_acc") is not None]
    if not clean:
        return {}
    last = clean[-1]
    gaps = [r["clean_gap"] for r in clean if r.get("clean_gap") is not None]
    return {
        "final_train_clean_acc": last["train_clean_acc"],
        "clean_gap": last.get("clean_gap"),
        "clean_overfit": None if test_acc is None else last["train_clean_acc"] - test_acc,
        "clean_gap_rise": gaps[-1] - gaps[0] if len(gaps) > 1 else None,
    }


def _trends(rows: list[dict[str, Any]]) -> dict[str, Any]:
    val = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    loss = [r["train_loss"] for r in rows if r.get("train_loss") is not None]
    return {
        "val_acc_rise": val[-1] - val[0] if len(val) > 1 else None,
        "val_acc_late_rise": val[-1] - val[(3 * len(val)) // 4 - 1] if len(val) > 3 else None,
        "train_loss_ups": sum(b > a for a, b in zip(loss, loss[1:])) if len(loss) > 1 else None,
    }


def _sizes(run: Run) -> dict[str, Any]:
    try:
        sizes = run.dataset.get("sizes", {})
    except Exception:  # a run without its dataset.json: no binomial error for its accuracies
        sizes = {}
    ev = run.eval or {}
    try:
        clean = int(run.config.train.clean_subset)
    except Exception:
        clean = 0
    return {
        "n_test": ev.get("n") or sizes.get("test"),
        "n_classes": len(ev.get("per_class_accuracy") or []) or None,
        "n_val": sizes.get("val"),
        "n_clean": min(clean, sizes["train"]) if clean and sizes.get("train") else None,
    }


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
