"""Typed, validated experiment configuration; YAML in and out.

Validation happens here, at the edge, before torch or any data loads: an unknown key, a wrong type
or an out-of-range value raises one :class:`~convlens.errors.ConfigError` listing every problem
with its dotted key, the value given and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .models.spec import LayerSpec, expand_shorthand, layer_fields


class Strict(BaseModel):
    # NaN and infinity are no setting: `weight_decay=inf` would train to nonsense and read as divergence
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------------------------
# data


class Crop(Strict):
    padding: int = Field(4, ge=0, description="Pixels padded on each side before a random crop")
    fill: Literal["zeros", "reflect"] = "zeros"


class Flip(Strict):
    p: float = Field(0.5, ge=0, le=1)
    alternate: bool = Field(False, description="Derandomised flips: each image is flipped on every other epoch")


class Jitter(Strict):
    brightness: float = Field(0.0, ge=0, le=1)
    contrast: float = Field(0.0, ge=0, le=1)
    saturation: float = Field(0.0, ge=0, le=1)


class Noise(Strict):
    sigma: float = Field(0.05, ge=0, le=1, description="Std of Gaussian noise on [0, 1] pixels")
    clip: bool = True


class Erase(Strict):
    p: float = Field(0.5, ge=0, le=1)
    scale: tuple[float, float] = (0.02, 0.33)
    ratio: tuple[float, float] = (0.3, 3.3)
    value: float | Literal["random", "mean"] = Field(
        "mean", description="Fill: a number in [0, 1], 'random' noise, or the data set's mean colour"
    )

    @field_validator("scale", "ratio")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1]):
            raise ValueError(f"needs 0 < low <= high, got {list(v)}")
        return v


class Cutout(Strict):
    size: int = Field(8, gt=0, description="Side of the square filled with the data set's mean colour")
    p: float = Field(1.0, ge=0, le=1)


class Rotate(Strict):
    degrees: float = Field(10.0, ge=0, le=180)


class Translate(Strict):
    pixels: int = Field(2, ge=0, description="Largest shift in each direction (reflect-padded)")


class AugmentConfig(Strict):
    """Batched augmentations, applied in this order; a missing entry is off."""

    crop: Crop | None = None
    translate: Translate | None = None
    flip: Flip | None = None
    rotate: Rotate | None = None
    jitter: Jitter | None = None
    noise: Noise | None = None
    erase: Erase | None = None
    cutout: Cutout | None = None


class DataConfig(Strict):
    name: str = Field("digits", description="A registered data set; `convlens datasets` lists them")
    root: str | None = Field(None, description="Folder or archive holding the data")
    download: bool = Field(True, description="Download the official files when they are missing")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of train carved out for validation")
    split_seed: int = 0
    train_subset: int | None = Field(None, gt=0, description="Use only this many training images")
    test_subset: int | None = Field(None, gt=0, description="Use only this many test images")
    grayscale: bool = False
    resize: int | None = Field(
        None, gt=0, le=4096, description="Resize images to resize x resize (at most 4096: 50 MB an image)"
    )
    size: int | None = Field(
        None,
        ge=16,
        le=1024,
        description="imagefolder: the model's input side (e.g. 224); images are decoded once into an "
        "on-disk cache at short side size / crop, evaluated on the centre size x size, trained on random "
        "resized crops with flips",
    )
    crop: float = Field(0.875, gt=0, le=1, description="With data.size: size / the cached short side (224 of 256)")
    cache: Literal["auto", "memory", "memmap"] = Field(
        "auto",
        description="With data.size: memmap reads batches from the on-disk cache, memory loads it whole; "
        "auto: memmap when the decoded images would exceed CONVLENS_MEMMAP_ABOVE bytes (default 1 GiB)",
    )
    normalize: bool = True
    mean: list[float] | None = Field(None, description="Per-channel mean; default: the train split's")
    std: list[float] | None = None
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from .data.registry import DATASETS

        if v not in DATASETS:
            raise ValueError(f"unknown data set {v!r}; allowed: {', '.join(sorted(DATASETS))}")
        return v

    @model_validator(mode="after")
    def _sized(self) -> DataConfig:
        if self.size is None:
            if self.cache == "memmap":
                raise ValueError("data.cache=memmap needs data.size (the side the images are cached at)")
            return self
        if self.name != "imagefolder":
            raise ValueError(
                f"data.size applies to data.name=imagefolder; {self.name!r} has its own size (data.resize)"
            )
        if self.resize is not None:
            raise ValueError("give data.size (crops of an on-disk cache) or data.resize (whole images), not both")
        return self


# ----------------------------------------------------------------------------------------------
# model


class ModelConfig(Strict):
    preset: str | None = Field(None, description="A registered preset; `convlens models` lists them")
    layers: list[LayerSpec] | None = Field(None, description="A layer list, instead of a preset")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Preset knobs, or width/multiplier for `stage` convs"
    )
    factory: str | None = Field(
        None,
        description="Any nn.Module: MODULE:FACTORY, a function or class importable from here "
        "(e.g. pkg.models:make) called with `kwargs`; it takes [0, 1] images",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the factory")

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, v: str | None) -> str | None:
        from .models.factory import check_form

        return None if v is None else check_form(v)

    @field_validator("layers", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return [expand_shorthand(x) for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if sum(x is not None for x in (self.preset, self.layers, self.factory)) != 1:
            raise ValueError("give exactly one of `model.preset`, `model.layers` or `model.factory`")
        if self.kwargs and self.factory is None:
            raise ValueError("`model.kwargs` goes with `model.factory`; presets take `model.options`")
        if self.factory is not None:
            if self.options:
                raise ValueError("`model.options` goes with a preset or a layer list; a factory takes `model.kwargs`")
        elif self.preset is not None:
            from .models.registry import PRESETS, check_options

            if self.preset not in PRESETS:
                raise ValueError(f"unknown preset {self.preset!r}; allowed: {', '.join(sorted(PRESETS))}")
            check_options(self.preset, self.options)
        else:
            bad = set(self.options) - {"width", "multiplier"}
            if bad:
                raise ValueError(f"unknown model option(s) {sorted(bad)} for a layer list; allowed: width, multiplier")
        return self


# ----------------------------------------------------------------------------------------------
# training


class MuonConfig(Strict):
    """Muon for the conv filter banks (train/muon.py); the other parameters keep the named optimiser."""

    lr: float = Field(0.24, gt=0, le=100, description="Step size of the orthogonalised filter updates")
    momentum: float = Field(0.6, ge=0, lt=1)
    nesterov: bool = True
    ns_steps: int = Field(3, ge=1, le=20, description="Newton-Schulz iterations per update")
    ns_precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="Precision of the Newton-Schulz iterations: bf16 (as airbench94_muon) halves their "
        "cost where the CPU or GPU has bf16 matrix units (and is far slower where it is emulated); "
        "auto: bf16 when training runs in bf16 autocast, else fp32",
    )


class OptimConfig(Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, le=100)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    bias_lr_scale: float = Field(1.0, gt=0, description="Biases (and norm weights) get lr times this")
    bias_weight_decay: float | None = Field(
        None,
        ge=0,
        description="Weight decay of the biases and norm weights; default: weight_decay. The speed "
        "records use weight_decay / bias_lr_scale, so both groups decay by the same amount per step",
    )
    muon: MuonConfig | None = Field(None, description="Muon for conv filters (with name=sgd); off when absent")

    @model_validator(mode="after")
    def _nesterov(self) -> OptimConfig:
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("nesterov=true needs name=sgd and momentum > 0")
        if self.muon is not None and self.name != "sgd":
            raise ValueError(f"train.optimizer.muon needs name=sgd (got name={self.name!r}); allowed: sgd")
        return self


class ScheduleConfig(Strict):
    name: Literal["constant", "step", "cosine", "warmup_cosine", "onecycle"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0, description="Linear warm-up length (warmup_cosine)")
    start_factor: float = Field(0.1, ge=0, le=1, description="Warm-up (and onecycle) starts at lr * start_factor")
    min_lr: float = Field(0.0, ge=0, description="Floor of cosine schedules")
    step_epochs: int = Field(30, gt=0, description="step: multiply lr by gamma every step_epochs")
    gamma: float = Field(0.1, gt=0, le=1)
    pct_start: float = Field(0.25, gt=0, lt=1, description="onecycle: share of the rise")
    final_factor: float = Field(0.0, ge=0, le=1, description="onecycle: final lr / peak lr")


class AverageConfig(Strict):
    """Weight averaging: the evaluated (and saved) weights are an average over recent steps."""

    kind: Literal["ema", "lookahead"] = Field(
        "lookahead",
        description="ema: a running average kept beside the weights; lookahead: the weights are "
        "pulled back to the running average at every update, which training then continues from",
    )
    decay: float = Field(0.95**5, gt=0, lt=1, description="Share of the old average kept at each update")
    every: int = Field(5, gt=0, description="Update the average every this many optimiser steps")
    power: float = Field(
        3.0,
        ge=0,
        description="At step t of T the decay is decay * (t / T) ** power: averaging ramps in as "
        "the learning rate falls (0: constant decay)",
    )


HPARAM_KEYS = (
    "seed",
    "model.preset",
    "train.epochs",
    "train.batch_size",
    "train.optimizer.name",
    "train.optimizer.lr",
    "train.optimizer.weight_decay",
    "train.schedule.name",
)


class TensorboardConfig(Strict):
    """What the run logs to TensorBoard besides the scalars (all of it once per epoch or once)."""

    enabled: bool = Field(True, description="Write TensorBoard event files under the run's tb/ folder")
    histograms: bool = Field(True, description="Weight and gradient histograms per layer, once per epoch")
    images: bool = Field(True, description="First-layer filters as an image per epoch; the confusion matrix")
    embeddings: bool = Field(False, description="Penultimate features of test images for the projector")
    embedding_images: int = Field(200, gt=0, le=10000, description="How many test images the projector shows")
    hparams: list[str] = Field(
        default_factory=list,
        description="Config keys shown in the HParams tab besides the usual ones (a sweep adds its swept keys)",
    )


class ResizeSchedule(Strict):
    """Progressive resizing (train/resize.py): early epochs on smaller images."""

    sizes: list[int] = Field(description="Training image sizes, in order, spread over the early epochs")
    fraction: float = Field(0.5, gt=0, le=1, description="Share of the epochs trained at the smaller sizes")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if not v or any(s < 4 or s > 4096 for s in v):
            raise ValueError(f"sizes={v} must be a non-empty list of sizes from 4 to 4096")
        return v


class TrainConfig(Strict):
    epochs: int = Field(10, gt=0, le=100000)
    batch_size: int = Field(128, gt=0, le=1 << 20)
    optimizer: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 where the hardware has native bf16 (CUDA, AMX/AVX512-BF16); "
        "fp16: float16 autocast with gradient scaling, CUDA only",
    )
    channels_last: Literal["auto", "on", "off"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, gt=0, description="torch threads; default: all usable cores")
    diverge_factor: float | None = Field(
        10.0,
        gt=1,
        description="Stop as diverged when the epoch's train loss exceeds this x ln(classes); "
        "null: train on through any finite loss (a NaN or infinite one always stops)",
    )
    eval_every: int = Field(1, gt=0, description="Validate every this many epochs (and the last)")
    clean_subset: int = Field(
        0,
        ge=0,
        description="Each validated epoch, also measure train_clean_acc: the accuracy on the first this many "
        "training images, in eval mode and without augmentation (clean_gap: it minus val_acc); 0: off",
    )
    average: AverageConfig | None = Field(None, description="Weight averaging (EMA or lookahead); off when absent")
    tensorboard: TensorboardConfig = Field(default_factory=TensorboardConfig)

    resize_schedule: ResizeSchedule | None = Field(None, description="Progressive resizing; off when absent")
    frozen_bias_epochs: int | None = Field(
        None,
        ge=0,
        description=(
            "Epochs during which the biases of frozen conv layers (the fast preset's whitening conv) still "
            "train; afterwards they freeze too and backpropagation stops at the next layer. Absent: they always train"
        ),
    )


class EvalConfig(Strict):
    tta: Literal["none", "flip", "flip_shift"] = Field(
        "none", description="Test-time augmentation: average logits over flips (and 1-pixel shifts)"
    )
    checkpoint: Literal["last", "best"] = Field("last", description="Weights evaluated on the test split")
    precision: Literal["fp32", "train"] = Field(
        "fp32",
        description="Precision of the test metrics: fp32 (as every analysis computes), or train (the run's own, "
        "bf16 autocast where train.precision picked it)",
    )
    batch_size: int = Field(500, gt=0)
    every_epoch: bool = Field(
        False, description="Also evaluate the test split after every epoch (logged as test; never picks a checkpoint)"
    )


class ExperimentConfig(Strict):
    name: str = "run"
    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(preset="tiny"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    meta: dict[str, Any] = Field(
        default_factory=dict, description="Written by convlens: version, time, command; ignored on input"
    )

    @model_validator(mode="after")
    def _hparams_known(self) -> "ExperimentConfig":
        raw = self.model_dump(mode="json")
        for key in self.train.tensorboard.hparams:
            try:
                get_dotted(raw, key)
            except (KeyError, IndexError, ValueError, TypeError):
                raise ValueError(
                    f"train.tensorboard.hparams: {key!r} is not a key of this config "
                    "(allowed: dotted config keys such as train.optimizer.lr)"
                ) from None
        return self

    # -- io ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude_none=False)
        if out["model"]["factory"] is None:  # a preset or layer list: the section reads as before
            del out["model"]["factory"], out["model"]["kwargs"]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)

    def save(self, path: str | Path) -> None:
        from .utils import atomic_write_text

        atomic_write_text(Path(path), self.to_yaml())


# ----------------------------------------------------------------------------------------------
# loading, overrides and error messages


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        ann = field.annotation
        for cand in getattr(ann, "__args__", (ann,)):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                keys.extend(_known_keys(cand, key + "."))
    return keys


def known_keys() -> list[str]:
    """Every dotted key of the config schema (not counting layer lists and preset options)."""
    return _known_keys(ExperimentConfig)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    keys = known_keys()
    for e in err.errors():
        raw_loc = [str(p) for p in e["loc"]]
        # drop what pydantic inserts into locations: the union tag after a list index
        # (model.layers.0.conv.out) and validator wrappers (function-after[...])
        loc = [
            p
            for i, p in enumerate(raw_loc)
            if not p.startswith("function-") and not (p in _TAGS and i > 0 and raw_loc[i - 1].isdigit())
        ]
        key = ".".join(loc) or "(top level)"
        if e["type"] == "extra_forbidden" and len(raw_loc) >= 4 and raw_loc[:2] == ["model", "layers"]:
            fields = layer_fields(raw_loc[3])
            close = difflib.get_close_matches(loc[-1], fields, n=2, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            lines.append(f"- unknown key `{key}`{hint} A {raw_loc[3]} layer takes: {', '.join(fields)}.")
        elif e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            siblings = [k.rsplit(".", 1)[-1] for k in keys if "." in k and k.rsplit(".", 1)[0] == parent]
            siblings = [s for s in siblings if "." not in s] if parent else [k for k in keys if "." not in k]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            allowed = f" Allowed here: {', '.join(siblings)}." if siblings else ""
            lines.append(f"- unknown key `{key}`{hint}{allowed}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            hidden = isinstance(got, dict) or e["type"] == "missing" or repr(got) in msg or str(got) in msg
            shown = "" if hidden else f" (got {got!r})"
            lines.append(f"- `{key}`: {msg}{shown}")
    return f"invalid config {source}:\n" + "\n".join(lines)


_TAGS = {
    "conv",
    "bn",
    "relu",
    "gelu",
    "elu",
    "tanh",
    "sigmoid",
    "silu",
    "leaky_relu",
    "maxpool",
    "avgpool",
    "globalpool",
    "dropout",
    "dropout2d",
    "flatten",
    "linear",
    "scale",
    "rnn",
    "lstm",
    "gru",
    "int",
    "str",
    "float",
    "literal['same']",
    "literal['classes']",
    "literal['random','mean']",
}


def validate(raw: dict[str, Any], source: str = "") -> ExperimentConfig:
    """Validate a plain dict into an :class:`ExperimentConfig`, or raise one ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


