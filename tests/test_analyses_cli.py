"""`convlens analyze` end to end on a quickly trained digits run."""

import json

import pytest
from conftest import tiny_config

from convlens.analyses.perfilter import draw_pending
from convlens.cli import main


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from convlens.train import train

    out = tmp_path_factory.mktemp("runs") / "digits"
    # one thread: the tiny net gains nothing from two, and a busy machine makes them wait on each other
    train(tiny_config(**{"train.epochs": 1, "train.threads": 1}), out, echo=lambda m: None)
    return out


def test_analyze_writes_every_analysis(digits_run, capsys):
    rc = main(
        [
            "analyze",
            str(digits_run),
            "--limit",
            "120",
            "--k",
            "4",
            "--examples",
            "6",
            "--mistakes",
            "6",
            "--no-per-filter",
        ]
    )  # per-filter weight figures are covered by test_analyses_base
    printed = capsys.readouterr().out
    assert rc == 0
    analysis = digits_run / "analysis"
    evaluated = json.loads((digits_run / "eval.json").read_text())  # analyses default to its checkpoint
    for name in ("filters", "featuremaps", "stats", "classnorms", "topk", "ablate", "errors"):
        data = json.loads((analysis / f"{name}.json").read_text())
        assert data["analysis"] == name and data["n_images"] == 120 and data["checkpoint"] == evaluated["checkpoint"]
        assert all((digits_run / f["path"]).is_file() != bool(f.get("pending")) for f in data["figures"])
        assert f"{name}: " in printed
    topk = json.loads((analysis / "topk.json").read_text())
    assert list(topk["layers"]) == ["conv1", "conv2", "conv3"] and topk["params"]["k"] == 4
    assert [topk["layers"][c]["receptive_field"]["size"] for c in ("conv1", "conv2", "conv3")] == [3, 5, 10]
    assert "topk: " in printed and "per-filter, drawn by the report)" in printed
    draw_pending(digits_run)
    assert (analysis / "topk" / "conv3" / "f15_patches.png").is_file()  # width 4: conv3 has 16 filters
    assert (analysis / "classnorms" / "conv1" / "f0.png").is_file() and (
        analysis / "classnorms" / "conv3" / "f15.png"
    ).is_file()
    assert "stats+classnorms+topk: one pass over 120 test images" in printed
    assert (
        "data: stratified subset: 120 of " in printed
        and json.loads((analysis / "errors.json").read_text())["subset"]["n"] == 120
    )
    assert list(json.loads((analysis / "ablate.json").read_text())["rank"]) == ["conv3"]


def test_analyze_options_and_bad_input(digits_run, capsys):
    rc = main(
        [
            "analyze",
            str(digits_run),
            "--only",
            "ablate,stats",
            "--filters",
            "conv1:0,2",
            "--no-rank",
            "--split",
            "val",
            "--limit",
            "50",
            "--no-figures",
        ]
    )
    assert rc == 0
    # keyed by what was silenced and the split: the default result (ranking the last layer) is not replaced
    ablate = json.loads((digits_run / "analysis" / "ablate-conv1-f0_2-split_val.json").read_text())
    assert ablate["split"] == "val" and ablate["set"]["filters"] == {"conv1": [0, 2]} and ablate["figures"] == []
    default = digits_run / "analysis" / "ablate.json"
    assert not default.exists() or "conv3" in json.loads(default.read_text())["rank"]
    assert (
        main(
            ["analyze", str(digits_run), "--only", "ablate", "--filters", "conv1:0,2", "--no-rank"]
            + ["--mode", "weights", "--limit", "50", "--no-figures"]
        )
        == 0
    )
    weights = json.loads((digits_run / "analysis" / "ablate-conv1-f0_2-weights.json").read_text())
    assert weights["set"]["filters"] == {"conv1": [0, 2]} and ablate["set"] != weights["set"]
    capsys.readouterr()

    assert main(["analyze", str(digits_run), "--only", "topk", "--layers", "conv9"]) == 2
    err = capsys.readouterr().err
    assert "no layer 'conv9'" in err and "conv1, bn1, relu1, conv2" in err
    assert main(["analyze", str(digits_run), "--only", "ablate", "--filters", "conv2:8"]) == 2
    assert "filter 8 is out of range for layer 'conv2', which has 8 channels (0 to 7)" in capsys.readouterr().err
    assert main(["analyze", str(digits_run), "--only", "stats", "--k", "3"]) == 2
    assert "k is an option of topk" in capsys.readouterr().err
    assert main(["analyze", str(digits_run), "--split", "training"]) == 2
    assert "split 'training' does not exist here; allowed: train, test, val" in capsys.readouterr().err


