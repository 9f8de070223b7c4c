"""The sweep file: a base config, the dotted keys to vary and how, seeds, budget, pruner, storage.

::

    name: cs7015-batch-lr
    base: net1.yaml                     # a config file (relative to this file), and/or
    config: {train: {epochs: 30}}       # an inline config, merged over the base
    method: grid                        # grid | random | tpe
    params:
      train.batch_size: [128, 256, 512] # grid: every combination runs exactly once
      train.optimizer.lr: [0.01, 0.001]
      # random / tpe also take ranges:  {low: 1e-4, high: 0.1, log: true}
    seeds: 2                            # each point once per seed (or a list: [0, 7])
    budget: {trials: 20, time: 2h}      # random/tpe: points to sample; any: stop starting trials
    pruner: median                      # none | median | halving (or a mapping with options)

Everything is checked here, before any trial runs: unknown keys (with the closest valid ones),
empty grids, ranges with low > high, and the full config of every grid point.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import ExperimentConfig, known_keys, load_config, read_yaml, set_dotted
from ..errors import ConfigError


class SweepError(ConfigError):
    """A sweep file is invalid; the message names the key, the value and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(_Strict):
    """A continuous or integer range for random search and TPE."""

    low: float
    high: float
    log: bool = Field(False, description="Sample uniformly in log space (low must be > 0)")
    step: float | None = Field(None, gt=0, description="Quantisation step (not with log)")
    type: Literal["int", "float"] | None = Field(
        None, description="Default: int when low, high (and step) are whole numbers"
    )

    @model_validator(mode="after")
    def _check(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low > high ({_num(self.low)} > {_num(self.high)}); give low <= high")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got low={_num(self.low)}")
        if self.log and self.step is not None:
            raise ValueError("give either log: true or a step, not both")
        return self

    @property
    def is_int(self) -> bool:
        if self.type is not None:
            return self.type == "int"
        return all(float(v).is_integer() for v in (self.low, self.high, self.step or 1))


class PrunerSpec(_Strict):
    name: Literal["none", "median", "halving"] = "none"
    startup_trials: int = Field(4, ge=0, description="median: trials that finish before any is pruned")
    warmup_epochs: int = Field(1, ge=0, description="median: epochs every trial runs before it can be pruned")
    min_epochs: int = Field(1, ge=1, description="halving: epochs before the first rung")
    reduction: int = Field(3, ge=2, description="halving: a rung keeps the best 1/reduction")


class Budget(_Strict):
    trials: int | None = Field(None, gt=0, description="random/tpe: points to sample, each run once per seed")
    time: float | None = Field(None, gt=0, description="Seconds (or '90m', '2h') after which no trial starts")

    @field_validator("time", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if isinstance(v, str):
            m = re.fullmatch(r"\s*([0-9.]+)\s*([smh]?)\s*", v)
            if not m:
                raise ValueError(f"a duration is seconds or a number with s, m or h (e.g. 90m), got {v!r}")
            return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        return v


class HeartbeatSpec(_Strict):
    interval: int = Field(10, gt=0, description="Seconds between a running trial's heartbeats (database storages)")
    grace: int = Field(60, gt=0, description="A trial with no heartbeat for this long is failed and retried")


class SweepSpec(_Strict):
    name: str = Field(..., min_length=1)
    base: str | None = Field(None, description="Base config file, relative to the sweep file")
    config: dict[str, Any] = Field(default_factory=dict, description="Inline config, merged over the base")
    method: Literal["grid", "random", "tpe"] = "grid"
    params: dict[str, Any] = Field(default_factory=dict, description="Dotted config key -> list or range")
    seeds: int | list[int] = Field(1, description="Seeds per point: a count (from the config's seed) or a list")
    budget: Budget = Field(default_factory=Budget)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    retries: int = Field(2, ge=0, description="Times a failed or killed trial is run again")
    heartbeat: HeartbeatSpec = Field(default_factory=HeartbeatSpec)
    storage: str | None = Field(None, description="Optuna storage URL; default: a journal file in the sweep folder")
    out: str | None = Field(None, description="Sweep folder; default sweeps/<name>")
    sampler_seed: int = Field(0, ge=0)

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_name(cls, v: Any) -> Any:
        if v is None or v is False:
            return {"name": "none"}
        return {"name": v} if isinstance(v, str) else v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"seeds must be >= 1, got {v}")
        if isinstance(v, list):
            if not v:
                raise ValueError("seeds is an empty list; give at least one seed")
            if len(set(v)) != len(v):
                raise ValueError(f"seeds has repeated values: {v}")
            if min(v) < 0:
                raise ValueError(f"seeds must be >= 0, got {v}")
        return v


