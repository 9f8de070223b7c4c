"""A limited split is stratified and says so; statistics of absent classes are null, not 0."""

from __future__ import annotations

import json

import pytest
import torch
from analyses_models import fit_head, one_thread, random_net, random_split, subject  # noqa: F401
from conftest import tiny_config

from convlens.analyses import Ablate, ClassNorms, Errors, Subject
from convlens.analyses.base import stratified


def test_stratified_takes_every_class_in_turn_from_a_class_sorted_split():
    labels = torch.arange(10).repeat_interleave(100)  # stored in class order, as CIFAR's test split
    pos = stratified(labels, 25)
    assert pos == sorted(pos) and len(pos) == 25
    counts = torch.bincount(labels[pos], minlength=10)
    assert counts.tolist() == [3] * 5 + [2] * 5  # the first images of each class, in turn
    assert pos[:3] == [0, 1, 2] and 100 in pos and 900 in pos
    assert stratified(labels, 5000) == list(range(1000))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from convlens.train import train

    out = tmp_path_factory.mktemp("runs") / "digits"
    train(tiny_config(**{"train.epochs": 1, "train.threads": 1}), out, echo=lambda m: None)
    return out


def test_limit_is_stratified_and_recorded_in_the_json_and_captions(digits_run, monkeypatch):
    import convlens.data as data

    load = data.load_data

    def class_sorted(cfg):  # the test split stored in class order
        b = load(cfg)
        b.test = b.test.take(torch.argsort(b.test.labels, stable=True))
        return b

    monkeypatch.setattr(data, "load_data", class_sorted)
    s = Subject.from_run(digits_run, "test", limit=30, progress=False)
    assert torch.bincount(s.split.labels, minlength=10).tolist() == [3] * 10
    assert s.subset["how"] == "stratified" and s.subset["n"] == 30 and s.subset["per_class"] == [3] * 10
    out = ClassNorms(layers=["conv1"], bars=[])(s)
    assert out["subset"] == s.subset
    assert all(x is not None for x in out["layers"]["conv1"]["selectivity"])
    saved = json.loads((digits_run / "analysis" / "classnorms-conv1.json").read_text())  # keyed by its layers
    assert saved["subset"]["how"] == "stratified" and saved["n_images"] == 30
    assert saved["figures"] and all("stratified subset: 30 of" in f["caption"] for f in saved["figures"])
    whole = Subject.from_run(digits_run, "test", progress=False)
    assert whole.subset is None and ClassNorms(layers=["conv1"], bars=[])(whole)["subset"] is None


def one_class_split(n: int = 12):
    split = random_split(4 * n)
    return split.take(torch.nonzero(split.labels == 2).flatten())  # only class "y" of w, x, y, z


def test_class_statistics_need_two_classes_and_absent_classes_are_null():
    model = random_net()
    out = ClassNorms(layers=["conv1", "conv2"])(subject(model, one_class_split()))
    for info in out["layers"].values():
        assert all(v is None or v != v for v in info["selectivity"] + info["variance"] + info["cv"])
        assert info["preferred_class"] == [None] * info["channels"]
        assert all(row[0] != row[0] and row[2] == row[2] for row in info["class_means"])  # absent: NaN (null in JSON)
    assert out["experts"] == []
    two = random_split(40)
    two = two.take(torch.nonzero(two.labels < 2).flatten())
    info = ClassNorms(layers=["conv1"])(subject(model, two, ["w", "x", "y", "z"]))["layers"]["conv1"]
    assert all(v is not None and v == v for v in info["selectivity"])


def test_accuracy_of_an_absent_class_is_null_not_zero():
    split = random_split(40)
    model = fit_head(random_net(), split)
    part = split.take(torch.nonzero(split.labels < 2).flatten())  # classes w and x only
    classes = ["w", "x", "y", "z"]
    err = Errors(examples=2, mistakes=2)(subject(model, part, classes))
    assert err["per_class_accuracy"][2:] == [None, None] and all(v is not None for v in err["per_class_accuracy"][:2])
    ab = Ablate(filters="conv2:0,1")(subject(model, part, classes))
    for when in ("before", "after"):
        assert ab["set"][when]["per_class_accuracy"][2:] == [None, None]
    assert ab["set"]["diff"]["per_class_accuracy"][2:] == [None, None]
    for row in ab["rank"]["conv2"]["per_class_drop"]:
        assert row[2:] == [None, None] and all(v is not None for v in row[:2])
