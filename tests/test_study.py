"""Studies: study.yaml validation, `study check` verdicts on hand-made result folders (agree,
disagree, not enough evidence), `study run` on a micro study over digits, and `diagnose` on a
tiny digits sweep folder."""

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
from convlens.study.check import AGREE, DISAGREE, UNSURE, check_study
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


def verdicts(tmp_path, findings, **extra):
    study = load_study(write_study(tmp_path / "study", findings, **extra))
    return check_study(study, tmp_path / "out")


def trials(folder: Path, accs: list[float], **kw) -> None:
    for i, acc in enumerate(accs):
        fake_run(folder / "trials" / str(i), acc, seed=i, **kw)


def test_compare_means_agree_disagree_and_noise(tmp_path):
    out = tmp_path / "out"
    trials(out / "a", [0.80, 0.82])
    trials(out / "b", [0.70, 0.72])
    (v,) = verdicts(tmp_path, [A_BEATS_B])
    assert v.verdict == AGREE and v.numbers["n_a"] == 2
    assert v.numbers["diff"] == pytest.approx(0.10)
    # seed std 0.01414 (pooled over both sides, 2 dof); se = std * sqrt(1/2 + 1/2)
    assert v.numbers["seed_std"] == pytest.approx(0.0141421, rel=1e-4)
    assert v.numbers["threshold"] == pytest.approx(2 * 0.0141421, rel=1e-4)
    (v,) = verdicts(tmp_path, [{**A_BEATS_B, "expect": "less"}])
    assert v.verdict == DISAGREE


def test_a_difference_within_the_seed_noise_is_not_evidence(tmp_path):
    out = tmp_path / "out"
    trials(out / "a", [0.70, 0.90])  # seeds disagree by 20 points
    trials(out / "b", [0.72, 0.76])
    (v,) = verdicts(tmp_path, [A_BEATS_B])
    assert v.numbers["diff"] == pytest.approx(0.06) and v.verdict == UNSURE


def test_one_seed_uses_the_study_noise_and_missing_results_are_not_evidence(tmp_path):
    out = tmp_path / "out"
    fake_run(out / "a", 0.75)
    fake_run(out / "b", 0.74)
    (v,) = verdicts(tmp_path, [A_BEATS_B], noise=0.02)
    assert v.verdict == UNSURE and v.numbers["threshold"] == 0.02 and v.numbers["seed_std"] is None
    (v,) = verdicts(tmp_path, [A_BEATS_B], noise=0.005)
    assert v.verdict == AGREE
    (tmp_path / "out2").mkdir()
    study = load_study(tmp_path / "study")
    (v,) = check_study(study, tmp_path / "out2")
    assert v.verdict == UNSURE and "missing" in v.obtained


def test_where_selects_trials_by_config_value(tmp_path):
    out = tmp_path / "out"
    fake_run(out / "a" / "trials" / "0", 0.9, lr=0.1)
    fake_run(out / "a" / "trials" / "1", 0.5, lr=0.01)
    fake_run(out / "b", 0.6)
    high = {**A_BEATS_B, "a": {"experiment": "a", "where": {"train.optimizer.lr": 0.1}}}
    low = {**A_BEATS_B, "id": "low", "a": {"experiment": "a", "where": {"train.optimizer.lr": 0.01}}}
    v1, v2 = verdicts(tmp_path, [high, low])
    assert (v1.verdict, v1.numbers["a"], v2.verdict, v2.numbers["a"]) == (AGREE, 0.9, DISAGREE, 0.5)


def test_threshold_and_diagnose_has(tmp_path):
    out = tmp_path / "out"
    fake_run(out / "a", 0.10, pred=0)  # every image predicted as class 0
    fake_run(out / "b", 0.95)
    collapse = {"id": "c", "report_says": "a collapses", "kind": "diagnose_has", "a": {"experiment": "a"}}
    chance = {"id": "t", "report_says": "10%", "kind": "threshold", "a": {"experiment": "a"}, "expect": "less"}
    healthy = {**collapse, "id": "h", "a": {"experiment": "b"}}
    vs = verdicts(
        tmp_path, [{**collapse, "code": "collapsed"}, {**chance, "value": 0.15}, {**healthy, "code": "collapsed"}]
    )
    assert [v.verdict for v in vs] == [AGREE, AGREE, DISAGREE]
    assert vs[0].numbers == {"hits": 1, "runs": 1, "codes": vs[0].numbers["codes"]}


def test_a_run_without_test_predictions_is_no_evidence_of_collapse(tmp_path):
    out = tmp_path / "out"
    run = fake_run(out / "a", 0.10)
    Layout(run).eval_file.unlink()  # diverged in its first epoch: never tested
    write_status(run, "diverged", epoch=0, epochs=1, message="diverged in epoch 1")
    collapse = {"id": "c", "report_says": "a collapses", "kind": "diagnose_has", "a": {"experiment": "a"}}
    (v,) = verdicts(tmp_path, [{**collapse, "code": "collapsed"}])
    assert v.verdict == UNSURE and v.obtained == "no test predictions to judge collapsed (1 run(s), status diverged)"
    (v,) = verdicts(tmp_path, [{**collapse, "code": "diverged"}])  # judged from the losses: evidence
    assert v.verdict == AGREE


def test_classnorms_experts(tmp_path):
    out = tmp_path / "out"
    run = fake_run(out / "a", 0.9)
    doc = {
        "layers": {
            "conv1": {"selectivity": [0.1, 0.2, 0.9], "quiet": [2]},  # the selective filter is silent
            "conv2": {"selectivity": [0.1, 0.6], "quiet": []},
        }
    }
    write_json(Layout(run).artifact("classnorms").json, doc)
    check = {"id": "e", "report_says": "x", "kind": "classnorms_experts", "a": {"experiment": "a"}}
    (v,) = verdicts(tmp_path, [{**check, "first": "conv1", "last": "conv2"}])
    assert v.verdict == AGREE and v.numbers["experts"] == {"conv1": [0], "conv2": [1]}
    (v,) = verdicts(tmp_path, [{**check, "first": "conv2", "last": "conv1"}])
    assert v.verdict == DISAGREE


def test_classnorms_experts_relative_to_the_first_layer(tmp_path):
    out = tmp_path / "out"
    run = fake_run(out / "a", 0.9)
    doc = {
        "layers": {
            "conv1": {"selectivity": [0.1, 0.2, 0.3, 0.9], "quiet": [3]},  # max 0.3, median 0.2
            "conv5": {"selectivity": [0.3, 0.4, 0.5, 0.7], "quiet": []},  # max 0.7, median 0.45
        }
    }
    write_json(Layout(run).artifact("classnorms").json, doc)
    check = {"id": "e", "report_says": "x", "kind": "classnorms_experts", "a": {"experiment": "a"}}
    check.update(first="conv1", last="conv5")
    (v,) = verdicts(tmp_path, [{**check, "above_first": 2.0}])
    assert v.verdict == AGREE and v.numbers["ratio"] == {"max": pytest.approx(7 / 3), "median": pytest.approx(2.25)}
    assert v.obtained == (
        "selectivity conv5 against conv1: max 0.70 vs 0.30 (2.3x), median 0.45 vs 0.20 (2.2x); "
        "expected at least 2x both"
    )
    (v,) = verdicts(tmp_path, [{**check, "above_first": 2.3}])  # the median is only 2.25x
    assert v.verdict == DISAGREE


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
    assert "| a-beats-b | a beats b |" in text and "(budget small)" in text
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
