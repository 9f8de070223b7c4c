"""The residual presets end to end: train, analyze, explain, report (resnet8 on digits)."""

import json
from pathlib import Path

import pytest
from conftest import tiny_config

from convlens.analyses.perfilter import draw_pending
from convlens.cli import main
from convlens.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_models_shows_resnet20(capsys):
    assert main(["models", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "layer3.2.conv2" in out and "272,474" in out


def test_example_config_uses_the_default_data_folder():
    cfg = load_config(ROOT / "examples" / "resnet8.yaml")
    assert cfg.model.preset == "resnet8" and cfg.data.name == "cifar10" and cfg.data.root is None


@pytest.mark.slow
def test_resnet8_trains_and_is_dissected(tmp_path, capsys):
    from convlens.train import train

    run = tmp_path / "r8"
    cfg = tiny_config(
        **{"model": {"preset": "resnet8", "options": {"width": 4}}, "train.epochs": 1, "train.threads": 1}
    )
    train(cfg, run, echo=lambda m: None)
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    summary = json.loads((run / "summary.json").read_text())
    assert {r["name"]: r["receptive_field"] for r in summary["layers"]}["layer3.0.conv2"] == 25
    assert main(["analyze", str(run), "--only", "topk,classnorms,stats", "--k", "2", "--limit", "30"]) == 0
    topk = json.loads((run / "analysis" / "topk.json").read_text())
    assert list(topk["layers"]) == [
        "conv1",
        "layer1.0.conv1",
        "layer1.0.conv2",
        "layer2.0.shortcut.0",
        "layer2.0.conv1",
        "layer2.0.conv2",
        "layer3.0.shortcut.0",
        "layer3.0.conv1",
        "layer3.0.conv2",
    ]
    assert all(info["receptive_field"] for info in topk["layers"].values())
    assert not (run / "analysis" / "topk" / "layer3.0.conv2" / "f0_patches.png").is_file()  # drawn when needed
    draw_pending(run)
    assert (run / "analysis" / "topk" / "layer3.0.conv2" / "f0_patches.png").is_file()
    classnorms = json.loads((run / "analysis" / "classnorms.json").read_text())
    assert list(classnorms["layers"]) == ["conv1", "layer3.0.conv2"]
    assert main(["explain", str(run), "--method", "gradcam", "--images", "0"]) == 0
    assert main(["report", str(run)]) == 0
    assert "layer3.0.conv2" in (run / "report.html").read_text()
    capsys.readouterr()
