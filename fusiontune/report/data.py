"""Everything a report shows, computed from a finished run directory (no rendering here).

Sections (keys of the dict :func:`collect` returns):

* ``summary``       study, method, formula, budget, evaluations, rows, split (with the true
                    holdout share of rows and groups), normalisation;
* ``tasks``         best vs baseline per task, in-sample and on the holdout, each delta with a
                    paired group-bootstrap interval (:mod:`fusiontune.bootstrap`);
* ``versus_baseline`` the best against the always-feasible baseline (warns when it does not
                    beat it, or its holdout interval includes or lies below zero);
* ``guardrails``    each task's ``max_drop`` and every best/arm delta checked against it
                    (``breaks`` / ``ci-crosses`` / ``ok``), on the holdout and in-sample;
* ``on_bound``      the parameters of the best that sit on a search bound (result.json's
                    ``on_bounds``, when the search wrote it);
* ``convergence``   objective of every trial in evaluation order and the best feasible so far;
* ``sensitivity``   the objective along each free parameter with the others at the best
                    values (one batched objective call over all grids);
* ``pareto``        two tasks' in-sample deltas of every trial, the feasible Pareto front;
* ``arms``          the A/B arms (``candidates.json`` if present, else computed now);
* ``stability``     the best weights re-found on bootstrap resamples of the search part
                    (among the run's best distinct feasible candidates): spread per
                    parameter (warned when wide), sign flips, and whether the search had
                    converged (the best still rising over the last 20% of evaluations);
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


def _task_rows(result: dict, prep, resamples: int, level: float, seed: int, best_row,
               pool: np.ndarray | None = None) -> list[dict]:
    """Per task and for the objective: baseline, best and the delta with its interval, in-sample
    and on the holdout.  With ``pool`` (the run's distinct feasible trials, the best among them)
    the objective's in-sample interval is selection-corrected
    (:func:`fusiontune.bootstrap.selection_corrected_gain`); the plain one stays as
    ``delta_naive``."""
    from ..bootstrap import paired_bootstrap, selection_corrected_gain

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
            if part == "in_sample" and pool is not None and len(pool) > 1:
                hit = np.flatnonzero(np.isclose(pool, best_row[None], rtol=0, atol=1e-9).all(axis=1))
                if hit.size:
                    sc = selection_corrected_gain(obj, pool, int(hit[0]), prep.space.baseline, resamples, level,
                                                  seed, show_progress=False)
                    rows["objective"][part]["delta_naive"] = rows["objective"][part]["delta"]
                    rows["objective"][part]["delta"] = _ci(sc.gain, sc.lo, sc.hi)
                    rows["objective"][part]["selection"] = {
                        "corrected": True, "candidates": sc.candidates, "optimism": sc.optimism,
                        "doc": "the pick-the-best step repeated on every bootstrap resample over the run's "
                               f"{sc.candidates} best distinct feasible trials (basic bootstrap of the winner's "
                               "error); the plain interval is delta_naive"}
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
    for j, f in enumerate(prep.space.free):
        v = winners[:, names.index(f)]
        q5, q50, q95 = np.quantile(v, [0.05, 0.5, 0.95])
        flips = bool((v < 0).any() and (v > 0).any())
        width = float(prep.space.high[j] - prep.space.low[j])
        rel = float((q95 - q5) / width) if width > 0 else 0.0
        of_med = float((q95 - q5) / abs(q50)) if abs(q50) > 1e-12 else None
        wide = rel > WIDE_SPREAD or (of_med is not None and of_med > WIDE_OF_MEDIAN)
        params[f] = {"best": float(best[names.index(f)]), "median": float(q50), "p5": float(q5), "p95": float(q95),
                     "std": float(v.std()), "spread": float(q95 - q5), "bound_width": width,
                     "relative_spread": rel, "spread_of_median": of_med, "wide": bool(wide),
                     "sign_flip": flips, "values": v.tolist(),
                     "positive_share": float((v > 0).mean()), "negative_share": float((v < 0).mean())}
        if wide and not flips:
            warnings.append(f"weight {f} is not pinned down by the data: the re-found best spans "
                            f"[{q5:.4g}, {q95:.4g}] (5-95%) over bootstrap resamples of the search data, "
                            f"{rel:.0%} of its bound width" +
                            (f" and {of_med:.0%} of its median" if of_med is not None else ""))
        if flips:
            warnings.append(f"weight {f} flips sign across bootstrap resamples of the search data "
                            f"({(v > 0).mean():.0%} positive, {(v < 0).mean():.0%} negative): its direction "
                            f"is not supported by the data")
    same = float((np.abs(winners - best[None]).max(axis=1) < 1e-8).mean()) if len(winners) else 0.0
    return {"resamples": int(resamples), "units": kind, "n_units": int(n_units), "candidates": int(len(pool)),
            "resamples_with_a_feasible_winner": int(any_feas.sum()), "distinct_winners": int(np.unique(win).size),
            "share_best_wins": same, "params": params, "warnings": warnings}


WIDE_SPREAD = 0.2  # a parameter's 5-95% spread above this share of its bound width is "wide" ...
WIDE_OF_MEDIAN = 0.5  # ... or above this share of its median's size
LATE_SHARE = 0.2  # the last 20% of the evaluations ...
LATE_GAIN = 0.01  # ... still bringing more than 1% of the best's gain: not converged


def _converged(trials: pd.DataFrame, result: dict) -> dict:
    """Did the search stop improving?  The best feasible objective's rise over the last
    ``LATE_SHARE`` of the evaluations, against the best's whole gain over the baseline."""
    conv = _convergence(trials)
    if not conv:
        return {}
    bsf = np.asarray(conv["best_so_far"], dtype=float)
    n = bsf.size
    base = float(result["baseline"]["objective"])
    final = bsf[-1]
    cut = max(0, int(np.floor(n * (1 - LATE_SHARE))) - 1)
    before = bsf[cut] if np.isfinite(bsf[cut]) else base
    late = float(final - max(before, base)) if np.isfinite(final) else 0.0
    gain = float(final - base) if np.isfinite(final) else 0.0
    out = {"evaluations": int(n), "late_evaluations": int(n - cut - 1), "late_improvement": late,
           "gain_over_baseline": gain, "late_share_of_gain": (late / gain) if gain > 0 else 0.0}
    out["converged"] = not (gain > 0 and late > LATE_GAIN * gain)
    if not out["converged"]:
        out["warning"] = (f"the search had not converged: the best improved by {late:+.5f} "
                          f"({late / gain:.0%} of its gain over the baseline) in the last {n - cut - 1} of "
                          f"{n} evaluations; a larger budget may find more (stop reason: "
                          f"{result.get('stop_reason')})")
    return out


def _guardrails(rep: dict, prep, arms: dict | None) -> dict:
    """Each guardrail's max_drop, and every best/arm delta against it: on the holdout (the
    judged rows) and in-sample; ``breaks`` when the delta is below -max_drop, ``ci-crosses``
    when only the interval reaches past it."""
    guarded = [t for t in prep.study.tasks if t.max_drop is not None]
    rows, warnings = [], []

    def check(who: str, part: str, task: str, d: dict | None, md: float):
        if not d or d.get("value") is None:
            return
        lo = d.get("lo")
        status = ("breaks" if d["value"] < -md else
                  "ci-crosses" if lo is not None and lo < -md else "ok")
        rows.append({"who": who, "part": part, "task": task, "max_drop": md, "delta": d, "status": status})
        if part != "in_sample" and status != "ok":
            what = (f"drops {task} by {-d['value']:.5f}, more than its max_drop {md:g}" if status == "breaks" else
                    f"has a {task} interval [{lo:+.5f}, {d['hi']:+.5f}] that crosses -max_drop {-md:g}")
            warnings.append(f"{who} {what} on the {part}")

    by_task = {r["task"]: r for r in rep.get("tasks") or []}
    for t in guarded:
        r = by_task.get(t.name, {})
        for part in ("holdout", "in_sample"):
            check("best", part, t.name, (r.get(part) or {}).get("delta"), t.max_drop)
    for a in (arms or {}).get("arms", []):
        part = "holdout" if str((arms or {}).get("evaluated_on", "")).startswith("holdout") else "in_sample"
        for t in guarded:
            check(a["name"], part, t.name, a["delta"].get(t.name), t.max_drop)
    return {"max_drop": {t.name: t.max_drop for t in prep.study.tasks}, "checks": rows, "warnings": warnings}


def _versus_baseline(rep: dict, result: dict) -> dict:
    """The best against the always-feasible baseline, in-sample and on the holdout."""
    obj = next((r for r in rep.get("tasks") or [] if r["task"] == "objective"), {})
    out, warnings = {}, []
    for part in ("in_sample", "holdout"):
        blk = obj.get(part)
        if not blk:
            continue
        d = blk["delta"]
        out[part] = {"baseline": blk["baseline"], "best": blk["best"], "gain": d}
        where = "in-sample" if part == "in_sample" else "on the holdout"
        if d["value"] <= 0:
            warnings.append(f"the best ({blk['best']:.5f}) does not beat the always-feasible baseline "
                            f"({blk['baseline']:.5f}) {where}: keep the baseline")
        elif part == "holdout" and d.get("hi") is not None and d["hi"] < 0:
            warnings.append("the best's objective-gain interval on the holdout lies below zero: keep the baseline")
        elif part == "holdout" and d.get("lo") is not None and d["lo"] <= 0:
            warnings.append("the best's objective-gain interval on the holdout includes zero: the gain is not "
                            "established")
    out["warnings"] = warnings
    return out


def _bound_text(on_bound) -> str:
    """on_bound as a list of names or of {param, bound/side, value} dicts -> one phrase."""
    parts = []
    for b in on_bound if isinstance(on_bound, (list, tuple)) else [on_bound]:
        if isinstance(b, dict):
            name = b.get("param") or b.get("name") or "?"
            side = b.get("bound") or b.get("side") or ""
            val = b.get("value")
            parts.append(f"{name}" + (f" = {val:g}" if isinstance(val, (int, float)) else "") +
                         (f" ({side})" if side else ""))
        else:
            parts.append(str(b))
    return ", ".join(parts)


def _load_arms(run_dir: Path | None, loaded, resamples: int, level: float, seed: int,
               k: int) -> tuple[dict | None, str]:
    from ..select import select_arms

    cpath = run_dir / "candidates.json" if run_dir is not None else None
    if cpath is not None and cpath.exists():
        try:
            cands = json.loads(cpath.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{cpath}: invalid JSON: {exc}") from None
        from ..rundir import check_derived

        check_derived(cpath, cands, run_dir, "arms", "select the arms for this run again (fusiontune select), "
                                                     "or delete the file to have the report select them")
        return cands, str(cpath)
    return select_arms(run_dir, k=k, resamples=resamples, level=level, seed=seed, show_progress=False,
                       loaded=loaded), "computed now (fusiontune select not run yet)"


def collect(run_dir: Path | None = None, pareto: str | None = None, resamples: int = 1000, level: float = 0.95,
            stability_resamples: int = 100, stability_candidates: int = 50, sensitivity_points: int = 25,
            k: int = 3, seed: int = 0, loaded=None, arms: dict | None = None) -> dict:
    """The report's data for a finished run (see the module docstring).

    From objects: ``loaded=(result, trials, prep)`` and optionally ``arms`` (a
    :func:`fusiontune.select.select_arms` dict); ``run_dir`` may then be None."""
    from ..select import load_run

    if loaded is None:
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
    best_row = None if ltr else prep.space.from_dict(result["best"]["params"],
                                                      str(run_dir / "result.json") if run_dir else "result")
    rep = {
        "run": str(Path(run_dir).resolve()) if run_dir is not None else "(objects)",
        "run_id": result.get("run_id"),
        "summary": {k_: result.get(k_) for k_ in ("run_id", "study", "method", "seed", "formula", "budget", "evaluations",
                                                  "seconds", "stop_reason", "rows", "split", "normalisation",
                                                  "study_file", "log", "gauc_weighting", "best_trial", "note")},
        "params": {"best": result["best"].get("params"), "baseline": result["baseline"].get("params")},
        "level": level, "resamples": resamples,
        "tasks": None,
        "convergence": {} if ltr else _convergence(trials),  # a fitted fuser has no search history
        "warnings": [],
    }
    pool = None
    if best_row is not None and not ltr and len(trials):
        from ..select import distinct_feasible

        pool = distinct_feasible(trials, prep.space.all_names, stability_candidates)[prep.space.all_names]
        pool = pool.to_numpy(dtype=float)
    rep["tasks"], rep["units"] = _task_rows(result, prep, resamples, level, seed, best_row, pool)
    rep["versus_baseline"] = _versus_baseline(rep, result)
    rep["warnings"] += rep["versus_baseline"]["warnings"]
    on_bound = result.get("on_bounds") or result.get("on_bound")  # written by the search
    if on_bound:
        rep["on_bound"] = on_bound
        rep["warnings"].append("the best lies on a bound: " + _bound_text(on_bound) +
                               "; the optimum may lie beyond it (widen the bound if that makes sense)")
    if best_row is not None and not ltr:
        rep["sensitivity"] = _sensitivity(prep, best_row, sensitivity_points)
        if arms is not None:
            src = "given"
        else:
            arms, src = _load_arms(Path(run_dir) if run_dir is not None else None, loaded, resamples, level, seed, k)
        rep["arms"] = arms
        rep["arms_source"] = src
        if pair and len(trials):
            rep["pareto"] = _pareto(trials, prep, result, pair, arms.get("arms", []))
        if len(trials):
            rep["stability"] = _stability(prep, trials, result, stability_resamples, stability_candidates, seed)
            conv = _converged(trials, result)
            rep["stability"]["convergence"] = conv
            if conv.get("warning"):
                rep["stability"]["warnings"].append(conv["warning"])
            rep["warnings"] += rep["stability"].get("warnings", [])
    if result.get("segments"):
        from .segments_section import collect_segments

        rep["segments"] = collect_segments(result, prep, resamples, level, seed)
    rep["guardrails"] = _guardrails(rep, prep, rep.get("arms"))
    rep["warnings"] += rep["guardrails"]["warnings"]
    arms_d = rep.get("arms") or {}
    sb = arms_d.get("search_best") or {}
    if sb.get("status") == "dropped":
        rep["warnings"].append(f"the search's best (trial {sb.get('trial')}) is not an A/B arm: {sb.get('detail')}")
    fi = result.get("feature_importance")
    if ltr:
        if isinstance(fi, dict) and fi:
            items = sorted(((str(k_), float(v)) for k_, v in fi.items()), key=lambda kv: -abs(kv[1]))
            rep["ltr"] = {"feature_importance": dict(items)}
        else:
            rep["ltr"] = {"note": "result.json has no feature_importance for this learned fuser"}
        from .ltr_section import collect_versus

        rep["ltr"]["vs"] = collect_versus(result)
    return rep
