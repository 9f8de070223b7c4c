"""The 8x8 digits ship with convlens as a small array file; scikit-learn is not needed."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from convlens.data import digits

SRC = Path(__file__).resolve().parents[1] / "src" / "convlens"
# the first image of the UCI set, a zero, in its original 0..16 values
FIRST = [
    [0, 0, 5, 13, 9, 1, 0, 0],
    [0, 0, 13, 15, 10, 15, 5, 0],
    [0, 3, 15, 2, 0, 11, 8, 0],
    [0, 4, 12, 0, 0, 8, 8, 0],
    [0, 5, 8, 0, 0, 9, 8, 0],
    [0, 4, 11, 0, 1, 12, 7, 0],
    [0, 2, 14, 5, 10, 12, 0, 0],
    [0, 0, 6, 13, 10, 0, 0, 0],
]
PER_CLASS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_file_is_small_uint8_and_exact():
    assert digits.FILE.stat().st_size < 100_000
    with np.load(digits.FILE) as d:
        images, target = d["images"], d["target"]
    assert images.dtype == np.uint8 and images.shape == (1797, 8, 8) and int(images.max()) == 16
    assert target.dtype == np.uint8 and np.bincount(target).tolist() == PER_CLASS
    assert images[0].tolist() == FIRST and target[:10].tolist() == list(range(10))


def test_loader_stretches_to_0_255_and_holds_out_a_fifth_of_each_class():
    a = digits.load_digits(None, False, None)
    assert a.train_x.shape == (1438, 8, 8, 1) and a.test_x.shape == (359, 8, 8, 1)
    assert np.bincount(a.test_y).tolist() == [round(n * 0.2) for n in PER_CLASS]
    x = np.concatenate([a.train_x, a.test_x])[..., 0]
    y = np.concatenate([a.train_y, a.test_y])
    # 16 -> 255, 5 -> rint(79.6875) = 80, 0 -> 0: every image appears once, stretched
    first = [i for i in range(len(x)) if np.array_equal(x[i], np.rint(np.array(FIRST) * 255 / 16))]
    assert len(first) == 1 and y[first[0]] == 0 and x.max() == 255


def test_loading_digits_imports_neither_scikit_learn_nor_scipy():
    code = (
        "import sys; from convlens.config import load_config; from convlens.data import load_data; "
        "load_data(load_config({'data': {'name': 'digits'}}).data); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


def test_no_module_imports_scikit_learn_or_scipy():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.relative_to(SRC)}: {n}" for n in names if n.split(".")[0] in ("sklearn", "scipy")]
    assert found == []
