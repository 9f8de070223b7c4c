"""End to end at ImageNet size: a ResNet-50 at 224 px through train, analyze, explain and report.

Builds once (cached under ``--work``, default /tmp/convlens-bench-e2e; never the repository) an
image folder of ``--images`` N JPEGs (default 20,000: the first N/10 CIFAR-10 training images of
each class from the shared archive, upscaled bicubic to ``--size`` px, quality 90) in the layout
of the ``imagefolder`` data set: ``<folder>/<class>/*.jpg``, no split folders, so 20% of each
class is held out as the test split. Then runs the real command line, each step in its own
process so its peak resident set and CPU time are its own (``os.wait4``):

1. ``convlens train``: ``--preset`` (default resnet50) at ``--size`` px from random weights, one
   short epoch: the epoch is a training subset (``data.train_subset``, default 2,000 images, of
   which 5% validate) rather than a step cap, so the run folder is an ordinary finished run;
   ``data.test_subset`` (default 500) test images are evaluated at the end. The folder is decoded
   once, inside this step, into the on-disk image cache (``data.size``, ``data.cache: memmap``;
   ``crop: 1.0`` since the images already have the input's side), which every later step reads.
2. ``convlens analyze --skip ablate``: every other default analysis on ``--analyze-limit`` test
   images (default 200, stratified by class), at the layers the model picks by default (its
   stage outputs: ResNet-50's conv1, layer1.2.conv3 ... layer4.2.conv3, 3,904 filters).
3. ``convlens analyze --only ablate``: the ablation ranking of every filter of the last conv (2,048
   on ResNet-50) on ``--ablate-images`` test images (default 50; 0 leaves it out), its own line
   because its cost is the one that depends on the graph: a masked forward pass per filter
   where the network cannot be resumed after the ablated layer.
4. ``convlens explain``: ``--methods`` (default gradcam,guided,deconv,occlusion) on
   ``--explain-images`` test images (default 4); occlusion at its defaults (3 patch sizes, 515
   positions per 224 px image).
5. ``convlens report``: ``report.html`` and the figures it draws (every per-filter figure the
   analyses left pending); its weight is the page's bytes, and the bytes and number of files of
   report.html, report/ and analysis/ together.

analyze, ablate and explain are stopped after ``--step-timeout`` seconds (default 600), and their
line says so; train and report always run to the end.

Each line gives wall time, CPU time (user + system of the step's process and its children), peak
resident set, images per second (the images the step reads over its wall time; train: the
training images of the epoch over the epoch's own seconds from metrics.jsonl) and the CPU
model and flags. For development run it small:

    PYTHONPATH=src nice python benchmarks/bench_scale_e2e.py --images 500 --size 64 --preset resnet18

The caps (the defaults) are chosen for about 30 minutes at full size on 2 idle cores with bf16
(AVX-512 BF16; twice the train time in fp32), from one-thread CPU seconds per image of ResNet-50
measured at 224 px (bf16 training 0.17, fp32 inference 0.10, bf16 0.06; the analyses and the
test evaluation run in fp32) and a run of this script at 64 px: decode 20,000 JPEGs ~1 min;
train 1,900 images ~3 min, test 500 ~0.5 min; analyze 200 images ~2-3 min (the pass, atlas'
gradients, errors; top-k's per-filter records cost by filters, not images); explain ~2-3 min
(occlusion 515 forwards an image, ~30 s each); ablate on 50 images: 2,048 x 50 full forward passes
(~90 min, stopped at the timeout) where the network cannot be resumed after the ablated layer,
under a minute where it can; report: every pending per-filter figure (about 18,000 on ResNet-50:
top-k images and patches of 3,904 + 2,048 filters, weights of 3,904, class norms of 2,112; 15 ms
of CPU each at 64 px), ~10 minutes, the largest share, and gigabytes of PNGs.

The summary table at the end is in BENCHMARKS.md's format.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _machine import FLAGS, cpu_model_and_flags  # noqa: E402

ROOT = HERE.parent
QUALITY = 90
# The caps that keep the full size (20,000 images at 224 px, ResNet-50) near 30 minutes on 2 idle
# cores: training images of the one epoch, test images evaluated, analysed, ablated and explained,
# the explanation methods, and the seconds after which analyze, ablate or explain is stopped.
TRAIN, TEST, ANALYZE, ABLATE, EXPLAIN = 2000, 500, 200, 50, 4
METHODS = "gradcam,guided,deconv,occlusion"
STOP = 600.0


def make_folder(work: Path, n: int, size: int) -> Path:
    """``work/folder-n<N>-s<size>/<class>/*.jpg``: the first N/10 training images of each CIFAR-10
    class, upscaled; built once (a ``done`` file marks a complete folder)."""
    from _cifar import shared_file

    archive = os.environ.get("CONVLENS_CIFAR") or shared_file("cifar10-jpeg.tar.gz")
    if archive is None or not Path(archive).is_file():
        raise SystemExit(
            "skipped: cannot find cifar10-jpeg.tar.gz (../shared/data, CONVLENS_SHARED_DATA or CONVLENS_CIFAR); "
            "the benchmark needs the real CIFAR-10 images"
        )
    root = work / f"folder-n{n}-s{size}"
    if (root / "done").is_file():
        return root
    jobs, per_class = [], {}
    t0 = time.perf_counter()
    with tarfile.open(archive) as tar:
        for m in tar:
            parts = Path(m.name).parts
            if not m.isfile() or "train" not in parts or not m.name.endswith(".jpg"):
                continue
            cls = parts[-2]
            i = per_class.get(cls, 0)
            if i < n // 10:
                jobs.append((tar.extractfile(m).read(), str(root / cls / f"{i:05d}.jpg"), size))
                per_class[cls] = i + 1
    for cls in per_class:
        (root / cls).mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:  # decode, upscale, encode
        for _ in pool.imap_unordered(_upscale, jobs, chunksize=64):
            pass
    (root / "done").write_text(json.dumps({"images": len(jobs), "size": size}))
    print(f"built {root} ({len(jobs):,} images) in {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def _upscale(job: tuple[bytes, str, int]) -> None:
    import io

    from PIL import Image

    data, dest, size = job
    with Image.open(io.BytesIO(data)) as im:
        im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC).save(dest, quality=QUALITY)


def cpu_line() -> str:
    """The CPU model and the SIMD flags that decide the kernels (and bf16)."""
    model, flags = cpu_model_and_flags()
    has = " ".join(flags) or "none of " + "/".join(FLAGS)
    return f"{model}, {os.cpu_count()} cores, flags: {has}"


def run_step(name: str, args: list[str], env: dict[str, str], log: Path, timeout: float | None = None) -> dict:
    """Run ``python -m convlens.cli ARGS`` as a child; its wall, CPU and peak RSS (of the child
    and the children it waited for). Past ``timeout`` seconds the child is stopped (SIGTERM) and
    the row says so (``stopped``); any other failure ends the benchmark."""
    cmd = [sys.executable, "-m", "convlens.cli", *args]
    print(f"$ convlens {' '.join(args)}", flush=True)
    t0, stopped = time.perf_counter(), False
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if timeout is not None and time.perf_counter() - t0 > timeout and not stopped:
                p.terminate()
                stopped = True
            time.sleep(0.2)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 0 and not stopped:
        print(log.read_text()[-4000:])
        raise SystemExit(f"{name} failed with exit code {p.returncode}; its output: {log}")
    row = {"step": name, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024}
    return {**row, "stopped": stopped, "images_s": None, "note": ""}


def folder_weight(paths: list[Path]) -> tuple[int, int]:
    """Total bytes and number of files under ``paths``."""
    size = files = 0
    for p in paths:
        if p.is_file():
            size, files = size + p.stat().st_size, files + 1
        elif p.is_dir():
            for f in p.rglob("*"):
                if f.is_file():
                    size, files = size + f.stat().st_size, files + 1
    return size, files


def write_config(path: Path, folder: Path, a: argparse.Namespace) -> None:
    path.write_text(
        f"""name: e2e-{a.preset}
seed: 0
data:
  name: imagefolder
  root: {folder}
  size: {a.size}
  crop: 1.0
  cache: memmap
  val_fraction: 0.05
  train_subset: {a.train_images}
  test_subset: {a.test_images}
  augment:
    flip: {{p: 0.5}}
model:
  preset: {a.preset}
train:
  epochs: 1
  batch_size: {a.batch_size}
  optimizer: {{name: sgd, lr: 0.01, momentum: 0.9, weight_decay: 0.0001}}
  schedule: {{name: cosine}}
eval:
  batch_size: {a.batch_size}
"""
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20000, help="images in the folder (default 20,000)")
    ap.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    ap.add_argument("--preset", default="resnet50", help="model preset (default resnet50)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/convlens-bench-e2e"), help="folder for data and runs")
    ap.add_argument("--train-images", type=int, default=TRAIN, help=f"images of the one short epoch ({TRAIN:,})")
    ap.add_argument("--test-images", type=int, default=TEST, help=f"test images evaluated after training ({TEST})")
    ap.add_argument("--batch-size", type=int, default=32, help="training and evaluation batch (default 32)")
    ap.add_argument("--analyze-limit", type=int, default=ANALYZE, help=f"test images analysed ({ANALYZE})")
    ap.add_argument(
        "--ablate-images", type=int, default=ABLATE, help=f"test images of the ablation ({ABLATE}; 0: none)"
    )
    ap.add_argument("--explain-images", type=int, default=EXPLAIN, help=f"test images explained ({EXPLAIN})")
    ap.add_argument("--methods", default=METHODS, help=f"explanation methods ({METHODS})")
    ap.add_argument(
        "--step-timeout", type=float, default=STOP, help=f"seconds before analyze/ablate/explain stop ({STOP})"
    )
    a = ap.parse_args()

    a.work.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_line()}", flush=True)
    folder = make_folder(a.work, a.images, a.size)
    tag = f"{a.preset}-n{a.images}-s{a.size}-{time.strftime('%Y%m%d-%H%M%S')}"
    run, cfg = a.work / "runs" / tag, a.work / f"{tag}.yaml"
    run.parent.mkdir(parents=True, exist_ok=True)
    write_config(cfg, folder, a)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["CONVLENS_DATA"] = str(a.work / "cache")  # the decoded arrays' cache: not the user's
    logs = a.work / "logs" / tag
    logs.mkdir(parents=True, exist_ok=True)
    rows = [train_step(a, cfg, run, env, logs)]

    step = functools.partial(run_step, env=env, timeout=a.step_timeout)
    row = step(
        "analyze", ["analyze", str(run), "--limit", str(a.analyze_limit), "--skip", "ablate"], log=logs / "an.log"
    )
    row["images_s"], row["note"] = a.analyze_limit / row["wall"], f"{a.analyze_limit} test images, all but ablate"
    rows.append(row)

    if a.ablate_images:
        row = step(
            "ablate", ["analyze", str(run), "--only", "ablate", "--limit", str(a.ablate_images)], log=logs / "ab.log"
        )
        row["images_s"] = a.ablate_images / row["wall"]
        row["note"] = f"{a.ablate_images} test images, every filter of the last conv ranked"
        rows.append(row)

    images = ",".join(str(i) for i in range(a.explain_images))
    row = step("explain", ["explain", str(run), "--method", a.methods, "--images", images], log=logs / "ex.log")
    row["images_s"], row["note"] = a.explain_images / row["wall"], f"{a.explain_images} images x {a.methods}"
    rows.append(row)

    row = run_step("report", ["report", str(run)], env, logs / "report.log")
    page = (run / "report.html").stat().st_size
    size, files = folder_weight([run / "report.html", run / "report", run / "analysis"])
    row["note"] = f"report.html {page / 1e6:.2f} MB; with figures and analyses {size / 1e6:.1f} MB in {files:,} files"
    rows.append(row)

    summarize(a, rows, run, logs)
    return 0


def train_step(a: argparse.Namespace, cfg: Path, run: Path, env: dict[str, str], logs: Path) -> dict:
    """``convlens train``; its images/s are the epoch's training images over the epoch's seconds."""
    row = run_step("train", ["train", str(cfg), "--out", str(run)], env, logs / "train.log")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epoch_s = sum(m.get("epoch_seconds") or 0 for m in metrics)
    n_train = round(a.train_images * 0.95)
    row["images_s"] = n_train / max(epoch_s, 1e-9)
    row["note"] = f"1 epoch of {n_train:,} images in {epoch_s:.0f} s (with validation); decode and test eval in wall"
    return row


def summarize(a: argparse.Namespace, rows: list[dict], run: Path, logs: Path) -> None:
    total = sum(r["wall"] for r in rows)
    print(f"\n{a.preset}, {a.images:,} images at {a.size} px ({cpu_line()}); run folder {run}, logs {logs}")
    caps = f"train {a.train_images:,}, test {a.test_images}, analyze {a.analyze_limit}, ablate {a.ablate_images}"
    print(f"images per step: {caps}, explain {a.explain_images} ({a.methods}); batch {a.batch_size}\n")
    print("| step | wall s | CPU s | peak RSS MB | images/s | what |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        ips = "" if r["images_s"] is None else f"{r['images_s']:.2f}"
        note = f"STOPPED after {r['wall']:.0f} s; " * r["stopped"] + r["note"]
        print(f"| {r['step']} | {r['wall']:.0f} | {r['cpu']:.0f} | {r['rss_mb']:,.0f} | {ips} | {note} |")
    print(f"| total | {total:.0f} | {sum(r['cpu'] for r in rows):.0f} | {max(r['rss_mb'] for r in rows):,.0f} | | |")


if __name__ == "__main__":
    raise SystemExit(main())
