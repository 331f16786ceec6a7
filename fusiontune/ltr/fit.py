"""Fit a learn-to-rank fuser on a study's search part and judge it like a searched formula.

``run_ltr(prep, model, target, seed, options)`` returns the ``result.json`` dict: the fuser's
fused score goes through exactly the same metric kernel, business weights, guardrails
(against the same baseline formula weights) and holdout as ``fusiontune search`` results,
so the numbers can be put side by side.

Data flow: the search part (in the objective's grouped row order) is split once more into
a training part and a validation part (whole groups when the study has a group column,
else rows; seeded).  The model is fitted on the training part only, with early stopping
on the validation part.  "best" (in-sample) is measured on the whole search part, as for
a searched formula; the holdout part is only ever scored.  Feature importances are
permutation importances on the validation part, measured in the study objective: how much
the business-weighted AUC/GAUC drops when one input column is shuffled.

Training weights per task are the business weights times a balance factor (``[ltr]
balance``, see :mod:`fusiontune.ltr.targets`).  Guardrails: a fuser is fitted without
knowing them, so after each fit they are checked on the validation part, and a task whose
guardrail breaks gets its training weight raised and the fuser is refitted
(:func:`_fit_with_guardrails`).  Unlike a search, which only ever reports a feasible
candidate, an LTR result can come out with ``best.feasible = false``: it is reported so.
LightGBM's lambdarank ignores the log's row weights (it has query-level weighting only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, StudyError
from ..log import PredictionLog
from ..objective import Objective
from .config import MODELS, TARGETS, LtrConfig, parse_config
from .features import FeatureSpec
from .targets import combined_target, relevance, relevance_grades, task_balance

__all__ = ["Fuser", "Part", "fit_ltr", "run_ltr", "fused_metrics", "ensure_features", "starts_from_formula"]


# --------------------------------------------------------------------------- the fitted fuser
@dataclass
class Fuser:
    """A fitted fuser: ``predict(log)`` -> fused ranking score (N,) float64."""

    model: str  # "gbdt" | "dnn"
    backend: str  # "sklearn" | "lightgbm" | "torch"
    target: str  # "combined" | "lambdarank"
    spec: FeatureSpec
    estimator: object  # scikit-learn / LightGBM estimator, or a DnnState
    settings: dict = field(default_factory=dict)  # hyper-parameters and monotone flag

    @property
    def name(self) -> str:
        return f"ltr-{self.model}"

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        if hasattr(self.estimator, "predict_matrix"):  # an ONNX model read by onnxruntime
            return self.estimator.predict_matrix(x)
        if self.model == "gbdt":
            from .gbdt import predict_gbdt

            return predict_gbdt(self.estimator, x, int(self.settings.get("threads", 1)))
        from .dnn import predict_dnn

        return predict_dnn(self.estimator, x)

    def predict(self, log: PredictionLog) -> np.ndarray:
        return self.predict_matrix(self.spec.matrix(log))


# --------------------------------------------------------------------------- data parts
@dataclass
class Part:
    """One part of the search log with the fuser's inputs and targets."""

    log: PredictionLog
    x: np.ndarray
    ybar: np.ndarray
    sw: np.ndarray
    rel: np.ndarray
    sizes: np.ndarray | None  # group sizes in row order (groups are contiguous)
    grades: np.ndarray | None = None
    gains: np.ndarray | None = None


def _sizes(groups: np.ndarray | None) -> np.ndarray | None:
    if groups is None:
        return None
    change = np.flatnonzero(np.diff(groups)) + 1
    edges = np.concatenate([[0], change, [len(groups)]])
    return np.diff(edges).astype(np.int64)


def _part(log: PredictionLog, spec: FeatureSpec, w: np.ndarray) -> Part:
    ybar, sw = combined_target(log.labels, w, np.asarray(spec.signs), log.weights)
    rel = relevance(log.labels, w, np.asarray(spec.signs))
    return Part(log, spec.matrix(log), ybar, sw, rel, _sizes(log.groups))


def _validation_mask(log: PredictionLog, frac: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0x17F])
    if log.groups is not None:
        n_groups = int(log.groups.max()) + 1
        pick = rng.random(n_groups) < frac
        return pick[log.groups]
    return rng.random(log.n) < frac


