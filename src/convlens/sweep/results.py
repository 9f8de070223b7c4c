"""``convlens sweep table``: one row per trial and group-by tables of means, as the reports built
by hand; CSV and Markdown in the sweep folder, plots, and the best trial's config as ``best.yaml``.

Trial rows come from the Optuna study (the record of every trial's state, including pruned,
failed and retried ones) joined with the trial's run folder where it is on this machine.
Group tables average trials that ran to the end (finished or diverged); pruned trials stopped
early, so they are counted in their own column, not averaged in.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConvlensError
from ..run import is_run
from ..utils import atomic_write_text, read_json, write_json
from .spec import Sweep, load_sweep
from .study import is_database, open_storage, optuna
from .trial import summarize_run, trial_dir

DONE = ("finished", "diverged")

# (key, Markdown header, kind): kinds format the Markdown; CSV keeps the raw numbers
TRIAL_COLUMNS = [
    ("best_val_acc", "best val acc %", "pct"),
    ("best_epoch", "best epoch", "int"),
    ("epochs", "epochs", "int"),
    ("final_train_acc", "final train acc %", "pct"),
    ("gap", "train-val gap %", "pct"),
    ("test_acc", "test acc %", "pct"),
    ("params", "params", "int"),
    ("sec_per_epoch", "s/epoch", "sec"),
    ("total_seconds", "total s", "sec"),
]
GROUP_COLUMNS = [
    ("n", "n", "int"),
    ("pruned", "pruned", "int"),
    ("best_val_acc", "best val acc %", "pct"),
    ("best_val_acc_std", "std", "pct"),
    ("final_train_acc", "final train acc %", "pct"),
    ("gap", "train-val gap %", "pct"),
    ("test_acc", "test acc %", "pct"),
    ("test_acc_std", "std", "pct"),
    ("params", "params", "int"),
    ("sec_per_epoch", "s/epoch", "sec"),
]


@dataclass
class Group:
    keys: list[str]  # short names
    rows: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return "-".join(k.replace(".", "_") for k in self.keys)


@dataclass
class Results:
    sweep: Sweep
    out_dir: Path
    rows: list[dict[str, Any]]
    groups: list[Group]
    best: dict[str, Any] | None = None
    figures: list[dict[str, str]] = field(default_factory=list)
    reported: dict[int, dict[int, float]] = field(default_factory=dict)  # trial -> epoch -> val acc

    @property
    def param_columns(self) -> list[str]:
        return [p.short for p in self.sweep.params]

    def trial_columns(self) -> list[tuple[str, str, str]]:
        return (
            [("trial", "trial", "int")]
            + [(c, c, "param") for c in self.param_columns]
            + [("seed", "seed", "int"), ("status", "status", "text")]
            + TRIAL_COLUMNS
            + [("note", "note", "text")]
        )

    def group_columns(self, g: Group) -> list[tuple[str, str, str]]:
        return [(k, k, "param") for k in g.keys] + GROUP_COLUMNS

    def text(self, fmt: str = "md") -> str:
        """What the command prints: the trial table, then each group table."""
        if fmt == "csv":
            parts = [_csv(self.rows, self.trial_columns())]
            parts += [_csv(g.rows, self.group_columns(g)) for g in self.groups]
            return "\n".join(parts)
        counts: dict[str, int] = {}
        for r in self.rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        out = [
            f"# Sweep {self.sweep.name}",
            "",
            f"{self.sweep.method} over {', '.join(p.describe() for p in self.sweep.params) or 'seeds'}; "
            f"seeds {self.sweep.seeds}; {len(self.rows)} trials: "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + ".",
            "",
            "## Trials",
            "",
            _markdown(self.rows, self.trial_columns()),
        ]
        for g in self.groups:
            out += [
                "",
                f"## Mean by {', '.join(g.keys)}",
                "",
                "Means over trials that ran to the end; std over the trials in the group (seeds, and "
                "any key not grouped by); pruned trials are counted, not averaged.",
                "",
                _markdown(g.rows, self.group_columns(g)),
            ]
        if self.best:
            b = self.best
            out += [
                "",
                f"Best: trial {b['trial']} ({_values_text(b['values'])}, seed {b['seed']}), best val acc "
                f"{100 * b['best_val_acc']:.2f}% at epoch {b['best_epoch']}; config in best.yaml.",
            ]
        return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------
# rows


def load_study(out_dir: Path, sweep: Sweep, storage: str | None = None):
    meta = read_json(out_dir / "sweep.json") if (out_dir / "sweep.json").is_file() else {}
    url = storage
    if url is None:
        url = meta.get("storage")
        if url is None:
            raise ConvlensError(f"{out_dir} has no sweep.json naming its storage; pass --storage URL")
        if is_database(url) and "***" in url:
            raise ConvlensError(
                f"{out_dir}/sweep.json keeps the storage URL without its password ({url}); pass --storage URL"
            )
        if not is_database(url):  # a journal named relative to the sweep folder
            url = str(out_dir / url)
    if not is_database(url):
        if not Path(url).is_file():
            raise ConvlensError(f"the sweep's journal {url} does not exist (no trial has run yet?)")
    op = optuna()
    st = open_storage(url)
    try:
        return op.load_study(study_name=sweep.name, storage=st, sampler=op.samplers.RandomSampler())
    except KeyError:
        raise ConvlensError(f"the storage {meta.get('storage', url)} has no study {sweep.name!r}") from None


def trial_rows(sweep: Sweep, out_dir: Path, study: Any) -> list[dict[str, Any]]:
    TS = optuna().trial.TrialState
    trials = study.get_trials(deepcopy=False)
    rerun_as = {}
    for t in trials:
        history = t.system_attrs.get("retry_history") or []
        if history:
            rerun_as[history[-1]] = t.number
    rows = []
    for t in trials:
        fixed = t.system_attrs.get("fixed_params") or {}
        row: dict[str, Any] = {"trial": t.number}
        for p in sweep.params:
            row[p.short] = p.decode(t.params.get(p.key, fixed.get(p.key)))
        row["seed"] = t.user_attrs.get("seed")
        res = dict(t.user_attrs.get("result") or {})
        run_dir = trial_dir(out_dir, t.number)
        if is_run(run_dir):  # the run folder is the record; the copy in the study
            local = summarize_run(run_dir)  # covers trials whose folder is on another machine
            res.update({k: v for k, v in local.items() if v is not None and k != "total_seconds"})
        row["status"] = _status(t, res, TS)
        for key, _, _ in TRIAL_COLUMNS:
            row[key] = res.get(key)
        row["note"] = _note(t, rerun_as)
        rows.append(row)
    return rows


def _status(t: Any, res: dict[str, Any], TS: Any) -> str:
    if t.state == TS.COMPLETE:
        return res.get("status") if res.get("status") in DONE else "finished"
    if t.state == TS.PRUNED:
        return "pruned"
    if t.state == TS.FAIL:
        if t.user_attrs.get("error"):
            return "failed"
        if res.get("status") == "interrupted":
            return "interrupted"
        return "killed"  # no word from its worker: it died (found by heartbeat or restart)
    return t.state.name.lower()


def _note(t: Any, rerun_as: dict[int, int]) -> str:
    notes = []
    if t.system_attrs.get("retry_history"):
        notes.append(f"rerun of {t.system_attrs['retry_history'][-1]}")
    if t.number in rerun_as:
        notes.append(f"rerun as {rerun_as[t.number]}")
    if t.user_attrs.get("error"):
        notes.append(t.user_attrs["error"][:80])
    return "; ".join(notes)


def group_rows(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Mean (and sample std) per value combination of ``keys`` over trials that ran to the end."""
    buckets: dict[str, tuple[tuple, list[dict[str, Any]]]] = {}
    for r in rows:
        if r["status"] not in DONE and r["status"] != "pruned":
            continue
        vals = tuple(r.get(k) for k in keys)
        buckets.setdefault(json.dumps(vals, sort_keys=True, default=str), (vals, []))[1].append(r)
    out = []
    for vals, members in sorted(buckets.values(), key=lambda b: [_sort_key(v) for v in b[0]]):
        done = [m for m in members if m["status"] in DONE]
        g: dict[str, Any] = dict(zip(keys, vals))
        g["n"] = len(done)
        g["pruned"] = sum(m["status"] == "pruned" for m in members)
        for key in ("best_val_acc", "final_train_acc", "gap", "test_acc", "params", "sec_per_epoch"):
            xs = [m[key] for m in done if m.get(key) is not None]
            g[key] = sum(xs) / len(xs) if xs else None
            if key in ("best_val_acc", "test_acc"):
                g[key + "_std"] = _std(xs)
        out.append(g)
    return out


