"""The ask/tell protocol every search method shares.

A method works in the unit cube ``[0, 1]^D`` of the free parameters (see
:class:`fusiontune.fusion.ParamSpace`) and *maximises*:

    searcher = make_searcher("cem", dim=D, x0=baseline_unit, seed=0, population=32, options={})
    while not done:
        X = searcher.ask()           # (P, D) points in [0, 1]^D
        values = evaluate(X)         # (P,) penalised objective, larger is better
        searcher.tell(X, values)
        if searcher.stop_reason: break

``tell`` accepts any subset of what ``ask`` returned (the runner trims the last
population to the budget).  Methods are registered in :data:`METHODS` by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np

from ..errors import InputError

__all__ = ["Searcher", "METHODS", "register", "make_searcher"]

METHODS: dict[str, Callable[..., "Searcher"]] = {}


def register(name: str):
    def deco(cls):
        METHODS[name] = cls
        cls.name = name
        return cls

    return deco


class Searcher(ABC):
    """Base class: holds dim, start point, rng, population size and parsed options."""

    name = "?"
    #: option name -> default; unknown options in the study are errors
    defaults: dict[str, Any] = {}

    def __init__(self, dim: int, x0: np.ndarray, seed: int = 0, population: int = 32,
                 options: dict[str, Any] | None = None, budget: int | None = None):
        self.dim = int(dim)
        self.x0 = np.clip(np.asarray(x0, dtype=np.float64), 0.0, 1.0)
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.population = int(population)
        self.budget = budget
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise InputError(f"[search.{self.name}]: unknown option {unknown[0]!r} "
                             f"(options: {', '.join(sorted(self.defaults)) or 'none'})")
        self.opts = {**self.defaults, **options}
        self.stop_reason: str | None = None
        self.generation = 0

    @abstractmethod
    def ask(self) -> np.ndarray: ...

    @abstractmethod
    def tell(self, x: np.ndarray, values: np.ndarray) -> None: ...

    def tell_evaluation(self, x: np.ndarray, ev) -> None:
        """What the runner calls: the full :class:`~fusiontune.objective.Evaluation` of the
        batch.  Methods that model guardrails separately (Optuna's constrained samplers)
        override it; the rest learn from the penalised value."""
        self.tell(x, ev.penalised)

    def _opt(self, key: str, lo: float | None = None, hi: float | None = None) -> float:
        v = self.opts[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (lo is not None and v < lo) or \
                (hi is not None and v > hi):
            rng = f" in [{lo}, {hi}]" if hi is not None else (f" >= {lo}" if lo is not None else "")
            raise InputError(f"[search.{self.name}] {key} must be a number{rng}, got {v!r}")
        return float(v)


def method_population(population: int, options: dict | None) -> tuple[int, dict]:
    """A ``population`` key in a method's ``[search.<method>]`` table overrides the study-wide
    ``[search] population`` for that method (population-based methods differ in what suits
    them: CMA-ES and CEM converge in more, smaller generations, the neighbourhood search in
    fewer, larger ones).  Returns (population, options without that key)."""
    options = dict(options or {})
    if "population" in options:
        p = options.pop("population")
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise InputError(f"population must be a whole number >= 1, got {p!r}")
        population = p
    return population, options


def make_searcher(method: str, **kwargs) -> Searcher:
    from . import cem, cmaes, gp, grid, neighborhood, random_search, tpe  # noqa: F401  (registration)

    if method not in METHODS:
        raise InputError(f"unknown search method {method!r} (methods: {', '.join(sorted(METHODS))})")
    return METHODS[method](**kwargs)
