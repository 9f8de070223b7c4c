"""The run folder: one owner for its paths (:mod:`.layout`), its documents (:mod:`.schema`)
and read access to it (:class:`Run`)."""

from .folder import CHECKPOINTS, STATUSES, Run, is_run, read_metrics, write_status
from .layout import Artifact, Layout, artifact_key, file_sha256

__all__ = [
    "CHECKPOINTS",
    "STATUSES",
    "Artifact",
    "Layout",
    "Run",
    "artifact_key",
    "file_sha256",
    "is_run",
    "read_metrics",
    "write_status",
]