# A config holds a few hundred values; aliases (*a) repeat what their anchor (&a) holds, so nine
# nested levels of ten make 10^9 of them, and walking that (validation, saving) never ends.
MAX_YAML_VALUES = 100_000


class _Loader(yaml.SafeLoader):
    """Safe YAML (plain data only) that refuses a key given twice in one mapping."""


def _no_duplicate_keys(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden: that is its use
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark)
        except TypeError:  # an unhashable key: the constructor below says so
            continue
        if first is not key_node.start_mark:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} is given twice in one mapping (first on line {first.line + 1})",
                key_node.start_mark,
            )
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def _expanded_size(obj: Any, memo: dict[int, int]) -> int:
    """How many values ``obj`` holds once every alias is written out (shared objects counted each
    time they appear, each computed once)."""
    if not isinstance(obj, (dict, list)):
        return 1
    if id(obj) in memo:
        return memo[id(obj)]
    memo[id(obj)] = MAX_YAML_VALUES + 1  # a cycle (an alias inside its own anchor) is unbounded
    items = list(obj.items()) if isinstance(obj, dict) else [(None, v) for v in obj]
    n = 1
    for _, v in items:
        n += _expanded_size(v, memo)
        if n > MAX_YAML_VALUES:
            break
    memo[id(obj)] = n
    return n


