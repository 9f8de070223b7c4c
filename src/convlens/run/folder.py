"""Read access to a run folder: the contract between training and everything that reads it.

The layout (which file holds what) is :mod:`convlens.run.layout`; the documents' fields are
:mod:`convlens.run.schema`. Nothing downstream reaches back into training: analyses,
explanations and reports read this. Every result computed from a checkpoint records which one
(``checkpoint``: best or last, ``checkpoint_epoch``, ``checkpoint_sha256``: the first 12 hex digits
of the file's SHA-256), so a result of an older checkpoint is told from one of the current file.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DamagedFileError, RunError
from ..utils import read_json, write_json
from . import schema as schemas
from .layout import CONFIG, DATASET, Layout

if TYPE_CHECKING:
    from ..config import ExperimentConfig
    from .schema import Dataset, Eval, Status, Summary

STATUSES = ("running", "finished", "diverged", "interrupted", "failed", "pruned")
CHECKPOINTS = ("best", "last")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a metrics file (a line cut short by a crash is skipped)."""
    rows = []
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def write_status(run_dir: Path, status: str, **extra: Any) -> None:
    assert status in STATUSES, status
    write_json(Layout(run_dir).status_file, {"status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})


class Run(Layout):
    """Read access to a run folder.

    >>> run = Run("runs/demo")                     # doctest: +SKIP
    >>> run.eval["accuracy"], run.metrics()[-1]    # doctest: +SKIP

    Its model and data are loaded by :mod:`convlens.runload`; its notebook card is
    :class:`convlens.results.RunCard`.
    """

    def __init__(self, path: str | Path):
        super().__init__(path)
        if not self.config_file.is_file():
            raise RunError(f"{self.path} is not a run folder: it has no {CONFIG}")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # -- files ----------------------------------------------------------------------------------
    @functools.cached_property
    def config(self) -> ExperimentConfig:
        from ..config import load_config  # pydantic takes ~0.3 s to import: only when the config is read

        return load_config(self.config_file)

    @property
    def status(self) -> Status:
        p = self.status_file
        return _checked(read_json(p), "Status", p) if p.is_file() else {"status": "unknown"}

    def metrics(self) -> list[dict[str, Any]]:
        rows = read_metrics(self.metrics_file)
        for i, row in enumerate(rows, 1):
            _checked(row, "EpochRow", f"{self.metrics_file} (row {i})")
        return rows

    @property
    def eval(self) -> Eval | None:
        p = self.eval_file
        return _checked(read_json(p), "Eval", p) if p.is_file() else None

    @functools.cached_property
    def dataset(self) -> Dataset:
        p = self.dataset_file
        if not p.is_file():
            raise RunError(f"{self.path} has no {DATASET}: the run never got past loading its data")
        return _checked(read_json(p), "Dataset", p)

    @property
    def classes(self) -> list[str]:
        return list(self.dataset["classes"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.dataset["shape"])  # type: ignore[return-value]

    @property
    def eval_checkpoint(self) -> str:
        """The checkpoint ``eval.json`` evaluated, else ``best``: what analyses, explanations and
        the report use unless told otherwise, so every number of a run describes the same weights."""
        name = (self.eval or {}).get("checkpoint")
        return name if name in CHECKPOINTS else "best"

    def checkpoint_path(self, which: str | None = None) -> Path:
        which = which or self.eval_checkpoint
        if which not in CHECKPOINTS:
            raise RunError(f"checkpoint {which!r} is not one of: best, last")
        p = self.checkpoint_file(which)
        if which == "best" and not p.is_file():
            p = self.checkpoint_file("last")
        if not p.is_file():
            raise RunError(f"{self.path} has no checkpoint yet (looked for {self.rel(self.checkpoint_file(which))})")
        return p

    def write_analysis(self, name: str, obj: Any, key: str | None = None) -> Path:
        """Write ``analysis/<name>[-<key>].json``; returns its path."""
        return self.artifact(name, key).write(obj)

    @property
    def summary(self) -> Summary | None:
        p = self.summary_file
        return _checked(read_json(p), "Summary", p) if p.is_file() else None

    def examples(self) -> dict[str, Any] | None:
        """The test images stored for the report: ``{"images": uint8 NCHW, "indices": [...]}``."""
        p = self.examples_file
        if not p.is_file():
            return None
        import numpy as np

        try:
            with np.load(p) as z:
                images, indices, split = z["images"], z["indices"], str(z["split"])
        except Exception as exc:  # not a .npz, cut short, an object array (refused: it would unpickle)
            raise DamagedFileError(
                f"{p} is damaged ({type(exc).__name__}: {exc}); rerun `convlens eval {self.path}`"
            ) from None
        if images.dtype != np.uint8 or images.ndim != 4 or indices.shape != (len(images),) or indices.dtype.kind != "i":
            raise DamagedFileError(
                f"{p} is damaged: images are {images.dtype} {images.shape} and indices {indices.dtype} "
                f"{indices.shape}, not uint8 N x C x H x W and N whole numbers; rerun `convlens eval {self.path}`"
            )
        return {"images": images, "indices": indices.tolist(), "split": split}


def _checked(doc: Any, schema: str, path: Any) -> Any:
    return schemas.checked(doc, getattr(schemas, schema), path)


def is_run(path: str | Path) -> bool:
    return Layout(path).config_file.is_file()
