"""Study files (TOML): which log, which tasks, which formula, baseline, split and search.

A study is plain data; :func:`load_study` validates it and resolves the log path relative
to the study file.  Unknown keys are errors (a typo must not silently fall back to a
default).  See ``studies/demo.toml`` for a commented example of every key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, StudyError

__all__ = ["Task", "Study", "load_study", "parse_study", "METRICS"]

METRICS = ("auc", "gauc")


@dataclass(frozen=True)
class Task:
    name: str
    score: str
    label: str
    weight: float = 1.0  # business weight w_k >= 0
    metric: str = "auc"  # "auc" or "gauc"
    max_drop: float | None = None  # guardrail: largest allowed drop vs the baseline
    score_scale: str = "prob"  # "prob" or "logit"
    sign: int = 1  # +1: positives should rank high; -1 (dislike...): low -> M_k = 1 - AUC, LTR monotone decreasing


@dataclass
class Study:
    name: str
    log: Path
    tasks: list[Task]
    group: str | None = None
    time: str | None = None
    weight: str | None = None
    formula: str = "multiplicative"
    reference: str | None = None
    fusion_options: dict[str, Any] = field(default_factory=dict)  # eps, buckets, rank_scope
    baseline: dict[str, float] = field(default_factory=dict)
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    gauc_weighting: str = "rows"
    split: dict[str, Any] | None = None  # {"by", "holdout", "seed"} (+ "select", "column" when set)
    search: dict[str, Any] = field(default_factory=dict)  # method, budget, seed, population, patience
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # [search.<method>]
    sections: dict[str, Any] = field(default_factory=dict)  # other tables ([ltr], [select], ...)
    path: Path | None = None

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]


_TOP = {"name", "log", "group", "time", "weight", "tasks", "fusion", "objective", "split", "search"}
_OPEN_SECTIONS = {"ltr", "select", "report", "train"}  # read by the commands that use them
_TASK = {"name", "score", "label", "weight", "metric", "max_drop", "score_scale", "sign"}
_FUSION = {"formula", "reference", "baseline", "bounds", "eps", "buckets", "rank_scope"}
_OBJECTIVE = {"gauc_weighting"}
_SPLIT = {"by", "holdout", "select", "seed", "column"}
_SEARCH = {"method", "budget", "seed", "population", "patience", "min_delta", "warm_start", "screening",
           "screening_keep"}

SEARCH_DEFAULTS = {"method": "cem", "budget": 600, "seed": 0, "population": 32, "patience": 0,
                   "min_delta": 1e-6}


def _parse_split(raw: dict, src: str, time: str | None, group: str | None) -> dict:
    """[split]: by, holdout (share held out for the report), select (share on which A/B arms
    are picked), seed, column (an explicit 0/1 holdout column instead of a holdout share)."""
    column = raw.get("column")
    if column is not None and (not isinstance(column, str) or not column):
        raise StudyError(f"{src}: [split] column must be a column name, got {column!r}")
    if column is not None and "holdout" in raw:
        raise StudyError(f"{src}: [split] holdout and column are exclusive: column {column!r} already says "
                         f"which rows are held out")
    holdout = None if column else _num(src, "[split] holdout", raw.get("holdout", 0.3))
    select = _num(src, "[split] select", raw.get("select", 0.0))
    if holdout is not None and not 0.0 < holdout < 1.0:
        raise StudyError(f"{src}: [split] holdout must be in (0, 1), got {holdout!r}")
    if not 0.0 <= select < 1.0 or (holdout is not None and holdout + select >= 1.0):
        raise StudyError(f"{src}: [split] select must be in [0, 1) and holdout + select < 1, got select = "
                         f"{select!r}" + (f", holdout = {holdout!r}" if holdout is not None else ""))
    by = raw.get("by", "time" if time else "group")
    if by not in ("time", "group", "random"):
        raise StudyError(f"{src}: [split] by must be \"time\", \"group\" or \"random\", got {by!r}")
    if "by" in raw or not column or select > 0:  # `by` is used: its column must exist
        if by == "time" and not time:
            raise StudyError(f"{src}: [split] by = \"time\" needs a 'time' column in the study")
        if by == "group" and not group:
            raise StudyError(f"{src}: [split] by = \"group\" needs a 'group' column in the study")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise StudyError(f"{src}: [split] seed must be an integer, got {seed!r}")
    out = {"by": by, "holdout": holdout, "seed": seed}
    if select:
        out["select"] = select
    if column:
        out["column"] = column
    return out


def _unknown(where: str, got: dict, allowed: set, src: str) -> None:
    for key in got:
        if key not in allowed:
            raise InputError(f"{src}: unknown key {key!r} in {where} (allowed: {', '.join(sorted(allowed))})")


def _num(src: str, where: str, value: Any, lo: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{src}: {where} must be a number, got {value!r}")
    if lo is not None and value < lo:
        raise InputError(f"{src}: {where} must be >= {lo}, got {value!r}")
    return float(value)


def load_study(path: str | Path) -> Study:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: study file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    return parse_study(data, path)


def parse_study(data: dict, path: Path | None = None) -> Study:
    src = str(path) if path else "<study>"
    base = path.parent if path else Path(".")
    _unknown("the study", {k: v for k, v in data.items() if k not in _OPEN_SECTIONS}, _TOP, src)

    name = data.get("name") or (path.stem if path else "study")
    if "log" not in data:
        raise InputError(f"{src}: missing key 'log' (path of the prediction log)")
    log = Path(data["log"])
    if not log.is_absolute():
        log = (base / log)

    raw_tasks = data.get("tasks")
    if not raw_tasks or not isinstance(raw_tasks, list):
        raise InputError(f"{src}: needs at least one [[tasks]] table")
    tasks: list[Task] = []
    for i, t in enumerate(raw_tasks):
        where = f"[[tasks]] #{i + 1}"
        _unknown(where, t, _TASK, src)
        for key in ("name", "score", "label"):
            if not isinstance(t.get(key), str) or not t.get(key):
                raise InputError(f"{src}: {where} needs a string {key!r}")
        metric = t.get("metric", "auc")
        if metric not in METRICS:
            raise InputError(f"{src}: {where} ({t['name']}): metric must be 'auc' or 'gauc', got {metric!r}")
        scale = t.get("score_scale", "prob")
        if scale not in ("prob", "logit"):
            raise InputError(f"{src}: {where} ({t['name']}): score_scale must be 'prob' or 'logit', got {scale!r}")
        sign = t.get("sign", 1)
        if sign not in (1, -1):
            raise InputError(f"{src}: {where} ({t['name']}): sign must be 1 or -1, got {sign!r}")
        md = t.get("max_drop")
        tasks.append(Task(t["name"], t["score"], t["label"],
                          _num(src, f"{where} weight", t.get("weight", 1.0), 0.0), metric,
                          None if md is None else _num(src, f"{where} max_drop", md, 0.0), scale, sign))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise InputError(f"{src}: task names must be unique, got {names}")
    if sum(t.weight for t in tasks) <= 0:
        raise InputError(f"{src}: at least one task needs a business weight > 0")

    group, time, weight = data.get("group") or None, data.get("time") or None, data.get("weight") or None
    if any(t.metric == "gauc" for t in tasks) and not group:
        raise InputError(f"{src}: a task uses metric 'gauc' but the study names no 'group' column")

    fusion = data.get("fusion", {})
    _unknown("[fusion]", fusion, _FUSION, src)
    formula = fusion.get("formula", "multiplicative")
    reference = fusion.get("reference")
    if reference is not None and reference not in names:
        raise InputError(f"{src}: [fusion] reference {reference!r} is not a task ({', '.join(names)})")
    baseline = {}
    for k, v in (fusion.get("baseline") or {}).items():
        baseline[k] = _num(src, f"[fusion.baseline] {k}", v)
    bounds = {}
    for k, v in (fusion.get("bounds") or {}).items():
        if not (isinstance(v, list) and len(v) == 2):
            raise InputError(f"{src}: [fusion.bounds] {k} must be [low, high], got {v!r}")
        lo, hi = (_num(src, f"[fusion.bounds] {k}", x) for x in v)
        if not lo < hi:
            raise InputError(f"{src}: [fusion.bounds] {k} needs low < high, got {v!r}")
        bounds[k] = (lo, hi)
    options = {k: fusion[k] for k in ("eps", "buckets", "rank_scope") if k in fusion}

    objective = data.get("objective", {})
    _unknown("[objective]", objective, _OBJECTIVE, src)
    weighting = objective.get("gauc_weighting", "rows")
    if weighting not in ("rows", "positives", "uniform"):
        raise InputError(f"{src}: [objective] gauc_weighting must be rows, positives or uniform, got {weighting!r}")

    split = data.get("split")
    if split is not None:
        _unknown("[split]", split, _SPLIT, src)
        split = _parse_split(split, src, time, group)

    search_raw = dict(data.get("search", {}))
    method_options = {k: search_raw.pop(k) for k in list(search_raw) if isinstance(search_raw[k], dict)}
    _unknown("[search]", search_raw, _SEARCH, src)
    search = {**SEARCH_DEFAULTS, **search_raw}
    sections = {k: data[k] for k in _OPEN_SECTIONS if k in data}
    return Study(name=name, log=log, tasks=tasks, group=group, time=time, weight=weight,
                 formula=formula, reference=reference, fusion_options=options, baseline=baseline,
                 bounds=bounds, gauc_weighting=weighting, split=split, search=search,
                 method_options=method_options, sections=sections, path=path)
