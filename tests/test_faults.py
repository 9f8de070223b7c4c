"""Faults from outside: a full disk, killed writes, hostile or huge inputs. Each ends in one error
that names the file and what to do, and leaves nothing half-written behind."""

from __future__ import annotations

import errno
import json
import os

import pytest
from conftest import tiny_config

from convlens.cli import main
from convlens.errors import DiskFullError
from convlens.checkpoint import load as load_checkpoint


def _full_disk_for(monkeypatch, name: str, after: int = 0):
    """``os.fsync`` of a temp file for ``name`` fails as on a full disk, after ``after`` good ones."""
    import convlens.utils as utils

    real, seen = os.fsync, []

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if f".{name}." in os.path.basename(target):
            seen.append(target)
            if len(seen) > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(utils.os, "fsync", fsync)
    return seen


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds the file of a descriptor in /proc")
def test_a_full_disk_during_a_checkpoint_names_the_file_keeps_the_old_one_and_resume_works(
    tmp_path, monkeypatch, capsys
):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(tiny_config(**{"train.epochs": 2})))
    run = tmp_path / "r"
    with monkeypatch.context() as mp:
        _full_disk_for(mp, "last.pt", after=1)  # epoch 1's last.pt is written, epoch 2's finds no space
        assert main(["train", str(cfg), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([x for x in err if x.startswith("error:")]) == 1 and not [x for x in err if "Traceback" in x]
    line = next(x for x in err if x.startswith("error:"))
    assert f"no space left on the device to write {run / 'checkpoints' / 'last.pt'}; it needs " in line
    assert "free some space and run the command again" in line
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written kept
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and status["message"].startswith("no space left on the device to write")
    assert main(["train", "--resume", str(run)]) == 0  # space is back
    assert json.loads((run / "status.json").read_text())["status"] == "finished"


def test_disk_full_error_is_an_os_error_that_names_the_size():
    from convlens.utils import disk_full

    exc = disk_full("/x/y.json", 3 * 1024 * 1024)
    assert isinstance(exc, DiskFullError) and isinstance(exc, OSError)
    assert str(exc).startswith("no space left on the device to write /x/y.json; it needs 3.0 MiB")


def test_an_artifacts_arrays_and_json_are_one_generation(tmp_path):
    import numpy as np

    from convlens.analyses.perfilter import _arrays
    from convlens.errors import DamagedFileError
    from convlens.run import Layout

    art = Layout(tmp_path).artifact("topk")
    doc = {"analysis": "topk", "arrays": art.save_arrays(images=np.zeros((2, 1, 4, 4), np.uint8))}
    art.write(doc)
    written = json.loads(art.json.read_text())
    with _arrays(written, tmp_path) as z:
        assert z["images"].shape == (2, 1, 4, 4)
    # a rerun killed after its .npz and before its JSON: the old JSON beside new arrays
    art.save_arrays(images=np.ones((3, 1, 4, 4), np.uint8))
    with pytest.raises(DamagedFileError, match=r"topk.npz was written by a later run of topk than its JSON"):
        _arrays(written, tmp_path)
    assert not [p for p in (tmp_path / "analysis").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["analyze", "RUN", "--only", "stats", "--active-threshold", "nan"], "--active-threshold"),
        (["explain", "RUN", "--method", "actmax", "--tv", "nan"], "--tv"),
        (["explain", "RUN", "--method", "actmax", "--lr", "inf"], "--lr"),
        (["explain", "RUN", "--method", "actmax", "--lr=-inf"], "--lr"),
    ],
)
def test_nan_and_infinity_are_refused_on_the_command_line(argv, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    value = argv[-1].split("=")[-1]
    assert f"argument {flag}: '{value}' is not a finite number" in capsys.readouterr().err


def test_nan_and_infinity_are_refused_in_configs_and_options(tmp_path, capsys):
    from convlens.analyses import Stats
    from convlens.jobs import AnalysisError, comma_floats

    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(tiny_config()))
    for bad in ("train.optimizer.weight_decay=inf", "train.optimizer.lr=.nan", "train.optimizer.lr=-.inf"):
        assert main(["train", str(cfg), "--set", bad, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert f"`{bad.split('=')[0]}`: Input should be a finite number" in err, err
    assert not (tmp_path / "r").exists()
    with pytest.raises(Exception, match="finite numbers"):
        comma_floats("0.5,nan")
    with pytest.raises(AnalysisError, match="active_threshold=nan is not a finite number"):
        Stats(active_threshold=float("nan"))


def test_yaml_alias_bombs_and_duplicate_keys_are_refused(tmp_path, capsys):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, name = chr(96 + i), chr(97 + i)
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("unused:\n" + "".join(f"  {line}\n" for line in levels) + "name: t\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert f"config file {cfg} expands to more than 100,000 values" in capsys.readouterr().err
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: t\ntrain:\n  epochs: 1\n  batch_size: 8\n  epochs: 3\n")
    assert main(["train", str(dup), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"config file {dup} is not valid YAML: key 'epochs' is given twice in one mapping (first on line 3)" in err
    assert "line 5" in err and not (tmp_path / "r").exists()
    # merge keys override on purpose: no duplicate
    from convlens.config import load_yaml

    assert load_yaml("b: &b {x: 1, y: 2}\nc: {<<: *b, x: 3}\n", "m")["c"] == {"x": 3, "y": 2}


def test_decompression_bombs_and_huge_resizes_are_refused(tmp_path, capsys):
    from PIL import Image

    from convlens.data import images
    from convlens.errors import DataError

    bomb = tmp_path / "bomb.png"
    Image.new("1", (15000, 15000)).save(bomb)  # a few kilobytes on disk, 225 million pixels
    assert bomb.stat().st_size < 100_000
    with pytest.raises(DataError, match=r"bomb.png: more than 40,000,000 pixels|bomb.png: it is 15000x15000"):
        images.decode(str(bomb), None, 32)
    big = tmp_path / "big.png"
    Image.new("L", (7000, 7000)).save(big)  # 49M pixels: under Pillow's own limit, over ours
    with pytest.raises(DataError, match=r"big.png: it is 7000x7000 \(49,000,000 pixels\), more than the 40,000,000"):
        images.decode(str(big), None, None)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(tiny_config()))
    assert main(["train", str(cfg), "--set", "data.resize=100000", "--out", str(tmp_path / "r")]) == 2
    assert "`data.resize`: Input should be less than or equal to 4096" in capsys.readouterr().err


def test_an_array_larger_than_memory_is_refused_before_it_is_made(monkeypatch):
    import numpy as np

    from convlens.data import bundle
    from convlens.errors import DataError

    monkeypatch.setattr(bundle.os, "sysconf", lambda name: 1024 if name == "SC_AVPHYS_PAGES" else 4096)  # 4 MiB
    with pytest.raises(DataError, match=r"data.resize=512 makes 10 images of 512x512: 7.5 MiB, more than the 4.0 MiB"):
        bundle.resize(np.zeros((10, 8, 8, 3), np.uint8), 512)


# ----------------------------------------------------------------------------------------------
# messages that name what happened


def test_the_os_error_line_names_the_right_verb(tmp_path, monkeypatch):
    from convlens.cli import os_error_line

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    try:
        loop.read_bytes()
    except OSError as exc:
        assert os_error_line(exc) == f"cannot read {loop}: {exc.strerror}"
    assert os_error_line(OSError(errno.ENOSPC, "No space left on device", "/x")) == (
        "cannot write /x: No space left on device"
    )
    folder = tmp_path / "classes"
    folder.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: False)  # root reads everything: ask as a user would
    assert os_error_line(PermissionError(errno.EACCES, "Permission denied", str(folder))).startswith(
        f"cannot read {folder}"
    )


def test_cut_short_empty_and_hostile_weights_are_explained_without_unsafe_advice(tmp_path, capsys):
    import pickle

    from convlens.errors import RunError
    from convlens.checkpoint import read_weights

    cut = tmp_path / "cut.pt"
    good = tmp_path / "good.pt"
    import torch

    torch.save({"w": torch.zeros(100)}, good)
    cut.write_bytes(good.read_bytes()[:300])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(os.system, protocol=2))
    for name, needle in (
        ("cut.pt", "the file is cut short (300 bytes)"),
        ("empty.pt", "the file is empty"),
        ("evil.pt", "refused: loading it could run code"),
    ):
        with pytest.raises(RunError) as info:
            read_weights(tmp_path / name)
        assert needle in str(info.value) and "weights_only=False" not in str(info.value), str(info.value)
        assert main(["import", "x:y", "--weights", str(tmp_path / name), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert "weights_only=False" not in err


def test_a_folder_given_as_config_and_an_unknown_device_are_named(tmp_path, tmp_path_factory, capsys):
    from report_helpers import trained

    run = trained(tmp_path_factory, "cli")
    assert main(["train", str(run)]) == 2
    assert f"config file {run} is a folder, not a YAML file; to continue the run in it: convlens train --resume" in (
        capsys.readouterr().err
    )
    assert main(["analyze", str(run), "--only", "filters", "--device", "tpu9", "--no-figures"]) == 2
    assert "error: device 'tpu9' is not a device convlens runs on; allowed: cpu, cuda, cuda:N, mps" in (
        capsys.readouterr().err
    )


def test_diagnose_of_a_run_with_no_metrics_says_so(tmp_path, tmp_path_factory, capsys):
    import shutil

    from report_helpers import trained

    run = trained(tmp_path_factory, "cli")
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.yaml", "dataset.json"):
        shutil.copy(run / name, bare / name)
    assert main(["diagnose", str(bare)]) == 0
    out = capsys.readouterr().out
    assert "no status.json and no epoch in metrics.jsonl" in out and "None" not in out.split("\n")[0]


def test_temp_files_of_killed_writes_are_removed_by_the_next_writer(tmp_path):
    from convlens.runlock import run_lock

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "analysis" / "topk" / "conv1").mkdir(parents=True)
    (run / "trials" / "0").mkdir(parents=True)
    left = [
        run / ".eval.json.x1y2.tmp",
        run / "checkpoints" / ".last.pt.abc.tmp",
        run / "analysis" / "topk" / "conv1" / ".f0.png.q.tmp",
    ]
    kept = [run / "trials" / "0" / ".status.json.z.tmp", run / "eval.json", run / "notes.tmp"]
    for p in left + kept:
        p.write_text("x")
    with run_lock(run, "test"):
        assert [p for p in left if p.exists()] == [] and all(p.exists() for p in kept)


def test_a_data_set_of_constant_images_is_refused_before_training(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "flat"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (8, 8), (128, 128, 128)).save(root / split / c / f"{i}.png")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        json.dumps(tiny_config(**{"data.name": "imagefolder", "data.root": str(root), "data.val_fraction": 0}))
    )
    assert main(["train", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "every training image is the same flat colour (pixel value 128, 128, 128 everywhere)" in err, err
    assert not (tmp_path / "r").exists()


def test_a_factory_from_outside_the_project_needs_consent(tmp_path, tmp_path_factory, monkeypatch, capsys):
    import yaml
    from report_helpers import copy_run, trained

    run = copy_run(trained(tmp_path_factory, "cli"), tmp_path / "received")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"] = {"factory": "os:system", "kwargs": {"command": "touch " + str(tmp_path / "pwned")}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.delenv("CONVLENS_TRUSTED_FACTORIES", raising=False)
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert "model.factory='os:system' names module 'os' from " in err and "outside this project" in err
    assert "CONVLENS_TRUSTED_FACTORIES=os" in err and not (tmp_path / "pwned").exists()
    # consent by name: then it is imported (and fails as the non-model it is)
    monkeypatch.setenv("CONVLENS_TRUSTED_FACTORIES", "json, os")
    from convlens.models.factory import check_trusted

    check_trusted("os:system")
    check_trusted("os.path:join")
    monkeypatch.setenv("CONVLENS_TRUSTED_FACTORIES", "")
    with pytest.raises(Exception, match="outside this project"):
        check_trusted("os.path:join")
    check_trusted("handmade_resnet:make")  # tests/ is inside the project (the folder the tests run in)


def test_verify_cache_sees_a_same_size_rewrite_that_keeps_the_time(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from convlens.config import DataConfig
    from convlens.data.bundle import load_arrays

    root = tmp_path / "tree"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((4, 4), 200, np.uint8), "L").save(root / c / f"{i}.bmp")
    cfg = DataConfig(name="imagefolder", root=str(root), val_fraction=0)
    assert load_arrays(cfg).train_x.min() == 200
    for f in root.rglob("*.bmp"):  # `cp -p` of a new picture: same size, same time
        st = f.stat()
        Image.fromarray(np.full((4, 4), 7, np.uint8), "L").save(f)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_arrays(cfg).train_x.min() == 200  # names, sizes and times: the old arrays (documented)
    monkeypatch.setenv("CONVLENS_VERIFY_CACHE", "1")
    assert load_arrays(cfg).train_x.max() == 7


def test_cjk_class_names_are_drawn_with_a_face_that_has_them_or_as_code_points(monkeypatch):
    from pathlib import Path

    from convlens import plots

    font = plots._font(11)
    assert plots.text_face("cat 0.93", font) == ("cat 0.93", font)
    installed = [p for p in plots.FALLBACK_FONTS.values() if Path(p).is_file()]
    text, face = plots.text_face("猫 0.93", font)
    if installed:  # Debian: fonts-droid-fallback, fonts-wqy-zenhei or fonts-noto-cjk
        assert text == "猫 0.93" and face.path == installed[0]
        assert not plots._missing(face.path, 11, "猫")
    monkeypatch.setattr(plots, "FALLBACK_FONTS", {})
    assert plots.text_face("猫 0.93", font) == ("U+732B 0.93", font)  # visible, never an empty box
    label = plots._text_image(["猫"], font)
    assert label.getbbox() is not None


def test_matplotlib_figures_fall_back_to_a_cjk_face_without_warnings(tmp_path):
    import warnings

    from convlens import plots

    if not plots._fallback_families():
        pytest.skip("no CJK face installed (Debian: fonts-droid-fallback); the Pillow path shows code points")

    @plots.styled
    def draw(path):
        fig = plots.pyplot().figure()
        fig.add_subplot().set_title("猫 and 狗")
        plots.save(fig, path)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        draw(tmp_path / "t.png")


def test_a_killed_topk_is_reported_as_not_drawn_not_as_browsable(tmp_path):
    import numpy as np

    from convlens.report.analyses import Analysis, analysis_section
    from convlens.report.run_report import draw_filter_figures
    from convlens.run import Layout

    art = Layout(tmp_path).artifact("topk")
    doc = {
        "analysis": "topk",
        "params": {},
        "split": "test",
        "arrays": art.save_arrays(images=np.zeros((1, 1, 4, 4), np.uint8), positions=np.arange(1)),
        "layers": {"conv1": {"filters": [{"filter": 0, "positions": [185]}]}},
        "figures": [
            {"path": "analysis/topk/conv1/f0.png", "caption": "f0", "layer": "conv1", "filter": 0, "pending": True}
        ],
    }
    art.write(doc)
    art.save_arrays(images=np.zeros((2, 1, 4, 4), np.uint8), positions=np.arange(2))  # killed before its JSON
    a = Analysis("topk", json.loads(art.json.read_text()), art.json)
    notes = draw_filter_figures(tmp_path, [a], lambda s: None)
    assert len(notes) == 1 and "topk.npz was written by a later run of topk than its JSON" in notes[0]
    assert "KeyError" not in notes[0] and f"convlens analyze {tmp_path} --only topk" in notes[0]
    sec = analysis_section(tmp_path, a, ["a", "b"])
    assert any("1 could not be drawn (see the note at the top)" in n for n in sec.notes), sec.notes
    assert not any("every one is in the filter browser" in n for n in sec.notes)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds the file of a descriptor in /proc")
def test_a_full_disk_during_eval_names_the_file(tmp_path, tmp_path_factory, monkeypatch, capsys):
    from report_helpers import copy_run, trained

    run = copy_run(trained(tmp_path_factory, "cli"), tmp_path / "r")
    before = (run / "eval.json").read_bytes()
    _full_disk_for(monkeypatch, "eval.json")
    assert main(["eval", str(run)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert err == [f"error: no space left on the device to write {run / 'eval.json'}; " + err[0].split("; ", 1)[1]]
    assert "it needs" in err[0] and (run / "eval.json").read_bytes() == before
