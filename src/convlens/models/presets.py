"""The built-in presets: the networks of the course reports, a tiny demo net, recurrent readers.

Each preset is a function of its knobs returning a layer list; ``stage`` convs take
``round(width * multiplier ** stage)`` channels, which is how the CS7015 report's ``l1_oc`` and
``filter_multiplier`` set a network's width. Parameter counts quoted below are checked in tests.
"""

from __future__ import annotations

from typing import Any

from .registry import register_preset

L = list[dict[str, Any]]


def _conv(stage: int, kernel: int = 3, padding: int = 0, stride: int = 1) -> dict[str, Any]:
    return {"type": "conv", "stage": stage, "kernel": kernel, "padding": padding, "stride": stride}


def _check(**ranges: tuple[Any, Any, Any]) -> None:
    """``name=(value, low, high)``: raise ValueError naming the option when out of range."""
    for name, (value, low, high) in ranges.items():
        if not (low <= value <= high):
            raise ValueError(f"model.options.{name}={value!r} is out of range; allowed: {low} to {high}")


def _head(hidden: list[int], dropout: float) -> L:
    """flatten, then [dropout] fc + relu per hidden size, then [dropout] the class layer."""
    out: L = [{"type": "flatten"}]
    for h in hidden:
        if dropout:
            out.append({"type": "dropout", "p": dropout})
        out += [{"type": "linear", "out": h}, {"type": "relu"}]
    if dropout:
        out.append({"type": "dropout", "p": dropout})
    return out + [{"type": "linear", "out": "classes"}]


@register_preset("tiny", "Three small conv blocks; trains on 8x8 digits in seconds (the demo)", (1, 8, 8))
def tiny(width: int = 16, multiplier: float = 2.0) -> L:
    _check(width=(width, 1, 4096), multiplier=(multiplier, 0.1, 16))
    return [
        _conv(0, padding=1),
        {"type": "bn"},
        {"type": "relu"},
        _conv(1, padding=1),
        {"type": "bn"},
        {"type": "relu"},
        {"type": "maxpool"},
        _conv(2, padding=1),
        {"type": "bn"},
        {"type": "relu"},
        {"type": "globalpool", "mode": "max"},
        {"type": "linear", "out": "classes"},
    ]


@register_preset(
    "lenet5",
    "LeNet-5 as in the Rice report: conv5x5 32, pool, conv5x5 64, pool, fc 1024 (28x28 grayscale)",
    (1, 28, 28),
    "003 (Rice)",
)
def lenet5(width: int = 32, multiplier: float = 2.0, kernel: int = 5, hidden: int = 1024, dropout: float = 0.0) -> L:
    _check(
        width=(width, 1, 4096),
        multiplier=(multiplier, 0.1, 16),
        kernel=(kernel, 1, 15),
        hidden=(hidden, 1, 1 << 16),
        dropout=(dropout, 0, 0.99),
    )
    return [
        {"type": "conv", "stage": 0, "kernel": kernel, "padding": "same"},
        {"type": "relu"},
        {"type": "maxpool"},
        {"type": "conv", "stage": 1, "kernel": kernel, "padding": "same"},
        {"type": "relu"},
        {"type": "maxpool"},
    ] + _head([hidden], dropout)


@register_preset(
    "net1",
    "CS7015 Net 1 (the PyTorch CIFAR tutorial net): conv, pool, conv, pool, fc 120-84-10",
    (3, 32, 32),
    "001 (CS7015)",
)
def net1(width: int = 6, multiplier: float = 2.0, kernel: int = 5, stride: int = 1) -> L:
    # width 18, multiplier 2, kernel 3, stride 1: 173,026 parameters, as in the report
    _check(width=(width, 1, 4096), multiplier=(multiplier, 0.1, 16), kernel=(kernel, 1, 15), stride=(stride, 1, 8))
    return [
        _conv(0, kernel, 0, stride),
        {"type": "relu"},
        {"type": "maxpool"},
        _conv(1, kernel, 0, stride),
        {"type": "relu"},
        {"type": "maxpool"},
    ] + _head([120, 84], 0.0)


