"""Cross-Entropy Method (CEM) with a diagonal Gaussian in the unit cube.

Each generation samples ``population`` points from N(mean, diag(std^2)) (clipped to the
cube), keeps the best ``elite_frac`` of them and moves the distribution towards the
elites with smoothing ``alpha``::

    mean <- alpha     * mean(elites) + (1 - alpha)     * mean
    std  <- std_alpha * std(elites)  + (1 - std_alpha) * std  + noise,   then  std >= min_std

The std moves more slowly than the mean (``std_alpha`` 0.4 < ``alpha`` 0.7): with equal
smoothing the std shrinks ~0.65x a generation and CEM freezes before it reaches an optimum
that sits on a guardrail's edge.  In 10-20 dimensions a handful of elites also
underestimates the spread; ``noise`` (added to the std, decaying as
``noise * noise_decay^generation``, the "noisy CEM" of Szita & Lorincz 2006) keeps the
search from collapsing before it has crossed the space.

The search starts at ``x0`` (the online baseline, or a warm start) with ``init_std``.  When
every coordinate's std has collapsed to ``min_std`` the base class restarts it from the
best point seen with ``init_std * restart_shrink^r`` (r = restart number), up to
``restarts`` times, then stops with reason ``"converged"``.
"""

from __future__ import annotations

import numpy as np

from .base import Searcher


class CEM(Searcher):
    name = "cem"
    defaults = {"elite_frac": 0.2, "alpha": 0.7, "std_alpha": 0.4, "init_std": 0.25,
                "min_std": 0.005, "noise": 0.0, "noise_decay": 0.9, "restarts": 2, "restart_shrink": 0.5}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.elite_frac = self._opt("elite_frac", 0.0, 1.0)
        self.alpha = self._opt("alpha", 0.0, 1.0)
        self.std_alpha = self._opt("std_alpha", 0.0, 1.0)
        self.init_std = self._opt("init_std", 1e-6)
        self.min_std = self._opt("min_std", 0.0)
        self.noise = self._opt("noise", 0.0)
        self.noise_decay = self._opt("noise_decay", 0.0, 1.0)
        self.shrink = self._opt("restart_shrink", 0.0, 1.0)
        self.mean = self.x0.copy()
        self.std = np.full(self.dim, self.init_std)
        self._since_restart = 0

    def propose(self) -> np.ndarray:
        z = self.rng.standard_normal((self.population, self.dim))
        return np.clip(self.mean + z * self.std, 0.0, 1.0)

    def update(self, x: np.ndarray, values: np.ndarray) -> None:
        n_elite = max(2, int(np.ceil(self.elite_frac * len(values))))
        elite = x[np.argsort(-values, kind="stable")[:n_elite]]
        self.mean = self.alpha * elite.mean(axis=0) + (1 - self.alpha) * self.mean
        extra = self.noise * self.noise_decay ** self._since_restart
        self.std = np.maximum(self.std_alpha * elite.std(axis=0) + (1 - self.std_alpha) * self.std + extra,
                              self.min_std)
        self._since_restart += 1

    def collapsed(self) -> bool:
        return bool(np.all(self.std <= self.min_std * (1 + 1e-9)))

    def restart(self, start: np.ndarray, r: int) -> None:
        self.mean = start
        self.std = np.full(self.dim, self.init_std * self.shrink ** r)
        self._since_restart = 0
