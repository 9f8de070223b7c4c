"""What a reader's browser loads when it opens the report of a csci611 run, and how fast.

    python benchmarks/bench_report_weight.py [--run RUN] [--shots FOLDER]

RUN defaults to a csci611 network at the course's width (conv 32-64-128, fc 256: the 224 filters
the filter browser shows), trained 1 epoch on 3,000 CIFAR-10 images into `runs/bench-report-csci611`
(once; the weights only need to be a trained net's, the report's weight does not depend on its
accuracy). A copy is analysed with the real `convlens analyze` (every default analysis, over
`--limit` test images, default 2,000: the figures are as many and as large as over all 10,000),
then:

- the report as written by default (images linked from the run folder, loaded when looked at) and
  with `--self-contained` (every image embedded): the HTML's size;
- opened in headless Chromium at 1400 x 1000: the first load's weight (the HTML plus every image
  the browser fetched by the load event, scrolled to the top), the time to the load event (median
  of 3 cold opens), and the layout check of `tests/layout.py` (overlapping text, text under 11 px,
  shrunk figures) with every section opened;
- ``--shots``: PNG screenshots of the report's top, the filter browser and a comparison page.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from _cifar import cifar_root  # noqa: E402

RUN = ROOT / "runs" / "bench-report-csci611"
RECIPE = ["data.train_subset=3000", "train.epochs=1", "train.batch_size=128", "train.precision=fp32"]

# images the page fetched so far (not data: URIs) and their sizes are read from the files
LOADED = (
    "[...document.images].filter(i => i.complete && i.naturalWidth > 0 && !i.currentSrc.startsWith('data:'))"
    ".map(i => i.currentSrc)"
)
LOAD_MS = "(t => t.loadEventEnd - t.startTime)(performance.getEntriesByType('navigation')[0])"


def trained(run: Path | None) -> Path:
    if run is not None:
        return run
    if not (RUN / "checkpoints" / "best.pt").is_file():
        from convlens.train import train

        print(f"training csci611 once into {RUN} ({', '.join(RECIPE)})")
        train(
            str(ROOT / "examples" / "csci611.yaml"), RUN, overrides=[f"data.root={cifar_root()}", *RECIPE], echo=print
        )
    return RUN


def first_load(b, url: str) -> tuple[int, float]:
    from urllib.parse import unquote, urlparse

    b.open(url)
    time.sleep(0.5)
    files = {unquote(urlparse(u).path) for u in b.eval(LOADED)}
    return sum(Path(f).stat().st_size for f in files), b.eval(LOAD_MS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a trained run folder (default: csci611, trained once)")
    ap.add_argument("--shots", type=Path, help="write screenshots of the report, its browser and a comparison here")
    ap.add_argument("--limit", type=int, default=2000, help="test images the analyses read (default 2,000)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    from cdp import Browser
    from layout import check_layout

    from convlens.cli import main as cli
    from convlens.report import build_report

    src = trained(args.run)
    tmp = Path(tempfile.mkdtemp(prefix="bench-weight-"))
    try:
        run = shutil.copytree(src, tmp / "run", ignore=shutil.ignore_patterns("report", "report.html", "analysis"))
        t0 = time.perf_counter()
        assert cli(["analyze", str(run), "--limit", str(args.limit)]) == 0
        print(f"convlens analyze: {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        page = build_report(run)
        print(f"convlens report (per-filter figures drawn): {time.perf_counter() - t0:.1f} s")
        single = build_report(run, tmp / "single.html", self_contained=True)
        n_png = len(list(run.rglob("*.png")))
        html = page.stat().st_size
        png_mb = sum(p.stat().st_size for p in run.rglob("*.png")) / 1e6
        print(f"report.html {html / 1e6:.2f} MB linking {n_png} PNGs ({png_mb:.1f} MB)")
        print(f"--self-contained: {single.stat().st_size / 1e6:.1f} MB, every image embedded")
        with Browser(tmp / "profile", width=1400, height=1000) as b:
            b.viewport(1400, 1000)
            loads = [first_load(b, page.as_uri()) for _ in range(3)]
            img_bytes = loads[0][0]
            print(
                f"first load at 1400 x 1000: {(html + img_bytes) / 1e6:.2f} MB (HTML {html / 1e6:.2f} MB + images "
                f"{img_bytes / 1e6:.2f} MB); load event after {statistics.median(ms for _, ms in loads):.0f} ms "
                "(median of 3)"
            )
            b.open(single.as_uri())
            print(f"--self-contained page: load event after {b.eval(LOAD_MS):.0f} ms")
            b.open(page.as_uri())
            got = check_layout(b)
            print(
                f"layout, every section open: {got['texts']} texts, {got['images']} images; "
                f"{got['n_overlaps']} overlaps, {got['n_small']} texts under 11 px, "
                f"{len(got['shrunk'])} shrunk figures, {got['broken']} broken"
            )
            for bad in got["overlaps"][:5] + got["small"][:5] + got["shrunk"][:5]:
                print("  ", bad)
            if args.shots:
                shots(b, page, run, tmp, args.shots)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def shots(b, page: Path, run: Path, tmp: Path, folder: Path) -> None:
    """Screenshots for the docs: the report's first screen, its filter browser on a conv2 filter, a
    comparison of the run with a copy trained one more epoch would need a second run: the run
    compared with itself shows the page as it is laid out."""
    from convlens.compare import compare_runs

    folder.mkdir(parents=True, exist_ok=True)
    b.open(page.as_uri())
    b.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
    b.screenshot(folder / "report.png", full_page=False)
    b.eval("location.hash = '#fb=conv2/5'")
    time.sleep(0.5)
    b.screenshot(folder / "filter-browser.png", full_page=False)
    compare_runs([run, run], tmp / "cmp", cka_images=200)
    b.open((tmp / "cmp" / "compare.html").as_uri())
    b.screenshot(folder / "compare.png", full_page=False)
    print(f"screenshots in {folder}")


if __name__ == "__main__":
    main()