def fused_metrics(objective: Objective, fused: np.ndarray) -> np.ndarray:
    """Per-task metrics (K,) of one fused score given in ``objective.log``'s row order, with
    the objective's own kernels (AUC / prepared GAUC plan, row weights)."""
    return objective.score_metrics(np.asarray(fused)[None, :])[0]


def ensure_features(prep, features: list[str]):
    """``prep`` whose log carries the context columns (reloads the log when it does not)."""
    if all(c in part.extra for part in prep.parts for c in features):
        return prep
    from ..pipeline import load_study_log, prepare

    log = load_study_log(prep.study, prep.formula.needs_probabilities, extra=features)
    return prepare(prep.study, log)


# --------------------------------------------------------------------------- fitting
def _resolve(prep, model: str, target: str | None, options: dict | None) -> tuple[LtrConfig, str]:
    src = str(prep.study.path or "<study>")
    if model not in MODELS:
        raise InputError(f"model must be \"gbdt\" or \"dnn\", got {model!r}", param="model")
    cfg = parse_config(prep.study.sections.get("ltr"), options, src)
    target = target or cfg.target
    if target not in TARGETS:
        raise InputError(f"target must be \"combined\" or \"lambdarank\", got {target!r}", param="target")
    if target == "lambdarank" and prep.search_log.groups is None:
        raise InputError(f"{src}: target 'lambdarank' ranks within groups and needs a group column "
                         f"(set e.g. group = \"request_id\" in the study)")
    return cfg, target


