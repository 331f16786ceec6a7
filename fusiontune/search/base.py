"""The ask/tell protocol every search method shares, and what the base class owns.

A method works in the unit cube ``[0, 1]^D`` of the free parameters (see
:class:`fusiontune.fusion.ParamSpace`) and *maximises*::

    searcher = make_searcher("cem", dim=D, x0=start_unit, seed=0, population=32, options={})
    while not searcher.stop_reason:
        X = searcher.ask()           # (P, D) points in [0, 1]^D
        ev = evaluate(X)             # an Evaluation: objective, per task, feasible, penalised
        searcher.tell_evaluation(X, ev)

``tell`` accepts any leading subset of what ``ask`` returned (the runner trims the last
population to the budget).

What the base class owns (a method only writes its own sampling and learning):

* **the baseline first**: the first generation always contains the online baseline
  (``baseline``, default ``x0``) in slot 0, and under a warm start (``x0`` != baseline) the
  start point in slot 1, unless the method asks for them itself (``asks_baseline``).  The baseline is always feasible, so
  the reported best is never below it;
* **generation counting** and **best tracking** (``best_x``, ``best_value``: the best
  penalised value told so far; only exactly scored candidates count);
* **restart on collapse**: after each generation the method's :meth:`Searcher.collapsed`
  says whether its sampling distribution has converged; the base class then calls
  :meth:`Searcher.restart` (from the best point, restart number ``r``) up to ``restarts``
  times (an option of every method that declares it), and after that stops with reason
  ``"converged"`` (plus the method's detail).

Each method declares its :class:`Capabilities` instead of being probed with ``hasattr``.
Methods are listed in the explicit table :data:`METHODS` (name -> "module:Class"),
imported on first use: registration does not depend on import side effects.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import StudyError

__all__ = ["Searcher", "Capabilities", "METHODS", "searcher_class", "make_searcher", "method_population"]

#: every search method: name -> "module:Class" (relative to this package)
METHODS: dict[str, str] = {
    "cem": "cem:CEM",
    "cma": "cmaes:CMA",
    "grad": "grad:Grad",
    "gp": "gp:GP",
    "grid": "grid:Grid",
    "neighborhood": "neighborhood:Neighborhood",
    "random": "random_search:RandomSearch",
    "tpe": "tpe:TPE",
}


@dataclass(frozen=True)
class Capabilities:
    """What a method can do; the runner and the pipeline read these, never ``hasattr``.

    ``batch``: it proposes many candidates per generation (scored in one kernel call).
    ``constraints``: it models the guardrails separately from the objective (it is told the
    violations; the runner turns that off for a study without guardrails).
    ``replay``: it is deterministic given the seed, so an interrupted run resumes by
    replaying its generations from the store; otherwise it resumes from the stored history.
    ``rank_based``: it learns only from the order of the values in a generation, so
    multi-fidelity screening (candidates ranked on subsamples) is sound for it.
    ``needs_objective``: it reads the objective itself (the surrogate of ``grad``).
    """

    batch: bool = True
    constraints: bool = False
    replay: bool = True
    rank_based: bool = True
    needs_objective: bool = False


class Searcher(ABC):
    """Base class: dim, start point, baseline, rng, population, parsed options, and the
    generation count, best tracking and restart-on-collapse every method shares."""

    name = "?"
    capabilities = Capabilities()
    #: option name -> default; unknown options in the study are errors
    defaults: dict[str, Any] = {}
    #: True when the method puts the baseline in its first generation itself
    asks_baseline = False

    def __init__(self, dim: int, x0: np.ndarray, seed: int = 0, population: int = 32,
                 options: dict[str, Any] | None = None, budget: int | None = None,
                 baseline: np.ndarray | None = None, objective=None, space=None):
        self.dim = int(dim)
        self.x0 = np.clip(np.asarray(x0, dtype=np.float64), 0.0, 1.0)
        self.baseline = self.x0.copy() if baseline is None else np.clip(np.asarray(baseline, dtype=np.float64), 0, 1)
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.population = int(population)
        self.budget = budget
        self.objective, self.space = objective, space
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise StudyError(f"[search.{self.name}]: unknown option {unknown[0]!r} "
                             f"(options: {', '.join(sorted(self.defaults)) or 'none'})")
        self.opts = {**self.defaults, **options}
        self.stop_reason: str | None = None
        self.generation = 0
        self.best_x = self.x0.copy()
        self.best_value = -np.inf
        self.restarts = int(self._opt("restarts", 0)) if "restarts" in self.defaults else 0
        self.restarts_done = 0
        self._baseline_slot = False

    # ------------------------------------------------------------------ the protocol
    def ask(self) -> np.ndarray:
        """The next generation (P, D); the first one holds the baseline."""
        x = np.array(np.atleast_2d(self.propose()), dtype=np.float64)
        if self.generation == 0 and not self.asks_baseline and len(x) and not self._baseline_slot:
            first = self.first_points()
            x[:len(first)] = first[:len(x)]
            self._baseline_slot = True
        return x

    def first_points(self) -> np.ndarray:
        """What the first generation must score: the baseline, then a warm start's point."""
        if np.allclose(self.x0, self.baseline, rtol=0, atol=1e-12):
            return self.baseline[None, :]
        return np.vstack([self.baseline, self.x0])

    def tell(self, x: np.ndarray, values: np.ndarray) -> None:
        """Learn from penalised values (larger is better) of a leading subset of ``ask()``."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        values = np.asarray(values, dtype=np.float64)
        self.generation += 1
        self._track(x, values)
        if len(values):
            self.update(x, values)
        self._after_update()

    def tell_evaluation(self, x: np.ndarray, ev) -> None:
        """What the runner calls with the full :class:`~fusiontune.objective.Evaluation`.
        Methods with ``capabilities.constraints`` override :meth:`learn_evaluation`."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        self.generation += 1
        self._track(x, np.asarray(ev.penalised, dtype=np.float64))
        if len(x):
            self.learn_evaluation(x, ev)
        self._after_update()

    def learn_evaluation(self, x: np.ndarray, ev) -> None:
        self.update(x, np.asarray(ev.penalised, dtype=np.float64))

    # ------------------------------------------------------------------ for subclasses
    @abstractmethod
    def propose(self) -> np.ndarray:
        """Candidates of the next generation (P, D) in the unit cube."""

    def update(self, x: np.ndarray, values: np.ndarray) -> None:
        """Learn from one scored generation (default: nothing, as random search)."""

    def collapsed(self) -> str | None:
        """A reason when the sampling distribution has converged (default: never)."""
        return None

    def restart(self, start: np.ndarray, r: int) -> None:
        """Start afresh around ``start`` (the best point so far), restart number ``r`` >= 1."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared logic
    def _track(self, x: np.ndarray, values: np.ndarray) -> None:
        if len(values):
            i = int(np.argmax(values))
            if values[i] > self.best_value:
                self.best_value, self.best_x = float(values[i]), x[i].copy()

    def _after_update(self) -> None:
        if self.stop_reason:
            return
        why = self.collapsed()
        if not why:
            return
        if self.restarts_done < self.restarts:
            self.restarts_done += 1
            self.restart(self.best_x.copy(), self.restarts_done)
        else:
            self.stop_reason = "converged" if why is True or why == "converged" else f"converged ({why})"

    def _opt(self, key: str, lo: float | None = None, hi: float | None = None) -> float:
        v = self.opts[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (lo is not None and v < lo) or \
                (hi is not None and v > hi):
            rng = f" in [{lo}, {hi}]" if hi is not None else (f" >= {lo}" if lo is not None else "")
            raise StudyError(f"[search.{self.name}] {key} must be a number{rng}, got {v!r}")
        return float(v)

    def _choice(self, key: str, allowed: tuple[str, ...]) -> str:
        v = self.opts[key]
        if v not in allowed:
            raise StudyError(f"[search.{self.name}] {key} must be one of {', '.join(map(repr, allowed))}, "
                             f"got {v!r}")
        return v


def method_population(population: int, options: dict | None) -> tuple[int, dict]:
    """A ``population`` key in a method's ``[search.<method>]`` table overrides the study-wide
    ``[search] population`` for that method (population-based methods differ in what suits
    them: CMA-ES and CEM converge in more, smaller generations, the neighbourhood search in
    fewer, larger ones).  Returns (population, options without that key)."""
    options = dict(options or {})
    if "population" in options:
        p = options.pop("population")
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise StudyError(f"population must be a whole number >= 1, got {p!r}")
        population = p
    return population, options


def searcher_class(method: str) -> type[Searcher]:
    """The class of a method named in :data:`METHODS` (imported on first use)."""
    if method not in METHODS:
        raise StudyError(f"unknown search method {method!r} (methods: {', '.join(sorted(METHODS))})")
    mod, cls = METHODS[method].split(":")
    return getattr(importlib.import_module(f"{__package__}.{mod}"), cls)


def make_searcher(method: str, **kwargs) -> Searcher:
    return searcher_class(method)(**kwargs)
