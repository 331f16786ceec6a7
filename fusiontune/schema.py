"""The study schema: every table and key, declared once.

Each table of a study file is one pydantic model below (``[[tasks]]``: :class:`TaskTable`,
``[fusion]``: :class:`FusionTable`, ..., ``[select]``: :class:`SelectTable`).  A key's type,
bounds, default and one-line description live in its ``Field``; from that one declaration
come

- validation: :func:`validate` turns the first pydantic error into one line that names the
  file, the table, the key and the value (:class:`~fusiontune.errors.StudyError`);
  unknown keys are errors;
- defaults: ``Model().model_dump()``;
- CLI options and help: :func:`add_options` adds ``--some-key`` for every key of a table
  (``fusiontune select`` / ``report`` / ``train``), and :func:`epilog` lists the keys;
- docs: :func:`markdown` renders a table's keys (``python -m fusiontune.schema`` prints all).

Adding a key is one line in the table's model, e.g. in :class:`SelectTable`::

    min_gap: float = Field(0.0, ge=0, description="smallest objective gap between arms")

The key is then accepted in the study, has its default in ``study.sections["select"]``
(``study.search`` / ``study.split`` for those tables), gets a ``--min-gap`` option where the
command builds its options from the table, and appears in the docs.  A new top-level
table is a new model plus one line in :class:`StudyFile`; its validated dict lands in
``study.sections[<table>]``.  Per-method search options (``[search.<method>]``) are declared
by each searcher's ``defaults`` and checked when the searcher is built.
``fusiontune train``'s ``[train]`` table is :class:`~fusiontune.mtl.config.TrainConfig` plus
:class:`~fusiontune.mtl.config.TrainData` (see there).
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from .errors import StudyError

__all__ = ["Table", "LogTable", "TaskTable", "FusionTable", "ObjectiveTable", "SplitTable", "SearchTable",
           "SelectTable", "ReportTable", "EngineTable", "SegmentsTable", "SegmentTable", "StudyFile", "validate",
           "keys", "add_options", "epilog", "markdown", "Names", "Sizes"]


def _split_commas(value):
    """``"a, b"`` -> ``["a", "b"]`` (a TOML string or a command-line value); lists pass."""
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return value


def _split_as(kind):
    """A validator: split ``"1, 2"`` like :func:`_split_commas`, then convert each string with
    ``kind`` where it can (what cannot is left for pydantic to report)."""
    def convert(value):
        value = _split_commas(value)
        if not isinstance(value, list):
            return value
        out = []
        for v in value:
            if isinstance(v, str):
                try:
                    v = kind(v)
                except ValueError:
                    pass
            out.append(v)
        return out
    return convert


#: column names: a list, or one comma-separated string
Names = Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(_split_commas)]
#: layer sizes >= 1: a list, or a comma-separated string
Sizes = Annotated[list[Annotated[int, Field(ge=1)]], BeforeValidator(_split_as(int))]
#: numbers: a list, or a comma-separated string
Floats = Annotated[list[float], BeforeValidator(_split_as(float))]


class Table(BaseModel):
    """Base of every study table: unknown keys are errors, types are strict (no "3" for 3,
    no true for 1), an int is accepted where a float is expected."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False)


# --------------------------------------------------------------------------- the study's tables
class LogTable(Table):
    """``[log]``: the prediction log as a table, when it needs more than a path: a row filter and a
    deterministic sample (``log = "path"`` alone is the same as ``[log] path = "path"``).  See
    ``docs/logs.md``."""

    path: str = Field(min_length=1, description="CSV/Parquet file, directory of Parquet files (Hive "
                                                "partitions) or glob, relative to the study file")
    filter: str | None = Field(None, min_length=1, description="rows to keep, e.g. \"country == 'US' and "
                                                               "day >= 20261101\" (docs/logs.md)")
    sample: float | None = Field(None, gt=0, le=1, description="keep this fraction of the groups (whole "
                                                               "groups, by a stable hash of the group id)")