def fit_ltr(prep, model: str, target: str | None = "combined", seed: int = 0, options: dict | None = None,
            show_progress: bool | None = None, start: dict | None = None, start_run: str | None = None,
            vs=None):
    """Fit and judge a fuser.  Returns ``(result dict, trials DataFrame, Fuser)``.

    ``start``: the formula weights a residual fuser starts from (``{param: value}``, e.g. the best
    formula run's ``best.params``; ``start_run`` names where they came from); default the study's
    baseline.  Guardrails and every delta are still judged against the baseline.  ``vs``: the
    best formula to judge the fuser against (a search run directory or a
    :func:`fusiontune.ltr.versus.formula_block`); the result's ``versus`` block always holds the
    deltas against the baseline, and against ``vs`` when given."""
    t0 = time.perf_counter()
    if getattr(prep.formula, "layout", None) is not None:  # a [segments] study (fusiontune/segments.py)
        raise StudyError(f"{prep.study.path or '<study>'}: [segments] per-segment weights are for formula searches; "
                         f"a learned fuser is one model (give it the segment column as an [ltr] feature instead)",
                         param="segments")
    cfg, target = _resolve(prep, model, target, options)
    prep = ensure_features(prep, cfg.features)
    study = prep.study
    spec = FeatureSpec.from_study(study, cfg.features)
    if model == "dnn":  # it starts from the formula; its inputs are log-probabilities
        from .dnn import RESIDUAL_FORMULAS

        if prep.formula.name not in RESIDUAL_FORMULAS:
            raise InputError(f"{study.path or '<study>'}: the DNN fuser starts from the study's formula and "
                             f"supports {', '.join(RESIDUAL_FORMULAS)}; the {prep.formula.name} formula needs "
                             f"per-group percentiles (use the GBDT fuser)")
        for part in prep.parts:  # every row, without joining the split's parts back into one log
            bad = (part.scores < 0) | (part.scores > 1)
            if bad.any():
                i, j = (int(v[0]) for v in np.nonzero(bad))
                raise InputError(f"{part.source}: column {spec.scores[j]!r} (score of task {spec.tasks[j]!r}) "
                                 f"must be a probability in [0, 1] for the DNN fuser: a row has {part.scores[i, j]!r} "
                                 f"(set score_scale = \"logit\" for logits)")
    w = np.array([t.weight for t in study.tasks], dtype=np.float64)

    search = prep.objective.log  # grouped row order: the order fused_metrics expects
    vmask = _validation_mask(search, cfg.validation, seed)
    if vmask.all() or not vmask.any():
        raise InputError(f"{search.source}: the search part is too small to hold out a validation part "
                         f"([ltr] validation = {cfg.validation})")
    train_log, val_log = search.take(~vmask), search.take(vmask)
    if target == "combined" and not (combined_target(train_log.labels, w, np.asarray(spec.signs))[1] > 0).any():
        raise InputError(f"{search.source}: no training row has an observed label")

    start_base = _base_formula(prep, start)
    val_obj = _try_objective(study, val_log, prep.formula)
    val_score = bars = None
    if val_obj is not None:
        val_obj.set_baseline(prep.space.baseline)
        bars = guardrail_bars(val_obj, cfg, start_base if start is not None else None, spec.matrix(val_log))

        def val_score(fused):  # noqa: E306 - the study objective on the validation part, with the
            # guardrail penalty, so that early stopping never keeps an epoch that breaks one;
            # also the raw objective and the broken guardrails (the DNN records what blocked it)
            # guardrails count against the bars (guardrail_bars), as the refits judge them
            pt = fused_metrics(val_obj, fused)
            over = bars - pt - BAR_TOL
            j = float(pt @ val_obj.w)
            return j - val_obj.penalty * float(np.clip(over, 0.0, None).sum()), j, over > 0

    t_fit = time.perf_counter()
    gbdt_base = start_base if model == "gbdt" and starts_from_formula(prep, model, cfg, target) else None

    def fit_once(task_w: np.ndarray, spec: FeatureSpec = spec):
        mono = spec.monotone(cfg.monotone)
        train, val = _part(train_log, spec, task_w), _part(val_log, spec, task_w)
        if target == "lambdarank":
            grades, gains = relevance_grades(np.concatenate([train.rel, val.rel]))
            train.grades, val.grades = grades[:len(train.rel)], grades[len(train.rel):]
            train.gains = val.gains = gains
        if model == "gbdt":
            from .gbdt import fit_gbdt

            est, backend, info = fit_gbdt(train, val, target, cfg.backend, cfg.gbdt, mono, seed, gbdt_base)
            hyper = dict(cfg.gbdt)
            if hasattr(est, "start") and val_score is not None:  # residual trees: count chosen by the objective
                from .residual import select_trees

                info.update(select_trees(est, val.x, val_score, int(info["iterations"])))
                if not info["blocked_by"]:
                    info["blocked_by"] = [False] * spec.k
        else:
            from .dnn import fit_dnn

            est, info = fit_dnn(train, val, target, cfg.dnn, spec, cfg.monotone, seed, start_base,
                                val_score, show_progress,
                                _surrogate(prep, train, cfg, seed, start is not None and cfg.guardrail_bar == "start"))
            backend, hyper = "torch", dict(cfg.dnn)
        fuser = Fuser(model, backend, target, spec, est, {**hyper, "monotone": cfg.monotone, "seed": int(seed)})
        return fuser, info, train, val

    w_train = task_balance(train_log.labels, w, cfg.balance)
    fuser, info, train, val, guard = _fit_with_guardrails(fit_once, w_train, val_obj, cfg.guardrail_rounds, bars)
    if spec.context and cfg.context_check and val_score is not None:
        # the same fuser without the context columns, kept when it scores better on the validation part
        fuser, info, train, val, guard = _context_check(fit_once, spec, (fuser, info, train, val, guard), w_train,
                                                        val_obj, cfg.guardrail_rounds, bars, val_score)
        spec = fuser.spec
    guard["training_weights"] = {t.name: float(v) for t, v in zip(study.tasks, w_train)}
    if bars is not None:
        guard["bar"] = ("start formula" if start is not None and cfg.guardrail_bar == "start" else
                        f"baseline - (1 - {cfg.guardrail_margin:g}) * max_drop")
        guard["validation_bars"] = {t.name: float(b) for t, b in zip(study.tasks, bars) if np.isfinite(b)}
    fit_seconds = time.perf_counter() - t_fit

    # ---- judge: the same objective as a searched formula
    obj = prep.objective
    best_pt = fused_metrics(obj, fuser.predict(obj.log))
    ev = obj.judge(best_pt[None, :])
    base_pt = obj.baseline_per_task
    hobj = prep.holdout_objective
    hold = None
    if hobj is not None:
        hb = fused_metrics(hobj, fuser.predict(hobj.log))
        hold = (hb, hobj.judge(hb[None, :]), hobj.baseline_per_task)

    t_imp = time.perf_counter()
    imp_obj, imp_part, imp_where = (val_obj, val, "validation") if val_obj is not None else \
        (obj, _part(obj.log, spec, w), "search")
    importance = _permutation_importance(fuser, imp_obj, imp_part.x, spec.names, seed)
    imp_seconds = time.perf_counter() - t_imp

    seconds = time.perf_counter() - t0
    result = _result(prep, fuser, cfg, info, seed, seconds, fit_seconds, best_pt, ev, hold,
                     train, val, val_obj, importance, imp_where, imp_seconds, guard, start_run, vs)
    trials = _trials(prep, fuser.name, best_pt, ev, base_pt, hold)
    return result, trials, fuser


