"""Group-by tables against means and standard deviations worked out by hand, on a study whose
trials are written directly (no training): finished, pruned and killed trials over a 2x2 grid."""

from __future__ import annotations

import csv
import io

import pytest
from sweep_common import sweep_dict

from convlens.cli import main
from convlens.errors import ConvlensError
from convlens.sweep import build_results, load_sweep, write_results
from convlens.sweep.local import write_meta
from convlens.sweep.study import open_storage, optuna

# lr, width, seed, state, best val acc, final train acc, test acc
TRIALS = [
    (0.1, 4, 0, "COMPLETE", 0.50, 0.60, 0.48),
    (0.1, 4, 1, "COMPLETE", 0.70, 0.80, 0.66),
    (0.1, 8, 0, "COMPLETE", 0.80, 0.90, 0.78),
    (0.1, 8, 1, "PRUNED", 0.30, 0.35, None),  # stopped early: counted, never averaged
    (0.01, 4, 0, "COMPLETE", 0.40, 0.45, 0.38),
    (0.01, 4, 1, "COMPLETE", 0.44, 0.49, 0.40),
    (0.01, 8, 0, "COMPLETE", 0.60, 0.70, 0.58),
    (0.01, 8, 1, "FAIL", None, None, None),  # killed: no result at all
]


@pytest.fixture
def sweep_dir(tmp_path):
    sweep = load_sweep(sweep_dict(seeds=2, params={"train.optimizer.lr": [0.1, 0.01], "model.options.width": [4, 8]}))
    out = tmp_path / "sweep"
    out.mkdir()
    write_meta(out, sweep, str(out / "study.journal"))
    op = optuna()
    storage = open_storage(str(out / "study.journal"))
    study = op.create_study(study_name=sweep.name, storage=storage, direction="maximize")
    dists = {p.key: op.distributions.CategoricalDistribution(p.choices()) for p in sweep.params}
    for lr, width, seed, state, val, train, test in TRIALS:
        result = (
            None
            if val is None
            else {
                "status": "pruned" if state == "PRUNED" else "finished",
                "best_val_acc": val,
                "best_epoch": 2,
                "epochs": 1 if state == "PRUNED" else 3,
                "final_train_acc": train,
                "gap": train - val,
                "test_acc": test,
                "params": 100 * width,
                "sec_per_epoch": 0.5,
                "total_seconds": 2.0,
            }
        )
        study.add_trial(
            op.trial.create_trial(
                state=getattr(op.trial.TrialState, state),
                value=val if state == "COMPLETE" else None,
                params={"train.optimizer.lr": lr, "model.options.width": width},
                distributions=dists,
                user_attrs={"seed": seed, **({"result": result} if result else {})},
                intermediate_values={1: val} if val is not None else {},
            )
        )
    return out


def test_group_means_and_std_match_hand_computed(sweep_dir):
    res = build_results(sweep_dir, by=[["lr"], ["width"], ["lr", "width"]])
    assert [r["status"] for r in res.rows] == ["finished"] * 3 + ["pruned"] + ["finished"] * 3 + ["killed"]
    by_lr, by_width, by_both = ({tuple(g[k] for k in grp.keys): g for g in grp.rows} for grp in res.groups)

    # lr 0.01: val .40 .44 .60 -> mean .48, std sqrt((.08^2 + .04^2 + .12^2) / 2) = .105830
    g = by_lr[(0.01,)]
    assert (g["n"], g["pruned"]) == (3, 0)
    assert g["best_val_acc"] == pytest.approx(0.48) and g["best_val_acc_std"] == pytest.approx(0.105830, abs=1e-6)
    assert g["test_acc"] == pytest.approx((0.38 + 0.40 + 0.58) / 3)
    # lr 0.1: val .5 .7 .8 (the pruned .3 is left out) -> mean .666667, std .152753; gap .1 each
    g = by_lr[(0.1,)]
    assert (g["n"], g["pruned"]) == (3, 1)
    assert g["best_val_acc"] == pytest.approx(0.666667, abs=1e-6)
    assert g["best_val_acc_std"] == pytest.approx(0.152753, abs=1e-6)
    assert g["gap"] == pytest.approx(0.1) and g["final_train_acc"] == pytest.approx(0.766667, abs=1e-6)
    # width 4: val .5 .7 .4 .44 -> mean .51, std sqrt(.0532 / 3) = .133167; params 400
    g = by_width[(4,)]
    assert (g["n"], g["best_val_acc"], g["params"]) == (4, pytest.approx(0.51), 400)
    assert g["best_val_acc_std"] == pytest.approx(0.133167, abs=1e-6)
    # lr x width: one trial -> no std; none left -> no mean, the pruned one still counted
    assert by_both[(0.01, 4)]["best_val_acc"] == pytest.approx(0.42)
    assert by_both[(0.01, 4)]["best_val_acc_std"] == pytest.approx(0.028284, abs=1e-6)
    assert (by_both[(0.01, 8)]["n"], by_both[(0.01, 8)]["best_val_acc_std"]) == (1, None)
    assert (by_both[(0.1, 8)]["n"], by_both[(0.1, 8)]["pruned"], by_both[(0.1, 8)]["best_val_acc"]) == (1, 1, 0.8)
    assert list(by_lr) == [(0.01,), (0.1,)]  # sorted by value
    assert res.best["trial"] == 2 and res.best["values"] == {"train.optimizer.lr": 0.1, "model.options.width": 8}


def test_written_tables_and_cli(sweep_dir, capsys):
    res = write_results(sweep_dir)
    assert [g.keys for g in res.groups] == [["lr"], ["width"], ["lr", "width"]]  # seeds repeat points: all keys too
    rows = list(csv.DictReader(open(sweep_dir / "groups-lr.csv")))
    assert [r["lr"] for r in rows] == ["0.01", "0.1"] and float(rows[1]["best_val_acc"]) == pytest.approx(2 / 3)
    trials = list(csv.DictReader(open(sweep_dir / "trials.csv")))
    assert len(trials) == 8 and trials[3]["status"] == "pruned" and trials[7]["best_val_acc"] == ""
    md = (sweep_dir / "results.md").read_text()
    assert "| 0.1 | 3 | 1 | 66.67 | 15.28 |" in md and "## Mean by lr, width" in md
    assert (sweep_dir / "best.yaml").read_text().startswith("# Best trial of sweep s: trial 2")
    assert (sweep_dir / "plots" / "curves.png").is_file()  # from what trials reported: no run folders here

    assert main(["sweep", "table", str(sweep_dir), "--by", "width,lr", "--format", "csv"]) == 0
    printed = capsys.readouterr().out
    parts = printed.strip().split("\n\n")  # the trials, then the one group table asked for
    assert len(parts) == 2
    groups = {(r["width"], r["lr"]): r for r in csv.DictReader(io.StringIO(parts[1]))}
    assert list(groups) == [("4", "0.01"), ("4", "0.1"), ("8", "0.01"), ("8", "0.1")]
    assert float(groups[("4", "0.01")]["best_val_acc"]) == pytest.approx(0.42)
    assert (sweep_dir / "groups-width-lr.csv").is_file()

    assert main(["sweep", "table", str(sweep_dir), "--by", "momentum"]) == 2
    assert "'momentum' is not a swept key of sweep 's'; swept: lr, width" in capsys.readouterr().err
    with pytest.raises(ConvlensError, match="not a sweep folder"):
        build_results(sweep_dir / "plots")
