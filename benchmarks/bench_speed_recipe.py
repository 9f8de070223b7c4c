"""Time to accuracy of the fast recipes, and what each of their tricks is worth.

Two modes:

``time`` (final numbers, on the TEST split): runs ``convlens train CONFIG`` as a separate process
per seed, exactly as a user would, and times the whole command (start-up, data from the uint8
cache, training, test evaluation with the config's TTA). Prints test accuracy and wall seconds
per seed, then the median and spread. CPU seconds and the load average are printed too: on a
shared machine the wall time depends on what else runs.

    PYTHONPATH=src python benchmarks/bench_speed_recipe.py time examples/fast-cpu.yaml \\
        --seeds 0 1 2 [--set train.epochs=6 ...]

``ablate`` (tuning numbers, on a VALIDATION split carved from train; the test split is never
looked at): trains the recipe, then the recipe with one trick switched off at a time, and prints
validation accuracy (with the config's TTA) against the full recipe.

    PYTHONPATH=src python benchmarks/bench_speed_recipe.py ablate examples/fast-cpu.yaml \\
        --set train.epochs=4 [--only whiten lookahead ...] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, HERE)

from _cifar import cifar_root  # noqa: E402

#: Each trick of the recipe and the overrides that switch it off (or back to the plain choice).
ABLATIONS: dict[str, list[str]] = {
    "whiten": ["model.options.whiten=false"],  # the 2x2 first conv trains from a random init
    "freeze_whiten": ["model.options.freeze_whiten=false"],  # whitening init, but trained
    "identity": ["model.options.identity=false"],  # block convs from PyTorch's default init
    "logit_scale": ["model.options.logit_scale=1"],
    "bn_learn_scale": ["model.options.bn_learn_scale=true"],  # batch norm learns its scale too
    "bn_momentum": ["model.options.bn_momentum=0.1", "model.options.bn_eps=0.00001"],  # PyTorch defaults
    "gelu": ["model.options.act=relu"],
    "label_smoothing": ["train.label_smoothing=0"],
    "alternate_flip": ["data.augment.flip.alternate=false"],  # random flips with p = 0.5
    "translate": ["data.augment.translate=null"],
    "nesterov": ["train.optimizer.nesterov=false"],
    "bias_lr": ["train.optimizer.bias_lr_scale=1", "train.optimizer.bias_weight_decay=null"],
    "lookahead": ["train.average=null"],
    "ema_instead": ["train.average.kind=ema"],
    "muon": ["train.optimizer.muon=null"],  # conv filters back to Nesterov SGD (fast-cpu-plus.yaml)
    "resize_schedule": ["train.resize_schedule=null"],  # every epoch at full size (fast-cpu-plus.yaml)
    "frozen_bias": ["train.frozen_bias_epochs=null"],  # the whitening bias trains throughout (fast-cpu-plus.yaml)
    "tta": ["eval.tta=none"],  # evaluation only: the full recipe's network, evaluated without TTA
    "tta_shifts": ["eval.tta=flip"],  # mirror only, no 1-pixel shifts
}


def run_time(config: str, seeds: list[int], sets: list[str], keep: str | None) -> None:
    out_root = keep or tempfile.mkdtemp(prefix="bench-recipe-")
    rows = []
    try:
        for seed in seeds:
            out = os.path.join(out_root, f"seed{seed}")
            shutil.rmtree(out, ignore_errors=True)
            cmd = [
                sys.executable,
                "-m",
                "convlens.cli",
                "train",
                config,
                "--out",
                out,
                "--set",
                f"seed={seed}",
                "--set",
                f"data.root={cifar_root()}",
            ]
            for s in sets:
                cmd += ["--set", s]
            env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
            load0 = os.getloadavg()[0]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            ev = json.load(open(os.path.join(out, "eval.json")))
            metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
            train_s = sum(m["epoch_seconds"] for m in metrics)
            rows.append(
                {
                    "seed": seed,
                    "acc": 100 * ev["accuracy"],
                    "wall": wall,
                    "cpu": cpu,
                    "train_s": train_s,
                    "eval_s": ev["seconds"],
                    "load": (load0, os.getloadavg()[0]),
                }
            )
            r = rows[-1]
            print(
                f"  seed {seed}: test {r['acc']:.2f}%  wall {wall:.0f}s (training {train_s:.0f}s, evaluation "
                f"{r['eval_s']:.0f}s)  cpu {cpu:.0f}s  load {load0:.1f}->{r['load'][1]:.1f}",
                flush=True,
            )
    finally:
        if keep is None:
            shutil.rmtree(out_root, ignore_errors=True)
    accs, walls = [r["acc"] for r in rows], [r["wall"] for r in rows]
    print(f"\n{config} {' '.join(sets)}")
    print(
        f"test accuracy: median {statistics.median(accs):.2f}%, mean {statistics.mean(accs):.2f}%, "
        f"range {min(accs):.2f}-{max(accs):.2f} ({len(accs)} seeds)"
    )
    print(
        f"wall seconds:  median {statistics.median(walls):.0f}, range {min(walls):.0f}-{max(walls):.0f}; "
        f"cpu seconds median {statistics.median(r['cpu'] for r in rows):.0f}"
    )


def run_ablate(config: str, seeds: list[int], sets: list[str], only: list[str] | None) -> None:
    from convlens import runload
    from convlens.run import Run
    from convlens.train import train
    from convlens.train.evaluate import evaluate_split

    base = [f"data.root={cifar_root()}", "data.val_fraction=0.1", "data.test_subset=100"] + sets
    variants = {"(full recipe)": []}
    variants.update({k: v for k, v in ABLATIONS.items() if only is None or k in only})
    tmp = tempfile.mkdtemp(prefix="bench-ablate-")
    results: dict[str, list[float]] = {}
    try:
        for name, extra in variants.items():
            for seed in seeds:
                t0 = time.perf_counter()
                base_run = os.path.join(tmp, f"full-{seed}")
                if extra and all(o.startswith("eval.") for o in extra):
                    # only the evaluation changes: evaluate the full recipe's network again
                    run = Run(base_run)
                    tta = dict(o.split("=", 1) for o in extra).get("eval.tta", run.config.eval.tta)
                else:
                    out = base_run if not extra else os.path.join(tmp, f"{name}-{seed}")
                    run = train(config, out, overrides=base + extra + [f"seed={seed}"], echo=lambda s: None)
                    tta = run.config.eval.tta
                data = runload.load_data(run)
                res, _ = evaluate_split(runload.load_model(run, "last"), data.val, data.classes, tta=tta)
                results.setdefault(name, []).append(100 * res["accuracy"])
                print(
                    f"  {name:<16} seed {seed}: val {results[name][-1]:.2f}%  ({time.perf_counter() - t0:.0f}s, "
                    f"load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
                if extra:
                    shutil.rmtree(os.path.join(tmp, f"{name}-{seed}"), ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    full = statistics.mean(results["(full recipe)"])
    print(f"\n{config} {' '.join(sets)}: validation accuracy, mean over seeds {seeds}")
    print(f"{'switched off':<18} {'val acc':>8} {'change':>8}   overrides")
    for name, accs in results.items():
        m = statistics.mean(accs)
        print(f"{name:<18} {m:>7.2f}% {m - full:>+7.2f}   {' '.join(variants[name])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["time", "ablate"])
    ap.add_argument("config")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--only", nargs="+", choices=sorted(ABLATIONS), help="ablate only these tricks")
    ap.add_argument("--keep", help="time: keep the run folders under this folder")
    args = ap.parse_args()
    if args.mode == "time":
        run_time(args.config, args.seeds, args.sets, args.keep)
    else:
        run_ablate(args.config, args.seeds, args.sets, args.only)


if __name__ == "__main__":
    main()
