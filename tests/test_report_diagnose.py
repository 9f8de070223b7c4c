"""`convlens diagnose`: each finding on a tiny real run made to show it, and on hand-made run folders."""

from __future__ import annotations

import json
import math
import os

import pytest
from report_helpers import copy_run, rename_classes, trained
from report_helpers import healthy as healthy_run

from convlens.cli import main
from convlens.report import diagnose
from convlens.report.diagnose import COLLAPSE_SHARE, dead_filters_by_layer
from convlens.run import Run
from convlens.utils import read_json, to_json, write_json


def codes(run_dir) -> dict[str, object]:
    return {f.code: f for f in diagnose(run_dir)}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    return healthy_run(tmp_path_factory)


# -- runs made to show a problem --------------------------------------------------------------


def test_huge_sgd_learning_rate_is_diagnosed_as_diverged(tmp_path_factory):
    run = trained(tmp_path_factory, "huge-sgd", **{"train.optimizer.lr": 50.0})
    found = codes(run)
    assert Run(run).status["status"] == "diverged"
    f = found["diverged"]
    assert f.severity == "problem"
    assert f.evidence["learning_rate"] == 50.0
    assert "lr=50" in f.text and "lower" in f.text


def test_huge_adam_learning_rate_is_diagnosed_as_collapsed(tmp_path_factory):
    # lr 10 with no loss limit (diverge_factor null): the first steps kill every ReLU, so the output
    # is the last layer's bias for every image, in float32 and bf16 alike, on any CPU (at lr 1 some
    # filters survive and whether the run collapses or is merely unstable depends on the arithmetic)
    over = {"train.optimizer": {"name": "adam", "lr": 10.0}, "train.epochs": 3, "train.diverge_factor": None}
    run = trained(tmp_path_factory, "huge-adam", **over)
    found = codes(run)
    f = found["collapsed"]
    ev = read_json(run / "eval.json")
    counts = ev["prediction_counts"]
    top = max(range(len(counts)), key=counts.__getitem__)
    assert f.evidence["class"] == ev["classes"][top]
    assert f.evidence["share"] == pytest.approx(counts[top] / sum(counts))
    assert f.evidence["share"] >= COLLAPSE_SHARE or (ev["accuracy"] <= 0.15 and f.evidence["share"] >= 0.5)
    assert "too high" in f.text
    assert "chance_level" not in found  # said once, as the collapse
    # nearly every mistake is "taken for the one class": no pairs to report, and no instability on top
    assert "confused_pairs" not in found and "unstable" not in found


def test_healthy_run_is_neither_diverged_nor_collapsed(healthy):
    found = codes(healthy)
    assert not {"diverged", "collapsed", "chance_level", "flat_loss", "overfitting", "dead_filters"} & set(found)
    # two epochs, validation accuracy still climbing at the end: train longer
    assert "still_improving" in found
    rows = Run(healthy).metrics()
    assert found["still_improving"].evidence["val_acc_last"] == pytest.approx(rows[-1]["val_acc"])


def test_tiny_learning_rate_is_diagnosed_as_flat_loss(tmp_path_factory):
    run = trained(tmp_path_factory, "flat", **{"train.optimizer.lr": 1e-5, "train.epochs": 3})
    found = codes(run)
    f = found["flat_loss"]
    rows = Run(run).metrics()
    assert f.evidence["first_loss"] == pytest.approx(rows[0]["train_loss"])
    assert f.evidence["last_loss"] == pytest.approx(rows[-1]["train_loss"])
    assert "too low" in f.text
    assert "diverged" not in found
    # an untrained network predicts one class for most images; the cause named must be the low rate
    if "collapsed" in found:
        assert "raise the learning rate" in found["collapsed"].text


def test_small_training_set_is_diagnosed_as_overfitting(tmp_path_factory):
    run = trained(
        tmp_path_factory,
        "overfit",
        **{
            "data.train_subset": 40,
            "train.epochs": 12,
            "model.options.width": 8,
            "train.optimizer": {"name": "adam", "lr": 0.01},
        },
    )
    f = codes(run)["overfitting"]
    rows = Run(run).metrics()
    val = [r["val_acc"] for r in rows]
    assert f.evidence["peak_epoch"] == rows[val.index(max(val))]["epoch"]
    assert f.evidence["gap_last"] == pytest.approx(rows[-1]["train_acc"] - rows[-1]["val_acc"])
    assert f.evidence["gap_last"] >= 0.10
    assert f"epoch {f.evidence['peak_epoch']}" in f.text or "peaked in the last epoch" in f.text


