"""`study check`'s verdicts, kind by kind, on hand-made result folders (nothing trains): each kind
agrees on a run built to match the report, disagrees on one built to contradict it, and says
"not enough evidence" on one too small to tell (few images, no result, a network at chance)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config

from convlens.config import load_config
from convlens.run import Layout
from convlens.run.folder import write_status
from convlens.study.check import check_study
from convlens.study.results import write_meta
from convlens.study.spec import StudyError, load_study
from convlens.study.stats import AGREE, DISAGREE, UNSURE, judge
from convlens.utils import write_json

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def confusion(per_class: list[float], n: int, sink: dict[int, int] | None = None) -> list[list[int]]:
    """n images per class, ``per_class`` of them right; the errors of class i go to ``sink[i]``
    (else spread over the other classes)."""
    cm = [[0] * 10 for _ in range(10)]
    for i, p in enumerate(per_class):
        right = round(p * n)
        cm[i][i] = right
        wrong = n - right
        if sink and i in sink:
            cm[i][sink[i]] += wrong
        else:
            for k in range(wrong):
                cm[i][[j for j in range(10) if j != i][k % 9]] += 1
    return cm


def fake_run(path: Path, acc: float, n: int = 10000, seed: int = 0, cfg: dict | None = None, **kw) -> Path:
    """A finished run folder with the given numbers: test accuracy ``acc`` on ``n`` images,
    clean training accuracy ``clean`` (default acc + 0.1), optional per-class accuracies and
    confusion ``sink``, epochs of ``val`` and ``losses``, analysis results ``analyses``."""
    lay = Layout(path)
    path.mkdir(parents=True)
    over = {"seed": seed, "train.clean_subset": 1000, **(cfg or {})}
    lay.write_config(load_config(tiny_config(**over)))
    clean = kw.get("clean", acc + 0.1)
    vals, losses = kw.get("val", [acc]), kw.get("losses", [1.0] * len(kw.get("val", [acc])))
    rows = [
        {"epoch": e + 1, "train_acc": v, "val_acc": v, "train_loss": lo, "val_loss": lo, "gap": 0.0}
        for e, (v, lo) in enumerate(zip(vals, losses))
    ]
    rows[-1].update(train_clean_acc=clean, clean_gap=clean - vals[-1])
    lay.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_status(path, "finished", epoch=len(rows), epochs=len(rows))
    write_json(lay.dataset_file, {"classes": CLASSES, "shape": [3, 8, 8], "mean": [0.5] * 3, "std": [0.5] * 3,
                                  "sizes": {"train": 5000, "val": n, "test": n}})  # fmt: skip
    per = kw.get("per_class", [acc] * 10)
    cm = kw.get("cm") or confusion(per, n // 10, kw.get("sink"))
    write_json(lay.eval_file, {"accuracy": acc, "n": n, "classes": CLASSES, "per_class_accuracy": per, "confusion": cm})
    for name, doc in kw.get("analyses", {}).items():
        write_json(lay.artifact(name).json, doc)
    return path


def study(tmp_path: Path, findings: list[dict], budget: str = "medium", noise: float = 0.0) -> Path:
    folder = tmp_path / "study"
    folder.mkdir(exist_ok=True)
    for e in ("a", "b"):
        (folder / f"{e}.yaml").write_text(yaml.safe_dump(tiny_config(name=e)))
    doc = {
        "name": "micro",
        "experiments": [{"id": "a", "file": "a.yaml"}, {"id": "b", "file": "b.yaml"}],
        "budgets": {"small": {"set": {"train.epochs": 1}}, "medium": {"set": {"train.epochs": 2}}},
        "noise": noise,
        "findings": findings,
    }
    (folder / "study.yaml").write_text(yaml.safe_dump(doc))
    write_meta(tmp_path / "out", {"study": "micro", "budget": budget})
    return folder


def verdict(tmp_path: Path, finding: dict, **kw) -> str:
    (v,) = check_study(
        load_study(study(tmp_path, [{"id": "f", "report_says": "x", **finding}], **kw)), tmp_path / "out"
    )
    return v.verdict


def seeds(folder: Path, accs: list[float], **kw) -> None:
    for i, acc in enumerate(accs):
        fake_run(folder / "trials" / str(i), acc, seed=i, **kw)


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out"


A_VS_B = {"kind": "compare_means", "a": {"experiment": "a"}, "b": {"experiment": "b"}}


def test_judge_intervals():
    assert judge(0.10, 0.01, "greater") == AGREE and judge(-0.10, 0.01, "greater") == DISAGREE
    assert judge(0.01, 0.01, "greater") == UNSURE  # the interval [-0.01, 0.03] holds 0
    assert judge(0.50, 0.01, "similar", 0.5, 0.03) == AGREE and judge(0.40, 0.01, "similar", 0.5, 0.03) == DISAGREE
    assert judge(0.46, 0.01, "similar", 0.5, 0.03) == UNSURE
    assert judge(0.0, 0.005, "not_greater", 0, 0.01) == AGREE and judge(0.05, 0.005, "not_greater", 0, 0.01) == DISAGREE


def test_compare_means_uses_seeds_and_the_test_sets_binomial_error(tmp_path, out):
    seeds(out / "a", [0.80, 0.82])
    seeds(out / "b", [0.70, 0.72])
    assert verdict(tmp_path, {**A_VS_B, "expect": "greater"}) == AGREE
    assert verdict(tmp_path, {**A_VS_B, "expect": "less"}) == DISAGREE  # built to contradict


def test_compare_means_on_too_few_test_images_is_not_evidence(tmp_path, out):
    # 4 points on 200 test images: the binomial error of the difference is 4.1 points
    fake_run(out / "a", 0.54, n=200)
    fake_run(out / "b", 0.50, n=200)
    assert verdict(tmp_path, {**A_VS_B, "expect": "greater"}) == UNSURE


def test_compare_means_one_seed_assumes_the_studys_noise(tmp_path, out):
    fake_run(out / "a", 0.75)
    fake_run(out / "b", 0.72)
    assert verdict(tmp_path, {**A_VS_B, "expect": "greater"}, noise=0.0) == AGREE
    assert verdict(tmp_path, {**A_VS_B, "expect": "greater"}, noise=0.02) == UNSURE  # 3 pts < 2 x 2.9


def test_compare_means_missing_results_are_not_evidence(tmp_path, out):
    fake_run(out / "a", 0.75)
    assert verdict(tmp_path, {**A_VS_B, "expect": "greater"}) == UNSURE


def test_compare_means_similar_and_not_greater(tmp_path, out):
    seeds(out / "a", [0.700, 0.702])
    seeds(out / "b", [0.701, 0.701])
    similar = {**A_VS_B, "expect": "similar", "value": 0.0, "tolerance": 0.03}
    assert verdict(tmp_path, similar) == AGREE
    assert verdict(tmp_path, {**similar, "value": 0.2}) == DISAGREE  # the report's gap is 20 points
    assert verdict(tmp_path, {**similar, "tolerance": {"full": 0.03}}) == UNSURE  # not judged at medium
    assert verdict(tmp_path, {**A_VS_B, "expect": "not_greater", "tolerance": 0.02}) == AGREE


def test_compare_means_not_greater_disagrees_on_a_clear_gain(tmp_path, out):
    seeds(out / "a", [0.80, 0.80])
    seeds(out / "b", [0.70, 0.70])
    assert verdict(tmp_path, {**A_VS_B, "expect": "not_greater", "tolerance": 0.01}) == DISAGREE


def test_clean_gap_is_the_compared_gap(tmp_path, out):
    seeds(out / "a", [0.70, 0.70], clean=0.72)  # augmented: generalises
    seeds(out / "b", [0.70, 0.70], clean=0.95)  # plain: memorises
    gap = {**A_VS_B, "metric": "clean_gap", "expect": "less"}
    assert verdict(tmp_path, gap) == AGREE
    assert verdict(tmp_path, {**gap, "expect": "greater"}) == DISAGREE


MAG = {"kind": "magnitude", "a": {"experiment": "a"}, "expect": "similar", "value": 0.80}


def test_magnitude_against_the_reported_number(tmp_path, out):
    fake_run(out / "a", 0.79)
    assert verdict(tmp_path, {**MAG, "tolerance": {"medium": 0.03}}) == AGREE
    assert verdict(tmp_path, {**MAG, "value": 0.97, "tolerance": {"medium": 0.03}}) == DISAGREE  # 55% vs 97%
    assert verdict(tmp_path, {**MAG, "tolerance": {"full": 0.03}}) == UNSURE  # no tolerance for this budget


def test_magnitude_on_few_images_is_not_evidence(tmp_path, out):
    fake_run(out / "a", 0.76, n=100)  # +/- 8.5 points
    assert verdict(tmp_path, {**MAG, "tolerance": 0.03}) == UNSURE


def test_magnitude_one_sided_and_exact(tmp_path, out):
    fake_run(out / "a", 0.5, val=[0.2, 0.5])
    rise = {"kind": "magnitude", "a": {"experiment": "a"}, "metric": "val_acc_rise", "value": 0.0}
    assert verdict(tmp_path, {**rise, "expect": "greater"}) == AGREE
    assert verdict(tmp_path, {**rise, "expect": "less"}) == DISAGREE
    (tmp_path / "out" / "a" / "metrics.jsonl").unlink()
    assert verdict(tmp_path, {**rise, "expect": "greater"}) == UNSURE  # no epochs: missing


def _grid(out: Path, accs: dict[float, float], n: int = 10000) -> None:
    for i, (lr, acc) in enumerate(accs.items()):
        for s in (0, 1):
            fake_run(out / "a" / "trials" / f"{i}{s}", acc + 0.002 * s, n=n, seed=s, cfg={"train.optimizer.lr": lr})


BEST = {"kind": "best_point", "a": {"experiment": "a", "where": {"train.optimizer.lr": 0.1}}}


def test_best_point(tmp_path, out):
    _grid(out, {0.1: 0.80, 0.01: 0.70, 0.001: 0.60})
    assert verdict(tmp_path, BEST) == AGREE
    assert verdict(tmp_path, {**BEST, "a": {"experiment": "a", "where": {"train.optimizer.lr": 0.01}}}) == DISAGREE


def test_best_point_within_the_noise_is_not_evidence(tmp_path, out):
    _grid(out, {0.1: 0.80, 0.01: 0.79}, n=500)
    assert verdict(tmp_path, BEST) == UNSURE


def _two_keys(out: Path, lr_effect: float, bs_effect: float, n: int = 10000) -> None:
    i = 0
    for lr, a in ((0.1, lr_effect), (0.01, 0.0)):
        for bs, b in ((64, bs_effect), (32, 0.0), (16, 0.0)):
            for s in (0, 1):
                acc = 0.5 + a + b + 0.002 * s
                fake_run(
                    out / "a" / "trials" / str(i),
                    acc,
                    n=n,
                    seed=s,
                    cfg={"train.optimizer.lr": lr, "train.batch_size": bs},
                )
                i += 1


KEY = {"kind": "strongest_key", "a": {"experiment": "a"}, "key": "train.optimizer.lr", "high": 0.1, "low": 0.01}


def test_strongest_key(tmp_path, out):
    _two_keys(out, lr_effect=0.2, bs_effect=0.02)
    assert verdict(tmp_path, KEY) == AGREE
    assert verdict(tmp_path, {**KEY, "high": 0.01, "low": 0.1}) == DISAGREE  # the reverse direction


def test_strongest_key_disagrees_when_another_key_moves_more(tmp_path, out):
    _two_keys(out, lr_effect=0.02, bs_effect=0.2)
    assert verdict(tmp_path, KEY) == DISAGREE


def test_strongest_key_on_few_images_is_not_evidence(tmp_path, out):
    _two_keys(out, lr_effect=0.05, bs_effect=0.03, n=200)
    assert verdict(tmp_path, KEY) == UNSURE


def test_strongest_key_does_not_favour_a_key_with_more_values():
    from convlens.study.check import _spread
    from convlens.study.stats import Obs

    two = {"a": Obs(values=[0.5]), "b": Obs(values=[0.6])}
    three = {"a": Obs(values=[0.5]), "b": Obs(values=[0.6]), "c": Obs(values=[0.55])}
    assert _spread(two) == pytest.approx(0.1)  # |a - b| for two values
    assert _spread(three) == pytest.approx(0.07071, rel=1e-3)  # not the range (0.1)


def test_diagnose_has_collapse(tmp_path, out):
    fake_run(out / "a", 0.10, sink={i: 0 for i in range(10)}, per_class=[1.0] + [0.0] * 9)
    fake_run(out / "b", 0.80)
    collapse = {"kind": "diagnose_has", "code": "collapsed"}
    assert verdict(tmp_path, {**collapse, "a": {"experiment": "a"}}) == AGREE
    assert verdict(tmp_path, {**collapse, "a": {"experiment": "b"}}) == DISAGREE
    Layout(out / "a").eval_file.unlink()
    assert verdict(tmp_path, {**collapse, "a": {"experiment": "a"}}) == UNSURE  # never tested


PER_CLASS = {"kind": "per_class", "a": {"experiment": "a"}, "classes": ["ship", "truck"], "against": ["cat", "dog"]}
GOOD = [0.8, 0.8, 0.6, 0.5, 0.7, 0.55, 0.8, 0.8, 0.9, 0.88]


def test_per_class(tmp_path, out):
    fake_run(out / "a", 0.73, per_class=GOOD)
    assert verdict(tmp_path, PER_CLASS) == AGREE
    assert verdict(tmp_path, {**PER_CLASS, "classes": ["cat", "dog"], "against": ["ship", "truck"]}) == DISAGREE


def test_per_class_few_images_or_at_chance_is_not_evidence(tmp_path, out):
    close = [0.8, 0.8, 0.6, 0.6, 0.7, 0.6, 0.8, 0.8, 0.7, 0.7]  # 10 points apart on 10 images per class
    fake_run(out / "a", 0.71, n=100, per_class=close)
    assert verdict(tmp_path, PER_CLASS) == UNSURE
    fake_run(out / "b", 0.11, per_class=[0.11] * 10)
    assert verdict(tmp_path, {**PER_CLASS, "a": {"experiment": "b"}}) == UNSURE


def test_per_class_between_runs(tmp_path, out):
    fake_run(out / "a", 0.8, per_class=[0.8] * 3 + [0.7] + [0.8] * 6)
    fake_run(out / "b", 0.8, per_class=[0.8] * 3 + [0.5] + [0.8] * 6)
    cat = {"kind": "per_class", "a": {"experiment": "a"}, "b": {"experiment": "b"}, "classes": ["cat"]}
    assert verdict(tmp_path, cat) == AGREE
    assert verdict(tmp_path, {**cat, "expect": "less"}) == DISAGREE


CAT_DOG = {"kind": "confusion", "a": {"experiment": "a"}, "mode": "top_pair", "pair": ["cat", "dog"]}


def test_confusion_top_pair(tmp_path, out):
    fake_run(out / "a", 0.8, sink={3: 5, 5: 3, 0: 2})  # cats <-> dogs (400), planes -> birds (200)
    assert verdict(tmp_path, CAT_DOG) == AGREE
    assert verdict(tmp_path, {**CAT_DOG, "pair": ["airplane", "bird"]}) == DISAGREE
    cross = {**CAT_DOG, "mode": "top_cross_pair", "pair": ["airplane", "bird"]}
    assert verdict(tmp_path, cross) == AGREE  # cat-dog is no cross pair


def test_confusion_few_images_or_collapsed_is_not_evidence(tmp_path, out):
    fake_run(out / "a", 0.8, n=100, sink={3: 5, 5: 3, 0: 2})  # 2 cat-dog errors against 2 plane-bird
    assert verdict(tmp_path, CAT_DOG) == UNSURE
    fake_run(out / "b", 0.1, per_class=[1.0] + [0.0] * 9, sink={i: 0 for i in range(10)})
    within = {"kind": "confusion", "a": {"experiment": "b"}, "mode": "within_groups"}
    assert verdict(tmp_path, within) == UNSURE  # a collapsed network: no evidence either way


def test_confusion_within_groups(tmp_path, out):
    animals_to_animals = {i: (i + 1 if i < 7 else 2) for i in range(2, 8)} | {0: 1, 1: 8, 8: 9, 9: 0}
    fake_run(out / "a", 0.8, sink=animals_to_animals)
    within = {"kind": "confusion", "a": {"experiment": "a"}, "mode": "within_groups"}
    assert verdict(tmp_path, within) == AGREE
    cross = {i: 0 for i in range(2, 8)} | {0: 2, 1: 3, 8: 4, 9: 5}
    fake_run(out / "b", 0.8, sink=cross)
    assert verdict(tmp_path, {**within, "a": {"experiment": "b"}}) == DISAGREE


def _layers(**layers) -> dict:
    return {"layers": layers}


STAT = {"kind": "layer_stat", "a": {"experiment": "a"}, "analysis": "classnorms", "field": "cv"}


def test_layer_stat_ratio_of_two_layers(tmp_path, out):
    doc = _layers(conv1={"cv": [0.1, 0.1, 0.9], "quiet": [2]}, conv5={"cv": [0.3, 0.4, 0.5]})
    fake_run(out / "a", 0.7, analyses={"classnorms": doc})
    check = {**STAT, "reduce": "median", "layer": "conv5", "compare_layer": "conv1", "expect": "greater"}
    assert verdict(tmp_path, {**check, "value": 3}) == AGREE  # 0.4 / 0.1 (the quiet filter left out)
    assert verdict(tmp_path, {**check, "value": 5}) == DISAGREE


def test_layer_stat_untrained_or_missing_is_not_evidence(tmp_path, out):
    doc = _layers(conv1={"cv": [0.1, 0.1]}, conv5={"cv": [0.4, 0.4]})
    fake_run(out / "a", 0.10, analyses={"classnorms": doc})  # at chance: an untrained network
    check = {**STAT, "reduce": "median", "layer": "conv5", "compare_layer": "conv1", "expect": "greater", "value": 3}
    assert verdict(tmp_path, check) == UNSURE
    fake_run(out / "b", 0.7)  # trained, but never analysed
    assert verdict(tmp_path, {**check, "a": {"experiment": "b"}}) == UNSURE


def test_layer_stat_counts_dead_filters(tmp_path, out):
    fake_run(out / "a", 0.7, analyses={"stats": _layers(conv1={"dead": [8, 11, 13]})})
    fake_run(out / "b", 0.7, analyses={"stats": _layers(conv1={"dead": []})})
    dead = {"kind": "layer_stat", "analysis": "stats", "field": "dead", "reduce": "count", "layer": "conv1"}
    dead.update(expect="greater", value=0.5)
    assert verdict(tmp_path, {**dead, "a": {"experiment": "a"}}) == AGREE
    assert verdict(tmp_path, {**dead, "a": {"experiment": "b"}}) == DISAGREE


def test_layer_stat_topk_shares_and_spread(tmp_path, out):
    hist = lambda top: {"class_histogram": [top] + [(20 - top) // 9] * 9, "mean": 1.0}  # noqa: E731
    doc = _layers(conv1=dict(filters=[hist(3), hist(2)]), conv5=dict(filters=[hist(11), hist(2)]))
    fake_run(out / "a", 0.7, analyses={"topk": doc})
    share = {"kind": "layer_stat", "a": {"experiment": "a"}, "analysis": "topk", "field": "top_share"}
    share.update(reduce="max", layer="conv5", expect="greater", value=0.45)
    assert verdict(tmp_path, share) == AGREE
    assert verdict(tmp_path, {**share, "layer": "conv1"}) == DISAGREE


CLASS_PREF = {
    "kind": "class_preference",
    "a": {"experiment": "a"},
    "layer": "conv1",
    "classes": ["airplane", "truck"],
    "against": ["cat", "dog"],
    "tolerance": 0.01,
}


def test_class_preference(tmp_path, out):
    means = [[1.2, 1, 1, 0.9, 1, 0.9, 1, 1, 1, 1.2], [1.1, 1, 1, 1, 1, 1, 1, 1, 1, 1.1]]
    fake_run(out / "a", 0.7, analyses={"classnorms": _layers(conv1={"class_means": means, "quiet": []})})
    assert verdict(tmp_path, CLASS_PREF) == AGREE
    assert verdict(tmp_path, {**CLASS_PREF, "classes": ["cat", "dog"], "against": ["airplane", "truck"]}) == DISAGREE
    assert verdict(tmp_path, {**CLASS_PREF, "layer": "conv9"}) == UNSURE


def test_topk_class(tmp_path, out):
    filt = {"class_histogram": [3, 1, 1, 0, 0, 0, 0, 0, 0, 0]}
    fake_run(out / "a", 0.7, analyses={"topk": _layers(conv1={"filters": [filt] * 16})})
    check = {"kind": "topk_class", "a": {"experiment": "a"}, "layer": "conv1", "classes": ["airplane"]}
    assert verdict(tmp_path, check) == AGREE
    assert verdict(tmp_path, {**check, "classes": ["bird"]}) == DISAGREE
    fake_run(out / "b", 0.7, analyses={"topk": _layers(conv1={"filters": [filt]})})  # 5 images: 3 against 1
    assert verdict(tmp_path, {**check, "a": {"experiment": "b"}}) == UNSURE


def _ablate(before: list[float], after: list[float], sink_after: dict[int, int] | None = None) -> dict:
    cb, ca = confusion(before, 1000), confusion(after, 1000, sink_after)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    side = lambda acc, cm: {"accuracy": mean(acc), "per_class_accuracy": acc, "confusion": cm}  # noqa: E731
    diff = [[x - y for x, y in zip(p, q)] for p, q in zip(ca, cb)]
    return {"classes": CLASSES, "set": {"filters": {"conv1": [0, 1]}, "before": side(before, cb),
                                        "after": side(after, ca), "diff": {"confusion": diff}}}  # fmt: skip


ABL = {"kind": "ablation", "a": {"experiment": "a"}}


def test_ablation_modes(tmp_path, out):
    before = [0.9] * 10
    after = [0.8, 0.9, 0.95, 0.95, 0.9, 0.9, 0.9, 0.9, 0.7, 0.85]  # vehicles lose, bird and cat gain
    vehicles_to_animals = {0: 2, 1: 3, 8: 4, 9: 5}
    fake_run(out / "a", 0.9, analyses={"ablate": _ablate(before, after, vehicles_to_animals)})
    fake_run(out / "b", 0.9, analyses={"ablate": _ablate(after, before)})  # the reverse: built to contradict
    for mode in ("overall_drop", "vehicles_vs_animals", "vehicles_to_animals"):
        assert verdict(tmp_path, {**ABL, "mode": mode}) == AGREE, mode
        assert verdict(tmp_path, {**ABL, "a": {"experiment": "b"}, "mode": mode}) == DISAGREE, mode
    assert verdict(tmp_path, {**ABL, "mode": "some_class_gains"}) == AGREE


def test_ablation_small_or_missing_is_not_evidence(tmp_path, out):
    fake_run(out / "a", 0.9, analyses={"ablate": _ablate([0.9] * 10, [0.9] * 9 + [0.89])})
    assert verdict(tmp_path, {**ABL, "mode": "overall_drop"}) == UNSURE  # 0.1 points
    fake_run(out / "b", 0.9)
    assert verdict(tmp_path, {**ABL, "a": {"experiment": "b"}, "mode": "pair_rises", "pair": ["cat", "dog"]}) == UNSURE


def test_receptive_field(tmp_path, out):
    fake_run(out / "a", 0.7)
    from convlens.models import build_model
    from convlens.models.summary import receptive_fields
    from convlens.run import Run

    run = Run(out / "a")
    convs = [n for n, m in build_model(run.config.model, (3, 8, 8), 10).named_modules() if type(m).__name__ == "Conv2d"]
    sizes = receptive_fields(build_model(run.config.model, (3, 8, 8), 10), (3, 8, 8))
    right = [sizes[n].size for n in convs]
    rf = {"kind": "receptive_field", "a": {"experiment": "a"}, "layers": convs}
    assert verdict(tmp_path, {**rf, "values": right}) == AGREE
    assert verdict(tmp_path, {**rf, "values": [v + 1 for v in right]}) == DISAGREE
    assert verdict(tmp_path, {**rf, "a": {"experiment": "b"}, "values": right}) == UNSURE


def test_not_checkable_needs_a_reason(tmp_path):
    (v,) = check_study(
        load_study(study(tmp_path, [{"id": "n", "report_says": "x", "kind": "not_checkable", "reason": "by eye"}])),
        tmp_path / "out",
    )
    assert v.verdict == "not checkable" and v.check == "not checkable: by eye"
    with pytest.raises(StudyError, match="kind not_checkable needs reason"):
        load_study(study(tmp_path, [{"id": "n", "report_says": "x", "kind": "not_checkable"}]))
    with pytest.raises(StudyError, match="expect similar needs a tolerance"):
        load_study(study(tmp_path, [{"id": "s", "report_says": "x", **A_VS_B, "expect": "similar"}]))


def test_a_check_is_judged_only_at_its_budgets(tmp_path, out):
    seeds(out / "a", [0.80, 0.82])
    seeds(out / "b", [0.70, 0.72])
    gated = {**A_VS_B, "expect": "less", "budgets": ["full"]}
    assert verdict(tmp_path, gated) == UNSURE  # would disagree, but the runs are medium's
    assert verdict(tmp_path, {**gated, "budgets": ["medium"]}) == DISAGREE


def test_a_partly_run_grid_is_judged_on_matched_runs_only(tmp_path, out):
    folder = study(tmp_path, [])
    sweep = {"name": "g", "base": "a.yaml", "method": "grid"}
    sweep["params"] = {"train.optimizer.lr": [0.1, 0.01, 0.001], "train.batch_size": [16, 32]}
    (folder / "g.yaml").write_text(yaml.safe_dump(sweep))
    doc = yaml.safe_load((folder / "study.yaml").read_text())
    doc["experiments"].append({"id": "g", "file": "g.yaml"})
    best = {
        "id": "best",
        "report_says": "x",
        "kind": "best_point",
        "a": {"experiment": "g", "where": {"train.optimizer.lr": 0.1, "train.batch_size": 16}},
    }
    cmp = {"id": "cmp", "report_says": "x", "kind": "compare_means", "expect": "greater"}
    cmp["a"], cmp["b"] = ({"experiment": "g", "where": {"train.batch_size": b}} for b in (16, 32))
    doc["findings"] = [best, cmp]
    (folder / "study.yaml").write_text(yaml.safe_dump(doc))
    # lr 0.1 at both batch sizes, lr 0.01 at batch 16 only (a partly run grid)
    for i, (lr, bs, acc) in enumerate([(0.1, 16, 0.8), (0.1, 32, 0.8), (0.01, 16, 0.3)]):
        fake_run(out / "g" / "trials" / str(i), acc, cfg={"train.optimizer.lr": lr, "train.batch_size": bs})
    vb, vc = check_study(load_study(folder), out)
    assert vb.verdict == UNSURE and "3 of the grid's 6 points" in vb.obtained
    # unmatched, batch 16 (mean of 0.8 and 0.3) would lose to 32 (0.8); matched on lr 0.1 they tie
    assert (
        vc.verdict == UNSURE
        and vc.numbers["a"] == pytest.approx(0.8)
        and "1 run(s) without a counterpart" in vc.obtained
    )


def test_confusion_top_cross_pair_disagrees_on_another_cross_pair(tmp_path, out):
    fake_run(out / "a", 0.8, sink={8: 4, 4: 8, 0: 2})  # ship <-> deer (400) above plane -> bird (200)
    cross = {**CAT_DOG, "mode": "top_cross_pair", "pair": ["airplane", "bird"]}
    assert verdict(tmp_path, cross) == DISAGREE
    assert verdict(tmp_path, {**cross, "pair": ["deer", "ship"]}) == AGREE


def test_ablation_class_gains_and_pair_confusions(tmp_path, out):
    same = [0.9] * 10
    worse = [0.9, 0.9, 0.9, 0.6, 0.9, 0.6, 0.9, 0.9, 0.9, 0.9]  # cats and dogs lost to each other
    fake_run(out / "a", 0.9, analyses={"ablate": _ablate(same, worse, {3: 5, 5: 3})})
    fake_run(out / "b", 0.9, analyses={"ablate": _ablate(worse, same, None)})
    pair = {**ABL, "mode": "pair_rises", "pair": ["cat", "dog"]}
    assert verdict(tmp_path, pair) == AGREE
    assert verdict(tmp_path, {**pair, "a": {"experiment": "b"}}) == DISAGREE
    gains = {**ABL, "mode": "some_class_gains"}
    assert verdict(tmp_path, gains) == UNSURE  # eight classes keep their accuracy: no gain shown
    assert verdict(tmp_path, {**gains, "a": {"experiment": "b"}}) == AGREE
    shutil.rmtree(out / "b")
    fake_run(out / "b", 0.9, analyses={"ablate": _ablate(same, [0.8] * 10)})  # every class loses
    assert verdict(tmp_path, {**gains, "a": {"experiment": "b"}}) == DISAGREE


def test_runs_at_chance_are_no_evidence_for_comparisons_and_bounds(tmp_path, out):
    seeds(out / "a", [0.101, 0.099, 0.100])  # untrained: any two settings look "similar"
    seeds(out / "b", [0.100, 0.101, 0.099])
    assert verdict(tmp_path, {**A_VS_B, "expect": "similar", "tolerance": 0.02}) == UNSURE
    shutil.rmtree(out / "b")
    seeds(out / "b", [0.60, 0.61, 0.62])  # one side learned: a real comparison
    assert verdict(tmp_path, {**A_VS_B, "expect": "less"}) == AGREE
    rise = {"kind": "magnitude", "a": {"experiment": "a"}, "metric": "val_acc_rise", "expect": "greater", "value": 0}
    shutil.rmtree(out / "a")
    seeds(out / "a", [0.10, 0.10, 0.10], val=[0.09, 0.10, 0.11])  # a rise at chance is jitter
    assert verdict(tmp_path, rise) == UNSURE
    shutil.rmtree(out / "a")
    seeds(out / "a", [0.60, 0.61, 0.62], val=[0.40, 0.50, 0.60])  # built to agree: it learned
    assert verdict(tmp_path, rise) == AGREE
