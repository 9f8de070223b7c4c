"""Every study under studies/ loads and validates: configs with the config validator, sweeps with
the sweep validator (which also checks every grid point). Fast: nothing trains or downloads."""

from pathlib import Path

import pytest
import yaml

from convlens.config import load_config
from convlens.models import build_model
from convlens.sweep.spec import load_sweep

STUDIES = Path(__file__).resolve().parents[1] / "studies"
FILES = sorted(p for p in STUDIES.glob("*/*.yaml") if p.name != "study.yaml")  # study.yaml: test_study.py


def is_sweep(path: Path) -> bool:
    return "params" in yaml.safe_load(path.read_text())


def test_every_study_has_a_readme_and_files():
    folders = sorted(p for p in STUDIES.iterdir() if p.is_dir())
    assert [p.name for p in folders] == [
        "cs7015-cnn-design",
        "csci611-optimizers",
        "cse849-filters",
        "cse849-regularisation",
        "rice-lenet-rnn",
    ]
    for folder in folders:
        readme = (folder / "README.md").read_text()
        assert readme.startswith("# ") and list(folder.glob("*.yaml")), folder
        for f in folder.glob("*.yaml"):  # study.yaml included
            assert f.name in readme, f"{folder.name}/README.md does not mention {f.name}"
            assert "root:" not in f.read_text(), f  # the official download, never a local path


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_study_file_validates(path):
    if is_sweep(path):
        sweep = load_sweep(path)
        configs = [sweep.trial_config(point, sweep.seeds[0]) for point in sweep.points()]
        assert configs, path
    else:
        configs = [load_config(path)]
    for cfg in configs:
        assert cfg.data.root is None and cfg.data.name in ("cifar10", "mnist")
        shape = (1, 28, 28) if cfg.data.name == "mnist" or cfg.data.resize == 28 else (3, 32, 32)
        build_model(cfg.model, shape, 10)  # every network of the study builds for its input