class TaskTable(Table):
    """One ``[[tasks]]`` table: a task's score and label columns, weight, metric, guardrail."""

    name: str = Field(min_length=1, description="task name (unique)")
    score: str = Field(min_length=1, description="model score column of the log")
    label: str = Field(min_length=1, description="label column (0/1, empty = not observed)")
    weight: float = Field(1.0, ge=0, description="business weight w_k >= 0")
    metric: Literal["auc", "gauc"] = Field("auc", description="auc, or gauc (needs the study's group)")
    max_drop: float | None = Field(None, ge=0, description="guardrail: largest allowed drop vs the baseline")
    score_scale: Literal["prob", "logit"] = Field("prob", description="the score column's scale")
    sign: Literal[1, -1] = Field(1, description="-1: positives should rank low (dislike); metric = 1 - AUC")


class FusionTable(Table):
    """``[fusion]``: the formula, its reference task, today's weights and the search bounds."""

    formula: str = Field("multiplicative", description="additive | multiplicative | power | rank")
    reference: str | None = Field(None, description="task whose weight stays at the baseline (fixes the scale)")
    baseline: dict[str, float] = Field(default_factory=dict, description="[fusion.baseline] today's weights")
    bounds: dict[str, list[float]] = Field(default_factory=dict,
                                           description="[fusion.bounds] [low, high] per parameter or kind")
    eps: float | None = Field(None, description="floor added to the scores of multiplicative/power formulas")
    buckets: int | None = Field(None, description="rank formula: buckets")
    rank_scope: str | None = Field(None, description="rank formula: rank within 'group' or over 'all' rows")

    def options(self) -> dict[str, Any]:
        """eps / buckets / rank_scope as given (the formula checks them)."""
        return {k: getattr(self, k) for k in ("eps", "buckets", "rank_scope") if k in self.model_fields_set}


class ObjectiveTable(Table):
    """``[objective]``: how GAUC weights its groups."""

    gauc_weighting: Literal["rows", "positives", "uniform"] = Field("rows", description="GAUC group weights")


class SplitTable(Table):
    """``[split]``: which rows are held out from the search (judged only at the end)."""

    by: Literal["time", "group", "random"] | None = Field(
        None, description="time | group | random (default: time if the study names a time column, else group)")
    holdout: float = Field(0.3, description="share of rows held out for the report (in (0, 1))")
    select: float = Field(0.0, description="share on which A/B arms are picked, carved before the holdout "
                                           "(holdout + select < 1)")
    seed: int = Field(0, description="seed of a group or random split")
    column: str | None = Field(None, min_length=1, description="an explicit 0/1 holdout column instead of "
                                                               "a holdout share (exclusive with holdout)")


class SearchTable(Table):
    """``[search]``: method and budget; ``[search.<method>]`` tables hold per-method options."""

    method: str = Field("cem", description="cem | cma | tpe | gp | neighborhood | random | grid")
    budget: int = Field(600, ge=1, description="candidate evaluations")
    seed: int = Field(0, description="random seed (same seed, same result)")
    population: int = Field(32, ge=1, description="candidates per generation")
    patience: int = Field(0, ge=0, description="generations without improvement before stopping (0: off)")
    min_delta: float = Field(1e-6, ge=0, description="smallest objective gain that counts as an improvement")
    warm_start: str | None = Field(None, description="'grad': start the method from the smooth-surrogate "
                                                     "optimum (none by default)")
    screening: list[float] | None = Field(None, description="multi-fidelity screening: nested subsample "
                                                            "fractions, e.g. [0.1, 0.3] (off by default)")
    screening_keep: float = Field(0.5, description="share of candidates kept at each screening level")


class SelectTable(Table):
    """``[select]``: defaults of ``fusiontune select`` (A/B arms with paired bootstrap CIs)."""

    k: int = Field(3, ge=1, description="number of arms")
    resamples: int = Field(1000, ge=1, description="bootstrap resamples")
    level: float = Field(0.95, gt=0, lt=1, description="confidence level")
    candidates: int = Field(50, ge=1, description="best distinct feasible trials considered")
    diversity: Literal["rank", "weights"] = Field(
        "rank", description="arm distance: 1 - Spearman of fused scores (rank) or normalised weights")
    seed: int = Field(0, description="bootstrap seed")