# ----------------------------------------------------------------------------------------------
# resolved sweep

LOCAL_KEYS = [("data", "root"), ("data", "download"), ("train", "threads"), ("train", "device")]


@dataclass(frozen=True)
class Param:
    """One swept key: explicit ``values`` (a grid axis or categorical choices) or a ``range``."""

    key: str
    short: str
    values: tuple[Any, ...] | None = None
    range: Range | None = None

    @property
    def encoded(self) -> bool:
        """Optuna stores only scalars: lists and mappings travel as JSON strings."""
        return self.values is not None and any(isinstance(v, (list, dict)) for v in self.values)

    def choices(self) -> list[Any]:
        assert self.values is not None
        return [json.dumps(v, sort_keys=True) for v in self.values] if self.encoded else list(self.values)

    def decode(self, stored: Any) -> Any:
        return json.loads(stored) if self.encoded and isinstance(stored, str) else stored

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this parameter (fixed for queued trials, sampled otherwise)."""
        if self.values is not None:
            return self.decode(trial.suggest_categorical(self.key, self.choices()))
        r = self.range
        assert r is not None
        if r.is_int:
            return trial.suggest_int(self.key, int(r.low), int(r.high), step=int(r.step or 1), log=r.log)
        return trial.suggest_float(self.key, r.low, r.high, step=r.step, log=r.log)

    def describe(self) -> str:
        if self.values is not None:
            return f"{self.key}: {list(self.values)}"
        r = self.range
        return f"{self.key}: {_num(r.low)} to {_num(r.high)}{' (log)' if r.log else ''}"


@dataclass
class Sweep:
    spec: SweepSpec
    source: str
    base: dict[str, Any]  # the resolved base config, as a plain dict
    params: list[Param]
    seeds: list[int]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def method(self) -> str:
        return self.spec.method

    def out_dir(self, out: str | Path | None = None) -> Path:
        return Path(out or self.spec.out or Path("sweeps") / self.name)

    def param(self, name: str) -> Param:
        for p in self.params:
            if name in (p.key, p.short):
                return p
        raise SweepError(
            f"{name!r} is not a swept key of sweep {self.name!r}; swept: "
            f"{', '.join(p.short for p in self.params) or '(none)'}"
        )

    # -- grid ------------------------------------------------------------------------------------
    def points(self) -> list[dict[str, Any]]:
        """Grid points in file order, the first key varying slowest (like the reports' RunBuilder)."""
        return [{p.key: p.values[i] for p, i in zip(self.params, idx)} for idx in self._grid_indices()]  # type: ignore[index]

    def _grid_indices(self) -> list[tuple[int, ...]]:
        return list(itertools.product(*[range(len(p.values)) for p in self.params]))  # type: ignore[arg-type]

    def cells(self) -> list[dict[str, Any]]:
        """What a grid runs: every point once per seed, as ``{"cell", "point", "seed", "params"}``
        where ``params`` are the values as Optuna stores them."""
        out = []
        for p, idx in enumerate(self._grid_indices()):
            params = {q.key: q.choices()[i] for q, i in zip(self.params, idx)}
            for seed in self.seeds:
                out.append({"cell": len(out), "point": p, "seed": seed, "params": params})
        return out

    # -- configs ---------------------------------------------------------------------------------
    def trial_raw(self, values: dict[str, Any], seed: int, threads: int | None = None) -> dict[str, Any]:
        raw = copy.deepcopy(self.base)
        for key, value in values.items():
            set_dotted(raw, key, copy.deepcopy(value))
        raw["seed"] = seed
        board = raw.setdefault("train", {}).setdefault("tensorboard", {})  # the HParams tab shows the swept keys
        board["hparams"] = list(dict.fromkeys([*board.get("hparams", []), *values]))
        if threads is not None and "train.threads" not in values and self.base["train"].get("threads") is None:
            raw["train"]["threads"] = threads
        return raw

    def trial_config(self, values: dict[str, Any], seed: int, threads: int | None = None) -> ExperimentConfig:
        return load_config(self.trial_raw(values, seed, threads))

    def fingerprint(self) -> str:
        """What defines the set of trials: a sweep resumed or joined must match it. Where the data
        lies and which device or how many threads train it may differ between machines."""
        base = copy.deepcopy(self.base)
        for section, key in LOCAL_KEYS:
            base[section].pop(key, None)
        what = {
            "method": self.method,
            "base": base,
            "seeds": self.seeds,
            "params": [[p.key, list(p.values) if p.values is not None else p.range.model_dump()] for p in self.params],
        }
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        """The sweep with its base config inlined: enough to rerun it anywhere."""
        d = self.spec.model_dump(mode="json", exclude_none=True)
        d.pop("base", None)
        d["config"] = self.base
        d["seeds"] = self.seeds
        return yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=100)