BAR_TOL = 1e-6  # float32 vs float64 formula scores may re-order a few ties: not a broken bar


def _context_check(fit_once, spec: FeatureSpec, fitted: tuple, w: np.ndarray, val_obj: Objective, rounds: int,
                   bars: np.ndarray | None, val_score) -> tuple:
    """Fit the fuser again without the context columns and keep whichever of the two has the
    better guardrail-penalised objective on the validation part (``[ltr] context_check``).

    Context columns such as a user segment or the device are constant within a request: a
    tree or a network that splits on them alone moves whole requests up or down, which no
    GAUC task rewards and which re-orders requests for the global-AUC tasks (a guardrail on
    one then cuts the whole fit short).  Whether the context pays is therefore a choice made
    like the number of trees, on the validation part; ``info["context_check"]`` records both
    validation objectives."""
    plain = FeatureSpec(spec.tasks, spec.scores, spec.scales, spec.signs, [])
    other = _fit_with_guardrails(lambda task_w: fit_once(task_w, plain), w, val_obj, rounds, bars)
    with_ctx = float(val_score(fitted[0].predict_matrix(fitted[3].x))[0])
    without = float(val_score(other[0].predict_matrix(other[3].x))[0])
    keep = fitted if with_ctx > without else other  # a tie: the simpler fuser
    keep[1]["context_check"] = {"validation_with_context": with_ctx, "validation_without_context": without,
                                "context": list(spec.context), "kept_context": keep is fitted}
    return keep


def starts_from_formula(prep, model: str, cfg: LtrConfig, target: str) -> bool:
    """Whether this fuser is residual: it starts from a formula (the DNN; the GBDT with LightGBM
    trees on the formula's init score), so a ``start`` formula changes it.  scikit-learn's
    HistGradientBoosting has no init score and fits from scratch."""
    from .residual import RESIDUAL_FORMULAS

    if model == "dnn":
        return True
    return bool(cfg.residual and prep.formula.name in RESIDUAL_FORMULAS
                and (cfg.backend == "lightgbm" or target == "lambdarank"))


def guardrail_bars(val_obj: Objective, cfg: LtrConfig, start_base: dict | None, val_x: np.ndarray) -> np.ndarray:
    """The lowest validation metric (K,) each guarded task may reach (-inf: no guardrail).

    Started from the baseline (or ``guardrail_bar = "limit"``): the guardrail's own limit with
    a reserve for the holdout, ``baseline - (1 - guardrail_margin) * max_drop``.  Started from
    a formula (``start_base``, e.g. the best search run) with ``guardrail_bar = "start"``: that
    formula's own validation metric, so the fuser may not pay for its objective with any
    guarded task (it is at least as good as the formula on every guardrail: the Pareto bar)."""
    guarded = np.isfinite(val_obj.max_drop)
    if start_base is not None and cfg.guardrail_bar == "start":
        from .residual import base_score

        start_pt = fused_metrics(val_obj, base_score(val_x, start_base))
        return np.where(guarded, start_pt, -np.inf)
    return np.where(guarded, val_obj.baseline_per_task - val_obj.max_drop * (1.0 - cfg.guardrail_margin), -np.inf)


