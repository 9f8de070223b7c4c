"""The screenshots in docs/: the report, its filter browser and a comparison, as Chromium draws
them at 1400 px, from runs made here (the demo on the bundled digits, and a second seed of it).

    python scripts/docs_screenshots.py [--out docs] [--epochs 10]

Needs Chromium and websocket-client (the browser tests' driver, tests/cdp.py). Each picture is a
window of the page at 1400 x 900 CSS pixels, stored with a 256-colour palette (small files, the
text as sharp as on screen).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]


def _shot(b, path: Path, scroll_to: str | None = None) -> None:
    from PIL import Image

    if scroll_to:
        b.eval(f"document.querySelector({scroll_to!r}).scrollIntoView()")
    time.sleep(0.6)  # lazy images in view load
    b.screenshot(path, full_page=False)
    Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path} ({path.stat().st_size / 1e3:.0f} kB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    from cdp import Browser

    from convlens.compare import compare_runs
    from convlens.demo import DEMO_CONFIG, run_demo
    from convlens.train import train

    tmp = Path(tempfile.mkdtemp(prefix="docs-shots-"))
    try:
        demo = run_demo(tmp / "demo", epochs=args.epochs, echo=lambda s: None)
        cfg = {**DEMO_CONFIG, "name": "demo-seed1", "seed": 1}
        cfg["train"] = {**cfg["train"], "epochs": args.epochs}
        other = train(cfg, tmp / "demo-seed1", echo=lambda s: None).path
        compare_runs([demo, other], tmp / "compare", cka_images=300)
        args.out.mkdir(parents=True, exist_ok=True)
        with Browser(tmp / "profile", width=1400, height=900) as b:
            b.viewport(1400, 900)
            b.open((demo / "report.html").as_uri())
            _shot(b, args.out / "report.png")
            b.eval("location.hash = '#fb=conv2/3'")
            _shot(b, args.out / "filter-browser.png")
            _shot(b, args.out / "report-examples.png", "#examples")
            b.open((tmp / "compare" / "compare.html").as_uri())
            _shot(b, args.out / "compare.png")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
