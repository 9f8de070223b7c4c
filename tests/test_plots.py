"""Images are drawn in the layout they are stated to have: pixels of the drawn PNG are checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from convlens import plots
from convlens.analyses import Filters
from convlens.analyses.perfilter import draw_pending
from convlens.models import build

from analyses_models import random_split, subject

RED = np.zeros((3, 3, 3), dtype=np.float32)
RED[0] = 1.0  # (C, H, W): the red channel full, green and blue empty


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int32)


def count_red(a: np.ndarray) -> int:
    return int(((a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)).sum())


def test_a_3x3_chw_patch_is_shown_in_its_colour():
    a = plots.to_display(RED, "chw")
    assert a.shape == (3, 3, 3)
    np.testing.assert_array_equal(a[..., 0], 1)
    np.testing.assert_array_equal(a[..., 1:], 0)
    np.testing.assert_array_equal(plots.to_display(RED.transpose(1, 2, 0), "hwc"), a)


def test_a_one_channel_patch_is_grey_not_a_strip():
    g = np.linspace(0, 1, 9, dtype=np.float32).reshape(1, 3, 3)
    a = plots.to_display(g, "chw")
    assert a.shape == (3, 3)
    np.testing.assert_allclose(a, g[0])
    u8 = (np.arange(9, dtype=np.uint8) * 30).reshape(3, 3)
    np.testing.assert_allclose(plots.to_display(u8, "hw"), u8 / 255)


def test_layout_must_fit_the_array():
    with pytest.raises(ValueError, match="layout 'hw' has 2 dimensions"):
        plots.to_display(RED, "hw")
    with pytest.raises(ValueError, match="1 or 3 channels, not 4"):
        plots.to_display(np.zeros((4, 3, 3)), "chw")
    with pytest.raises(ValueError, match="not one of"):
        plots.to_display(RED, "auto")


def test_mosaic_and_grid_draw_a_red_chw_patch_red(tmp_path):
    m = plots.mosaic([RED, RED], tmp_path / "m.png", layout="chw", cols=2, tile_inches=0.5)
    g = plots.image_grid([RED], tmp_path / "g.png", layout="chw", cols=1)
    for path in (m, g):
        a = pixels(path)
        assert count_red(a) > 100  # the tiles are drawn red ...
        assert not ((a.sum(-1) < 30).sum() > 50)  # ... and not black, as an HWC reading gives


def test_first_layer_rgb_composites_of_3x3_filters_keep_their_colour(tmp_path):
    model = build(
        [
            {"type": "conv", "out": 2, "kernel": 3, "padding": 1},
            "relu",
            {"type": "globalpool", "mode": "avg"},
            {"type": "linear", "out": "classes"},
        ],
        (3, 8, 8),
        4,
    )
    with torch.no_grad():
        model.conv1.weight.zero_()
        model.conv1.weight[0, 0] = 1.0  # filter 0: pure red (all other weights 0, drawn grey)
        model.conv1.weight[1, 2] = -1.0  # filter 1: minus blue -> drawn (0.5, 0.5, 0): olive
    s = subject(model, random_split(8), root=tmp_path)
    Filters(layers=["conv1"], scale="shared")(s)
    a = pixels(tmp_path / "analysis" / "filters-conv1" / "conv1.png")
    # filter 0: red channel white (1.0), green and blue grey (0.5): (255, 128, 128)
    pink = ((a[..., 0] > 240) & (abs(a[..., 1] - 128) < 8) & (abs(a[..., 2] - 128) < 8)).sum()
    olive = ((abs(a[..., 0] - 128) < 8) & (abs(a[..., 1] - 128) < 8) & (a[..., 2] < 15)).sum()
    assert pink > 20 and olive > 20
    draw_pending(tmp_path)
    per = pixels(tmp_path / "analysis" / "filters-conv1" / "conv1" / "f0.png")
    assert ((per[..., 0] > 240) & (abs(per[..., 1] - 128) < 8) & (abs(per[..., 2] - 128) < 8)).sum() > 20


def test_topk_patches_of_a_3x3_receptive_field_keep_their_colour(tmp_path):
    from convlens.analyses import TopK
    from convlens.data import Split

    model = build(
        [
            {"type": "conv", "out": 1, "kernel": 3, "padding": 1},
            "relu",
            {"type": "globalpool", "mode": "avg"},
            {"type": "linear", "out": "classes"},
        ],
        (3, 8, 8),
        4,
    )
    with torch.no_grad():
        model.conv1.weight.zero_()
        model.conv1.bias.zero_()
        model.conv1.weight[0, 0, 1, 1] = 1.0  # the red of the centre pixel
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    x[2, 0] = 255  # image 2: pure red
    x[1, 1] = 200  # image 1: green
    split = Split(x, torch.arange(4), torch.arange(4))
    out = TopK(layers=["conv1"], k=1, at="conv")(subject(model.eval(), split, root=tmp_path))
    f = out["layers"]["conv1"]["filters"][0]
    assert f["positions"] == [2]
    draw_pending(tmp_path)
    a = pixels(tmp_path / "analysis" / "topk-conv1" / "conv1" / "f0_patches.png")
    assert count_red(a) > 50  # the 3x3 patch is drawn red (HWC reading: a white row over black)


def test_drawing_leaves_the_backend_and_rcparams_as_they_were(tmp_path):
    """A notebook's backend and settings survive importing convlens and drawing; the figures still
    get the house style: the same pixels as drawn with that style set globally through pyplot."""
    import subprocess
    import sys
    from pathlib import Path

    code = f"""
