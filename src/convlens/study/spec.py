"""``study.yaml``: the experiments of a study, its budgets and its findings, validated up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import ConfigError, parse_override, read_yaml

STUDY_FILE = "study.yaml"
FULL = "full"  # the budget with no overrides: the report's own recipe
KINDS = (
    "compare_means",
    "magnitude",
    "best_point",
    "strongest_key",
    "diagnose_has",
    "per_class",
    "confusion",
    "class_preference",
    "topk_class",
    "layer_stat",
    "ablation",
    "receptive_field",
    "not_checkable",
)
# accuracies measured on a number of images (the binomial error applies), then the other numbers
ACCURACIES = ("test_acc", "best_val_acc", "final_val_acc", "final_train_clean_acc", "clean_gap", "clean_overfit")
METRICS = (
    *ACCURACIES,
    "final_train_acc",
    "gap",
    "best_val_loss",
    "final_train_loss",
    "final_val_loss",
    "params",
    "clean_gap_rise",
    "val_acc_rise",
    "val_acc_late_rise",
    "train_loss_ups",
)
EXPECT = ("greater", "less", "similar", "not_greater")
NEEDS = {
    "compare_means": ["b"],
    "magnitude": ["value"],
    "best_point": [],
    "strongest_key": ["key", "high", "low"],
    "diagnose_has": ["code"],
    "per_class": ["classes"],
    "confusion": ["mode"],
    "class_preference": ["layer", "classes", "against"],
    "topk_class": ["layer", "classes"],
    "layer_stat": ["analysis", "field", "reduce", "layer", "value"],
    "ablation": ["mode"],
    "receptive_field": ["layers", "values"],
    "not_checkable": ["reason"],
}
CONFUSION_MODES = ("top_pair", "top_cross_pair", "within_groups")
ABLATION_MODES = ("overall_drop", "vehicles_vs_animals", "some_class_gains", "vehicles_to_animals", "pair_rises")
REDUCE = ("median", "mean", "max", "count", "spread")


class StudyError(ConfigError):
    """A study file that cannot be used; the message names the key and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Experiment(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    file: str  # a config or a sweep file, relative to the study folder
    analyses: list[str] = Field(default_factory=list)  # run on the trained run folder(s)
    # the options of each analysis, e.g. {topk: {k: 20, score: sum}, ablate: {filters: {conv1: [0, 1]}}}
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _options(self) -> Experiment:
        extra = [k for k in self.options if k not in self.analyses]
        if extra:
            raise ValueError(f"options for {', '.join(extra)}, which are not in analyses ({', '.join(self.analyses)})")
        return self


class Budget(_Strict):
    note: str = ""  # what the budget changes, said in words (FINDINGS.md quotes it)
    set: dict[str, Any] = Field(default_factory=dict)  # overrides of every experiment
    experiments: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per experiment id
    skip: list[str] = Field(default_factory=list)  # experiment ids this budget leaves out
    seeds: list[int] | None = None  # the seeds every point of a sweep experiment runs with

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(set(v)) != len(v) or min(v) < 0):
            raise ValueError(f"seeds must be distinct seeds >= 0, at least one; got {v}")
        return v


class Select(_Strict):
    experiment: str
    where: dict[str, Any] = Field(default_factory=dict)  # dotted config keys -> values


