"""Cross-Entropy Method (CEM) with a diagonal Gaussian in the unit cube.

Each generation samples ``population`` points from N(mean, diag(std^2)) (clipped to the
cube), keeps the best ``elite_frac`` of them and moves the distribution towards the
elites with smoothing ``alpha``::

    mean <- alpha     * mean(elites) + (1 - alpha)     * mean
    std  <- std_alpha * std(elites)  + (1 - std_alpha) * std,   then  std >= min_std

The std moves more slowly than the mean (``std_alpha`` 0.4 < ``alpha`` 0.7): with equal
smoothing the std shrinks ~0.65x a generation and CEM freezes before it reaches an optimum
that sits on a guardrail's edge (measured on the demo at budget 300: 96% of the best gain
with equal smoothing, 99.7% with 0.4).

The search starts at the online baseline with ``init_std``.  When every coordinate's std
has collapsed to ``min_std`` the distribution has converged: CEM then *restarts* from the
best point seen so far with ``init_std * restart_shrink^r`` (r = restart number), up to
``restarts`` times, and after that stops with reason ``"converged"``.
"""

from __future__ import annotations

import numpy as np

from .base import Searcher, register


@register("cem")
class CEM(Searcher):
    defaults = {"elite_frac": 0.2, "alpha": 0.7, "std_alpha": 0.4, "init_std": 0.25,
                "min_std": 0.005, "restarts": 2, "restart_shrink": 0.5}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.elite_frac = self._opt("elite_frac", 0.0, 1.0)
        self.alpha = self._opt("alpha", 0.0, 1.0)
        self.std_alpha = self._opt("std_alpha", 0.0, 1.0)
        self.init_std = self._opt("init_std", 1e-6)
        self.min_std = self._opt("min_std", 0.0)
        self.restarts = int(self._opt("restarts", 0))
        self.shrink = self._opt("restart_shrink", 0.0, 1.0)
        self.mean = self.x0.copy()
        self.std = np.full(self.dim, self.init_std)
        self.restarts_done = 0
        self.best_x = self.x0.copy()
        self.best_value = -np.inf

    def ask(self) -> np.ndarray:
        z = self.rng.standard_normal((self.population, self.dim))
        return np.clip(self.mean + z * self.std, 0.0, 1.0)

    def tell(self, x: np.ndarray, values: np.ndarray) -> None:
        self.generation += 1
        i = int(np.argmax(values))
        if values[i] > self.best_value:
            self.best_value, self.best_x = float(values[i]), x[i].copy()
        n_elite = max(2, int(np.ceil(self.elite_frac * len(values))))
        elite = x[np.argsort(-values, kind="stable")[:n_elite]]
        self.mean = self.alpha * elite.mean(axis=0) + (1 - self.alpha) * self.mean
        self.std = np.maximum(self.std_alpha * elite.std(axis=0) + (1 - self.std_alpha) * self.std, self.min_std)
        if np.all(self.std <= self.min_std * (1 + 1e-9)):
            if self.restarts_done < self.restarts:
                self.restarts_done += 1
                self.mean = self.best_x.copy()
                self.std = np.full(self.dim, self.init_std * self.shrink ** self.restarts_done)
            else:
                self.stop_reason = "converged"
