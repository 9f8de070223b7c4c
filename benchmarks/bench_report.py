"""How long `convlens report` takes on a finished run with every analysis present (target: < 20 s).

    python benchmarks/bench_report.py [--run RUN] [--data-root PATH]

RUN defaults to the benchmarks' CIFAR-10 run (`runs/bench-csci611-small`, see `_cifar.py`: csci611
preset at width 16, conv layers of 16, 32 and 64 filters; trained once when absent). It is copied
to a temporary folder, so the original is never written to. Into the copy, analyses following the
run-folder contract are written first for every filter of every conv layer (weights, class-wise norms, top-k images and
patches, activation maximisation of the first layer, statistics, ablation, an error gallery and a
saliency grid, over 2,000 test images: the same writer the tests use). To measure with the real
analyses instead, run `convlens analyze` / `convlens explain` on RUN and pass `--as-is`.

Printed: the time of a cold build (the report's own figures drawn: curves, per-class accuracy,
confusion matrix), of a warm build (every figure reused), the page's size and image count, of a
cold build that also loads the test images and draws the example galleries (no errors analysis), and
the speed of the report's gallery drawing (one mosaic image) against one subplot per image
(`plots.image_grid`), both drawing the same 24 test images in one process.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from _cifar import shared_file, trained_run  # noqa: E402


def fix_data_root(run_dir: Path, data_root: str | None) -> None:
    """Point the copied run's config at data that exists from here (its root may be relative to
    the folder it was trained from)."""
    from convlens.config import load_config

    cfg = load_config(run_dir / "config.yaml")
    root = cfg.data.root
    if root is None or Path(root).exists():
        return
    for c in [Path(data_root) if data_root else None, shared_file(Path(root).name)]:
        if c is not None and c.exists():
            cfg.data.root = str(c.resolve())
            cfg.data.download = False
            cfg.save(run_dir / "config.yaml")
            return
    print(f"warning: data root {root} not found; galleries that need test images will be skipped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a trained run folder (default: the benchmarks' CIFAR-10 run)")
    ap.add_argument(
        "--data-root", help="where the run's data lives, if its config.yaml root does not resolve from here"
    )
    ap.add_argument(
        "--as-is", action="store_true", help="measure with the analyses already in RUN instead of writing them"
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    if args.run is None:
        args.run = trained_run()
    from convlens.report import build_report
    from convlens.run import Run

    if not (args.run / "config.yaml").is_file():
        sys.exit(f"{args.run} is not a run folder; train one (e.g. `convlens demo`) and pass --run")
    tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        run_dir = shutil.copytree(args.run, tmp / "run", ignore=shutil.ignore_patterns("report", "report.html"))
        fix_data_root(run_dir, args.data_root)
        if not args.as_is:
            from report_helpers import write_analyses

            t0 = time.perf_counter()
            names = write_analyses(run_dir, k=16, limit=2000)
            print(f"wrote contract analyses {', '.join(names)} for every filter in {time.perf_counter() - t0:.1f} s")
        present = sorted(p.stem for p in (run_dir / "analysis").glob("*.json"))
        n_png = len(list((run_dir / "analysis").rglob("*.png")))
        print(
            f"run: {args.run} ({Run(run_dir).config.model.preset}), analyses present: {', '.join(present)}; "
            f"{n_png} analysis figures"
        )

        # cold: the report's own figures are drawn; warm: all reused
        lines: list[str] = []
        t0 = time.perf_counter()
        out = build_report(run_dir, echo=lines.append)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_report(run_dir)
        warm = time.perf_counter() - t0
        html = out.read_text()
        print(f"cold build {cold:.2f} s ({'; '.join(lines) or 'nothing drawn'})")
        print(f"warm build {warm:.2f} s")
        print(
            f"report.html {len(html) / 1e6:.1f} MB, {html.count('<img ')} linked images (what a reader loads: "
            f"bench_report_weight.py); target < 20 s: "
            f"{'met' if cold < 20 else 'MISSED'}"
        )

        # without an errors analysis the report draws its own galleries from the test images
        errors = run_dir / "analysis" / "errors.json"
        if errors.is_file():
            errors.rename(tmp / "errors.json")
            lines.clear()
            t0 = time.perf_counter()
            build_report(run_dir, echo=lines.append)
            print(
                f"cold build with the report's own galleries (no errors analysis) {time.perf_counter() - t0:.2f} s "
                f"({'; '.join(lines) or 'nothing drawn'})"
            )

        # galleries: one mosaic against one subplot per image
        from convlens import plots, runload
        from convlens.report.figures import draw_gallery, pick_examples, read_predictions

        images = runload.load_data(run_dir).test.images
        rows = pick_examples(read_predictions(run_dir / "predictions.csv"), 24)
        classes = Run(run_dir).classes
        plots.pyplot()
        draw_gallery(images, rows, classes, tmp / "warmup.png", "warm-up", False)
        t_mosaic, t_grid = [], []
        for i in range(3):
            t0 = time.perf_counter()
            draw_gallery(images, rows, classes, tmp / f"m{i}.png", "Examples", False)
            t_mosaic.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            plots.image_grid(
                [images[r["position"]].numpy() for r in rows],
                tmp / f"g{i}.png",
                layout="chw",
                titles=[classes[r["pred"]] for r in rows],
                cols=8,
                suptitle="Examples",
            )
            t_grid.append(time.perf_counter() - t0)
        print(
            f"gallery of 24 images: mosaic {min(t_mosaic):.2f} s, one subplot per image {min(t_grid):.2f} s "
            f"(best of 3): {min(t_grid) / min(t_mosaic):.1f}x faster"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