def load_yaml(text: str, source: str) -> Any:
    """Plain YAML data from ``text`` (``source`` names it in errors): no tags that build objects,
    no key twice in a mapping, at most :data:`MAX_YAML_VALUES` values once aliases are expanded."""
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if _expanded_size(raw, {}) > MAX_YAML_VALUES:
        raise ConfigError(
            f"{source} expands to more than {MAX_YAML_VALUES:,} values (its aliases, *name, repeat what their "
            "anchors hold, nested); a config holds a few hundred: write the values out"
        )
    return raw


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.optimizer.lr=0.1"`` -> ``("train.optimizer.lr", 0.1)`` (the value is YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value, e.g. train.epochs=5")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    value = load_yaml(text, f"override {item!r}: the value") if text.strip() else None
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``key="a.b.c"``, creating mappings; list indices allowed."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_index(node, part, parts[: i + 1])]
            continue
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, (dict, list)):
            raise ConfigError(f"cannot set `{key}`: `{'.'.join(parts[: i + 1])}` is {nxt!r}, not a mapping")
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, parts)] = value
    else:
        node[last] = value


def _index(node: list, part: str, parts: list[str]) -> int:
    try:
        i = int(part)
        node[i]
        return i
    except (ValueError, IndexError):
        raise ConfigError(f"`{'.'.join(parts)}`: {part!r} is not an index of a list of {len(node)} items") from None


