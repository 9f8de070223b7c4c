"""Linear CKA (centred kernel alignment; Kornblith et al., 2019) between two networks' layers on
the same images: 1 for representations equal up to a rotation and a scale, near 0 for unrelated
ones. Computed from the images' Gram matrices, so the two layers may have any widths."""

from __future__ import annotations

from typing import Any

import torch

# leaf modules whose output is worth comparing; dropout, flatten and identity repeat their input
_SKIP = (torch.nn.Dropout, torch.nn.Dropout2d, torch.nn.Flatten, torch.nn.Identity)


def _centred_gram(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(len(x), -1).double()
    x = x - x.mean(0, keepdim=True)
    return x @ x.T


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` for ``x`` (n, ...) and ``y`` (n, ...),
    the same n images in the same order; NaN when either representation is constant."""
    if len(x) != len(y):
        raise ValueError(f"linear CKA needs the same images on both sides: {len(x)} != {len(y)}")
    k, m = _centred_gram(x), _centred_gram(y)
    hsic = (k * m).sum()
    norm = torch.sqrt((k * k).sum() * (m * m).sum())
    return float(hsic / norm) if float(norm) > 0 else float("nan")


def comparable_layers(a: torch.nn.Module, b: torch.nn.Module) -> tuple[list[str], dict[str, str]]:
    """Layers of ``a`` that ``b`` has under the same name and of the same kind, in ``a``'s order;
    and for the rest of ``a``'s leaf layers, why they are left out."""
    mods_b = dict(b.named_modules())
    both, skipped = [], {}
    for name, m in a.named_modules():
        if not name or any(True for _ in m.children()) or isinstance(m, _SKIP):
            continue
        other = mods_b.get(name)
        if other is None:
            skipped[name] = "no layer of this name in the other network"
        elif type(other) is not type(m):
            skipped[name] = f"{type(m).__name__} here, {type(other).__name__} there"
        else:
            both.append(name)
    return both, skipped


def layer_cka(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor, batch_size: int = 250) -> dict[str, Any]:
    """Per shared layer name: linear CKA of ``a`` and ``b`` on the images ``x`` (already what the
    models take), with both output shapes; layers it cannot compare are listed with the reason."""
    from ..trace import TraceDict, borrowed

    layers, skipped = comparable_layers(a, b)
    feats: dict[str, list[list[torch.Tensor]]] = {n: [[], []] for n in layers}
    for side, model in enumerate((a, b)):
        with borrowed(model, grad=False):
            for i in range(0, len(x), batch_size):
                with TraceDict(model, layers) as tr:
                    model(x[i : i + batch_size])
                for n in layers:
                    out = tr[n].output
                    if isinstance(out, torch.Tensor):
                        feats[n][side].append(out.float().cpu())
    rows = []
    for n in layers:
        fa, fb = feats[n]
        if not fa or not fb or len(fa) != len(fb):
            skipped[n] = "its output is not a single tensor"
            continue
        xa, xb = torch.cat(fa), torch.cat(fb)
        rows.append(
            {"layer": n, "cka": linear_cka(xa, xb), "shape_a": list(xa.shape[1:]), "shape_b": list(xb.shape[1:])}
        )
    return {"images": len(x), "layers": rows, "skipped": skipped}
