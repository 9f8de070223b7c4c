"""datasets preview: the augmentation picture shows the configured augmentation, pixel for pixel."""

import json

import numpy as np
from PIL import Image

from convlens.cli import main
from convlens.data.preview import GAP, across_classes, tile_scale


def tiles(png, rows, cols, h, w):
    px = np.asarray(Image.open(png).convert("RGB"))
    s = tile_scale(h)
    th, tw = h * s, w * s
    assert px.shape == (rows * (th + GAP) + GAP, cols * (tw + GAP) + GAP, 3)
    # every tile, sampled once per source pixel
    return [
        [px[GAP + i * (th + GAP) :][:th:s, GAP + j * (tw + GAP) :][:, :tw:s] for j in range(cols)] for i in range(rows)
    ]


def write_config(tmp_path, augment):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{name: digits, val_fraction: 0, augment: {augment}}}\n")
    return cfg


def test_flip_with_p_1_shows_the_mirrored_original(tmp_path, capsys):
    out = tmp_path / "fig" / "aug.png"
    assert (
        main(
            [
                "datasets",
                "preview",
                str(write_config(tmp_path, "{flip: {p: 1}}")),
                "--out",
                str(out),
                "--count",
                "3",
                "--copies",
                "2",
            ]
        )
        == 0
    )
    grid = tiles(out, 3, 3, 8, 8)
    from convlens.data import load_data
    from convlens.config import load_config

    data = load_data(load_config(str(tmp_path / "c.yaml")).data)
    shown = across_classes(data.train.labels, 3)
    assert len(set(data.train.labels[shown].tolist())) == 3  # three classes
    for i in range(3):
        original = data.train.images[shown[i], 0].numpy()
        assert (grid[i][0][..., 0] == original).all() and (grid[i][0][..., 0] == grid[i][0][..., 2]).all()
        assert not (original == original[:, ::-1]).all()  # the digit is not symmetric: the check means something
        for j in (1, 2):
            assert (grid[i][j][..., 0] == original[:, ::-1]).all()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["augment"] == {"flip": {"p": 1.0, "alternate": False}} and len(meta["labels"]) == 3
    assert "aug.png" in capsys.readouterr().out


def test_flip_with_p_0_leaves_every_copy_unchanged_and_errors_are_one_line(tmp_path, capsys):
    out = tmp_path / "aug.png"
    assert (
        main(
            [
                "datasets",
                "preview",
                str(write_config(tmp_path, "{flip: {p: 0}}")),
                "--out",
                str(out),
                "--count",
                "2",
                "--copies",
                "3",
            ]
        )
        == 0
    )
    grid = tiles(out, 2, 4, 8, 8)
    assert all((row[j] == row[0]).all() for row in grid for j in (1, 2, 3))
    capsys.readouterr()
    for args, says in (
        ([str(write_config(tmp_path, "{}")), "--out", str(out)], "data.augment is empty"),
        ([str(tmp_path / "c.yaml"), "--out", str(tmp_path / "x.jpg")], "give the PNG"),
        ([str(tmp_path / "c.yaml"), "--out", str(out), "--copies", "0"], "--copies 0 is out of range"),
    ):
        assert main(["datasets", "preview", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and says in err


def test_a_class_ordered_folder_is_previewed_across_its_classes():
    import torch

    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 2)  # an image folder: every airplane first
    assert across_classes(labels, 8).tolist() == [0, 5, 10, 1, 6, 11, 2, 7]
    assert across_classes(labels, 2).tolist() == [0, 5]
    assert across_classes(labels, 50).tolist() == [0, 5, 10, 1, 6, 11, 2, 7, 3, 8, 4, 9]
