"""The options of every analysis, one dataclass each: the fields are the options (``--name`` on the
command line), with their defaults and help. Torch-free, so that ``convlens analyze --help`` is
fast; the implementation (named in :func:`~convlens.jobs.job`) subclasses its options class."""

from __future__ import annotations

from ..jobs import SCALE_ALIASES, SCALES, comma_ints, comma_list, filter_spec, job, option

AT_HELP = (
    "where a conv filter is read: its conv output, after the batch norm that follows (bn: the "
    "pre-activation; the conv output if there is none) or after the activation (act: what the next layer sees)"
)


@job("analysis", "filters", "convlens.analyses.filters:Filters")
class FiltersOptions:
    """Conv weights as images (RGB composite and per channel for the first layer), with norms."""

    layers: list[str] | None = option(
        None, "conv layers to draw (default: every conv layer)", parse=comma_list, metavar="A,B"
    )
    scale: str = option(
        "shared",
        "weights on one colour scale per layer (shared) or one per filter (each)",
        choices=SCALES,
        aliases=SCALE_ALIASES,
    )
    per_filter: bool = option(True, "also draw one figure per filter (analysis/filters/<layer>/f<i>.png)")
    max_channels: int = option(32, "input channels drawn per filter for deep layers")
    max_filters: int = option(64, "filters (rows) in a layer's overview figure")


@job("analysis", "featuremaps", "convlens.analyses.featuremaps:FeatureMaps")
class FeatureMapsOptions:
    """Feature maps of chosen images at chosen layers, before and after the activation."""

    layers: list[str] | None = option(
        None, "layers to show (default: the first conv layer)", parse=comma_list, metavar="A,B"
    )
    images: list[int] | None = option(None, "positions of images in the split", parse=comma_ints, metavar="I,J")
    classes: list[str] | None = option(
        None,
        "class names: the first image of each (default when no image is chosen: the first image of three classes)",
        parse=comma_list,
        metavar="C,D",
    )
    file: str | None = option(None, "an image file to show (resized to the model's input)", metavar="PATH")
    max_maps: int = option(32, "feature maps (channels) drawn per figure")


@job("analysis", "stats", "convlens.analyses.stats:Stats")
class StatsOptions:
    """Per-filter mean, std, max and active fraction over a split; dead filters flagged."""

    layers: list[str] | None = option(
        None, "layers to summarise (default: every conv layer)", parse=comma_list, metavar="A,B"
    )
    active_threshold: float = option(0.0, "a position is active when the activation exceeds this")
    weight_threshold: float = option(
        1e-3,
        "a filter is dead by its weights when its weight norm is below this "
        "fraction of the median filter norm of its layer",
    )


@job("analysis", "classnorms", "convlens.analyses.classnorms:ClassNorms")
class ClassNormsOptions:
    """Per-class average feature-map norm of each filter, variance across classes, expert ranking."""

    layers: list[str] | None = option(
        None, "layers to measure (default: the first and the last conv layer)", parse=comma_list, metavar="A,B"
    )
    norm: str = option("l2", "norm of a feature map", choices=("l1", "l2"))
    at: str = option("act", AT_HELP, choices=("conv", "bn", "act"))
    bars: list[str] | None = option(
        None,
        "layers that get a bar plot per filter (default: the first and the last of the measured layers)",
        parse=comma_list,
        metavar="A,B",
    )
    experts: int = option(10, "most class-selective filters listed in the ranking")
    min_response: float = option(
        0.01,
        "filters whose mean norm is below this fraction of their layer's average are "
        "left out of the ranking: a nearly silent filter's selectivity is noise",
    )


@job("analysis", "topk", "convlens.analyses.topk:TopK")
class TopKOptions:
    """The k most exciting images per filter, with the receptive-field patch of the maximum."""

    layers: list[str] | None = option(
        None, "layers to dissect (default: every conv layer)", parse=comma_list, metavar="A,B"
    )
    k: int = option(20, "images kept per filter")
    score: str = option(
        "max",
        "rank images by the max, the mean or the sum of the filter's feature map (the CS7015 report's pixel-wise sum), "
        "or by the filter's contribution to --target's score (activation x gradient summed over positions)",
        choices=("max", "mean", "sum", "contribution"),
    )
    at: str = option("bn", AT_HELP, choices=("conv", "bn", "act"))
    target: str | None = option(
        None, "class (name or index) whose score --score contribution ranks by", metavar="CLASS"
    )


@job("analysis", "ablate", "convlens.analyses.ablate:Ablate")
class AblateOptions:
    """Silence filters: per-class accuracy and confusion before/after; rank filters one by one."""

    filters: dict[str, list[int]] | None = option(
        None,
        "filters to silence together, e.g. 'conv1:0,1 conv3:5-7' "
        "(default: the --top filters that carry most accuracy in the first "
        "ranked layer)",
        parse=filter_spec,
        metavar="SPEC",
    )
    layers: list[str] | None = option(
        None,
        "layers whose filters are ranked one by one (default: the last conv layer)",
        parse=comma_list,
        metavar="A,B",
    )
    rank: bool = option(True, "rank each filter of the layers by the accuracy it carries")
    top: int = option(3, "filters silenced together when --filters is not given")
    changed: int = option(40, "changed images shown in the figure")
    mode: str = option(
        "channel",
        "channel: zero the conv filter and the batch norm channel after it (the channel "
        "outputs 0); weights: zero the conv weights only, as the CS7015 report did",
        choices=("channel", "weights"),
    )


@job("analysis", "atlas", "convlens.analyses.atlas:Atlas")
class AtlasOptions:
    """Class atlas: per class, the filters with the largest mean contribution over its correct images."""

    layers: list[str] | None = option(
        None, "layer to rank (default: the last conv block's output, as Grad-CAM)", parse=comma_list, metavar="A"
    )
    top: int = option(5, "filters listed and drawn per class")
    patches: int = option(3, "top-k dataset patches drawn per filter")


@job("analysis", "faithfulness", "convlens.analyses.faithfulness:Faithfulness")
class FaithfulnessOptions:
    """Do the maps explain? Weight randomisation (cascading) and deletion/insertion curves per method."""

    methods: list[str] | None = option(
        None,
        "attribution methods (default: saliency, guided, deconv, gradcam, occlusion, concepts)",
        parse=comma_list,
        metavar="A,B",
    )
    count: int = option(8, "images explained, the classes in turn")
    steps: int = option(20, "deletion / insertion steps, equal fractions of the pixels")
    baseline: str = option(
        "mean",
        "what deleted pixels become: the split's mean colour, gray (0.5) or zero",
        choices=("mean", "gray", "zero"),
    )
    similar: float = option(
        0.5,
        "a method changes with the weights when the rank correlation of its maps with the trained model's, "
        "averaged over the cascade of re-initialised layers, is below this",
    )
    seed: int = option(0, "seed of the re-initialisation and of the random deletion order")


@job("analysis", "errors", "convlens.analyses.errors:Errors")
class ErrorsOptions:
    """Example classifications and the most confident mistakes, with true and predicted labels."""

    examples: int = option(20, "example images, taking the classes in turn")
    mistakes: int = option(20, "most confident mistakes shown")
