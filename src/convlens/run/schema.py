"""The documents of a run folder, field by field: what writers produce and readers may rely on.

``report`` and ``diagnose`` import these instead of guessing layouts. A field marked
``NotRequired`` is written only in some cases (a message with a status, a checkpoint's identity
once it exists); every other field is always there.
(No ``from __future__ import annotations`` here: TypedDict reads ``NotRequired`` from evaluated
annotations.)
"""

from typing import Any, NotRequired, TypedDict

from ..errors import DamagedFileError


class Status(TypedDict):
    """``status.json``."""

    status: str  # one of folder.STATUSES
    updated: str
    epoch: NotRequired[int]
    epochs: NotRequired[int]
    best_epoch: NotRequired[int]
    message: NotRequired[str]


class Dataset(TypedDict):
    """``dataset.json``."""

    name: str
    classes: list[str]
    shape: list[int]  # C, H, W
    mean: list[float]
    std: list[float]
    source: str
    sizes: dict[str, int]  # split -> images


class Summary(TypedDict):
    """``summary.json``: one row per layer, and the totals."""

    layers: list[dict[str, Any]]  # name, type, output_shape, params, macs, receptive_field
    params: int
    macs: int


class EpochRow(TypedDict):
    """One line of ``metrics.jsonl``."""

    epoch: int
    train_loss: float | None
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    lr: float
    epoch_seconds: float


class Checkpointed(TypedDict):
    """Which checkpoint file a result describes."""

    checkpoint: str  # best or last
    checkpoint_epoch: int | None
    checkpoint_sha256: str


class Eval(TypedDict):
    """``eval.json`` (``predictions.csv`` beside it holds one row per image, ``examples.npz`` the
    images the report shows)."""

    n: int
    accuracy: float
    loss: float
    classes: list[str]
    per_class_accuracy: list[float]
    confusion: list[list[int]]  # rows: true class, columns: predicted
    prediction_counts: list[int]
    tta: str
    precision: NotRequired[str]  # "float32" (eval.precision: fp32, the default) or "bf16 autocast"
    seconds: float
    split: str
    checkpoint: str  # best or last
    checkpoint_epoch: NotRequired[int | None]
    checkpoint_sha256: NotRequired[str]
    epoch: NotRequired[int | None]


class FigureEntry(TypedDict):
    """One entry of an artifact's ``figures`` list; per-filter figures name layer and filter."""

    path: str  # relative to the run folder
    caption: str
    layer: NotRequired[str]
    filter: NotRequired[int]
    kind: NotRequired[str]
    pending: NotRequired[bool]  # listed now, drawn when first needed (analyses/perfilter.py)


class ArtifactDoc(TypedDict):
    """``analysis/<name>[-<key>].json``: what every analysis and explanation writes."""

    analysis: str  # the producer's name
    params: dict[str, Any]
    split: str | None
    figures: list[FigureEntry]
    checkpoint: NotRequired[str]
    checkpoint_epoch: NotRequired[int | None]
    checkpoint_sha256: NotRequired[str]
    seconds: NotRequired[float]
    arrays: NotRequired[str]  # the .npz beside the JSON


class LayerStats(TypedDict):
    """``layers[<name>]`` of ``analysis/stats.json``."""

    measured_at: dict[str, str]
    channels: int
    mean: list[float]
    std: list[float]
    active_fraction: list[float]
    post_max: list[float]
    weight_norm: list[float] | None
    dead: list[int]  # indices of dead filters
    dead_reasons: dict[str, list[str]]  # filter index -> "never active" / "weights near zero"
    thresholds: dict[str, float | None]


class Stats(ArtifactDoc):
    """``analysis/stats.json``: per-layer statistics, keyed by layer name."""

    layers: dict[str, LayerStats]


def dead_filters(stats: Stats) -> dict[str, tuple[list[int], int]]:
    """``{layer: (dead filter indices, number of filters)}`` of a stats document."""
    layers = stats.get("layers")
    if not isinstance(layers, dict):
        return {}
    return {
        str(name): (sorted(int(d) for d in info["dead"]), int(info["channels"]))
        for name, info in layers.items()
        if isinstance(info, dict) and isinstance(info.get("dead"), list) and isinstance(info.get("channels"), int)
    }


# ----------------------------------------------------------------------------------------------
# checking a document on read

# what readers index without asking: a document without them is refused; every other field is
# checked when present. A float field may be null: NaN and infinity are written as null.
REQUIRED: dict[type, tuple[str, ...]] = {
    Status: ("status",),
    Dataset: ("classes", "shape"),
    Summary: ("layers",),
    EpochRow: ("epoch",),
    Eval: (),
}


def _kind(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def problem(value: Any, tp: Any, where: str) -> str | None:
    """Why ``value`` does not fit the type ``tp`` (``where`` names the field), or None."""
    import types
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return None
    if origin in (typing.Union, types.UnionType):
        found = [problem(value, a, where) for a in args]
        return None if None in found else found[0]  # the first alternative is the document's own type
    if tp is type(None):
        return None if value is None else f"{where} is {value!r}, not null"
    if tp is float:
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        return None if ok else f"{where} is {value!r}, not a number"
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"{where} is {value!r}, not a whole number"
    if tp in (str, bool):
        return None if isinstance(value, tp) else f"{where} is {value!r}, not a {_kind(tp)}"
    if origin is list:
        if not isinstance(value, list):
            return f"{where} is {value!r}, not a list"
        return next((p for i, v in enumerate(value) if (p := problem(v, args[0], f"{where}[{i}]"))), None)
    if origin is dict:
        if not isinstance(value, dict):
            return f"{where} is {value!r}, not an object"
        return next((p for k, v in value.items() if (p := problem(v, args[1], f"{where}[{k!r}]"))), None)
    if typing.is_typeddict(tp):
        return fields_problem(value, tp, where)
    return None


def fields_problem(doc: Any, schema: type, where: str = "") -> str | None:
    """Why ``doc`` is not a ``schema`` document: not an object, a required field missing, or a
    field present with the wrong type; None when it fits."""
    import typing

    if not isinstance(doc, dict):
        return f"{where or 'the document'} is {type(doc).__name__} {str(doc)[:40]!r}, not an object"
    hints = typing.get_type_hints(schema)
    required = REQUIRED.get(schema, tuple(schema.__required_keys__))  # type: ignore[attr-defined]
    for name in required:
        if name not in doc:
            return f"field {where + '.' if where else ''}{name!r} is missing"
    for name, tp in hints.items():
        if name in doc:
            found = problem(doc[name], tp, f"field {where + '.' if where else ''}{name!r}")
            if found:
                return found
    return None


def checked(doc: Any, schema: type, path: Any) -> Any:
    """``doc`` if it fits ``schema``, else a DamagedFileError naming the file and the field."""
    found = fields_problem(doc, schema)
    if found:
        raise DamagedFileError(
            f"{path} is damaged: {found} (expected {schema.__name__} fields: "
            f"{', '.join(schema.__annotations__)}); restore it or write it again"
        )
    return doc
