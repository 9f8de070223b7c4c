"""examples/tour.ipynb runs top to bottom in a real Jupyter kernel and shows its figures inline."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT / "examples" / "tour.ipynb"


@pytest.mark.slow
def test_the_tour_executes_without_errors_and_shows_its_figures(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[dev]')")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[dev]')")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install -e '.[dev]')")
    # the kernel is this interpreter (a kernel spec named python3 elsewhere on the machine may run
    # another Python) and imports this checkout's sources, installed or not
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    (tmp_path / "work").mkdir()
    nb = nbformat.read(TOUR, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path / "work"}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr" and "Error" in o.text]
    assert not errors, errors
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs for c in code), [c.source[:60] for c in code if not c.outputs]
    png = sum("image/png" in o.get("data", {}) for o in outputs)
    embedded = sum(len(re.findall(r"data:image/png;base64,", o.get("data", {}).get("text/html", ""))) for o in outputs)
    # three figures returned, four results (a run card, two analyses, an explanation) with their figure
    assert png >= 3 and embedded >= 4, (png, embedded)
