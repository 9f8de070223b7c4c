"""Per-filter figures drawn when first needed: the same pixels as drawn from the data in memory,
drawn once, and the figures set with Pillow (strip, grouped bars) show their numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from analyses_models import CLASSES, dot_net, dot_split, one_thread, random_net, random_split, subject  # noqa: F401
from PIL import Image

from convlens import plots
from convlens.analyses import ClassNorms, Filters, TopK
from convlens.analyses.perfilter import draw_pending, topk_images, weights_shown, window_patch
from convlens.analyses.topk import patch
from convlens.models.summary import ReceptiveField


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int32)


def test_topk_figures_drawn_later_equal_those_drawn_from_the_split(tmp_path):
    model, split = dot_net(), dot_split()
    out = TopK(k=3)(subject(model, split, root=tmp_path))
    fi = out["layers"]["conv1"]["filters"][0]
    listed = [f for f in out["figures"] if f.get("filter") == 0 and f["layer"] == "conv1"]
    assert len(listed) == 2 and all(f["pending"] for f in listed)
    assert not any((tmp_path / f["path"]).exists() for f in listed)
    drawn = draw_pending(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in drawn} == {
        f["path"] for f in out["figures"] if f.get("pending")
    }
    assert draw_pending(tmp_path) == []  # drawn once: the files stay
    # the stored winners are read as a memory map (one filter's figure reads its k images only)
    stored, row = topk_images(json.loads((tmp_path / "analysis/topk.json").read_text()), tmp_path)
    assert isinstance(stored, np.memmap)
    np.testing.assert_array_equal(stored[[row[p] for p in fi["positions"]]], split.images[fi["positions"]].numpy())
    # the same figure drawn straight from the split's images, as analyze drew it before
    imgs = split.images[fi["positions"]].float().div(255).numpy()
    ref = plots.mosaic(
        list(imgs),
        tmp_path / "ref.png",
        layout="chw",
        cols=5,
        titles=[f"{CLASSES[c]} {s:.3g}" for c, s in zip(fi["labels"], fi["scores"])],
        boxes=[tuple(w) for w in fi["windows"]],
        suptitle=f"conv1 filter 0: top 3 test images (max of {out['layers']['conv1']['measured_at']}); "
        "box: receptive field of the maximum",
    )
    np.testing.assert_array_equal(pixels(tmp_path / "analysis/topk/conv1/f0.png"), pixels(ref))
    rf = ReceptiveField(**out["layers"]["conv1"]["receptive_field"])
    patches = [patch(imgs[n], rf, *ij) for n, ij in enumerate(fi["locations"])]
    ref = plots.mosaic(
        patches,
        tmp_path / "ref_patches.png",
        layout="chw",
        cols=5,
        tile_inches=0.6,
        titles=[CLASSES[c] for c in fi["labels"]],
        suptitle=f"conv1 filter 0: {rf.size}x{rf.cols[0]} input patches under the maximum",
    )
    np.testing.assert_array_equal(pixels(tmp_path / "analysis/topk/conv1/f0_patches.png"), pixels(ref))


def test_a_window_patch_from_the_json_equals_the_receptive_field_patch():
    image = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    for rf in (ReceptiveField(5, 2, -2), ReceptiveField(3, 1, -1, size_x=5, jump_x=2, start_x=-2)):
        for i, j in ((0, 0), (2, 3), (3, 3)):
            np.testing.assert_array_equal(window_patch(image, rf.to_dict(), i, j), patch(image, rf, i, j))


def test_filter_figures_drawn_later_show_the_weights(tmp_path):
    model = random_net()
    out = Filters(layers=["conv1"], scale="filter")(subject(model, random_split(8), root=tmp_path))
    assert out["layers"]["conv1"]["rgb"] and out["arrays"] == "analysis/filters-conv1.npz"
    draw_pending(tmp_path)
    w = model.conv1.weight.detach()
    m = w.flatten(1).abs().amax(1).clamp(min=1e-12).view(-1, 1, 1, 1)
    want = (0.5 + 0.5 * w / m).clamp(0, 1).numpy()
    shown, how = weights_shown(w.numpy(), "filter")
    np.testing.assert_allclose(shown, want, atol=1e-6)
    assert how.startswith("each filter on its own scale")
    ref = plots.mosaic(
        [shown[1]] + [shown[1, j] for j in range(3)],
        tmp_path / "ref.png",
        layout=["chw", "hw", "hw", "hw"],
        cols=4,
        titles=["RGB", "R", "G", "B"],
        tile_inches=0.6,
        suptitle=f"conv1 filter 1 (3x3); {how}",
    )
    np.testing.assert_array_equal(pixels(tmp_path / "analysis/filters-conv1/conv1/f1.png"), pixels(ref))


def test_classnorms_bars_drawn_later_and_redrawn_after_a_rerun(tmp_path):
    model, split = dot_net(), dot_split()
    ClassNorms(bars=["conv1"])(subject(model, split, root=tmp_path))
    doc = json.loads((tmp_path / "analysis/classnorms.json").read_text())
    draw_pending(tmp_path, [doc])
    f1 = tmp_path / "analysis/classnorms/conv1/f1.png"
    assert f1.is_file()
    info = doc["layers"]["conv1"]
    ref = plots.bar_chart(
        info["class_means"][1],
        CLASSES,
        tmp_path / "ref.png",
        title=f"conv1 filter 1: var {info['variance'][1]:.3g}, SI {info['selectivity'][1]:.2f}"
        + (" (nearly silent)" if 1 in info["quiet"] else ""),
        ylabel="mean L2 norm",
        highlight=CLASSES.index(info["preferred_class"][1]),
    )
    np.testing.assert_array_equal(pixels(f1), pixels(ref))
    ClassNorms(bars=["conv1"])(subject(model, split, root=tmp_path))  # a rerun: the old figures go
    assert not f1.exists()


def test_a_rerun_without_figures_leaves_no_arrays_of_the_earlier_one(tmp_path):
    model, split = dot_net(), dot_split()
    TopK(k=2)(subject(model, split, root=tmp_path))
    assert (tmp_path / "analysis/topk.npz").is_file()
    out = TopK(k=2)(subject(model, split, root=tmp_path, figures=False))
    assert "arrays" not in out and not (tmp_path / "analysis/topk.npz").exists()


def test_the_report_notes_figures_it_cannot_draw(tmp_path):
    from convlens.report.run_report import draw_filter_figures
    from convlens.report.analyses import load_analyses

    TopK(k=2)(subject(dot_net(), dot_split(), root=tmp_path))
    (tmp_path / "analysis" / "topk.npz").unlink()
    analyses, _ = load_analyses(tmp_path)
    said = []
    notes = draw_filter_figures(tmp_path, analyses, said.append)
    assert len(notes) == 1 and notes[0].startswith("topk.json: its per-filter figures could not be drawn")
    assert said == []


def colour(hex_: str) -> np.ndarray:
    return np.array([int(hex_[i : i + 2], 16) for i in (1, 3, 5)])


def columns_of(a: np.ndarray, hex_: str) -> np.ndarray:
    """Pixel columns holding the colour ``hex_``, and how many pixels of it each has."""
    return (a == colour(hex_)).all(-1).sum(0)


def test_grouped_bars_draw_each_series_in_its_colour_at_its_height(tmp_path):
    p = plots.grouped_bars(
        {"before": [50.0, 100.0, float("nan")], "after": [25.0, 0.0, 75.0]},
        ["a", "b", "c"],
        tmp_path / "g.png",
        ylim=(0, 100),
        ylabel="accuracy (%)",
    )
    a = pixels(p)
    heights = {}
    for name, hex_ in (("before", plots.CYCLE[0]), ("after", plots.CYCLE[1])):
        runs = columns_of(a, hex_)
        cols = np.nonzero(runs > 12)[0]  # the bars; a legend swatch is lower than that
        groups = np.split(cols, np.nonzero(np.diff(cols) > 1)[0] + 1)
        heights[name] = [(int(g[0]), int(runs[g].max())) for g in groups if len(g)]
    (xb0, b50), (xb1, b100) = heights["before"]  # no bar for NaN
    (xa0, a25), (xa2, a75) = heights["after"]  # a zero-height bar shows nothing
    assert b100 == pytest.approx(2 * b50, abs=2) and a75 == pytest.approx(3 * a25, abs=2)
    assert b100 == pytest.approx(int(2.2 * plots.STYLE["savefig.dpi"]), abs=2)  # 100 fills the axis
    assert xb0 < xa0 < xb1 < xa2  # side by side, one slot per label, "before" left of "after"


def _blobs(mask: np.ndarray) -> int:
    """Connected groups of True pixels (4-neighbours), by flood fill."""
    seen = np.zeros_like(mask, dtype=bool)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        stack = [start]
        seen[start] = True
        while stack:
            y, x = stack.pop()
            for q in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= q[0] < mask.shape[0] and 0 <= q[1] < mask.shape[1] and mask[q] and not seen[q]:
                    seen[q] = True
                    stack.append(q)
    return count


def test_a_strip_marks_every_value_and_the_median(tmp_path):
    p = plots.strip({"conv1": [0.1, 0.3], "conv2": [0.5, None, float("nan"), 0.9]}, tmp_path / "s.png")
    a = pixels(p)
    dots = (a == colour(plots.DOT)).all(-1)
    assert _blobs(dots) == 4  # the finite values, one dot each (no two overlap here, none under a median)
    orange = (a == colour(plots.ORANGE)).all(-1)
    rows = np.nonzero(orange.any(1))[0]
    assert len(rows) >= 2  # two medians at different heights
    assert _blobs(orange) == 2


def test_strip_and_grouped_bars_do_not_need_matplotlib_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "save", lambda *a: pytest.fail("drawn through matplotlib"))
    plots.strip({"a": [1.0, 2.0]}, tmp_path / "s.png", title="t", ylabel="y")
    plots.grouped_bars({"x": [1.0]}, ["a"], tmp_path / "g.png", title="t")
    assert (tmp_path / "s.png").is_file() and (tmp_path / "g.png").is_file()


def test_a_notebook_shows_the_first_listed_figure_drawing_it_if_pending(tmp_path):
    out = TopK(k=2)(subject(dot_net(), dot_split(), root=tmp_path))
    first = out["figures"][0]
    assert first["pending"] and first["path"] == "analysis/topk/conv1/f0.png"
    assert out.figure_file() == tmp_path / first["path"]  # drawn now, that one only
    assert not (tmp_path / "analysis/topk/conv1/f0_patches.png").exists()
    assert "data:image/png;base64," in out._repr_html_()


def test_figures_are_written_whole_without_waiting_for_the_disk(tmp_path, monkeypatch):
    import convlens.utils as utils

    synced = []
    monkeypatch.setattr(utils.os, "fsync", synced.append)
    p = plots.bar_chart([1.0, 2.0], ["a", "b"], tmp_path / "b.png", title="t")
    assert synced == [] and Image.open(p).size[0] > 50  # a figure: renamed into place, not synced
    assert [q.name for q in tmp_path.iterdir()] == ["b.png"]  # no temporary file left
    utils.write_json(tmp_path / "x.json", {"a": 1})
    assert len(synced) == 1  # the numbers are


@pytest.mark.parametrize("nbins", [4, 5])
def test_nice_ticks_are_matplotlibs(nbins):
    from matplotlib.ticker import MaxNLocator

    rng = np.random.default_rng(0)
    spans = [(0, 1), (0, 100), (-3, 7), (0.1, 0.9), (1e-9, 3e-9), (1000, 1000.5), (-0.5, 0.5), (0, 1e6), (2, 2)]
    spans += [tuple(sorted(rng.normal(0, 10 ** rng.uniform(-6, 6), 2))) for _ in range(300)]
    spans += [(m, m + 10 ** rng.uniform(-3, 1)) for m in rng.uniform(-1e4, 1e4, 100)]  # offsets
    for lo, hi in spans:
        want = [float(t) for t in MaxNLocator(nbins).tick_values(lo, hi)]
        assert plots.nice_ticks(lo, hi, nbins) == want, (lo, hi)


def test_colour_maps_and_font_are_matplotlibs_without_importing_it():
    from matplotlib import colormaps, font_manager

    with np.load(plots.Path(plots.__file__).with_name("colormaps.npz")) as z:
        names = z.files
    assert {"gray", "viridis", "magma", "Blues", "RdBu_r"} <= set(names)  # those the analyses use
    t = np.concatenate([np.linspace(0, 1, 4097), np.random.default_rng(0).random(10000), [np.nan]])
    for name in names:
        want = (colormaps[name](np.nan_to_num(t))[..., :3] * 255 + 0.5).astype(np.uint8)
        want[-1] = 255  # NaN: white
        np.testing.assert_array_equal(plots._colours(name, t, 0.0, 1.0), want, err_msg=name)
    assert plots._lut("no such map") is None
    np.testing.assert_array_equal(  # another map: through matplotlib
        plots._colours("Greens", t[:-1], 0, 1), (colormaps["Greens"](t[:-1])[..., :3] * 255 + 0.5).astype(np.uint8)
    )
    assert plots._font_file() == font_manager.findfont("DejaVu Sans")


def test_analyze_draws_its_figures_without_importing_matplotlib(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).parent
    code = f"""
