"""Gaussian-neighbourhood iteration around today's online weights.

The offline search that ranking teams run by hand, made systematic:

1. start from the online baseline x0;
2. sample ``population`` neighbours from N(mean, diag(sigma^2));
3. keep the ``top_k`` best;
4. refit mean and variance on them and go back to 2.  The variance may be smoothed,
   ``sigma <- sigma_alpha * std(top) + (1 - sigma_alpha) * sigma`` (default 1: the plain
   refit), which keeps it from collapsing after a few generations.

Every sample is kept inside a **trust region** around the baseline: each free parameter
stays within ``radius`` (a fraction of its bound width, in unit-cube coordinates) of its
online value, so the result never strays far from what is running today; the ranking
change an A/B test has to absorb stays small.  Sigma never falls below ``min_sigma``;
when all of it has collapsed there the iteration restarts from the best point seen with
``sigma * restart_shrink^r`` (r = restart number), up to ``restarts`` times (a collapse
after a handful of generations is usually premature: the top-k refit has no smoothing),
and then stops with reason ``"converged"``.
"""

from __future__ import annotations

import numpy as np

from .base import Searcher, register


@register("neighborhood")
class Neighborhood(Searcher):
    defaults = {"radius": 0.25, "sigma": 0.08, "top_k": 0, "sigma_alpha": 1.0, "min_sigma": 0.01,
                "restarts": 2, "restart_shrink": 0.5}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.radius = self._opt("radius", 0.0, 1.0)
        self.sigma = np.full(self.dim, self._opt("sigma", 1e-6))
        top_k = int(self._opt("top_k", 0))
        self.top_k = top_k if top_k > 0 else max(2, self.population // 4)
        self.min_sigma = self._opt("min_sigma", 0.0)
        self.sigma_alpha = self._opt("sigma_alpha", 0.0, 1.0)
        self.lo = np.clip(self.x0 - self.radius, 0.0, 1.0)
        self.hi = np.clip(self.x0 + self.radius, 0.0, 1.0)
        self.mean = self.x0.copy()
        self.sigma0 = float(self.sigma[0]) if self.dim else 0.0
        self.restarts = int(self._opt("restarts", 0))
        self.shrink = self._opt("restart_shrink", 0.0, 1.0)
        self.restarts_done = 0
        self.best_x = self.x0.copy()
        self.best_value = -np.inf

    def ask(self) -> np.ndarray:
        z = self.rng.standard_normal((self.population, self.dim))
        return np.clip(self.mean + z * self.sigma, self.lo, self.hi)

    def tell(self, x: np.ndarray, values: np.ndarray) -> None:
        self.generation += 1
        i = int(np.argmax(values))
        if values[i] > self.best_value:
            self.best_value, self.best_x = float(values[i]), x[i].copy()
        top = x[np.argsort(-values, kind="stable")[: min(self.top_k, len(values))]]
        self.mean = top.mean(axis=0)
        sa = self.sigma_alpha
        self.sigma = np.maximum(sa * top.std(axis=0) + (1 - sa) * self.sigma, self.min_sigma)
        if np.all(self.sigma <= self.min_sigma * (1 + 1e-9)):
            if self.restarts_done < self.restarts:
                self.restarts_done += 1
                self.mean = self.best_x.copy()
                self.sigma = np.full(self.dim, self.sigma0 * self.shrink ** self.restarts_done)
            else:
                self.stop_reason = "converged"
