"""The sweep's several-key figures: parallel coordinates, the two-key heatmap, coloured curves."""

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.image import imread

from convlens.sweep.figures import curves_by, parallel_coordinates, two_key_grid, two_key_heatmap

POINTS = [
    {"lr": 0.01, "width": 4, "acc": 0.50},
    {"lr": 0.01, "width": 4, "acc": 0.70},
    {"lr": 0.1, "width": 4, "acc": 0.90},
    {"lr": 0.01, "width": 8, "acc": 0.80},
]


def _has(png, rgb, tol=0.03) -> int:
    img = imread(png)[..., :3]
    return int((np.abs(img - np.asarray(rgb[:3])).max(-1) < tol).sum())


def test_two_key_grid_averages_each_cell_and_leaves_empty_ones_blank():
    rows, cols, grid = two_key_grid(POINTS, "lr", "width", "acc")
    assert rows == ["4", "8"] and cols == ["0.01", "0.1"]
    assert grid[0] == [0.6, 0.9] and grid[1][0] == 0.8 and math.isnan(grid[1][1])


def test_two_key_heatmap_colours_the_best_cell_brightest(tmp_path):
    path = two_key_heatmap(POINTS, "lr", "width", "acc", tmp_path / "h.png")
    viridis = colormaps["viridis"]
    assert _has(path, viridis(1.0)) > 100  # the 90% cell
    assert _has(path, viridis(0.0)) > 100  # the 60% cell, the lowest mean


def test_parallel_coordinates_colour_lines_by_the_metric(tmp_path):
    path = parallel_coordinates(POINTS, ["lr", "width"], "acc", tmp_path / "p.png")
    viridis = colormaps["viridis"]
    assert _has(path, viridis(1.0), 0.05) > 20 and _has(path, viridis(0.0), 0.05) > 20


def test_curves_are_coloured_by_the_chosen_key(tmp_path):
    curves = [
        {"trial": 0, "value": "sgd", "points": [(1, 0.5), (2, 0.6)]},
        {"trial": 1, "value": "adam", "points": [(1, 0.4), (2, 0.8)]},
    ]
    path = curves_by(curves, "optimizer", tmp_path / "c.png")
    blue, orange = (0x4C / 255, 0x72 / 255, 0xB0 / 255), (0xDD / 255, 0x84 / 255, 0x52 / 255)
    assert _has(path, blue) > 30 and _has(path, orange) > 30
    numeric = [{**c, "value": v} for c, v in zip(curves, (0.001, 0.1))]
    path = curves_by(numeric, "lr", tmp_path / "n.png")
    plasma = colormaps["plasma"]
    assert _has(path, plasma(0.0)) > 30 and _has(path, plasma(0.85)) > 30


def test_the_sweep_report_draws_them_from_the_trial_folders(tmp_path):
    import pytest
    from sweep_common import write_sweep

    from convlens.errors import RunError
    from convlens.report.sweep_report import build_sweep_report
    from convlens.sweep import run_sweep

    path = write_sweep(tmp_path, params={"train.optimizer.lr": [0.05, 0.1], "model.options.width": [4, 6]}, epochs=1)
    out = run_sweep(path, out=tmp_path / "out", echo=lambda s: None, table=False)
    page = build_sweep_report(out, color_by="model.options.width").read_text()
    assert "Parallel coordinates" in page and "for each pair of model.options.width and train.optimizer.lr" in page
    assert "coloured by model.options.width" in page
    report = out / "report"
    assert {"parallel.png", "heatmap.png", "curves_by_model_options_width.png"} <= {p.name for p in report.iterdir()}
    viridis = colormaps["viridis"]
    assert _has(report / "heatmap.png", viridis(1.0)) > 100  # the best of the four cells
    with pytest.raises(RunError, match="color_by='seed' is not a key the trials vary; allowed: model.options.width"):
        build_sweep_report(out, color_by="seed")