@register_preset(
    "net2",
    "CS7015 Net 2: Net 1 with two extra padded convs (conv-pad, conv, pool) x 2, fc 120-84-10",
    (3, 32, 32),
    "001 (CS7015)",
)
def net2(width: int = 18, multiplier: float = 2.0, kernel: int = 3, padding: int = 1) -> L:
    # width 64, multiplier 2, kernel 5: 4,870,654 parameters, as in the report. Kernel 7 (the
    # report's third kernel) would shrink the second block to 1x1 before its pool, so an unpadded
    # conv takes the least padding that leaves the pool a full window: widths 18, 32, 64 then have
    # 698,122, 2,154,430 and 8,512,510 parameters, which with the kernel 3 and 5 counts give the
    # report's per-width and per-kernel mean parameter counts exactly.
    _check(width=(width, 1, 4096), multiplier=(multiplier, 0.1, 16), kernel=(kernel, 1, 15), padding=(padding, 0, 7))
    layers: L = []
    size = 32  # the CIFAR-10 input the network was designed for
    for stage in (0, 2):
        size = size + 2 * padding - kernel + 1
        fit = _padding_to_fit(size, kernel)
        size = (size + 2 * fit - kernel + 1) // 2
        layers += [
            _conv(stage, kernel, padding),
            {"type": "relu"},
            _conv(stage + 1, kernel, fit),
            {"type": "relu"},
            {"type": "maxpool"},
        ]
    return layers + _head([120, 84], 0.0)


