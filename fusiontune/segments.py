"""Per-segment fusion weights, searched jointly against the one business objective.

A study with a ``[segments]`` table gives every segment of a column (``user_segment``, or
the combination of several columns) its own weight set.  Segments with fewer than
``min_rows`` search rows share one ``default`` weight set; parameters named in ``share``
are one value for every segment.  The search sees ONE parameter vector::

    [shared parameters] + [block of segment 1] + ... + [block of segment S] + [default block]

(parameter ``a_like`` of segment ``new`` is named ``a_like@new``; a shared one keeps its
plain name).  Each row is fused with its segment's block (:class:`SegmentFormula`, a
vectorised numba kernel over rows, batched over candidates like
:meth:`fusiontune.fusion.Formula.scores`); the objective, the per-task AUC / GAUC and the
guardrails are then computed by the unchanged kernel on the whole log, as the business
sees it.  Every search method therefore works on the joint space unchanged: it is a
:class:`~fusiontune.fusion.ParamSpace` like any other.

**Normalisation.**  Multiplying *every* weight of *every* segment by one positive number
leaves the global ranking unchanged, so one reference weight is always pinned.  Scaling
ONE segment's weights changes where its rows land among the other segments' rows, which a
global AUC sees; so per-segment pinning is only sound when no metric compares rows of two
segments: every task uses GAUC and every group (request) lies inside one segment.  Then
the reference weight is pinned in every block (S - 1 fewer dimensions, no lost optimum);
otherwise only in the largest segment's block (or once, when the reference weight is
shared), and the other blocks' reference weights are searched within their bounds.

**Per-segment guardrails** (``[segments.<value>] max_drop = {task = drop}``) compare the
task's metric on that segment's rows (same kernel, computed only when such a guardrail
exists) with the segment's baseline.  See docs/segments.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba as nb
import numpy as np
import pandas as pd

from .errors import InputError, StudyError
from .fusion import DEFAULT_BOUNDS, Formula, ParamSpace
from .log import LABEL_NEGATIVE, LABEL_POSITIVE, PredictionLog
from .objective import Objective

__all__ = ["SegmentSpec", "SegmentLayout", "SegmentFormula", "SegmentObjective", "parse_segments",
           "segment_keys", "DEFAULT", "SEPARATOR", "segment_spec"]

DEFAULT = "default"  #: the block of segments under min_rows (and of values never seen)
SEPARATOR = "|"  #: joins the values of several segment columns into one segment key
_TABLE_KEYS = ("column", "min_rows", "share", "compare_global")


# --------------------------------------------------------------------------- the study table
def parse_segments(raw: dict, src: str, tasks, formula: str) -> dict:
    """The ``[segments]`` table checked without the log: keys, shared parameters, the
    per-segment tables' baselines and guardrails.  Returns it in study-file form (so a
    resolved study round-trips through study.json)."""
    from .schema import SegmentsTable, SegmentTable, validate

    table = validate(SegmentsTable, raw, src=src, table="segments")
    names = [t.name for t in tasks]
    params = [f"a_{t}" for t in names] + ([f"b_{t}" for t in names] if formula == "power" else [])
    for p in table.share:
        if p not in params:
            raise StudyError(f"{src}: [segments] share: {p!r} is not a parameter of the {formula} formula "
                             f"(parameters: {', '.join(params)})", param="share")
    out = {"column": list(table.column), "min_rows": table.min_rows, "share": list(table.share),
           "compare_global": table.compare_global}
    for key, value in (table.model_extra or {}).items():
        if not isinstance(value, dict):
            raise StudyError(f"{src}: unknown key {key!r} in [segments] (allowed: {', '.join(_TABLE_KEYS)}, or a "
                             f"[segments.<value>] table)", param=key)
        seg = validate(SegmentTable, value, src=src, table=f"segments.{key}")
        for p in seg.baseline:
            if p not in params:
                raise StudyError(f"{src}: [segments.{key}] baseline: {p!r} is not a parameter of the {formula} "
                                 f"formula (parameters: {', '.join(params)})", param="baseline")
            if p in table.share:
                raise StudyError(f"{src}: [segments.{key}] baseline: {p!r} is shared by every segment "
                                 f"([segments] share); set it in [fusion.baseline]", param="baseline")
        for t, v in seg.max_drop.items():
            if t not in names:
                raise StudyError(f"{src}: [segments.{key}] max_drop: {t!r} is not a task ({', '.join(names)})",
                                 param="max_drop")
            if not v >= 0:
                raise StudyError(f"{src}: [segments.{key}] max_drop: {t} must be >= 0, got {v!r}",
                                 param="max_drop")
        out[key] = {"baseline": dict(seg.baseline), "max_drop": dict(seg.max_drop)}
    return out


@dataclass
class SegmentSpec:
    """The study's ``[segments]`` table, resolved."""

    columns: list[str]
    min_rows: int = 0
    share: list[str] = field(default_factory=list)
    compare_global: bool = True
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    max_drop: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_section(cls, sec: dict) -> "SegmentSpec":
        tables = {k: v for k, v in sec.items() if k not in _TABLE_KEYS}
        return cls(list(sec["column"]), int(sec.get("min_rows", 0)), list(sec.get("share", [])),
                   bool(sec.get("compare_global", True)),
                   {k: dict(v.get("baseline", {})) for k, v in tables.items() if v.get("baseline")},
                   {k: dict(v.get("max_drop", {})) for k, v in tables.items() if v.get("max_drop")})

    @property
    def named(self) -> list[str]:
        """Segments the study names in a ``[segments.<value>]`` table."""
        return list(dict.fromkeys([*self.baselines, *self.max_drop]))


