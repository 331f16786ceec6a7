"""CMA-ES through pycma's ask/tell interface (``--method cma``).

``cma.CMAEvolutionStrategy`` runs in the unit cube with bounds ``[0, 1]``, starts at the
online baseline with step size ``sigma0`` and samples ``population`` candidates per
generation (pycma's ``popsize``).  pycma *minimises*, so it is told ``-value``.  Its normal
draws come from this searcher's own seeded generator (pycma's ``randn`` option) and
pycma's global ``numpy.random`` seeding is switched off, so a run is reproducible from
the seed alone and two searchers in one process do not disturb each other.

The objective (AUC / GAUC) is piecewise constant at fine scales, so pycma's own
tolerances would spend the budget resolving differences of no consequence: ``tolx``
(in unit-cube coordinates) ends a descent earlier.  When pycma stops (tolx, flat fitness,
...), the search *restarts* from the best point seen with ``sigma0 * restart_shrink^r``,
up to ``restarts`` times, and then stops with reason ``"converged (cma: <criterion>)"``.
"""

from __future__ import annotations

import numpy as np

from .base import Searcher, register


@register("cma")
class CMA(Searcher):
    defaults = {"sigma0": 0.1, "tolx": 1e-3, "restarts": 2, "restart_shrink": 0.5}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sigma0 = self._opt("sigma0", 1e-6, 1.0)
        self.tolx = self._opt("tolx", 0.0)
        self.restarts = int(self._opt("restarts", 0))
        self.shrink = self._opt("restart_shrink", 0.0, 1.0)
        self.restarts_done = 0
        self.best_x = self.x0.copy()
        self.best_value = -np.inf
        self._asked: list[np.ndarray] = []
        self._start(self.x0, self.sigma0)

    def _start(self, x0: np.ndarray, sigma: float) -> None:
        import cma

        rng = self.rng
        opts = {"bounds": [0.0, 1.0], "popsize": self.population, "seed": np.nan,
                "randn": lambda lam, n: rng.standard_normal((lam, n)), "tolx": self.tolx,
                "verbose": -9, "verb_log": 0, "verb_disp": 0, "verb_filenameprefix": "/dev/null/"}
        # pycma cannot start exactly on a bound of the box
        self.es = cma.CMAEvolutionStrategy(np.clip(x0, 1e-9, 1 - 1e-9).tolist(), sigma, opts)

    def ask(self) -> np.ndarray:
        self._asked = self.es.ask()
        return np.clip(np.array(self._asked, dtype=np.float64), 0.0, 1.0)

    def tell(self, x: np.ndarray, values: np.ndarray) -> None:
        self.generation += 1
        values = np.asarray(values, dtype=np.float64)
        i = int(np.argmax(values))
        if values[i] > self.best_value:
            self.best_value, self.best_x = float(values[i]), np.asarray(x[i], dtype=np.float64).copy()
        if len(values) < len(self._asked):  # the budget cut the last generation: nothing to learn from
            return
        self.es.tell(self._asked, (-values).tolist())
        stop = self.es.stop()
        if stop:
            if self.restarts_done < self.restarts:
                self.restarts_done += 1
                self._start(self.best_x, self.sigma0 * self.shrink ** self.restarts_done)
            else:
                self.stop_reason = f"converged (cma: {', '.join(sorted(stop))})"
