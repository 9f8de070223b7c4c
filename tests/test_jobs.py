"""Analyses and explanation methods are jobs of one registry, with one command-line generator:
the same flags and list syntax in `analyze` and `explain`, defaults from the options classes,
`--help` without torch, and one way to borrow a model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from torch import nn

from convlens.cli import main
from convlens.jobs import JOBS, filter_spec, jobs
from convlens.trace import borrowed, hook_count

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from convlens.train import train

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("jobs") / "run"
    train(tiny_config(**{"train.threads": 1}), path, echo=lambda s: None)
    return path


def _json(run_dir, name):
    return json.loads((run_dir / "analysis" / f"{name}.json").read_text())


# ----------------------------------------------------------------------------------------------
# one registry


def test_one_registry_holds_every_analysis_and_method():
    from convlens.analyses import ANALYSES
    from convlens.explain import METHODS

    assert (
        list(ANALYSES)
        == list(jobs("analysis"))
        == ["filters", "featuremaps", "stats", "classnorms", "topk", "ablate", "atlas", "faithfulness", "errors"]
    )
    methods = ["actmax", "concepts", "deconv", "gradcam", "guided", "occlusion", "saliency"]
    assert sorted(METHODS) == sorted(jobs("method")) == methods
    for name, job in JOBS.items():
        impl = job.load()
        assert issubclass(impl, job.options) or name in METHODS, name  # analyses inherit their options
        assert impl.name == name


def test_defaults_come_from_the_options_class():
    from convlens.explain.occlusion import Occlusion
    from convlens.explain.options import OcclusionOptions
    from convlens.explain.outputs import default_stride

    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    m(torch.zeros(1, 1, 8, 8))
    # the CLI leaves the stride to the writer, which sizes it by the image; the class agrees at 8 px
    assert OcclusionOptions().stride is None and Occlusion(m, 4).stride == default_stride(8) == 2


def test_filter_specs_plain_and_per_layer():
    assert filter_spec("0,3,5-7") == [0, 3, 5, 6, 7]
    assert filter_spec("conv1:0,1 conv3:5-7") == {"conv1": [0, 1], "conv3": [5, 6, 7]}
    assert filter_spec("-1") == [-1]  # the layer refuses it, naming its range


# ----------------------------------------------------------------------------------------------
# --help without torch


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["analyze", "--help"],
        ["explain", "--help"],
        ["sweep", "--help"],
        ["report", "--help"],
        ["diagnose", "--help"],
        ["train", "--help"],
    ],
)
def test_help_does_not_import_torch(argv):
    code = (
        "import sys\nfrom convlens.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
        "print(sorted(m for m in ('sklearn', 'scipy', 'matplotlib', 'numpy') if m in sys.modules))" % argv
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines()[-2:] == ["NO-TORCH", "[]"], out[-500:]


def test_explain_help_lists_the_shared_flags_and_every_methods_options(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--images",
        "--layers",
        "--filters",
        "--device",
        "--batch-size",
        "--split",
        "--checkpoint",
        "--verbose",
        "--window",
        "--steps",
        "--samples",
    ):
        assert flag in text, flag
    assert "[occlusion] patch step in pixels (default: 2 per 32 pixels of image side, 14 at 224 px)" in " ".join(
        text.split()
    )


# ----------------------------------------------------------------------------------------------
# the same flags in both commands


def test_analyze_and_explain_take_the_same_images_and_layers(run_dir, capsys):
    same = ["--images", "0,1", "--layers", "conv1"]
    assert main(["analyze", str(run_dir), "--only", "featuremaps", *same]) == 0
    fm = _json(run_dir, "featuremaps-conv1")  # both keyed alike by their layers
    assert fm["params"]["images"] == [0, 1] and fm["params"]["layers"] == ["conv1"]
    assert main(["explain", str(run_dir), "--method", "gradcam", *same]) == 0
    cam = _json(run_dir, "gradcam-conv1")
    assert [i["index"] for i in cam["images"]] == [0, 1] and cam["params"]["layer"] == "conv1"


def test_several_methods_in_one_call(run_dir):
    for name in ("saliency", "guided"):
        (run_dir / "analysis" / f"{name}.json").unlink(missing_ok=True)
    assert main(["explain", str(run_dir), "--method", "saliency,guided", "--images", "2,3", "--target", "true"]) == 0
    for name in ("saliency", "guided"):
        d = _json(run_dir, name)
        assert [i["index"] for i in d["images"]] == [2, 3] and d["params"]["target"] == "true"


def test_space_separated_lists_and_old_flag_spellings_still_work(run_dir):
    assert (
        main(
            [
                "explain",
                str(run_dir),
                "--method",
                "deconv",
                "--layer",
                "conv2",
                "--filter",
                "1",
                "3",
                "--images",
                "0",
                "4",
            ]
        )
        == 0
    )
    d = _json(run_dir, "deconv-conv2-f1_3")
    assert [(f["layer"], f["filter"]) for f in d["figures"]] == [("conv2", 1), ("conv2", 3)]
    assert [i["index"] for i in d["images"]] == [0, 4]


def test_an_option_no_selected_method_takes_is_one_error(run_dir, capsys):
    assert main(["explain", str(run_dir), "--method", "gradcam", "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "steps is an option of actmax" in err


def test_analyze_batch_size_and_device_flags(run_dir):
    args = ["--only", "stats", "--batch-size", "7", "--device", "cpu", "--limit", "20"]
    assert main(["analyze", str(run_dir), *args]) == 0
    assert _json(run_dir, "stats")["n_images"] == 20


def test_verbose_prints_the_start_up_breakdown(run_dir, capsys):
    assert main(["explain", str(run_dir), "--method", "saliency", "--images", "0", "--verbose"]) == 0
    out = capsys.readouterr().out
    steps = [line.split()[1] for line in out.splitlines() if line.startswith("start-up: ")]
    assert steps == ["imports", "model", "data"], out  # data is loaded inside the method's writer
    assert main(["analyze", str(run_dir), "--only", "stats", "--limit", "20", "--no-figures", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert [line.split(" s ")[0].rsplit(" ", 1)[0] for line in out.splitlines() if line.startswith("start-up: ")] == [
        "start-up: imports",
        "start-up: data and model",
    ], out


# ----------------------------------------------------------------------------------------------
# borrowing a model


def test_borrowed_restores_every_flag_and_removes_hooks_even_on_error():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Sequential(nn.ReLU(), nn.Dropout()))
    model.train()
    model[1].eval()  # a frozen batch norm: its own flag must come back, not the parent's
    kept = model[0].register_forward_hook(lambda *a: None)
    before = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError):
        with borrowed(model):
            assert not any(m.training for m in model.modules())
            model[2][0].register_forward_hook(lambda *a: None)
            model[1].register_forward_pre_hook(lambda *a: None)
            raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before
    assert hook_count(model) == 1  # the caller's own hook stays
    kept.remove()
    with borrowed(model, grad=False):
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()


def test_scale_has_one_vocabulary_and_the_old_names_still_work(capsys):
    from convlens.analyses.filters import Filters
    from convlens.cli import build_parser
    from convlens.explain.options import SaliencyOptions

    parser = build_parser()
    for command in ("analyze", "explain --method saliency"):
        for given, meant in (("shared", "shared"), ("each", "each"), ("filter", "each"), ("per_image", "each")):
            argv = [*command.split(), "runs/x", "--scale", given]
            assert parser.parse_args(argv).scale == meant, (command, given)
    assert parser.parse_args(["explain", "runs/x", "--method", "saliency", "--scale", "fixed"]).scale == "fixed"
    with pytest.raises(SystemExit):
        parser.parse_args(["analyze", "runs/x", "--scale", "fixed"])  # weights have no fixed scale
    assert "--scale: invalid choice: 'fixed' (choose from 'shared', 'each')" in capsys.readouterr().err
    assert Filters(scale="filter").scale == "each" and SaliencyOptions(scale="per_image").scale == "each"
    for command in ("analyze", "explain"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        out = capsys.readouterr().out
        assert "(each)" in out and "per_image" not in out and "filter)" not in out  # no noise about old names