import sys, matplotlib
matplotlib.use("svg")
matplotlib.rcParams["font.size"] = 13.0
before = dict(matplotlib.rcParams)
import numpy as np
from convlens import plots
from convlens.explain.figures import single_image
plots.bars([10.0, 80.0], ["cat", "dog"], {str(tmp_path / "a.png")!r}, title="accuracy")
single_image(np.ones((3, 4, 4), dtype=np.float32) * 0.5, {str(tmp_path / "s.png")!r}, "grey")
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
changed = [k for k, v in matplotlib.rcParams.items() if before[k] != v]
assert not changed, changed
import matplotlib.pyplot as plt
plt.switch_backend("Agg")
plt.rcParams.update(plots.STYLE)
plots.bars([10.0, 80.0], ["cat", "dog"], {str(tmp_path / "b.png")!r}, title="accuracy")
print("ok")
"""
    src = Path(__file__).resolve().parents[1] / "src"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(src)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    a, b = pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png")
    assert a.shape == b.shape and np.array_equal(a, b)
    s = pixels(tmp_path / "s.png")
    assert (np.abs(s - 127.5) < 1).all(-1).sum() > 1000  # the grey image is shown


def test_a_figure_that_fails_half_way_leaves_the_old_png(tmp_path):
    p = plots.bars([10.0, 80.0], ["cat", "dog"], tmp_path / "bars.png")
    before = p.read_bytes()

    class Broken:
        def savefig(self, f, **_):
            f.write(b"\x89PNG half")
            raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        plots.save(Broken(), p)
    assert p.read_bytes() == before and [q.name for q in tmp_path.iterdir()] == ["bars.png"]


def _bars_in(a, rgb):
    """(left, right, top, bottom) of each run of columns holding the colour ``rgb``, left to right."""
    hit = (np.abs(a[..., :3].astype(int) - np.asarray(rgb)).max(-1) <= 2).any(0)
    cols = np.flatnonzero(hit)
    runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1) if cols.size else []
    out = []
    for r in runs:
        rows = np.flatnonzero((np.abs(a[:, r[0], :3].astype(int) - np.asarray(rgb)).max(-1) <= 2))
        out.append((r[0], r[-1], rows[0], rows[-1]))
    return out


def test_bar_chart_draws_bars_proportional_to_the_values_with_labels(tmp_path):
    from PIL import Image

    classes = ["airplane", "automobile", "bird", "cat"]
    p = plots.bar_chart(
        [1.0, 2.0, 0.5, 3.0], classes, tmp_path / "b.png", title="conv1 filter 0", ylabel="norm", highlight=1
    )
    a = np.asarray(Image.open(p).convert("RGB"))
    blue, orange = (0x4C, 0x72, 0xB0), (0xDD, 0x84, 0x52)
    bars = sorted(_bars_in(a, blue) + _bars_in(a, orange))
    assert len(bars) == 4 and [b[:2] for b in _bars_in(a, orange)] == [bars[1][:2]]
    heights = np.array([b[3] - b[2] + 1 for b in bars], dtype=float)
    assert len({b[3] for b in bars}) == 1  # one baseline
    assert np.allclose(heights / heights[3], [1 / 3, 2 / 3, 1 / 6, 1.0], atol=0.02)
    # class labels: ink under each bar, below the baseline
    base = bars[0][3]
    for left, right, _, _ in bars:
        assert (a[base + 6 :, left : right + 1].min(-1) < 128).sum() > 20
    # a labelled value axis: tick labels and the axis label left of the first bar
    assert (a[: base + 1, : bars[0][0] - 4].min(-1) < 128).sum() > 50
    # 8 pt text: the title's capital letters are at least as tall as matplotlib's 8 pt at this dpi
    ink = np.flatnonzero((a[:20, :].min(-1) < 128).any(1))
    assert ink[-1] - ink[0] + 1 >= 0.7 * plots.SMALL * plots.STYLE["savefig.dpi"] / 72


def test_bar_chart_leaves_an_absent_class_without_a_bar(tmp_path):
    from PIL import Image

    p = plots.bar_chart([1.0, float("nan"), 2.0], ["a", "b", "c"], tmp_path / "b.png")
    a = np.asarray(Image.open(p).convert("RGB"))
    assert len(_bars_in(a, (0x4C, 0x72, 0xB0))) == 2


def test_panels_stack_one_chart_per_series_with_highlights_and_a_legend(tmp_path):
    from PIL import Image

    p = plots.panels(
        {"mean": [1.0, -2.0, 3.0, 4.0], "max": [2.0, 2.0, 2.0, 2.0]},
        tmp_path / "p.png",
        xlabel="filter",
        title="conv1: per-filter statistics",
        highlight=[2],
        highlight_label="dead",
    )
    a = np.asarray(Image.open(p).convert("RGB"))
    blue, red = (0x4C, 0x72, 0xB0), (0xC4, 0x4E, 0x52)
    blues = _bars_in(a, blue)
    assert len(blues) == 3  # filters 0, 1 and 3 (each column run spans both panels)
    # filter 2 is red, between filters 1 and 3, in the upper and the lower panel
    left, right = blues[1][1] + 1, blues[2][0] - 1
    rows = np.flatnonzero((np.abs(a[:, left : right + 1].astype(int) - red).max(-1) <= 2).any(1))
    split = (blues[0][2] + blues[0][3]) // 2
    assert rows.min() < split < rows.max()


def test_confusion_cells_darken_with_their_count_and_show_it(tmp_path):
    from PIL import Image

    from convlens import plots

    m = [[0, 10], [30, 60]]
    p = plots.confusion(m, ["cat", "dog"], tmp_path / "c.png", title="t")
    a = np.asarray(Image.open(p).convert("RGB")).astype(int)
    # the cells: the largest square block of non-white, non-text colour; find it by sampling
    # the colour each count is drawn with (matplotlib's Blues on [0, 60])
    shades = plots._colours("Blues", np.array([0.0, 10.0, 30.0, 60.0]), 0, 60).astype(int)
    found = [np.argwhere((a == s).all(-1)) for s in shades]
    assert all(len(f) > 100 for f in found)  # every cell is drawn in its own colour
    assert list(np.argsort([-s.sum() for s in shades])) == [0, 1, 2, 3]  # more, darker
    for f, text in zip(found, ("0", "10", "30", "60")):
        (y0, x0), (y1, x1) = f.min(0), f.max(0)
        cell = a[y0 : y1 + 1, x0 : x1 + 1]
        differs = (np.abs(cell - cell[0, 0]).sum(-1) > 60).sum()
        assert differs > 5, text  # its number is drawn inside


def test_confusion_colour_bar_runs_from_low_at_the_bottom_to_high_at_the_top(tmp_path):
    from PIL import Image

    from convlens import plots

    p = plots.confusion([[1, 2], [3, 4]], ["a", "b"], tmp_path / "c.png", diverging=True)
    a = np.asarray(Image.open(p).convert("RGB")).astype(int)
    red, blue = a[..., 0] - a[..., 2], a[..., 2] - a[..., 0]
    coloured = np.where(((red > 100) | (blue > 100)).any(0))[0]
    col = int(coloured.max()) - 2  # the bar is the right-most coloured column: red above, blue below
    rows = np.where((red[:, col] > 100) | (blue[:, col] > 100))[0]
    top, bottom = a[rows.min() + 2, col], a[rows.max() - 2, col]
    assert top[0] > top[2] + 100 and bottom[2] > bottom[0] + 100


CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _no_overlaps(layout: list[plots.Box], size: tuple[int, int]) -> None:
    assert plots.overlaps(layout) == []
    for b in layout:  # and nothing runs past the picture's edge
        assert 0 <= b.left and b.right <= size[0] and 0 <= b.top and b.bottom <= size[1], b


def test_mosaic_titles_fit_their_tiles_and_touch_nothing(tmp_path):
    # the example-classification figure: ten 32 px images, "true -> predicted probability" titles
    rng = np.random.default_rng(0)
    tiles = list(rng.random((20, 3, 32, 32)))
    titles = [f"{CIFAR[i % 10]} \u2192 {CIFAR[(i * 7 + 3) % 10]} {i * 5}%" for i in range(20)]
    kw = dict(layout="chw", cols=10, titles=titles, suptitle="most confident mistakes " * 6, tile_inches=1.1)
    layout = plots.mosaic_boxes(tiles, **kw)
    size = Image.open(plots.mosaic(tiles, tmp_path / "m.png", **kw)).size
    _no_overlaps(layout, size)
    texts = [b for b in layout if b.kind == "text"]
    assert len([b for b in layout if b.kind == "tile"]) == 20
    # every word of every title is drawn (wrapped over two lines, not cut)
    assert {w for t in titles for w in t.split()} <= {w for b in texts for w in b.text.split()}
    # a title too long for two lines is cut with an ellipsis, still inside its tile's width
    one = plots.mosaic_boxes(tiles[:2], layout="chw", cols=2, titles=["a" * 200, "b"], tile_inches=0.5)
    _no_overlaps(one, (10_000, 10_000))
    assert any(b.text.endswith("\u2026") for b in one)


def test_a_long_colour_bar_label_wraps_inside_the_picture(tmp_path):
    maps = list(np.random.default_rng(1).random((6, 8, 8)))
    label = "activation; each row on its own scale, clipped at its 99.5th percentile of |value| over all maps"
    kw = dict(layout="hw", cols=3, titles=[f"f{i}" for i in range(6)], vmin=0, vmax=1, colorbar=label)
    layout = plots.mosaic_boxes(maps, **kw)
    size = Image.open(plots.mosaic(maps, tmp_path / "m.png", **kw)).size
    _no_overlaps(layout, size)


def test_every_tile_has_a_frame_so_a_white_patch_shows(tmp_path):
    p = plots.mosaic([np.ones((3, 8, 8))], tmp_path / "w.png", layout="chw", cols=1)
    a = np.asarray(Image.open(p).convert("L"))
    (tile,) = [b for b in plots.mosaic_boxes([np.ones((3, 8, 8))], layout="chw", cols=1) if b.kind == "tile"]
    top, left = int(tile.top), int(tile.left)
    assert a[top, left + 5] < 230 and a[top + 5, left] < 230  # the frame
    assert a[top + 5, left + 5] == 255  # the white patch inside it


def test_deconvnet_titles_touch_no_column_header_and_no_picture(monkeypatch, tmp_path):
    from convlens.explain import figures as ef
    from convlens.explain.heatmap import normalize_heatmaps

    drawn = []
    monkeypatch.setattr(ef, "save", lambda fig, path: drawn.append(fig) or path)
    rng = np.random.default_rng(0)
    images, signal = rng.random((4, 3, 32, 32)), rng.random((4, 3, 32, 32)) * 2 - 1
    heat, scale = normalize_heatmaps(rng.random((4, 32, 32)))
    titles = [f"#{1000 + i} automobile -> airplane (wrong)" for i in range(4)]
    ef.attribution_grid(images, heat, scale, titles, tmp_path / "d.png", title="deconvnet", signal=signal)
    (fig,) = drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    texts = [ax.title for ax in fig.axes if ax.get_title()]
    boxes = [t.get_window_extent(r) for t in texts] + [im.get_window_extent(r) for ax in fig.axes for im in ax.images]
    assert len(texts) >= 4 + 3
    for i, a in enumerate(boxes[: len(texts)]):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (texts[i].get_text(), b)


def test_training_curves_tick_whole_epochs(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(plots, "save", lambda fig, path: drawn.append(fig) or path)
    rows = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_acc": 0.5, "val_acc": 0.4, "lr": 0.1}
        for e in (1, 2)
    ]
    plots.curves(rows, tmp_path / "c.png")
    (fig,) = drawn
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks  # never 1.5


def test_tiles_far_finer_than_their_tile_are_averaged_down():
    # 64 tiles of 224 px in 0.45 inch tiles (a deep layer's top patches at ImageNet size): each
    # 224 px side becomes 224 / 3 px (3 x 3 blocks averaged), not a canvas 20x the screen's detail
    rng = np.random.default_rng(0)
    tiles = [rng.random((3, 224, 224)) for _ in range(64)]
    boxes = [(30, 90, 60, 120)] * 64
    layout = plots.mosaic_boxes(tiles, layout="chw", cols=8, tile_inches=0.45, boxes=boxes)
    sides = {(b.right - b.left - 2, b.bottom - b.top - 2) for b in layout if b.kind == "tile"}
    assert sides == {(75, 75)}  # ceil(224 / 3): the last block holds the edge pixel, repeated
    shown, f = plots._shrink([plots.to_display(tiles[0], "chw")], 0.45)
    assert f == 3
    np.testing.assert_allclose(shown[0][0, 0], tiles[0][:, :3, :3].mean(axis=(1, 2)))
    # small tiles keep every pixel
    assert plots._shrink([np.ones((8, 8))], 0.45)[1] == 1


def test_a_box_on_a_tile_averaged_down_surrounds_what_it_surrounded(tmp_path):
    tile = np.full((3, 224, 224), 0.5)
    kw = dict(layout="chw", cols=1, tile_inches=0.45, boxes=[(30, 90, 60, 120)])
    (box,) = [b for b in plots.mosaic_boxes([tile], **kw) if b.kind == "tile"]
    a = pixels(plots.mosaic([tile], tmp_path / "m.png", **kw))
    red = (a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)
    rows, cols = np.nonzero(red)
    left, top = box.left + 1, box.top + 1  # the tile's first pixel (its frame is one pixel out)
    # rows 30..90 and columns 60..120 of 224 are rows 10..30 and columns 20..40 of 75
    assert (rows.min() - top, rows.max() - top + 1) == (10, 30)
    assert (cols.min() - left, cols.max() - left + 1) == (20, 40)
