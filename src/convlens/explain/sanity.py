"""Do the explanations explain? The measures, each with its parameters stated.

- :func:`spearman` and :func:`ssim`: how alike two maps are (the cascading model-parameter
  randomisation test of Adebayo et al. 2018 compares a method's maps on the trained model with its
  maps as the layers are re-initialised from the top; a map that barely changes does not explain
  the weights).
- :func:`perturbation_curves`: the target class's probability as the pixels are replaced by a
  baseline in the order of a map (deletion: most relevant first, MoRF, and least relevant first,
  LeRF) or put back, most relevant first, into a start image (insertion; into a copy blurred by
  :func:`blur`, since into the deletion baseline it would retrace the LeRF curve backwards, with
  the same area); :func:`area` is the mean of a curve over the fraction of pixels, 0 to 1 (the
  trapezoid rule).
- :func:`method_maps`: one (N, H, W) relevance map per image for every attribution method, larger
  meaning more evidence for the class: the absolute value summed over colour channels for the
  input-gradient methods, Grad-CAM's map stretched over the image, occlusion's drop in probability,
  the concepts' activation x gradient summed over channels.

Plain torch, no data set: the tests compare these with Quantus' where it installs.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------
# similarity of two maps


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean of their positions) along the last dimension."""
    out = torch.empty_like(v, dtype=torch.float64)
    for i, row in enumerate(v.reshape(-1, v.shape[-1])):
        values, inverse, counts = torch.unique(row, return_inverse=True, return_counts=True)
        ends = torch.cumsum(counts, 0).double()
        mean_rank = ends - (counts.double() - 1) / 2  # 1-based average rank of each distinct value
        out.view(-1, v.shape[-1])[i] = mean_rank[inverse]
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps (N, ...) -> (N,); 0 where a map is constant."""
    ra, rb = _ranks(a.flatten(1)), _ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    den = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return torch.where(den > 0, (ra * rb).sum(1) / den.clamp(min=1e-300), torch.zeros_like(den)).float()


def unit(m: torch.Tensor) -> torch.Tensor:
    """Each map (N, H, W) scaled to [0, 1] by its own minimum and maximum (a constant map: 0)."""
    flat = m.flatten(1).double()
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp(min=1e-300)).view_as(m)


def ssim(a: torch.Tensor, b: torch.Tensor, win: int = 7, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004) of each pair of (N, H, W) maps, as
    scikit-image's ``structural_similarity`` computes it by default: a ``win`` x ``win`` uniform
    window, sample covariances, K1 = 0.01, K2 = 0.03, the mean over the positions where the whole
    window fits."""
    x, y = a.double()[:, None], b.double()[:, None]
    win = min(win, x.shape[-1], x.shape[-2])
    win -= 1 - win % 2  # odd

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, win, stride=1)

    n = win * win
    cov = n / (n - 1)
    ux, uy = mean(x), mean(y)
    vx, vy = cov * (mean(x * x) - ux * ux), cov * (mean(y * y) - uy * uy)
    vxy = cov * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


# ----------------------------------------------------------------------------------------------
# deletion and insertion


def orders(relevance: torch.Tensor, how: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pixel indices (N, H*W) in the order they are perturbed: ``morf`` most relevant first,
    ``lerf`` least relevant first (ties in pixel order), ``random``."""
    flat = relevance.flatten(1)
    if how == "random":
        return torch.stack([torch.randperm(flat.shape[1], generator=generator) for _ in flat]).to(flat.device)
    return torch.argsort(flat, dim=1, descending=how == "morf", stable=True)


@torch.no_grad()
def perturbation_curves(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    order: torch.Tensor,
    baseline: torch.Tensor,
    steps: int,
    insertion: bool = False,
    chunk: int = 256,
) -> torch.Tensor:
    """p(target) (N, steps + 1) after replacing the first ``round(s / steps * H * W)`` pixels of
    ``order`` (all channels) by ``baseline`` (N or 1, C, H, W), s = 0..steps; ``insertion``
    starts from the baseline and puts the image's pixels back in that order instead."""
    n, c, h, w = x.shape
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(n, -1))
    counts = torch.round(torch.linspace(0, h * w, steps + 1, device=x.device)).long()
    masks = (rank[:, None, :] < counts[None, :, None]).view(n, steps + 1, 1, h, w)
    base = baseline.expand(n, c, h, w)[:, None]
    frames = torch.where(masks, x[:, None], base) if insertion else torch.where(masks, base, x[:, None])
    frames = frames.reshape(-1, c, h, w)
    t = target.repeat_interleave(steps + 1)
    probs = torch.cat([torch.softmax(model(frames[i : i + chunk]).float(), 1) for i in range(0, len(frames), chunk)])
    return probs[torch.arange(len(t)), t].view(n, steps + 1)