def segment_spec(study) -> SegmentSpec | None:
    sec = study.sections.get("segments")
    return None if not sec else SegmentSpec.from_section(sec)


def _key_strings(values: np.ndarray) -> np.ndarray:
    """Segment values as the strings study tables and serving configs name them."""
    s = pd.Series(values)
    if s.dtype.kind == "f" and np.all(np.mod(s.to_numpy(), 1) == 0):
        s = s.astype(np.int64)  # 1.0 -> "1" (a CSV integer column with nulls reads as float)
    return s.astype(str).to_numpy(dtype=object)


def segment_keys(source: str, columns: list[str], arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) object array of segment keys (the values of several columns joined by '|').
    An empty value is an InputError naming the file, the column and the row."""
    parts = []
    for c in columns:
        v = arrays[c]
        bad = pd.isna(v)
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{source}: column {c!r} ([segments] column) is empty at row {i + 1}: every row "
                             f"needs a segment")
        parts.append(_key_strings(v))
    if len(parts) == 1:
        return parts[0]
    out = parts[0].astype(str)
    for p in parts[1:]:
        out = np.char.add(np.char.add(out, SEPARATOR), p.astype(str))
    return out.astype(object)


# --------------------------------------------------------------------------- numba kernels
@nb.njit(cache=True, inline="always")
def _seg_linear_row(blocks, x, out, p):
    k_n = blocks.shape[2]
    for i in range(x.shape[0]):
        c = int(x[i, k_n])
        acc = 0.0
        for k in range(k_n):
            acc += blocks[p, c, k] * x[i, k]
        out[p, i] = acc


@nb.njit(cache=True, inline="always")
def _seg_power_row(a, b, x, eps, out, p):
    k_n = a.shape[2]
    for i in range(x.shape[0]):
        c = int(x[i, k_n])
        acc = 0.0
        for k in range(k_n):
            acc += a[p, c, k] * np.log(max(b[p, c, k] + x[i, k], eps))
        out[p, i] = acc


@nb.njit(cache=True, parallel=True)
def _seg_linear(blocks, x, out):
    for p in nb.prange(blocks.shape[0]):
        _seg_linear_row(blocks, x, out, p)


@nb.njit(cache=True)
def _seg_linear_serial(blocks, x, out):
    for p in range(blocks.shape[0]):
        _seg_linear_row(blocks, x, out, p)


@nb.njit(cache=True, parallel=True)
def _seg_power(a, b, x, eps, out):
    for p in nb.prange(a.shape[0]):
        _seg_power_row(a, b, x, eps, out, p)


@nb.njit(cache=True)
def _seg_power_serial(a, b, x, eps, out):
    for p in range(a.shape[0]):
        _seg_power_row(a, b, x, eps, out, p)


# --------------------------------------------------------------------------- the layout
@dataclass
class SegmentLayout:
    """Which segments have their own block, how the joint vector maps to each block's full
    formula row, and the joint parameter space."""

    columns: list[str]
    segments: list[str]  # segments with their own weights (block order), then DEFAULT
    base_names: list[str]  # the formula's parameter names
    shared: list[str]
    index: np.ndarray  # (B, n_params) joint index of each block's parameters
    space: ParamSpace
    rows: dict[str, int]  # search rows of every segment value seen
    default_used: bool
    per_segment_scale: bool
    anchor: str  # the block whose reference weight fixes the scale (or "shared")

    @property
    def blocks(self) -> list[str]:
        return [*self.segments, DEFAULT]

    def block_of(self, keys: np.ndarray) -> np.ndarray:
        """(N,) int32 block index of each segment key (DEFAULT for a key without a block)."""
        codes, uniq = pd.factorize(pd.Series(keys, dtype=object), sort=False)
        pos = {s: i for i, s in enumerate(self.segments)}
        d = len(self.segments)
        lut = np.array([pos.get(u, d) for u in uniq], dtype=np.int32)
        return lut[codes] if len(lut) else np.zeros(0, dtype=np.int32)

    def keys_of(self, log: PredictionLog) -> np.ndarray:
        missing = [c for c in self.columns if c not in log.extra]
        if missing:
            raise InputError(f"{log.source}: [segments] column {missing[0]!r} was not loaded with the log")
        return segment_keys(log.source, self.columns, log.extra)

    def blocks_of_row(self, theta: np.ndarray) -> np.ndarray:
        """Joint rows (P, n_joint) -> per-block formula rows (P, B, n_params)."""
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        return np.ascontiguousarray(theta[:, self.index])

    def block_params(self, row: np.ndarray) -> dict[str, dict[str, float]]:
        """One joint row -> {segment: {param: value}} (the formula's own parameter names)."""
        blocks = self.blocks_of_row(row)[0]
        return {s: {k: float(v) for k, v in zip(self.base_names, blocks[i])} for i, s in enumerate(self.blocks)}

    def joint_from_blocks(self, weights: dict[str, dict], src: str) -> np.ndarray:
        """A joint row from {segment: {param: value}} (every block needed; a shared parameter
        must be equal in every block)."""
        missing = [s for s in self.blocks if s not in weights]
        if missing:
            raise InputError(f"{src}: segments: no weights for segment {missing[0]!r} (the study's segments: "
                             f"{', '.join(self.blocks)})")
        row = np.full(len(self.space.all_names), np.nan)
        for b, s in enumerate(self.blocks):
            w = weights[s]
            if not isinstance(w, dict):
                raise InputError(f"{src}: segments: {s!r} must be a mapping of parameter -> number")
            for j, k in enumerate(self.base_names):
                v = w.get(k)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                    raise InputError(f"{src}: segments: {s}.{k} must be a finite number, got {v!r}")
                i = self.index[b, j]
                if not np.isnan(row[i]) and row[i] != float(v):
                    raise InputError(f"{src}: segments: {k} is shared by every segment but {s!r} has {v!r}, "
                                     f"another segment {row[i]!r}")
                row[i] = float(v)
        return row


def _segment_counts(keys: np.ndarray) -> dict[str, int]:
    vals, counts = np.unique(keys.astype(str), return_counts=True)
    return {str(v): int(c) for v, c in zip(vals, counts)}


def _check_classes(log: PredictionLog, keys: np.ndarray, segments: list[str], part: str, min_rows: int) -> None:
    """Every own-weight segment has both classes of every task on ``part``."""
    for s in segments:
        rows = keys == s
        codes = log.label_codes[rows]
        for j, t in enumerate(log.tasks):
            pos, neg = bool((codes[:, j] == LABEL_POSITIVE).any()), bool((codes[:, j] == LABEL_NEGATIVE).any())
            if not (pos and neg):
                raise InputError(f"{log.source}: segment {s!r} has no {'positive' if not pos else 'negative'} label "
                                 f"for task {t!r} on the {part} rows ({int(rows.sum())} rows): its weights cannot "
                                 f"be judged on that task (raise [segments] min_rows above "
                                 f"{max(min_rows, int(rows.sum()))} to give it the default weights)")


def build_layout(spec: SegmentSpec, formula: Formula, study, search_log: PredictionLog,
                 holdout_log: PredictionLog | None, whole: PredictionLog, src: str) -> SegmentLayout:
    """The joint space of a segmented study (checks every segment against the log)."""
    base_space = ParamSpace.build(formula, study.baseline, study.bounds, study.reference, src)
    names = formula.param_names
    keys_all = segment_keys(whole.source, spec.columns, whole.extra)
    seen = set(np.unique(keys_all.astype(str)).tolist())
    if DEFAULT in seen:
        raise InputError(f"{whole.source}: segment value {DEFAULT!r} (column {', '.join(spec.columns)}) is the name "
                         f"of the fallback weight set; rename that segment")
    for s in spec.named:
        if s != DEFAULT and s not in seen:
            shown = ", ".join(sorted(seen)[:10]) + (", ..." if len(seen) > 10 else "")
            raise InputError(f"{src}: [segments.{s}] names segment {s!r}, which is not a value of "
                             f"{' + '.join(map(repr, spec.columns))} in {whole.source} (values: {shown})")
    skeys = segment_keys(search_log.source, spec.columns, search_log.extra)
    rows = _segment_counts(skeys)
    own = sorted([s for s, n in rows.items() if n >= spec.min_rows and n > 0])
    small = sorted(s for s in seen if s not in own)
    default_used = bool(small)
    for s in spec.baselines:
        if s != DEFAULT and s not in own:
            raise InputError(f"{src}: [segments.{s}] baseline: segment {s!r} has {rows.get(s, 0)} search rows, fewer "
                             f"than [segments] min_rows = {spec.min_rows}, so its rows use the {DEFAULT!r} weights "
                             f"(set [segments.{DEFAULT}] baseline instead)")
    if not own:
        raise InputError(f"{src}: [segments] min_rows = {spec.min_rows}: no segment has that many search rows "
                         f"(the largest has {max(rows.values())})")
    _check_classes(search_log, skeys, own, "search", spec.min_rows)
    if holdout_log is not None:
        hkeys = segment_keys(holdout_log.source, spec.columns, holdout_log.extra)
        hrows = _segment_counts(hkeys)
        for s in own:
            if hrows.get(s, 0) == 0:
                raise InputError(f"{holdout_log.source}: segment {s!r} has {rows[s]} search rows but none in the "
                                 f"holdout: its weights could not be judged (raise [segments] min_rows above "
                                 f"{rows[s]} to give it the default weights, or change [split])")
        _check_classes(holdout_log, hkeys, own, "holdout", spec.min_rows)

    ref = f"a_{study.reference or formula.tasks[0]}"
    shared = [k for k in names if k in spec.share]
    blocks = [*own, DEFAULT]
    joint = list(shared)
    index = np.empty((len(blocks), len(names)), dtype=np.int64)
    baseline: list[float] = [study.baseline[k] for k in shared]
    low, high = [], []

    def bounds_of(k: str) -> tuple[float, float]:
        kind = k.split("_", 1)[0]
        return study.bounds.get(k, study.bounds.get(kind, DEFAULT_BOUNDS[kind]))

    for b, s in enumerate(blocks):
        over = spec.baselines.get(s, {})
        for j, k in enumerate(names):
            if k in shared:
                index[b, j] = shared.index(k)
                continue
            index[b, j] = len(joint)
            joint.append(f"{k}@{s}")
            v = float(over.get(k, study.baseline[k]))
            lo, hi = bounds_of(k)
            if not lo <= v <= hi:
                raise InputError(f"{src}: [segments.{s}] baseline {k} = {v} lies outside its bounds [{lo}, {hi}]")
            if k == ref and v <= 0:
                raise InputError(f"{src}: [segments.{s}] baseline {k} = {v} must be > 0: it is the reference weight "
                                 f"(choose another [fusion] reference)")
            baseline.append(v)
    # normalisation: see the module docstring
    groups = whole.groups
    nested = groups is not None and all(t.metric == "gauc" for t in study.tasks)
    if nested:
        bl = SegmentLayout(spec.columns, own, names, shared, index, base_space, rows, default_used, False, "")
        blk = bl.block_of(keys_all)
        g = pd.DataFrame({"g": groups, "b": blk}).groupby("g")["b"].nunique()
        nested = bool((g <= 1).all())
    pinned: dict[str, float] = {}
    if ref in shared:
        pinned[ref] = float(study.baseline[ref])
        anchor = "shared"
    elif nested:
        for s in blocks:
            pinned[f"{ref}@{s}"] = baseline[joint.index(f"{ref}@{s}")]
        anchor = "every segment"
    else:
        anchor = max(own, key=lambda s: (rows[s], s))
        pinned[f"{ref}@{anchor}"] = baseline[joint.index(f"{ref}@{anchor}")]
    if not default_used:  # no row uses the default block: it stays today's weights
        for k in names:
            if k not in shared:
                pinned[f"{k}@{DEFAULT}"] = baseline[joint.index(f"{k}@{DEFAULT}")]
    free = [k for k in joint if k not in pinned]
    for k in free:
        lo, hi = bounds_of(k.split("@", 1)[0])
        low.append(lo)
        high.append(hi)
    space = ParamSpace(joint, free, np.array(low, dtype=np.float64), np.array(high, dtype=np.float64), pinned,
                       np.array(baseline, dtype=np.float64))
    return SegmentLayout(list(spec.columns), own, names, shared, index, space, rows, default_used, nested, anchor)


def normalisation_text(layout: SegmentLayout) -> str:
    pinned = [k for k in layout.space.pinned if not (k.endswith(f"@{DEFAULT}") and not layout.default_used)]
    if layout.anchor == "shared":
        return (f"{pinned[0]} is shared by every segment and pinned at its baseline value: scaling every weight "
                f"of every segment by one number leaves the global ranking unchanged, so only ratios to it matter")
    if layout.anchor == "every segment":
        return ("the reference weight is pinned at its baseline value in every segment's block: every task is a "
                "GAUC and every group lies inside one segment, so no metric compares rows of two segments and "
                "each segment's scale is free")
    return (f"{pinned[0]} (the reference weight of the largest segment, {layout.anchor!r}) is pinned at its "
            f"baseline value; the other segments' reference weights are searched, since scaling one segment's "
            f"weights moves its rows among the other segments' rows, which a global AUC sees")


# --------------------------------------------------------------------------- fusion
class SegmentFormula(Formula):
    """A formula whose parameter row is the joint vector of a :class:`SegmentLayout`: every
    row is fused with its segment's block.  ``prepare`` appends the row's block index as
    a last column of the base formula's matrix (so row subsets, as the surrogate takes
    them, keep their segment); ``scores`` is the batched numba kernel; ``torch_scores``
    the differentiable twin for the grad method's surrogate."""

    def __init__(self, base: Formula, layout: SegmentLayout):
        super().__init__(base.name, list(base.tasks), base.eps, base.buckets, base.rank_scope)
        self.base = base
        self.layout = layout

    @property
    def param_names(self) -> list[str]:
        return list(self.layout.space.all_names)

    def prepare(self, log: PredictionLog) -> np.ndarray:
        x = self.base.prepare(log)
        codes = self.layout.block_of(self.layout.keys_of(log))
        out = np.empty((x.shape[0], x.shape[1] + 1), dtype=x.dtype)
        out[:, :-1] = x
        out[:, -1] = codes
        return out

    def scores(self, prepared: np.ndarray, theta: np.ndarray, out: np.ndarray | None = None,
               parallel: bool | None = None) -> np.ndarray:
        blocks = self.layout.blocks_of_row(theta)
        shape = (blocks.shape[0], prepared.shape[0])
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
        par = blocks.shape[0] > 1 if parallel is None else bool(parallel)
        k = len(self.tasks)
        if self.name == "power":
            (_seg_power if par else _seg_power_serial)(np.ascontiguousarray(blocks[:, :, :k]),
                                                       np.ascontiguousarray(blocks[:, :, k:]), prepared,
                                                       self.eps, out)
        else:
            (_seg_linear if par else _seg_linear_serial)(blocks, prepared, out)
        return out

    def torch_scores(self, x, theta):
        """torch twin of :meth:`scores`: ``x`` (R, K + 1) prepared rows, ``theta`` (n_joint,)
        or (P, n_joint) -> (R,) or (P, R)."""
        import torch

        k = len(self.tasks)
        idx = torch.as_tensor(self.layout.index)
        codes = x[:, k].long()
        rows = theta[..., idx][..., codes, :]  # (..., R, n_params)
        xk = x[:, :k]
        a = rows[..., :k]
        if self.name == "power":
            return (a * torch.log(torch.clamp(xk + rows[..., k:], min=self.eps))).sum(-1)
        return (a * xk).sum(-1)


def serve_scores(formula: Formula, log: PredictionLog, columns: list[str],
                 weights: dict[str, dict[str, float]]) -> np.ndarray:
    """Fused scores (N,) of a log with per-segment weights ({segment: {param: value}}, with a
    ``default`` entry), as serving applies them: each row with its segment's weights, the
    default weights for any other segment value.  Vectorised per segment, not per row."""
    x = formula.prepare(log)
    keys = segment_keys(log.source, columns, log.extra)
    segs = [s for s in weights if s != DEFAULT]
    codes, uniq = pd.factorize(pd.Series(keys, dtype=object), sort=False)
    pos = {s: i for i, s in enumerate(segs)}
    blk = np.array([pos.get(u, len(segs)) for u in uniq], dtype=np.int32)[codes] if len(uniq) else codes
    out = np.empty(log.n, dtype=np.float32)
    for b, s in enumerate([*segs, DEFAULT]):
        rows = np.flatnonzero(blk == b)
        if rows.size:
            row = np.array([[float(weights[s][k]) for k in formula.param_names]])
            out[rows] = formula.scores(np.ascontiguousarray(x[rows]), row)[0]
    return out


def block_scores(formula: Formula, layout: SegmentLayout, log: PredictionLog,
                 weights: dict[str, dict[str, float]]) -> np.ndarray:
    """:func:`serve_scores` with a layout's segment columns."""
    return serve_scores(formula, log, layout.columns, weights)


def weights_document(formula: "SegmentFormula", space: ParamSpace, study, params: dict, source: dict) -> dict:
    """The export of per-segment weights: a flat serving config keyed by segment value, plus
    the default weights (see docs/segments.md)."""
    from .export import EXPRESSIONS, finish_document

    layout = formula.layout
    row = space.from_dict(params)
    weights = layout.block_params(row)
    doc = {
        "format": "fusiontune-weights", "version": 1,
        "formula": formula.name,
        "expression": EXPRESSIONS[formula.name],
        "normalisation": normalisation_text(layout),
        "reference": (study.reference or study.tasks[0].name),
        "segments": {
            "columns": list(layout.columns), "separator": SEPARATOR, "fallback": DEFAULT,
            "rule": (f"a row uses weights[<segment>], <segment> being the value of "
                     f"{' + '.join(layout.columns)}" + (f" (joined by {SEPARATOR!r})" if len(layout.columns) > 1
                                                        else "") + f"; any other value uses weights[{DEFAULT!r}]"),
            "weights": weights,
        },
        "params": space.as_dict(row),
        "tasks": [{"name": t.name, "score_column": t.score, "score_scale": t.score_scale} for t in study.tasks],
        "eps": formula.eps,
    }
    return finish_document(doc, formula, source)


def params_row(doc: dict, formula: "SegmentFormula", src: str) -> np.ndarray:
    """The joint row of a weights document on a segmented study: its ``segments.weights``
    (segments the study has but the document lacks take the document's default weights), or
    one global weight set (``params`` with the formula's own names) given to every segment."""
    layout = formula.layout
    seg = doc.get("segments")
    if seg is not None:
        if not isinstance(seg, dict) or not isinstance(seg.get("weights"), dict):
            raise InputError(f"{src}: key 'segments' must hold 'weights': {{segment: {{parameter: number}}}}")
        if list(seg.get("columns", layout.columns)) != list(layout.columns):
            raise InputError(f"{src}: segments columns {seg.get('columns')!r} differ from the study's [segments] "
                             f"column {layout.columns!r}")
        w = seg["weights"]
        if DEFAULT not in w:
            raise InputError(f"{src}: segments: no {DEFAULT!r} weights (the weights of any other segment)")
        return layout.joint_from_blocks({s: w.get(s, w[DEFAULT]) for s in layout.blocks}, src)
    params = doc.get("params")
    if not isinstance(params, dict):
        raise InputError(f"{src}: key 'params' must be a mapping of parameter -> number")
    if all(k in params for k in layout.space.all_names):
        return layout.space.from_dict(params, src)
    missing = [k for k in layout.base_names if k not in params]
    if missing:
        raise InputError(f"{src}: params: missing {missing[0]!r} (give one weight set, or per-segment weights "
                         f"under 'segments')")
    return layout.joint_from_blocks({s: params for s in layout.blocks}, src)


# --------------------------------------------------------------------------- guardrails per segment
class SegmentObjective(Objective):
    """An :class:`~fusiontune.objective.Objective` with per-segment guardrails: a candidate is
    infeasible when a guarded task's metric on one segment's rows drops more than that
    segment's ``max_drop`` below the segment's baseline.  The segments' metrics are computed
    with the same kernel on the segment's rows, in :meth:`metrics`; :meth:`judge` adds their
    violations for every candidate :meth:`metrics` scored (it is given only the global
    per-task values, so it looks them up by those values)."""

    def __init__(self, tasks, log, formula, gauc_weighting: str = "rows",
                 guards: dict[str, dict[str, float]] | None = None):
        super().__init__(tasks, log, formula, gauc_weighting)
        self.guards = []
        names = [t.name for t in tasks]
        if guards:
            layout = formula.layout
            keys = layout.keys_of(self.log)
            blk = layout.block_of(keys)
            for seg, drops in guards.items():
                rows = blk == len(layout.segments) if seg == DEFAULT else keys == seg
                if not rows.any():
                    continue  # e.g. a segment absent from this part: nothing to guard here
                md = np.array([drops.get(n, np.inf) for n in names], dtype=np.float64)
                sub = Objective(tasks, self.log.take(np.flatnonzero(rows)), formula, gauc_weighting)
                self.guards.append((seg, sub, md))
        self._seg: dict[bytes, float] = {}
        self.segment_metrics: dict[str, np.ndarray] = {}

    def set_baseline(self, baseline_row: np.ndarray) -> np.ndarray:
        for _, sub, _ in self.guards:
            sub.set_baseline(baseline_row)
        return super().set_baseline(baseline_row)

    def metrics(self, theta: np.ndarray) -> np.ndarray:
        out = super().metrics(theta)
        if self.guards and all(sub.baseline_per_task is not None for _, sub, _ in self.guards):
            viol = np.zeros(out.shape[0])
            for seg, sub, md in self.guards:
                m = sub.metrics(theta)
                self.segment_metrics[seg] = m
                viol += np.clip(sub.baseline_per_task[None, :] - m - md[None, :], 0.0, None).sum(axis=1)
            if len(self._seg) > 200_000:
                self._seg.clear()
            for r, v in zip(out, viol):
                self._seg[r.tobytes()] = float(v)
        return out

    def judge(self, per_task: np.ndarray):
        ev = super().judge(per_task)
        if not self.guards:
            return ev
        viol = np.array([self._seg.get(np.ascontiguousarray(r).tobytes(), 0.0) for r in per_task])
        ev.feasible = ev.feasible & (viol <= 1e-12)
        ev.penalised = ev.penalised - self.penalty * viol
        return ev


# --------------------------------------------------------------------------- outputs
def segment_rows(layout: SegmentLayout, log: PredictionLog) -> dict[str, np.ndarray]:
    """Row indices of every block (own segments, then DEFAULT) in ``log``."""
    blk = layout.block_of(layout.keys_of(log))
    return {s: np.flatnonzero(blk == b) for b, s in enumerate(layout.blocks)}


def per_segment_metrics(prep, log: PredictionLog, theta: np.ndarray) -> dict[str, dict]:
    """Per-task metrics of full joint rows ``theta`` (P, n_joint) on every block's rows of
    ``log``: {segment: {"rows": n, "per_task": (P, K) or None}} (None when a task has only
    one class there, e.g. a small segment of the default block)."""
    out = {}
    for s, rows in segment_rows(prep.layout, log).items():
        if rows.size == 0:
            continue
        sub = log.take(rows)
        try:
            o = Objective(prep.study.tasks, sub, prep.formula, prep.study.gauc_weighting)
            m = o.metrics(theta)
        except InputError:
            m = None
        if m is not None and np.isnan(m).any():
            m = None
        out[s] = {"rows": int(rows.size), "per_task": m}
    return out


def segments_summary(prep, best_theta: np.ndarray) -> dict:
    """result.json's ``segments`` block: the layout, each segment's weights (best and
    baseline) and each segment's per-task metrics, best vs baseline, in-sample and on the
    holdout (point values; the report adds bootstrap intervals)."""
    layout, space = prep.layout, prep.space
    tasks = prep.study.task_names
    w = np.array([t.weight for t in prep.study.tasks])
    both = np.vstack([best_theta, space.baseline])
    parts = {"in_sample": prep.search_log}
    if prep.holdout_log is not None:
        parts["holdout"] = prep.holdout_log
    per_segment: dict[str, dict] = {}
    for part, log in parts.items():
        for s, got in per_segment_metrics(prep, log, both).items():
            entry = per_segment.setdefault(s, {})
            m = got["per_task"]
            blk = {"rows": got["rows"]}
            if m is not None:
                blk.update({"best": {t: float(v) for t, v in zip(tasks, m[0])},
                            "baseline": {t: float(v) for t, v in zip(tasks, m[1])},
                            "objective": float(m[0] @ w), "baseline_objective": float(m[1] @ w),
                            "gain": float((m[0] - m[1]) @ w)})
            else:
                blk["note"] = "a task has only one class on these rows: no per-segment metric"
            entry[part] = blk
    spec = segment_spec(prep.study)
    return {
        "columns": layout.columns, "min_rows": spec.min_rows, "share": layout.shared,
        "segments": layout.segments, "default_used": layout.default_used,
        "fallback": sorted(s for s in layout.rows if s not in layout.segments),
        "search_rows": layout.rows, "anchor": layout.anchor, "per_segment_scale": layout.per_segment_scale,
        "params": layout.block_params(best_theta), "baseline": layout.block_params(space.baseline),
        "per_segment": per_segment,
        "guardrails": spec.max_drop,
    }


def global_prepared(prep):
    """The same study, parts and rows with ONE weight set for everyone (the comparison the
    report makes: what does the segmentation buy over the best global weights?)."""
    from .pipeline import Prepared

    study, base = prep.study, prep.formula.base
    space = ParamSpace.build(base, study.baseline, study.bounds, study.reference, str(study.path or "<study>"))
    obj = Objective(study.tasks, prep.search_log, base, study.gauc_weighting)
    obj.set_baseline(space.baseline)
    return Prepared(study, base, space, prep._log, prep.search_log, prep.holdout_log, obj,
                    select_log=prep.select_log, split_info=prep.split_info, role=prep.role)


def joint_of_global(layout: SegmentLayout, params: dict[str, float]) -> np.ndarray:
    """The joint row that gives every segment the same (global) weights."""
    return layout.joint_from_blocks({s: params for s in layout.blocks}, "<global weights>")


def global_block(prep, gresult: dict) -> dict:
    """result.json's ``segments.global``: the best global weight set of the same method and
    budget, and the segmented best's objective gain over it (in-sample and on the holdout)."""
    layout = prep.layout
    g = joint_of_global(layout, gresult["best"]["params"])
    out = {"params": gresult["best"]["params"], "evaluations": gresult["evaluations"],
           "seconds": gresult["seconds"], "objective": gresult["best"]["objective"],
           "feasible": gresult["best"]["feasible"]}
    gm = prep.objective.metrics(g[None, :])[0]
    out["objective_check"] = float(gm @ prep.objective.w)  # the same weights through the segment kernel
    if gresult.get("holdout"):
        out["holdout"] = gresult["holdout"]["best"]
    return out


def eval_segments(prep, row: np.ndarray) -> dict:
    """``fusiontune eval``'s per-segment block: each block's per-task metrics of ``row`` vs the
    baseline on the holdout (the search rows without one)."""
    log, part = (prep.holdout_log, "holdout") if prep.holdout_log is not None else (prep.search_log, "search")
    tasks = prep.study.task_names
    w = np.array([t.weight for t in prep.study.tasks])
    out = {"part": part, "columns": prep.layout.columns, "weights": prep.layout.block_params(row), "per_segment": {}}
    for s, got in per_segment_metrics(prep, log, np.vstack([row, prep.space.baseline])).items():
        m = got["per_task"]
        blk = {"rows": got["rows"]}
        if m is not None:
            blk.update({"per_task": {t: float(v) for t, v in zip(tasks, m[0])},
                        "baseline_per_task": {t: float(v) for t, v in zip(tasks, m[1])},
                        "gain": float((m[0] - m[1]) @ w)})
        out["per_segment"][s] = blk
    return out