# ----------------------------------------------------------------------------------------------
# loading and validation


def load_sweep(source: str | Path | dict[str, Any], base_dir: str | Path | None = None) -> Sweep:
    """Read and check a sweep file (or dict). Raises :class:`SweepError` naming every problem."""
    if isinstance(source, dict):
        raw, label = copy.deepcopy(source), "(dict)"
        folder = Path(base_dir) if base_dir else Path.cwd()
    else:
        path = Path(source)
        if not path.is_file():
            raise SweepError(f"sweep file {path} does not exist")
        raw, label, folder = read_yaml(path), str(path), path.resolve().parent
        if isinstance(raw, dict):
            raw.setdefault("name", path.stem)
    if not isinstance(raw, dict):
        raise SweepError(f"invalid sweep file {label}: the top level must be a mapping")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise SweepError(_format(err, label)) from None

    base = _base_config(spec, folder, label)
    problems: list[str] = []
    params = _params(spec, base, problems)
    seeds = spec.seeds if isinstance(spec.seeds, list) else [base.seed + i for i in range(spec.seeds)]
    if spec.method == "grid" and spec.budget.trials is not None:
        problems.append(
            "`budget.trials`: a grid runs every combination once; cap it with budget.time, or use method: random"
        )
    if spec.method != "grid" and spec.budget.trials is None and spec.budget.time is None:
        problems.append(f"`budget`: method {spec.method} needs budget.trials (points to sample) or budget.time")
    if not spec.params and len(seeds) == 1:
        problems.append("`params`: the sweep varies nothing; give at least one key (or several seeds)")
    if "seed" in spec.params:
        problems.append(
            "`params.seed`: give seeds with `seeds:` (a count or a list), which runs every point once per seed"
        )
    if problems:
        raise SweepError(f"invalid sweep file {label}:\n" + "\n".join(f"- {p}" for p in problems))

    sweep = Sweep(spec, label, _plain(base), params, seeds)
    _check_points(sweep, label)
    return sweep


