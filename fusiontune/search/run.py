"""The search loop: ask -> evaluate the whole population in one kernel call -> tell.

:func:`run_search` drives any method against an :class:`~fusiontune.objective.Objective`
until the evaluation budget is spent, the method says it has converged, or ``patience``
generations pass without the best penalised value improving by more than ``min_delta``
(``patience = 0`` turns that off).  It records every exactly evaluated candidate;
``on_batch`` (optional) sees each batch as it is scored, which is how trials reach a
storage.  ``evaluate`` (optional) replaces ``objective.evaluate``: the storage layer uses
it to hand back stored evaluations when a run is resumed by replay (see
:mod:`fusiontune.search.storage`), so replayed generations cost no kernel time.

:func:`build_searcher` makes the searcher of a run: options, the study's ``warm_start``
(``"grad"``: start at the optimum of the smooth surrogate, :mod:`fusiontune.search.grad`)
and the capabilities the runner reads.

Multi-fidelity screening (:class:`Screening`, study keys ``[search] screening`` and
``screening_keep``): each generation's candidates are first scored on nested subsamples
of the search rows (whole groups, so GAUC stays a GAUC), keeping the best
``screening_keep`` share at each level, successive-halving style; only the survivors are
scored exactly on all rows.  Only exact scores are recorded (trials.csv, the store, the
best), so every reported number is exact.  The budget counts *full-evaluation
equivalents*: a candidate screened on 25% of the rows costs 0.25, so a budget of 300
buys more candidates than 300, while trials.csv holds only the exactly scored ones (and
result.json's ``screening`` block says how many were screened).  Screening needs a method
that learns from ranks only (``capabilities.rank_based``): the candidates screened out are
told values below every survivor's, in the order the screens ranked them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import StudyError
from ..fusion import ParamSpace
from ..objective import Evaluation, Objective
from ..progress import progress
from .base import Searcher, method_population, searcher_class

__all__ = ["SearchRun", "run_search", "build_searcher", "Screening", "WARM_STARTS"]

WARM_STARTS = ("none", "grad")


@dataclass
class SearchRun:
    unit: list[np.ndarray] = field(default_factory=list)  # (P, D) batches
    theta: list[np.ndarray] = field(default_factory=list)  # (P, n_params)
    evals: list[Evaluation] = field(default_factory=list)
    generation: list[np.ndarray] = field(default_factory=list)
    stop_reason: str = "budget"
    seconds: float = 0.0
    screened: int = 0  # candidates scored on subsamples only
    cost: float = 0.0  # full-evaluation equivalents spent

    @property
    def n(self) -> int:
        return int(sum(len(g) for g in self.generation))

    def cat(self, name: str) -> np.ndarray:
        if name in ("unit", "theta", "generation"):
            parts = getattr(self, name)
        else:
            parts = [getattr(e, name) for e in self.evals]
        return np.concatenate(parts) if parts else np.empty(0)


def build_searcher(method: str, objective: Objective, space: ParamSpace, *, seed: int, population: int,
                   options: dict | None, budget: int, warm_start: str | None = None,
                   grad_options: dict | None = None) -> tuple[Searcher, int, dict]:
    """The searcher of one run; returns (searcher, population, method options).

    ``options`` is the method's ``[search.<method>]`` table: its ``population`` and
    ``warm_start`` keys override the study-wide ones.  ``warm_start = "grad"`` starts the
    method at the surrogate optimum (the surrogate options are ``grad_options``, the
    study's ``[search.grad]`` table); the baseline is still scored first.
    """
    population, options = method_population(population, options)
    warm = options.pop("warm_start", warm_start) or "none"
    if warm not in WARM_STARTS:
        raise StudyError(f"[search] warm_start must be one of {', '.join(map(repr, WARM_STARTS))}, got {warm!r}")
    cls = searcher_class(method)
    x0 = space.baseline_unit
    searcher = cls(dim=space.dim, x0=x0, seed=seed, population=population, options=options, budget=budget,
                   baseline=space.baseline_unit, objective=objective, space=space)
    if warm == "grad" and method != "grad":
        from .grad import SURROGATE_DEFAULTS, surrogate_starts
        from .warm import WarmStarted

        gopts = {k: v for k, v in (grad_options or {}).items() if k in SURROGATE_DEFAULTS}
        pts, _ = surrogate_starts(objective, space, x0, seed, gopts)
        kw = dict(dim=space.dim, seed=seed, population=population, options=options, budget=budget,
                  baseline=space.baseline_unit, objective=objective, space=space)
        if cls.capabilities.replay:
            # start at the best of the end points the exact kernel finds feasible (warm.py)
            searcher = WarmStarted(cls, pts, x0=x0, **kw)
        else:
            # an Optuna sampler: every end point is an enqueued trial its model conditions on
            searcher = cls(x0=pts[0], **kw)
            searcher.warm_points = pts[1:]
    if searcher.capabilities.constraints:  # guardrails as constraints, when there are any
        searcher.constrained = bool(np.isfinite(objective.max_drop).any())
    return searcher, population, {**options, **({"warm_start": warm} if warm != "none" else {})}


class Screening:
    """Nested group (or row) subsamples of an objective's log, scored before the exact kernel.

    ``fractions``: increasing row shares in (0, 1), e.g. ``[0.25, 0.5]``; each level keeps
    the best ``keep`` share of the candidates still in (at least one).  The subsamples are
    nested: level ``f`` holds the units (whole groups; rows without a group column) whose
    seeded hash of the raw id (:func:`fusiontune.log.seeded_units`) lies below ``f``.  That
    key is a function of the unit and the seed only, so the Ray engine's actors build the same
    levels from their own groups (:meth:`fusiontune.engine.ray_engine.RayEngine.level_objective`)
    and the driver adds up their partial sums as for a full evaluation.  Each level has its own
    baseline, so a guardrail compares like with like.
    """

    def __init__(self, objective: Objective, fractions, keep: float = 0.5, seed: int = 0):
        fr = list(fractions)
        if not fr or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1 for f in fr) \
                or any(b <= a for a, b in zip(fr, fr[1:])):
            raise StudyError(f"[search] screening must be increasing row shares in (0, 1), e.g. [0.25, 0.5]; "
                             f"got {fractions!r}")
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep < 1:
            raise StudyError(f"[search] screening_keep must be in (0, 1), got {keep!r}")
        self.objective, self.fractions, self.keep, self.seed = objective, fr, float(keep), int(seed)
        self._key = None
        if not getattr(objective, "sharded", False):
            from ..log import SALT_SCREENING, seeded_units, unit_hashes

            self._key = seeded_units(unit_hashes(objective.log), self.seed, SALT_SCREENING)
        self._levels: list[Objective | None] = [None] * len(fr)
        self.shares = [float(f) for f in fr]

    def level(self, i: int) -> Objective:
        if self._levels[i] is None:
            o = self.objective
            if self._key is None:  # the Ray engine: each actor cuts the level from its own groups
                sub = o.engine.level_objective(o.role, self.seed, self.fractions[i])
                n_rows = sub.n_rows
            else:
                rows = np.flatnonzero(self._key < self.fractions[i])
                sub = Objective(o.tasks, o.log.take(rows), o.formula, o.gauc_weighting)
                n_rows = len(rows)
            sub.set_baseline(self._baseline_row)
            self.shares[i] = n_rows / max(o.n_rows, 1)
            self._levels[i] = sub
        return self._levels[i]

    def bind(self, baseline_row: np.ndarray) -> "Screening":
        self._baseline_row = np.asarray(baseline_row, dtype=np.float64)
        return self

    def cost(self, n: int) -> float:
        """Full-evaluation equivalents of screening ``n`` candidates (and scoring the survivors)."""
        total, alive = 0.0, n
        for f in self.fractions:
            total += alive * f
            alive = max(1, int(np.ceil(alive * self.keep)))
        return total + alive

    def screen(self, theta: np.ndarray, always: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """(survivor indices, rank key of every candidate, cost of the screens); the
        candidates ``always`` (indices, e.g. the baseline) survive whatever they score."""
        n = len(theta)
        alive = np.arange(n)
        key = np.zeros(n)  # level reached * big + value at that level, for the losers' order
        spent = 0.0
        for i, _ in enumerate(self.fractions):
            sub = self.level(i)
            ev = sub.evaluate(theta[alive])
            spent += len(alive) * self.shares[i]
            vals = np.asarray(ev.penalised, dtype=np.float64)
            k = max(1, int(np.ceil(len(alive) * self.keep)))
            order = np.argsort(-vals, kind="stable")
            # rank within this level: earlier levels' losers stay below
            key[alive[order]] = i + 1 - (np.arange(len(alive)) + 1) / (len(alive) + 1)
            alive = np.sort(alive[order[:k]])
        if always is not None and len(always):
            alive = np.union1d(alive, always)
        return alive, key, spent


class Patience:
    """Best penalised value so far and the generations since it last improved by ``min_delta``;
    shared by the one-process loop and the shared-run loop (``coordination.py``)."""

    def __init__(self, patience: int = 0, min_delta: float = 1e-6, best: float = -np.inf):
        self.patience, self.min_delta, self.best, self.stale = patience, min_delta, best, 0

    def update(self, top: float) -> float:
        if top > self.best + self.min_delta:
            self.best, self.stale = top, 0
        else:
            self.stale += 1
        return self.best

    def stop_reason(self, searcher) -> str | None:
        """Why the loop should stop now (the method's own reason first), or None."""
        if searcher.stop_reason:
            return searcher.stop_reason
        if self.patience and self.stale >= self.patience:
            return f"no improvement > {self.min_delta:g} for {self.patience} generations"
        return None


def run_search(searcher: Searcher, objective: Objective, space: ParamSpace, budget: int,
               patience: int = 0, min_delta: float = 1e-6, show_progress: bool | None = None,
               on_batch: Callable[[int, np.ndarray, np.ndarray, Evaluation], None] | None = None,
               done: float = 0,
               evaluate: Callable[[int, np.ndarray, np.ndarray], Evaluation] | None = None,
               generation: int = 0, best: float = -np.inf, screening: Screening | None = None) -> SearchRun:
    """Run ``searcher`` until ``budget`` evaluations (counting ``done`` earlier ones).

    ``evaluate(gen, x, theta)`` defaults to ``objective.evaluate(theta)``; ``generation`` and
    ``best`` continue the generation count and best penalised value of earlier trials.
    ``screening`` turns on multi-fidelity screening (see the module docstring).
    """
    if screening is not None and not searcher.capabilities.rank_based:
        raise StudyError(f"[search] screening needs a method that learns from ranks (cem, cma, neighborhood, "
                         f"random, grad); {searcher.name} does not")
    if screening is not None:
        screening.bind(space.baseline)
    run = SearchRun()
    t0 = time.perf_counter()
    gen, watch = generation, Patience(patience, min_delta, best)
    with progress(budget, f"search {searcher.name}", show_progress, unit="evaluations") as bar:
        bar.update(advance=done, resumed=True)
        while budget - done >= 1 - 1e-9:
            x = np.atleast_2d(searcher.ask())
            remaining = budget - done
            gen += 1
            if screening is not None and len(x) > 1 and screening.cost(len(x)) <= remaining + 1e-9:
                theta_all = space.full(x)
                base = np.flatnonzero(np.all(np.abs(x - searcher.baseline) <= 1e-12, axis=1))
                keep, key, spent = screening.screen(theta_all, always=base)
                xs, theta = x[keep], theta_all[keep]
                ev = objective.evaluate(theta) if evaluate is None else evaluate(gen, xs, theta)
                lo = float(np.min(ev.penalised))
                span = max(1.0, float(np.max(ev.penalised)) - lo)
                # losers below every survivor, in screen order; survivors by their exact value
                vals = lo - span * (len(screening.fractions) + 2 - key)
                vals[keep] = ev.penalised
                searcher.tell(x, vals)
                run.screened += len(x) - len(keep)
                cost = spent + len(keep)
            else:
                xs = x[: int(np.floor(remaining + 1e-9))]
                theta = space.full(xs)
                ev = objective.evaluate(theta) if evaluate is None else evaluate(gen, xs, theta)
                searcher.tell_evaluation(xs, ev)
                cost = len(xs)
            run.unit.append(xs)
            run.theta.append(theta)
            run.evals.append(ev)
            run.generation.append(np.full(len(xs), gen))
            if on_batch is not None:
                on_batch(gen, xs, theta, ev)
            done += cost
            run.cost += cost
            best = watch.update(float(ev.penalised.max()))
            feas = ev.objective[ev.feasible]
            bar.update(advance=cost, info=f"best {best:.5f}" + ("" if feas.size else " (no feasible)"))
            reason = watch.stop_reason(searcher)
            if reason:
                run.stop_reason = reason
                break
    run.seconds = time.perf_counter() - t0
    return run
