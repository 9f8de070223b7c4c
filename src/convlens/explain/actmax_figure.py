"""The activation-maximisation sheet, set with Pillow at the size it is shown.

One block per filter (or class): a label above its tiles (what it is, the objective reached
against the best data set image's value, a word when it is dead or did not converge), then the
tiles in groups: the synthesised picture, the top data set patches (or images), their mean.
Pixels are enlarged by a whole factor (nearest neighbour) to at least :data:`MIN_TILE` screen
pixels, so a 3x3 receptive field stays visible, and framed in grey, so a white patch does not
vanish on a white page; text is :data:`FONT_PX` pixels.

Nothing is placed over anything else: every column is as wide as its widest word, every label
band as tall as its longest label, and :func:`sheet` returns the box of every text and tile it
drew (:class:`~convlens.plots.Box`) so a test can check with :func:`~convlens.plots.overlaps`
that no two intersect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..plots import Box, _font, _wrap, _write_png, to_display

FONT_PX = 13  # at least 11 px on screen when the PNG is shown at its own size
MIN_TILE = 48  # screen pixels of the smallest tile side
GAP = 3  # between tiles of a group
GROUP_GAP = 12  # between groups of a block
BLOCK_GAP = 24  # between blocks
MARGIN = 8
MAX_WIDTH = 1300  # blocks per row: as many as fit this width


@dataclass
class Block:
    """One filter's (or class's) row: ``label`` lines, and ``groups`` of (C, H, W) tiles in [0, 1]."""

    label: list[str]
    groups: list[list[np.ndarray]]
    color: str = "black"


@dataclass
class Sheet:
    path: Path
    boxes: list[Box] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)
    font_px: int = FONT_PX  # the size of all its text, in pixels


def _tile(img: np.ndarray, k: int) -> np.ndarray:
    a = to_display(img, "chw")
    a3 = a if a.ndim == 3 else np.repeat(a[..., None], 3, 2)
    return np.repeat(np.repeat((np.clip(a3, 0, 1) * 255 + 0.5).astype(np.uint8), k, 0), k, 1)


def _word_width(font, lines: Sequence[str]) -> int:
    return max([int(np.ceil(font.getlength(w))) for t in lines for w in t.split()] + [0])


def sheet(blocks: Sequence[Block], path: str | Path, *, title: str, headers: Sequence[str]) -> Sheet:
    """Draw ``blocks`` under ``title``, each group of tiles headed by ``headers`` (one per group)
    once per column of blocks; returns the PNG's path, its size and the box of everything drawn."""
    from PIL import Image, ImageDraw

    font = _font(FONT_PX)
    step = int(round(1.3 * FONT_PX))
    # each tile enlarged by the whole factor that brings it to MIN_TILE, in cells as large as the
    # largest of them (a 3x3 field at 16x beside a 5x5 one at 10x)
    sides = [max([max(t.shape[-2:]) for g in b.groups for t in g] + [1]) for b in blocks]
    tile_px = max([s * max(1, -(-MIN_TILE // s)) for s in sides] + [MIN_TILE])
    ngroups = max([len(b.groups) for b in blocks] + [len(headers)])
    counts = [max([len(b.groups[g]) for b in blocks if g < len(b.groups)] + [1]) for g in range(ngroups)]
    # a group is as wide as its tiles or its header's widest word, whichever is wider
    widths = [
        max(n * tile_px + (n - 1) * GAP, _word_width(font, [headers[g]] if g < len(headers) else []))
        for g, n in enumerate(counts)
    ]
    block_w = sum(widths) + GROUP_GAP * (ngroups - 1)
    block_w = max([block_w] + [_word_width(font, b.label) for b in blocks])
    per_row = max(1, min(len(blocks), (MAX_WIDTH - 2 * MARGIN + BLOCK_GAP) // (block_w + BLOCK_GAP)))
    rows = -(-len(blocks) // per_row)
    labels = [[ln for t in b.label for ln in _wrap(t, font, block_w)] for b in blocks]
    heads = [_wrap(h, font, w) for h, w in zip(headers, widths)]
    width = max(2 * MARGIN + per_row * block_w + (per_row - 1) * BLOCK_GAP, 360)
    title_lines = _wrap(title, font, width - 2 * MARGIN)
    head_h = max([len(h) for h in heads] + [0]) * step
    y = MARGIN + len(title_lines) * step + (6 if title_lines else 0)
    header_y, y = y, y + head_h + (4 if head_h else 0)
    row_y = []
    for r in range(rows):
        band = max(len(labels[i]) for i in range(r * per_row, min(len(blocks), (r + 1) * per_row))) * step
        row_y.append((y, y + band + 3))
        y += band + 3 + tile_px + BLOCK_GAP
    height = y - BLOCK_GAP + MARGIN
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    boxes: list[Box] = []

    def text(x: float, yy: float, t: str, color: str = "black") -> None:
        draw.text((x, yy), t, fill=color, font=font, anchor="la")
        boxes.append(Box("text", *(int(v) for v in draw.textbbox((x, yy), t, font=font, anchor="la")), t))

    for i, line in enumerate(title_lines):
        text(MARGIN, MARGIN + i * step, line)
    for c in range(per_row):
        x = MARGIN + c * (block_w + BLOCK_GAP)
        for g, lines in enumerate(heads):
            for i, line in enumerate(lines):
                text(x, header_y + i * step, line, "#444444")
            x += widths[g] + GROUP_GAP
    for n, b in enumerate(blocks):
        r, c = divmod(n, per_row)
        k = max(1, -(-MIN_TILE // sides[n]))
        x0 = MARGIN + c * (block_w + BLOCK_GAP)
        label_y, tiles_y = row_y[r]
        for i, line in enumerate(labels[n]):
            text(x0, label_y + i * step, line, b.color)
        x = x0
        for g, group in enumerate(b.groups):
            for j, t in enumerate(group):
                a = _tile(t, k)
                left = x + j * (tile_px + GAP) + (tile_px - a.shape[1]) // 2
                top = tiles_y + (tile_px - a.shape[0]) // 2
                img.paste(Image.fromarray(np.ascontiguousarray(a)), (left, top))
                # a grey frame outside the tile, in the gap: a white patch stays visible on the page
                frame = (left - 1, top - 1, left + a.shape[1], top + a.shape[0])
                draw.rectangle(frame, outline="#b0b0b0", width=1)
                boxes.append(Box("tile", frame[0], frame[1], frame[2] + 1, frame[3] + 1))
            x += widths[g] + GROUP_GAP
    return Sheet(_write_png(img, path), boxes, (width, height), FONT_PX)
