"""Generated mistakes over every subcommand: each one exits 2 with exactly one `error:` line on
stderr that names the problem, never a traceback, and leaves every existing file as it was.

The commands run in-process (``main(argv)``), against one tiny trained digits run and damaged
copies of it, made once for the module; every example hashes the whole folder before and after.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tiny_config
from report_helpers import copy_run, trained

from convlens.analyses import ANALYSES
from convlens.cli import main
from convlens.config import ExperimentConfig
from convlens.models import PRESETS

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEW = settings(SETTINGS, max_examples=25)  # the ones that load the run's model and data first

LAYERS = ["input", "conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "pool1", "conv3", "bn3", "relu3", "gpool1", "fc1"]
TEST_IMAGES = 359  # the digits test split of the tiny run


def _keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _keys(v, prefix + k + ".")
    return out


VALID_KEYS = _keys(ExperimentConfig().model_dump())
COMMANDS = {"train", "eval", "analyze", "explain", "report", "diagnose", "sweep", "models", "datasets", "demo"}
KNOWN = {*LAYERS, *ANALYSES, *PRESETS, *COMMANDS, "train", "val", "test", "gray", "zero", "mean"}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A folder of things to point the CLI at: a good run, damaged runs, good and bad files."""
    w = tmp_path_factory.mktemp("fuzz")
    run = copy_run(trained(tmp_path_factory, "cli"), w / "run")
    (w / "cfg.yaml").write_text(yaml.safe_dump(tiny_config()))
    (w / "sweep.yaml").write_text("base: cfg.yaml\nparams:\n  train.optimizer.lr: [0.01, 0.1]\n")
    (w / "empty_dir").mkdir()
    (w / "empty_file").write_text("")
    (w / "garbage.yaml").write_text("a: [[[\n")
    (w / "list.yaml").write_text("- 1\n- 2\n")
    (w / "binary.yaml").write_bytes(bytes(range(256)))
    (w / "a_file").write_text("not a folder")
    damaged = {
        "ckpt_garbage": lambda r: [(r / "checkpoints" / f).write_bytes(b"\x80garbage") for f in ("best.pt", "last.pt")],
        "ckpt_cut": lambda r: [
            (r / "checkpoints" / f).write_bytes((run / "checkpoints" / f).read_bytes()[:999])
            for f in ("best.pt", "last.pt")
        ],
        "ckpt_empty": lambda r: [(r / "checkpoints" / f).write_bytes(b"") for f in ("best.pt", "last.pt")],
        "ckpt_none": lambda r: shutil.rmtree(r / "checkpoints"),
        "ckpt_dirs": lambda r: [
            ((r / "checkpoints" / f).unlink(), (r / "checkpoints" / f).mkdir()) for f in ("best.pt", "last.pt")
        ],
        "config_bad": lambda r: (r / "config.yaml").write_text("model: [[[\n"),
        "config_dir": lambda r: ((r / "config.yaml").unlink(), (r / "config.yaml").mkdir()),
        "dataset_bad": lambda r: (r / "dataset.json").write_text("{not json"),
        "dataset_none": lambda r: (r / "dataset.json").unlink(),
        "eval_bad": lambda r: (r / "eval.json").write_bytes(b"\xff\xfe{"),
    }
    for name, damage in damaged.items():
        damage(copy_run(run, w / name))
    pics = w / "pics"
    for c in ("cat", "dog"):
        (pics / c).mkdir(parents=True)
        for i in range(3):
            (pics / c / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (w / "pics.yaml").write_text(yaml.safe_dump(tiny_config(**{"data.name": "imagefolder", "data.root": str(pics)})))
    return w


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` and the hash of its bytes; a report's figure cache (RUN/report/,
    drawn once and reused by the next report) is not a result and may be left behind, and the run
    folder's lock file names its last writer's PID, which is bookkeeping, not a result."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
        if "report" not in p.relative_to(root).parts[1:2] and p.name != ".lock"
    }


def check(world: Path, argv: list[str], *needles: str) -> None:
    """One mistake: exit 2, one `error:` line naming it, no traceback, nothing written."""
    argv = [a.replace("{W}", str(world)) for a in argv]
    before = tree(world)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's own errors
            rc = exc.code
    text = err.getvalue()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert rc == 2, (argv, rc, text, out.getvalue()[-500:])
    assert len(errors) == 1 and "Traceback" not in text, (argv, text)
    for needle in needles:
        assert needle.replace("{W}", str(world)) in text, (argv, needle, text)
    assert tree(world) == before, argv


# ----------------------------------------------------------------------------------------------
# config overrides: unknown and mistyped keys, wrong types, out-of-range values, bad syntax

INT_KEYS = ["train.epochs", "train.batch_size", "seed", "data.split_seed", "eval.batch_size", "train.eval_every"]
OUT_OF_RANGE = {
    "train.epochs": st.integers(max_value=0) | st.integers(min_value=100001),
    "train.batch_size": st.integers(max_value=0),
    "seed": st.integers(max_value=-1),
    "train.optimizer.lr": st.floats(max_value=0, allow_nan=False, allow_infinity=False)
    | st.floats(min_value=100.5, max_value=1e9),
    "train.optimizer.momentum": st.floats(min_value=1, max_value=1e6) | st.floats(max_value=-1e-3, min_value=-1e6),
    "data.val_fraction": st.floats(min_value=1, max_value=1e6) | st.floats(max_value=-1e-3, min_value=-1e6),
    "train.label_smoothing": st.floats(min_value=1, max_value=10),
    "data.train_subset": st.integers(max_value=0),
}
NOT_AN_INT = (
    st.from_regex(r"\A[a-z]{3,6}[0-9]\Z")
    | st.just("[1, 2]")
    | st.just("{a: 1}")
    | st.floats(min_value=0.01, max_value=1e4).filter(lambda f: f != int(f)).map(str)
)


@st.composite
def bad_override(draw) -> tuple[str, str]:
    kind = draw(st.sampled_from(["unknown", "type", "range", "syntax"]))
    if kind == "unknown":
        key = draw(st.sampled_from(sorted(VALID_KEYS))) + draw(st.from_regex(r"\A[a-z_]{1,4}\Z"))
        if key in VALID_KEYS:
            key += "zz"
        return f"{key}=1", key
    if kind == "type":
        key = draw(st.sampled_from(INT_KEYS))
        return f"{key}={draw(NOT_AN_INT)}", key
    if kind == "range":
        key = draw(st.sampled_from(sorted(OUT_OF_RANGE)))
        return f"{key}={draw(OUT_OF_RANGE[key])}", key
    text = draw(st.sampled_from(["train.epochs", "=3", "train.epochs=[[[", "=", "model.layers={"]))
    return text, text.partition("=")[0] or "empty key"


@SETTINGS
@given(bad_override())
def test_train_with_bad_overrides(world, override):
    text, needle = override
    check(world, ["train", "{W}/cfg.yaml", "--set", text, "--out", "{W}/new"], needle)


# ----------------------------------------------------------------------------------------------
# analyze: layer and filter specs, numbers out of range

name = st.from_regex(r"\A[a-z][a-z0-9_]{0,8}\Z").filter(lambda s: s not in KNOWN)
bad_index = (
    st.integers(max_value=-1).map(str)
    | st.from_regex(r"\A[a-z]{1,4}\Z")
    | st.tuples(st.integers(1, 50), st.integers(0, 49)).filter(lambda t: t[0] > t[1]).map(lambda t: f"{t[0]}-{t[1]}")
    | st.integers(min_value=16, max_value=10**6).map(str)
)  # conv layers here have 4, 8, 16 filters


@st.composite
def bad_analyze(draw) -> tuple[list[str], str]:
    kind = draw(st.sampled_from(["layers", "filters", "filters_layer", "filters_syntax", "number", "names"]))
    if kind == "layers":
        bad = draw(name)
        good = draw(st.lists(st.sampled_from(LAYERS[1:12]), max_size=2))
        only = draw(st.sampled_from(["stats", "topk", "filters"]))
        return ["--only", only, "--layers", ",".join([*good, bad])], f"'{bad}'"
    if kind == "filters":
        item = draw(bad_index)
        return ["--only", "ablate", "--filters", f"conv3:{item}"], item
    if kind == "filters_layer":
        bad = draw(name)
        return ["--only", "ablate", "--filters", f"{bad}:0"], f"'{bad}'"
    if kind == "filters_syntax":
        bad = draw(st.sampled_from(["conv1", "conv1:", ":3", "conv1,conv2"]))
        return ["--only", "ablate", "--filters", bad], f"'{bad}'"
    if kind == "number":
        flag, value, only = draw(
            st.sampled_from(
                [
                    ("--batch-size", st.integers(max_value=0), None),
                    ("--limit", st.integers(max_value=0), None),
                    ("--k", st.integers(max_value=0), "topk"),
                    ("--examples", st.integers(max_value=-1), "errors"),
                    ("--batch-size", NOT_AN_INT, None),
                    ("--k", NOT_AN_INT, "topk"),
                ]
            )
        )
        v = str(draw(value))
        return [*(["--only", only] if only else []), flag, v], v
    bad = draw(name)
    flag = draw(st.sampled_from(["--only", "--skip", "--split"]))
    return [flag, bad], bad


@FEW
@given(bad_analyze())
def test_analyze_with_bad_options(world, case):
    args, needle = case
    check(world, ["analyze", "{W}/run", "--no-figures", *args], needle)


# ----------------------------------------------------------------------------------------------
# explain: occlusion geometry, images, layers and filters, optimiser and heat-map numbers


@st.composite
def bad_explain(draw) -> tuple[list[str], str]:
    kind = draw(st.sampled_from(["window", "occlusion", "images", "layer", "filter", "actmax", "heatmap"]))
    if kind == "window":  # 8x8 digits at stride 2: 7 and 8 leave a 1x1 map, 9 and more do not fit
        w = draw(st.integers(max_value=0) | st.integers(min_value=7, max_value=10**4))
        return ["--method", "occlusion", "--images", "0", "--window", str(w)], f"window {w}"
    if kind == "occlusion":
        flag, value = draw(
            st.sampled_from(
                [
                    ("--stride", st.integers(max_value=0)),
                    ("--batch-size", st.integers(max_value=0)),
                    ("--padding", st.integers(max_value=-1)),
                    ("--fill", st.from_regex(r"\A[a-z]{2,5}\Z").filter(lambda s: s not in ("gray", "zero", "mean"))),
                ]
            )
        )
        v = str(draw(value))
        return ["--method", "occlusion", "--images", "0", flag, v], v
    if kind == "images":
        i = draw(st.integers(max_value=-1) | st.integers(min_value=TEST_IMAGES))
        return ["--method", "saliency", "--images", f"0,{i}"], f"image {i}"
    if kind == "layer":
        bad = draw(name)
        method = draw(st.sampled_from([["gradcam"], ["deconv", "--filters", "0"], ["actmax", "--steps", "1"]]))
        return ["--method", *method, "--layers", bad], f"'{bad}'"
    if kind == "filter":
        f = draw(st.integers(max_value=-1) | st.integers(min_value=4))  # conv1 has 4 filters
        return ["--method", "guided", "--images", "0", "--layers", "conv1", "--filters", str(f)], f"filter {f}"
    if kind == "actmax":
        flag, value = draw(
            st.sampled_from(
                [
                    ("--steps", st.integers(max_value=0)),
                    ("--lr", st.floats(max_value=0, allow_nan=False, allow_infinity=False)),
                ]
            )
        )
        v = str(draw(value))
        few = [] if flag == "--steps" else ["--steps", "1"]
        return ["--method", "actmax", "--layers", "conv1", *few, flag, v], flag.strip("-")
    flag, value = draw(
        st.sampled_from(
            [
                (
                    "--percentile",
                    st.floats(max_value=0, allow_nan=False, allow_infinity=False)
                    | st.floats(min_value=100.01, max_value=1e9),
                ),
                ("--samples", st.integers(max_value=-1)),
                ("--split", name),
            ]
        )
    )
    v = str(draw(value))
    return [
        "--method",
        "saliency",
        "--images",
        "0",
        flag,
        v,
        *(["--samples", "2"] if flag != "--samples" else []),
    ], flag.strip("-")


@FEW
@given(bad_explain())
def test_explain_with_bad_options(world, case):
    args, needle = case
    check(world, ["explain", "{W}/run", *args], needle)


# ----------------------------------------------------------------------------------------------
# paths: missing, empty, unreadable, damaged runs and files, corrupt images and checkpoints

RUN_COMMANDS = {
    "eval": (
        ["eval", "{P}"],
        [
            "ckpt_garbage",
            "ckpt_cut",
            "ckpt_empty",
            "ckpt_none",
            "ckpt_dirs",
            "config_bad",
            "config_dir",
            "dataset_bad",
            "dataset_none",
        ],
    ),
    "analyze": (
        ["analyze", "{P}", "--only", "filters", "--no-figures"],
        ["ckpt_garbage", "ckpt_cut", "ckpt_empty", "ckpt_none", "ckpt_dirs", "config_bad", "config_dir", "dataset_bad"],
    ),
    "explain": (
        ["explain", "{P}", "--method", "saliency", "--images", "0"],
        ["ckpt_garbage", "ckpt_cut", "ckpt_none", "config_bad", "config_dir", "dataset_bad"],
    ),
    "resume": (["train", "--resume", "{P}"], ["ckpt_garbage", "ckpt_cut", "ckpt_none", "config_bad", "config_dir"]),
    "report": (["report", "{P}", "--out", "{W}/never.html"], ["config_dir", "eval_bad"]),
    "diagnose": (["diagnose", "{P}"], ["config_dir", "eval_bad"]),
}
NOT_A_RUN = ["missing", "empty_dir", "empty_file", "a_file", "garbage.yaml", "a_file/below"]
FILE_COMMANDS = {
    "train": ["train", "{P}", "--out", "{W}/new"],
    "sweep": ["sweep", "{P}", "--out", "{W}/new"],
    "worker": ["sweep", "worker", "{P}", "--storage", "sqlite:///{W}/never.db", "--out", "{W}/new"],
}
NOT_A_CONFIG = ["missing.yaml", "empty_dir", "garbage.yaml", "list.yaml", "binary.yaml", "a_file/below.yaml"]


@st.composite
def bad_path(draw) -> tuple[list[str], str]:
    kind = draw(st.sampled_from(["run", "damaged", "config", "out", "images", "table"]))
    if kind == "run":
        argv = RUN_COMMANDS[draw(st.sampled_from(sorted(RUN_COMMANDS)))][0]
        p = draw(st.sampled_from(NOT_A_RUN))
        return [a.replace("{P}", "{W}/" + p) for a in argv], p.split("/")[0]
    if kind == "damaged":
        argv, broken = RUN_COMMANDS[draw(st.sampled_from(sorted(RUN_COMMANDS)))]
        p = draw(st.sampled_from(broken))
        return [a.replace("{P}", "{W}/" + p) for a in argv], p
    if kind == "config":
        argv = FILE_COMMANDS[draw(st.sampled_from(sorted(FILE_COMMANDS)))]
        p = draw(st.sampled_from(NOT_A_CONFIG))
        return [a.replace("{P}", "{W}/" + p) for a in argv], p.split("/")[0]
    if kind == "out":
        argv = draw(
            st.sampled_from(
                [
                    ["train", "{W}/cfg.yaml", "--out"],
                    ["sweep", "{W}/sweep.yaml", "--out"],
                    ["report", "{W}/run", "--out"],
                ]
            )
        )
        p = draw(
            st.sampled_from(
                ["a_file/below", "a_file/below/deeper", "run/config.yaml/x"]
                + (["a_file", "cfg.yaml"] if argv[0] != "report" else ["empty_dir", "run"])
            )
        )
        return [*argv, "{W}/" + p], p.split("/")[0]
    if kind == "images":
        return ["train", "{W}/pics.yaml", "--out", "{W}/new"], "cannot read image"
    p = draw(st.sampled_from(["missing", "empty_dir", "run", "a_file"]))
    return ["sweep", "table", "{W}/" + p], p


@SETTINGS
@given(bad_path())
def test_bad_paths_and_damaged_files(world, case):
    argv, needle = case
    check(world, argv, needle)


# ----------------------------------------------------------------------------------------------
# models, datasets and sweep options


@st.composite
def bad_misc(draw) -> tuple[list[str], str]:
    kind = draw(st.sampled_from(["preset", "input", "classes", "datasets", "workers", "mode", "demo", "command"]))
    if kind == "preset":
        bad = draw(name)
        return ["models", bad], f"'{bad}'"
    if kind == "input":
        dims = draw(st.lists(st.integers(-5, 64), min_size=3, max_size=3).filter(lambda d: min(d) < 1))
        return ["models", "tiny", "--input", *map(str, dims)], "--input"
    if kind == "classes":
        c = draw(st.integers(max_value=0))
        return ["models", "tiny", "--classes", str(c)], f"--classes {c}"
    if kind == "datasets":
        extra = draw(name)
        return ["datasets", extra], extra
    if kind == "workers":
        n = draw(st.integers(max_value=0))
        return ["sweep", "{W}/sweep.yaml", "--workers", str(n), "--out", "{W}/new"], "--workers"
    if kind == "mode":
        args, flag = draw(
            st.sampled_from([(["--threads", "2"], "--threads"), (["--by", "seed"], "--by"), (["{W}/extra"], "extra")])
        )
        return ["sweep", "{W}/sweep.yaml", *args, "--out", "{W}/new"], flag
    if kind == "demo":
        if draw(st.booleans()):
            return ["demo", "--out", "{W}/a_file"], "a_file is a file"
        n = draw(st.integers(max_value=0))
        return ["demo", "--epochs", str(n), "--out", "{W}/new"], f"--epochs {n}"
    bad = draw(name)
    return [bad], bad


@SETTINGS
@given(bad_misc())
def test_models_datasets_sweep_and_commands(world, case):
    argv, needle = case
    check(world, argv, needle)


# ----------------------------------------------------------------------------------------------
# run folders whose documents are valid JSON of the wrong type: every reader names file and field

SCHEMAS = {"dataset.json": "Dataset", "summary.json": "Summary", "eval.json": "Eval", "status.json": "Status"}
WRONG = st.one_of(
    st.lists(st.integers(-3, 3), max_size=3),
    st.integers(-5, 5),
    st.text(alphabet="abcxyz", max_size=6),
    st.none(),
    st.booleans(),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=10),
)


@st.composite
def wrong_document(draw) -> tuple[str, object, str]:
    """``(file, damage, needle)``: a document of the tiny run with its whole value, or one field
    (a row's, for metrics.jsonl), replaced by valid JSON of a type it cannot have."""
    import json as _json

    from convlens.run import schema

    doc = draw(st.sampled_from([*SCHEMAS, "metrics.jsonl", "examples.npz"]))
    if doc == "examples.npz":
        return doc, draw(st.sampled_from(["bytes", "objects", "floats"])), "examples.npz is damaged"
    name = SCHEMAS.get(doc, "EpochRow")
    kind = getattr(schema, name)
    src = _RUN_DOCS[doc]
    value = _json.loads(src.splitlines()[0]) if doc == "metrics.jsonl" else _json.loads(src)
    if draw(st.booleans()):
        new = draw(WRONG.filter(lambda v: not isinstance(v, dict)))
        return doc, new, f"{doc}"
    field = draw(st.sampled_from(sorted(value)))
    new = {**value, field: draw(WRONG)}
    from hypothesis import assume

    assume(schema.fields_problem(new, kind) is not None)
    return doc, new, f"field {field!r}"


_RUN_DOCS: dict[str, str] = {}


@pytest.fixture(scope="module")
def good_run(world) -> Path:
    run = world / "run"
    for doc in [*SCHEMAS, "metrics.jsonl"]:
        _RUN_DOCS[doc] = (run / doc).read_text()
    return run


def _damage(run: Path, doc: str, damage: object) -> None:
    import json as _json

    import numpy as np

    if doc == "examples.npz":
        if damage == "bytes":
            (run / doc).write_bytes(bytes(range(256)) * 4)
        else:
            images = np.array([{"x": 1}], dtype=object) if damage == "objects" else np.zeros((2, 8, 8), np.float32)
            np.savez(run / doc, images=images, indices=np.arange(1), split=np.array("test"))
    elif doc == "metrics.jsonl":
        rows = (run / doc).read_text().splitlines()
        (run / doc).write_text("\n".join([_json.dumps(damage), *rows[1:]]) + "\n")
    else:
        (run / doc).write_text(_json.dumps(damage))


@settings(SETTINGS, max_examples=16)
@given(wrong_document(), st.sampled_from(["report", "diagnose"]))
def test_run_documents_of_the_wrong_type_are_named(good_run, tmp_path_factory, case, command):
    doc, damage, needle = case
    if command == "diagnose" and doc in ("dataset.json", "summary.json", "examples.npz"):
        command = "report"  # diagnose never reads them
    root = tmp_path_factory.mktemp("wrong")
    run = copy_run(good_run, root / "run")
    _damage(run, doc, damage)
    if doc == "examples.npz":  # the report goes on without its gallery, and says why
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["report", str(run), "--out", str(root / "r.html")]) == 0
        page = (root / "r.html").read_text()
        assert f"{run / doc} is damaged" in page and "no gallery" in page
        return
    argv = ["report", "{W}/run", "--out", "{W}/never.html"] if command == "report" else ["diagnose", "{W}/run"]
    check(root, argv, doc, needle)
