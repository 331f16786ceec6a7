"""Fusion formulas and their parameter spaces.

Every formula turns the per-task probabilities p_k of a row into one ranking score:

================  ========================================  ==========================
formula           score (the ranking it induces)            parameters
================  ========================================  ==========================
additive          sum_k a_k * p_k                           a_<task>
multiplicative    prod_k p_k ** a_k  (= sum_k a_k log p_k)  a_<task>
power             prod_k (b_k + p_k) ** a_k                 a_<task>, b_<task> (b >= 0)
rank              sum_k a_k * pct_rank_k                    a_<task>
================  ========================================  ==========================

Multiplicative and power scores are computed as their logarithm (same ranking, no
underflow); probabilities are clipped to ``[eps, 1]`` (``eps`` defaults to 1e-6).  The rank
formula turns each task's score into its percentile within the row's group (or over the
whole log with ``rank_scope = "global"``), optionally into ``buckets`` equal buckets, as
serving engines do when they map a request's candidates onto a fixed score grid.

**Scale.**  All four formulas rank rows identically when every ``a_k`` is multiplied by
the same positive number.  The search therefore never moves the reference task's weight
(``[fusion] reference``, default: the first task): ``a_<reference>`` stays pinned at its
baseline value and only the other weights (and the biases ``b``) are searched.  Reported
weights use that normalisation: *a_<reference> equals its online value*, so every other
weight reads directly as "relative to today's reference weight".

Fused scores are float32, computed per row in float64 with a fixed summation order, so a
candidate gets bit-identical scores whether it is evaluated alone or in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np
import pandas as pd

from .errors import InputError
from .log import PredictionLog

__all__ = ["FORMULAS", "Formula", "ParamSpace", "make_formula", "fused_scores"]

FORMULAS = ("additive", "multiplicative", "power", "rank")
DEFAULT_BOUNDS = {"a": (0.0, 4.0), "b": (0.0, 1.0)}


@nb.njit(cache=True, inline="always")
def _linear_row(theta, x, out, p):
    k_n = theta.shape[1]
    for i in range(x.shape[0]):
        acc = 0.0
        for k in range(k_n):
            acc += theta[p, k] * x[i, k]
        out[p, i] = acc


@nb.njit(cache=True, inline="always")
def _power_row(a, b, x, eps, out, p):
    k_n = a.shape[1]
    for i in range(x.shape[0]):
        acc = 0.0
        for k in range(k_n):
            acc += a[p, k] * np.log(max(b[p, k] + x[i, k], eps))
        out[p, i] = acc


# A parallel (over candidates) and a serial compiled form of each; the caller chooses and
# numba's thread count is never changed.  Both run the same per-candidate code, so a
# candidate's fused scores are bit-identical either way.
@nb.njit(cache=True, parallel=True)
def _linear(theta, x, out):
    for p in nb.prange(theta.shape[0]):
        _linear_row(theta, x, out, p)


@nb.njit(cache=True, nogil=True)
def _linear_serial(theta, x, out):
    for p in range(theta.shape[0]):
        _linear_row(theta, x, out, p)


@nb.njit(cache=True, parallel=True)
def _power(a, b, x, eps, out):
    for p in nb.prange(a.shape[0]):
        _power_row(a, b, x, eps, out, p)


@nb.njit(cache=True, nogil=True)
def _power_serial(a, b, x, eps, out):
    for p in range(a.shape[0]):
        _power_row(a, b, x, eps, out, p)


# One candidate (or fewer candidates than threads, as a search on a large log evaluates
# them): the rows are split over the threads instead.  Same per-row code, so the scores
# are bit-identical to the forms above.
_ROW_BLOCK = 1 << 14


@nb.njit(cache=True, parallel=True)
def _linear_rows(theta, x, out):
    n = x.shape[0]
    for b in nb.prange((n + _ROW_BLOCK - 1) // _ROW_BLOCK):
        r0 = b * _ROW_BLOCK
        r1 = min(n, r0 + _ROW_BLOCK)
        for p in range(theta.shape[0]):
            _linear_row(theta, x[r0:r1], out[:, r0:r1], p)


@nb.njit(cache=True, parallel=True)
def _power_rows(a, b, x, eps, out):
    n = x.shape[0]
    for blk in nb.prange((n + _ROW_BLOCK - 1) // _ROW_BLOCK):
        r0 = blk * _ROW_BLOCK
        r1 = min(n, r0 + _ROW_BLOCK)
        for p in range(a.shape[0]):
            _power_row(a, b, x[r0:r1], eps, out[:, r0:r1], p)


@nb.njit(cache=True, parallel=True)
def _log_probs(p, eps, out):
    """float32 log(clip(p, eps, 1)), each rounded once from the float64 logarithm."""
    n, k = p.shape
    for i in nb.prange(n):
        for j in range(k):
            out[i, j] = np.float32(np.log(min(max(np.float64(p[i, j]), eps), 1.0)))


@dataclass
class Formula:
    """A fusion formula over K tasks: parameter names, a data transform, the scores."""

    name: str
    tasks: list[str]
    eps: float = 1e-6
    buckets: int = 0
    rank_scope: str = "group"

    @property
    def needs_probabilities(self) -> bool:
        return self.name in ("multiplicative", "power")

    @property
    def param_names(self) -> list[str]:
        names = [f"a_{t}" for t in self.tasks]
        if self.name == "power":
            names += [f"b_{t}" for t in self.tasks]
        return names

    def prepare(self, log: PredictionLog) -> np.ndarray:
        """The per-row matrix the formula is linear (or power) in, computed once per log.

        Additive and power formulas read the log's float32 probabilities themselves (the
        kernels widen each to float64 exactly, so no float64 copy is held).  The
        multiplicative formula keeps ``log(clip(p, eps, 1))`` as float32 (16 bytes a row for
        4 tasks, not 32): each log is the float64 logarithm rounded once, a relative error
        of at most 6e-8, far below the differences the search ranks candidates by; the
        fused score is still summed in float64 and the metrics are exact on it."""
        if self.name == "additive" or self.name == "power":
            return np.ascontiguousarray(log.scores, dtype=np.float32)
        if self.name == "multiplicative":
            out = np.empty(log.scores.shape, dtype=np.float32)
            _log_probs(np.ascontiguousarray(log.scores, dtype=np.float32), float(self.eps), out)
            return out
        p = log.scores.astype(np.float64)
        if self.name == "rank":
            return np.ascontiguousarray(self._ranks(p, log.groups))
        raise AssertionError(self.name)

    def _ranks(self, p: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        df = pd.DataFrame(p)
        if self.rank_scope == "group" and groups is not None:
            r = df.groupby(groups, sort=False).rank(method="average", pct=True).to_numpy()
        else:
            r = df.rank(method="average", pct=True).to_numpy()
        if self.buckets:
            r = np.ceil(r * self.buckets) / self.buckets
        return r

    def scores(self, prepared: np.ndarray, theta: np.ndarray, out: np.ndarray | None = None,
               parallel: bool | None = None) -> np.ndarray:
        """Fused scores (P, N) float32 for full parameter rows ``theta`` (P, n_params);
        written into ``out`` (a reused (P, N) float32 buffer) when given.  ``parallel``:
        None = on every numba thread (over candidates when there are at least as many as
        threads, else over blocks of rows), False = one thread."""
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        shape = (theta.shape[0], prepared.shape[0])
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
        p_n, n = shape
        threads = nb.get_num_threads()
        par = (p_n > 1 or n >= 4 * _ROW_BLOCK) if parallel is None else bool(parallel)
        by_rows = par and p_n < threads and n >= threads * _ROW_BLOCK
        k = len(self.tasks)
        if self.name == "power":
            fn = _power_rows if by_rows else (_power if par else _power_serial)
            fn(np.ascontiguousarray(theta[:, :k]), np.ascontiguousarray(theta[:, k:]), prepared, self.eps, out)
        else:
            fn = _linear_rows if by_rows else (_linear if par else _linear_serial)
            fn(np.ascontiguousarray(theta), prepared, out)
        return out


def make_formula(name: str, tasks: list[str], options: dict | None = None, src: str = "<study>") -> Formula:
    options = dict(options or {})
    if name not in FORMULAS:
        raise InputError(f"{src}: [fusion] formula must be one of {', '.join(FORMULAS)}, got {name!r}")
    eps = float(options.get("eps", 1e-6))
    if not 0 < eps < 1:
        raise InputError(f"{src}: [fusion] eps must be in (0, 1), got {eps!r}")
    buckets = int(options.get("buckets", 0))
    if buckets < 0:
        raise InputError(f"{src}: [fusion] buckets must be >= 0, got {buckets!r}")
    scope = options.get("rank_scope", "group")
    if scope not in ("group", "global"):
        raise InputError(f"{src}: [fusion] rank_scope must be 'group' or 'global', got {scope!r}")
    return Formula(name, list(tasks), eps, buckets, scope)


@dataclass
class ParamSpace:
    """Box of the searched (free) parameters; the reference weight is pinned.

    Search methods work in the unit cube ``[0, 1]^D``; :meth:`full` maps unit points to
    complete parameter rows in the order of :attr:`Formula.param_names`.
    """

    all_names: list[str]
    free: list[str]
    low: np.ndarray
    high: np.ndarray
    pinned: dict[str, float]
    baseline: np.ndarray  # full baseline row

    @classmethod
    def build(cls, formula: Formula, baseline: dict[str, float], bounds: dict[str, tuple[float, float]],
              reference: str | None = None, src: str = "<study>") -> "ParamSpace":
        names = formula.param_names
        unknown = [k for k in baseline if k not in names]
        if unknown:
            raise InputError(f"{src}: [fusion.baseline] {unknown[0]!r} is not a parameter of the "
                             f"{formula.name} formula (parameters: {', '.join(names)})")
        missing = [k for k in names if k not in baseline]
        if missing:
            raise InputError(f"{src}: [fusion.baseline] is missing {', '.join(missing)} "
                             f"(the weights running online today)")
        for k in bounds:
            if k not in names and k not in DEFAULT_BOUNDS:
                raise InputError(f"{src}: [fusion.bounds] {k!r} is not a parameter (use one of "
                                 f"{', '.join(names)}, or 'a' / 'b' for all of a kind)")
        ref = reference or formula.tasks[0]
        ref_name = f"a_{ref}"
        if baseline[ref_name] <= 0:
            raise InputError(f"{src}: [fusion.baseline] {ref_name} = {baseline[ref_name]} must be > 0: "
                             f"it is the reference weight that fixes the scale (choose another "
                             f"[fusion] reference)")
        free = [k for k in names if k != ref_name]
        lows, highs = [], []
        for k in free:
            kind = k.split("_", 1)[0]
            lo, hi = bounds.get(k, bounds.get(kind, DEFAULT_BOUNDS[kind]))
            if kind == "b" and lo < 0:
                raise InputError(f"{src}: [fusion.bounds] {k} must be >= 0 (power bias), got {lo}")
            if not lo <= baseline[k] <= hi:
                raise InputError(f"{src}: baseline {k} = {baseline[k]} lies outside its bounds [{lo}, {hi}]")
            lows.append(lo)
            highs.append(hi)
        full = np.array([baseline[k] for k in names], dtype=np.float64)
        return cls(names, free, np.array(lows), np.array(highs), {ref_name: baseline[ref_name]}, full)

    @property
    def dim(self) -> int:
        return len(self.free)

    def to_unit(self, free_values: np.ndarray) -> np.ndarray:
        return (np.asarray(free_values) - self.low) / (self.high - self.low)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        return self.low + np.clip(u, 0.0, 1.0) * (self.high - self.low)

    @property
    def baseline_unit(self) -> np.ndarray:
        return self.to_unit(self.baseline[[self.all_names.index(k) for k in self.free]])

    def full(self, u: np.ndarray) -> np.ndarray:
        """Unit points (P, D) -> full parameter rows (P, n_params)."""
        u = np.atleast_2d(u)
        out = np.empty((u.shape[0], len(self.all_names)))
        vals = self.from_unit(u)
        for j, k in enumerate(self.free):
            out[:, self.all_names.index(k)] = vals[:, j]
        for k, v in self.pinned.items():
            out[:, self.all_names.index(k)] = v
        return out

    def as_dict(self, row: np.ndarray) -> dict[str, float]:
        return {k: float(v) for k, v in zip(self.all_names, row)}

    def from_dict(self, params: dict[str, float], src: str = "<params>") -> np.ndarray:
        """A full parameter row from a {name: value} mapping (all names required)."""
        missing = [k for k in self.all_names if k not in params]
        if missing:
            raise InputError(f"{src}: missing parameter {missing[0]!r} (needs {', '.join(self.all_names)})")
        return np.array([float(params[k]) for k in self.all_names])


def fused_scores(formula: Formula, log: PredictionLog, params: dict[str, float]) -> np.ndarray:
    """Fused score (N,) float32 of one parameter set on a log (for ``fusiontune score``)."""
    row = np.array([[float(params[k]) for k in formula.param_names]])
    return formula.scores(formula.prepare(log), row)[0]
