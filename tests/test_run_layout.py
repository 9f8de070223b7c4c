"""The run package owns the run folder: its file names appear nowhere else, writes are atomic,
artifacts are keyed by what produced them, and the report is drawn from the folder alone."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from convlens import runload
from convlens.run import Layout, artifact_key
from convlens.run import layout as L

SRC = Path(__file__).resolve().parents[1] / "src" / "convlens"
FILES = {
    L.CONFIG,
    L.DATASET,
    L.SUMMARY,
    L.METRICS,
    L.EVAL,
    L.PREDICTIONS,
    L.EXAMPLES,
    L.STATUS,
    L.REPORT_HTML,
    "last.pt",
    "best.pt",
}
FOLDERS = {L.CHECKPOINTS_DIR, L.TB_DIR, L.ANALYSIS_DIR, L.REPORT_DIR}
PREFIX = re.compile(rf"^({'|'.join(sorted(FOLDERS))})/")


def _literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants used as run-folder paths: a file name of the folder anywhere, a folder
    name joined with ``/`` onto a path, or a relative path that starts with a folder name."""
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div):
            for side in (n.left, n.right):
                if isinstance(side, ast.Constant) and side.value in FOLDERS | FILES:
                    found.append((side.lineno, side.value))
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            if n.value in FILES or PREFIX.match(n.value):
                found.append((n.lineno, n.value))
    return sorted(set(found))


def test_no_run_folder_path_literal_outside_the_run_package():
    offenders = []
    for p in sorted(SRC.rglob("*.py")):
        if p.parent.name == "run" and p.parent.parent == SRC:
            continue
        offenders += [f"{p.relative_to(SRC)}:{line}: {value!r}" for line, value in _literals(ast.parse(p.read_text()))]
    assert offenders == []


def test_the_literal_finder_finds_what_it_looks_for():
    code = 'x = run_dir / "checkpoints" / "best.pt"\ny = "analysis/occlusion.npz"\nz = {"analysis": 1}\n'
    assert _literals(ast.parse(code)) == [(1, "best.pt"), (1, "checkpoints"), (2, "analysis/occlusion.npz")]


def test_artifact_keys_name_layers_and_targets():
    assert artifact_key() is None and artifact_key([], []) is None
    assert artifact_key("conv1") == "conv1"
    assert artifact_key(["conv1", "layer3.0.conv2"], [7, 0, 1, 2, 9, 8]) == "conv1+layer3.0.conv2-f0-2_7-9"
    assert artifact_key(None, [2]) == "f2"
    assert artifact_key("a/b c") == "a_b_c"  # never a path separator in a file name
    a = Layout("/r").artifact("actmax", "conv1")
    assert (a.json, a.npz, a.folder) == (
        Path("/r/analysis/actmax-conv1.json"),
        Path("/r/analysis/actmax-conv1.npz"),
        Path("/r/analysis/actmax-conv1"),
    )
    assert Layout("/r").artifact("stats").json == Path("/r/analysis/stats.json")
    with pytest.raises(ValueError):
        Layout("/r").artifact("act-max")


