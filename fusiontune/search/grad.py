"""Gradient search on a smooth surrogate of the objective, refined on the exact kernel
(``--method grad``).

AUC and GAUC are step functions of the weights, so no gradient exists; their smooth
stand-in (:mod:`fusiontune.surrogate`: a sigmoid over sampled positive/negative pairs
within tasks and, for GAUC, within groups) has one, and every fusion formula is
differentiable in its parameters.  The method:

1. **surrogate phase** (no exact evaluation): from ``starts`` points (``x0``, then points
   drawn around it with spread ``start_spread`` in unit coordinates) it maximises the
   smoothed, business-weighted objective with L-BFGS-B (scipy) over the free parameters
   in the unit cube (bounds are the box; the reference weight stays pinned).  Guardrails
   are a squared-hinge penalty (``penalty * sum w`` per squared unit of violation; a
   squared hinge keeps the gradient continuous, which L-BFGS's line search needs), on
   drops measured against the *smoothed* baseline and tightened by ``margin`` (a share of
   each ``max_drop``), since the surrogate's drop is an estimate; then, from that end
   point, ``margin_steps`` more passes loosen the margin step by step to 0 (each end point
   is a candidate: the exact kernel decides how close to a guardrail is still feasible);
2. the first generation scores, exactly, the baseline and the end point of every start;
3. **refinement**: CMA-ES (:mod:`fusiontune.search.cmaes`) from the best exact end point
   with step ``refine_sigma``, for the rest of the budget.

Every number reported comes from the exact kernel; the surrogate only proposes.  Options
(``[search.grad]``): ``pairs`` (sampled pairs per task; all pairs when a task has fewer),
``temperature`` (sigmoid width as a share of the fused scores' standard deviation),
``final_temperature`` (when different, a second L-BFGS-B pass at it from each end point),
``starts`` (each with its own sample of pairs), ``start_spread``, ``maxiter`` (L-BFGS-B
iterations per pass), ``margin``, ``margin_steps``,
``penalty``, ``refine_sigma``, ``restarts`` (of the refining CMA-ES), ``threads`` (torch
threads during the surrogate phase, restored afterwards).

:func:`surrogate_starts` is the surrogate phase alone: ``warm_start = "grad"`` uses it to
start any other method at the surrogate's optimum.
"""

from __future__ import annotations

import numpy as np

from ..errors import StudyError
from .base import Capabilities, Searcher

SURROGATE_DEFAULTS = {"pairs": 50_000, "temperature": 0.05, "final_temperature": 0.05, "starts": 2,
                      "start_spread": 0.15, "maxiter": 150, "margin": 0.3, "margin_steps": 3, "penalty": 1e4,
                      "threads": 1}


def _check(opts: dict, where: str) -> dict:
    out = {}
    for key, lo, hi in (("pairs", 1, None), ("temperature", 1e-6, None), ("final_temperature", 1e-6, None),
                        ("starts", 1, None), ("margin_steps", 0, None),
                        ("start_spread", 0.0, 1.0), ("maxiter", 1, None), ("margin", 0.0, 1.0),
                        ("penalty", 0.0, None), ("threads", 1, None)):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo or (hi is not None and v > hi):
            rng = f" in [{lo}, {hi}]" if hi is not None else f" >= {lo}"
            raise StudyError(f"{where} {key} must be a number{rng}, got {v!r}")
        out[key] = v
    for key in ("pairs", "starts", "maxiter", "threads", "margin_steps"):
        out[key] = int(out[key])
    return out


