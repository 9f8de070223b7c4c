"""Where everything of a run folder lives: the only module that spells its file names.

::

    <run>/config.yaml          resolved config (data mean/std filled in), version, seed
    <run>/dataset.json         class names, input shape, split sizes, mean/std, source
    <run>/summary.json         layers: output shape, parameters, MACs, receptive field
    <run>/metrics.jsonl        one JSON object per epoch
    <run>/checkpoints/last.pt  model + optimiser + scheduler state_dicts, epoch, config
    <run>/checkpoints/best.pt  model state_dict with the best validation accuracy
    <run>/eval.json            test accuracy, per-class accuracy, confusion matrix, class names,
                               and the checkpoint evaluated (name, epoch, sha256)
    <run>/predictions.csv      one row per test image
    <run>/examples.npz         the test images the report shows (uint8), with their indices
    <run>/tb/                  TensorBoard event files
    <run>/status.json          running / finished / diverged / interrupted / failed / pruned
    <run>/analysis/            one artifact per producer: <name>[-<key>].json, .npz and folder
    <run>/report/              the report's figure cache; <run>/report.html the report

Every write goes through here and is atomic (a temp file beside the target, then ``os.replace``):
a reader or a crash sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import DamagedFileError
from ..utils import atomic_write, atomic_write_bytes, atomic_write_text, write_json

CONFIG = "config.yaml"
DATASET = "dataset.json"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
EVAL = "eval.json"
PREDICTIONS = "predictions.csv"
EXAMPLES = "examples.npz"
STATUS = "status.json"
CHECKPOINTS_DIR = "checkpoints"
TB_DIR = "tb"
ANALYSIS_DIR = "analysis"
REPORT_DIR = "report"
REPORT_HTML = "report.html"
# `convlens compare`: a folder of its own, outside the runs it compares
COMPARE_HTML = "compare.html"
COMPARE_JSON = "compare.json"

_KEY_PART = re.compile(r"[^A-Za-z0-9_.]+")


def _compact(ints: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``0-2_5_7-8``: runs of consecutive numbers as ranges."""
    vals = sorted({int(i) for i in ints})
    parts, start = [], None
    for j, v in enumerate(vals):
        if start is None:
            start = v
        if j + 1 == len(vals) or vals[j + 1] != v + 1:
            parts.append(str(v) if v == start else f"{start}-{v}")
            start = None
    return "_".join(parts)


def artifact_key(layers: Sequence[str] | str | None = None, targets: Sequence[int] | None = None) -> str | None:
    """The key of an artifact produced for ``layers`` and a ``targets`` subset (filters, classes);
    None for the defaults (every layer, every target), whose artifact is plain ``<name>``.

    >>> artifact_key(["conv1"], [0, 1, 2, 7])
    'conv1-f0-2_7'
    >>> artifact_key("features.0") , artifact_key() is None
    ('features.0', True)
    """
    if isinstance(layers, str):
        layers = [layers]
    parts = ["+".join(_KEY_PART.sub("_", str(layer)) for layer in layers)] if layers else []
    if targets:
        parts.append("f" + _compact(targets))
    return "-".join(parts) or None


def split_key(key: str | None, split: str = "test") -> str | None:
    """``key`` for results computed on ``split``: the test split's keep ``key``; another split's
    get ``split_<split>`` appended, so ``analyze --split val`` never replaces the test split's.

    >>> split_key(None, "val"), split_key("conv1", "val"), split_key("conv1")
    ('split_val', 'conv1-split_val', 'conv1')
    """
    if split == "test":
        return key
    return "-".join(p for p in (key, f"split_{_KEY_PART.sub('_', split)}") if p)