def test_artifact_writes_are_atomic_and_a_failed_rewrite_keeps_the_old_figures(tmp_path, monkeypatch):
    import numpy as np

    a = Layout(tmp_path).artifact("saliency", "conv1")
    with a.replacing() as folder:  # a first run: figures, arrays, then the JSON
        (folder / "old.png").parent.mkdir(parents=True)
        (folder / "old.png").write_bytes(b"1")
        assert a.save_arrays(x=np.arange(3)) == "analysis/saliency-conv1.npz"
    a.write({"analysis": "saliency", "figures": []})
    with np.load(a.npz) as z:
        assert z["x"].tolist() == [0, 1, 2]
    with pytest.raises(RuntimeError), a.replacing() as folder:
        folder.mkdir(parents=True)
        (folder / "new.png").write_bytes(b"2")
        a.save_arrays(x=np.arange(5))
        raise RuntimeError("drawing failed")
    assert sorted(p.name for p in a.folder.iterdir()) == ["old.png"]
    with np.load(a.npz) as z:  # the arrays still match the JSON and the figures
        assert z["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "analysis").iterdir()) == [
        "saliency-conv1",
        "saliency-conv1.json",
        "saliency-conv1.npz",
    ]
    # a crash while writing leaves the old file, never half of a new one
    import convlens.utils as utils

    monkeypatch.setattr(utils.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        a.write({"analysis": "saliency", "figures": [1]})
    assert a.json.read_text().strip().endswith("}") and '"figures": []' in a.json.read_text()
    assert sorted(p.name for p in (tmp_path / "analysis").iterdir() if p.name.startswith(".")) == []


def test_the_run_package_imports_without_torch():
    import subprocess
    import sys

    code = "import sys, convlens.run; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SRC.parent), "PATH": ""},
    )
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import tiny_config

    from convlens.train import train

    path = tmp_path_factory.mktemp("layout") / "run"
    train(tiny_config(), path, echo=lambda s: None)
    return path


def test_the_report_is_drawn_from_the_run_folder_alone(trained, tmp_path, monkeypatch):
    import shutil

    import numpy as np
    from PIL import Image

    import convlens.data
    from convlens.report import build_report
    from convlens.run import Run

    run = Run(shutil.copytree(trained, tmp_path / "run"))
    kept = run.examples()
    test = runload.load_data(run).test
    assert kept["images"].dtype == np.uint8 and kept["split"] == "test"
    assert np.array_equal(kept["images"], test.images[kept["indices"]].numpy())  # the very test images

    def gallery() -> np.ndarray:
        shutil.rmtree(run.report_dir, ignore_errors=True)
        html = build_report(run.path).read_text()
        assert "could not be loaded" not in html
        return np.asarray(Image.open(run.report_dir / "examples.png").convert("RGB"))

    saved = run.examples_file.read_bytes()
    run.examples_file.unlink()  # a folder written before the images were stored: drawn from the data
    from_data = gallery()
    run.examples_file.write_bytes(saved)

    def no_data(*_, **__):
        raise AssertionError("the report loaded the data set")

    monkeypatch.setattr(convlens.data, "load_data", no_data)
    assert np.array_equal(gallery(), from_data)  # the same pixels, from the run folder alone


def test_what_a_run_writes_has_the_fields_its_schema_promises(trained, tmp_path):
    import shutil

    from convlens.analyses import Stats, Subject
    from convlens.report.diagnose import dead_filters_by_layer
    from convlens.run import Run, schema
    from convlens.utils import read_json

    run = Run(shutil.copytree(trained, tmp_path / "run"))
    docs = {
        schema.Status: run.status,
        schema.Dataset: run.dataset,
        schema.Summary: run.summary,
        schema.Eval: run.eval,
        schema.EpochRow: run.metrics()[0],
    }
    for kind, doc in docs.items():
        assert kind.__required_keys__ <= set(doc), (kind.__name__, kind.__required_keys__ - set(doc))
    Stats()(Subject.from_run(run, limit=50, figures=False))
    stats = read_json(run.artifact("stats").json)
    assert schema.Stats.__required_keys__ <= set(stats)
    for info in stats["layers"].values():
        assert schema.LayerStats.__required_keys__ <= set(info)
    assert set(dead_filters_by_layer(stats)) == set(stats["layers"])  # every layer is read


def test_artifacts_of_one_producer_are_the_plain_and_the_keyed_ones(tmp_path):
    layout = Layout(tmp_path)
    layout.analysis_dir.mkdir(parents=True)
    for stem in ("stats", "stats-conv1", "stats-conv2-f0_3", "statsx", "topk-stats", "classnorms"):
        (layout.analysis_dir / f"{stem}.json").write_text("{}")
    assert sorted(p.stem for p in layout.artifacts("stats")) == ["stats", "stats-conv1", "stats-conv2-f0_3"]
    assert len(list(layout.artifacts())) == 6
