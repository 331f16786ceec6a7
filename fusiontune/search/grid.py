"""Grid search over the unit cube (``--method grid``): the other honest baseline.

The grid has ``points`` values per free parameter, evenly spaced and including both
bounds (``numpy.linspace(0, 1, points)``); by default ``points = floor(budget ** (1/D))``,
the finest full grid the budget pays for.  The online baseline is evaluated first, then
the grid points in an order shuffled with the seed (so a budget cut, or early stopping,
leaves a spread-out subset rather than one corner).  When every point has been visited
the method stops with reason ``"grid exhausted"``.

A grid with fewer than 3 points per parameter holds only the corners of the box (every
parameter at a bound): it is refused with one line rather than run (in 11 dimensions a
budget of 1,000 pays for 2 points per axis).  Use another method in high dimension.
"""

from __future__ import annotations

import numpy as np

from ..errors import StudyError
from .base import Searcher


class Grid(Searcher):
    name = "grid"
    asks_baseline = True
    defaults = {"points": 0}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        pts = int(self._opt("points", 0))
        budget = self.budget or 1000
        if pts == 0:
            pts = int(np.floor(budget ** (1.0 / self.dim) + 1e-9))
            if pts < 3:
                raise StudyError(f"[search.grid] a budget of {budget} pays for only {pts} point(s) per parameter "
                                 f"in {self.dim} dimensions (a grid of corners); set [search] budget >= "
                                 f"{3 ** self.dim} or use another method")
        if pts < 3:
            raise StudyError(f"[search.grid] points must be 0 (auto) or >= 3 (2 points per parameter is a grid "
                             f"of corners), got {pts}")
        if pts ** self.dim > 10_000_000:
            raise StudyError(f"[search.grid] points = {pts} in {self.dim} dimensions makes "
                             f"{pts ** self.dim} grid points; use fewer points (e.g. points = 5)")
        self.points = pts
        axes = [np.linspace(0.0, 1.0, pts)] * self.dim
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, self.dim)
        grid = grid[self.rng.permutation(len(grid))]
        self.queue = np.vstack([self.baseline[None, :], grid])
        self.pos = 0

    def propose(self) -> np.ndarray:
        return self.queue[self.pos:self.pos + self.population]

    def update(self, x: np.ndarray, values: np.ndarray) -> None:
        self.pos += len(x)
        if self.pos >= len(self.queue):
            self.stop_reason = "grid exhausted"