class Check(_Strict):
    """One finding of the report. ``kind`` says how it is judged (see ``check.py``); a finding that
    cannot be checked is ``not_checkable`` with its ``reason``."""

    id: str
    report_says: str
    kind: Literal[KINDS]  # type: ignore[valid-type]
    a: Select | None = None  # the runs the finding is about (every kind but not_checkable)
    b: Select | None = None  # compare_means, per_class: the runs compared against
    metric: str = "test_acc"
    # greater, less, similar, not_greater (magnitude: similar by default); diagnose_has: present, absent
    expect: str = "greater"
    value: float | None = None  # the reported number (magnitude, layer_stat), or difference (compare_means)
    # how far the obtained number may lie from ``value`` (similar, not_greater, magnitude): one number
    # for every budget, or one per budget; a budget without one is not judged (not enough evidence)
    tolerance: float | dict[str, float] | None = None
    note: str = ""  # how the check reads the report (shown with the verdict)
    # the budgets whose runs can judge the finding (default: every budget); at another budget the
    # numbers are shown and the verdict is not enough evidence (e.g. a network trained 3 epochs)
    budgets: list[str] | None = None
    reason: str | None = None  # not_checkable: why
    code: str | None = None  # diagnose_has: a finding code of `convlens diagnose`
    key: str | None = None  # strongest_key: the config key expected to move the metric most...
    high: Any = None  # ...its value with the higher metric...
    low: Any = None  # ...and the one with the lower
    among: dict[str, list[Any]] = Field(default_factory=dict)  # best_point: only these points compete
    classes: list[str] | None = None  # per_class, class_preference, topk_class: the reported classes
    against: list[str] | None = None  # per_class, class_preference: the classes they beat
    pair: list[str] | None = None  # confusion, ablation: two classes
    mode: str | None = None  # confusion, ablation: which statistic
    analysis: str | None = None  # layer_stat: stats, topk or classnorms
    field: str | None = None  # layer_stat: a per-filter list of that analysis' layer result
    reduce: str | None = None  # layer_stat: median, mean, max, count (of a list of indices), spread
    layer: str | None = None  # layer_stat, class_preference, topk_class
    compare_layer: str | None = None  # layer_stat: the statistic is layer's over compare_layer's (a ratio)
    layers: list[str] | None = None  # receptive_field
    values: list[float] | None = None  # receptive_field: the reported sizes

    @model_validator(mode="after")
    def _complete(self) -> Check:
        missing = [k for k in NEEDS[self.kind] if getattr(self, k) is None]
        if self.kind != "not_checkable" and self.a is None:
            missing.insert(0, "a")
        if missing:
            raise ValueError(f"kind {self.kind} needs {', '.join(missing)}")
        if self.kind == "magnitude" and "expect" not in self.model_fields_set:
            self.expect = "similar"  # a reported number: obtained within the tolerance of it
        if self.kind == "diagnose_has":
            self.expect = "present" if self.expect == "greater" else self.expect
            allowed: tuple[str, ...] = ("present", "absent")
        else:
            allowed = EXPECT
        if self.expect not in allowed:
            raise ValueError(f"expect {self.expect!r} is not one of {', '.join(allowed)}")
        if self.metric not in METRICS:
            raise ValueError(f"metric {self.metric!r} is not one of {', '.join(METRICS)}")
        modes = {"confusion": CONFUSION_MODES, "ablation": ABLATION_MODES}.get(self.kind)
        if modes and self.mode not in modes:
            raise ValueError(f"mode {self.mode!r} is not one of {', '.join(modes)}")
        if self.kind == "layer_stat" and self.reduce not in REDUCE:
            raise ValueError(f"reduce {self.reduce!r} is not one of {', '.join(REDUCE)}")
        if self.mode in ("top_pair", "top_cross_pair", "pair_rises") and (not self.pair or len(self.pair) != 2):
            raise ValueError(f"mode {self.mode} needs pair: two class names")
        if self.kind == "receptive_field" and len(self.layers or []) != len(self.values or []):
            raise ValueError("receptive_field needs as many values as layers")
        if self.expect in ("similar", "not_greater") and self.tolerance is None:
            raise ValueError(f"expect {self.expect} needs a tolerance")
        return self

    def tolerance_for(self, budget: str) -> float | None:
        """The tolerance at ``budget``: the one number, or that budget's entry (None: not judged)."""
        if isinstance(self.tolerance, dict):
            return self.tolerance.get(budget)
        return self.tolerance


class StudySpec(_Strict):
    name: str
    report: str = ""
    experiments: list[Experiment]
    budgets: dict[str, Budget] = Field(default_factory=dict)
    # the seed standard deviation assumed where no point was repeated (seeds give none)
    noise: float = Field(0.01, ge=0)
    findings: list[Check] = Field(default_factory=list)