def surrogate_starts(objective, space, x0: np.ndarray, seed: int = 0, options: dict | None = None,
                     where: str = "[search.grad]") -> tuple[np.ndarray, np.ndarray]:
    """The surrogate phase: L-BFGS-B on the smoothed objective from ``starts`` points.

    Returns ``(points, values)``: the end points (S, D) in unit coordinates and their
    smoothed penalised values (S,), best first.  Deterministic for a seed.
    """
    try:
        import torch
    except ImportError:
        from ..errors import missing_dependency

        raise missing_dependency("torch", "method 'grad' (and warm_start = \"grad\")",
                                 "pip install 'torch==2.13.0'") from None
    from scipy import optimize

    from ..surrogate import FormulaSurrogate, smooth_objective

    opts = _check({**SURROGATE_DEFAULTS, **(options or {})}, where)
    rng = np.random.default_rng([seed, 1])
    threads = torch.get_num_threads()
    torch.set_num_threads(opts["threads"])
    try:
        pen = opts["penalty"] * float(np.sum(objective.w))
        free_idx = torch.as_tensor([space.all_names.index(k) for k in space.free])
        x0 = np.clip(np.asarray(x0, dtype=np.float64), 0.0, 1.0)
        starts = [x0] + [np.clip(x0 + opts["start_spread"] * rng.standard_normal(space.dim), 0.0, 1.0)
                         for _ in range(opts["starts"] - 1)]
        pts, vals = [], []
        for i, s in enumerate(starts):
            # each start draws its own pairs: the exact kernel then picks among several
            # surrogates' optima, which averages out the sampling error of any one of them
            fs = FormulaSurrogate(objective, n_pairs=opts["pairs"], seed=seed * 1009 + i,
                                  temperature=opts["temperature"], baseline_row=space.baseline,
                                  margin=opts["margin"])
            lo = torch.as_tensor(space.low, dtype=fs.dtype)
            width = torch.as_tensor(space.high - space.low, dtype=fs.dtype)
            base = torch.as_tensor(space.baseline, dtype=fs.dtype)

            def f(u_np, temp):
                u = torch.as_tensor(np.asarray(u_np, dtype=np.float64), dtype=fs.dtype).requires_grad_(True)
                theta = base.index_put((free_idx,), lo + u * width)
                v = smooth_objective(fs.scores(theta), fs.pairs, fs.w, temp, fs.baseline, fs.max_drop,
                                     pen, rows_only=True, squared=True)
                (-v).backward()
                return float(-v.detach()), u.grad.detach().numpy().astype(np.float64)

            def lbfgs(u, temp):
                """L-BFGS-B; when its line search fails at once (a badly scaled first step
                near a steep bias), a small projected ascent step and a fresh try."""
                res = None
                for _ in range(4):
                    res = optimize.minimize(f, u, args=(temp,), jac=True, method="L-BFGS-B",
                                            bounds=[(0.0, 1.0)] * space.dim,
                                            options={"maxiter": opts["maxiter"], "maxls": 40})
                    if res.nit > 2 or res.status == 0:
                        break
                    _, g = f(res.x, temp)
                    u = np.clip(res.x - 0.02 * g / max(np.abs(g).max(), 1e-12), 0.0, 1.0)
                return np.clip(res.x, 0.0, 1.0), -float(res.fun)

            temps = [opts["temperature"]]
            if opts["final_temperature"] != opts["temperature"]:
                temps.append(opts["final_temperature"])  # a sharper pass from the smooth optimum
            u, val = s, -np.inf
            for t in temps:
                u, val = lbfgs(u, t)
            pts.append(u)
            vals.append(val)
            # margin continuation: from that end point, the guardrails loosened towards their
            # true max_drop; the exact kernel then says which of these is feasible and best
            md = np.asarray(objective.max_drop, dtype=np.float64)
            for k in range(1, opts["margin_steps"] + 1) if np.isfinite(md).any() else ():
                fs.max_drop = md * (1.0 - opts["margin"] * (1 - k / opts["margin_steps"]))
                u, val = lbfgs(u, temps[-1])
                pts.append(u)
                vals.append(val)
    finally:
        torch.set_num_threads(threads)
    order = np.argsort(-np.asarray(vals), kind="stable")
    return np.array(pts)[order], np.asarray(vals)[order]


class Grad(Searcher):
    name = "grad"
    capabilities = Capabilities(batch=True, constraints=False, replay=True, rank_based=True, needs_objective=True)
    asks_baseline = True
    defaults = {**SURROGATE_DEFAULTS, "refine_sigma": 0.02, "restarts": 4}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check({k: self.opts[k] for k in SURROGATE_DEFAULTS}, f"[search.{self.name}]")
        self.refine_sigma = self._opt("refine_sigma", 1e-6, 1.0)
        self.restarts = 0  # the refining CMA-ES restarts itself
        self.refiner = None
        self.surrogate_values: np.ndarray | None = None

    def propose(self) -> np.ndarray:
        if self.generation == 0:
            if self.objective is None or self.space is None:
                raise StudyError("the grad method needs the objective and the parameter space "
                                 "(make_searcher(..., objective=, space=))")
            pts, vals = surrogate_starts(self.objective, self.space, self.x0, self.seed,
                                         {k: self.opts[k] for k in SURROGATE_DEFAULTS}, f"[search.{self.name}]")
            self.surrogate_values = vals
            return np.vstack([self.baseline[None, :], pts])
        return self.refiner.ask()

    def update(self, x: np.ndarray, values: np.ndarray) -> None:
        if self.refiner is None:
            from .cmaes import CMA

            self.refiner = CMA(self.dim, self.best_x, seed=self.seed, population=self.population,
                               options={"sigma0": self.refine_sigma, "restarts": int(self._opt("restarts", 0))},
                               budget=self.budget, baseline=self.best_x)
            return
        self.refiner.tell(x, values)
        if self.refiner.stop_reason:
            self.stop_reason = self.refiner.stop_reason
