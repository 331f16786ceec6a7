"""Everything a report shows, computed from a finished run directory (no rendering here).

Sections (keys of the dict :func:`collect` returns):

* ``summary``       study, method, formula, budget, evaluations, rows, split, normalisation;
* ``tasks``         best vs baseline per task, in-sample and on the holdout, each delta with a
                    paired group-bootstrap interval (:mod:`fusiontune.bootstrap`);
* ``convergence``   objective of every trial in evaluation order and the best feasible so far;
* ``sensitivity``   the objective along each free parameter with the others at the best
                    values (one batched objective call over all grids);
* ``pareto``        two tasks' in-sample deltas of every trial, the feasible Pareto front;
* ``arms``          the A/B arms (``candidates.json`` if present, else computed now);
* ``stability``     the best weights re-found on bootstrap resamples of the search part
                    (among the run's best distinct feasible candidates): spread per
                    parameter and sign flips;
* ``ltr``           feature importances of a learned fuser (formula ``ltr-*``), when present.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = ["collect"]


def _ci(v, lo, hi) -> dict:
    return {"value": float(v), "lo": float(lo), "hi": float(hi)}


def _task_rows(result: dict, prep, resamples: int, level: float, seed: int, best_row) -> list[dict]:
    from ..bootstrap import paired_bootstrap

    tasks = [t.name for t in prep.study.tasks]
    weights = {t.name: t.weight for t in prep.study.tasks}
    metric = {t.name: t.metric for t in prep.study.tasks}
    rows = {t: {"task": t, "metric": metric[t], "weight": weights[t]} for t in tasks}
    rows["objective"] = {"task": "objective", "metric": "J", "weight": None}
    units = None
    parts = [("in_sample", prep.objective)]
    if prep.holdout_objective is not None:
        parts.append(("holdout", prep.holdout_objective))
    for part, obj in parts:
        if best_row is not None:
            bs = paired_bootstrap(obj, best_row[None, :], prep.space.baseline, resamples, level, seed,
                                  show_progress=False)
            units = f"{bs.n_units} {bs.units}"
            for q, t in enumerate(tasks):
                rows[t][part] = {"baseline": float(bs.baseline[q]), "best": float(bs.per_task[0, q]),
                                 "delta": _ci(bs.delta[0, q], bs.delta_lo[0, q], bs.delta_hi[0, q])}
            rows["objective"][part] = {"baseline": float(bs.baseline @ obj.w), "best": float(bs.per_task[0] @ obj.w),
                                       "delta": _ci(bs.gain[0], bs.gain_lo[0], bs.gain_hi[0])}
        else:  # a learned fuser: numbers from result.json, no interval
            blk = result if part == "in_sample" else result.get("holdout") or {}
            if not blk.get("best"):
                continue
            for t in tasks:
                b, v = blk["baseline"]["per_task"].get(t), blk["best"]["per_task"].get(t)
                if b is not None and v is not None:
                    rows[t][part] = {"baseline": b, "best": v, "delta": {"value": v - b, "lo": None, "hi": None}}
            b, v = blk["baseline"]["objective"], blk["best"]["objective"]
            rows["objective"][part] = {"baseline": b, "best": v, "delta": {"value": v - b, "lo": None, "hi": None}}
    return list(rows.values()), units


def _convergence(trials: pd.DataFrame) -> dict:
    if not len(trials) or "objective" not in trials:
        return {}
    obj = trials["objective"].to_numpy(dtype=float)
    feas = trials["feasible"].astype(bool).to_numpy() if "feasible" in trials else np.ones(len(obj), bool)
    best = np.where(feas, obj, -np.inf)
    best = np.maximum.accumulate(best)
    best = np.where(np.isfinite(best), best, np.nan)
    return {"evaluation": list(range(1, len(obj) + 1)), "objective": obj.tolist(), "feasible": feas.tolist(),
            "best_so_far": best.tolist()}


def _sensitivity(prep, best_row: np.ndarray, points: int) -> dict:
    space = prep.space
    names = space.all_names
    grids, theta = {}, []
    for j, f in enumerate(space.free):
        g = np.linspace(space.low[j], space.high[j], points)
        g = np.unique(np.concatenate([g, [best_row[names.index(f)]]]))
        grids[f] = g
        t = np.repeat(best_row[None, :], g.size, axis=0)
        t[:, names.index(f)] = g
        theta.append(t)
    ev = prep.objective.evaluate(np.vstack(theta))  # one batched call
    out, s = {}, 0
    for f, g in grids.items():
        e = slice(s, s + g.size)
        out[f] = {"values": g.tolist(), "objective": ev.objective[e].tolist(), "feasible": ev.feasible[e].tolist(),
                  "best": float(best_row[names.index(f)]), "baseline": float(space.baseline[names.index(f)])}
        s += g.size
    return out


def _pareto(trials: pd.DataFrame, prep, result: dict, pair: tuple[str, str], arms: list[dict]) -> dict:
    from ..pipeline import metric_columns
    from ..select import pareto_front

    cols = dict(zip(prep.study.task_names, metric_columns(prep.study)))
    base = result["baseline"]["per_task"]
    x = trials[cols[pair[0]]].to_numpy(dtype=float) - base[pair[0]]
    y = trials[cols[pair[1]]].to_numpy(dtype=float) - base[pair[1]]
    feas = trials["feasible"].astype(bool).to_numpy()
    front = np.zeros(len(trials), bool)
    idx = np.flatnonzero(feas)
    if idx.size:
        front[idx[pareto_front(np.c_[x[idx], y[idx]])]] = True
    best = result["best"]["per_task"]
    marks = [{"name": "best", "x": best[pair[0]] - base[pair[0]], "y": best[pair[1]] - base[pair[1]]}]
    by_trial = trials.set_index("trial") if "trial" in trials else None
    for a in arms:
        t = a.get("trial")
        if by_trial is not None and t is not None and t in by_trial.index:
            r = by_trial.loc[t]
            marks.append({"name": a["name"], "x": float(r[cols[pair[0]]] - base[pair[0]]),
                          "y": float(r[cols[pair[1]]] - base[pair[1]])})
    return {"tasks": list(pair), "x": x.tolist(), "y": y.tolist(), "feasible": feas.tolist(),
            "front": front.tolist(), "marks": marks}


def _stability(prep, trials: pd.DataFrame, result: dict, resamples: int, candidates: int, seed: int) -> dict:
    from ..bootstrap import resample_metrics
    from ..select import distinct_feasible

    names = prep.space.all_names
    pool = distinct_feasible(trials, names, candidates)
    if len(pool) < 2:
        return {"note": "fewer than two feasible candidates: nothing to compare"}
    theta = pool[names].to_numpy(dtype=float)
    obj = prep.objective
    both = np.vstack([theta, prep.space.baseline[None, :]])
    m, kind, n_units = resample_metrics(obj, both, resamples, seed, show_progress=False)
    cand, base = m[:-1], m[-1]  # (P, B, K), (B, K)
    j = np.nan_to_num(cand) @ obj.w  # (P, B)
    viol = np.clip((base[None] - cand) - obj.max_drop[None, None, :], 0, None)
    feas = ~(np.nan_to_num(viol) > 1e-12).any(axis=2)
    j = np.where(feas, j, -np.inf)
    win = np.argmax(j, axis=0)  # (B,) winner per resample
    any_feas = np.isfinite(j.max(axis=0))
    win = win[any_feas]
    winners = theta[win]
    best = np.array([result["best"]["params"][n] for n in names])
    params = {}
    warnings = []
    for f in prep.space.free:
        v = winners[:, names.index(f)]
        q5, q50, q95 = np.quantile(v, [0.05, 0.5, 0.95])
        flips = bool((v < 0).any() and (v > 0).any())
        params[f] = {"best": float(best[names.index(f)]), "median": float(q50), "p5": float(q5), "p95": float(q95),
                     "std": float(v.std()), "sign_flip": flips, "values": v.tolist(),
                     "positive_share": float((v > 0).mean()), "negative_share": float((v < 0).mean())}
        if flips:
            warnings.append(f"weight {f} flips sign across bootstrap resamples of the search data "
                            f"({(v > 0).mean():.0%} positive, {(v < 0).mean():.0%} negative): its direction "
                            f"is not supported by the data")
    same = float((np.abs(winners - best[None]).max(axis=1) < 1e-8).mean()) if len(winners) else 0.0
    return {"resamples": int(resamples), "units": kind, "n_units": int(n_units), "candidates": int(len(pool)),
            "resamples_with_a_feasible_winner": int(any_feas.sum()), "distinct_winners": int(np.unique(win).size),
            "share_best_wins": same, "params": params, "warnings": warnings}


def _load_arms(run_dir: Path, loaded, resamples: int, level: float, seed: int, k: int) -> tuple[dict | None, str]:
    from ..select import select_arms

    cpath = run_dir / "candidates.json"
    if cpath.exists():
        try:
            return json.loads(cpath.read_text(encoding="utf-8")), str(cpath)
        except json.JSONDecodeError as exc:
            raise InputError(f"{cpath}: invalid JSON: {exc}") from None
    return select_arms(run_dir, k=k, resamples=resamples, level=level, seed=seed, show_progress=False,
                       loaded=loaded), "computed now (fusiontune select not run yet)"


def collect(run_dir: Path, pareto: str | None = None, resamples: int = 1000, level: float = 0.95,
            stability_resamples: int = 100, stability_candidates: int = 50, sensitivity_points: int = 25,
            k: int = 3, seed: int = 0) -> dict:
    """The report's data for a finished run (see the module docstring)."""
    from ..select import load_run

    run_dir = Path(run_dir)
    loaded = load_run(run_dir)
    result, trials, prep = loaded
    ltr = str(result.get("formula", "")).startswith("ltr-")
    tasks = prep.study.task_names
    if pareto:
        pair = tuple(p.strip() for p in pareto.split(","))
        if len(pair) != 2 or any(p not in tasks for p in pair) or pair[0] == pair[1]:
            raise InputError(f"pareto must name two different tasks separated by a comma, e.g. "
                             f"{tasks[0]},{tasks[-1]}; got {pareto!r} (tasks: {', '.join(tasks)})", param="pareto")
    else:
        order = sorted(prep.study.tasks, key=lambda t: -t.weight)
        pair = (order[0].name, order[1].name) if len(order) > 1 else None
    best_row = None if ltr else prep.space.from_dict(result["best"]["params"], str(run_dir / "result.json"))
    rep = {
        "run": str(run_dir.resolve()),
        "summary": {k_: result.get(k_) for k_ in ("study", "method", "seed", "formula", "budget", "evaluations",
                                                  "seconds", "stop_reason", "rows", "split", "normalisation",
                                                  "study_file", "log", "gauc_weighting", "best_trial", "note")},
        "params": {"best": result["best"].get("params"), "baseline": result["baseline"].get("params")},
        "level": level, "resamples": resamples,
        "tasks": None,
        "convergence": {} if ltr else _convergence(trials),  # a fitted fuser has no search history
        "warnings": [],
    }
    rep["tasks"], rep["units"] = _task_rows(result, prep, resamples, level, seed, best_row)
    if best_row is not None and not ltr:
        rep["sensitivity"] = _sensitivity(prep, best_row, sensitivity_points)
        arms, src = _load_arms(run_dir, loaded, resamples, level, seed, k)
        rep["arms"] = arms
        rep["arms_source"] = src
        if pair and len(trials):
            rep["pareto"] = _pareto(trials, prep, result, pair, arms.get("arms", []))
        if len(trials):
            rep["stability"] = _stability(prep, trials, result, stability_resamples, stability_candidates, seed)
            rep["warnings"] += rep["stability"].get("warnings", [])
    fi = result.get("feature_importance")
    if ltr:
        if isinstance(fi, dict) and fi:
            items = sorted(((str(k_), float(v)) for k_, v in fi.items()), key=lambda kv: -abs(kv[1]))
            rep["ltr"] = {"feature_importance": dict(items)}
        else:
            rep["ltr"] = {"note": "result.json has no feature_importance for this learned fuser"}
    return rep
