"""``warm_start = "grad"`` for the sampling methods: start at a point the exact kernel has
scored and found feasible.

The surrogate's end points (:func:`fusiontune.search.grad.surrogate_starts`) are only
estimates: on feed6 the one with the best *smoothed* value lies past the click guardrail on
the exact kernel, and a method started there spends its first generations on the
infeasible side (cma+grad reached 73.7% of the attainable gain at budget 300, far below
grad).  :class:`WarmStarted` therefore scores them first:

1. generation 1 holds the online baseline and every surrogate end point, scored exactly
   (they count in the budget, like every evaluation);
2. the method (``inner``) is then built with its start ``x0`` at the best *feasible* of
   them (the baseline when none is: it is feasible by definition) and runs for the rest of
   the budget.  Its own first generation holds the baseline and that start again (the
   base class's rule), so two evaluations are spent twice.

The wrapper is deterministic for a seed when the inner method is (``replay``), so runs
resume by replay as before.  Optuna's samplers (tpe, gp) do not go through it: they are
handed every end point as enqueued trials instead (:mod:`fusiontune.search.optuna_base`),
which their models condition on.
"""

from __future__ import annotations

import numpy as np

from .base import Searcher


class WarmStarted(Searcher):
    """``inner_cls`` started at the best feasible of ``candidates`` (unit points (S, D))."""

    asks_baseline = True

    def __init__(self, inner_cls, candidates: np.ndarray, *, dim: int, x0=None, seed: int = 0,
                 population: int = 32, options: dict | None = None, budget: int | None = None,
                 baseline: np.ndarray | None = None, objective=None, space=None):
        self.name = inner_cls.name
        self.capabilities = inner_cls.capabilities
        self.defaults = inner_cls.defaults
        base = baseline if baseline is not None else x0
        super().__init__(dim, base, seed, population, options, budget, base, objective, space)
        self.inner_cls = inner_cls
        self._kw = {"dim": dim, "seed": seed, "population": population, "options": dict(options or {}),
                    "baseline": self.baseline, "objective": objective, "space": space}
        # validate the method's options now, not after the first generation
        self.inner = inner_cls(x0=self.baseline, budget=budget, **self._kw)
        self.opts = self.inner.opts
        self.started = False
        self.start_point: np.ndarray | None = None
        cand = np.clip(np.atleast_2d(np.asarray(candidates, dtype=np.float64)), 0.0, 1.0)
        keep = []
        for c in cand:
            if not np.allclose(c, self.baseline, rtol=0, atol=1e-12) and \
                    not any(np.allclose(c, k, rtol=0, atol=1e-12) for k in keep):
                keep.append(c)
        self.candidates = np.array(keep).reshape(-1, self.dim)
        self.restarts = 0  # the inner method restarts itself

    # the runner sets this on methods that model guardrails as constraints
    @property
    def constrained(self):
        return getattr(self.inner, "constrained", False)

    @constrained.setter
    def constrained(self, value):
        self.inner.constrained = value

    def propose(self) -> np.ndarray:
        if not self.started:
            return np.vstack([self.baseline[None, :], self.candidates])
        return self.inner.ask()

    def _begin(self, x: np.ndarray, feasible: np.ndarray, values: np.ndarray) -> None:
        """Build the inner method at the best feasible point of the first generation."""
        score = np.where(feasible, values, -np.inf)
        start = x[int(np.argmax(score))] if np.isfinite(score).any() else self.baseline
        self.start_point = start.copy()
        spent = len(x)
        rest = None if self.budget is None else max(1, self.budget - spent)
        self.inner = self.inner_cls(x0=start, budget=rest, **self._kw)
        self.started = True

    def learn_evaluation(self, x: np.ndarray, ev) -> None:
        if not self.started:
            self._begin(x, np.asarray(ev.feasible, dtype=bool), np.asarray(ev.penalised, dtype=np.float64))
            return
        self.inner.tell_evaluation(x, ev)
        self.stop_reason = self.inner.stop_reason

    def update(self, x: np.ndarray, values: np.ndarray) -> None:
        # the screening path tells ranks only: the baseline is feasible, the best value wins
        if not self.started:
            self._begin(x, np.ones(len(x), dtype=bool), values)
            return
        self.inner.tell(x, values)
        self.stop_reason = self.inner.stop_reason