class ReportTable(Table):
    """``[report]``: defaults of ``fusiontune report``."""

    pareto: str = Field("", description="two tasks for the Pareto plot, e.g. click,finish "
                                        "(default: the two with the highest business weight)")
    resamples: int = Field(1000, ge=1, description="bootstrap resamples for the CIs")
    level: float = Field(0.95, gt=0, lt=1, description="confidence level")
    stability_resamples: int = Field(100, ge=1, description="bootstrap resamples of the search data "
                                                            "for the stability section")
    stability_candidates: int = Field(50, ge=1, description="best distinct feasible trials among which "
                                                            "each resample's best is re-found")
    k: int = Field(3, ge=1, description="arms to select when candidates.json is absent")
    seed: int = Field(0, description="bootstrap seed")


class EngineTable(Table):
    """``[engine]``: where candidates are scored (docs/engine.md)."""

    name: Literal["local", "ray"] = Field("local", description="local (this process) or ray (Ray actors, "
                                                                "each holding one shard of the log)")
    address: str | None = Field(None, min_length=1, description="ray: address of a running Ray cluster "
                                                                "(default: start a local instance)")
    actors: int | None = Field(None, ge=1, description="ray: number of shards / actors (default: the "
                                                       "cluster's CPUs)")


class SegmentsTable(Table):
    """``[segments]``: one weight set per user segment, searched jointly against the one business
    objective (see docs/segments.md).  ``[segments.<value>]`` tables (a segment value, or
    ``default``) hold that segment's ``baseline`` (overrides of ``[fusion.baseline]``) and
    ``max_drop`` (per-task guardrails on the segment's own rows)."""

    model_config = ConfigDict(extra="allow", strict=True, validate_default=False)

    column: Names = Field(description="segment column, or a list of columns (values joined by '|')")
    min_rows: int = Field(0, ge=0, description="segments with fewer search rows use the shared 'default' weights")
    share: Names = Field(default_factory=list, description="parameters every segment shares, e.g. [\"a_click\"]")
    compare_global: bool = Field(True, description="also search one global weight set (same method and budget) "
                                                   "to report what the segmentation buys on the holdout")


class SegmentTable(Table):
    """``[segments.<value>]``: one segment's baseline overrides and guardrails."""

    baseline: dict[str, float] = Field(default_factory=dict, description="this segment's online weights "
                                                                         "(overrides of [fusion.baseline])")
    max_drop: dict[str, float] = Field(default_factory=dict, description="task -> largest allowed drop of the "
                                                                         "task's metric on this segment's rows")


class StudyFile(Table):
    """A whole study file.  ``[ltr]`` is declared by :mod:`fusiontune.ltr.config`, ``[train]``
    by :mod:`fusiontune.mtl.config`; both are checked when the study loads."""

    name: str | None = Field(None, description="study name (default: the file's stem)")
    log: str = Field(min_length=1, description="prediction log: CSV/Parquet file, directory of Parquet files "
                                               "or glob, relative to the study file (or a [log] table)")
    group: str | None = Field(None, description="group (request) column: GAUC and group splits")
    time: str | None = Field(None, description="time column: time splits")
    weight: str | None = Field(None, description="per-row weight column")
    tasks: list[TaskTable] = Field(min_length=1, description="one [[tasks]] table per task")
    fusion: FusionTable = Field(default_factory=FusionTable)
    objective: ObjectiveTable = Field(default_factory=ObjectiveTable)
    split: SplitTable | None = None
    search: dict[str, Any] = Field(default_factory=dict, description="[search] and [search.<method>] tables")
    select: SelectTable = Field(default_factory=SelectTable)
    report: ReportTable = Field(default_factory=ReportTable)
    engine: EngineTable | None = None
    ltr: dict[str, Any] = Field(default_factory=dict, description="[ltr]: see fusiontune.ltr.config")
    train: dict[str, Any] | None = Field(None, description="[train]: fusiontune train's spec (mtl.config)")
    segments: dict[str, Any] | None = Field(None, description="[segments]: per-segment weights (SegmentsTable)")


