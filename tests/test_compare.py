"""`convlens compare`: linear CKA against hand computations, and comparisons of tiny digits runs."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from matplotlib.image import imread

from convlens import runload
from convlens.cli import main
from convlens.compare import compare_runs, linear_cka
from convlens.compare.diff import filter_changes
from convlens.compare.page import COLORS
from convlens.run import Run
from convlens.run.layout import CompareLayout
from convlens.train import train


def test_linear_cka_matches_a_hand_computation():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    y = torch.tensor([[1.0], [0.0], [-1.0], [0.0]])
    # centred already: ||X^T Y||^2 = 4, ||X^T X||_F = sqrt(8), ||Y^T Y||_F = 2
    assert linear_cka(x, y) == pytest.approx(4 / (math.sqrt(8) * 2))
    assert linear_cka(x + 3.0, y - 1.0) == pytest.approx(1 / math.sqrt(2))  # centring removes offsets


def test_linear_cka_is_one_on_itself_and_invariant_to_rotation_and_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = torch.randn(40, 9, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 7.5 * x @ q) == pytest.approx(1.0)
    base = linear_cka(x, y)
    assert 0 < base < 1
    assert linear_cka(x @ q, 0.1 * y) == pytest.approx(base)
    assert linear_cka(x.reshape(40, 2, 3), y) == pytest.approx(base)  # feature maps are flattened
    assert math.isnan(linear_cka(torch.ones(5, 2), torch.randn(5, 2, generator=g)))
    with pytest.raises(ValueError, match="same images"):
        linear_cka(x, y[:10])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    quiet = dict(echo=lambda s: None)
    a = train(tiny_config(**{"train.epochs": 2}), root / "a", **quiet)
    b = train(tiny_config(**{"train.epochs": 2, "seed": 1}), root / "b", **quiet)
    c = train(tiny_config(**{"train.epochs": 1, "model.options.width": 6}), root / "c", **quiet)
    return root, a, b, c


def _colour_pixels(png, hex_colour) -> int:
    img = imread(png)[..., :3]
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return int((np.abs(img - rgb).max(-1) < 0.02).sum())


def test_two_seeds_compare_everywhere(runs, capsys):
    root, a, b, _ = runs
    assert main(["compare", str(a.path), str(b.path), "--out", str(root / "ab"), "--json", "--cka-images", "100"]) == 0
    doc = json.loads(capsys.readouterr().out)
    saved = json.loads(CompareLayout(root / "ab").json.read_text())
    assert saved["pairs"][0]["config"] == doc["pairs"][0]["config"]
    pair = doc["pairs"][0]
    assert [r["key"] for r in pair["config"]] == ["seed"] and pair["config"][0]["b"] == 1
    m = pair["metrics"]["test_acc"]
    assert m["a"] == a.eval["accuracy"] and m["delta"] == pytest.approx(b.eval["accuracy"] - a.eval["accuracy"])
    cls = pair["classes"]
    assert len(cls["per_class"]) == 10
    diff = np.array(cls["confusion_diff"])
    assert (diff == np.array(b.eval["confusion"]) - np.array(a.eval["confusion"])).all()
    assert diff.sum() == 0  # the same test images on both sides
    cka = pair["cka"]
    model = runload.load_model(a)
    leaves = [n for n, mod in model.named_modules() if n and not any(mod.children())]
    assert cka["images"] == 100 and [r["layer"] for r in cka["layers"]] == [
        n for n in leaves if n not in cka["skipped"]
    ]
    assert all(0 <= r["cka"] <= 1 + 1e-9 for r in cka["layers"])
    assert cka["layers"][-1]["shape_a"] == [10]  # the logits of different seeds still agree a lot
    assert cka["layers"][-1]["cka"] > 0.5
    # the page shows the overlaid curves in each run's colour, and names every compared layer
    out = CompareLayout(root / "ab")
    curves = out.path / doc["curves"]
    assert _colour_pixels(curves, COLORS[0]) > 50 and _colour_pixels(curves, COLORS[1]) > 50
    html = out.html.read_text()
    assert all(r["layer"] in html for r in cka["layers"]) and "seed" in html
    for name in pair["figures"].values():
        assert name in html and (out.path / name).is_file()


def test_a_run_compared_with_itself_has_cka_one(runs, tmp_path):
    _, a, _, _ = runs
    doc = compare_runs([a.path, a.path], tmp_path / "aa", cka_images=50)
    assert all(r["cka"] == pytest.approx(1.0) for r in doc["pairs"][0]["cka"]["layers"])
    assert doc["pairs"][0]["config"] == []


def test_different_widths_compare_by_layer_name(runs, tmp_path):
    _, a, _, c = runs
    doc = compare_runs([a.path, c.path], tmp_path / "ac", cka_images=50)
    pair = doc["pairs"][0]
    assert {r["key"] for r in pair["config"]} >= {"model.options.width", "train.epochs"}
    rows = pair["cka"]["layers"]
    assert rows and any(r["shape_a"] != r["shape_b"] for r in rows)
    assert pair["metrics"]["params"]["delta"] > 0


def test_a_different_preset_compares_only_shared_layer_names(runs, tmp_path):
    root, a, _, _ = runs
    cfg = tiny_config(**{"train.epochs": 1})
    cfg["model"] = {"preset": "csci611", "options": {"width": 4, "hidden": 16}}
    other = train(cfg, root / "csci611", echo=lambda s: None)
    doc = compare_runs([a.path, other.path], tmp_path / "ax", cka_images=50)
    cka = doc["pairs"][0]["cka"]
    mods_a, mods_b = dict(runload.load_model(a).named_modules()), dict(runload.load_model(other).named_modules())
    assert cka["layers"] and all(type(mods_a[r["layer"]]) is type(mods_b[r["layer"]]) for r in cka["layers"])
    assert all(0 <= r["cka"] <= 1 + 1e-9 for r in cka["layers"])
    assert cka["skipped"] and all(isinstance(why, str) for why in cka["skipped"].values())
    compared = {r["layer"] for r in cka["layers"]} | set(cka["skipped"])
    assert all(n in compared for n, m in mods_a.items() if n and not any(m.children()) and "drop" not in n)
    assert {r["key"] for r in doc["pairs"][0]["config"]} >= {"model.preset"}


def test_filter_changes_read_topk_and_classnorms_of_both_runs(tmp_path, runs):
    _, a, b, _ = runs
    for run, idx, sel in (
        (a, [[1, 2, 3, 4], [5, 6, 7, 8]], [0.5, 0.1]),
        (b, [[4, 3, 9, 10], [1, 2, 3, 4]], [0.25, 0.4]),
    ):
        filters = [{"filter": f, "indices": ix} for f, ix in enumerate(idx)]
        run.artifact("topk").write({"layers": {"conv1": {"filters": filters}}})
        other = {"selectivity": [1.0] * (1 if run is a else 2)}
        run.artifact("classnorms").write({"layers": {"conv1": {"selectivity": sel}, "wider": other}})
    try:
        got = filter_changes(Run(a.path), Run(b.path))
    finally:
        for run in (a, b):
            run.artifact("topk").json.unlink()
            run.artifact("classnorms").json.unlink()
    rows = got["layers"]["conv1"]
    assert [r["topk_overlap"] for r in rows] == [0.5, 0.0]
    assert [r["selectivity_delta"] for r in rows] == pytest.approx([-0.25, 0.3])
    assert got["skipped"] == {"wider": "1 filters here, 2 there"} and "note" not in got


def test_compare_refuses_bad_input_with_one_line(runs, capsys, tmp_path):
    _, a, _, _ = runs
    assert main(["compare", str(a.path)]) == 2
    assert capsys.readouterr().err.startswith("error: compare needs two or more RUN folders")
    assert main(["compare", str(a.path), str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert main(["compare", str(a.path), str(a.path), "--cka-images", "1"]) == 2
    assert "--cka-images 1 is out of range" in capsys.readouterr().err


def test_the_page_links_each_report_in_percent_and_a_notebook_shows_the_result(runs, tmp_path, capsys):
    from convlens.compare.page import _filters_table
    from convlens.report import build_report

    root, a, b, _ = runs
    build_report(b.path)  # b has a report: its name links to it; a has none: its folder
    lines: list[str] = []
    doc = compare_runs([a.path, b.path], tmp_path / "ab", cka=False, echo=lines.append)
    assert lines[0].startswith("comparing b with a (1 of 1)") and len(lines) == 3
    html = (tmp_path / "ab" / "compare.html").read_text()
    assert f'href="{Path(os.path.relpath(b.path / "report.html", tmp_path / "ab")).as_posix()}"' in html
    assert f'href="{Path(os.path.relpath(a.path, tmp_path / "ab")).as_posix()}"' in html
    assert f"{100 * a.eval['accuracy']:.2f}%" in html and "points" in html  # percentages, changes in points
    assert 'id="pair-1"' in html and "report.css" not in html and "<nav>" in html  # the report's template
    shown = doc._repr_html_()
    assert "<table>" in shown and f"{100 * b.eval['accuracy']:.2f}%" in shown and "data:image/png" in shown
    # a column no filter has a number in is left out, and the caption says which
    t = _filters_table("conv2", [{"filter": 0, "topk_overlap": 0.5}, {"filter": 1, "topk_overlap": 0.25}], "a", "b")
    assert t.columns == ["filter", "top-k images in common"] and "no selectivity a" in t.caption
    assert [r[1]["text"] for r in t.rows] == ["50.00%", "25.00%"]