def get_dotted(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        from .run.layout import Layout  # names the run folder's files; imports nothing heavy

        is_run = Layout(path).config_file.is_file()
        hint = f"; to continue the run in it: convlens train --resume {path}" if is_run else ""
        raise ConfigError(f"config file {path} is a folder, not a YAML file{hint}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = load_yaml(path.read_text(), f"config file {path}")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not text (UTF-8 YAML): {exc.reason} at byte {exc.start}") from None
    if raw is None:  # an empty file (or only comments) would silently train the defaults
        raise ConfigError(f"config file {path} is empty: it holds no settings (it would run the defaults)")
    return raw


def load_config(
    source: str | Path | dict[str, Any] | ExperimentConfig | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> ExperimentConfig:
    """Read a config from a YAML file, a dict or a config, apply ``key=value`` overrides, validate.

    >>> cfg = load_config(None, ["train.epochs=3"])
    >>> cfg.train.epochs
    3
    """
    if isinstance(source, ExperimentConfig):
        raw, label = source.to_dict(), "(object)"
    elif isinstance(source, dict):
        raw, label = copy.deepcopy(source), "(dict)"
    elif source is None:
        raw, label = {}, "(defaults)"
    else:
        raw, label = read_yaml(source), str(source)
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = [parse_override(o) for o in overrides or []]
    for key, value in items:
        set_dotted(raw, key, value)
    return validate(raw, label)


# What each optimiser and schedule reads (train/optim.py); the others are shown only when set.
_OPTIMIZER_USES = {"sgd": ("momentum", "nesterov"), "adam": ("betas", "eps"), "adamw": ("betas", "eps")}
_SCHEDULE_USES = {
    "constant": (),
    "step": ("step_epochs", "gamma"),
    "cosine": ("min_lr",),
    "warmup_cosine": ("warmup_epochs", "start_factor", "min_lr"),
    "onecycle": ("start_factor", "pct_start", "final_factor"),
}


def unstated_defaults(cfg: ExperimentConfig) -> list[str]:
    """``key=value`` for the training settings a run depends on that its config left to defaults
    (e.g. ``train.optimizer.momentum=0.9`` for a plain ``optimizer: {name: sgd, lr: 0.01}``): the
    epochs, batch size, optimiser and schedule. A report that does not state them can be checked
    against what the run really used."""
    t, out = cfg.train, []
    common = ("lr", "weight_decay", "bias_lr_scale", "bias_weight_decay")
    sections = (
        ("train", t, ("epochs", "batch_size")),
        ("train.optimizer", t.optimizer, ("name", *common, *_OPTIMIZER_USES[t.optimizer.name])),
        ("train.schedule", t.schedule, ("name", *_SCHEDULE_USES[t.schedule.name])),
    )
    for prefix, section, names in sections:
        for name in names:
            if name not in section.model_fields_set:
                value = getattr(section, name)
                out.append(f"{prefix}.{name}={list(value) if isinstance(value, tuple) else value}")
    return out


def defaults_note(cfg: ExperimentConfig) -> str:
    """A second line for the start of a run's log naming :func:`unstated_defaults` ("" if none)."""
    defaults = unstated_defaults(cfg)
    return f"\ndefaults (not set in the config): {', '.join(defaults)}" if defaults else ""
