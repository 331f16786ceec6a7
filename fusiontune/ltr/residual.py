"""The baseline formula as a fixed part of a fuser's score (residual GBDT; the DNN has its own torch twin).

``base_score(x, base)`` computes the study's formula with the online weights on the fuser's
input matrix in float32 arithmetic, the way the exported ONNX graph does (so exports match
to float32 rounding).  :class:`ResidualTrees` wraps a LightGBM model fitted with
``init_score = scale * formula + offset``: its raw score is the trees' sum plus that same
term, so at zero trees it ranks exactly as the formula does and every tree is a correction.
"""

from __future__ import annotations

import numpy as np

__all__ = ["base_score", "calibration", "ResidualTrees", "RESIDUAL_FORMULAS"]

RESIDUAL_FORMULAS = ("additive", "multiplicative", "power")


def base_score(x: np.ndarray, base: dict, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """``scale * sum_k a_k phi_k(p_k) + offset`` (N,) float64 from float32 arithmetic; ``base`` is
    ``{"formula", "a", "b", "eps"}`` and the first ``len(a)`` columns of ``x`` are probabilities."""
    a = np.asarray(base["a"], dtype=np.float32)
    k = len(a)
    p = np.ascontiguousarray(x[:, :k], dtype=np.float32)
    eps = np.float32(base["eps"])
    if base["formula"] == "additive":
        phi = p
    elif base["formula"] == "multiplicative":
        phi = np.log(np.clip(p, eps, np.float32(1.0)))
    elif base["formula"] == "power":
        phi = np.log(np.maximum(p + np.asarray(base["b"], dtype=np.float32), eps))
    else:
        raise ValueError(f"no residual start for the {base['formula']} formula")
    w = (np.float32(scale) * a).astype(np.float32)
    return (phi @ w + np.float32(offset)).astype(np.float64)


def calibration(score: np.ndarray, y: np.ndarray, w: np.ndarray, iters: int = 30) -> tuple[float, float]:
    """(scale > 0, offset) of a weighted 1-D logistic fit ``sigma(scale * score + offset)`` to soft
    labels (Newton's method): puts the formula on the log-odds scale of the training loss."""
    sd = float(score.std()) or 1.0
    mean = float(score.mean())
    x = (score - mean) / sd
    beta = np.zeros(2)
    m = np.clip((y * w).sum() / max(w.sum(), 1e-12), 1e-4, 1 - 1e-4)
    beta[1] = np.log(m / (1 - m))
    for _ in range(iters):
        f = np.clip(beta[0] * x + beta[1], -30, 30)
        q = 1.0 / (1.0 + np.exp(-f))
        g = np.array([(w * (q - y) * x).sum(), (w * (q - y)).sum()])
        h = w * q * (1 - q)
        hess = np.array([[(h * x * x).sum(), (h * x).sum()], [(h * x).sum(), h.sum()]]) + 1e-9 * np.eye(2)
        beta -= np.linalg.solve(hess, g)
    scale = max(float(beta[0]) / sd, 1e-3)  # the formula ranks the right way round: keep the scale > 0
    return scale, float(beta[1] - beta[0] * mean / sd)


class ResidualTrees:
    """LightGBM trees on top of the scaled baseline formula: ``predict(x, raw_score=True)``."""

    def __init__(self, trees, base: dict, scale: float, offset: float, n_trees: int | None = None):
        self.trees, self.base, self.scale, self.offset = trees, base, float(scale), float(offset)
        #: trees used (None: LightGBM's best iteration, or all); 0: the formula alone
        self.n_trees = n_trees

    def start(self, x: np.ndarray) -> np.ndarray:
        return base_score(x, self.base, self.scale, self.offset)

    def tree_sum(self, x, n: int | None = None) -> np.ndarray:
        n = self.n_trees if n is None else n
        if n == 0:
            return np.zeros(len(x))
        if n is None:
            n = getattr(self.trees, "best_iteration_", None) or None
        kw = {"num_iteration": n} if n else {}
        return np.asarray(self.trees.predict(x, raw_score=True, **kw), dtype=np.float64)

    def predict(self, x, raw_score=True):
        return self.tree_sum(x) + self.start(x)

    def describe(self) -> dict:
        return {"formula": self.base["formula"], "a": list(self.base["a"]), "b": list(self.base["b"]),
                "eps": float(self.base["eps"]), "scale": self.scale, "offset": self.offset,
                "trees_used": self.n_trees}


#: shrinkages of the residual trees' sum tried by :func:`select_trees` (1: the trees as fitted)
SHRINKS = (1.0, 0.7, 0.5, 0.35, 0.2, 0.1, 0.05)


def select_trees(est: ResidualTrees, x_val: np.ndarray, val_score, fitted: int,
                 shrinks: tuple[float, ...] = SHRINKS) -> dict:
    """Pick the number of trees ``n`` and a shrinkage ``alpha`` of their sum, ``score = start +
    alpha * trees(n)``, by the study objective on the validation part (``n = 0`` is the formula
    itself, so the pick is never below its start there).  ``val_score`` penalises a broken
    guardrail bar, so among the candidates that keep every bar the best objective wins.  A
    small ``alpha`` is a finer step than one tree: from a strong formula on a guardrail's edge
    one full tree already crosses it.  ``alpha`` is folded into the estimator's formula term
    (``scale / alpha``, ``offset / alpha``: the score divided by ``alpha``, the same ranking), so
    exports need nothing new.  Records the guardrails that turned down better candidates
    (``blocked_by``) for the guardrail refits."""
    start = est.start(x_val)
    counts = sorted({0, fitted, *np.unique(np.round(np.geomspace(1, max(fitted, 1), 12)).astype(int)).tolist()})
    best, best_n, best_a, blocked, trace = -np.inf, 0, 1.0, None, []
    for n in counts:
        trees = est.tree_sum(x_val, n)
        for a in (shrinks if n else (1.0,)):
            got = val_score(a * trees + start)
            pen, raw, viol = got if isinstance(got, tuple) else (got, got, None)
            trace.append({"trees": int(n), "shrink": float(a), "validation": float(pen)})
            if viol is not None and raw > best + 1e-7 and np.asarray(viol).any():
                blocked = np.asarray(viol, dtype=bool) if blocked is None else blocked | np.asarray(viol, dtype=bool)
            if pen > best + 1e-7:
                best, best_n, best_a = pen, n, a
    est.n_trees = int(best_n)
    if best_n and best_a != 1.0:
        est.scale, est.offset = est.scale / best_a, est.offset / best_a
    return {"iterations": int(best_n), "shrink": float(best_a) if best_n else None, "kept_formula": best_n == 0,
            "validation_score": float(best), "validation_baseline": trace[0]["validation"], "tree_trace": trace,
            "blocked_by": (blocked if blocked is not None else np.zeros(0, bool)).tolist()}