# --------------------------------------------------------------------------- validation
def _where(loc: tuple, table: str | None) -> tuple[str, str | None]:
    """('tasks', 0, 'weight') -> ('[[tasks]] #1', 'weight'); ('search', 'budget') -> ('[search]', 'budget')."""
    parts = [p for p in loc if not (isinstance(p, str) and p.startswith(("function-", "constrained-")))]
    if table is None:
        if parts and parts[0] == "tasks" and len(parts) > 1 and isinstance(parts[1], int):
            return f"[[tasks]] #{parts[1] + 1}", (str(parts[2]) if len(parts) > 2 else None)
        if len(parts) >= 2 and parts[0] in ("fusion",) and parts[1] in ("baseline", "bounds"):
            return f"[fusion.{parts[1]}]", (str(parts[2]) if len(parts) > 2 else None)
        if len(parts) >= 2:
            return f"[{parts[0]}]", str(parts[1])
        return "the study", (str(parts[0]) if parts else None)
    return f"[{table}]", (".".join(str(p) for p in parts) if parts else None)


def _allowed(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed where ``loc`` points (for the unknown-key message)."""
    fields = model.model_fields
    for p in loc[:-1]:
        if isinstance(p, int):
            continue
        f = fields.get(p)
        if f is None:
            break
        sub = _model_of(f.annotation)
        if sub is None:
            break
        fields = sub.model_fields
    return sorted(fields)


def _model_of(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        m = _model_of(arg)
        if m is not None:
            return m
    return None


def one_line(exc: ValidationError, src: str, table: str | None, model=None) -> StudyError:
    """The first error of ``exc`` as one :class:`StudyError` line naming file, table, key, value."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(err.get("loc", ()))
    where, key = _where(loc, table)
    kind = err.get("type", "")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = _allowed(model, loc) if model is not None and hasattr(model, "model_fields") else []
        tail = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return StudyError(f"{src}: unknown key {loc[-1]!r} in {where}{tail}", param=str(loc[-1]))
    if kind == "missing":
        return StudyError(f"{src}: {where} needs the key {key!r}", param=key)
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    shown = f", got {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
    if key is None:
        return StudyError(f"{src}: {where}: {msg}{shown}")
    return StudyError(f"{src}: {where} {key}: {msg[:1].lower() + msg[1:]}{shown}", param=key.split(".")[-1])


def validate(model, data: dict | None, *, src: str = "<study>", table: str | None = None):
    """``model`` validated from ``data`` (a dict of keys), or one :class:`StudyError` line.

    ``model`` is a :class:`Table` subclass or a pydantic dataclass; ``table`` names it in
    messages (``"select"`` -> ``[select]``); ``None`` for the whole study.

    Examples
    --------
    >>> validate(SelectTable, {"k": 5}, src="s.toml", table="select").k
    5
    >>> validate(SelectTable, {"levl": 0.9}, src="s.toml", table="select")
    Traceback (most recent call last):
    ...
    fusiontune.errors.StudyError: s.toml: unknown key 'levl' in [select] (allowed: candidates, diversity, k, level, resamples, seed)
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise StudyError(f"{src}: [{table}] must be a table of keys, got {data!r}")
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(data)
        return model(**data)  # a pydantic dataclass validates its keyword arguments
    except ValidationError as exc:
        raise one_line(exc, src, table, model if isinstance(model, type) and issubclass(model, BaseModel)
                       else _dataclass_model(model)) from None


class _Fields:
    def __init__(self, fields):
        self.model_fields = fields


def _dataclass_model(cls):
    fields = getattr(cls, "__pydantic_fields__", None)
    return _Fields(fields) if fields is not None else None


# --------------------------------------------------------------------------- CLI and docs
def keys(model) -> dict[str, Any]:
    """``{key: FieldInfo}`` of a table model or pydantic dataclass, in declaration order."""
    fields = getattr(model, "model_fields", None)
    if fields is None:
        fields = getattr(model, "__pydantic_fields__", {})
    return dict(fields)


def _default(info) -> Any:
    from pydantic_core import PydanticUndefined

    if info.default is not PydanticUndefined:
        return info.default
    if info.default_factory is not None:
        return info.default_factory()
    return PydanticUndefined


def _base_type(annotation):
    """(python type, choices, is_list) of an annotation, for argparse."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _base_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin is Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), choices, False
    if origin is list:
        inner, _, _ = _base_type(typing.get_args(annotation)[0])
        return inner, None, True
    return annotation, None, False


def _cli_type(kind, is_list: bool):
    if is_list:
        return str  # comma-separated; the schema splits it
    if kind is bool:
        return None
    if kind in (int, float, str):
        return kind
    if kind is Path:
        return Path
    return str


def add_options(parser, model, *, skip: tuple[str, ...] = (), help_overrides: dict | None = None) -> None:
    """Add ``--key`` (underscores as dashes) for every key of ``model``; default ``None``, so a
    command can tell "not given" from "given" and fall back to the study's table.

    Values are checked by the schema (:func:`validate`) after the study's table is merged in,
    so a bad flag and a bad study key get the same message.
    """
    help_overrides = help_overrides or {}
    for name, info in keys(model).items():
        if name in skip:
            continue
        kind, choices, is_list = _base_type(info.annotation)
        default = _default(info)
        text = help_overrides.get(name, info.description or "")
        from pydantic_core import PydanticUndefined

        if default is not PydanticUndefined and default not in (None, "", []):
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            text = f"{text} (default: {shown})" if text else f"default: {shown}"
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=name, action="store_true", default=None, help=text)
        else:
            parser.add_argument(flag, dest=name, type=_cli_type(kind, is_list), default=None,
                                choices=list(choices) if choices and not is_list else None,
                                help=text)


