"""Checks of a page's layout in a real browser, from the boxes Chromium lays out: no text over
other text or over an image, no text smaller than a person reads, no figure shrunk below the
size its text was drawn at. Used by the layout tests and by ``benchmarks/bench_report.py``.

Every ``<details>`` is opened and every image loaded first, so folded sections and lazy images
are checked as a reader sees them once opened.
"""

from __future__ import annotations

from typing import Any

# opens everything and waits for every image (lazy or folded) to load
LOAD_ALL = (
    "(document.querySelectorAll('details').forEach(d => d.open = true),"
    " Promise.all([...document.images].filter(i => i.getAttribute('src'))"
    ".map(i => (i.loading = 'eager', i.decode().then(() => 0, () => 1))))"
    ".then(r => r.reduce((a, b) => a + b, 0)))"
)

# The boxes: one per line of every text node (Range.getClientRects), every image. Two text boxes
# of different nodes, or a text box and an image, that share more than half a pixel each way
# overlap. Text in form controls is the control's own and is skipped.
LAYOUT = r"""
(() => {
  const SKIP = new Set(["SCRIPT", "STYLE", "TITLE", "OPTION", "SELECT", "NOSCRIPT"]);
  const sx = window.scrollX, sy = window.scrollY;
  const boxes = [], small = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let n = 0;
  for (let t = walker.nextNode(); t; t = walker.nextNode()) {
    const el = t.parentElement;
    if (!el || SKIP.has(el.tagName) || !t.textContent.trim()) continue;
    const st = getComputedStyle(el);
    if (st.visibility === "hidden") continue;
    const r = document.createRange();
    r.selectNodeContents(t);
    const rects = [...r.getClientRects()].filter(b => b.width > 0.5 && b.height > 0.5);
    if (!rects.length) continue;
    n += 1;
    const size = parseFloat(st.fontSize);
    if (size < MIN_PX) small.push({text: t.textContent.trim().slice(0, 60), px: size, tag: el.tagName});
    for (const b of rects) {
      boxes.push({kind: "text", id: n, text: t.textContent.trim().slice(0, 60),
                  l: b.left + sx, t: b.top + sy, r: b.right + sx, b: b.bottom + sy});
    }
  }
  const shrunk = [];
  for (const img of document.images) {
    const b = img.getBoundingClientRect();
    if (b.width < 1 || b.height < 1) continue;
    n += 1;
    boxes.push({kind: "img", id: n, text: img.getAttribute("alt") || "",
                l: b.left + sx, t: b.top + sy, r: b.right + sx, b: b.bottom + sy});
    // a figure drawn with text is never shown smaller than drawn (its 12 px text would shrink)
    if (img.naturalWidth >= 200 && b.width < MIN_SCALE * img.naturalWidth)
      shrunk.push({alt: (img.getAttribute("alt") || "").slice(0, 60), natural: img.naturalWidth, shown: b.width});
  }
  boxes.sort((a, b) => a.t - b.t);
  const overlaps = [], E = 0.5;
  for (let i = 0; i < boxes.length; i++) {
    const a = boxes[i];
    for (let j = i + 1; j < boxes.length && boxes[j].t < a.b - E; j++) {
      const c = boxes[j];
      if (a.id === c.id || (a.kind === "img" && c.kind === "img")) continue;
      if (a.l < c.r - E && c.l < a.r - E && a.t < c.b - E && c.t < a.b - E)
        overlaps.push([a.kind + ": " + a.text, c.kind + ": " + c.text]);
    }
  }
  return {texts: boxes.filter(b => b.kind === "text").length, images: boxes.filter(b => b.kind === "img").length,
          overlaps: overlaps.slice(0, 20), n_overlaps: overlaps.length,
          small: small.slice(0, 20), n_small: small.length,
          shrunk: shrunk.slice(0, 20)};
})()
"""


def check_layout(browser: Any, min_px: float = 11.0, min_scale: float = 0.9) -> dict[str, Any]:
    """Open every folded part, load every image, then measure: ``overlaps`` (pairs of boxes),
    ``small`` (text under ``min_px`` CSS pixels), ``shrunk`` (figures shown under ``min_scale`` of
    their drawn width), ``broken`` (images that failed to load), and how many texts and images."""
    broken = browser.eval(LOAD_ALL)
    browser.eval("window.scrollTo(0, 0)")  # a sticky header covers what scrolls under it, by design
    out = browser.eval(LAYOUT.replace("MIN_PX", repr(float(min_px))).replace("MIN_SCALE", repr(float(min_scale))))
    out["broken"] = broken
    return out
