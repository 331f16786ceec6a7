"""GBDT fuser: gradient-boosted trees over the task scores, monotone in each task.

* ``backend = "sklearn"`` (default): :class:`~sklearn.ensemble.HistGradientBoostingClassifier`
  with ``monotonic_cst`` (+1 positive task, -1 negative task, 0 context).  The combined
  target's soft label is fed as two weighted hard-label copies of each row (see
  :mod:`fusiontune.ltr.targets`: the same log-loss).  Early stopping on the validation
  part (``X_val``), log-loss.
* ``backend = "lightgbm"``: ``LGBMRegressor(objective="cross_entropy")``, which takes the
  soft label directly, with ``monotone_constraints``.
* target ``lambdarank`` always uses LightGBM's ``LGBMRanker`` (scikit-learn has no
  lambdarank); without LightGBM installed it is a clear error.

The fused score is the model's raw output (log-odds / ranking score), not a probability,
so that no two rows tie merely because a sigmoid rounded them together.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, missing_dependency

__all__ = ["fit_gbdt", "predict_gbdt", "import_lightgbm"]


def import_lightgbm(why: str):
    try:
        import lightgbm
    except ImportError:
        raise missing_dependency("LightGBM", why,
                                 "pip install 'fusiontune[lightgbm]' or pip install lightgbm") from None
    return lightgbm


def _doubled(x, ybar, sw):
    """Soft labels as two hard-label copies (weights sw*ybar and sw*(1-ybar)), zero weights dropped."""
    x2 = np.concatenate([x, x])
    y2 = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
    w2 = np.concatenate([sw * ybar, sw * (1.0 - ybar)])
    keep = w2 > 0
    return x2[keep], y2[keep], w2[keep]


def _lgb_common(h: dict, mono: list[int], seed: int) -> dict:
    return dict(n_estimators=int(h["max_iter"]), learning_rate=float(h["learning_rate"]),
                num_leaves=int(h["max_leaf_nodes"]), min_child_samples=int(h["min_samples_leaf"]),
                reg_lambda=float(h["l2_regularization"]), monotone_constraints=mono,
                monotone_constraints_method="advanced", random_state=int(seed), deterministic=True,
                force_row_wise=True, n_jobs=int(h.get("threads", 1)), verbose=-1)


def fit_gbdt(train, val, target: str, backend: str, hyper: dict, mono: list[int], seed: int,
             base: dict | None = None):
    """Fit on ``train`` with early stopping on ``val`` (both :class:`~fusiontune.ltr.fit.Part`).

    Returns ``(model, backend_used, info)``.  OpenMP runs ``hyper["threads"]`` threads
    (default 1: on busy shared cores spinning OpenMP threads are several times slower).
    """
    from threadpoolctl import threadpool_limits

    # load scikit-learn's OpenMP runtime first: threadpoolctl only limits libraries already loaded
    import sklearn.ensemble  # noqa: F401

    with threadpool_limits(int(hyper.get("threads", 1)), user_api="openmp"):
        return _fit_gbdt(train, val, target, backend, hyper, mono, seed, base)


def _start(train, val, base):
    """(init scores of train / val, (scale, offset)): the scaled baseline formula the residual
    trees start from, on the training loss's log-odds scale."""
    from .residual import base_score, calibration

    s = base_score(train.x, base)
    scale, offset = calibration(s, train.ybar, train.sw)
    return (scale * s + offset, None if val is None else base_score(val.x, base, scale, offset)), (scale, offset)