def _std(xs: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _sort_key(v: Any) -> tuple:
    if v is None:
        return (0, 0, "")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (1, float(v), "")
    return (2, 0, json.dumps(v, sort_keys=True, default=str))


def default_groups(sweep: Sweep) -> list[list[str]]:
    """Each swept key alone (the reports' tables), and all keys together when seeds repeat points.
    Keys drawn from a continuous range take a new value every trial: no group to average."""
    keys = [p.short for p in sweep.params if p.values is not None or p.range.is_int]
    groups = [[k] for k in keys]
    if len(keys) > 1 and len(sweep.seeds) > 1:
        groups.append(keys)
    return groups


def best_trial(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = [r for r in rows if r["status"] in DONE and r.get("best_val_acc") is not None]
    return max(done, key=lambda r: (r["best_val_acc"], -r["trial"])) if done else None


# ----------------------------------------------------------------------------------------------
# the whole result


def build_results(out_dir: str | Path, storage: str | None = None, by: list[list[str]] | None = None) -> Results:
    out_dir = Path(out_dir)
    if not (out_dir / "sweep.yaml").is_file():
        raise ConvlensError(f"{out_dir} is not a sweep folder: it has no sweep.yaml")
    sweep = load_sweep(out_dir / "sweep.yaml")
    study = load_study(out_dir, sweep, storage)
    rows = trial_rows(sweep, out_dir, study)
    groups = []
    for keys in by or default_groups(sweep):
        shorts = [sweep.param(k).short if k != "seed" else "seed" for k in keys]
        groups.append(Group(shorts, group_rows(rows, shorts)))
    best = best_trial(rows)
    res = Results(sweep, out_dir, rows, groups)
    res.reported = {t.number: dict(t.intermediate_values) for t in study.get_trials(deepcopy=False)}
    if best is not None:
        values = {p.key: best[p.short] for p in sweep.params}
        res.best = {
            "trial": best["trial"],
            "seed": best["seed"],
            "values": values,
            "best_val_acc": best["best_val_acc"],
            "best_epoch": best["best_epoch"],
        }
    return res


def write_results(
    out_dir: str | Path, storage: str | None = None, by: list[list[str]] | None = None, plots: bool = True
) -> Results:
    """Build the tables and write them (CSV, Markdown, JSON), the plots and ``best.yaml``."""
    res = build_results(out_dir, storage, by)
    out = res.out_dir
    atomic_write_text(out / "trials.csv", _csv(res.rows, res.trial_columns()))
    for g in res.groups:
        atomic_write_text(out / f"groups-{g.name}.csv", _csv(g.rows, res.group_columns(g)))
    if res.best is not None:
        write_best(res)
    if plots:
        from .figures import draw

        res.figures = draw(res)
    atomic_write_text(out / "results.md", res.text("md"))
    write_json(
        out / "results.json",
        {
            "analysis": "sweep",
            "params": {
                "study": res.sweep.name,
                "method": res.sweep.method,
                "swept": {p.short: p.key for p in res.sweep.params},
                "seeds": res.sweep.seeds,
                "pruner": res.sweep.spec.pruner.name,
            },
            "trials": res.rows,
            "groups": [{"by": g.keys, "rows": g.rows} for g in res.groups],
            "best": res.best,
            "figures": res.figures,
        },
    )
    return res


def write_best(res: Results) -> Path:
    b = res.best
    assert b is not None
    cfg = res.sweep.trial_config(b["values"], b["seed"])
    head = (
        f"# Best trial of sweep {res.sweep.name}: trial {b['trial']} ({_values_text(b['values'])}, seed "
        f"{b['seed']}),\n# best validation accuracy {100 * b['best_val_acc']:.2f}% at epoch {b['best_epoch']}.\n"
        f"# Train it: convlens train {res.out_dir / 'best.yaml'}\n"
    )
    path = res.out_dir / "best.yaml"
    atomic_write_text(path, head + cfg.to_yaml())
    return path


# ----------------------------------------------------------------------------------------------
# formatting


def _values_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_cell(v, 'text')}" for k, v in values.items())


def _cell(v: Any, kind: str) -> str:
    if v is None:
        return "null" if kind == "param" else ""  # a swept value of None (e.g. augmentation off) is a value
    if kind == "pct":
        return f"{100 * v:.2f}"
    if kind == "int":
        if isinstance(v, (int, float)) and abs(v) >= 10000:
            return f"{v:,.0f}"
        return f"{v:.0f}" if isinstance(v, float) else str(v)
    if kind == "sec":
        return f"{v:.2f}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _markdown(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    if not rows:
        return "(no trials yet)"
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    align = "| " + " | ".join("---" if kind in ("text", "param") else "---:" for _, _, kind in columns) + " |"
    body = ["| " + " | ".join(_cell(r.get(k), kind).replace("|", "\\|") for k, _, kind in columns) + " |" for r in rows]
    return "\n".join([head, align, *body])


def _csv(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([k for k, _, _ in columns])
    for r in rows:
        w.writerow([_csv_cell(r.get(k), kind) for k, _, kind in columns])
    return buf.getvalue()


def _csv_cell(v: Any, kind: str) -> Any:
    if v is None:
        return "null" if kind == "param" else ""
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v
