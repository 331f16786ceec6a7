"""CMA-ES through pycma's ask/tell interface (``--method cma``), with restarts.

``cma.CMAEvolutionStrategy`` runs in the unit cube with bounds ``[0, 1]``: the unit cube
*is* the scaled coordinate system, so the step size ``sigma0`` is a share of every
parameter's bound width (a sigma per bound: 0.05 is 5% of ``a``'s range and 5% of
``b``'s).  A small first step suits a start at today's weights: on feed6 (11 free
parameters) at budget 300, sigma0 0.03-0.05 reached ~60-68% of the attainable gain over 4
seeds, 0.1 55%, 0.15 ~35% and 0.3 30%; pycma's step-size adaptation widens it when the
optimum is far.  It starts at ``x0`` (the online baseline, or a warm start) and samples
``population`` candidates per generation (pycma's ``popsize``).  The online baseline is
injected into the first generation (pycma's ``inject``), so it is always scored (and so is
a warm start's point).  pycma
*minimises*, so it is told ``-value``.  Its normal draws come from this searcher's own
seeded generator (pycma's ``randn`` option) and pycma's global ``numpy.random`` seeding is
switched off, so a run is reproducible from the seed alone.

The objective (AUC / GAUC) is piecewise constant at fine scales, so pycma's own
tolerances would spend the budget resolving differences of no consequence: ``tolx`` (in
unit-cube coordinates) ends a descent earlier.  When pycma stops (tolx, flat fitness, ...)
the base class restarts it from the best point seen, ``restarts`` times at most, by
``restart_mode``:

* ``"ipop"`` (default): full ``sigma0`` and the population multiplied by
  ``popsize_factor`` each time (IPOP-CMA-ES, Auger & Hansen 2005: a larger population
  smooths a rugged landscape);
* ``"bipop"``: alternates the IPOP restart with a local one (a random, smaller sigma and
  the base population), as BIPOP-CMA-ES does;
* ``"local"``: ``sigma0 * restart_shrink^r`` and the same population.

and then stops with reason ``"converged (cma: <criterion>)"``.
"""

from __future__ import annotations

import numpy as np

from .base import Searcher


class CMA(Searcher):
    name = "cma"
    asks_baseline = True
    defaults = {"sigma0": 0.05, "tolx": 1e-3, "restarts": 4, "restart_mode": "ipop", "popsize_factor": 2.0,
                "restart_shrink": 0.5, "start": "x0", "sigma_scale": "far"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sigma0 = self._opt("sigma0", 1e-6, 1.0)
        self.tolx = self._opt("tolx", 0.0)
        self.mode = self._choice("restart_mode", ("ipop", "bipop", "local"))
        self.factor = self._opt("popsize_factor", 1.0)
        self.shrink = self._opt("restart_shrink", 0.0, 1.0)
        self.start = self._choice("start", ("x0", "centre"))
        self.sigma_scale = self._choice("sigma_scale", ("width", "far"))
        self.base_population = self.population
        self._asked: list[np.ndarray] = []
        self._start(np.full(self.dim, 0.5) if self.start == "centre" else self.x0, self.sigma0, self.population)
        # inject genotypes whose bounded phenotype is the point itself (pycma maps near-bound values)
        self.es.inject([self.es.boundary_handler.inverse(p) for p in self.first_points()], force=True)

    def _start(self, x0: np.ndarray, sigma: float, popsize: int) -> None:
        import cma

        rng = self.rng
        self.population = int(popsize)
        opts = {"bounds": [0.0, 1.0], "popsize": self.population, "seed": np.nan,
                "randn": lambda lam, n: rng.standard_normal((lam, n)), "tolx": self.tolx,
                "verbose": -9, "verb_log": 0, "verb_disp": 0, "verb_filenameprefix": "/dev/null/"}
        if self.sigma_scale == "far":
            # a step per parameter scaled to the distance to its farther bound (from x0 the
            # far side is where a parameter has room to go), normalised to mean 1
            far = np.maximum(x0, 1.0 - x0)
            opts["CMA_stds"] = (far / far.mean()).tolist()
        # pycma cannot start exactly on a bound of the box
        self.es = cma.CMAEvolutionStrategy(np.clip(x0, 1e-9, 1 - 1e-9).tolist(), sigma, opts)

    def propose(self) -> np.ndarray:
        self._asked = self.es.ask()
        x = np.clip(np.array(self._asked, dtype=np.float64), 0.0, 1.0)
        if self.generation == 0:  # exactly the injected points (pycma's round trip is within ~1e-17)
            first = self.first_points()
            x[:len(first)] = first
        return x

    def update(self, x: np.ndarray, values: np.ndarray) -> None:
        if len(values) < len(self._asked):  # the budget cut the last generation: nothing to learn from
            return
        self.es.tell(self._asked, (-values).tolist())

    def collapsed(self) -> str | None:
        stop = self.es.stop()
        return f"cma: {', '.join(sorted(stop))}" if stop else None

    def restart(self, start: np.ndarray, r: int) -> None:
        big = int(round(self.base_population * self.factor ** r))
        if self.mode == "local":
            self._start(start, self.sigma0 * self.shrink ** r, self.base_population)
        elif self.mode == "bipop" and r % 2 == 0:
            self._start(start, self.sigma0 * 10 ** (-2 * self.rng.random()), self.base_population)
        else:
            self._start(start, self.sigma0, big)