def _fit_with_guardrails(fit_once, w: np.ndarray, val_obj: Objective | None, rounds: int,
                         bars: np.ndarray | None = None, factor: float = 3.0, refine: int = 2):
    """Fit; while the fuser breaks a guardrail on the validation part, multiply the training
    weight of every violated task by ``factor`` and refit (at most ``rounds`` times), then
    bisect (geometrically, ``refine`` fits) between the last infeasible and the first
    feasible multipliers.  On the validation part a guardrail counts as kept only above its
    bar (:func:`guardrail_bars`: the limit with a reserve for the holdout, or the start
    formula's own metric).  Keeps the feasible fit with the best validation objective (or,
    when none is feasible, the last fit).  The objective's business weights never change:
    only the training target leans towards the guarded task."""
    mult = np.ones_like(w)
    fits = [(mult, *fit_once(w))]
    log = []

    def judge(f, val, info):
        """(feasible, tasks to up-weight, validation objective, blocked): a fit whose early
        stopping turned down better epochs because they broke a guardrail (the residual DNN,
        which then keeps the formula) is feasible but *blocked* by those tasks."""
        pt = fused_metrics(val_obj, f.predict_matrix(val.x))
        viol = pt < bars - BAR_TOL
        blocked = np.asarray(info.get("blocked_by", np.zeros(len(pt), bool)), dtype=bool)
        return not viol.any(), viol | blocked, float(pt @ val_obj.w), bool(blocked.any())

    guard = {"rounds": 0, "fits": 1, "multipliers": {}, "feasible_on_validation": None, "trace": log}
    if val_obj is None or bars is None or rounds <= 0 or not np.isfinite(val_obj.max_drop).any():
        return (*fits[0][1:], guard)
    feas, viol, j, blocked = judge(fits[0][1], fits[0][4], fits[0][2])
    log.append({"multipliers": mult.tolist(), "feasible": feas, "validation_objective": j, "blocked": blocked})
    best = (j, fits[0]) if feas else None
    lo, r = mult.copy(), 0
    last = fits[0]
    while (not feas or blocked) and r < rounds:
        lo = mult.copy()
        mult = mult.copy()
        mult[viol] *= factor
        last = (mult, *fit_once(w * mult))
        feas, v2, j, blocked = judge(last[1], last[4], last[2])
        viol = viol | v2
        log.append({"multipliers": mult.tolist(), "feasible": feas, "validation_objective": j, "blocked": blocked})
        r += 1
        if feas and (best is None or j > best[0]):
            best = (j, last)
    # bisect when the last fit is the first unblocked feasible one and no worse than the best (a
    # fit that keeps its start formula ties the first fit, which must not stop the bisection)
    if (best is not None and r > 0 and log[-1]["feasible"] and not log[-1]["blocked"]
            and log[-1]["validation_objective"] >= best[0] - 1e-12):
        hi = last[0]
        for _ in range(refine):
            mid = np.sqrt(lo * hi)
            cand = (mid, *fit_once(w * mid))
            feas, _, j, blocked = judge(cand[1], cand[4], cand[2])
            log.append({"multipliers": mid.tolist(), "feasible": feas, "validation_objective": j, "blocked": blocked})
            r += 1
            if feas:
                hi = mid
                if j > best[0]:
                    best = (j, cand)
            else:
                lo = mid
    chosen = best[1] if best is not None else last
    tasks = [t.name for t in val_obj.tasks]
    guard.update({"rounds": r, "fits": len(log), "feasible_on_validation": best is not None,
                  "multipliers": {t: float(m) for t, m in zip(tasks, chosen[0])}})
    return (*chosen[1:], guard)


def _base_formula(prep, params: dict | None = None) -> dict:
    """The formula a residual fuser starts from: name, weights a, biases b, eps (the baseline
    weights, or ``params``; then ``"baseline"`` holds the baseline's, the guardrails' reference)."""
    f = prep.formula
    row = prep.space.as_dict(prep.space.baseline if params is None else prep.space.from_dict(params, "start"))
    out = {"formula": f.name, "a": [row[f"a_{t}"] for t in f.tasks],
           "b": [row.get(f"b_{t}", 0.0) for t in f.tasks], "eps": float(f.eps)}
    if params is not None:
        out["baseline"] = _base_formula(prep)
    return out


