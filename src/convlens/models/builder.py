"""Build a model from a layer spec: a flat ``nn.Sequential`` whose children have stable names.

The first child, ``input``, normalises [0, 1] images with the data set's mean and std, so every
model takes plain images: analyses and explanations work in pixel space and never need to know
the normalisation. Layer names are ``conv1, bn1, relu1, pool1, ..., fc1, ...`` unless the spec
names them; analyses address layers by these names.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from . import spec as S

# default module names per layer type, from the one table of layer kinds (models/spec.py)
PREFIX = {tag: S.name_prefix(tag) for tag in S.LAYER_TYPES}


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel. ``persistent=False`` keeps mean and std out of the
    ``state_dict`` (they come from the config), so a model in torchvision's key layout saves and
    loads exactly torchvision's keys."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], persistent: bool = True):
        super().__init__()
        for name, values in (("mean", mean), ("std", std)):
            tensor = torch.tensor(list(values), dtype=torch.float32).view(1, -1, 1, 1)
            self.register_buffer(name, tensor, persistent=persistent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"channels={self.mean.numel()}"


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class GlobalPool(nn.Module):
    """(N, C, H, W) -> (N, C): the max or mean over all positions."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax((2, 3)) if self.mode == "max" else x.mean((2, 3))

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class RowReader(nn.Module):
    """Read an image as a sequence of rows: H steps of C*W values; return the last hidden state."""

    def __init__(self, cell: str, in_features: int, hidden: int, num_layers: int, bidirectional: bool, dropout: float):
        super().__init__()
        cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.cell = cell
        self.rnn = cls(
            in_features,
            hidden,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        seq = x.permute(0, 2, 1, 3).reshape(n, h, c * w)
        out, _ = self.rnn(seq)
        if self.rnn.bidirectional:
            half = out.shape[-1] // 2
            # forward direction ends at the last row, the backward one at the first
            return torch.cat([out[:, -1, :half], out[:, 0, half:]], 1)
        return out[:, -1]


class ConvlensNet(nn.Sequential):
    """A flat sequence of named layers; ``spec`` keeps the layer list it was built from."""

    def __init__(
        self,
        layers: OrderedDict[str, nn.Module],
        spec: list[dict[str, Any]] | None = None,
        in_shape: tuple[int, int, int] | None = None,
    ):
        # spec and in_shape are optional so that slicing (model[:4]) yields a ConvlensNet too
        super().__init__(layers)
        self.spec = spec or []
        self.in_shape = tuple(in_shape) if in_shape else None

    def layer_names(self, kind: type[nn.Module] | tuple[type[nn.Module], ...] | None = None) -> list[str]:
        return [n for n, m in self.named_children() if kind is None or isinstance(m, kind)]


def conv_channels(layer: S.Conv, options: dict[str, Any]) -> int:
    if layer.out is not None:
        return layer.out
    width, mult = options.get("width"), options.get("multiplier", 2.0)
    if width is None:
        raise ConfigError("a conv layer with `stage` needs model.options.width (first-layer channels)")
    return max(1, int(round(width * mult**layer.stage)))


def _identity_init(conv: nn.Conv2d) -> None:
    """Dirac weights on the first min(in, out) channels: the conv starts as an identity map."""
    with torch.no_grad():
        k = min(conv.in_channels // conv.groups, conv.out_channels)
        conv.weight[:k].zero_()
        c = conv.kernel_size[0] // 2, conv.kernel_size[1] // 2
        for i in range(k):
            conv.weight[i, i, c[0], c[1]] = 1.0


def _conv(layer: S.Conv, shape: tuple[int, ...], num_classes: int, options: dict[str, Any]) -> nn.Module:
    if len(shape) != 3:
        raise ConfigError(f"conv layer needs an image input, but its input has shape {list(shape)}")
    pad = layer.padding if layer.padding != "same" else (layer.kernel - 1) // 2 * layer.dilation
    if layer.padding == "same" and layer.stride != 1:
        raise ConfigError("padding: same needs stride 1")
    conv = nn.Conv2d(
        shape[0],
        conv_channels(layer, options),
        layer.kernel,
        layer.stride,
        pad,
        layer.dilation,
        layer.groups,
        layer.bias,
    )
    if layer.init == "identity":
        _identity_init(conv)
    if layer.init == "whiten":
        dims = shape[0] * layer.kernel * layer.kernel
        if conv.out_channels > 2 * dims:
            raise ConfigError(
                f"init: whiten gives at most {2 * dims} filters here ({dims} patch dimensions of a "
                f"{layer.kernel}x{layer.kernel} kernel on {shape[0]} channels, and their negatives); "
                f"got out={conv.out_channels}"
            )
        # the weights are set from the training data by models.whiten.init_whitening
    if layer.freeze:
        conv.weight.requires_grad_(False)
    return conv


def _bn(layer: S.BatchNorm, shape: tuple[int, ...], *_: Any) -> nn.Module:
    cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
    bn = cls(shape[0], eps=layer.eps, momentum=layer.momentum, affine=layer.affine)
    if layer.affine and not layer.learn_scale:
        bn.weight.requires_grad_(False)  # stays at its initial 1
    return bn


_ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
}


def _activation(layer: S.Activation, *_: Any) -> nn.Module:
    return nn.LeakyReLU(layer.slope) if layer.type == "leaky_relu" else _ACTIVATIONS[layer.type]()


def _pool(layer: S.Pool, shape: tuple[int, ...], *_: Any) -> nn.Module:
    if len(shape) != 3:
        raise ConfigError(f"{layer.type} needs an image input, but its input has shape {list(shape)}")
    cls = nn.MaxPool2d if layer.type == "maxpool" else nn.AvgPool2d
    return cls(layer.kernel, layer.stride or layer.kernel, layer.padding)


def _dropout(layer: S.Dropout, shape: tuple[int, ...], *_: Any) -> nn.Module:
    return nn.Dropout2d(layer.p) if layer.type == "dropout2d" and len(shape) == 3 else nn.Dropout(layer.p)


def _linear(layer: S.Linear, shape: tuple[int, ...], num_classes: int, *_: Any) -> nn.Module:
    n_in = 1
    for d in shape:
        n_in *= d
    if len(shape) != 1:
        raise ConfigError(f"linear layer input has shape {list(shape)}; put a `flatten` or `globalpool` before it")
    return nn.Linear(n_in, num_classes if layer.out == "classes" else layer.out, layer.bias)


def _recurrent(layer: S.Recurrent, shape: tuple[int, ...], *_: Any) -> nn.Module:
    if len(shape) != 3:
        raise ConfigError(f"{layer.type} reads images row by row; its input has shape {list(shape)}")
    return RowReader(
        layer.type, shape[0] * shape[2], layer.hidden, layer.num_layers, layer.bidirectional, layer.dropout
    )


# the builder's dispatch: one maker per spec class of the table of layer kinds
MAKERS: dict[type, Any] = {
    S.Conv: _conv,
    S.BatchNorm: _bn,
    S.Activation: _activation,
    S.Pool: _pool,
    S.GlobalPool: lambda layer, *_: GlobalPool(layer.mode),
    S.Dropout: _dropout,
    S.Flatten: lambda *_: nn.Flatten(),
    S.Linear: _linear,
    S.Scale: lambda layer, *_: Scale(layer.factor),
    S.Recurrent: _recurrent,
}
if set(MAKERS) != set(S.LAYER_CLASSES):  # a new kind in spec.py needs its maker here
    raise ImportError(f"layer kinds without a maker: {set(S.LAYER_CLASSES) - set(MAKERS)}")


def _make(layer: Any, shape: tuple[int, ...], num_classes: int, options: dict[str, Any]) -> nn.Module:
    return MAKERS[S.KINDS[layer.type]](layer, shape, num_classes, options)


def build(
    layers: list[Any],
    in_shape: tuple[int, int, int],
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    options: dict[str, Any] | None = None,
) -> ConvlensNet:
    """Build a :class:`ConvlensNet` from validated layer specs (or plain dicts)."""
    from pydantic import TypeAdapter

    adapter = TypeAdapter(S.LayerSpec)
    specs = [adapter.validate_python(S.expand_shorthand(x)) if not isinstance(x, S._Layer) else x for x in layers]
    options = options or {}
    c = in_shape[0]
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    modules["input"] = Normalize(mean if mean is not None else [0.0] * c, std if std is not None else [1.0] * c)
    counters: dict[str, int] = {}
    probe = torch.zeros(2, *in_shape)
    shape: tuple[int, ...] = tuple(in_shape)
    for i, layer in enumerate(specs):
        prefix = PREFIX[layer.type]
        counters[prefix] = counters.get(prefix, 0) + 1
        name = layer.name or (
            prefix if prefix == "flatten" and counters[prefix] == 1 else f"{prefix}{counters[prefix]}"
        )
        if name in modules or "." in name or not name.isidentifier():
            raise ConfigError(f"model.layers.{i}: name {name!r} is taken or not a valid identifier")
        module = _make(layer, shape, num_classes, options)
        modules[name] = module
        with torch.no_grad():
            module.eval()
            try:
                probe = module(probe)
            except RuntimeError as exc:
                raise ConfigError(
                    f"model.layers.{i} ({layer.type}) cannot take input of shape {list(shape)}: {exc}"
                ) from None
            module.train()
        shape = tuple(probe.shape[1:])
        if any(d <= 0 for d in shape):
            raise ConfigError(f"model.layers.{i} ({layer.type}) shrinks the feature map to {list(shape)}")
    if shape != (num_classes,):
        raise ConfigError(
            f"the model outputs shape {list(shape)} per image, but the data has {num_classes} classes; "
            "end with a linear layer with out: classes"
        )
    dumped = [s.model_dump(exclude_none=True) for s in specs]
    return ConvlensNet(modules, dumped, in_shape)


def build_model(
    cfg: Any,
    in_shape: tuple[int, int, int],
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """Build the model a :class:`~convlens.config.ModelConfig` describes: a preset (a layer list,
    or a module class such as the residual ones), a layer list, or a factory of the caller's."""
    from .registry import PRESETS, preset_layers

    if getattr(cfg, "factory", None) is not None:
        from .factory import build_factory

        return build_factory(cfg.factory, cfg.kwargs, in_shape)
    if cfg.preset is not None:
        options = {**PRESETS[cfg.preset].defaults(), **cfg.options}
        layers = preset_layers(cfg.preset, dict(cfg.options))
        if callable(layers):  # a module class: it builds itself for this input
            return layers(tuple(in_shape), num_classes, mean, std)
    else:
        options, layers = dict(cfg.options), list(cfg.layers)
    return build(layers, in_shape, num_classes, mean, std, options)
