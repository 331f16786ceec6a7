"""Uniform random search in the unit cube (``--method random``): the honest baseline.

Every generation draws ``population`` points uniformly from ``[0, 1]^D`` with the seeded
generator (the first generation holds the online baseline, as for every method); nothing
is learned.  A method that does not beat it at the same budget is not earning its
complexity.  No options.
"""

from __future__ import annotations

import numpy as np

from .base import Searcher


class RandomSearch(Searcher):
    name = "random"
    defaults: dict = {}

    def propose(self) -> np.ndarray:
        return self.rng.random((self.population, self.dim))
