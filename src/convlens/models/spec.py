"""The layer vocabulary of a model spec: one small pydantic model per layer type.

A model in a config is a list of these, e.g.::

    layers:
      - {type: conv, out: 32, kernel: 3, padding: 1}
      - bn
      - relu
      - {type: maxpool, kernel: 2}
      - flatten
      - {type: linear, out: classes}

A bare string is short for ``{type: <string>}``. This module has no torch import so a config can
be validated before torch loads.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Layer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefix: ClassVar[str | None] = None  # default module names: prefix plus a counter (None: the type)
    name: str | None = Field(None, description="Module name; default: type plus a counter")


class Conv(_Layer):
    type: Literal["conv"]
    prefix = "conv"
    out: int | None = Field(None, gt=0, description="Output channels")
    stage: int | None = Field(
        None, ge=0, description="Channels = round(width * multiplier ** stage), from the model options"
    )
    kernel: int = Field(3, gt=0)
    stride: int = Field(1, gt=0)
    padding: int | Literal["same"] = 0
    dilation: int = Field(1, gt=0)
    groups: int = Field(1, gt=0)
    bias: bool = True
    init: Literal["default", "identity", "whiten"] = Field(
        "default",
        description="identity: Dirac weights, the conv starts as an identity map on its first channels; "
        "whiten: eigenvectors of the training patches' covariance (and their negatives), set from the data",
    )
    whiten_eps: float = Field(5e-4, gt=0, description="init: whiten adds this to each eigenvalue before 1/sqrt")
    freeze: bool = Field(False, description="Keep the weights at their initial values (the bias still trains)")

    @model_validator(mode="after")
    def _one_width(self) -> Conv:
        if (self.out is None) == (self.stage is None):
            raise ValueError("a conv layer needs exactly one of `out` (channels) or `stage`")
        if isinstance(self.padding, int) and self.padding < 0:
            raise ValueError(f"padding must be >= 0 or 'same', got {self.padding}")
        if self.init == "whiten" and (self.out is None or self.out % 2):
            raise ValueError(
                "init: whiten needs an even `out` (half the filters are the negatives of the others), "
                f"got out={self.out}"
            )
        if self.init == "whiten" and self.groups != 1:
            raise ValueError(f"init: whiten needs groups: 1, got {self.groups}")
        return self


class BatchNorm(_Layer):
    type: Literal["bn"]
    prefix = "bn"
    momentum: float = Field(0.1, gt=0, le=1)
    eps: float = Field(1e-5, gt=0)
    affine: bool = True
    learn_scale: bool = Field(
        True, description="false: the scale stays 1 and only the shift is learned, as the speed records do"
    )


class Activation(_Layer):
    type: Literal["relu", "gelu", "elu", "tanh", "sigmoid", "silu", "leaky_relu"]
    slope: float = Field(0.01, ge=0, description="Negative slope of leaky_relu")


class Pool(_Layer):
    type: Literal["maxpool", "avgpool"]
    prefix = "pool"
    kernel: int = Field(2, gt=0)
    stride: int | None = Field(None, gt=0, description="Default: the kernel size")
    padding: int = Field(0, ge=0)


class GlobalPool(_Layer):
    type: Literal["globalpool"]
    prefix = "gpool"
    mode: Literal["max", "avg"] = "max"


class Dropout(_Layer):
    type: Literal["dropout", "dropout2d"]
    prefix = "drop"
    p: float = Field(0.5, ge=0, lt=1)


class Flatten(_Layer):
    type: Literal["flatten"]
    prefix = "flatten"


class Linear(_Layer):
    type: Literal["linear"]
    prefix = "fc"
    out: int | Literal["classes"] = "classes"
    bias: bool = True

    @model_validator(mode="after")
    def _positive(self) -> Linear:
        if isinstance(self.out, int) and self.out <= 0:
            raise ValueError(f"out must be > 0 or 'classes', got {self.out}")
        return self


class Scale(_Layer):
    type: Literal["scale"]
    prefix = "scale"
    factor: float


class Recurrent(_Layer):
    """Reads an image row by row: H steps of C*W values; outputs the last hidden state."""

    type: Literal["rnn", "lstm", "gru"]
    hidden: int = Field(128, gt=0)
    num_layers: int = Field(1, gt=0)
    bidirectional: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)


# The one table of layer kinds: the spec classes above. The config's layer type, the valid tags,
# the default module names and the builder's dispatch (models/builder.py) all derive from it.
LAYER_CLASSES: tuple[type[_Layer], ...] = (
    Conv,
    BatchNorm,
    Activation,
    Pool,
    GlobalPool,
    Dropout,
    Flatten,
    Linear,
    Scale,
    Recurrent,
)

KINDS: dict[str, type[_Layer]] = {
    tag: cls for cls in LAYER_CLASSES for tag in get_args(cls.model_fields["type"].annotation)
}

LayerSpec = Annotated[Union[LAYER_CLASSES], Field(discriminator="type")]  # type: ignore[valid-type]

LAYER_TYPES: tuple[str, ...] = tuple(KINDS)


def name_prefix(tag: str) -> str:
    """Default module names of a layer type: ``conv1``, ``bn1``, ``pool1``, ``fc1``, ``relu1``..."""
    return KINDS[tag].prefix or tag


def expand_shorthand(layer: Any) -> Any:
    """``"relu"`` -> ``{"type": "relu"}``; anything else is returned unchanged."""
    if isinstance(layer, str):
        return {"type": layer}
    return layer


def layer_fields(tag: str) -> list[str]:
    """The keys a layer of type ``tag`` accepts (for error messages)."""
    return list(KINDS[tag].model_fields) if tag in KINDS else []
