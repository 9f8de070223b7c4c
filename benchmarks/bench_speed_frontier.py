"""Accuracy against seconds: a new CPU recipe against the airbench94 baseline, side by side.

Runs ``convlens train CONFIG`` as a separate process per (recipe, epochs, seed), exactly as a
user would, and times the whole command (start-up, data from the uint8 cache, training, test
evaluation with the config's TTA): wall seconds and the process's CPU seconds (user + system,
which depend much less on what else runs on a shared machine). The runs are interleaved
(baseline, new, baseline, new, ...) and pinned to the same thread count, so both recipes see the
same machine; with ``--jobs 2`` a baseline run and a new-recipe run go side by side.

Printed and written: the machine (CPU model, AVX2 / AVX-512 / AMX flags, cores, threads, load),
every run, the frontier (median accuracy per budget, spread), and the ratio table:

- the new recipe's seconds to the baseline's median accuracy at ``--ref-epochs`` (interpolated
  along its frontier, linear in log seconds) over the baseline's seconds, on CPU and wall seconds;
- at each other baseline budget, the new recipe's accuracy at the same seconds (interpolated).

    CONVLENS_SHARED_DATA=../shared/data PYTHONPATH=src python benchmarks/bench_speed_frontier.py \\
        --base examples/fast-cpu.yaml --base-epochs 1 2 4 8 \\
        --new examples/fast-cpu-plus.yaml --new-epochs 1 2 3 4 6 --seeds 0 1 2 --threads 1 --jobs 2

The full-width comparison (BENCHMARKS.md, "Full width"): airbench94's recipe against the new
CPU recipe, the reference budgets over 3 seeds first, the frontier's other budgets on one seed;
it ends with the ``time-to-airbench94: ...`` line and the frontier check::

    CONVLENS_SHARED_DATA=../shared/data PYTHONPATH=src python benchmarks/bench_speed_frontier.py \\
        --base examples/fast-gpu.yaml --new examples/fast-cpu-full.yaml --base-epochs 1 3 10 \\
        --new-epochs 1 2 4 8 --ref-epochs 10 --new-ref-epochs 8 --seeds 0 1 2 --frontier-seeds 1 \\
        --threads 1 --jobs 2 --label airbench94 --name speed-frontier-full

``--out DIR`` keeps NAME.json (every run, written as it finishes) and NAME.png (default
``benchmarks/figures/speed-frontier.*``); ``--resume`` continues an interrupted invocation from
its json, ``--report-only`` redraws the table and figure from it.
``--set KEY=VALUE`` applies to both recipes (e.g. ``data.train_subset=10000`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, HERE)

from _cifar import cifar_root  # noqa: E402
from _machine import cpu_model_and_flags  # noqa: E402


def machine() -> dict:
    """CPU model, the SIMD flags that decide float32 / bf16 speed, cores and load."""
    model, flags = cpu_model_and_flags()
    import torch

    return {
        "cpu": model,
        "flags": flags,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "load": list(os.getloadavg()),
    }


def run_one(config: str, epochs: int, seed: int, threads: int, sets: list[str], out: str) -> dict:
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
        f"train.epochs={epochs}",
        "--set",
        f"train.threads={threads}",
        "--set",
        f"data.root={cifar_root()}",
    ]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src"), "OMP_NUM_THREADS": str(threads)}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: nothing blocks a chatty child
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time, even with others running
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        err = log.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    ev = json.load(open(os.path.join(out, "eval.json")))
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return {
        "acc": 100 * ev["accuracy"],
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "train_s": sum(m["epoch_seconds"] for m in metrics),
        "eval_s": ev["seconds"],
        "load": [load0, os.getloadavg()[0]],
        "precision": _precision(err),
    }


def _precision(log: str) -> str:
    for line in log.splitlines():
        if line.startswith("run ") and "parameters, " in line:
            return line.rsplit("parameters, ", 1)[1]
    return "?"


def interleave(base: list[tuple[str, int]], new: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """baseline, new, baseline, new, ... (the longer list's tail at the end)."""
    out = []
    for i in range(max(len(base), len(new))):
        out += base[i : i + 1] + new[i : i + 1]
    return out


def interp_time(points: list[tuple[float, float]], acc: float) -> float | None:
    """Seconds at which a frontier [(seconds, acc), ...] (by seconds) first reaches ``acc``:
    linear in log seconds between the two budgets around it; None when it never does."""
    for (s0, a0), (s1, a1) in zip(points, points[1:]):
        if a0 >= acc:
            return s0
        if a1 >= acc:
            f = (acc - a0) / (a1 - a0)
            return math.exp(math.log(s0) + f * (math.log(s1) - math.log(s0)))
    return points[0][0] if points and points[0][1] >= acc else None


def interp_acc(points: list[tuple[float, float]], seconds: float) -> float | None:
    """Accuracy of a frontier at ``seconds`` (linear in log seconds); None outside its range."""
    for (s0, a0), (s1, a1) in zip(points, points[1:]):
        if s0 <= seconds <= s1:
            f = (math.log(seconds) - math.log(s0)) / (math.log(s1) - math.log(s0)) if s1 > s0 else 0.0
            return a0 + f * (a1 - a0)
    return None


def acc_at(points: list[tuple[float, float]], seconds: float) -> tuple[float | None, bool]:
    """A frontier's accuracy at ``seconds`` (:func:`interp_acc`) and whether ``seconds`` lies past
    its largest budget, where it has reached at least its best accuracy (returned then); None
    before its smallest budget."""
    acc = interp_acc(points, seconds)
    if acc is None and points and seconds > points[-1][0]:
        return max(p[1] for p in points), True
    return acc, False


def frontier(rows: list[dict], recipe: str, key: str) -> list[tuple[float, float]]:
    """(median seconds, median accuracy) per epoch budget of one recipe, by seconds."""
    out = []
    for e in sorted({r["epochs"] for r in rows if r["recipe"] == recipe}):
        rs = [r for r in rows if r["recipe"] == recipe and r["epochs"] == e]
        out.append((statistics.median(r[key] for r in rs), statistics.median(r["acc"] for r in rs)))
    return sorted(out)


def plot(rows: list[dict], names: dict[str, str], path: str, info: str, ref_epochs: int) -> None:
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ref = [r["acc"] for r in rows if r["recipe"] == "base" and r["epochs"] == ref_epochs]

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
    colors = {"base": "tab:blue", "new": "tab:red"}
    for ax, key, label in (
        (axes[0], "cpu", "CPU seconds (user + system) per run"),
        (axes[1], "wall", "wall seconds per run"),
    ):
        for recipe in ("base", "new"):
            pts = []
            for e in sorted({r["epochs"] for r in rows if r["recipe"] == recipe}):
                rs = [r for r in rows if r["recipe"] == recipe and r["epochs"] == e]
                s, a = statistics.median(r[key] for r in rs), statistics.median(r["acc"] for r in rs)
                lo, hi = min(r["acc"] for r in rs), max(r["acc"] for r in rs)
                pts.append((s, a))
                ax.errorbar([s], [a], yerr=[[a - lo], [hi - a]], color=colors[recipe], capsize=3, fmt="o")
                ax.annotate(f"{e} ep", (s, a), textcoords="offset points", xytext=(4, -10), fontsize=7)
            # joined in epoch order: under a changing load wall seconds need not grow with epochs
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=colors[recipe], label=names[recipe])
        if ref:
            ax.axhline(statistics.median(ref), color="gray", ls="--", lw=0.8)
            ax.annotate(
                f"baseline {ref_epochs} ep: {statistics.median(ref):.2f}%",
                (0.02, statistics.median(ref)),
                xycoords=("axes fraction", "data"),
                textcoords="offset points",
                xytext=(0, 3),
                fontsize=7,
            )
        ax.set_xscale("log")
        lo_s, hi_s = min(r[key] for r in rows), max(r[key] for r in rows)
        nice = [m * 10**k for k in range(0, 5) for m in (1, 1.5, 2, 3, 5, 7)]
        ax.set_xticks([t for t in nice if lo_s * 0.9 <= t <= hi_s * 1.1] or [lo_s, hi_s])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy % (median, range over seeds)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("\n".join(textwrap.wrap(info, 130)), fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def report(rows: list[dict], names: dict[str, str], ref_epochs: int) -> list[str]:
    lines = []
    for recipe in ("base", "new"):
        lines.append(f"\n{names[recipe]}")
        lines.append(
            f"{'epochs':>6} {'seeds':>5} {'acc median':>10} {'range':>13} {'cpu s':>7} {'wall s':>7} "
            f"{'train s':>7} {'eval s':>6}"
        )
        for e in sorted({r["epochs"] for r in rows if r["recipe"] == recipe}):
            rs = [r for r in rows if r["recipe"] == recipe and r["epochs"] == e]
            acc = [r["acc"] for r in rs]
            med = {k: statistics.median(r[k] for r in rs) for k in ("cpu", "wall", "train_s", "eval_s")}
            lines.append(
                f"{e:>6} {len(rs):>5} {statistics.median(acc):>9.2f}% {min(acc):>6.2f}-{max(acc):.2f}% "
                f"{med['cpu']:>7.0f} {med['wall']:>7.0f} {med['train_s']:>7.0f} {med['eval_s']:>6.0f}"
            )
    base_ref = [r for r in rows if r["recipe"] == "base" and r["epochs"] == ref_epochs]
    if not base_ref:
        return lines
    target = statistics.median(r["acc"] for r in base_ref)
    lines.append(f"\nratio table (medians over seeds; target: the baseline's {ref_epochs}-epoch median {target:.2f}%)")
    lines.append(
        f"{'baseline budget':<16} {'seconds':<8} {'baseline acc':>12} {'new acc at same s':>18} "
        f"{'new s to baseline acc':>22} {'ratio':>6}"
    )
    for key in ("cpu", "wall"):
        new_pts = frontier(rows, "new", key)
        for e in sorted({r["epochs"] for r in rows if r["recipe"] == "base"}):
            rs = [r for r in rows if r["recipe"] == "base" and r["epochs"] == e]
            s, a = statistics.median(r[key] for r in rs), statistics.median(r["acc"] for r in rs)
            na, past = acc_at(new_pts, s)
            ts = interp_time(new_pts, a)
            if na is None:
                na_s = "outside"
            else:
                na_s = f"{'>= ' if past else ''}{na:.2f}% ({na - a:+.2f})"
            ts_s = "not reached" if ts is None else f"{ts:.0f}"
            ratio = "" if ts is None else f"{ts / s:.2f}"
            lines.append(
                f"{e:>2} epochs {'':<6} {key + ' ' + format(s, '.0f'):<8} {a:>11.2f}% {na_s:>18} {ts_s:>22} {ratio:>6}"
            )
    return lines


def plan_queue(args) -> list[tuple[str, int, int]]:
    """Every (recipe, epochs, seed) to run, in order. Without ``--frontier-seeds`` each budget
    runs every seed, seed by seed. With it the two reference budgets (``--ref-epochs``,
    ``--new-ref-epochs``) run every seed first, baseline and new recipe side by side, then the
    other budgets with the first ``--frontier-seeds`` seeds."""
    if args.frontier_seeds is None:
        queue = []
        for seed in args.seeds:
            plan = interleave([("base", e) for e in args.base_epochs], [("new", e) for e in args.new_epochs])
            queue += [(r, e, seed) for r, e in plan]
        return queue
    ref = {"base": args.ref_epochs, "new": args.new_ref_epochs}
    queue = [q for seed in args.seeds for q in (("base", ref["base"], seed), ("new", ref["new"], seed))]
    for seed in args.seeds[: args.frontier_seeds]:
        plan = interleave(
            [("base", e) for e in args.base_epochs if e != ref["base"]],
            [("new", e) for e in args.new_epochs if e != ref["new"]],
        )
        queue += [(r, e, seed) for r, e in plan]
    return queue


def summary(rows: list[dict], ref_epochs: int, new_ref_epochs: int | None, label: str) -> list[str]:
    """The one-line verdict for scripts (means over the seeds both reference budgets share) and
    the frontier check: at every measured budget of either recipe, the new recipe's accuracy at
    the same CPU seconds (interpolated along its frontier) against the baseline's."""
    if new_ref_epochs is None:
        return []
    base = {r["seed"]: r for r in rows if r["recipe"] == "base" and r["epochs"] == ref_epochs}
    new = {r["seed"]: r for r in rows if r["recipe"] == "new" and r["epochs"] == new_ref_epochs}
    seeds = sorted(set(base) & set(new))
    if not seeds:
        return []
    mean = statistics.fmean
    s, b = mean(new[k]["cpu"] for k in seeds), mean(base[k]["cpu"] for k in seeds)
    a, a0 = mean(new[k]["acc"] for k in seeds), mean(base[k]["acc"] for k in seeds)
    lines = [
        f"\ntime-to-{label}: new {s:.0f} CPU s, {label} {b:.0f} CPU s, ratio {s / b:.2f}, "
        f"accuracy new {a:.2f}% vs {label} {a0:.2f}% over {len(seeds)} seeds"
    ]
    lines.append(
        f"target (ratio <= 0.67, accuracy new >= {label}, >= 3 seeds): "
        + ("met" if s / b <= 0.67 and a >= a0 and len(seeds) >= 3 else "not met")
    )
    # the frontier check, on medians per budget (CPU seconds)
    new_pts, base_pts = frontier(rows, "new", "cpu"), frontier(rows, "base", "cpu")
    worse = []
    checked = 0
    for s_b, a_b in base_pts:
        a_n, _ = acc_at(new_pts, s_b)
        if a_n is not None:
            checked += 1
            if a_n < a_b:
                worse.append(f"at the baseline's {s_b:.0f} s: {a_n:.2f}% < {a_b:.2f}%")
    for s_n, a_n in new_pts:
        a_b = interp_acc(base_pts, s_n)
        if a_b is not None:
            checked += 1
            if a_n < a_b:
                worse.append(f"at the new recipe's {s_n:.0f} s: {a_n:.2f}% < {a_b:.2f}%")
    lines.append(
        f"frontier (median CPU s per budget, {checked} points compared): "
        + ("the new recipe is at least as accurate everywhere" if not worse else "less accurate " + "; ".join(worse))
    )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=os.path.join(ROOT, "examples", "fast-cpu.yaml"))
    ap.add_argument("--new", default=os.path.join(ROOT, "examples", "fast-cpu-plus.yaml"))
    ap.add_argument("--base-epochs", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--new-epochs", type=int, nargs="+", default=[1, 2, 3, 4, 6])
    ap.add_argument("--ref-epochs", type=int, default=4, help="the baseline budget whose accuracy is the target")
    ap.add_argument(
        "--new-ref-epochs",
        type=int,
        default=None,
        help="the new recipe's budget for the summary line (time and accuracy against --ref-epochs)",
    )
    ap.add_argument("--label", default="baseline", help="the baseline's name in the summary line")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--frontier-seeds",
        type=int,
        default=None,
        help="run the two reference budgets first with every seed, the other budgets with this many",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each on --threads threads)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=os.path.join(HERE, "figures"), help="folder of results json and figure")
    ap.add_argument("--name", default="speed-frontier")
    ap.add_argument("--resume", action="store_true", help="keep the runs already in OUT/NAME.json; do the rest")
    ap.add_argument("--report-only", action="store_true", help="no new runs: table and figure from OUT/NAME.json")
    ap.add_argument(
        "--merge",
        nargs="+",
        default=[],
        metavar="JSON",
        help="add the runs of other invocations' json (e.g. more budgets of one recipe) to this one",
    )
    args = ap.parse_args()
    json_path = os.path.join(args.out, f"{args.name}.json")
    os.makedirs(args.out, exist_ok=True)

    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, flags {' '.join(info['flags'])}, torch {info['torch']}, "
        f"load average {info['load'][0]:.1f} {info['load'][1]:.1f} {info['load'][2]:.1f}"
    )
    print(
        f"runs: {args.threads} thread(s) each, {args.jobs} at a time, seeds {args.seeds}, extra {args.sets}", flush=True
    )
    names = {"base": f"{os.path.basename(args.base)} (baseline)", "new": os.path.basename(args.new)}
    queue = plan_queue(args)
    rows: list[dict] = []
    if args.resume or args.report_only:
        saved = json.load(open(json_path))
        rows = saved["rows"]
        if args.report_only:  # the caption describes the runs that were made
            for k in ("threads", "jobs", "sets", "base", "new", "ref_epochs", "new_ref_epochs", "label"):
                setattr(args, k, saved["args"].get(k, getattr(args, k)))
            info = saved["machine"]
            names = {"base": f"{os.path.basename(args.base)} (baseline)", "new": os.path.basename(args.new)}
        print(f"{len(rows)} runs read from {json_path}")
    for path in args.merge:
        have = {(r["recipe"], r["epochs"], r["seed"]) for r in rows}
        extra = [r for r in json.load(open(path))["rows"] if (r["recipe"], r["epochs"], r["seed"]) not in have]
        print(f"{len(extra)} runs merged from {path}")
        rows += extra
    done = {(r["recipe"], r["epochs"], r["seed"]) for r in rows}
    lock = threading.Lock()
    tmp = tempfile.mkdtemp(prefix="bench-frontier-")
    todo = [] if args.report_only else [(i, q) for i, q in enumerate(queue) if q not in done]

    def save():
        with open(json_path, "w") as f:
            json.dump({"machine": info, "args": vars(args), "rows": rows}, f, indent=1)

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                i, (recipe, epochs, seed) = todo.pop(0)
            cfg = args.base if recipe == "base" else args.new
            out = os.path.join(tmp, f"{recipe}-{epochs}-{seed}")
            r = run_one(cfg, epochs, seed, args.threads, args.sets, out)
            shutil.rmtree(out, ignore_errors=True)
            r.update(recipe=recipe, epochs=epochs, seed=seed)
            with lock:
                rows.append(r)
                save()
                print(
                    f"  [{i + 1}/{len(queue)}] {names[recipe]:<34} {epochs} ep seed {seed}: test {r['acc']:.2f}%  "
                    f"cpu {r['cpu']:.0f}s  wall {r['wall']:.0f}s (train {r['train_s']:.0f}s, eval {r['eval_s']:.0f}s)  "
                    f"load {r['load'][0]:.1f}->{r['load'][1]:.1f}  {r['precision']}",
                    flush=True,
                )

    try:
        threads = [threading.Thread(target=worker) for _ in range(max(1, args.jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = report(rows, names, args.ref_epochs)
    lines += summary(rows, args.ref_epochs, args.new_ref_epochs, args.label)
    print("\n".join(lines))
    loads = [x for r in rows for x in r["load"]]
    caption = (
        f"{info['cpu']} ({' '.join(info['flags'])}), {args.threads} thread(s) per run, {args.jobs} run(s) at "
        f"a time, load average {min(loads):.1f}-{max(loads):.1f}, seeds {sorted({r['seed'] for r in rows})} "
        f"{' '.join(args.sets)}"
    )
    save()
    plot(rows, names, os.path.join(args.out, f"{args.name}.png"), caption, args.ref_epochs)
    print(f"\nwrote {os.path.join(args.out, args.name + '.png')} and .json")


if __name__ == "__main__":
    main()
