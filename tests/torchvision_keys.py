"""torchvision's ``state_dict`` key lists and shapes, written out from its model definitions
(torchvision/models/resnet.py and vgg.py), without importing torchvision.

Independent of convlens' own models on purpose: the tests compare the two, and check these lists
against the parameter counts torchvision publishes for its ImageNet weights (``num_params`` in
its weight tables), so a slip here shows as a wrong count.
"""

from __future__ import annotations

# torchvision's published parameter counts at 1000 classes
PUBLISHED_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "vgg11": 132_863_336,
    "vgg16": 138_357_544,
    "vgg11_bn": 132_868_840,
    "vgg16_bn": 138_365_992,
}

Shapes = list[tuple[str, tuple[int, ...]]]


def _bn(prefix: str, c: int) -> Shapes:
    return [
        (f"{prefix}.weight", (c,)),
        (f"{prefix}.bias", (c,)),
        (f"{prefix}.running_mean", (c,)),
        (f"{prefix}.running_var", (c,)),
        (f"{prefix}.num_batches_tracked", ()),
    ]


def resnet_keys(depth: int, num_classes: int = 1000, in_channels: int = 3) -> Shapes:
    """In torchvision's order: conv1, bn1, layer1..4 (per block conv1, bn1, conv2, bn2[, conv3,
    bn3], downsample.0, downsample.1), fc."""
    bottleneck = depth == 50
    counts = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}[depth]
    out: Shapes = [("conv1.weight", (64, in_channels, 7, 7))] + _bn("bn1", 64)
    c_in = 64
    for stage, n in enumerate(counts, start=1):
        planes = 64 * 2 ** (stage - 1)
        for i in range(n):
            p = f"layer{stage}.{i}"
            stride = 2 if stage > 1 and i == 0 else 1
            if bottleneck:
                c_out = planes * 4
                out += [(f"{p}.conv1.weight", (planes, c_in, 1, 1))] + _bn(f"{p}.bn1", planes)
                out += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + _bn(f"{p}.bn2", planes)
                out += [(f"{p}.conv3.weight", (c_out, planes, 1, 1))] + _bn(f"{p}.bn3", c_out)
            else:
                c_out = planes
                out += [(f"{p}.conv1.weight", (planes, c_in, 3, 3))] + _bn(f"{p}.bn1", planes)
                out += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + _bn(f"{p}.bn2", planes)
            if stride != 1 or c_in != c_out:
                out += [(f"{p}.downsample.0.weight", (c_out, c_in, 1, 1))] + _bn(f"{p}.downsample.1", c_out)
            c_in = c_out
    return out + [("fc.weight", (num_classes, c_in)), ("fc.bias", (num_classes,))]


_VGG = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def vgg_keys(depth: int, batch_norm: bool = False, num_classes: int = 1000, in_channels: int = 3) -> Shapes:
    """``features.<i>`` numbered over every module of the Sequential (conv, [bn], relu, pool),
    then ``classifier.0/3/6`` (linear, relu, dropout, linear, relu, dropout, linear)."""
    out: Shapes = []
    i, c_in = 0, in_channels
    for v in _VGG[depth]:
        if v == "M":
            i += 1
            continue
        out += [(f"features.{i}.weight", (v, c_in, 3, 3)), (f"features.{i}.bias", (v,))]
        if batch_norm:
            out += _bn(f"features.{i + 1}", v)
        i += 3 if batch_norm else 2
        c_in = v
    for j, (n_in, n_out) in zip((0, 3, 6), ((512 * 7 * 7, 4096), (4096, 4096), (4096, num_classes))):
        out += [(f"classifier.{j}.weight", (n_out, n_in)), (f"classifier.{j}.bias", (n_out,))]
    return out


def keys(name: str, num_classes: int = 1000) -> Shapes:
    if name.startswith("resnet"):
        return resnet_keys(int(name[6:]), num_classes)
    depth, _, bn = name[3:].partition("_")
    return vgg_keys(int(depth), bool(bn), num_classes)


def param_count(shapes: Shapes) -> int:
    total = 0
    for key, shape in shapes:
        if key.rsplit(".", 1)[1] in ("weight", "bias"):
            n = 1
            for d in shape:
                n *= d
            total += n
    return total
