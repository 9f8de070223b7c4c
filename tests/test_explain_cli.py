"""`convlens explain RUN --method NAME` on a tiny run trained on the bundled digits."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config

from convlens.cli import main
from convlens.explain import METHODS
from convlens.explain.cli import METHOD_NAMES
from convlens.jobs import JOBS
from convlens.run import Layout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from convlens.train import train

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("explain") / "run"
    train(tiny_config(**{"train.threads": 1}), path, echo=lambda s: None)
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _json(run_dir, name, key=None):
    """The artifact of ``name`` for ``key`` (layer and targets asked for; None: the defaults)."""
    return json.loads(Layout(run_dir).artifact(name, key).json.read_text())


def _check_contract(run_dir, d, name, key=None):
    assert d["analysis"] == name and "params" in d and d["figures"]
    for fig in d["figures"]:
        assert (run_dir / fig["path"]).is_file() and fig["caption"]
    assert Layout(run_dir).artifact(name, key).npz.is_file()
    assert d["arrays"] == Layout(run_dir).artifact(name, key).rel(Layout(run_dir).artifact(name, key).npz)


def test_method_names_match_the_registry():
    assert sorted(METHOD_NAMES) == sorted(METHODS) == sorted(n for n, j in JOBS.items() if j.kind == "method")


def test_occlusion_several_windows(run_dir, capsys):
    assert (
        main(["explain", str(run_dir), "--method", "occlusion", "--window", "2,4", "--stride", "1", "--images", "0,5"])
        == 0
    )
    d = _json(run_dir, "occlusion")
    _check_contract(run_dir, d, "occlusion")
    assert d["params"]["map_shapes"] == {"2": [7, 7], "4": [5, 5]} and d["split"] == "test"
    assert [i["index"] for i in d["images"]] == [0, 5]
    assert {f["path"] for f in d["figures"]} == {"analysis/occlusion/test0.png", "analysis/occlusion/test5.png"}
    assert "incremental" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["saliency", "guided", "deconv", "gradcam"])
def test_per_image_methods(run_dir, method):
    assert main(["explain", str(run_dir), "--method", method, "--images", "1,2,3"]) == 0
    d = _json(run_dir, method)
    _check_contract(run_dir, d, method)
    assert len(d["images"]) == 3 and all("target" in i for i in d["images"])
    assert "scale" in d["figures"][0]["caption"]  # the normalisation is stated


def test_default_images_are_one_per_class(run_dir):
    assert main(["explain", str(run_dir), "--method", "saliency", "--samples", "2"]) == 0
    d = _json(run_dir, "saliency")
    assert sorted(i["label"] for i in d["images"]) == list(range(10))


def test_deconv_of_a_filter_names_its_figure_by_layer_and_filter(run_dir):
    assert (
        main(
            ["explain", str(run_dir), "--method", "deconv", "--layers", "conv2", "--filters", "1,3", "--images", "0,4"]
        )
        == 0
    )
    d = _json(run_dir, "deconv", "conv2-f1_3")
    assert [(f["layer"], f["filter"], f["path"]) for f in d["figures"]] == [
        ("conv2", 1, "analysis/deconv-conv2-f1_3/conv2/f1.png"),
        ("conv2", 3, "analysis/deconv-conv2-f1_3/conv2/f3.png"),
    ]
    assert len(d["images"][0]["projections"]) == 2


def test_actmax_writes_one_image_per_filter(run_dir):
    assert main(["explain", str(run_dir), "--method", "actmax", "--layers", "conv2", "--steps", "6"]) == 0
    d = _json(run_dir, "actmax", "conv2")
    _check_contract(run_dir, d, "actmax", "conv2")
    per_filter = [f for f in d["figures"] if "filter" in f]
    assert [f["filter"] for f in per_filter] == list(range(8))  # width 4 x multiplier 2
    assert all(
        f["path"] == f"analysis/actmax-conv2/conv2/f{f['filter']}.png" and f["layer"] == "conv2" for f in per_filter
    )
    assert d["params"]["decorrelate"] and len(d["params"]["colour_covariance"]) == 1  # grayscale: 1x1
    assert all(t["final"] > t["initial"] for t in d["targets"])
    # the objective reached is stated against the best test image's value, in JSON and captions
    assert d["params"]["param"] == "pixel" and d["params"]["lr"] == 0.5
    for t, f in zip(d["targets"], per_filter):
        best = t["best_image"]
        assert best["split"] == "test" and best["value"] is not None and 0 <= best["position"]
        assert f"best test image {best['value']:.3g}" in f["caption"]
        assert t["dead"] is False and isinstance(t["converged"], bool) and len(t["top"]) == 9
        assert -1 <= t["agrees_with_top"] <= 1
    assert (
        main(["explain", str(run_dir), "--method", "actmax", "--steps", "3", "--filters", "2", "--param", "fourier"])
        == 0
    )
    d = _json(run_dir, "actmax", "f2")
    assert d["params"]["target_kind"] == "class" and d["figures"][0]["path"] == "analysis/actmax-f2/fc1/f2.png"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "occlusion", "--window", "9"], "window 9 does not fit the 8x8 image; allowed: 1 to 8"),
        (["--method", "occlusion", "--stride", "0", "--window", "2"], "stride 0 is out of range; allowed: 1 to 8"),
        (
            ["--method", "deconv", "--layers", "conv2", "--filters", "8"],
            "filter 8 is out of range for layer 'conv2', which has 8 channels; allowed: 0 to 7",
        ),
        (["--method", "actmax", "--layers", "conv9"], "no layer 'conv9'"),
        (
            ["--method", "saliency", "--images", "100000"],
            "image 100000 is out of range for the test split; allowed: 0 to",
        ),
    ],
)
def test_bad_input_is_reported_without_a_traceback(run_dir, capsys, args, message):
    assert main(["explain", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_occlusion_default_windows_fit_small_images(run_dir):
    # digits are 8x8: of the default patch sizes 4, 8 and 12 only 4 fits in half the side
    assert main(["explain", str(run_dir), "--method", "occlusion", "--images", "0"]) == 0
    assert list(_json(run_dir, "occlusion")["params"]["map_shapes"]) == ["4"]
    from convlens.explain.outputs import default_windows

    assert default_windows(32) == [4, 8, 12] and default_windows(16) == [4, 8] and default_windows(6) == [1, 3]


def test_a_rerun_replaces_its_own_figures_keeps_other_targets_and_a_failed_one_keeps_them(run_dir, monkeypatch):
    from convlens.explain.base import ExplainError

    args = ["explain", str(run_dir), "--method", "deconv", "--layers", "conv2", "--images", "0", "--filters"]
    assert main([*args, "0,2"]) == 0
    folder = Layout(run_dir).artifact("deconv", "conv2-f0_2").folder
    (folder / "conv2" / "f5.png").write_bytes(b"")  # a figure the rerun does not draw
    assert main([*args, "0,2"]) == 0
    assert sorted(p.name for p in (folder / "conv2").iterdir()) == ["f0.png", "f2.png"]  # nothing stale
    assert main([*args, "1"]) == 0  # other targets: another artifact, this one stays
    other = Layout(run_dir).artifact("deconv", "conv2-f1").folder
    assert sorted(p.name for p in (other / "conv2").iterdir()) == ["f1.png"]
    assert sorted(p.name for p in (folder / "conv2").iterdir()) == ["f0.png", "f2.png"]

    def fail(*_, **__):
        raise ExplainError("failed half way")

    monkeypatch.setattr(METHODS["deconv"], "attribute", fail)
    assert main([*args, "0,2"]) != 0
    assert sorted(p.name for p in (folder / "conv2").iterdir()) == ["f0.png", "f2.png"]  # the failed rerun kept them
    assert not any(p.name.endswith(".previous") for p in (run_dir / "analysis").iterdir())


def test_two_actmax_runs_with_different_targets_both_survive(run_dir):
    from convlens.report import build_report

    assert main(["explain", str(run_dir), "--method", "actmax", "--steps", "2"]) == 0  # the class logits
    assert main(["explain", str(run_dir), "--method", "actmax", "--layers", "conv1", "--steps", "2"]) == 0
    logits, conv1 = _json(run_dir, "actmax"), _json(run_dir, "actmax", "conv1")
    assert logits["params"]["target_kind"] == "class" and len(logits["targets"]) == 10
    assert conv1["params"]["layer"] == "conv1" and len(conv1["targets"]) == 4
    for d in (logits, conv1):
        assert all((run_dir / f["path"]).is_file() for f in d["figures"])
    html = build_report(run_dir).read_text()
    assert 'id="analysis-actmax"' in html and 'id="analysis-actmax-conv1"' in html
    # a stale keyed artifact is refreshed by asking for the same targets again
    from convlens.report.checkpoints import Checkpoints
    from convlens.run import Run

    run = Run(run_dir)
    assert main(["explain", str(run_dir), "--method", "actmax", "--filters", "2", "--steps", "1"]) == 0
    assert (
        main(["explain", str(run_dir), "--method", "actmax", "--layers", "conv2", "--filters", "0,1", "--steps", "1"])
        == 0
    )
    stale = (("conv1", " --layers conv1"), ("f2", " --filters 2"), ("conv2-f0-1", " --layers conv2 --filters 0,1"))
    for key, flags in stale:
        doc = {**_json(run_dir, "actmax", key), "checkpoint_sha256": "000000000000"}
        prov = Checkpoints(run).of_analysis("actmax", doc, run.artifact("actmax", key).json)
        assert f"--method actmax{flags}`" in " ".join(prov.alerts), (key, prov.alerts)


def test_a_rerun_for_other_images_says_it_replaces_the_earlier_result(run_dir, capsys):
    assert main(["explain", str(run_dir), "--method", "saliency", "--images", "4,5,6"]) == 0
    capsys.readouterr()  # (an earlier test may have explained other images)
    assert main(["explain", str(run_dir), "--method", "saliency", "--images", "4,5,6"]) == 0  # the same: quiet
    assert "warning" not in capsys.readouterr().err
    assert main(["explain", str(run_dir), "--method", "saliency", "--images", "0"]) == 0
    err = capsys.readouterr().err
    assert "warning: analysis/saliency.json explained test images 4, 5, 6; it now explains test images 0" in err
    assert [d["index"] for d in _json(run_dir, "saliency")["images"]] == [0]
