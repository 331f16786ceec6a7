"""Study files (TOML): which log, which tasks, which formula, baseline, split and search.

A study is plain data; :func:`load_study` validates it against :mod:`fusiontune.schema`
(every table and key declared once there) and resolves the log path relative to the study
file.  Unknown keys are errors (a typo must not silently fall back to a default).  See
``studies/demo.toml`` for a commented example and ``docs/study.md`` for every key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import StudyError
from .schema import LogTable, SearchTable, SplitTable, StudyFile, validate

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
    log_data: Any = field(default=None, repr=False)  # an in-memory log (DataFrame / Table) instead of `log`
    log_filter: str | None = None  # [log] filter: rows to keep (fusiontune.dataset.parse_filter)
    log_sample: float | None = None  # [log] sample: fraction of the groups kept (by group hash)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def log_source(self):
        """What the log reader reads: the in-memory table when there is one, else the path."""
        return self.log_data if self.log_data is not None else self.log

    def to_dict(self) -> dict:
        """The resolved study as a study-file dict (absolute log path, every default filled
        in): :func:`parse_study` of it gives the same study.  Run directories store it as
        study.json, so a run does not depend on the study file staying where it was."""
        from .log import in_memory_name

        def clean(d: dict) -> dict:
            return {k: v for k, v in d.items() if v is not None}

        fusion = {"formula": self.formula, "reference": self.reference, "baseline": dict(self.baseline),
                  "bounds": {k: [lo, hi] for k, (lo, hi) in self.bounds.items()}, **self.fusion_options}
        log: Any = in_memory_name(self.log_data) or str(Path(self.log).resolve())
        if self.log_filter is not None or self.log_sample is not None:
            log = clean({"path": log, "filter": self.log_filter, "sample": self.log_sample})
        out = {"name": self.name,
               "log": log,
               "group": self.group, "time": self.time, "weight": self.weight,
               "tasks": [clean(vars(t).copy()) for t in self.tasks],
               "fusion": clean(fusion), "objective": {"gauc_weighting": self.gauc_weighting},
               "search": {**clean(dict(self.search)), **{k: dict(v) for k, v in self.method_options.items()}}}
        if self.split is not None:
            out["split"] = clean(dict(self.split))
        for key, value in self.sections.items():
            out[key] = value
        return clean(out)


#: the [search] keys and their defaults (declared in :class:`fusiontune.schema.SearchTable`)
SEARCH_DEFAULTS = SearchTable().model_dump()


def load_study(path: str | Path) -> Study:
    path = Path(path)
    if not path.exists():
        raise StudyError(f"{path}: study file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise StudyError(f"{path}: not a UTF-8 text file") from None
    return parse_study(data, path)


def parse_study(data: dict, path: Path | None = None) -> Study:
    """A :class:`Study` from the dict of a study file (keys as in ``studies/demo.toml``).

    Every table is checked against :mod:`fusiontune.schema`; the first problem is one
    :class:`~fusiontune.errors.StudyError` line naming the file, the table and the key.
    """
    src = str(path) if path else "<study>"
    base = path.parent if path else Path(".")
    if not isinstance(data, dict):
        raise StudyError(f"{src}: a study is a table of keys, got {type(data).__name__}")
    data = dict(data)
    search_raw = data.get("search") or {}
    if not isinstance(search_raw, dict):
        raise StudyError(f"{src}: [search] must be a table, got {search_raw!r}")
    method_options = {k: v for k, v in search_raw.items() if isinstance(v, dict)}
    search_keys = {k: v for k, v in search_raw.items() if not isinstance(v, dict)}
    if "log" not in data:
        raise StudyError(f"{src}: missing key 'log' (path of the prediction log)", param="log")
    log_value = data["log"]
    if isinstance(log_value, Path):
        data["log"] = str(log_value)
    log_table = None
    if isinstance(log_value, dict):  # [log] path = ..., filter = ..., sample = ...
        log_table = validate(LogTable, log_value, src=src, table="log")
        data["log"] = log_table.path
        if log_table.filter is not None:  # the syntax now; the columns when the log is read
            from .dataset import parse_filter

            parse_filter(log_table.filter, src=src, where="[log] filter")
    sf = validate(StudyFile, data, src=src)
    search = validate(SearchTable, search_keys, src=src, table="search").model_dump()

    name = sf.name or (path.stem if path else "study")
    log = Path(sf.log)
    if not log.is_absolute():
        log = base / log
    tasks = [Task(t.name, t.score, t.label, float(t.weight), t.metric,
                  None if t.max_drop is None else float(t.max_drop), t.score_scale, t.sign) for t in sf.tasks]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise StudyError(f"{src}: task names must be unique, got {names}")
    if sum(t.weight for t in tasks) <= 0:
        raise StudyError(f"{src}: at least one task needs a business weight > 0")
    group, time, weight = sf.group or None, sf.time or None, sf.weight or None
    if any(t.metric == "gauc" for t in tasks) and not group:
        raise StudyError(f"{src}: a task uses metric 'gauc' but the study names no 'group' column", param="group")

    fusion = sf.fusion
    if fusion.reference is not None and fusion.reference not in names:
        raise StudyError(f"{src}: [fusion] reference {fusion.reference!r} is not a task ({', '.join(names)})",
                         param="reference")
    bounds = {}
    for k, v in fusion.bounds.items():
        if len(v) != 2:
            raise StudyError(f"{src}: [fusion.bounds] {k} must be [low, high], got {v!r}", param=k)
        if not v[0] < v[1]:
            raise StudyError(f"{src}: [fusion.bounds] {k} needs low < high, got {v!r}", param=k)
        bounds[k] = (float(v[0]), float(v[1]))

    split = None if sf.split is None else _split(sf.split, src, time, group)
    sections = {"select": sf.select.model_dump(), "report": sf.report.model_dump()}
    if sf.engine is not None:
        sections["engine"] = sf.engine.model_dump()
    for key in ("ltr", "train"):
        if key in data:
            sections[key] = data[key]
    if sf.segments is not None:  # [segments]: declared in schema.SegmentsTable, checked here
        from .segments import parse_segments

        sections["segments"] = parse_segments(sf.segments, src, tasks, fusion.formula)
    if "train" in sections:
        check_train_table(sections["train"], src)
    if "ltr" in sections:  # [ltr] is declared in fusiontune.ltr.config; a typo fails at load
        from .ltr.config import parse_config

        parse_config(sections["ltr"], None, src)
    return Study(name=name, log=log, tasks=tasks, group=group, time=time, weight=weight,
                 formula=fusion.formula, reference=fusion.reference, fusion_options=fusion.options(),
                 baseline={k: float(v) for k, v in fusion.baseline.items()}, bounds=bounds,
                 gauc_weighting=sf.objective.gauc_weighting, split=split, search=search,
                 method_options=method_options, sections=sections, path=path,
                 log_filter=log_table.filter if log_table else None,
                 log_sample=float(log_table.sample) if log_table and log_table.sample is not None else None)


def _split(table: SplitTable, src: str, time: str | None, group: str | None) -> dict:
    """[split] as the pipeline reads it: by, holdout (share held out for the report), seed, plus
    select (share on which A/B arms are picked) and column (an explicit 0/1 holdout column
    instead of a holdout share) when set.  Keys and types are checked by the schema; this
    checks how they fit together."""
    given = table.model_fields_set
    column = table.column
    if column is not None and "holdout" in given:
        raise StudyError(f"{src}: [split] holdout and column are exclusive: column {column!r} already says "
                         f"which rows are held out", param="holdout")
    holdout = None if column else float(table.holdout)
    select = float(table.select)
    if holdout is not None and not 0.0 < holdout < 1.0:
        raise StudyError(f"{src}: [split] holdout must be in (0, 1), got {holdout!r}", param="holdout")
    if not 0.0 <= select < 1.0 or (holdout is not None and holdout + select >= 1.0):
        raise StudyError(f"{src}: [split] select must be in [0, 1) and holdout + select < 1, got select = "
                         f"{select!r}" + (f", holdout = {holdout!r}" if holdout is not None else ""),
                         param="select")
    by = table.by or ("time" if time else "group")
    if "by" in given or not column or select > 0:  # `by` is used: its column must exist
        if by == "time" and not time:
            raise StudyError(f"{src}: [split] by = \"time\" needs a 'time' column in the study", param="by")
        if by == "group" and not group:
            raise StudyError(f"{src}: [split] by = \"group\" needs a 'group' column in the study", param="by")
    out = {"by": by, "holdout": holdout, "seed": table.seed}
    if select:
        out["select"] = select
    if column:
        out["column"] = column
    return out


def check_train_table(table: dict, src: str) -> None:
    """Keys of a ``[train]`` table: those of :class:`~fusiontune.mtl.config.TrainData` and
    :class:`~fusiontune.mtl.config.TrainConfig` (values are checked by ``fusiontune train``)."""
    from .mtl.config import TrainConfig, TrainData
    from .schema import keys

    if not isinstance(table, dict):
        raise StudyError(f"{src}: [train] must be a table, got {table!r}")
    allowed = set(keys(TrainData)) | set(keys(TrainConfig))
    for key in table:
        if key.replace("-", "_") not in allowed:
            raise StudyError(f"{src}: unknown key {key!r} in [train] (allowed: {', '.join(sorted(allowed))})",
                             param=key)
