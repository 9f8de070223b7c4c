"""Any nn.Module in a run folder: `convlens import`, then analyze, explain, report, diagnose."""

import json

import numpy as np
import pytest
import torch
import yaml
from handmade_resnet import make

from convlens import runload
from convlens.analyses.perfilter import draw_pending
from convlens.analyses.topk import patch
from convlens.cli import main
from convlens.models import ReceptiveField

CONVS = ["stem", "body.0.conv1", "body.0.conv2", "body.1.proj", "body.1.conv1", "body.1.conv2"]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("import")
    torch.save(make(width=4).state_dict(), tmp / "w.pt")
    assert (
        main(
            [
                "import",
                "handmade_resnet:make",
                "--weights",
                str(tmp / "w.pt"),
                "--data",
                "digits",
                "--out",
                str(tmp / "run"),
                "--kwarg",
                "width=4",
                "--set",
                "data.test_subset=60",
            ]
        )
        == 0
    )
    return tmp / "run"


def test_import_writes_a_run_folder(imported):
    cfg = yaml.safe_load((imported / "config.yaml").read_text())
    assert cfg["model"]["factory"] == "handmade_resnet:make" and cfg["model"]["kwargs"] == {"width": 4}
    assert json.loads((imported / "eval.json").read_text())["n"] == 60
    summary = json.loads((imported / "summary.json").read_text())
    fields = {r["name"]: r["receptive_field"] for r in summary["layers"]}
    assert fields["body.1.conv2"] == 13 and summary["params"] == sum(p.numel() for p in make(width=4).parameters())
    loaded = runload.load_model(imported)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), make(width=4).state_dict().values()))


def test_analyze_explain_report_diagnose(imported, capsys):
    assert main(["analyze", str(imported), "--only", "topk,classnorms", "--k", "3", "--limit", "40"]) == 0
    draw_pending(imported)  # the per-filter figures, drawn when first needed
    topk = json.loads((imported / "analysis" / "topk.json").read_text())
    assert list(topk["layers"]) == CONVS  # execution order, none dropped
    images = runload.load_data(imported).test.images[:40].float().div(255).numpy()
    for layer, info in topk["layers"].items():
        rf = ReceptiveField(**info["receptive_field"])
        assert (imported / "analysis" / "topk" / layer / "f0_patches.png").is_file()
        f0 = info["filters"][0]
        for pos, (i, j), window in zip(f0["positions"], f0["locations"], f0["windows"]):
            cut = patch(images[pos], rf, i, j, fill=-1.0)  # the patch drawn shows the window's pixels
            t, b, l, r = window
            assert cut.shape[1] <= images.shape[2] and cut.shape[2] <= images.shape[3]  # cut to the image
            rows = np.flatnonzero((cut != -1).any(axis=(0, 2)))  # pixels are >= 0: the rest is fill
            cols = np.flatnonzero((cut != -1).any(axis=(0, 1)))
            shown = cut[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            assert np.array_equal(shown, images[pos][:, t:b, l:r])
            assert (cut == -1).sum() == cut.size - images[pos][:, t:b, l:r].size
    classnorms = json.loads((imported / "analysis" / "classnorms.json").read_text())
    assert list(classnorms["layers"]) == ["stem", "body.1.conv2"]
    assert main(["explain", str(imported), "--method", "gradcam", "--images", "0,1"]) == 0
    assert main(["report", str(imported)]) == 0
    html = (imported / "report.html").read_text()
    assert "body.1.conv2" in html and "handmade_resnet:make" in html
    assert main(["diagnose", str(imported)]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    "factory,message",
    [
        (
            "handmade_resnet:nope",
            "model.factory='handmade_resnet:nope': handmade_resnet has no 'nope'; callables there: ",
        ),
        ("no_such_module:make", "model.factory='no_such_module:make': cannot import module 'no_such_module'"),
        ("handmade_resnet.make", "model.factory='handmade_resnet.make' is not MODULE:FACTORY"),
    ],
)
def test_bad_factory_is_one_clear_line(tmp_path, capsys, factory, message):
    assert main(["import", factory, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_weights_that_do_not_fit(tmp_path, capsys):
    torch.save(make(width=8).state_dict(), tmp_path / "w.pt")
    assert (
        main(["import", "handmade_resnet:make", "--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "r")]) == 2
    )
    assert "do not fit handmade_resnet:make" in capsys.readouterr().err


@pytest.mark.parametrize(
    "model,message",
    [
        (
            {"factory": "handmade_resnet:make", "preset": "tiny"},
            "give exactly one of `model.preset`, `model.layers` or `model.factory`",
        ),
        ({"preset": "tiny", "kwargs": {"width": 2}}, "`model.kwargs` goes with `model.factory`"),
        ({"factory": "handmade_resnet:make", "options": {"width": 2}}, "a factory takes `model.kwargs`"),
        ({"factory": "not a factory"}, "is not MODULE:FACTORY"),
    ],
)
def test_model_section_is_validated(model, message):
    from convlens.config import load_config
    from convlens.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace(")", "\\)")):
        load_config({"model": model})


def test_a_factory_model_trains_from_a_config(tmp_path):
    from conftest import tiny_config

    from convlens.train import train

    cfg = tiny_config(**{"model": {"factory": "handmade_resnet:make", "kwargs": {"width": 2}}, "train.epochs": 1})
    run = train(cfg, tmp_path / "run", echo=lambda m: None)
    assert run.status["status"] == "finished" and run.eval["n"] > 0
    assert type(runload.load_model(run)).__name__ == "HandResNet"