def _surrogate(prep, train: "Part", cfg: LtrConfig, seed: int, start_bar: bool = False):
    """The fine-tune loss on the training part, or None when ``finetune = 0``."""
    if not int(cfg.dnn.get("finetune", 0)):
        return None
    from .finetune import SurrogateLoss

    return SurrogateLoss(prep.study, train.log, cfg.guardrail_margin, seed, bar="start" if start_bar else "limit")


def run_ltr(prep, model: str, target: str | None = "combined", seed: int = 0, options: dict | None = None,
            show_progress: bool | None = False) -> dict:
    """Fit a fuser and return the ``result.json``-shaped dict (no files written)."""
    return fit_ltr(prep, model, target, seed, options, show_progress)[0]


def _try_objective(study, log: PredictionLog, formula) -> Objective | None:
    try:
        o = Objective(study.tasks, log, formula, study.gauc_weighting)
    except InputError:
        return None
    # a task with one class only in this part has no AUC: the part cannot rate fusers
    probe = fused_metrics(o, log.scores[:, 0].astype(np.float32))
    return None if np.isnan(probe).any() else o


def _permutation_importance(fuser: Fuser, obj: Objective, x: np.ndarray, names: list[str], seed: int,
                            repeats: int = 3) -> dict[str, float]:
    rng = np.random.default_rng([seed, 0x1A9])
    j0 = float(fused_metrics(obj, fuser.predict_matrix(x)) @ obj.w)
    out = {}
    for j, name in enumerate(names):
        drops = []
        for _ in range(repeats):
            xp = x.copy()
            xp[:, j] = x[rng.permutation(len(x)), j]
            drops.append(j0 - float(fused_metrics(obj, fuser.predict_matrix(xp)) @ obj.w))
        out[name] = float(np.mean(drops))
    return out


# --------------------------------------------------------------------------- result.json
def _block(study, per_task: np.ndarray) -> dict:
    w = np.array([t.weight for t in study.tasks])
    return {"objective": float(per_task @ w), "per_task": {t.name: float(v) for t, v in zip(study.tasks, per_task)}}


def _params(fuser: Fuser, info: dict, cfg: LtrConfig) -> dict[str, float]:
    p: dict[str, float] = {}
    for k, v in fuser.settings.items():
        if k == "hidden":
            for i, h in enumerate(v):
                p[f"hidden_{i + 1}"] = float(h)
        elif k == "seed":
            continue
        elif isinstance(v, (bool, int, float)):
            p[k] = float(v)
    p["validation"] = float(cfg.validation)
    p["iterations"] = float(info["iterations"])
    p["n_features"] = float(len(fuser.spec.names))
    return p


