"""Inputs that used to pass quietly and do something else than meant: each now stops with an
error naming the file, folder or key (or prints a notice), before anything trains."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlens.config import load_config
from convlens.data import load_arrays
from convlens.errors import ConfigError, DataError


def data_cfg(**kw):
    return load_config({"data": kw}).data


def write_classes(root: Path, classes=("cat", "dog"), n=2):
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(root / c / f"{i}.png")


# ---------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_config_file_is_an_error(tmp_path, text):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=rf"config file {tmp_path / 'c.yaml'} is empty"):
        load_config(tmp_path / "c.yaml")


# ---------------------------------------------------------------------------------------------
# class folders


@pytest.mark.parametrize("split", [False, True])
def test_empty_class_folder_is_an_error(tmp_path, split):
    root = tmp_path / "t"
    for s in ("train", "test") if split else ("",):
        write_classes(root / s, ("ant", "cat", "dog"))
    empty = root / ("train" if split else "") / "bee"
    empty.mkdir()  # would sort between ant and cat: cat and dog would change index
    with pytest.raises(DataError, match=rf"class folder {empty} holds no images"):
        load_arrays(data_cfg(name="imagefolder", root=str(root)))
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=rf"class folder {empty} holds no images"):
        load_arrays(data_cfg(name="imagefolder", root=str(root)))
    with tarfile.open(tmp_path / "t.tar.gz", "w:gz") as tar:
        tar.add(root, arcname="set")
    member = "set/train/bee" if split else "set/bee"
    with pytest.raises(DataError, match=rf"t\.tar\.gz \(archive member {member}\) holds no images"):
        load_arrays(data_cfg(name="imagefolder", root=str(tmp_path / "t.tar.gz")))
    (empty / "notes.txt").unlink()
    empty.rmdir()
    assert load_arrays(data_cfg(name="imagefolder", root=str(root))).classes == ["ant", "cat", "dog"]


def test_hidden_folders_are_not_classes(tmp_path):
    write_classes(tmp_path / "t")
    (tmp_path / "t" / ".thumbs").mkdir()
    assert load_arrays(data_cfg(name="imagefolder", root=str(tmp_path / "t"))).classes == ["cat", "dog"]


# ---------------------------------------------------------------------------------------------
# notices


def test_first_decode_says_what_it_does_and_where_it_caches(tmp_path, capsys, monkeypatch):
    from convlens.data import images
    from convlens.data.bundle import cache_home

    monkeypatch.setattr(images, "NOTICE_MIN", 4)  # a real tree needs 1,000 images for the notice
    write_classes(tmp_path / "t", n=3)
    cfg = data_cfg(name="imagefolder", root=str(tmp_path / "t"))
    load_arrays(cfg)
    err = capsys.readouterr().err
    assert err.startswith("decoding 6 images once (cached in ") and str(cache_home()) in err
    load_arrays(cfg)  # from the cache: nothing to say
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(images, "NOTICE_MIN", 7)
    write_classes(tmp_path / "u", n=3)
    load_arrays(data_cfg(name="imagefolder", root=str(tmp_path / "u")))
    assert capsys.readouterr().err == ""


def test_batch_larger_than_the_training_set_is_noted(tmp_path):
    from conftest import tiny_config

    from convlens.train import train

    lines = []
    train(
        tiny_config(**{"data.train_subset": 40, "data.val_fraction": 0.25, "train.epochs": 1, "train.batch_size": 64}),
        tmp_path / "r",
        echo=lines.append,
    )
    assert any("train.batch_size=64 is larger than the 30 training images" in s for s in lines)
    lines.clear()
    train(
        tiny_config(**{"data.train_subset": 40, "data.val_fraction": 0.25, "train.epochs": 1, "train.batch_size": 30}),
        tmp_path / "s",
        echo=lines.append,
    )
    assert not any("larger than" in s for s in lines)
