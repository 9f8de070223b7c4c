"""Mistakes on the command line end in one `error:` line and exit code 2, never a traceback, and
leave the files they point at as they were."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from report_helpers import copy_run, trained

from convlens.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return trained(tmp_path_factory, "cli")


def tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def one_error(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one `error:` line naming ``needles``."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, (rc, err)
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


# ----------------------------------------------------------------------------------------------
# --out that cannot be what the command writes


def test_out_that_is_a_file_or_under_a_file(tmp_path, run, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: t\n")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"base: {cfg}\nparams:\n  train.epochs: [1]\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    before = tree_hash(tmp_path)
    one_error(capsys, ["train", str(cfg), "--out", str(a_file)], f"--out {a_file} is a file")
    one_error(capsys, ["train", str(cfg), "--out", str(a_file / "run")], f"{a_file} is a file")
    one_error(capsys, ["sweep", str(sweep), "--out", str(a_file)], f"--out {a_file} is a file")
    one_error(capsys, ["sweep", str(sweep), "--out", str(a_file / "s")], f"{a_file} is a file")
    one_error(capsys, ["report", str(run), "--out", str(tmp_path)], f"--out {tmp_path} is a folder")
    one_error(capsys, ["report", str(run), "--out", str(a_file / "r.html")], f"{a_file} is a file")
    assert tree_hash(tmp_path) == before


# ----------------------------------------------------------------------------------------------
# a run folder that cannot be written


@pytest.fixture
def read_only(tmp_path):
    """Make a folder read-only for this process, and yield its name for the messages: permission
    bits where they count (not root), else a read-only bind mount (root ignores permissions)."""
    made: list[Path] = []

    def make(folder: Path) -> str:
        if os.geteuid() != 0:
            for p in [folder, *folder.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o555)
            made.append(folder)
            return "Permission denied"
        ok = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0
        if ok:
            made.append(folder)
            ok = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True).returncode == 0
        if not ok:
            pytest.skip("running as root without the right to mount: no way to make a folder read-only")
        return "Read-only file system"

    yield make
    for folder in made:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            for p in [folder, *folder.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o755)


def test_read_only_run_folder(tmp_path, run, read_only, capsys):
    ro = copy_run(run, tmp_path / "ro")
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "trials").mkdir(parents=True)
    copy_run(run, sweep_dir / "trials" / "0")
    (sweep_dir / "sweep.yaml").write_text("base: c.yaml\nparams:\n  train.epochs: [1]\n")
    reason = read_only(ro)
    before = tree_hash(ro)
    for argv in (
        ["train", "--resume", str(ro)],
        ["analyze", str(ro), "--only", "filters"],
        ["explain", str(ro), "--method", "saliency", "--images", "0"],
        ["eval", str(ro)],
        ["report", str(ro)],
        ["report", str(ro), "--out", str(tmp_path / "elsewhere.html")],
    ):
        one_error(capsys, argv, f"cannot write {ro}", reason)
    assert tree_hash(ro) == before
    reason = read_only(sweep_dir)
    one_error(capsys, ["sweep", "table", str(sweep_dir)], f"cannot write {sweep_dir}", reason)


def test_a_write_failing_midway_is_one_error_line(tmp_path, run, monkeypatch, capsys):
    # a disk that fills up after the checks passed: the OS error, its path, no traceback
    import convlens.utils

    def full(path, *a, **k):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(convlens.utils, "atomic_write", full)
    one_error(capsys, ["eval", str(copy_run(run, tmp_path / "r"))], "cannot write", "No space left on device")


# ----------------------------------------------------------------------------------------------
# values that argparse reads: one `error:` line, not argparse's usage block nor a traceback


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("conv1:-1", "'-1' in 'conv1:-1' is not a filter index"),
        ("conv1:abc", "'abc' in 'conv1:abc' is not a filter index"),
        ("conv1", "cannot read filters 'conv1'"),
        ("conv1:3-1", "range '3-1' in 'conv1:3-1' is empty"),
    ],
)
def test_bad_filter_specs(run, spec, needle, capsys):
    one_error(capsys, ["analyze", str(run), "--only", "ablate", "--filters", spec], "--filters", needle)


def test_argparse_mistakes_are_one_line(run, capsys):
    one_error(capsys, ["analyze", str(run), "--batch-size", "0"], "--batch-size", "allowed: 1 or more")
    one_error(capsys, ["analyze", str(run), "--batch-size", "-3"], "--batch-size")
    one_error(capsys, ["analyze", str(run), "--k", "abc"], "--k", "'abc'")
    one_error(capsys, ["analyze", str(run), "--nonsense"], "--nonsense")
    one_error(capsys, ["explain", str(run)], "--method")
    one_error(capsys, ["nonsense"], "'nonsense'")
    one_error(capsys, [], "COMMAND")


def test_api_batch_size_and_limit_are_checked_before_loading(run):
    from convlens.analyses import AnalysisError, analyze

    with pytest.raises(AnalysisError, match="batch_size=0 is out of range"):
        analyze(run, ["filters"], batch_size=0)
    with pytest.raises(AnalysisError, match="limit=0"):
        analyze(run, ["filters"], limit=0)


def test_models_with_impossible_shapes(capsys):
    one_error(capsys, ["models", "tiny", "--input", "-1", "8", "8"], "--input -1 8 8")
    one_error(capsys, ["models", "tiny", "--classes", "-3"], "--classes -3")


# ----------------------------------------------------------------------------------------------
# occlusion: a window that covers the whole image leaves a 1x1 map


@pytest.mark.parametrize("window,stride", [(8, 2), (7, 2), (4, 8)])
def test_occlusion_window_with_one_position_is_refused(run, window, stride, capsys):
    line = one_error(
        capsys,
        [
            "explain",
            str(run),
            "--method",
            "occlusion",
            "--images",
            "0,1",
            "--window",
            str(window),
            "--stride",
            str(stride),
        ],
        f"window {window}",
        "1x1 map",
    )
    assert "allowed at stride 2: windows 1 to 6" in line if stride == 2 else "smaller stride" in line


def test_occlusion_of_a_model_blind_to_its_input_draws_flat_maps(tmp_path, run):
    # a zero classifier: every class at 1/10 whatever the patch, so every map is flat, and drawn
    r = copy_run(run, tmp_path / "blind")
    for name in ("best", "last"):
        p = r / "checkpoints" / f"{name}.pt"
        if p.is_file():
            state = torch.load(p, weights_only=True)
            model = state["model"] if "model" in state else state
            model["fc1.weight"].zero_()
            model["fc1.bias"].zero_()
            torch.save(state, p)
    assert main(["explain", str(r), "--method", "occlusion", "--images", "0,1", "--window", "4"]) == 0
    from convlens.utils import read_json

    doc = read_json(r / "analysis" / "occlusion.json")
    assert len(doc["figures"]) == 2
    mins = [img["min_true_probability"]["4"] for img in doc["images"]]
    means = [img["mean_true_probability"]["4"] for img in doc["images"]]
    assert mins == means == [pytest.approx(0.1), pytest.approx(0.1)]


# ----------------------------------------------------------------------------------------------
# topk and layers


def test_k_beyond_the_split_keeps_every_image_and_says_so(tmp_path, run, capsys):
    r = copy_run(run, tmp_path / "k")
    assert main(["analyze", str(r), "--only", "topk", "--limit", "5", "--k", "1000000", "--no-figures"]) == 0
    assert "k=1000000 is more than the 5 images of the test split" in capsys.readouterr().out
    from convlens.utils import read_json

    doc = read_json(r / "analysis" / "topk.json")
    assert all(len(f["positions"]) == 5 for layer in doc["layers"].values() for f in layer["filters"])


def test_nonsense_layer_names_list_the_layers(run, capsys):
    one_error(
        capsys, ["analyze", str(run), "--only", "stats", "--layers", "conv1,nonsense"], "'nonsense'", "conv1, bn1"
    )
    one_error(capsys, ["explain", str(run), "--method", "gradcam", "--layers", "nonsense"], "'nonsense'", "conv2")


# ----------------------------------------------------------------------------------------------
# damaged files


def test_damaged_files_name_the_file(tmp_path, run, capsys):
    bad = copy_run(run, tmp_path / "bad")
    (bad / "checkpoints" / "last.pt").write_bytes(b"garbage")
    shutil.copy(bad / "checkpoints" / "last.pt", bad / "checkpoints" / "best.pt")
    one_error(capsys, ["eval", str(bad)], "cannot read checkpoint", "last.pt", "damaged")
    cut = copy_run(run, tmp_path / "cut")
    data = (cut / "checkpoints" / "best.pt").read_bytes()
    (cut / "checkpoints" / "best.pt").write_bytes(data[: len(data) // 2])
    one_error(
        capsys, ["analyze", str(cut), "--only", "filters", "--checkpoint", "best"], "cannot read checkpoint", "best.pt"
    )
    js = copy_run(run, tmp_path / "js")
    (js / "eval.json").write_text("{nope")
    one_error(capsys, ["diagnose", str(js)], "eval.json is not valid JSON")
    text = tmp_path / "bin.yaml"
    text.write_bytes(b"\x00\xff\xfe")
    one_error(capsys, ["train", str(text), "--out", str(tmp_path / "n")], "bin.yaml is not text")
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    one_error(capsys, ["sweep", str(lst)], "top level must be a mapping")
    assert not (tmp_path / "n").exists()
