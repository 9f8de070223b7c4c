"""Studies: study.yaml validation, `study run` on a micro study over digits (the verdicts of
`study check`, kind by kind: test_study_check.py), and `diagnose` on a tiny digits sweep folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config

from convlens.cli import main
from convlens.config import load_config
from convlens.run import Layout
from convlens.run.folder import write_status
from convlens.study.spec import StudyError, load_study
from convlens.utils import write_json

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def fake_run(path: Path, test_acc: float, gap: float = 0.0, seed: int = 0, lr: float = 0.05, pred=None) -> Path:
    """A finished run folder with the given numbers, written by hand (nothing trains)."""
    lay = Layout(path)
    path.mkdir(parents=True)
    lay.write_config(load_config(tiny_config(seed=seed, **{"train.optimizer.lr": lr})))
    row = {"epoch": 1, "train_acc": test_acc + gap, "val_acc": test_acc, "train_loss": 1.0, "val_loss": 1.2}
    lay.metrics_file.write_text(json.dumps({**row, "gap": gap}) + "\n")
    write_status(path, "finished", epoch=1, epochs=1)
    classes = [str(i) for i in range(10)]
    cm = [[0] * 10 for _ in range(10)]
    for i in range(10):
        cm[i][pred if pred is not None else i] = 10
    write_json(lay.eval_file, {"accuracy": test_acc, "classes": classes, "confusion": cm})
    return path


def write_study(folder: Path, findings: list[dict], **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.yaml").write_text(yaml.safe_dump(tiny_config(name="a")))
    (folder / "b.yaml").write_text(yaml.safe_dump(tiny_config(name="b")))
    doc = {
        "name": "micro",
        "experiments": [{"id": "a", "file": "a.yaml"}, {"id": "b", "file": "b.yaml"}],
        "budgets": {"small": {"note": "one epoch", "set": {"train.epochs": 1}}},
        "findings": findings,
        **extra,
    }
    (folder / "study.yaml").write_text(yaml.safe_dump(doc))
    return folder


A_BEATS_B = {
    "id": "a-beats-b",
    "report_says": "a beats b",
    "kind": "compare_means",
    "a": {"experiment": "a"},
    "b": {"experiment": "b"},
    "metric": "test_acc",
    "expect": "greater",
}


def test_study_file_errors_name_the_key(tmp_path):
    bad = {**A_BEATS_B, "b": {"experiment": "nope"}}
    with pytest.raises(StudyError, match="experiment 'nope' is not one of a, b"):
        load_study(write_study(tmp_path / "s1", [bad]))
    with pytest.raises(StudyError, match="kind compare_means needs b"):
        load_study(write_study(tmp_path / "s2", [{k: v for k, v in A_BEATS_B.items() if k != "b"}]))
    with pytest.raises(StudyError, match="metric 'acc' is not one of"):
        load_study(write_study(tmp_path / "s3", [{**A_BEATS_B, "metric": "acc"}]))


def test_study_run_and_check_on_digits(tmp_path, capsys):
    folder = write_study(tmp_path / "study", [A_BEATS_B])
    out = tmp_path / "out"
    assert main(["study", "run", str(folder), "--budget", "small", "--out", str(out)]) == 0
    for eid in ("a", "b"):
        assert json.loads(Layout(out / eid).status_file.read_text())["status"] == "finished"
        assert load_config(Layout(out / eid).config_file).train.epochs == 1
    before = Layout(out / "a").metrics_file.stat().st_mtime_ns
    assert main(["study", "run", str(folder), "--budget", "small", "--out", str(out)]) == 0
    assert Layout(out / "a").metrics_file.stat().st_mtime_ns == before  # finished runs are kept
    assert "a: finished before, kept" in capsys.readouterr().out
    assert main(["study", "check", str(folder), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| a-beats-b | compare_means: test_acc: a greater than b | a beats b |" in text and "(budget small)" in text
    assert json.loads((out / "check.json").read_text())[0]["id"] == "a-beats-b"
    # a folder holds one budget
    assert main(["study", "run", str(folder), "--out", str(out)]) == 2
    assert "holds study 'micro' at budget 'small'" in capsys.readouterr().err
    assert main(["study", "run", str(folder), "--budget", "tiny", "--out", str(out)]) == 2
    assert "--budget 'tiny' is not defined" in capsys.readouterr().err


def test_set_scoped_to_one_experiment(tmp_path, capsys):
    study = load_study(write_study(tmp_path / "study", [A_BEATS_B]))
    sets = ["data.root=/all", "b:data.root=/only-b:x", "b:train.epochs=3"]
    assert study.overrides("small", "a", sets) == {"train.epochs": 1, "data.root": "/all"}
    assert study.overrides("small", "b", sets) == {"train.epochs": 3, "data.root": "/only-b:x"}
    assert study.overrides("small", "a", ["data.root=/x:y"]) == {"train.epochs": 1, "data.root": "/x:y"}
    with pytest.raises(StudyError, match="'c' is not an experiment of micro; experiments: a, b"):
        study.overrides("small", "a", ["c:train.epochs=3"])
    out = tmp_path / "out"
    assert main(["study", "run", str(tmp_path / "study"), "--out", str(out), "--set", "c:train.epochs=3"]) == 2
    assert "error: --set 'c:train.epochs=3': 'c' is not an experiment" in capsys.readouterr().err
    assert not (out / "a").exists()


def test_budget_seeds_repeat_every_sweep_point(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "base.yaml").write_text(yaml.safe_dump(tiny_config(name="s")))
    sweep = {"name": "s", "base": "base.yaml", "method": "grid", "params": {"train.optimizer.lr": [0.05]}}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    doc = {
        "name": "seeded",
        "experiments": [{"id": "s", "file": "sweep.yaml"}],
        "budgets": {"small": {"set": {"train.epochs": 1, "data.train_subset": 200}, "seeds": [0, 3]}},
    }
    (folder / "study.yaml").write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    assert main(["study", "run", str(folder), "--budget", "small", "--out", str(out)]) == 0
    from convlens.study.results import load_rows

    assert sorted(r.config["seed"] for r in load_rows(out, "s")) == [0, 3]
    doc["budgets"]["small"]["seeds"] = [1, 1]
    (folder / "study.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(StudyError, match="seeds must be distinct seeds >= 0"):
        load_study(folder)


def test_every_study_file_validates():
    names = sorted(p.parent.name for p in STUDIES.glob("*/study.yaml"))
    assert names == sorted(p.name for p in STUDIES.iterdir() if p.is_dir())
    for name in names:
        study = load_study(STUDIES / name)
        assert "small" in study.spec.budgets and study.spec.findings, name


def test_diagnose_on_a_sweep_folder_reports_trends(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    # lr moves accuracy by 30 points; the seeds of a point differ by 2
    for i, (lr, seed, acc) in enumerate([(0.1, 0, 0.80), (0.1, 1, 0.82), (0.01, 0, 0.50), (0.01, 1, 0.52)]):
        fake_run(sweep / "trials" / str(i), acc, seed=seed, lr=lr)
    assert main(["diagnose", str(sweep), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [f["code"] for f in found] == ["strongest_key"]
    ev = found[0]["evidence"]
    assert ev["key"] == "train.optimizer.lr" and ev["metric"] == "test_acc" and ev["trials"] == 4
    assert ev["effect"] == pytest.approx(0.30) and ev["noise"] == pytest.approx(0.0141421, rel=1e-4)
    assert main(["diagnose", str(sweep)]) == 0
    assert (
        "train.optimizer.lr moves test_acc by 30.0% (0.01 -> 0.1), 21.2 times the seed noise" in capsys.readouterr().out
    )


def test_every_budget_of_every_study_validates():
    """Every experiment's config (every grid point of a sweep) under each budget's overrides."""
    from convlens.study.runner import _validate

    for folder in sorted(STUDIES.glob("*/study.yaml")):
        study = load_study(folder.parent)
        assert {"small", "medium"} <= set(study.spec.budgets), folder
        for name in study.spec.budgets:
            budget = study.budget(name)
            for e in study.spec.experiments:
                if e.id not in budget.skip:
                    _validate(study, e, study.overrides(name, e.id, []), budget.seeds)