def _padding_to_fit(size: int, kernel: int, pool: int = 2) -> int:
    """The least padding of a stride-1 conv on a ``size`` map that leaves at least ``pool`` rows."""
    return max(0, -(-(pool - (size - kernel + 1)) // 2))


def _conv_bn(stage: int, kernel: int, padding: int) -> L:
    return [_conv(stage, kernel, padding), {"type": "bn"}, {"type": "relu"}]


@register_preset(
    "net3",
    "CS7015 Net 3: Net 2 with batch norm after every conv and dropout before each fc layer",
    (3, 32, 32),
    "001 (CS7015)",
)
def net3(width: int = 32, multiplier: float = 2.0, kernel: int = 3, dropout: float = 0.1) -> L:
    # width 96, dropout 0.1: 6,819,454 parameters, 87.5% in the report
    _check(width=(width, 1, 4096), multiplier=(multiplier, 0.1, 16), kernel=(kernel, 1, 15), dropout=(dropout, 0, 0.99))
    return (
        _conv_bn(0, kernel, 1)
        + _conv_bn(1, kernel, 0)
        + [{"type": "maxpool"}]
        + _conv_bn(2, kernel, 1)
        + _conv_bn(3, kernel, 0)
        + [{"type": "maxpool"}]
        + _head([120, 84], dropout)
    )


@register_preset(
    "net4",
    "CS7015 Net 4: deeper and thinner, six BN convs (64-64-128, pool, 256-256-512, pool), fc 120-84-10",
    (3, 32, 32),
    "001 (CS7015)",
)
def net4(width: int = 64, multiplier: float = 2.0, dropout: float = 0.3) -> L:
    # width 64, dropout 0.3: 4,403,518 parameters and 1,280 conv filters, 88.7% in the report
    _check(width=(width, 1, 4096), multiplier=(multiplier, 0.1, 16), dropout=(dropout, 0, 0.99))
    return (
        _conv_bn(0, 3, 1)
        + _conv_bn(0, 3, 1)
        + _conv_bn(1, 3, 0)
        + [{"type": "maxpool"}]
        + _conv_bn(2, 3, 1)
        + _conv_bn(2, 3, 1)
        + _conv_bn(3, 3, 0)
        + [{"type": "maxpool"}]
        + _head([120, 84], dropout)
    )


@register_preset(
    "csci611",
    "CSCI-611 net: three 3x3 BN convs 32-64-128, one max-pool, dropout, fc 256, dropout, fc",
    (3, 32, 32),
    "002 (CSCI-611)",
)
def csci611(width: int = 32, multiplier: float = 2.0, hidden: int = 256, dropout: float = 0.25) -> L:
    _check(
        width=(width, 1, 4096),
        multiplier=(multiplier, 0.1, 16),
        hidden=(hidden, 1, 1 << 16),
        dropout=(dropout, 0, 0.99),
    )
    return (
        _conv_bn(0, 3, 1)
        + _conv_bn(1, 3, 1)
        + _conv_bn(2, 3, 1)
        + [
            {"type": "maxpool"},
            {"type": "dropout", "p": dropout},
            {"type": "flatten"},
            {"type": "linear", "out": hidden},
            {"type": "relu"},
            {"type": "dropout", "p": dropout},
            {"type": "linear", "out": "classes"},
        ]
    )


@register_preset(
    "cse849",
    "CSE849 net: 7x7 first conv with 16 filters, four 3x3 BN convs, dropout after the last k convs",
    (3, 32, 32),
    "000/004 (CSE849)",
)
def cse849(width: int = 16, multiplier: float = 2.0, conv_dropout: float = 0.0, dropout_last: int = 0) -> L:
    _check(
        width=(width, 1, 4096),
        multiplier=(multiplier, 0.1, 16),
        conv_dropout=(conv_dropout, 0, 0.99),
        dropout_last=(dropout_last, 0, 5),
    )
    blocks = [
        [
            {"type": "conv", "stage": 0, "kernel": 7, "padding": 3},
            {"type": "bn"},
            {"type": "relu"},
            {"type": "maxpool"},
        ],
        _conv_bn(1, 3, 1),
        _conv_bn(2, 3, 1) + [{"type": "maxpool"}],
        _conv_bn(2, 3, 1),
        _conv_bn(2, 3, 1) + [{"type": "maxpool"}],
    ]
    out: L = []
    for i, block in enumerate(blocks):
        out += block
        if conv_dropout and i >= len(blocks) - dropout_last:
            out.append({"type": "dropout2d", "p": conv_dropout})
    return out + [{"type": "flatten"}, {"type": "linear", "out": "classes"}]


def _recurrent(cell: str):
    def preset(hidden: int = 128, num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0) -> L:
        _check(hidden=(hidden, 1, 1 << 14), num_layers=(num_layers, 1, 16), dropout=(dropout, 0, 0.99))
        return [
            {
                "type": cell,
                "hidden": hidden,
                "num_layers": num_layers,
                "bidirectional": bidirectional,
                "dropout": dropout,
            },
            {"type": "linear", "out": "classes"},
        ]

    preset.__name__ = cell
    return preset


for _cell, _label in (("rnn", "vanilla RNN"), ("lstm", "LSTM"), ("gru", "GRU")):
    register_preset(
        _cell,
        f"{_label} reading the image row by row (28 steps of 28 values on MNIST), hidden 128",
        (1, 28, 28),
        "003 (Rice)",
    )(_recurrent(_cell))


# ----------------------------------------------------------------------------------------------
# the speed-record network (airbench / hlb-CIFAR10 family), every trick a switch


def _fast(
    width: int,
    multiplier: float,
    whiten: bool,
    freeze_whiten: bool,
    whiten_kernel: int,
    identity: bool,
    act: str,
    logit_scale: float,
    bn_momentum: float,
    bn_eps: float,
    bn_learn_scale: bool,
    channels: int,
) -> L:
    _check(
        width=(width, 1, 4096),
        multiplier=(multiplier, 0.1, 64),
        whiten_kernel=(whiten_kernel, 1, 7),
        channels=(channels, 1, 64),
        logit_scale=(logit_scale, 0, 100),
        bn_momentum=(bn_momentum, 1e-6, 1),
        bn_eps=(bn_eps, 1e-30, 1),
    )
    if act not in ("gelu", "relu"):
        raise ValueError(f"model.options.act={act!r} is not allowed; allowed: gelu, relu")
    bn = {"type": "bn", "momentum": bn_momentum, "eps": bn_eps, "learn_scale": bn_learn_scale}
    init = "identity" if identity else "default"
    wide = max(1, int(round(width * multiplier)))
    # the first conv sees k x k patches of the input channels: 2 * C * k * k filters whiten them (24 at k=2, C=3)
    first = 2 * channels * whiten_kernel**2
    layers: L = [
        {
            "type": "conv",
            "out": first,
            "kernel": whiten_kernel,
            "padding": 0,
            "init": "whiten" if whiten else "default",
            "freeze": whiten and freeze_whiten,
        },
        {"type": act},
    ]
    for out in (width, wide, wide):
        # conv-pool-BN-act, then conv-BN-act: pooling before the norm quarters its cost
        layers += [
            {"type": "conv", "out": out, "kernel": 3, "padding": 1, "bias": False, "init": init},
            {"type": "maxpool", "kernel": 2},
            dict(bn),
            {"type": act},
            {"type": "conv", "out": out, "kernel": 3, "padding": 1, "bias": False, "init": init},
            dict(bn),
            {"type": act},
        ]
    layers += [{"type": "globalpool", "mode": "max"}, {"type": "linear", "out": "classes", "bias": False}]
    if logit_scale and logit_scale != 1:
        # small logits at the start keep the early steps from saturating the softmax
        layers.append({"type": "scale", "factor": logit_scale})
    return layers


_FAST_DOC = (
    "The speed-record network (airbench94) at {}: data-whitened 2x2 conv, conv-pool-BN-GELU blocks, logits x 1/9"
)


@register_preset(
    "fast_full", _FAST_DOC.format("full width 64-256-256, for GPUs"), (3, 32, 32), "airbench94", defaults={"width": 64}
)
@register_preset("fast", _FAST_DOC.format("CPU width 16-64-64"), (3, 32, 32), "airbench94 (CPU width)")
def fast(
    width: int = 16,
    multiplier: float = 4.0,
    whiten: bool = True,
    freeze_whiten: bool = True,
    whiten_kernel: int = 2,
    identity: bool = True,
    act: str = "gelu",
    logit_scale: float = 1 / 9,
    bn_momentum: float = 0.4,
    bn_eps: float = 1e-12,
    bn_learn_scale: bool = False,
    channels: int = 3,
) -> L:
    return _fast(
        width,
        multiplier,
        whiten,
        freeze_whiten,
        whiten_kernel,
        identity,
        act,
        logit_scale,
        bn_momentum,
        bn_eps,
        bn_learn_scale,
        channels,
    )


# ----------------------------------------------------------------------------------------------
# residual networks (He et al. 2016, CIFAR layout): nn.Module classes, not layer lists


def _resnet(depth: int, width: int):
    from .resnet import resnet_factory

    _check(width=(width, 1, 4096), depth=(depth, 8, 1202))
    if (depth - 2) % 6:
        raise ValueError(f"model.options.depth={depth!r} is not allowed; allowed: 6 n + 2 (8, 14, 20, 32, 44, 56, 110)")
    return resnet_factory(depth, width)


@register_preset(
    "resnet20",
    "ResNet-20 (He et al. 2016, CIFAR): 3 stages of 3 basic blocks, 16-32-64 channels, 1x1 projection shortcuts",
    (3, 32, 32),
    "He et al. 2016",
)
def resnet20(depth: int = 20, width: int = 16):
    # 272,474 parameters at width 16 (0.27M, as in the paper's Table 6)
    return _resnet(depth, width)


@register_preset("resnet8", "ResNet-8: the same layout with one basic block per stage", (3, 32, 32), "He et al. 2016")
def resnet8(depth: int = 8, width: int = 16):
    return _resnet(depth, width)


# ----------------------------------------------------------------------------------------------
# the ImageNet networks in torchvision's state_dict layout (models/imagenet.py): any input of
# 32 px or more, any number of classes; a torchvision checkpoint loads into them

_TORCHVISION = "torchvision layout: its checkpoints load"


def _imagenet(kind: str, depth: int, **options: Any):
    from .imagenet import VGG, ResNet, imagenet_factory

    return imagenet_factory(ResNet if kind == "resnet" else VGG, depth, **options)


@register_preset(
    "resnet18", f"ResNet-18 (He et al. 2016, ImageNet): 4 stages of 2 basic blocks; {_TORCHVISION}", (3, 224, 224)
)
def resnet18(zero_init_residual: bool = False):
    return _imagenet("resnet", 18, zero_init_residual=zero_init_residual)


@register_preset(
    "resnet34", f"ResNet-34 (He et al. 2016, ImageNet): 3-4-6-3 basic blocks; {_TORCHVISION}", (3, 224, 224)
)
def resnet34(zero_init_residual: bool = False):
    return _imagenet("resnet", 34, zero_init_residual=zero_init_residual)


@register_preset(
    "resnet50", f"ResNet-50 (He et al. 2016, ImageNet): 3-4-6-3 bottleneck blocks; {_TORCHVISION}", (3, 224, 224)
)
def resnet50(zero_init_residual: bool = False):
    return _imagenet("resnet", 50, zero_init_residual=zero_init_residual)


@register_preset(
    "vgg11", f"VGG-11 (Simonyan & Zisserman 2015, config A): 8 convs, 3 linear; {_TORCHVISION}", (3, 224, 224)
)
def vgg11(batch_norm: bool = False, dropout: float = 0.5):
    _check(dropout=(dropout, 0, 0.99))
    return _imagenet("vgg", 11, batch_norm=batch_norm, dropout=dropout)


@register_preset(
    "vgg16", f"VGG-16 (Simonyan & Zisserman 2015, config D): 13 convs, 3 linear; {_TORCHVISION}", (3, 224, 224)
)
def vgg16(batch_norm: bool = False, dropout: float = 0.5):
    _check(dropout=(dropout, 0, 0.99))
    return _imagenet("vgg", 16, batch_norm=batch_norm, dropout=dropout)
