"""The streaming pass sharded over ranks merges into one process' result (topk, stats, classnorms)."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convlens.analyses import Subject
from convlens.analyses.base import AnalysisError, inference
from convlens.analyses.classnorms import ClassNorms
from convlens.analyses.shard import analyze_sharded, merge, state
from convlens.analyses.stats import Stats
from convlens.analyses.stream import stream
from convlens.analyses.topk import TopK
from convlens.data import Split
from convlens.models import build

CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def subject_parts():
    """A small conv net (random weights) and 45 random images, a third of them repeated, so
    top-k has ties that only the split position breaks."""
    torch.manual_seed(0)
    layers = [
        {"type": "conv", "out": 4, "kernel": 3, "padding": 1},
        "bn",
        "relu",
        {"type": "maxpool"},
        {"type": "conv", "out": 3, "kernel": 3, "padding": 1},
        "relu",
        {"type": "globalpool", "mode": "max"},
        {"type": "linear", "out": "classes"},
    ]
    model = build(layers, (3, 8, 8), len(CLASSES)).eval()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.2, 0.2)
        model.bn1.running_var.uniform_(0.5, 2)
    x = torch.randint(0, 256, (45, 3, 8, 8), dtype=torch.uint8)
    x[30:] = x[:15]  # the same image at two positions: equal scores
    split = Split(x, torch.arange(45) % 3, torch.arange(45))
    return model, split


def readers():
    return [TopK(k=4, score="max"), Stats(), ClassNorms()]


def single(model, split, batch_size):
    subject = Subject(model, split, CLASSES, batch_size=batch_size, figures=False, progress=False)
    rs = readers()
    with inference(model):
        stream(subject, rs)
        return {r.name: r.finish(subject) for r in rs}


def sharded(model, split, batch_size, world):
    """Each rank in turn, then rank 0 merges every rank's state (what all_gather_object carries)."""
    ranks = []
    for rank in range(world):
        subject = Subject(
            model, split, CLASSES, batch_size=batch_size, figures=False, progress=False, shard=(rank, world)
        )
        rs = readers()
        with inference(model):
            stream(subject, rs)
        ranks.append((subject, rs, [state(r) for r in rs]))
    subject, rs, _ = ranks[0]
    with inference(model):
        for i, r in enumerate(rs):
            merge(r, [states[i] for _, _, states in ranks])
        return {r.name: r.finish(subject) for r in rs}


def assert_same(a, b, path="", exact=False):
    """Equal structure and values; floats within float64 rounding unless ``exact``."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}", exact or k in ("positions", "scores", "locations", "windows"))
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]", exact)
    elif isinstance(a, float) and not exact and not (math.isnan(a) and math.isnan(b)):
        assert b == pytest.approx(a, rel=1e-12, abs=1e-12), path
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


def _strip(result):
    return {k: v for k, v in result.items() if k not in ("seconds", "figures")}


@pytest.mark.parametrize("world,batch_size", [(2, 4), (3, 4), (2, 7), (4, 16)])
def test_shards_merge_into_the_single_process_result(subject_parts, world, batch_size):
    model, split = subject_parts
    one, many = single(model, split, batch_size), sharded(model, split, batch_size, world)
    for name in one:
        assert_same(_strip(one[name]), _strip(many[name]), name)
    tops = one["topk"]["layers"]["conv1"]["filters"]
    assert any(len(set(f["scores"])) < len(f["scores"]) for f in tops)  # ties were there to break


def test_top_k_merge_is_exact_to_the_bit(subject_parts):
    model, split = subject_parts
    a, b = single(model, split, 4)["topk"], sharded(model, split, 4, 3)["topk"]
    assert json.dumps(_strip(a), sort_keys=True) == json.dumps(_strip(b), sort_keys=True)


def test_a_rank_without_batches_merges_too(subject_parts):
    model, split = subject_parts
    few = split.take(list(range(6)))
    one, many = single(model, few, 4), sharded(model, few, 4, 3)  # rank 2 reads nothing
    for name in one:
        assert_same(_strip(one[name]), _strip(many[name]), name)


def test_only_streaming_analyses_run_sharded(tmp_path):
    with pytest.raises(AnalysisError, match="ablate do not run sharded; over several processes: topk, stats"):
        analyze_sharded(tmp_path, ["topk", "ablate"], 0, 2, lambda x: [x, x])
    with pytest.raises(AnalysisError, match="topk with these options need"):
        analyze_sharded(tmp_path, ["topk"], 0, 2, lambda x: [x, x], score="contribution", target="0")


# -- under torchrun ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imported_run(tmp_path_factory):
    from handmade_resnet import make

    from convlens.cli import main

    tmp = tmp_path_factory.mktemp("shard")
    torch.save(make(width=4).state_dict(), tmp / "w.pt")
    args = ["import", "handmade_resnet:make", "--weights", str(tmp / "w.pt"), "--out", str(tmp / "run")]
    assert main([*args, "--kwarg", "width=4", "--set", "data.test_subset=300"]) == 0
    return tmp / "run"


@pytest.mark.torchrun
@pytest.mark.slow  # two torch processes start: about a minute on 2 busy cores
@pytest.mark.timeout(300)
def test_analyze_under_torchrun_equals_one_process(imported_run, tmp_path, capsys):
    """``torchrun --nproc_per_node 2 convlens analyze`` (gloo on the CPU): rank 0 writes what one
    process writes."""
    from convlens.cli import main

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun is not installed beside this Python")
    alone, two = tmp_path / "alone", tmp_path / "two"
    shutil.copytree(imported_run, alone)
    shutil.copytree(imported_run, two)
    flags = ["--only", "topk,stats,classnorms", "--k", "5", "--batch-size", "32", "--no-figures"]
    assert main(["analyze", str(alone), *flags]) == 0
    capsys.readouterr()
    # the processes run in tmp_path, outside this project: the test's own factory module needs consent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "OMP_NUM_THREADS": "1",
        "CONVLENS_TRUSTED_FACTORIES": "handmade_resnet",
    }
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "convlens.cli", "analyze", str(two), *flags]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("topk:") == 1  # rank 0 alone reports and writes
    for name in ("topk", "stats", "classnorms"):
        a = json.loads((alone / "analysis" / f"{name}.json").read_text())
        b = json.loads((two / "analysis" / f"{name}.json").read_text())
        assert_same(_strip(a), _strip(b), name)