def blur(x: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """A blurred copy of images (N, C, H, W), what insertion starts from (Petsiuk et al. 2018): a
    k x k box filter applied twice, reflected at the borders; k is an eighth of the side, odd, at
    least 3 (5 for 32x32 images)."""
    k = k or max(3, (min(x.shape[-2:]) // 8) | 1)
    for _ in range(2):
        x = F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="reflect"), k, stride=1)
    return x


def area(curve: torch.Tensor) -> torch.Tensor:
    """The mean of each curve (N, S + 1) over [0, 1] by the trapezoid rule."""
    s = curve.shape[1] - 1
    return ((curve.sum(1) - (curve[:, 0] + curve[:, -1]) / 2) / s).float()


# ----------------------------------------------------------------------------------------------
# every method's map


def _input_methods() -> dict[str, Callable[[nn.Module], object]]:
    from .deconv import Deconvnet
    from .guided import GuidedBackprop
    from .saliency import Saliency

    return {"saliency": Saliency, "guided": GuidedBackprop, "deconv": Deconvnet}


METHODS = ("saliency", "guided", "deconv", "gradcam", "occlusion", "concepts")


def method_maps(name: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor, window: int = 8) -> torch.Tensor:
    """The (N, H, W) relevance map of method ``name`` for class ``target`` (see the module's notes)."""
    size = tuple(x.shape[2:])
    if name in ("saliency", "guided", "deconv"):
        return _input_methods()[name](model).attribute(x, target).abs().sum(1).float()
    if name == "gradcam":
        from .gradcam import GradCAM

        return GradCAM(model).attribute(x, target).float()
    if name == "concepts":
        from .concepts import Concepts, concept_map

        expl = Concepts(model)
        expl.attribute(x, target)
        return concept_map(expl.details["maps"].sum(1), size).float()
    if name == "occlusion":
        from .occlusion import Occlusion

        occ = Occlusion(model, window=min(window, *size), stride=max(1, window // 2))
        p = occ.attribute(x, target)
        drop = occ.details["base"].gather(1, target[:, None])[:, :, None] - p
        return F.interpolate(drop[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].float()
    raise ValueError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")


# ----------------------------------------------------------------------------------------------
# cascading randomisation


def weighted_layers(model: nn.Module) -> list[str]:
    """The conv and linear layers, from the output back to the input (execution order reversed,
    where it is known; else declaration order reversed)."""
    from ..models.graph import execution_order

    modules = dict(model.named_modules())
    names = execution_order(model, None) or list(modules)
    return [n for n in reversed(names) if isinstance(modules.get(n), (nn.Conv2d, nn.Linear))]


def cascade(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """A copy of ``model`` with its weighted layers re-initialised one more at a time from the top
    (``reset_parameters()``, the layer's own default initialisation, seeded without touching the
    global random state): yields ``(layer just re-initialised, the copy)``; the caller's model is
    never touched."""
    from ..models.graph import known_shape, remember_shape

    layers = weighted_layers(model)
    copied = copy.deepcopy(model)
    copied.eval()
    shape = known_shape(model)
    if shape is not None:
        remember_shape(copied, shape)
    modules = dict(copied.named_modules())
    for i, name in enumerate(layers):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + i)
            modules[name].reset_parameters()
        yield name, copied
