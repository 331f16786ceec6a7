"""The search loop: ask -> evaluate the whole population in one kernel call -> tell.

:func:`run_search` drives any registered method against an
:class:`~fusiontune.objective.Objective` until the evaluation budget is spent, the method
says it has converged, or ``patience`` generations pass without the best penalised value
improving by more than ``min_delta`` (``patience = 0`` turns that off).  It records every
evaluated candidate; ``on_batch`` (optional) sees each batch as it is scored, which is
how trials reach a storage.  ``evaluate`` (optional) replaces ``objective.evaluate``: the
storage layer uses it to hand back stored evaluations when a run is resumed by replay
(see :mod:`fusiontune.search.storage`), so replayed generations cost no kernel time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..fusion import ParamSpace
from ..objective import Evaluation, Objective
from ..progress import progress
from .base import Searcher

__all__ = ["SearchRun", "run_search"]


@dataclass
class SearchRun:
    unit: list[np.ndarray] = field(default_factory=list)  # (P, D) batches
    theta: list[np.ndarray] = field(default_factory=list)  # (P, n_params)
    evals: list[Evaluation] = field(default_factory=list)
    generation: list[np.ndarray] = field(default_factory=list)
    stop_reason: str = "budget"
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return int(sum(len(g) for g in self.generation))

    def cat(self, name: str) -> np.ndarray:
        if name in ("unit", "theta", "generation"):
            parts = getattr(self, name)
        else:
            parts = [getattr(e, name) for e in self.evals]
        return np.concatenate(parts) if parts else np.empty(0)


def run_search(searcher: Searcher, objective: Objective, space: ParamSpace, budget: int,
               patience: int = 0, min_delta: float = 1e-6, show_progress: bool | None = None,
               on_batch: Callable[[int, np.ndarray, np.ndarray, Evaluation], None] | None = None,
               done: int = 0,
               evaluate: Callable[[int, np.ndarray, np.ndarray], Evaluation] | None = None,
               generation: int = 0, best: float = -np.inf) -> SearchRun:
    """Run ``searcher`` until ``budget`` evaluations (counting ``done`` earlier ones).

    ``evaluate(gen, x, theta)`` defaults to ``objective.evaluate(theta)``; ``generation`` and
    ``best`` continue the generation count and best penalised value of earlier trials.
    """
    run = SearchRun()
    t0 = time.perf_counter()
    stale, gen = 0, generation
    with progress(budget, f"search {searcher.name}", show_progress) as bar:
        bar.update(advance=done)
        while done < budget:
            x = np.atleast_2d(searcher.ask())[: budget - done]
            theta = space.full(x)
            gen += 1
            ev = objective.evaluate(theta) if evaluate is None else evaluate(gen, x, theta)
            searcher.tell_evaluation(x, ev)
            run.unit.append(x)
            run.theta.append(theta)
            run.evals.append(ev)
            run.generation.append(np.full(len(x), gen))
            if on_batch is not None:
                on_batch(gen, x, theta, ev)
            done += len(x)
            top = float(ev.penalised.max())
            if top > best + min_delta:
                best, stale = top, 0
            else:
                stale += 1
            feas = ev.objective[ev.feasible]
            bar.update(advance=len(x), info=f"best {best:.5f}" + ("" if feas.size else " (no feasible)"))
            if searcher.stop_reason:
                run.stop_reason = searcher.stop_reason
                break
            if patience and stale >= patience:
                run.stop_reason = f"no improvement > {min_delta:g} for {patience} generations"
                break
    run.seconds = time.perf_counter() - t0
    return run