class Study:
    """A validated study and the folder it lives in."""

    def __init__(self, spec: StudySpec, folder: Path):
        self.spec, self.folder = spec, folder

    @property
    def name(self) -> str:
        return self.spec.name

    def experiment(self, eid: str) -> Experiment:
        for e in self.spec.experiments:
            if e.id == eid:
                return e
        raise StudyError(f"no experiment {eid!r} in {self.folder / STUDY_FILE}; experiments: {self.ids()}")

    def ids(self) -> str:
        return ", ".join(e.id for e in self.spec.experiments)

    def budget(self, name: str) -> Budget:
        if name == FULL:
            return Budget(note="the report's recipe, unchanged")
        if name not in self.spec.budgets:
            allowed = ", ".join([FULL, *self.spec.budgets])
            raise StudyError(f"--budget {name!r} is not defined in {self.folder / STUDY_FILE}; allowed: {allowed}")
        return self.spec.budgets[name]

    def overrides(self, budget: str, eid: str, sets: list[str]) -> dict[str, Any]:
        """The overrides of one experiment: the budget's, its per-experiment ones, then ``sets``:
        ``KEY=VALUE`` for every experiment, ``ID:KEY=VALUE`` for experiment ``ID`` only (after the
        unscoped ones, so ``--set data.root=A --set cells:data.root=B`` gives cells B)."""
        b = self.budget(budget)
        out = dict(b.set)
        out.update(b.experiments.get(eid, {}))
        scoped = [self.scope(s) for s in sets]
        out.update(dict(parse_override(s) for scope, s in scoped if scope is None))
        out.update(dict(parse_override(s) for scope, s in scoped if scope == eid))
        return out

    def scope(self, item: str) -> tuple[str | None, str]:
        """``"cells:data.root=X"`` -> ``("cells", "data.root=X")``; no ``ID:`` before the key -> None."""
        key = item.partition("=")[0]
        if ":" not in key:
            return None, item
        eid, _, rest = item.partition(":")
        if eid not in [e.id for e in self.spec.experiments]:
            raise StudyError(f"--set {item!r}: {eid!r} is not an experiment of {self.name}; experiments: {self.ids()}")
        return eid, rest

    def is_sweep(self, e: Experiment) -> bool:
        raw = read_yaml(self.folder / e.file)
        return isinstance(raw, dict) and "params" in raw


def load_study(folder: str | Path) -> Study:
    """Read ``FOLDER/study.yaml`` (or a study file) and check it: every file exists, every id and
    every check's experiment is known. Raises :class:`StudyError` naming each problem."""
    path = Path(folder)
    if path.is_dir():
        path = path / STUDY_FILE
    if not path.is_file():
        raise StudyError(f"{path} does not exist: a study folder holds a {STUDY_FILE}")
    try:  # the config reader: invalid YAML, non-UTF-8 and empty files are errors naming the file
        raw = read_yaml(path)
    except ConfigError as exc:
        raise StudyError(str(exc)) from None
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(top level)"
            lines.append(f"- `{key}`: {e['msg']}" + (f" (got {e['input']!r})" if e["type"] != "missing" else ""))
        raise StudyError(f"invalid study file {path}:\n" + "\n".join(lines)) from None
    study = Study(spec, path.parent)
    problems = _problems(study)
    if problems:
        raise StudyError(f"invalid study file {path}:\n" + "\n".join(f"- {p}" for p in problems))
    return study


def _problems(study: Study) -> list[str]:
    spec, problems = study.spec, []
    ids = [e.id for e in spec.experiments]
    if len(set(ids)) != len(ids):
        problems.append(f"`experiments`: ids repeat ({', '.join(ids)})")
    for e in spec.experiments:
        if not (study.folder / e.file).is_file():
            problems.append(f"`experiments.{e.id}.file`: {e.file} is not a file in {study.folder}")
    for name, b in spec.budgets.items():
        for eid in [*b.experiments, *b.skip]:
            if eid not in ids:
                problems.append(f"`budgets.{name}`: {eid!r} is not an experiment id ({', '.join(ids)})")
    seen: set[str] = set()
    for c in spec.findings:
        if c.id in seen:
            problems.append(f"`findings`: id {c.id!r} repeats")
        seen.add(c.id)
        for side in (c.a, c.b):
            if side is not None and side.experiment not in ids:
                problems.append(f"`findings.{c.id}`: experiment {side.experiment!r} is not one of {', '.join(ids)}")
    return problems