def _format(err: ValidationError, label: str) -> str:
    lines = []
    fields = list(SweepSpec.model_fields)
    for e in err.errors():
        loc = [str(p) for p in e["loc"] if not str(p).startswith("function-")]
        key = ".".join(loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc[-1], fields if len(loc) == 1 else [], n=2, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            lines.append(f"- unknown key `{key}`{hint}" + (f" Allowed: {', '.join(fields)}." if len(loc) == 1 else ""))
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            shown = "" if isinstance(got, dict) or e["type"] == "missing" or repr(got) in msg else f" (got {got!r})"
            lines.append(f"- `{key}`: {msg}{shown}")
    return f"invalid sweep file {label}:\n" + "\n".join(lines)


def _base_config(spec: SweepSpec, folder: Path, label: str) -> ExperimentConfig:
    raw: dict[str, Any] = {}
    if spec.base is not None:
        path = Path(spec.base)
        path = path if path.is_absolute() else folder / path
        if not path.is_file():
            raise SweepError(f"invalid sweep file {label}: `base`: config file {path} does not exist")
        raw = read_yaml(path)
    _merge(raw, copy.deepcopy(spec.config))
    raw.pop("meta", None)
    try:
        cfg = load_config(raw)
    except ConfigError as exc:
        raise SweepError(f"invalid sweep file {label}: the base config is invalid.\n{exc}") from None
    if not cfg.data.val_fraction:
        raise SweepError(
            f"invalid sweep file {label}: trials are ranked by validation accuracy, but the base "
            "config has data.val_fraction: 0; set it above 0 (e.g. 0.1)"
        )
    return cfg


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _plain(cfg: ExperimentConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    d.pop("meta", None)
    return d


def valid_keys(cfg: ExperimentConfig, presets: list[str] | None = None) -> list[str]:
    """Every key a sweep can vary for this base config: the schema, preset options, layer fields."""
    from ..models.registry import PRESETS
    from ..models.spec import layer_fields

    keys = [k for k in known_keys() if k != "meta"]
    names = {cfg.model.preset, *(presets or [])} - {None}
    for name in sorted(names):
        if name in PRESETS:
            keys += [f"model.options.{o}" for o in PRESETS[name].defaults() if f"model.options.{o}" not in keys]
    if cfg.model.layers is not None:
        keys += ["model.options.width", "model.options.multiplier"]
        for i, layer in enumerate(cfg.model.layers):
            keys += [f"model.layers.{i}.{f}" for f in layer_fields(layer.type) if f != "type"]
    return keys


def closest_keys(key: str, keys: list[str], n: int = 3) -> list[str]:
    last = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, keys, n=n, cutoff=0.6)
    close += [k for k in keys if k.rsplit(".", 1)[-1] == last and k not in close]
    if not close:
        close = difflib.get_close_matches(key, keys, n=n, cutoff=0.4)
    return close[:n]


def _params(spec: SweepSpec, base: ExperimentConfig, problems: list[str]) -> list[Param]:
    swept_presets = spec.params.get("model.preset")
    presets = [p for p in swept_presets if isinstance(p, str)] if isinstance(swept_presets, list) else None
    keys = valid_keys(base, presets)
    out = []
    for key, value in spec.params.items():
        where = f"`params.{key}`"
        if key not in keys:
            close = closest_keys(key, keys)
            hint = f"; closest valid keys: {', '.join(close)}" if close else ""
            problems.append(f"{where}: no such config key{hint}")
            continue
        if isinstance(value, list):
            if not value:
                problems.append(f"{where}: an empty list; a grid axis needs at least one value")
                continue
            if any(isinstance(v, (list, dict)) for v in value):
                dumped = [json.dumps(v, sort_keys=True) for v in value]
            else:
                dumped = [repr(v) for v in value]
            if len(set(dumped)) != len(dumped):
                problems.append(f"{where}: repeated values {value}; each value runs once per seed already")
                continue
            out.append(Param(key, key, values=tuple(value)))
        elif isinstance(value, dict):
            if spec.method == "grid":
                problems.append(
                    f"{where}: method grid needs a list of values, got a range {value}; "
                    "list the values, or use method: random or tpe"
                )
                continue
            try:
                out.append(Param(key, key, range=Range.model_validate(value)))
            except ValidationError as err:
                for e in err.errors():
                    sub = ".".join(str(p) for p in e["loc"])
                    problems.append(f"{where}{'.' + sub if sub else ''}: {e['msg'].removeprefix('Value error, ')}")
        else:
            problems.append(f"{where}: give a list of values or a range {{low: ..., high: ...}}, got {value!r}")
    shorts = short_names([p.key for p in out])
    return [Param(p.key, shorts[p.key], p.values, p.range) for p in out]


# column names of the result tables: a swept key is never shortened to one of them
RESERVED = {
    "trial",
    "seed",
    "status",
    "note",
    "n",
    "pruned",
    "best_val_acc",
    "best_val_acc_std",
    "best_epoch",
    "epochs",
    "final_train_acc",
    "gap",
    "test_acc",
    "test_acc_std",
    "params",
    "sec_per_epoch",
    "total_seconds",
}


def short_names(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix that tells each key apart: train.optimizer.lr -> lr."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            if sum(k == cand or k.endswith("." + cand) for k in keys) == 1 and cand not in RESERVED:
                out[key] = cand
                break
        else:
            out[key] = key
    return out


def _check_points(sweep: Sweep, label: str) -> None:
    """Validate the full config of every grid point (random/tpe: every choice and each range end)."""
    if sweep.method == "grid":
        combos = sweep.points()
    else:
        combos = []
        for p in sweep.params:
            ends = list(p.values) if p.values is not None else [_end(p.range, "low"), _end(p.range, "high")]
            combos += [{p.key: v} for v in ends]
        for end in ("low", "high"):
            combos.append({p.key: _end(p.range, end) for p in sweep.params if p.range is not None})
    seen = set()
    for i, values in enumerate(combos):
        sig = json.dumps(values, sort_keys=True, default=str)
        if sig in seen:
            continue
        seen.add(sig)
        try:
            cfg = sweep.trial_config(values, sweep.seeds[0])
        except ConfigError as exc:
            what = ", ".join(f"{k}={v!r}" for k, v in values.items())
            kind = f"grid point {i} ({what})" if sweep.method == "grid" else f"the value(s) {what}"
            detail = str(exc).split("\n", 1)[-1]
            raise SweepError(f"invalid sweep file {label}: {kind} does not make a valid config:\n{detail}") from None
        if not cfg.data.val_fraction:
            raise SweepError(
                f"invalid sweep file {label}: data.val_fraction=0 leaves no validation split, "
                "which trials are ranked by"
            )


def _end(r: Range, which: str) -> float | int:
    v = getattr(r, which)
    return int(v) if r.is_int else v


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"
