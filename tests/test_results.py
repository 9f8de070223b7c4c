"""Results, run cards and heat-map overlays as a notebook shows them: escaped HTML with an inline
PNG, and ``Figure`` objects drawn without pyplot or any change to matplotlib's settings."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analyses_models import CLASSES, dot_net, dot_split, one_thread  # noqa: F401  (fixture)
from convlens.results import Result, png_bytes

EVIL = '<script>alert("x")</script>'


def pngs(html_text: str) -> list[np.ndarray]:
    from matplotlib.image import imread

    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_text)
    return [imread(io.BytesIO(base64.b64decode(b)), format="png") for b in found]


def test_a_result_is_still_its_json_document_and_renders_escaped_html():
    from convlens.analyses import Errors, Subject

    r = Errors()(Subject(dot_net(), dot_split(), CLASSES, None))
    assert isinstance(r, dict) and isinstance(r, Result) and r.root is None
    assert r["analysis"] == "errors" and set(r) >= {"accuracy", "confusion", "per_class_accuracy"}
    r2 = Result({**r, "note": EVIL}, None)
    page = r2._repr_html_()
    assert EVIL not in page and "&lt;script&gt;" in page
    (img,) = pngs(page)
    assert img.shape[0] > 50 and img.shape[1] > 100
    assert (img[..., :3].std(axis=(0, 1)) > 0.05).any()  # bars and a confusion matrix, not a blank


def test_plot_draws_per_filter_values_with_no_run_folder():
    """Without a run folder the plot is drawn from the document: filter 0's bar is taller."""
    doc = {"analysis": "stats", "layers": {"conv1": {"active_fraction": [1.0, 0.25]}}, "figures": []}
    fig = Result(doc).plot()
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == [1.0, 0.25] and ax.get_title() == "conv1: active_fraction"
    assert png_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_with_a_run_folder_the_first_listed_png_is_embedded_as_it_is(tmp_path):
    from convlens import plots

    red = np.zeros((3, 4, 4), np.float32)
    red[0] = 1
    plots.mosaic([red], tmp_path / "analysis" / "x" / "a.png", layout="chw", cols=1)
    doc = {"analysis": "x", "figures": [{"path": "analysis/x/a.png", "caption": "red"}]}
    r = Result(doc, tmp_path)
    assert r.figure_file() == tmp_path / "analysis" / "x" / "a.png"
    (img,) = pngs(r._repr_html_())
    from matplotlib.image import imread

    assert np.array_equal(img, imread(str(tmp_path / "analysis" / "x" / "a.png")))  # the file, not a redraw
    reds = (img[..., 0] > 0.9) & (img[..., 1] < 0.1) & (img[..., 2] < 0.1)
    assert reds.sum() > 100
    fig = r.plot()
    assert len(fig.axes) == 1 and fig.axes[0].images[0].get_array().shape[:2] == img.shape[:2]


def test_analyze_returns_results_that_render_together():
    from convlens.analyses import Subject, analyze

    res = analyze(Subject(dot_net(), dot_split(), CLASSES, None), only=["filters", "errors"])
    assert list(res) == ["filters", "errors"] and all(isinstance(v, Result) for v in res.values())
    assert len(pngs(res._repr_html_())) == 2


def test_a_run_shows_a_card_with_its_config_accuracy_and_curves(tmp_path):
    from conftest import tiny_config
    from convlens.train import train

    from convlens.results import RunCard

    run = train(tiny_config(), tmp_path / "<r&d>", echo=lambda s: None)
    page = RunCard(run)._repr_html_()
    assert RunCard(run.path)._repr_html_() == page  # a path shows the same card
    assert "&lt;r&amp;d&gt;" in page and "<r&d>" not in page
    ev = run.eval
    assert f"{100 * ev['accuracy']:.2f}%" in page and "digits" in page and ">tiny<" in page
    (img,) = pngs(page)
    assert img.shape[1] > 300
    fig = RunCard(run).plot()
    train_acc = [100 * r["train_acc"] for r in run.metrics()]
    assert list(fig.axes[1].lines[0].get_ydata()) == pytest.approx(train_acc)


def test_show_overlays_maps_on_one_shared_scale():
    """The hot pixel of each map is at its place over the image; maps share one scale."""
    import convlens

    images = torch.zeros(2, 3, 4, 4)
    maps = torch.zeros(2, 4, 4)
    maps[0, 1, 2] = 2.0
    maps[1, 3, 0] = 1.0
    fig = convlens.show(images, maps, layout="map", percentile=100)
    a0 = fig.axes[0].images[0].get_array()
    a1 = fig.axes[1].images[0].get_array()
    assert a0[1, 2] == 1.0 and a1[3, 0] == 0.5  # shared scale: the second map's peak is half
    assert (
        fig.axes[-1].get_ylabel().replace("\n", " ")
        == "|attribution|; one scale for all 2 maps, clipped at the max (2)"
    )
    side = convlens.show(images, {"m": maps, "n": 2 * maps}, layout="side", percentile=100)
    assert len(side.axes) == 2 * 4 + 2  # two rows of image + map pairs, and a colour bar for each row
    labels = [ax.get_ylabel().replace("\n", " ") for ax in side.axes[-2:]]
    # each bar names its own row's scale (no "each row on its own scale ... one scale for all" mix)
    assert labels == [f"|attribution|; one scale for all 2 maps, clipped at the max ({v})" for v in ("2", "4")]
    with pytest.raises(ValueError, match="one .* map per image"):
        convlens.show(images, maps[:1])
    with pytest.raises(ValueError, match="layout 'grid' is not one of"):
        convlens.show(images, maps, layout="grid")


def test_nothing_global_changes_and_the_package_import_stays_light(tmp_path):
    code = """
import sys, matplotlib
matplotlib.use("svg")
matplotlib.rcParams["font.size"] = 13.0
before = dict(matplotlib.rcParams)
import convlens
assert "torch" not in sys.modules, "convlens imports torch"
import torch
from convlens.results import Result
fig = convlens.show(torch.rand(2, 3, 5, 5), torch.rand(2, 5, 5))
Result({"analysis": "x", "layers": {"c": {"l2": [1.0, 2.0]}}})._repr_html_()
assert fig._repr_png_()[:4] == b"\\x89PNG"
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
changed = [k for k, v in matplotlib.rcParams.items() if before[k] != v]
assert not changed, changed
print("ok")
"""
    src = Path(__file__).resolve().parents[1] / "src"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(src)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_notebook_tables_write_numbers_as_the_report_does():
    from convlens.results import fmt

    assert [fmt(1730), fmt(24170.0), fmt(12950.3), fmt(0.4254), fmt(True)] == [
        "1,730",
        "24,170",
        "12,950",
        "0.4254",
        "True",
    ]