class Artifact:
    """One producer's results: ``analysis/<stem>.json``, ``analysis/<stem>.npz`` and the figures
    under ``analysis/<stem>/``, where ``stem`` is ``<name>`` or ``<name>-<key>``."""

    def __init__(self, root: Path, name: str, key: str | None = None):
        if not name or "/" in name or "-" in name:
            raise ValueError(f"artifact name {name!r} must be a plain word (no '/' or '-')")
        self.root, self.name, self.key = Path(root), name, key
        self.stem = name if not key else f"{name}-{key}"

    def __repr__(self) -> str:
        return f"Artifact({self.stem!r})"

    @property
    def json(self) -> Path:
        return self.root / ANALYSIS_DIR / f"{self.stem}.json"

    @property
    def npz(self) -> Path:
        return self.root / ANALYSIS_DIR / f"{self.stem}.npz"

    @property
    def folder(self) -> Path:
        return self.root / ANALYSIS_DIR / self.stem

    def rel(self, path: Path) -> str:
        """``path`` relative to the run folder, as the JSON records it."""
        return Path(path).relative_to(self.root).as_posix()

    def write(self, doc: dict[str, Any]) -> Path:
        """The JSON, last: with ``arrays``, it records the SHA-256 of the .npz on disk
        (``arrays_sha256``), so a pair left by a command killed between the two writes (a new .npz
        beside the old JSON) is found on read (:meth:`arrays_of`) instead of mixing generations.
        The hash goes into ``doc`` too, so the result returned is the document written."""
        if isinstance(doc.get("arrays"), str) and self.npz.is_file():
            doc["arrays_sha256"] = file_sha256(self.npz, 16)
        write_json(self.json, doc)
        return self.json

    @staticmethod
    def arrays_of(doc: dict[str, Any], root: Path) -> Path:
        """The .npz ``doc`` lists under ``arrays``, checked to be the one written with it."""
        rel = doc.get("arrays")
        if not isinstance(rel, str):
            raise DamagedFileError(f"the analysis {doc.get('analysis')!r} lists no arrays (.npz) to draw from")
        path = Path(root) / rel
        if not path.is_file():
            raise DamagedFileError(f"{path} is missing; rerun the analysis to write it again")
        want = doc.get("arrays_sha256")
        if isinstance(want, str) and file_sha256(path, 16) != want:
            raise DamagedFileError(
                f"{path} was written by a later run of {doc.get('analysis')} than its JSON (that run was stopped "
                f"between the two); rerun `convlens analyze {root} --only {doc.get('analysis')}`"
            )
        return path

    def save_arrays(self, compressed: bool = True, **arrays: Any) -> str:
        """Write the raw arrays (a .npz, compressed unless ``compressed`` is False, atomically);
        returns the path the JSON records. An array may be given as :class:`~.npz.Rows`, written
        a batch at a time; stored uncompressed, :func:`~.npz.mapped` reads it as a memory map."""
        from .npz import write_npz

        atomic_write(self.npz, lambda f: write_npz(f, compressed, arrays), mode="wb")
        return self.rel(self.npz)

    def clear(self) -> None:
        """Remove this artifact's figures of an earlier run, so the folder matches the new JSON."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def replacing(self) -> "_Replacing":
        """``with artifact.replacing():`` the old figures and arrays are kept aside until the block
        succeeds, then dropped; on an error the new ones are dropped and the old ones come back, so
        they still match the JSON (written after the block)."""
        return _Replacing([self.folder, self.npz])


def file_sha256(path: Path, digits: int = 12) -> str:
    """The first ``digits`` hex digits of the file's SHA-256 (12: which exact checkpoint a result
    came from; an artifact's arrays use 16)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:digits]


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


class _Replacing:
    def __init__(self, paths: list[Path]):
        self.pairs = [(p, p.with_name(f".{p.name}.previous")) for p in paths]

    def __enter__(self) -> Path:
        for p, aside in self.pairs:
            _remove(aside)
            if p.exists():
                p.rename(aside)
        return self.pairs[0][0]

    def __exit__(self, kind, *_: Any) -> None:
        for p, aside in self.pairs:
            if kind is not None:
                _remove(p)
                if aside.exists():
                    aside.rename(p)
            _remove(aside)


class Layout:
    """The paths of a run folder and its writes; usable before the folder holds a config
    (training creates it through this)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- paths ----------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def dataset_file(self) -> Path:
        return self.path / DATASET

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def eval_file(self) -> Path:
        return self.path / EVAL

    @property
    def predictions_file(self) -> Path:
        return self.path / PREDICTIONS

    @property
    def examples_file(self) -> Path:
        return self.path / EXAMPLES

    @property
    def status_file(self) -> Path:
        return self.path / STATUS

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    def checkpoint_file(self, name: str) -> Path:
        return self.checkpoint_dir / f"{name}.pt"

    @property
    def tb_dir(self) -> Path:
        return self.path / TB_DIR

    @property
    def analysis_dir(self) -> Path:
        return self.path / ANALYSIS_DIR

    @property
    def report_dir(self) -> Path:
        return self.path / REPORT_DIR

    @property
    def report_file(self) -> Path:
        return self.path / REPORT_HTML

    def artifact(self, name: str, key: str | None = None) -> Artifact:
        """The artifact ``name`` produced with ``key`` (see :func:`artifact_key`)."""
        return Artifact(self.path, name, key)

    def artifacts(self, name: str | None = None) -> Iterator[Path]:
        """Every ``analysis/*.json``, sorted by name; with ``name``, those of that producer only:
        ``<name>.json`` and its keyed ``<name>-<key>.json`` (a name holds no ``-``)."""
        folder = self.analysis_dir
        found = sorted(folder.glob("*.json")) if folder.is_dir() else []
        yield from (p for p in found if name is None or p.stem.split("-", 1)[0] == name)

    def rel(self, path: Path) -> str:
        return Path(path).relative_to(self.path).as_posix()

    # -- writes ---------------------------------------------------------------------------------
    def write_config(self, cfg: Any) -> None:
        cfg.save(self.config_file)

    def write_dataset(self, doc: dict[str, Any]) -> None:
        write_json(self.dataset_file, doc)

    def write_summary(self, doc: dict[str, Any]) -> None:
        write_json(self.summary_file, doc)

    def write_eval(self, doc: dict[str, Any], predictions_csv: str | None = None) -> None:
        if predictions_csv is not None:
            atomic_write_text(self.predictions_file, predictions_csv)
        write_json(self.eval_file, doc)

    def write_examples(self, images: Any, indices: Any, split: str = "test") -> None:
        """The images the report draws (uint8, NCHW) and their positions in ``split``."""
        import numpy as np

        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            images=np.asarray(images, dtype=np.uint8),
            indices=np.asarray(indices, dtype=np.int64),
            split=np.array(split),
        )
        atomic_write_bytes(self.examples_file, buf.getvalue())


class CompareLayout:
    """The folder ``convlens compare`` writes: ``compare.html``, ``compare.json`` and its figures."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def html(self) -> Path:
        return self.path / COMPARE_HTML

    @property
    def json(self) -> Path:
        return self.path / COMPARE_JSON

    def figure(self, stem: str) -> Path:
        return self.path / f"{stem}.png"