def test_high_adam_learning_rate_is_unstable_not_overfitting(tmp_path_factory, tmp_path):
    run = trained(tmp_path_factory, "unstable", **{"train.optimizer": {"name": "adam", "lr": 0.5}, "train.epochs": 3})
    rows = Run(run).metrics()
    worst = max(rows, key=lambda r: r["val_loss"])
    assert worst["val_loss"] > 5 * math.log(10) and max(r["train_acc"] for r in rows) < 0.9  # what the run shows
    found = codes(run)
    f = found["unstable"]
    assert f.severity == "problem"
    assert f.evidence["val_loss_max"] == pytest.approx(worst["val_loss"])
    assert f.evidence["val_loss_max_epoch"] == worst["epoch"]
    assert f.evidence["train_acc_peak"] == pytest.approx(max(r["train_acc"] for r in rows))
    assert "lr=0.5" in f.text and "lower it" in f.text
    assert "overfitting" not in found and "diverged" not in found
    # The train-validation gap this run ends with (0.02 to 0.21 by CPU and precision) is the
    # arithmetic's: the same rows with the last gap at 0.15 read as overfitting alone, and must not
    copy = copy_run(run, tmp_path / "gap")
    last = rows[-1]
    train_acc = min(0.89, last["val_acc"] + 0.15)
    gap = train_acc - last["val_acc"]
    assert gap >= 0.10  # validation accuracy stays far below 0.79 at this rate
    _rewrite_metrics(copy, rows[:-1] + [{**last, "train_acc": train_acc, "gap": gap}])
    found = codes(copy)
    assert found["unstable"].evidence["gap_last"] == pytest.approx(gap)
    assert "not overfitting" in found["unstable"].text and "overfitting" not in found


AUGMENT = {"translate": {"pixels": 2}, "noise": {}, "erase": {}}
DROPOUT_NET = [
    {"type": "conv", "out": 16, "kernel": 3, "padding": 1},
    "relu",
    "maxpool",
    "flatten",
    {"type": "dropout", "p": 0.5},
    {"type": "linear", "out": 64},
    "relu",
    {"type": "dropout", "p": 0.5},
    {"type": "linear", "out": "classes"},
]


def test_training_below_validation_under_augmentation_and_dropout_is_explained(tmp_path_factory):
    run = trained(
        tmp_path_factory,
        "augmented",
        **{
            "model": {"layers": DROPOUT_NET},
            "data.augment": AUGMENT,
            "train.optimizer": {"name": "adam", "lr": 3e-3},
            "train.epochs": 4,
        },
    )
    found = codes(run)
    last = Run(run).metrics()[-1]
    assert last["gap"] <= -0.05 and last["val_acc"] >= 0.25  # learning, and harder on the training images
    f = found["train_below_val"]
    assert f.severity == "info"
    assert f.evidence["gap"] == pytest.approx(last["gap"]) and f.evidence["epoch"] == last["epoch"]
    assert f.evidence["causes"] == ["augmentation (translate, noise, erase)", "dropout (p up to 0.5)"]
    assert "not overfitting" in f.text and f"{-100 * last['gap']:.1f} points" in f.text
    # the training loss falls slowly under this much noise, but the model learns: no "raise the rate"
    assert not {"overfitting", "flat_loss", "unstable"} & set(found)


def test_a_learning_run_with_a_high_loss_floor_is_not_flat(tmp_path_factory):
    """Label smoothing keeps the loss high: 3 epochs of Adam 1e-3 lower it by under 10% while
    accuracy reaches 90% and more."""
    run = trained(
        tmp_path_factory,
        "smoothed",
        **{
            "train.optimizer": {"name": "adam", "lr": 1e-3},
            "train.epochs": 3,
            "train.label_smoothing": 0.6,
            "train.batch_size": 32,
            "model.options.width": 16,
        },
    )
    rows = Run(run).metrics()
    assert rows[-1]["train_loss"] > 0.9 * rows[0]["train_loss"] and rows[-1]["val_acc"] > 0.9
    assert not {"flat_loss", "collapsed", "chance_level", "unstable"} & set(codes(run))


