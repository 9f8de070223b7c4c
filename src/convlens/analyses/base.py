"""The shared interface of the dataset-level analyses.

An analysis is a dataclass whose fields are its options (the same names, dashed, on the command
line) with a ``compute(subject)`` method, registered by name with :func:`register`. A
:class:`Subject` is what it reads: a model, one data split, the class names and the run folder to
write into. Calling an analysis on a subject checks that it applies, runs it with the model in
eval mode and without gradients, restores the model's modes, and writes
``RUN/analysis/<name>[-<key>].json`` (and its figures under ``RUN/analysis/<name>[-<key>]/``; the
key names non-default ``layers``, see :meth:`Analysis.key`)::

    subject = Subject.from_run("runs/a", split="test")
    result = TopK(layers=["conv2"], k=10)(subject)

Analyses that only read layer outputs over the whole split subclass :class:`Streaming` (see
``stream.py``): ``convlens analyze`` feeds all of them from one pass over the data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from .. import runload
from ..data import Split, batches
from ..errors import LayerError
from ..models.graph import known_shape, remember_shape, trace_graph
from ..models.summary import receptive_fields
from ..models.stages import is_deep, stage_layers
from ..trace import borrowed, conv_layers, get_layer, split_call
from ..results import Result
from ..utils import interactive
from ..jobs import JOBS, AnalysisError, canonical, check_choices, comma_ints, comma_list, option  # noqa: F401  (re-exported)
from .options import AT_HELP  # noqa: F401  (re-exported)


# the implementations of the analyses registered in convlens.jobs.JOBS, in its order
ANALYSES: dict[str, type[Analysis]] = {}


def register(cls: type[Analysis]) -> type[Analysis]:
    """Class decorator: make the class a dataclass (its fields are its options, inherited from its
    options class in ``options.py``) and link it to its job in :data:`convlens.jobs.JOBS`, for
    :func:`~convlens.analyses.analyze` and ``convlens analyze``."""
    cls = dataclass(cls)
    known = JOBS.get(cls.name)
    if known is None or known.kind != "analysis":
        raise AnalysisError(f"analysis {cls.name!r} has no options class: declare it in analyses/options.py with @job")
    ANALYSES[cls.name] = cls
    # registration order follows the options module, whatever order the modules are imported in
    order = [n for n, j in JOBS.items() if n in ANALYSES]
    items = {n: ANALYSES[n] for n in order}
    ANALYSES.clear()
    ANALYSES.update(items)
    return cls


# ----------------------------------------------------------------------------------------------
# what an analysis reads


def stratified(labels: torch.Tensor, count: int) -> list[int]:
    """Positions of ``count`` images taking the classes in turn (the first image of each class in
    split order, then the second, ...), sorted. Every class present gets ``count // classes`` or
    one more (fewer when it has fewer images). A split stored in class order (CIFAR's test split)
    has only its first classes in its first N images."""
    if not len(labels):
        return []
    by_class = [torch.nonzero(labels == c).flatten().tolist() for c in range(int(labels.max()) + 1)]
    out: list[int] = []
    rank = 0
    while len(out) < count and any(rank < len(p) for p in by_class):
        out += [p[rank] for p in by_class if rank < len(p)]
        rank += 1
    return sorted(out[:count])


def per_class(values: Any, counts: Any) -> list[float | None]:
    """``values`` per class with None for the classes that have no image (``counts`` 0): an
    absent class has no accuracy, not an accuracy of 0."""
    return [float(v) if int(n) > 0 else None for v, n in zip(list(values), list(counts))]


def subset_note(subset: dict[str, Any] | None) -> str:
    """How a subset was drawn, for captions ("" for the whole split)."""
    if not subset:
        return ""
    return (
        f"{subset['how']} subset: {subset['n']} of {subset['of']} {subset['split']} images, "
        f"{subset['min_per_class']}-{subset['max_per_class']} per class"
    )


BATCH_PIXELS = 256 * 64 * 64  # an analysis batch holds about this many pixels (1 M): 256 images up to 64 px


def default_batch(shape: tuple[int, ...]) -> int:
    """Images per analysis batch for images of ``shape`` (..., H, W): 256, halved until the batch
    holds at most :data:`BATCH_PIXELS` pixels, and never below 8 (16 at 224 px, 64 at 128 px).
    The activations a pass keeps grow with the pixels: ResNet-50's first stage alone holds 3.2 MB
    per 224 px image, 0.8 GB for a batch of 256."""
    n, pixels = 256, int(shape[-1]) * int(shape[-2])
    while n > 8 and n * pixels > BATCH_PIXELS:
        n //= 2
    return n


@dataclass
class Subject:
    """A model, one data split and where results go.

    ``root`` is the run folder (files go to ``root/analysis/``); ``None`` computes and returns
    results without writing anything. ``batch_size`` never changes a result, only speed/memory.
    ``checkpoint_epoch`` and ``checkpoint_sha256`` identify the checkpoint file the model came
    from; every result records them, so a result of an older checkpoint can be told apart.
    """

    model: nn.Module
    split: Split
    classes: list[str]
    root: Path | None = None
    split_name: str = "test"
    checkpoint: str | None = None
    batch_size: int | None = None  # None: :func:`default_batch` of the images' size
    figures: bool = True
    progress: bool | None = None  # None: progress bars only on a terminal
    echo: Callable[[str], None] | None = None
    subset: dict[str, Any] | None = None  # how ``split`` was drawn from a larger split (from_run's limit)
    checkpoint_epoch: int | None = None
    checkpoint_sha256: str | None = None
    shard: tuple[int, int] | None = None  # (rank, world): this process reads every world-th batch (shard.py)

    def __post_init__(self) -> None:
        if self.batch_size is None:
            self.batch_size = default_batch(self.in_shape)
        if self.batch_size < 1:
            raise AnalysisError(f"batch_size={self.batch_size!r} is out of range; allowed: 1 or more images per batch")
        # layer order and receptive fields are traced for this input shape (models.graph)
        remember_shape(self.model, self.in_shape)

    @classmethod
    def from_run(
        cls,
        run: Any,
        split: str = "test",
        checkpoint: str | None = None,
        *,
        limit: int | None = None,
        data_root: str | None = None,
        device: str = "cpu",
        **kwargs: Any,
    ) -> Subject:
        """The run's trained model and one split of its data (the splits of training).

        ``limit`` keeps N images of the split, stratified by class (:func:`stratified`: the first
        images of each class in turn, so a split stored in class order still gives every class);
        ``subset`` records how, and every analysis JSON and caption says so. ``data_root`` points
        at the data when the run folder's ``data.root`` does not resolve from here (a moved run,
        another cwd).
        ``checkpoint`` defaults to the one eval.json evaluated (best if there is none).
        """
        from ..data import load_data
        from ..run import Run

        if limit is not None and limit < 1:  # checked before the data is loaded
            raise AnalysisError(f"limit={limit} must be a positive number of images")
        bs = kwargs.get("batch_size")
        if bs is not None and bs < 1:
            raise AnalysisError(f"batch_size={bs!r} is out of range; allowed: 1 or more images per batch")
        run = run if isinstance(run, Run) else Run(run)
        cfg = run.config.data
        if data_root:
            cfg = cfg.model_copy(update={"root": str(data_root)})
        data = load_data(cfg)
        part = data.split(split)
        if limit is not None:
            if limit < 1:
                raise AnalysisError(f"limit={limit} must be a positive number of images")
            if limit < len(part):
                whole = len(part)
                part = part.take(stratified(part.labels, limit))
                per_class = torch.bincount(part.labels, minlength=len(data.classes))
                kwargs["subset"] = {
                    "how": "stratified",
                    "n": len(part),
                    "of": whole,
                    "split": split,
                    "per_class": per_class.tolist(),
                    "min_per_class": int(per_class.min()),
                    "max_per_class": int(per_class.max()),
                }
        model, info = runload.load_model_info(run, checkpoint, device)
        return cls(
            model,
            part,
            list(data.classes),
            run.path,
            split,
            info["checkpoint"],
            **kwargs,
            checkpoint_epoch=info["checkpoint_epoch"],
            checkpoint_sha256=info["checkpoint_sha256"],
        )

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def has_conv(self) -> bool:
        return bool(conv_layers(self.model))

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.split.images.shape[1:])  # type: ignore[return-value]

    def say(self, msg: str) -> None:
        if self.echo:
            self.echo(msg)

    def batches(
        self, desc: str, split: Split | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(images, labels, positions)`` in split order; a progress bar on a terminal.

        Conv models get channels_last inputs: oneDNN then runs the convolutions in that format
        without touching the caller's weights (1.4-1.9x faster inference of the CSCI-611 net on a
        2-core AVX2 CPU; benchmarks/bench_dissect_topk.py prints both).
        """
        split = self.split if split is None else split
        it = batches(split, self.batch_size, device=self.device, channels_last=self.has_conv, shard=self.shard)
        show = interactive() if self.progress is None else self.progress
        if show:
            from tqdm.auto import tqdm

            total = -(-len(split) // self.batch_size)
            if self.shard is not None:
                total = len(range(self.shard[0], total, self.shard[1]))
            it = tqdm(it, total=total, desc=desc, leave=False, unit="batch")
        yield from it

    # -- output --------------------------------------------------------------------------------
    def folder(self, name: str, key: str | None = None) -> Path | None:
        from ..run import Layout

        return None if self.root is None else Layout(self.root).artifact(name, key).folder

    def rel(self, path: Path) -> str:
        return Path(path).relative_to(self.root).as_posix()


class Figures(list):
    """The ``figures`` list of an analysis JSON: paths relative to the run folder, captions.
    Files go under the artifact's folder, ``analysis/<name>[-<key>]/``."""

    def __init__(self, subject: Subject, name: str, key: str | None = None):
        super().__init__()
        self.subject, self.name, self.key = subject, name, key
        self.on = subject.figures and subject.root is not None

    def path(self, *parts: str) -> Path:
        return self.subject.folder(self.name, self.key).joinpath(*parts)

    def add(self, path: Path, caption: str, layer: str | None = None, filter: int | None = None) -> None:
        note = subset_note(self.subject.subset)
        if note:
            caption = f"{caption} [{note}]"
        entry: dict[str, Any] = {"path": self.subject.rel(path), "caption": caption}
        if layer is not None:
            entry["layer"] = layer
        if filter is not None:
            entry["filter"] = int(filter)
        self.append(entry)

    def later(self, path: Path, caption: str, layer: str, filter: int) -> None:
        """List a per-filter figure that is drawn when first needed, not now
        (:func:`convlens.analyses.perfilter.draw_pending` draws it from the JSON and its .npz)."""
        from .perfilter import PENDING

        self.add(path, caption, layer, filter)
        self[-1][PENDING] = True


# ----------------------------------------------------------------------------------------------
# model access


@contextlib.contextmanager
def inference(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no gradients inside; every submodule's own training flag restored after."""
    with borrowed(model, grad=False):
        yield model


ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ReLU6, nn.PReLU, nn.Softplus)
_NORMS = (nn.BatchNorm2d,)
_BOUNDARY = (
    nn.Conv2d,
    nn.Linear,
    nn.Flatten,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.RNNBase,
)


def keeps_constants(m: nn.Module) -> bool:
    """A layer that maps each channel on its own and keeps a constant map constant (in eval mode):
    a batch norm that follows it sees what it would see right after the conv, so a silenced
    channel is silenced the same way (airbench pools between its convs and batch norms)."""
    if isinstance(m, (nn.MaxPool2d, nn.Dropout, nn.Dropout2d, nn.Identity)):
        return True
    return isinstance(m, nn.AvgPool2d) and (m.padding in (0, (0, 0)) or not m.count_include_pad)


@dataclass(frozen=True)
class Block:
    """A conv layer and the batch norm and activation that follow it (``None`` if absent).

    The batch norm takes the conv's output directly or through layers that keep each channel's
    constants (a max pool, dropout: :func:`keeps_constants`). Each name is a call name
    (``trace.call_name``): an activation module that ``forward()`` calls after two convs is
    ``act`` in the first conv's block and ``act@2`` in the second's.

    ``pre`` is where the filter's pre-activation response is read (after the batch norm if there
    is one) and where ablation silences a channel; ``act`` is what the next layer sees.
    """

    conv: str
    bn: str | None
    act: str | None

    @property
    def pre(self) -> str:
        return self.bn or self.conv

    @property
    def post(self) -> str:
        return self.act or self.pre

    def at(self, where: str) -> str:
        return {"conv": self.conv, "bn": self.pre, "act": self.post}[where]


def block(model: nn.Module, layer: str) -> Block:
    """The block a conv layer starts: the batch norm that takes its output and the activation that
    takes theirs, from the traced data flow when the model's input shape is known (any module
    graph; each the call that took the output; an activation written as a function in
    ``forward()`` has no name to read, so ``act`` is then the pre-activation); else the leaf
    modules after it up to the next conv, pool or linear in declaration order."""
    get_layer(model, layer)
    shape = known_shape(model)
    modules = dict(model.named_modules())
    if shape is not None:
        graph = trace_graph(model, shape)
        kind = lambda call: modules.get(split_call(call)[0]) if call else None  # noqa: E731
        bn = graph.next_leaf(layer)
        while bn is not None and keeps_constants(kind(bn)):  # type: ignore[arg-type]
            bn = graph.next_leaf(bn)
        bn = bn if isinstance(kind(bn), _NORMS) else None
        act = graph.next_leaf(bn or layer)
        act = act if isinstance(kind(act), ACTIVATIONS) else None
        return Block(layer, bn, act)
    return _declared_block(model, layer)


def _declared_block(model: nn.Module, layer: str) -> Block:
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    names = [n for n, _ in leaves]
    if layer not in names:
        return Block(layer, None, None)
    bn = act = None
    passed = False  # a layer that keeps constants, which only a batch norm may follow
    for name, m in leaves[names.index(layer) + 1 :]:
        if bn is None and act is None and keeps_constants(m):
            passed = True
            continue
        if isinstance(m, _BOUNDARY) or type(m).__name__ in ("GlobalPool", "RowReader"):
            break
        if isinstance(m, _NORMS) and bn is None and act is None:
            bn = name
        elif isinstance(m, ACTIVATIONS) and act is None:
            act = None if passed and bn is None else name  # after a pool without a norm: not this block's
            break
    return Block(layer, bn, act)


def resolve_layers(model: nn.Module, layers: list[str] | None, default: str, analysis: str) -> list[str]:
    """Validated layer names, or the analysis' default: ``all`` / ``first_last`` / ``first`` /
    ``last`` conv layers, in execution order (traced for the model's input shape, so "last" is
    the last conv ``forward()`` runs); on a deep network ``all`` is the output of each stage
    (``models.stages``). Unknown names raise a LayerError that lists the names."""
    convs = conv_layers(model)
    if layers:
        for name in layers:
            get_layer(model, name)
        return list(dict.fromkeys(layers))
    if not convs:
        raise AnalysisError(f"{analysis} needs conv layers and this model has none")
    pick = {
        "all": stage_layers(model, convs) if is_deep(model, convs) else convs,
        "first": convs[:1],
        "last": convs[-1:],
        "first_last": list(dict.fromkeys([convs[0], convs[-1]])),
    }
    return pick[default]


def require_conv(model: nn.Module, layer: str, analysis: str) -> nn.Conv2d:
    m = get_layer(model, layer)
    if not isinstance(m, nn.Conv2d):
        raise LayerError(
            f"{analysis} needs conv layers; {layer!r} is a {type(m).__name__}. "
            f"Conv layers: {', '.join(conv_layers(model)) or 'none'}"
        )
    return m


def check_spatial(output: Any, layer: str, analysis: str, model: nn.Module) -> None:
    if not (isinstance(output, torch.Tensor) and output.dim() == 4):
        shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        spatial = [n for n in receptive_fields(model) if n != "input"]  # traced when the shape is known
        raise LayerError(
            f"{analysis} reads (N, C, H, W) feature maps, but layer {layer!r} outputs {shape}. "
            f"Layers with feature maps: {', '.join(spatial) or 'none'}"
        )


# ----------------------------------------------------------------------------------------------
# the interface


@dataclass
class Analysis:
    """Base class: dataclass fields are the options; subclasses implement :meth:`compute`."""

    name: ClassVar[str] = ""
    needs_conv: ClassVar[bool] = True
    by_default: ClassVar[bool] = True  # run by a plain ``analyze`` (else only when named)

    def __post_init__(self) -> None:
        check_choices(self, AnalysisError, self.name)  # and no NaN or infinity

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str | None:
        """The artifact key of these options, as explanations are keyed
        (:func:`~convlens.run.artifact_key` of ``layers`` and a ``filters`` list): a run with other
        layers writes ``analysis/<name>-<key>.json`` beside the others; the defaults give None,
        the plain ``analysis/<name>.json``."""
        from ..run import artifact_key

        filters = getattr(self, "filters", None)
        return artifact_key(getattr(self, "layers", None), filters if isinstance(filters, list) else None)

    def key_for(self, subject: Subject) -> str | None:
        """The key of these options on ``subject``'s split (:func:`~convlens.run.split_key`): results
        on another split than test are keyed by it too, beside the test split's."""
        from ..run.layout import split_key

        return split_key(self.key(), subject.split_name)

    def applies(self, subject: Subject) -> str | None:
        """``None`` when this analysis can run on the subject, else why not."""
        if self.needs_conv and not subject.has_conv:
            return "the model has no conv layers"
        return None

    def check(self, subject: Subject) -> None:
        why = self.applies(subject)
        if why:
            ok = [n for n, cls in ANALYSES.items() if cls().applies(subject) is None]
            raise AnalysisError(
                f"{self.name} does not apply: {why}. Analyses that apply to this model: {', '.join(ok) or 'none'}"
            )

    def validate(self, subject: Subject) -> None:
        """Fail on bad layer names (or filters) before any long computation starts."""
        for name in getattr(self, "layers", None) or []:
            get_layer(subject.model, name)

    def compute(self, subject: Subject) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(self, subject: Subject) -> dict[str, Any]:
        """Run on ``subject``: check, compute (eval mode, no gradients), write; returns the result."""
        self.check(subject)
        self.validate(subject)
        t0 = time.perf_counter()
        with inference(subject.model):
            self.clear(subject)
            result = self.compute(subject)
        return self.publish(subject, result, time.perf_counter() - t0)

    def clear(self, subject: Subject) -> None:
        """Remove this analysis' figures and arrays of an earlier run, so the folder matches the new JSON."""
        folder = subject.folder(self.name, self.key_for(subject))
        if folder is not None and folder.is_dir():
            shutil.rmtree(folder)
        if subject.root is not None:
            from ..run import Layout

            Layout(subject.root).artifact(self.name, self.key_for(subject)).npz.unlink(missing_ok=True)

    def publish(self, subject: Subject, result: dict[str, Any], seconds: float) -> dict[str, Any]:
        out = {
            "analysis": self.name,
            "params": self.params(),
            "split": subject.split_name,
            "checkpoint": subject.checkpoint,
            "checkpoint_epoch": subject.checkpoint_epoch,
            "checkpoint_sha256": subject.checkpoint_sha256,
            "n_images": len(subject.split),
            "subset": subject.subset,
            "seconds": round(seconds, 3),
            **result,
        }
        out.setdefault("figures", [])
        if subject.root is not None:
            from ..run import Layout

            Layout(subject.root).artifact(self.name, self.key_for(subject)).write(out)
        return Result(out, subject.root)

    def lines(self, result: dict[str, Any]) -> list[str]:
        """A few lines for the terminal: what was found."""
        return []


class Streaming(Analysis):
    """An analysis fed layer outputs batch by batch, in one pass that can be shared.

    ``probes`` names the modules whose outputs it reads; ``observe`` receives each of them for
    every batch (in split order, inside the forward pass, so nothing is kept longer than a
    layer); ``finish`` turns the running state into the result.
    """

    def streams(self) -> bool:
        """Whether these options read layer outputs only (and can share the pass without gradients)."""
        return True

    def probes(self, subject: Subject) -> list[str]:
        raise NotImplementedError

    def start(self, subject: Subject) -> None:
        pass

    def observe(self, probe: str, output: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor) -> None:
        raise NotImplementedError

    def finish(self, subject: Subject) -> dict[str, Any]:
        raise NotImplementedError

    def compute(self, subject: Subject) -> dict[str, Any]:
        from .stream import stream

        stream(subject, [self])
        return self.finish(subject)
