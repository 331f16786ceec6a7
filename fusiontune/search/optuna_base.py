"""Optuna samplers behind the ask/tell protocol (shared by ``tpe`` and ``gp``).

``batch`` (an option of each method; 0 = the run's ``population``) is how many trials are
asked per kernel call.

The sampler works on its own *in-memory* Optuna study whose parameters are the free
parameters in unit-cube coordinates (``FloatDistribution(0, 1)``).  ``ask`` asks
``population`` trials at once (they stay RUNNING, so samplers that handle pending trials,
e.g. TPE with ``constant_liar``, spread the batch out), the runner scores the whole batch
in one kernel call, and the trials are completed with the objective ``J`` as their value
(Optuna maximises it) and the guardrail violation as an Optuna *constraint*
(``Trial.set_constraint``; ``<= 0`` is feasible).  Both samplers model constraints
separately from the objective, which suits them far better than the penalised value: the
penalty is a cliff of height ~100x the objective range, and a GP or a Parzen estimator
fitted across that cliff learns little about where the objective is high.  Persistence is not the sampler's business: the run's storage records
every scored batch like it does for every other method (:mod:`fusiontune.search.storage`);
a resumed run hands the stored trials back through :meth:`OptunaSearcher.load_history`,
which is all an Optuna sampler conditions on.
"""

from __future__ import annotations

import warnings

import numpy as np

from .base import Capabilities, Searcher


class OptunaSearcher(Searcher):
    """Base class: subclasses build the sampler in :meth:`make_sampler`."""

    #: guardrails as Optuna constraints; resumed from stored history rather than by replay
    capabilities = Capabilities(batch=True, constraints=True, replay=False, rank_based=False)
    asks_baseline = True  # enqueued as the first trial

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import optuna
        from optuna.distributions import FloatDistribution

        self.names = [f"x{j}" for j in range(self.dim)]
        self.dists = {n: FloatDistribution(0.0, 1.0) for n in self.names}
        self._study = None
        #: model guardrails as Optuna constraints; the runner turns it off for a study without
        #: guardrails (a constant-zero constraint only costs the GP a second model fit)
        self.constrained = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.make_sampler()  # validates the options now (the study's sampler is built on first use)
        batch = int(self._opt("batch", 0)) if "batch" in self.opts else 0
        self.batch = batch if batch > 0 else self.population
        self._pending: list = []
        self._told = 0
        # the online baseline is the first trial: samplers start from what runs today
        self._enqueue_baseline = True
        #: more start points of a warm start (enqueued after the baseline and x0)
        self.warm_points = np.empty((0, self.dim))

    def make_sampler(self):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def study(self):
        if self._study is None:
            import optuna

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning for sampler options
                self._study = optuna.create_study(direction="maximize", sampler=self.make_sampler())
        return self._study


    def propose(self) -> np.ndarray:
        n = self.batch
        if self.budget is not None:
            n = max(1, min(n, self.budget - self._told))
        if self._enqueue_baseline:
            self.study.enqueue_trial({k: float(v) for k, v in zip(self.names, self.baseline)})
            if not np.allclose(self.x0, self.baseline):  # a warm start: its point comes second
                self.study.enqueue_trial({k: float(v) for k, v in zip(self.names, self.x0)})
            for p in self.warm_points:  # the other surrogate end points of a warm start
                self.study.enqueue_trial({k: float(v) for k, v in zip(self.names, p)})
            self._enqueue_baseline = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._pending = [self.study.ask(self.dists) for _ in range(n)]
        return np.array([[t.params[k] for k in self.names] for t in self._pending], dtype=np.float64)

    def update(self, x: np.ndarray, values: np.ndarray, violation: np.ndarray | None = None) -> None:
        from optuna.trial import TrialState

        values = np.asarray(values, dtype=np.float64)
        viol = np.zeros(len(values)) if violation is None else np.asarray(violation, dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for t, v, c in zip(self._pending, values, viol):
                if self.constrained:
                    t.set_constraint("guardrails", float(c))
                self.study.tell(t, float(v))
            for t in self._pending[len(values):]:  # cut by the budget: never scored
                self.study.tell(t, state=TrialState.FAIL)
        self._told += len(values)
        self._pending = []

    def learn_evaluation(self, x: np.ndarray, ev) -> None:
        self.update(x, ev.objective, violation(ev))

    def load_history(self, x: np.ndarray, ev) -> None:
        """Condition the sampler on earlier (stored) trials of a resumed run."""
        from optuna.trial import create_trial

        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if not len(x):
            return
        trials = []
        for row, val, c in zip(x, ev.objective, violation(ev)):
            trials.append(create_trial(params={k: float(v) for k, v in zip(self.names, row)},
                                       distributions=self.dists, value=float(val),
                                       constraints={"guardrails": float(c)} if self.constrained else None))
        self.study.add_trials(trials)
        self._told += len(x)
        self._enqueue_baseline = False


def violation(ev) -> np.ndarray:
    """Total guardrail violation per candidate, recovered from an Evaluation (0 when feasible)."""
    v = np.asarray(ev.objective, dtype=np.float64) - np.asarray(ev.penalised, dtype=np.float64)
    return np.where(np.asarray(ev.feasible), 0.0, np.maximum(v, 1e-12))
