"""No finding of the five studies agrees on a network that learned nothing.

Every experiment of every study is replaced by result folders of an untrained network (accuracy at
chance, flat losses, every class guessed about equally) or of a collapsed one (every image given
one class), with the exact configs ``study run --budget medium`` would train (each grid point and
seed of a sweep). ``study check`` must then say "disagree" or "not enough evidence" for every
finding, except the few whose report says the run stays at chance (listed below with the reason).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convlens.config import load_config
from convlens.run import Layout
from convlens.run.folder import write_status
from convlens.study.check import check_study
from convlens.study.results import write_meta
from convlens.study.runner import _sweep
from convlens.study.spec import load_study
from convlens.study.stats import AGREE
from convlens.utils import write_json

ROOT = Path(__file__).resolve().parents[1] / "studies"
STUDIES = sorted(p.name for p in ROOT.iterdir() if (p / "study.yaml").is_file())
BUDGET = "medium"

# Findings whose report says the network does not learn: an untrained or collapsed network is
# what the report describes, so agreeing is right.
AT_CHANCE_BY_REPORT = {
    # Adam at lr 0.1 stays at 10% with a flat validation curve: the report's run 4 collapsed.
    "csci611-optimizers": {"c002-adam-lr0.1-chance", "c002-adam-lr0.1-plateau", "c002-adam-lr0.1-collapses"},
}


def _runs(study, out: Path):
    """(experiment id, run folder, config) of every run the budget trains."""
    budget = study.budget(BUDGET)
    for e in study.spec.experiments:
        if e.id in (budget.skip or []):
            continue
        overrides = study.overrides(BUDGET, e.id, [])
        if study.is_sweep(e):
            sweep = _sweep(study, e, overrides, budget.seeds)
            for cell in sweep.cells():
                point = sweep.points()[cell["point"]]
                yield e.id, out / e.id / "trials" / str(cell["cell"]), sweep.trial_config(point, cell["seed"])
        else:  # a config trains once, with its own seed (a budget's seeds repeat sweep points)
            yield e.id, out / e.id, load_config(study.folder / e.file, overrides)


def _fake(path: Path, cfg, rng: np.random.Generator, collapsed: bool) -> None:
    """A finished run folder of a network that learned nothing."""
    lay = Layout(path)
    path.mkdir(parents=True)
    lay.write_config(cfg)
    epochs = int(cfg.train.epochs)
    classes = [f"c{i}" for i in range(10)]
    n = 10000
    if collapsed:
        cm = [[0] * 10 for _ in range(10)]
        for i in range(10):
            cm[i][3] = n // 10
    else:  # guesses spread evenly: each row a multinomial draw over the ten classes
        cm = [rng.multinomial(n // 10, [0.1] * 10).tolist() for _ in range(10)]
    right = sum(cm[i][i] for i in range(10))
    acc = right / n
    per = [cm[i][i] / (n // 10) for i in range(10)]
    rows = []
    for e in range(epochs):
        v = float(np.clip(0.1 + rng.normal(0, 0.004), 0, 1))
        lo = float(2.3026 + rng.normal(0, 0.002))
        rows.append({"epoch": e + 1, "train_acc": v, "val_acc": v, "train_loss": lo, "val_loss": lo, "gap": 0.0})
        if cfg.train.clean_subset:
            clean = float(np.clip(0.1 + rng.normal(0, 0.004), 0, 1))
            rows[-1].update(train_clean_acc=clean, clean_gap=clean - v)
    lay.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_status(path, "finished", epoch=epochs, epochs=epochs)
    sizes = {"train": 45000, "val": 5000, "test": n}
    write_json(lay.dataset_file, {"classes": classes, "shape": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3,
                                  "sizes": sizes})  # fmt: skip
    write_json(lay.eval_file, {"accuracy": acc, "n": n, "classes": classes, "per_class_accuracy": per, "confusion": cm})


@pytest.mark.parametrize("collapsed", [False, True], ids=["untrained", "collapsed"])
@pytest.mark.parametrize("name", STUDIES)
def test_no_finding_agrees_on_a_network_that_learned_nothing(tmp_path, name, collapsed):
    study = load_study(ROOT / name)
    out = tmp_path / "out"
    rng = np.random.default_rng(0)
    made = 0
    for _, path, cfg in _runs(study, out):
        _fake(path, cfg, rng, collapsed)
        made += 1
    assert made, f"{name}: no runs at budget {BUDGET}"
    write_meta(out, {"study": study.name, "budget": BUDGET})
    verdicts = check_study(study, out)
    agree = {v.id: v.obtained for v in verdicts if v.verdict == AGREE}
    unexpected = {k: v for k, v in agree.items() if k not in AT_CHANCE_BY_REPORT.get(name, set())}
    assert not unexpected, f"{name}: findings agree on a network that learned nothing: {unexpected}"