import sys
sys.path.insert(0, {str(tests)!r})
from analyses_models import random_net, random_split, subject
from convlens.analyses import analyze
out = analyze(subject(random_net(), random_split(24), root={str(tmp_path)!r}), k=3, examples=4, mistakes=4)
assert sum(len(r["figures"]) for r in out.values()) > 20
assert not [m for m in sys.modules if m.startswith("matplotlib")], "matplotlib imported"
"""
    env = {**__import__("os").environ, "PYTHONPATH": str(tests.parent / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_notebook_skips_a_pending_figure_it_cannot_draw(tmp_path):
    out = TopK(k=2)(subject(dot_net(), dot_split(), root=tmp_path))
    (tmp_path / "analysis" / "topk.npz").unlink()
    assert out.figure_file() == tmp_path / "analysis/topk/conv1.png"  # the first figure drawn at analyze time


def test_a_window_larger_than_the_image_is_cut_to_the_image_side():
    # a deep layer's field (21 px, jump 4, start -9) over an 8x8 image: the patch is 8x8, holds
    # every image pixel the window holds, and stays inside the window (grey only where it pads)
    image = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    rf = ReceptiveField(21, 4, -9).to_dict()
    whole = window_patch(image, rf, 1, 1)  # window [-5, 16): covers the image
    assert whole.shape == (3, 8, 8)
    np.testing.assert_array_equal(whole, image)
    corner = window_patch(image, rf, 0, 3)  # rows [-9, 12) cover the image; columns [3, 24) hold 3..7
    assert corner.shape == (3, 8, 8)
    np.testing.assert_array_equal(corner[:, :, :5], image[:, :, 3:])
    assert (corner[:, :, 5:] == 0.5).all()
    # a window that fits is unchanged: its full size, padded grey
    assert window_patch(image, ReceptiveField(5, 2, -2).to_dict(), 0, 0).shape == (3, 5, 5)


def test_topk_patches_of_a_deep_layer_are_no_larger_than_the_image(tmp_path):
    from convlens.analyses.perfilter import topk_figure

    imgs = np.random.default_rng(1).random((2, 3, 8, 8)).astype(np.float32)
    doc = {
        "classes": CLASSES,
        "split": "test",
        "score": "max",
        "layers": {"deep": {"receptive_field": ReceptiveField(101, 8, -40).to_dict(), "measured_at": "deep"}},
    }
    fi = {"filter": 0, "locations": [[0, 0], [1, 1]], "labels": [0, 1]}
    out = topk_figure(doc, "deep", fi, imgs, tmp_path / "p.png", patches=True)
    ref = plots.mosaic(
        [imgs[0], imgs[1]],
        tmp_path / "ref.png",
        layout="chw",
        cols=5,
        tile_inches=0.6,
        titles=[CLASSES[0], CLASSES[1]],
        suptitle="deep filter 0: 101x101 (cut to the 8x8 image) input patches under the maximum",
    )
    np.testing.assert_array_equal(pixels(out), pixels(ref))
