"""actmax on a run folder: any imported model, the sheet's layout, dead targets named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from handmade_resnet import make
from PIL import Image

from convlens import runload
from convlens.cli import main
from convlens.explain import ActMax
from convlens.explain.actmax_figure import FONT_PX, Block, sheet
from convlens.plots import Box, overlaps
from convlens.run import Run


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("import")
    torch.save(make(width=4).state_dict(), tmp / "w.pt")
    args = ["import", "handmade_resnet:make", "--weights", str(tmp / "w.pt"), "--data", "digits"]
    assert main([*args, "--out", str(tmp / "run"), "--kwarg", "width=4", "--set", "data.test_subset=60"]) == 0
    return tmp / "run"


def test_actmax_on_an_imported_model(imported, capsys):
    # the input shape comes from the run folder: before, every imported model failed with
    # "give image_shape=(C, H, W)"
    run = Run(imported)
    am = ActMax(runload.load_model(run), "body.0.conv1", steps=2)
    assert am.shape == tuple(run.input_shape)
    assert main(["explain", str(imported), "--method", "actmax", "--layers", "body.0.conv1", "--steps", "6"]) == 0
    capsys.readouterr()
    d = json.loads((imported / "analysis" / "actmax-body.0.conv1.json").read_text())
    assert d["params"]["objective"] == "center" and d["params"]["unit"] is not None
    top, bottom, left, right = d["params"]["field_box"]
    assert bottom - top == 5 and right - left == 5  # two 3x3 convs: a 5x5 field
    assert [t["filter"] for t in d["targets"]] == [0, 1, 2, 3]
    for t in d["targets"]:
        assert len(t["top"]) == 9 and t["best_image"]["value"] == t["top"][0]["value"]
        values = [p["value"] for p in t["top"]]
        assert values == sorted(values, reverse=True)
    grid = Image.open(imported / "analysis" / "actmax-body.0.conv1" / "body.0.conv1" / "grid.png")
    assert grid.width >= 11 * 48  # picture, 9 patches and their mean, each at least 48 px


def test_a_dead_filter_says_so_in_the_json_and_figure(imported, capsys):
    run = Run(imported)
    state = torch.load(run.checkpoint_path("last"), weights_only=True)
    state["model"]["stem.weight"][2] = 0  # filter 2 of the stem sees nothing: its output is its bias
    torch.save(state, run.checkpoint_path("last"))
    run_arg = [str(imported), "--method", "actmax", "--layers", "stem", "--steps", "4", "--checkpoint", "last"]
    assert main(["explain", *run_arg]) == 0
    capsys.readouterr()
    d = json.loads((imported / "analysis" / "actmax-stem.json").read_text())
    assert [t["dead"] for t in d["targets"]] == [False, False, True, False]
    cap = next(f["caption"] for f in d["figures"] if f.get("filter") == 2)
    assert "dead: the objective never changed" in cap
    grid = next(f["caption"] for f in d["figures"] if f["path"].endswith("grid.png"))
    assert "1 dead" in grid


def test_sheet_layout_has_no_overlaps_and_readable_text(tmp_path):
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "a class with a rather long name indeed", "cat"]
    blocks = [
        Block(
            [f"class {k} {names[k % 4]}", f"reached {rng.normal():.3g}, best test image {rng.normal():.3g}"]
            + (["dead: objective constant at -0.258", "(nothing to show)"] if k == 2 else []),
            [[rng.random((3, 5, 5))], [rng.random((3, 5, 5)) for _ in range(9)], [rng.random((3, 5, 5))]],
        )
        for k in range(7)
    ]
    s = sheet(
        blocks,
        tmp_path / "s.png",
        title="actmax, fc: one picture per class (whole image); 3 of 7 above their best test image; 1 dead",
        headers=["actmax", "top 9 test patches", "their mean"],
    )
    assert Image.open(s.path).size == s.size
    texts = [b for b in s.boxes if b.kind == "text"]
    assert len([b for b in s.boxes if b.kind == "tile"]) == 7 * 11
    assert any("automobile" in b.text for b in texts) and any("dead" in b.text for b in texts)
    assert not overlaps(s.boxes), overlaps(s.boxes)[:3]
    assert s.font_px >= 11 and s.font_px == FONT_PX
    assert all(0 <= b.left and b.right <= s.size[0] and 0 <= b.top and b.bottom <= s.size[1] for b in s.boxes)
    # tiles are at least 48 px: a 5x5 field enlarged by a whole factor
    tile = next(b for b in s.boxes if b.kind == "tile")
    assert tile.right - tile.left >= 48
    # a crowded sheet (one tile per block, long labels): still nothing overlaps
    many = [
        Block([f"class {k} {names[k % 4]}", "reached 1.23, best 0.98"], [[rng.random((3, 32, 32))]]) for k in range(30)
    ]
    s = sheet(many, tmp_path / "m.png", title="t", headers=["actmax"])
    assert not overlaps(s.boxes)


def test_overlaps_finds_an_intersection():
    a, b, c = Box("text", 0, 0, 10, 10), Box("tile", 9, 9, 20, 20), Box("tile", 10, 0, 20, 9)
    assert overlaps([a, b, c]) == [(a, b)]  # a and c only touch


def test_class_actmax_is_labelled_with_class_names(imported, capsys):
    assert main(["explain", str(imported), "--method", "actmax", "--steps", "3", "--filters", "1,2"]) == 0
    capsys.readouterr()
    d = json.loads((imported / "analysis" / "actmax-f1-2.json").read_text())
    classes = Run(imported).classes
    per = [f for f in d["figures"] if "filter" in f]
    assert [f["filter"] for f in per] == [1, 2] and d["params"]["objective"] == "class logit"
    assert all(f"class {k} {classes[k]} (whole image)" in f["caption"] for k, f in zip((1, 2), per))
    assert all(t["top"][0]["location"] is None and len(t["top"]) == 9 for t in d["targets"])


def test_a_filter_without_gradient_at_the_start_is_stuck_not_dead(tmp_path, capsys):
    m = make(width=4)
    with torch.no_grad():  # stem filter 0 fires only on bright 3x3 patches: at the grey start its ReLU is 0
        m.stem.weight[0], m.stem.bias[0] = 1.0, -6.0
        m.body[0].conv1.weight[0] = 0
        m.body[0].conv1.weight[0, 0] = 1.0  # body.0.conv1 filter 0 sees stem filter 0 only
    torch.save(m.state_dict(), tmp_path / "w.pt")
    args = ["import", "handmade_resnet:make", "--weights", str(tmp_path / "w.pt"), "--data", "digits"]
    assert main([*args, "--out", str(tmp_path / "run"), "--kwarg", "width=4", "--set", "data.test_subset=60"]) == 0
    run = ["explain", str(tmp_path / "run"), "--method", "actmax", "--layers", "body.0.conv1", "--steps", "4"]
    assert main(run) == 0
    capsys.readouterr()
    d = json.loads((tmp_path / "run" / "analysis" / "actmax-body.0.conv1.json").read_text())
    first = d["targets"][0]
    assert first["stuck"] and not first["dead"] and first["best_image"]["value"] > first["final"] + 1
    assert "stuck: no gradient at the grey start image" in d["figures"][0]["caption"]
    assert not any(t["stuck"] or t["dead"] for t in d["targets"][1:])