def test_report_colours_a_sweeps_curves_by_the_key_given_on_the_command_line(tmp_path, capsys):
    from sweep_common import write_sweep

    from convlens.cli import main
    from convlens.sweep import run_sweep

    path = write_sweep(tmp_path, params={"train.optimizer.lr": [0.05, 0.1]}, epochs=1)
    out = run_sweep(path, out=tmp_path / "out", echo=lambda s: None, table=False)
    assert main(["report", str(out), "--color-by", "seed"]) == 2
    err = capsys.readouterr().err
    assert "error: --color-by 'seed' is not a key the trials vary; allowed: train.optimizer.lr" in err
    assert not (out / "report.html").exists()  # refused before anything is drawn
    trial = next(p for p in (out / "trials").iterdir() if p.is_dir())
    assert main(["report", str(trial), "--color-by", "train.optimizer.lr"]) == 2
    assert "is not a sweep folder" in capsys.readouterr().err
    assert main(["report", str(out), "--color-by", "train.optimizer.lr"]) == 0
    assert "coloured by train.optimizer.lr" in (out / "report.html").read_text()
    assert (out / "report" / "curves_by_train_optimizer_lr.png").is_file()


def test_color_by_is_honoured_on_a_finished_sweep_with_its_own_curves(tmp_path):
    from sweep_common import write_sweep

    from convlens.report.sweep_report import build_sweep_report
    from convlens.sweep import run_sweep

    path = write_sweep(tmp_path, params={"train.optimizer.lr": [0.05, 0.1], "model.options.width": [4, 6]}, epochs=1)
    out = run_sweep(path, out=tmp_path / "out", echo=lambda s: None, table=True)
    own = {p.name for p in (out / "plots").glob("curves_by_*.png")}
    assert len(own) == 1  # `sweep table` coloured them by one key
    for key in ("model.options.width", "train.optimizer.lr"):
        page = build_sweep_report(out, color_by=key).read_text()
        name = f"curves_by_{key.replace('.', '_')}.png"
        assert name in page and not [n for n in own if n != name and n in page], key
        assert name in own or (out / "report" / name).is_file()


def test_sweep_figures_write_no_text_under_8_pt(monkeypatch, tmp_path):
    import re
    from pathlib import Path

    from matplotlib.text import Text

    import convlens.sweep.figures as sweep_figures
    from convlens import plots

    kept = []

    def keep(fig, path):
        fig.draw_without_rendering()
        kept.append(fig)
        return path

    monkeypatch.setattr(sweep_figures, "save", keep)
    two_key_heatmap(POINTS, "lr", "width", "acc", tmp_path / "h.png")
    parallel_coordinates(POINTS, ["lr", "width"], "acc", tmp_path / "p.png")
    curves = [{"trial": i, "value": v, "points": [(1, 0.5), (2, 0.6)]} for i, v in enumerate(["sgd", "adam"])]
    curves_by(curves, "optimizer", tmp_path / "c.png")
    assert len(kept) == 3
    small = [
        (t.get_text(), t.get_fontsize())
        for fig in kept
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < plots.SMALL
    ]
    assert small == []
    # and no literal size under 8 pt anywhere in the sweep figures' sources
    src = Path(sweep_figures.__file__).parent.parent
    for rel in ("sweep/figures.py", "report/sweep_report.py"):
        assert re.findall(r"fontsize=[0-7]\b", (src / rel).read_text()) == [], rel


def test_a_one_epoch_curve_is_a_dot_not_nothing(tmp_path):
    from convlens.sweep.figures import overlay

    blue = 0.6 * np.array([0x4C, 0x72, 0xB0]) / 255 + 0.4  # a trial's line, at alpha 0.6 on white

    def drawn(points) -> int:
        p = overlay([{"trial": 0, "status": "finished", "points": points}], tmp_path / "o.png")
        return int((np.abs(imread(p)[..., :3] - blue).max(-1) < 0.1).sum())

    assert drawn([(1, 0.5)]) > 5  # one epoch: a dot
    assert drawn([(1, 0.5), (2, 0.6)]) > drawn([(1, 0.5)])
    one = curves_by([{"trial": 0, "value": 0.1, "points": [(1, 0.5)]}], "lr", tmp_path / "c.png")
    assert one.is_file()
    assert _has(one, colormaps["plasma"](0.85 * 0.5)) > 5  # a lone value sits mid-scale: its dot drawn
