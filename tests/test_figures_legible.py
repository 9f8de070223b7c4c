"""What the figures show, read from the matplotlib objects before they are saved: no text under
8 pt, labelled colour bars, and occlusion drawn as the drop in probability (important = bright)."""

from __future__ import annotations

import numpy as np
import pytest

from convlens import plots
from convlens.explain import figures as explain_figures
from convlens.explain.outputs import occlusion_drops
from convlens.report.figures import draw_gallery


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """The figures the drawing functions hand to ``save``, kept instead of written."""
    kept = []

    def keep(fig, path):
        fig.draw_without_rendering()  # lays out ticks and their labels, as saving does
        kept.append(fig)
        return path

    monkeypatch.setattr(plots, "save", keep)
    monkeypatch.setattr(explain_figures, "save", keep)
    return kept


def texts(fig):
    """Every visible, non-empty text of a figure: titles, labels, tick labels, annotations."""
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def assert_legible(fig):
    small = [(t.get_text(), t.get_fontsize()) for t in texts(fig) if t.get_fontsize() < plots.SMALL]
    assert small == []


def test_every_drawing_helper_writes_at_least_8_pt(drawn, tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "x.png"
    plots.mosaic(list(rng.random((6, 3, 8, 8))), out, layout="chw", cols=3, titles=list("abcdef"), suptitle="t")
    plots.mosaic(
        list(rng.random((4, 5, 5))), out, layout="hw", vmin=0, vmax=1, colorbar="weight", row_labels=["r0", "r1"]
    )
    plots.image_with_maps(
        rng.random((3, 8, 8)),
        list(rng.random((4, 6, 6))),
        out,
        layout="chw",
        titles=list("abcd"),
        vmin=0,
        vmax=1,
        cmap="viridis",
        suptitle="maps",
        colorbar="activation",
    )
    plots.heatmap(rng.random((5, 3)), list("abcde"), list("xyz"), out, title="h", colorbar="norm")
    plots.confusion([[5, 1], [2, 7]], ["cat", "dog"], out)
    plots.panels({"mean": [1.0, 2.0, 3.0], "max": [2.0, 3.0, 4.0]}, out, title="p", highlight=[1], highlight_label="x")
    plots.grouped_bars({"before": [0.5, 0.6], "after": [0.4, 0.6]}, ["a", "b"], out, title="g")
    plots.bars([1.0, 2.0], ["a", "b"], out, title="b")
    plots.curves([{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_acc": 0.5, "val_acc": 0.4, "lr": 0.1}], out)
    picked = [{"position": i, "label": i % 2, "pred": 0, "confidence": 0.9, "correct": i % 2 == 0} for i in range(4)]
    draw_gallery(rng.random((4, 3, 8, 8)), picked, ["cat", "dog"], out, "gallery", mistakes=False)
    assert len(drawn) == 2  # curves and bars; mosaics (galleries too), maps, heatmaps, charts: without matplotlib
    for fig in drawn:
        assert_legible(fig)


def test_picture_mosaics_set_their_text_at_8_pt_or_more(tmp_path):
    from PIL import Image

    white = [np.ones((3, 16, 16))] * 3
    p = plots.mosaic(white, tmp_path / "m.png", layout="chw", cols=3, suptitle="Ag|", titles=["Ag|"] * 3)
    a = np.asarray(Image.open(p).convert("L"))
    ink = np.where((a < 128).any(1))[0]  # rows with text: the tiles are white
    em = plots.SMALL * plots.STYLE["savefig.dpi"] / 72  # 8 pt in pixels
    # the suptitle line: "A", "g" and "|" span about an em from ascender to descender
    first = ink[: np.argmax(np.diff(ink) > 1) + 1]
    assert len(first) >= 0.85 * em
    assert plots._font(int(round(em))).size >= em - 0.5


def test_colour_bars_are_labelled(drawn, tmp_path):
    rng = np.random.default_rng(0)
    plots.mosaic(list(rng.random((4, 5, 5))), tmp_path / "a.png", layout="hw", vmin=0, vmax=1, colorbar="weight")
    plots.heatmap(rng.random((5, 3)), list("abcde"), list("xyz"), tmp_path / "b.png", colorbar="norm")
    assert drawn == []  # both set with Pillow, their colour bars too


def test_a_heatmap_colours_its_cells_and_labels_its_colour_bar(tmp_path):
    from PIL import Image

    m = [[0.0, 1.0], [float("nan"), 0.5]]
    p = plots.heatmap(m, ["r0", "r1"], ["c0", "c1"], tmp_path / "h.png", colorbar="norm", vmin=0, vmax=1)
    q = plots.heatmap(m, ["r0", "r1"], ["c0", "c1"], tmp_path / "q.png", vmin=0, vmax=1)
    a = np.asarray(Image.open(p).convert("RGB")).astype(int)
    assert Image.open(p).width > Image.open(q).width  # room for the colour bar's label
    for colour in plots._colours("viridis", np.array([0.0, 1.0, 0.5]), 0, 1).astype(int):
        assert (a == colour).all(-1).sum() >= 100  # each finite cell in its colour


def test_occlusion_shows_the_drop_in_probability_important_bright(drawn, tmp_path):
    # two classes, a 4x4 map per window: the base probability of class 0 is 0.9; a patch at (1, 2)
    # takes it to 0.1 (the most important place), one at (3, 0) to 0.6, elsewhere it stays
    base = np.array([0.9, 0.1])
    p = np.full((2, 4, 4), 0.9)
    p[1] = 0.1
    p[0, 1, 2], p[0, 3, 0] = 0.1, 0.6
    p[1, 1, 2], p[1, 3, 0] = 0.9, 0.4
    shown, scale, label, colorbar = occlusion_drops({4: p}, base, [0], {})
    assert np.unravel_index(np.argmax(shown[4][0]), (4, 4)) == (1, 2)
    assert shown[4][0, 1, 2] == pytest.approx(1.0) and shown[4][0, 3, 0] == pytest.approx(0.3 / 0.8)
    assert shown[4][0, 0, 0] == 0.0  # no change: darkest
    assert "0 to 0.8" in label and "drop in probability" in colorbar
    image = np.zeros((1, 8, 8), dtype=np.float32)
    explain_figures.occlusion_figure(
        image,
        shown,
        [("drop of p(cat), true", 0)],
        2,
        0,
        tmp_path / "o.png",
        title="cat",
        scale=scale,
        label=label,
        colorbar=colorbar,
    )
    fig = drawn[-1]
    assert_legible(fig)
    bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    assert bar.get_ylabel() == "drop in probability (0 to 0.8)"
    assert [t.get_text() for t in bar.get_yticklabels()] == ["0", "0.4", "0.8"]
    heat = fig.axes[1].get_images()[-1]
    assert heat.get_cmap().name == "inferno"  # dark to bright: the largest drop is the brightest
    rgba = heat.to_rgba(heat.get_array())
    brightness = rgba[..., :3] @ np.array([0.2126, 0.7152, 0.0722])
    assert np.unravel_index(np.argmax(brightness), brightness.shape) == (1, 2)
    assert "drop in probability" in fig._suptitle.get_text()


def test_small_multiples_are_rendered_once_and_keep_everything(monkeypatch, tmp_path):
    # the per-filter figures (mosaics, bars) fit their canvas, so the PNG is one rendering cropped,
    # not matplotlib's two-pass tight bounding box
    from matplotlib.figure import Figure
    from PIL import Image

    def refuse(*a, **k):
        raise AssertionError("savefig's two-pass layout was used")

    monkeypatch.setattr(Figure, "savefig", refuse)
    rng = np.random.default_rng(0)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    p = plots.bars(list(rng.random(10)), classes, tmp_path / "b.png", title="conv1 filter 0", ylabel="norm")
    q = plots.mosaic(
        list(rng.random((9, 3, 32, 32))),
        tmp_path / "m.png",
        layout="chw",
        cols=10,
        titles=["automobile 3.21"] * 9,
        suptitle="conv2 filter 3: top 9 test images",
    )
    for path in (p, q):
        a = np.asarray(Image.open(path).convert("L"), dtype=float)
        # a white margin on every side: nothing was cut at an edge
        assert a[0].min() == a[-1].min() == a[:, 0].min() == a[:, -1].min() == 255


def test_drawing_progress_is_a_bar_on_a_terminal_only():
    items = [1, 2, 3]
    assert plots.progress(items, "drawing", show=False) is items
    bar = plots.progress(items, "drawing", show=True)
    assert list(bar) == items and hasattr(bar, "total") and bar.total == 3


def test_explanation_grids_put_several_images_in_a_row(drawn, tmp_path):
    from convlens.explain.heatmap import HeatmapScale

    rng = np.random.default_rng(0)
    scale = HeatmapScale(sign="absolute", reduce="max_abs", percentile=99.0, scale="per_image")
    images, heat = rng.random((10, 3, 8, 8)), rng.random((10, 8, 8))
    explain_figures.attribution_grid(
        images, heat, scale, [f"img {i}" for i in range(10)], tmp_path / "s.png", title="t"
    )
    signal = rng.normal(size=(10, 3, 8, 8))
    explain_figures.attribution_grid(
        images, heat, scale, [f"img {i}" for i in range(10)], tmp_path / "g.png", title="t", signal=signal
    )
    explain_figures.attribution_grid(images[:1], heat[:1], scale, ["img 0"], tmp_path / "o.png", title="t")
    for fig, panels in zip(drawn, (3, 4, 3)):
        grid = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        rows = {round(ax.get_position().y0, 4) for ax in grid}
        per_row = len(grid) // len(rows)
        assert per_row % panels == 0
        shown = [ax for ax in grid if ax.images]
        assert len(shown) == panels * (10 if fig is not drawn[2] else 1)
        bar = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert len(bar) == 1 and bar[0].get_position().x0 >= max(ax.get_position().x1 for ax in grid)
        w, h = fig.get_size_inches()
        if fig is drawn[2]:
            assert per_row == panels  # a single image keeps one row
        else:
            assert per_row >= 2 * panels and len(rows) <= 5  # not a 10-row column
            assert 0.6 <= w / h <= 1.8
    assert all(ax.get_title() for ax in drawn[0].axes[:1])


def test_a_mosaic_colour_bar_runs_from_low_to_high_and_is_labelled(tmp_path):
    from PIL import Image

    tiles = [np.full((4, 4), v) for v in (-1.0, 0.0, 1.0)]
    p = plots.mosaic(tiles, tmp_path / "m.png", layout="hw", vmin=-1, vmax=1, cmap="RdBu_r", colorbar="weight")
    bare = plots.mosaic(tiles, tmp_path / "n.png", layout="hw", vmin=-1, vmax=1, cmap="RdBu_r")
    a = np.asarray(Image.open(p).convert("RGB")).astype(int)
    assert Image.open(p).width > Image.open(bare).width  # room for the bar, its ticks and label
    blue, red = plots._colours("RdBu_r", np.array([-1.0, 1.0]), -1, 1).astype(int)
    for colour in (blue, red):  # each tile in its colour on the shared scale
        assert (a == colour).all(-1).sum() >= 16
    red_ish = (a[..., 0] - a[..., 2]) > 100
    blue_ish = (a[..., 2] - a[..., 0]) > 100
    col = int(np.where((red_ish | blue_ish).any(0))[0].max()) - 2  # the bar: right of the tiles
    rows = np.where(red_ish[:, col] | blue_ish[:, col])[0]
    assert red_ish[rows.min() + 2, col] and blue_ish[rows.max() - 2, col]  # high at the top
    label = a[:, col + 5 :]
    assert (label.sum(-1) < 200).sum() > 30  # ticks and the label drawn right of the bar


def test_mosaic_row_labels_stand_left_of_their_rows(tmp_path):
    from PIL import Image

    black = [np.zeros((4, 4))] * 4
    p = plots.mosaic(black, tmp_path / "r.png", layout="hw", cols=2, row_labels=["filter 0", "f1"])
    a = np.asarray(Image.open(p).convert("L")).astype(int)
    cols, rows = np.where((a == 0).sum(0) > 50)[0], np.where((a == 0).sum(1) > 50)[0]  # the tiles
    ink = a[:, : cols.min() - 2] < 128  # text left of the tiles
    text = np.where(ink.any(1))[0]
    middle = (rows.min() + rows.max()) / 2
    first, second = text[text < middle], text[text > middle]
    assert len(first) and len(second)  # one label beside each row
    assert ink[first].any(0).sum() > ink[second].any(0).sum()  # "filter 0" is wider than "f1"


def test_image_with_maps_shows_the_input_and_each_map_on_the_shared_scale(tmp_path):
    from PIL import Image

    red = np.zeros((3, 8, 8))
    red[0] = 1.0
    maps = [np.zeros((4, 4)), np.ones((4, 4))]
    p = plots.image_with_maps(
        red,
        maps,
        tmp_path / "w.png",
        layout="chw",
        titles=["a", "b"],
        vmin=0,
        vmax=1,
        cmap="viridis",
        suptitle="maps",
        colorbar="output",
    )
    a = np.asarray(Image.open(p).convert("RGB")).astype(int)
    assert (a == [255, 0, 0]).all(-1).sum() >= 64  # the input, enlarged
    low, high = plots._colours("viridis", np.array([0.0, 1.0]), 0, 1).astype(int)
    for colour in (low, high):  # a tile of each map, and the bar's ends
        assert (a == colour).all(-1).sum() >= 16
    x_red = np.where((a == [255, 0, 0]).all(-1).any(0))[0].max()
    x_map = np.where((a == high).all(-1).any(0))[0].min()
    assert x_red < x_map  # the input stands left of its maps