def test_analyses_with_other_layers_keep_each_other(digits_run, capsys):
    from convlens.report import build_report
    from convlens.report.checkpoints import Checkpoints
    from convlens.run import Run

    analysis = digits_run / "analysis"
    for layer in ("conv1", "conv3"):
        assert main(["analyze", str(digits_run), "--only", "topk", "--layers", layer, "--limit", "30", "--k", "2"]) == 0
    assert f"-> {analysis / 'topk-conv3.json'}" in capsys.readouterr().out
    for layer, filters in (("conv1", 4), ("conv3", 16)):
        doc = json.loads((analysis / f"topk-{layer}.json").read_text())
        assert list(doc["layers"]) == [layer] and doc["params"]["layers"] == [layer]
        assert len([f for f in doc["figures"] if f.get("filter") is not None]) == 2 * filters  # f<i> and patches
        assert all(f["path"].startswith(f"analysis/topk-{layer}/{layer}/") for f in doc["figures"] if "filter" in f)
        assert all((digits_run / f["path"]).is_file() != bool(f.get("pending")) for f in doc["figures"])
    html = build_report(digits_run).read_text()
    for layer in ("conv1", "conv3"):  # the report drew each one's per-filter figures, in its own folder
        doc = json.loads((analysis / f"topk-{layer}.json").read_text())
        assert all((digits_run / f["path"]).is_file() for f in doc["figures"])
    assert 'id="analysis-topk-conv1"' in html and 'id="analysis-topk-conv3"' in html
    # a stale keyed analysis is refreshed by asking for the same layers again
    run = Run(digits_run)
    doc = {**json.loads((analysis / "topk-conv3.json").read_text()), "checkpoint_sha256": "000000000000"}
    prov = Checkpoints(run).of_analysis("topk", doc, run.artifact("topk", "conv3").json)
    assert "--only topk --layers conv3`" in " ".join(prov.alerts), prov.alerts


def test_analyses_of_the_val_split_keep_the_test_splits(digits_run, capsys):
    from convlens.report.analyses import load_analyses

    analysis = digits_run / "analysis"
    assert main(["analyze", str(digits_run), "--only", "stats,topk", "--limit", "30", "--k", "2"]) == 0
    before = {p.name: p.read_bytes() for p in (analysis / "stats.json", analysis / "topk.json")}
    figures = sorted((analysis / "stats").rglob("*.png"))
    assert figures and (analysis / "topk.npz").is_file()
    assert (
        main(["analyze", str(digits_run), "--only", "stats,topk", "--split", "val", "--limit", "20", "--k", "2"]) == 0
    )
    assert f"-> {analysis / 'stats-split_val.json'}" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (analysis / "stats.json", analysis / "topk.json")} == before
    assert sorted((analysis / "stats").rglob("*.png")) == figures and (analysis / "topk.npz").is_file()
    val = json.loads((analysis / "stats-split_val.json").read_text())
    assert val["split"] == "val" and all(f["path"].startswith("analysis/stats-split_val/") for f in val["figures"])
    found, notes = load_analyses(digits_run)  # the report shows the test split's and names the other
    assert not [a for a in found if a.doc.get("split") == "val"]
    assert any("stats-split_val.json holds stats on the val split" in n for n in notes), notes


def test_analyze_is_the_function_after_its_module_was_imported():
    # the module that runs analyses has another name than the function the package exports, so
    # importing the module first cannot shadow ``convlens.analyses.analyze`` with a module object
    import importlib

    importlib.import_module("convlens.analyses.pipeline")
    from convlens.analyses import analyze

    assert callable(analyze) and analyze.__module__ == "convlens.analyses.pipeline"