def _fit_gbdt(train, val, target, backend, hyper, mono, seed, base=None):
    from .residual import ResidualTrees

    patience = int(hyper["patience"])
    residual = base is not None and (target == "lambdarank" or backend == "lightgbm")
    init, cal = _start(train, val, base) if residual else ((None, None), None)
    wrap = (lambda m: ResidualTrees(m, base, *cal)) if residual else (lambda m: m)
    if target == "lambdarank":
        lgb = import_lightgbm("target='lambdarank' with model='gbdt'")
        max_group = int(max(train.sizes.max(), val.sizes.max() if val is not None else 1))
        model = lgb.LGBMRanker(objective="lambdarank", label_gain=[float(g) for g in train.gains],
                               lambdarank_truncation_level=max_group, **_lgb_common(hyper, mono, seed))
        kw = {}
        if val is not None and patience:
            kw = dict(**_eval_args(model, val.x, val.grades), eval_group=[val.sizes], eval_at=[max_group],
                      callbacks=[lgb.early_stopping(patience, verbose=False)])
            if residual:
                kw["eval_init_score"] = [init[1]]
        model.fit(train.x, train.grades, group=train.sizes, init_score=init[0], **kw)
        return wrap(model), "lightgbm", _lgb_info(model, hyper)
    if backend == "lightgbm":
        lgb = import_lightgbm("[ltr] backend = \"lightgbm\"")
        model = lgb.LGBMRegressor(objective="cross_entropy", **_lgb_common(hyper, mono, seed))
        kw = {}
        if val is not None and patience:
            kw = dict(**_eval_args(model, val.x, val.ybar), eval_sample_weight=[val.sw],
                      callbacks=[lgb.early_stopping(patience, verbose=False)])
            if residual:
                kw["eval_init_score"] = [init[1]]
        model.fit(train.x, train.ybar, sample_weight=train.sw, init_score=init[0], **kw)
        return wrap(model), "lightgbm", _lgb_info(model, hyper)

    from sklearn.ensemble import HistGradientBoostingClassifier

    x2, y2, w2 = _doubled(train.x, train.ybar, train.sw)
    use_val = val is not None and patience > 0
    model = HistGradientBoostingClassifier(
        loss="log_loss", learning_rate=float(hyper["learning_rate"]), max_iter=int(hyper["max_iter"]),
        max_leaf_nodes=int(hyper["max_leaf_nodes"]), min_samples_leaf=int(hyper["min_samples_leaf"]),
        l2_regularization=float(hyper["l2_regularization"]), monotonic_cst=mono,
        early_stopping=use_val, n_iter_no_change=max(patience, 1), tol=1e-7, random_state=int(seed))
    kw = {}
    if use_val:
        xv, yv, wv = _doubled(val.x, val.ybar, val.sw)
        kw = dict(X_val=xv, y_val=yv, sample_weight_val=wv)
    model.fit(x2, y2, sample_weight=w2, **kw)
    n_iter = int(model.n_iter_)
    return model, "sklearn", {"iterations": n_iter, "stopped_early": n_iter < int(hyper["max_iter"])}


def _eval_args(model, x, y) -> dict:
    """LightGBM >= 4.6 names the validation data eval_X / eval_y (eval_set is deprecated)."""
    import inspect

    if "eval_X" in inspect.signature(model.fit).parameters:
        return {"eval_X": (x,), "eval_y": (y,)}
    return {"eval_set": [(x, y)]}


def _lgb_info(model, hyper) -> dict:
    best = getattr(model, "best_iteration_", None) or 0
    n = int(best) if best else int(model.n_estimators)
    return {"iterations": n, "stopped_early": bool(best) and best < int(hyper["max_iter"])}


def predict_gbdt(model, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """Raw fused score (N,) float64."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(int(threads), user_api="openmp"):
        return _predict(model, x)


def _predict(model, x):
    if hasattr(model, "start"):  # residual trees: trees + scaled formula
        return model.predict(x, raw_score=True)
    if hasattr(model, "decision_function"):  # scikit-learn
        return np.asarray(model.decision_function(x), dtype=np.float64)
    kw = {"num_iteration": model.best_iteration_} if getattr(model, "best_iteration_", None) else {}
    return np.asarray(model.predict(x, raw_score=True, **kw), dtype=np.float64)
