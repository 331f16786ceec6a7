"""Gaussian-neighbourhood iteration around today's online weights.

The offline search that ranking teams run by hand, made systematic:

1. start from ``x0`` (the online baseline, or a warm start);
2. sample ``population`` neighbours from N(mean, diag(sigma^2));
3. keep the ``top_k`` best;
4. refit mean and variance on them and go back to 2.  The variance may be smoothed,
   ``sigma <- sigma_alpha * std(top) + (1 - sigma_alpha) * sigma`` (default 1: the plain
   refit), which keeps it from collapsing after a few generations.

Every sample is kept inside a **trust region** around the baseline: each free parameter
stays within ``radius`` (a fraction of its bound width, in unit-cube coordinates) of its
online value, so the result stays close to what is running today.  The region **grows**
where it binds: when the best point sits at an edge of the region (within
``edge`` x radius of it) and that edge is not a bound of the parameter, that side of the
region widens by ``grow`` (up to the bounds), so an optimum outside the first radius is
still reached, one step at a time.  A warm start outside the region widens it to include
the start.  Sigma never falls below ``min_sigma``; when all of it has collapsed there the
base class restarts the iteration from the best point with ``sigma * restart_shrink^r``,
up to ``restarts`` times, and then stops with reason ``"converged"``.
"""

from __future__ import annotations

import numpy as np

from .base import Searcher


class Neighborhood(Searcher):
    name = "neighborhood"
    defaults = {"radius": 0.25, "sigma": 0.08, "top_k": 0, "sigma_alpha": 1.0, "min_sigma": 0.01,
                "grow": 1.5, "edge": 0.1, "restarts": 2, "restart_shrink": 0.5}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.radius = self._opt("radius", 0.0, 1.0)
        self.sigma0 = self._opt("sigma", 1e-6)
        self.sigma = np.full(self.dim, self.sigma0)
        top_k = int(self._opt("top_k", 0))
        self.top_k = top_k if top_k > 0 else max(2, self.population // 4)
        self.min_sigma = self._opt("min_sigma", 0.0)
        self.sigma_alpha = self._opt("sigma_alpha", 0.0, 1.0)
        self.grow = self._opt("grow", 1.0)
        self.edge = self._opt("edge", 0.0, 1.0)
        self.shrink = self._opt("restart_shrink", 0.0, 1.0)
        # per side: how far the region reaches below / above the baseline
        self.reach_lo = np.full(self.dim, self.radius)
        self.reach_hi = np.full(self.dim, self.radius)
        d = self.x0 - self.baseline  # a warm start outside the region widens it
        self.reach_lo = np.maximum(self.reach_lo, -d + self.sigma0)
        self.reach_hi = np.maximum(self.reach_hi, d + self.sigma0)
        self.mean = self.x0.copy()

    @property
    def lo(self) -> np.ndarray:
        return np.clip(self.baseline - self.reach_lo, 0.0, 1.0)

    @property
    def hi(self) -> np.ndarray:
        return np.clip(self.baseline + self.reach_hi, 0.0, 1.0)

    def propose(self) -> np.ndarray:
        z = self.rng.standard_normal((self.population, self.dim))
        return np.clip(self.mean + z * self.sigma, self.lo, self.hi)

    def update(self, x: np.ndarray, values: np.ndarray) -> None:
        top = x[np.argsort(-values, kind="stable")[: min(self.top_k, len(values))]]
        self.mean = top.mean(axis=0)
        sa = self.sigma_alpha
        self.sigma = np.maximum(sa * top.std(axis=0) + (1 - sa) * self.sigma, self.min_sigma)
        lo, hi, b = self.lo, self.hi, self.best_x
        at_lo = (lo > 0.0) & (b - lo <= self.edge * self.reach_lo)
        at_hi = (hi < 1.0) & (hi - b <= self.edge * self.reach_hi)
        self.reach_lo = np.where(at_lo, self.reach_lo * self.grow, self.reach_lo)
        self.reach_hi = np.where(at_hi, self.reach_hi * self.grow, self.reach_hi)

    def collapsed(self) -> bool:
        return bool(np.all(self.sigma <= self.min_sigma * (1 + 1e-9)))

    def restart(self, start: np.ndarray, r: int) -> None:
        self.mean = start
        self.sigma = np.full(self.dim, self.sigma0 * self.shrink ** r)