# -- hand-made run folders ---------------------------------------------------------------------


def _rewrite_metrics(run_dir, rows):
    (run_dir / "metrics.jsonl").write_text("".join(to_json(r, None) + "\n" for r in rows))


def test_nan_and_exploding_losses_are_divergence(healthy, tmp_path):
    run = copy_run(healthy, tmp_path / "nan")
    rows = Run(run).metrics()
    _rewrite_metrics(run, [rows[0], {**rows[1], "train_loss": math.nan}])
    f = codes(run)["diverged"]
    assert f.evidence["nan_loss_epochs"] == [rows[1]["epoch"]]
    run2 = copy_run(healthy, tmp_path / "explode")
    _rewrite_metrics(run2, [rows[0], {**rows[1], "train_loss": 4 * rows[0]["train_loss"]}])
    f = codes(run2)["diverged"]
    assert f.evidence["worst_epoch"] == 2 and f.evidence["worst_loss"] == pytest.approx(4 * rows[0]["train_loss"])


def test_a_training_loss_spike_is_instability(healthy, tmp_path):
    """A spike mid-training, on hand-made metrics: a real run that spikes without diverging or
    collapsing takes a rate tuned to the machine's arithmetic, not a cheap, steady test."""
    run = copy_run(healthy, tmp_path / "spike")
    r = Run(run).metrics()[-1]
    losses, accs = [1.6, 0.8, 1.6, 0.5], [0.5, 0.75, 0.6, 0.9]
    _rewrite_metrics(
        run,
        [
            {**r, "epoch": e, "train_loss": loss, "train_acc": acc, "val_acc": 0.7, "gap": acc - 0.7}
            for e, (loss, acc) in enumerate(zip(losses, accs), 1)
        ],
    )
    found = codes(run)
    f = found["unstable"]
    ev = f.evidence
    assert (ev["train_loss_spike_epoch"], ev["train_loss_spike"], ev["train_loss_before"]) == (3, 1.6, 0.8)
    assert f.evidence["gap_last"] == pytest.approx(0.2) and "overfitting" not in found and "diverged" not in found


@pytest.mark.parametrize("last_train_acc, overfits", [(0.51, False), (0.62, True)])
def test_validation_falling_with_training_is_not_overfitting(healthy, tmp_path, last_train_acc, overfits):
    """Hand-made, as a plain RNN at Adam lr 0.01 on MNIST rows: validation accuracy falls from its
    peak and its loss rises, but training accuracy fell as well: noise, not memorising."""
    run = copy_run(healthy, tmp_path / "falls")
    r = Run(run).metrics()[-1]
    train_acc, val_acc = [0.46, 0.56, 0.58, last_train_acc], [0.47, 0.60, 0.55, 0.535]
    train_loss, val_loss = [1.5, 1.21, 1.20, 1.42], [1.4, 1.2, 1.3, 1.36]
    _rewrite_metrics(
        run,
        [
            {**r, "epoch": e, "train_loss": tl, "train_acc": ta, "val_loss": vl, "val_acc": va, "gap": ta - va}
            for e, (tl, ta, vl, va) in enumerate(zip(train_loss, train_acc, val_loss, val_acc), 1)
        ],
    )
    assert ("overfitting" in codes(run)) == overfits


