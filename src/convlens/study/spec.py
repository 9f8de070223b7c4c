"""``study.yaml``: the experiments of a study, its budgets and its findings, validated up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import ConfigError, parse_override, read_yaml

STUDY_FILE = "study.yaml"
FULL = "full"  # the budget with no overrides: the report's own recipe
KINDS = ("compare_means", "threshold", "diagnose_has", "classnorms_experts", "strongest_key")
METRICS = (
    "test_acc",
    "best_val_acc",
    "final_train_acc",
    "final_val_acc",
    "gap",
    "best_val_loss",
    "final_train_loss",
    "final_val_loss",
)


class StudyError(ConfigError):
    """A study file that cannot be used; the message names the key and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Experiment(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    file: str  # a config or a sweep file, relative to the study folder
    analyses: list[str] = Field(default_factory=list)  # run on the trained run folder(s)


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
    id: str
    report_says: str
    kind: Literal["compare_means", "threshold", "diagnose_has", "classnorms_experts", "strongest_key"]
    a: Select
    b: Select | None = None  # compare_means
    metric: str = "test_acc"
    expect: str = "greater"  # greater / less; for diagnose_has: present / absent
    value: float | None = None  # threshold
    code: str | None = None  # diagnose_has: a finding code of `convlens diagnose`
    key: str | None = None  # strongest_key: the config key expected to move the metric most
    first: str | None = None  # classnorms_experts: the layer expected to have no experts...
    last: str | None = None  # ...and the one expected to have some
    min_selectivity: float = Field(0.5, gt=0, le=1)  # a filter at least this selective is an expert
    # classnorms_experts, relative instead: the last layer's highest and median selectivity are at
    # least this many times the first layer's (no absolute cutoff)
    above_first: float | None = Field(None, gt=1)
    min_diff: float | None = Field(None, ge=0)  # the study's `noise` when not given

    @model_validator(mode="after")
    def _complete(self) -> Check:
        need = {
            "compare_means": ["b"],
            "threshold": ["value"],
            "diagnose_has": ["code"],
            "classnorms_experts": ["first", "last"],
            "strongest_key": ["key"],
        }[self.kind]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"kind {self.kind} needs {', '.join(missing)}")
        allowed = ("present", "absent") if self.kind == "diagnose_has" else ("greater", "less")
        if self.kind == "diagnose_has" and self.expect == "greater":
            self.expect = "present"
        if self.kind in ("compare_means", "threshold", "diagnose_has") and self.expect not in allowed:
            raise ValueError(f"expect {self.expect!r} is not one of {', '.join(allowed)}")
        if self.metric not in METRICS:
            raise ValueError(f"metric {self.metric!r} is not one of {', '.join(METRICS)}")
        return self


class StudySpec(_Strict):
    name: str
    report: str = ""
    experiments: list[Experiment]
    budgets: dict[str, Budget] = Field(default_factory=dict)
    noise: float = Field(0.02, ge=0)  # the smallest difference counted when seeds give no estimate
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
    for c in spec.findings:
        for side in (c.a, c.b):
            if side is not None and side.experiment not in ids:
                problems.append(f"`findings.{c.id}`: experiment {side.experiment!r} is not one of {', '.join(ids)}")
    return problems