def epilog(model, table: str) -> str:
    """``Defaults can also be set in the study's [table] table (keys: ...).``"""
    return f"Defaults can also be set in the study's [{table}] table (keys: {', '.join(keys(model))})."


def markdown(model, table: str) -> str:
    """A Markdown table of ``model``'s keys: key, type, default, description."""
    from pydantic_core import PydanticUndefined

    title = table if table.startswith("[") or " " in table else f"[{table}]"
    doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
    lines = [f"### {title}", "", doc.replace("``", "`"), "",
             "| key | type | default | description |", "|---|---|---|---|"]
    for name, info in keys(model).items():
        kind, choices, is_list = _base_type(info.annotation)
        t = " \\| ".join(map(repr, choices)) if choices else getattr(kind, "__name__", str(kind))
        if is_list:
            t = f"list of {t}"
        d = _default(info)
        d = "required" if d is PydanticUndefined else f"`{d!r}`"
        if _model_of(info.annotation) is not None:
            sub = _model_of(info.annotation).__name__
            t, d = ("list of tables" if is_list else "table"), f"see {sub}"
        desc = (info.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {t} | {d} | {desc} |")
    return "\n".join(lines) + "\n"


def all_tables() -> list[tuple[str, Any]]:
    from .mtl.config import TrainConfig, TrainData

    return [("top level", StudyFile), ("log", LogTable), ("[[tasks]]", TaskTable), ("fusion", FusionTable),
            ("objective", ObjectiveTable), ("split", SplitTable), ("search", SearchTable),
            ("select", SelectTable), ("report", ReportTable), ("engine", EngineTable), ("segments", SegmentsTable),
            ("segments.<value>", SegmentTable), ("train (data)", TrainData),
            ("train (model)", TrainConfig)]


def study_docs() -> str:
    """docs/study.md: every table and key of a study, rendered from this module."""
    head = ("# Study keys\n\nGenerated from `fusiontune/schema.py` and `fusiontune/mtl/config.py` by "
            "`python -m fusiontune.schema > docs/study.md`; do not edit by hand. `studies/demo.toml` shows "
            "a commented study. `[search.<method>]` options are listed in `docs/api.md` (each searcher "
            "declares its own), `[ltr]` in `fusiontune/ltr/config.py`.\n\n")
    return head + "\n".join(markdown(m, t) for t, m in all_tables())


if __name__ == "__main__":  # pragma: no cover
    print(study_docs(), end="")