def _result(prep, fuser, cfg, info, seed, seconds, fit_seconds, best_pt, ev, hold, train, val,
            val_obj, importance, imp_where, imp_seconds, guard, start_run, vs) -> dict:
    """The result.json dict, built by the one result builder (:func:`fusiontune.results.result_document`)."""
    from ..results import result_document
    from .versus import versus_block

    stop = "early stopping on the validation part" if info.get("stopped_early") else "iteration limit"
    ltr = {
        "model": fuser.model, "target": fuser.target, "backend": fuser.backend,
        "features": fuser.spec.names, "context": fuser.spec.context, "monotone": cfg.monotone,
        "monotone_constraints": dict(zip(fuser.spec.names, fuser.spec.monotone(cfg.monotone))),
        "hyper": {k: v for k, v in fuser.settings.items()},
        "iterations": info["iterations"], "stopped_early": bool(info.get("stopped_early")),
        "fit_seconds": round(fit_seconds, 4),
        "validation_objective": (None if val_obj is None else
                                 float(fused_metrics(val_obj, fuser.predict_matrix(val.x)) @ val_obj.w)),
        "early_stopping_on": ("validation objective (guardrail-penalised)" if fuser.model == "dnn"
                              and val_obj is not None
                              else "validation loss" if fuser.model == "gbdt" else "training loss"),
        "target_construction": ("soft label ybar = sum_k w_k y_k / sum_k w_k over observed tasks, sample "
                                "weight = sum of observed w_k; weighted log-loss" if fuser.target == "combined"
                                else "graded relevance sum_k w_k y_k over observed tasks; listwise per group"),
    }
    if "history" in info:
        ltr["history"] = info["history"]
    if "context_check" in info:
        ltr["context_check"] = info["context_check"]
    if hasattr(fuser.estimator, "describe"):
        ltr["residual"] = {**fuser.estimator.describe(),
                           "start": "trees on top of scale * start formula + offset (init score)"}
        ltr.update({k: info.get(k) for k in ("kept_formula", "validation_baseline", "tree_trace", "shrink")})
        if info.get("kept_formula"):
            ltr["recommendation"] = ("keep the formula: no number of trees beat the start formula on "
                                     "the validation part, so the fuser is the formula itself")
    if fuser.model == "dnn":
        ltr.update({k: info.get(k) for k in ("kept_formula", "validation_baseline", "best_phase", "shrink",
                                             "finetune_epochs", "finetune_stopped_early", "epochs_run")})
        b = fuser.estimator.config["base"]
        ltr["residual"] = {"formula": b["formula"], "a": b["a"], "b": b["b"],
                           "start": ("baseline formula" if "baseline" not in b else
                                     "the given start formula (e.g. the best search run)") + " + zero correction"}
        if info.get("kept_formula"):
            ltr["recommendation"] = ("keep the formula: no epoch of the fit beat the start formula "
                                     "on the validation part, so the fuser is the formula itself")
    ltr["guardrails"] = guard
    if start_run is not None:
        ltr["start_run"] = str(start_run)
    extra = {
        "target": fuser.target,
        "ltr": ltr,
        "feature_importance": importance,
        "feature_importance_method": (f"permutation on the {imp_where} part: drop of the study objective when "
                                      f"one input column is shuffled (mean of 3 shuffles)"),
        "importance_seconds": round(imp_seconds, 4),
    }
    obj, hobj = prep.objective, prep.holdout_objective
    extra["versus"] = versus_block(prep, float(best_pt @ obj.w), float(obj.baseline_per_task @ obj.w),
                                   None if hold is None else float(hold[0] @ hobj.w),
                                   None if hold is None else float(hobj.baseline_per_task @ hobj.w), vs,
                                   None if hold is None else dict(zip(prep.study.task_names, map(float, hold[0]))),
                                   None if hold is None else dict(zip(prep.study.task_names, map(float, hold[2]))))
    if not ev.feasible[0]:
        extra["note"] = "the fuser breaks a guardrail on the search part (feasible = false)"
    result = result_document(
        prep, method=fuser.name, formula=fuser.name, seed=seed, budget=1, evaluations=1, seconds=seconds,
        best_params=_params(fuser, info, cfg), best_per_task=best_pt, best_feasible=bool(ev.feasible[0]),
        holdout_best=None if hold is None else (hold[0], bool(hold[1].feasible[0])),
        best_trial=1, stop_reason=stop,
        normalisation=(f"none: the fused score is the {fuser.model.upper()} fuser's raw output "
                       f"(a ranking score); the baseline params are the study's formula weights"),
        rows={"search": prep.search_log.n, "holdout": prep.holdout_log.n if prep.holdout_log else 0,
              "train": int(train.log.n), "validation": int(val.log.n)},
        extra=extra)
    return result


def _trials(prep, name: str, best_pt, ev, base_pt, hold) -> pd.DataFrame:
    from ..pipeline import metric_columns

    obj = prep.objective
    bev = obj.judge(base_pt[None, :])
    rows = []
    for i, (cand, pt, e) in enumerate((("baseline", base_pt, bev), (name, best_pt, ev))):
        row = {"trial": i, "candidate": cand, "objective": float(e.objective[0])}
        row.update({c: float(v) for c, v in zip(metric_columns(prep.study), pt)})
        row["feasible"] = bool(e.feasible[0])
        row["penalised"] = float(e.penalised[0])
        if hold is not None:
            hpt = hold[2] if cand == "baseline" else hold[0]
            row["holdout_objective"] = float(hpt @ obj.w)
        rows.append(row)
    return pd.DataFrame(rows)