def test_a_model_that_memorises_its_training_set_is_overfitting_even_with_a_huge_validation_loss(healthy, tmp_path):
    """Hand-made: 100% on the training images and a validation loss many times that of guessing."""
    run = copy_run(healthy, tmp_path / "memorised")
    rows = Run(run).metrics()
    memo = [
        {**rows[0], "epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5 + e * 0.1, "val_loss": e * e, "val_acc": 0.6}
        for e in range(1, 6)
    ]
    _rewrite_metrics(run, memo)
    found = codes(run)
    assert found["overfitting"].evidence["gap_last"] == pytest.approx(0.4) and "unstable" not in found


def test_training_below_validation_without_regularisers_says_so(healthy, tmp_path):
    """Hand-made metrics on the healthy run, whose config has no augmentation or dropout."""
    run = copy_run(healthy, tmp_path / "below")
    rows = Run(run).metrics()
    _rewrite_metrics(run, [rows[0], {**rows[-1], "train_acc": rows[-1]["val_acc"] - 0.1, "gap": -0.1}])
    f = codes(run)["train_below_val"]
    assert f.evidence["causes"] == [] and "Nothing in the config makes training harder" in f.text
    assert "overfitting" not in codes(run)


def test_no_flat_loss_claim_on_a_run_that_learned(healthy, tmp_path):
    """Hand-made: the loss drops 5% over three epochs, accuracy is 80%; then 11%, a flat run."""
    run = copy_run(healthy, tmp_path / "learned")
    r = Run(run).metrics()[-1]
    rows = [
        {**r, "epoch": e, "train_loss": 1.0 - 0.025 * e, "train_acc": 0.8, "val_acc": 0.8, "gap": 0.0}
        for e in (1, 2, 3)
    ]
    _rewrite_metrics(run, rows)
    assert "flat_loss" not in codes(run)
    ev = read_json(run / "eval.json")
    ev.update(accuracy=0.11)
    write_json(run / "eval.json", ev)
    _rewrite_metrics(run, [{**row, "train_acc": 0.11, "val_acc": 0.11} for row in rows])
    assert "flat_loss" in codes(run)


def test_chance_level_without_a_dominant_class(healthy, tmp_path):
    run = copy_run(healthy, tmp_path / "chance")
    ev = read_json(run / "eval.json")
    counts = [36, 36, 36, 36, 36, 36, 36, 36, 36, 35]
    ev.update(accuracy=0.1, prediction_counts=counts)
    write_json(run / "eval.json", ev)
    found = codes(run)
    assert "collapsed" not in found
    assert found["chance_level"].evidence["test_accuracy"] == 0.1 and "10.0%" in found["chance_level"].text
    ev.update(prediction_counts=[200, 159, 0, 0, 0, 0, 0, 0, 0, 0])  # 56% one class at chance accuracy: collapsed
    write_json(run / "eval.json", ev)
    found = codes(run)
    assert "collapsed" in found and "chance_level" not in found
    assert "confused_pairs" not in found


def test_most_confused_pairs_count_both_directions(healthy, tmp_path):
    run = copy_run(healthy, tmp_path / "pairs")
    names = ["airplane", "bird", "cat", "dog"]
    cm = [[80, 12, 0, 0], [6, 90, 3, 1], [0, 2, 70, 28], [0, 1, 19, 80]]
    ev = read_json(run / "eval.json")
    ev.update(
        confusion=cm,
        prediction_counts=[sum(r[j] for r in cm) for j in range(4)],
        per_class_accuracy=[0.8, 0.9, 0.7, 0.8],
    )
    write_json(run / "eval.json", ev)
    rename_classes(run, names)
    f = codes(run)["confused_pairs"]
    pairs = f.evidence["pairs"]
    assert (pairs[0]["a"], pairs[0]["b"], pairs[0]["a_as_b"], pairs[0]["b_as_a"], pairs[0]["total"]) == (
        "cat",
        "dog",
        28,
        19,
        47,
    )
    assert (pairs[1]["a"], pairs[1]["b"], pairs[1]["total"]) == ("airplane", "bird", 18)
    assert f.evidence["errors"] == 72
    assert "cat/dog" in f.text and "airplane/bird" in f.text


@pytest.mark.parametrize("layout", ["indices", "booleans", "records", "list-of-layers"])
def test_dead_filters_come_from_the_stats_analysis_schema(healthy, tmp_path, layout):
    run = copy_run(healthy, tmp_path / layout)
    dead = {"conv1": [1], "conv2": [0, 5]}
    sizes = {"conv1": 4, "conv2": 8, "conv3": 16}
    if layout == "indices":
        layers = {k: {"channels": n, "dead": dead.get(k, [])} for k, n in sizes.items()}
    elif layout == "booleans":
        layers = {k: {"dead": [i in dead.get(k, []) for i in range(n)]} for k, n in sizes.items()}
    elif layout == "records":
        layers = {
            k: {
                "filters": [
                    {"filter": i, "active": 0.0 if i in dead.get(k, []) else 0.4, "dead": i in dead.get(k, [])}
                    for i in range(n)
                ]
            }
            for k, n in sizes.items()
        }
    else:
        layers = [{"layer": k, "mean": [0.1] * n, "dead": dead.get(k, [])} for k, n in sizes.items()]
    write_json(
        run / "analysis" / "stats.json",
        {"analysis": "stats", "params": {}, "split": "test", "layers": layers, "figures": []},
    )
    table = dead_filters_by_layer(read_json(run / "analysis" / "stats.json"))
    if layout != "indices":  # only the layout the stats analysis writes (run.schema.Stats) is read
        assert table == {} and "dead_filters" not in codes(run)
        return
    assert {k: v[0] for k, v in table.items() if v[0]} == dead
    assert {k: v[1] for k, v in table.items()} == sizes
    f = codes(run)["dead_filters"]
    assert f.evidence["dead"] == dead
    assert "conv1: 1 of 4" in f.text and "conv2: 2 of 8" in f.text and "3 filters" in f.text


def test_dead_filters_say_why_they_are_dead(healthy, tmp_path):
    run = copy_run(healthy, tmp_path / "why")
    layers = {
        "conv1": {"channels": 4, "dead": [2], "dead_reasons": {"2": ["weights near zero"]}},
        "conv2": {"channels": 8, "dead": [], "dead_reasons": {}},
    }
    write_json(run / "analysis" / "stats.json", {"analysis": "stats", "split": "test", "layers": layers, "figures": []})
    f = codes(run)["dead_filters"]
    assert "1 filter is dead on the test split (weights near zero)" in f.text and "conv1: 1 of 4 (2)" in f.text
    assert f.evidence["reasons"] == ["weights near zero"]
    layers["conv1"]["dead_reasons"] = {"2": ["never active"]}
    write_json(run / "analysis" / "stats.json", {"analysis": "stats", "split": "test", "layers": layers, "figures": []})
    assert "1 filter never activates on the test split" in codes(run)["dead_filters"].text


def test_no_stats_analysis_means_no_dead_filter_claim(healthy):
    assert not (healthy / "analysis" / "stats.json").exists()
    assert "dead_filters" not in codes(healthy)


def test_diagnose_command_prints_findings_and_json(healthy, capsys):
    assert main(["diagnose", str(healthy)]) == 0
    out = capsys.readouterr().out
    assert "[hint] Still improving" in out and "evidence" not in out.splitlines()[0]
    assert main(["diagnose", str(healthy), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert {f["code"] for f in found} == set(codes(healthy))
    assert main(["diagnose", str(healthy / "nope")]) == 2


def test_dead_filters_from_stats_run_for_some_layers(healthy, tmp_path):
    # `analyze --only stats --layers conv1` writes stats-conv1.json: diagnose reads it too
    run = copy_run(healthy, tmp_path / "keyed")
    one = {"conv1": {"channels": 4, "dead": [1, 3], "dead_reasons": {"1": ["never active"], "3": ["never active"]}}}
    two = {"conv2": {"channels": 8, "dead": [5], "dead_reasons": {"5": ["never active"]}}}
    write_json(run / "analysis" / "stats-conv1.json", {"analysis": "stats", "split": "test", "layers": one})
    write_json(run / "analysis" / "stats-conv2.json", {"analysis": "stats", "split": "test", "layers": two})
    other = {"conv3": {"channels": 16, "dead": [0], "dead_reasons": {"0": ["never active"]}}}
    write_json(run / "analysis" / "stats-conv3.json", {"analysis": "stats", "split": "val", "layers": other})
    for age, name in enumerate(["stats-conv2.json", "stats-conv1.json", "stats-conv3.json"]):
        os.utime(run / "analysis" / name, (1e9 - age, 1e9 - age))  # conv3 (another split) oldest
    f = codes(run)["dead_filters"]
    assert "conv3" not in f.text
    assert "conv1: 2 of 4 (1, 3)" in f.text and "conv2: 1 of 8 (5)" in f.text
    # the plain result, for every layer, is the one read when it exists
    write_json(run / "analysis" / "stats.json", {"analysis": "stats", "split": "test", "layers": two})
    f = codes(run)["dead_filters"]
    assert "conv2: 1 of 8 (5)" in f.text and "conv1" not in f.text
