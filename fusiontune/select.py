"""Offline A/B candidate selection: which 2-4 weight sets deserve an online test.

Three roles of rows (``[split]``, see ``docs/selection.md``): the search optimised on the
*search* rows; arms are **picked** on the *select* rows; the *holdout* rows, which nothing
chooses on, **judge** the picked arms.  A study with only a holdout share picks on the search
rows (the holdout stays untouched; the output says so); a study without a split does
everything in-sample (flagged).

Steps (``fusiontune select``):

1. keep the run's **feasible** trials (guardrails met in-sample), drop duplicates, take the
   ``candidates`` best by in-sample objective (the search's best is the first);
2. score them on the **pick rows** with **paired bootstrap** intervals (groups resampled
   when the log has a group column; :mod:`fusiontune.bootstrap`);
3. drop, with the reason, every candidate that breaks a guardrail on the pick rows, whose
   objective-gain interval lies below zero there, or that ranks exactly like the baseline;
   keep the **Pareto front** over the
   per-task deltas (the baseline, all deltas 0, takes part: a candidate it dominates is no
   arm);
4. pick ``k`` arms **far apart** by farthest-point sampling, starting from the front's best
   gain on the pick rows.  Distance (``diversity``):

   * ``"rank"`` (default): ranking disagreement, ``1 - Spearman`` correlation between the
     candidates' fused scores over the pick rows.  Two weight sets that look different
     but rank items alike would teach an A/B test nothing; this measures what users see.
   * ``"weights"``: Euclidean distance in the normalised weight space (each free
     parameter scaled to [0, 1] by its search bounds).

5. judge the arms on the **holdout**: per-task deltas and objective gain with paired
   bootstrap intervals.  An arm whose whole gain interval lies **below zero** on the holdout
   is **dropped** (reason ``holdout-gain-below-zero``, with a note); no other candidate takes
   its place, so the holdout only ever removes an arm that it shows to be worse than the
   baseline, and never chooses one (the intervals of the arms that stay keep their meaning).
   The holdout otherwise **flags**: ``holdout-guardrail`` (a task drops more than its
   ``max_drop``), ``guardrail-within-ci`` (a task's interval reaches past ``-max_drop``),
   ``gain-ci-includes-zero``, ``no-gain``.

Every candidate that is not an arm is listed in ``dropped`` with its reason.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError, LogError, RunError

__all__ = ["pareto_front", "farthest_point", "rank_distance", "weight_distance", "select_arms",
           "load_run", "distinct_feasible"]

DIVERSITY = ("rank", "weights")


# --------------------------------------------------------------------------- pure selection
def pareto_front(values: np.ndarray) -> np.ndarray:
    """Mask of the non-dominated rows of ``values`` (P, K), every column maximised.

    Row i is dominated when some row j is >= in every column and > in at least one.
    Identical rows do not dominate each other (both stay)."""
    v = np.asarray(values, dtype=float)
    ge = (v[None, :, :] >= v[:, None, :]).all(axis=2)  # ge[i, j]: j >= i everywhere
    gt = (v[None, :, :] > v[:, None, :]).any(axis=2)  # gt[i, j]: j > i somewhere
    return ~(ge & gt).any(axis=1)


def farthest_point(dist: np.ndarray, k: int, start: int) -> list[int]:
    """Greedy farthest-point sampling: start, then repeatedly the point whose distance to
    the nearest chosen one is largest (ties: the lower index).  Returns <= k indices."""
    dist = np.asarray(dist, dtype=float)
    n = dist.shape[0]
    chosen = [int(start)]
    nearest = dist[start].copy()
    while len(chosen) < min(k, n):
        nearest[chosen] = -np.inf
        j = int(np.argmax(nearest))
        if not np.isfinite(nearest[j]):
            break
        chosen.append(j)
        nearest = np.minimum(nearest, dist[j])
    return chosen


def rank_distance(scores: np.ndarray) -> np.ndarray:
    """1 - Spearman correlation between rows of fused scores (P, N)."""
    s = np.atleast_2d(scores)
    ranks = pd.DataFrame(s.T).rank(method="average").to_numpy().T
    if s.shape[0] == 1:
        return np.zeros((1, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(ranks)
    c = np.nan_to_num(c, nan=1.0)
    d = np.clip(1.0 - c, 0.0, 2.0)
    np.fill_diagonal(d, 0.0)
    return d


def weight_distance(unit: np.ndarray) -> np.ndarray:
    """Euclidean distance between rows of normalised (unit-cube) free parameters."""
    u = np.atleast_2d(unit)
    return np.sqrt(((u[:, None, :] - u[None, :, :]) ** 2).sum(axis=2))


# --------------------------------------------------------------------------- run access
def load_run(run_dir: Path):
    """(result, trials, prep) of a finished run: the study is rebuilt from result.json."""
    from .pipeline import metric_columns, prepare
    from .results import read_run, run_study

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: run directory not found (write a search run there first)")
    result, trials = read_run(run_dir)
    study = run_study(run_dir)  # the run's study.json, else its study file; refuses a changed log
    if study is None:
        raise RunError(f"{run_dir / 'result.json'}: records no study (no study.json, key 'study_file' missing "
                       f"or the file is gone)")
    sf = study.path or run_dir / "study.json"
    prep = prepare(study)
    fp = result.get("log_fingerprint") or {}
    if fp.get("rows") is not None and int(fp["rows"]) != prep.n_rows:
        raise LogError(f"{study.log}: the log has {prep.n_rows} rows, the run {run_dir} was made on {fp['rows']}; "
                       f"re-run the search on the new log")
    if result.get("formula") and not str(result["formula"]).startswith("ltr-") and result["formula"] != prep.formula.name:
        raise InputError(f"{run_dir / 'result.json'}: formula {result['formula']!r} but {sf} now says "
                         f"{prep.formula.name!r}; the study changed since the run")
    if len(trials):
        learned = str(result.get("formula", "")).startswith("ltr-")  # a fuser: no weight columns
        need = ([] if learned else prep.space.all_names) + ["objective", "feasible"] + metric_columns(study)
        miss = [c for c in need if c not in trials.columns]
        if miss:
            raise InputError(f"{run_dir / 'trials.csv'}: missing column {miss[0]!r} (expected {', '.join(need)})")
    return result, trials, prep


def distinct_feasible(trials: pd.DataFrame, names: list[str], n: int | None = None) -> pd.DataFrame:
    """Feasible trials, duplicates (same params to 9 decimals) dropped, best objective first."""
    if not len(trials):
        return trials
    feas = trials[trials["feasible"].astype(bool)]
    feas = feas.sort_values("objective", ascending=False, kind="stable")
    key = feas[names].round(9)
    feas = feas[~key.duplicated()]
    return feas if n is None else feas.head(n)


# --------------------------------------------------------------------------- the command's work
def _ci(v: float, lo: float, hi: float) -> dict:
    return {"value": float(v), "lo": float(lo), "hi": float(hi)}


def _dominator(vals: np.ndarray, i: int, alive: np.ndarray) -> int | None:
    """Index of a row of ``vals`` among ``alive`` that dominates row i (the one with the largest
    sum), or None."""
    v = vals[i]
    dom = alive & (vals >= v).all(axis=1) & (vals > v).any(axis=1)
    if not dom.any():
        return None
    idx = np.flatnonzero(dom)
    return int(idx[np.argmax(vals[idx].sum(axis=1))])


def _roles(prep) -> tuple[object, str, object, str]:
    """(objective arms are picked on, its role, objective arms are judged on, its role)."""
    hold = prep.holdout_objective
    sel = getattr(prep, "select_objective", None)
    if sel is not None:
        return sel, "select", hold, "holdout"
    if hold is not None:
        return prep.objective, "search", hold, "holdout"
    return prep.objective, "search", prep.objective, "search"


HONESTY = {
    "select": "arms were picked on the select rows and are judged on the holdout rows, which nothing chose on",
    "search": ("arms were picked on the search rows (the study has no [split] select share) and are judged on "
               "the holdout rows, which nothing chose on; add [split] select = 0.15 for an independent pick"),
    "none": ("the study has no split: arms were picked and are judged on the rows the search optimised on, "
             "so every interval is optimistic (winner's curse)"),
}


def select_arms(run_dir: Path | None = None, k: int = 3, resamples: int = 1000, level: float = 0.95,
                candidates: int = 50, diversity: str = "rank", seed: int = 0, show_progress: bool | None = None,
                loaded=None) -> dict:
    """The candidates.json dict for a finished run (see the module docstring).

    ``loaded`` = ``(result, trials, prep)`` selects from objects (no run directory needed)."""
    from .bootstrap import paired_bootstrap

    if diversity not in DIVERSITY:
        raise InputError(f"diversity must be one of {', '.join(DIVERSITY)}, got {diversity!r}", param="diversity")
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), e.g. 0.95; got {level}", param="level")
    t0 = time.perf_counter()
    if loaded is None and run_dir is None:
        raise InputError("select_arms needs a run directory or loaded=(result, trials, prep)", param="run_dir")
    result, trials, prep = loaded or load_run(run_dir)
    names = prep.space.all_names
    free = prep.space.free
    tasks = [t.name for t in prep.study.tasks]
    pool = distinct_feasible(trials, names, candidates)
    pick_obj, pick_role, judge_obj, judge_role = _roles(prep)
    mode = "none" if judge_role == "search" else pick_role
    max_drop = {t.name: t.max_drop for t in prep.study.tasks}
    out = {
        "run": None if run_dir is None else str(Path(run_dir)), "run_id": result.get("run_id"),
        "study": result.get("study"),
        "formula": prep.formula.name,
        "picked_on": pick_role,
        "evaluated_on": "holdout" if judge_role == "holdout" else "search (no holdout in the study: in-sample only)",
        "honesty": HONESTY[mode],
        "rows": int(judge_obj.n_rows), "pick_rows": int(pick_obj.n_rows),
        "resamples": int(resamples), "level": float(level), "seed": int(seed),
        "diversity": diversity,
        "diversity_doc": ("1 - Spearman correlation of the candidates' fused scores on the pick rows"
                          if diversity == "rank" else
                          "Euclidean distance of the free parameters scaled to [0, 1] by their bounds"),
        "max_drop": max_drop,
        "baseline": {"name": "baseline", "params": prep.space.as_dict(prep.space.baseline),
                     "per_task": {t: float(v) for t, v in zip(tasks, judge_obj.baseline_per_task)},
                     "objective": float(judge_obj.baseline_per_task @ judge_obj.w)},
        "candidates_considered": int(len(pool)), "arms": [], "dropped": [], "notes": [],
    }

    def finish(note: str | None = None) -> dict:
        if note:
            out["notes"].append(note)
        if out["notes"]:
            out["note"] = "; ".join(out["notes"])
        out["seconds"] = round(time.perf_counter() - t0, 3)
        return out

    best_params = (result.get("best") or {}).get("params") or {}
    best_theta = np.array([best_params.get(n_, np.nan) for n_ in names], dtype=float)
    if not len(pool):
        out["search_best"] = {"status": "baseline", "reason": "no feasible candidate in the run"}
        return finish("no feasible candidate in the run: keep the baseline (no A/B arm to test)")
    theta = pool[names].to_numpy(dtype=float)
    is_best = np.isclose(theta, best_theta[None], rtol=0, atol=1e-9).all(axis=1)
    trial_of = [int(t) for t in pool["trial"]] if "trial" in pool else [None] * len(pool)

    # ---- 2. the pick rows
    bs = paired_bootstrap(pick_obj, theta, prep.space.baseline, resamples, level, seed, show_progress)
    out["units"] = bs.units
    out["n_units"] = int(bs.n_units)
    reason: dict[int, tuple[str, str]] = {}
    ok = pick_obj.judge(bs.per_task).feasible
    on = f"on the {pick_role} rows"
    for i in np.flatnonzero(~ok):
        worst = [(t, bs.delta[i, q]) for q, t in enumerate(tasks)
                 if max_drop[t] is not None and bs.delta[i, q] < -max_drop[t]]
        t, d = min(worst, key=lambda x: x[1]) if worst else (tasks[0], float("nan"))
        reason[int(i)] = ("guardrail", f"breaks the {t} guardrail {on}: Δ {d:+.5f} < -max_drop {max_drop[t]:g}")
    for i in np.flatnonzero(bs.gain_hi < 0):
        if int(i) not in reason:
            reason[int(i)] = ("gain-ci-below-zero", f"objective-gain interval {on} lies below zero: "
                              f"[{bs.gain_lo[i]:+.5f}, {bs.gain_hi[i]:+.5f}]")
    same = np.all(np.nan_to_num(np.abs(bs.delta), nan=0.0) < 1e-15, axis=1)
    for i in np.flatnonzero(same):
        if int(i) not in reason:
            reason[int(i)] = ("same-as-baseline", f"every task's Δ {on} is 0: it ranks like the baseline")
    alive = np.array([i not in reason for i in range(len(pool))])
    vals = np.vstack([np.nan_to_num(bs.delta, nan=-np.inf), np.zeros((1, len(tasks)))])  # + the baseline
    alive_b = np.r_[alive, True]
    front_mask = np.zeros(len(pool), bool)
    idx = np.flatnonzero(alive_b)
    front_mask[idx[:-1][pareto_front(vals[idx])[:-1]]] = True
    for i in np.flatnonzero(alive & ~front_mask):
        j = _dominator(vals, int(i), alive_b)
        who = "the baseline" if j == len(pool) else (f"trial {trial_of[j]}" if trial_of[j] is not None else
                                                     f"candidate {j}")
        reason[int(i)] = ("dominated", f"dominated {on} by {who} (no better on any task, worse on one)")
    front = np.flatnonzero(front_mask)
    out["pareto_size"] = int(front.size)
    picks: list[int] = []
    if front.size:
        if diversity == "rank":
            fused = pick_obj.formula.scores(pick_obj.prepared, theta[front])
            dist = rank_distance(fused)
        else:
            free_idx = [names.index(f) for f in free]
            dist = weight_distance(prep.space.to_unit(theta[front][:, free_idx]))
        start = int(np.argmax(bs.gain[front]))
        picks = farthest_point(dist, k, start)
        chosen = [int(front[j]) for j in picks]
        for jj, i in enumerate(front):
            if int(i) in chosen:
                continue
            near = min(range(len(picks)), key=lambda r: dist[jj, picks[r]])
            reason[int(i)] = ("not-diverse", f"on the Pareto front {on} but not among the {len(picks)} arm(s) "
                              f"picked far apart: {diversity} distance {dist[jj, picks[near]]:.4g} to arm-{near + 1}")
    else:
        chosen = []

    # ---- 5. judge the arms on the holdout (nothing is chosen here; an arm shown worse than the
    # baseline is dropped without replacement)
    holdout_gain: dict[int, dict] = {}
    if chosen:
        jb = bs if judge_obj is pick_obj else paired_bootstrap(judge_obj, theta[chosen], prep.space.baseline,
                                                               resamples, level, seed, show_progress)
        jrow = {i: (i if judge_obj is pick_obj else r) for r, i in enumerate(chosen)}
        jok = judge_obj.judge(jb.per_task).feasible
        for rank, i in enumerate(chosen):
            r = jrow[i]
            flags = []
            if jb.gain_hi[r] < 0:
                flags.append("holdout-gain-below-zero" if judge_role == "holdout" else "gain-ci-below-zero")
            elif jb.gain_lo[r] <= 0 <= jb.gain_hi[r]:
                flags.append("gain-ci-includes-zero")
            if jb.gain[r] <= 0:
                flags.append("no-gain")
            if not jok[r]:
                flags.append("holdout-guardrail")
            elif np.any(jb.delta_lo[r] < -judge_obj.max_drop):
                flags.append("guardrail-within-ci")  # the interval reaches past a task's max_drop
            if judge_role == "search":
                flags.append("in-sample-only")
            row = pool.iloc[i]
            j = picks[rank]
            arm = {
                "name": f"arm-{rank + 1}",
                "params": {n_: float(row[n_]) for n_ in names},
                "trial": trial_of[i],
                "is_search_best": bool(is_best[i]),
                "objective_in_sample": float(row["objective"]),
                "per_task": {t: float(v) for t, v in zip(tasks, jb.per_task[r])},
                "objective": float(jb.per_task[r] @ judge_obj.w),
                "delta": {t: _ci(jb.delta[r, q], jb.delta_lo[r, q], jb.delta_hi[r, q]) for q, t in enumerate(tasks)},
                "gain": _ci(jb.gain[r], jb.gain_lo[r], jb.gain_hi[r]),
                "pick": {"rows": pick_role, "objective": float(bs.per_task[i] @ pick_obj.w),
                         "gain": _ci(bs.gain[i], bs.gain_lo[i], bs.gain_hi[i]),
                         "delta": {t: _ci(bs.delta[i, q], bs.delta_lo[i, q], bs.delta_hi[i, q])
                                   for q, t in enumerate(tasks)}},
                "distance_to_previous_arms": (None if rank == 0 else
                                              float(min(dist[j, p] for p in picks[:rank]))),
                "flags": flags,
            }
            if "holdout-gain-below-zero" in flags:
                # dropped, not replaced: the holdout removes an arm it shows to be worse than the
                # baseline, and never picks another in its place
                reason[int(i)] = ("holdout-gain-below-zero",
                                  f"{arm['name']}: its objective-gain interval on the holdout lies below zero "
                                  f"[{jb.gain_lo[r]:+.5f}, {jb.gain_hi[r]:+.5f}] (no other candidate takes its "
                                  f"place: the holdout never chooses)")
                holdout_gain[int(i)] = arm["gain"]
                out["notes"].append(f"{arm['name']} dropped: its objective-gain interval on the holdout lies "
                                    f"below zero [{jb.gain_lo[r]:+.5f}, {jb.gain_hi[r]:+.5f}]; do not test it")
                continue
            out["arms"].append(arm)
            if "holdout-guardrail" in flags:
                out["notes"].append(f"{arm['name']}: breaks a guardrail on the holdout")
    for i in sorted(reason):
        code, detail = reason[i]
        row = pool.iloc[i]
        out["dropped"].append({"trial": trial_of[i], "is_search_best": bool(is_best[i]),
                               "params": {n_: float(row[n_]) for n_ in names},
                               "objective_in_sample": float(row["objective"]),
                               "pick_gain": _ci(bs.gain[i], bs.gain_lo[i], bs.gain_hi[i]),
                               **({"holdout_gain": holdout_gain[i]} if i in holdout_gain else {}),
                               "reason": code, "detail": detail})
    counts: dict[str, int] = {}
    for d in out["dropped"]:
        counts[d["reason"]] = counts.get(d["reason"], 0) + 1
    out["dropped_counts"] = counts
    bi = np.flatnonzero(is_best)
    if bi.size:
        i = int(bi[0])
        arm = next((a for a in out["arms"] if a["is_search_best"]), None)
        out["search_best"] = ({"trial": trial_of[i], "status": arm["name"]} if arm else
                              {"trial": trial_of[i], "status": "dropped", "reason": reason[i][0],
                               "detail": reason[i][1]})
        if not arm:
            out["notes"].append(f"the search's best (trial {trial_of[i]}) is not an arm: {reason[i][1]}")
    else:
        out["search_best"] = {"status": "not a candidate",
                              "reason": "the run's best is not among its distinct feasible trials"}
    if not front.size:
        return finish(f"no candidate survives {on} (see dropped): keep the baseline")
    if not out["arms"]:
        return finish("every arm's objective-gain interval on the holdout lies below zero: keep the baseline")
    if len(picks) < k:
        out["notes"].append(f"the Pareto front has only {front.size} candidate(s): {len(picks)} arm(s) instead of {k}")
    return finish()


def arms_table(cands: dict, console=None, max_dropped: int = 8) -> None:
    """Print the arms with their per-task deltas and intervals, then each arm's weights, then
    the dropped candidates with their reasons (the search's best first, ``max_dropped`` shown).

    The table is arms x tasks; when that is wider than the terminal (80 columns with four
    tasks is) it is printed transposed, tasks x arms, in as many blocks of arms as needed.
    Numbers are never cut."""
    from rich.markup import escape

    from .tables import fits, stdout_console, table, width_of

    console = console or stdout_console()
    pct = int(round(cands["level"] * 100))
    console.print(escape(f"A/B arms picked on the {cands.get('picked_on', 'holdout')} rows, judged on the "
                         f"{cands['evaluated_on'].split(' ')[0]} ({cands['rows']} rows, "
                         f"{cands.get('resamples')} {cands.get('units', '')} resamples, {pct}% CI, diversity: "
                         f"{cands['diversity']})"))
    tasks = list(cands["baseline"]["per_task"])

    def ci(d):
        return f"{d['value']:+.4f}\n[{d['lo']:+.4f}, {d['hi']:+.4f}]"

    cols = {}  # arm name -> (cells per task + objective, flags)
    for arm in cands["arms"]:
        cols[arm["name"]] = ([ci(d) for d in arm["delta"].values()] + [ci(arm["gain"])],
                             ", ".join(arm["flags"]) or "-")
    cols["baseline"] = (["0" for _ in tasks] + [f"J={cands['baseline']['objective']:.4f}"], "control")
    wide = table([("arm", "text"), *[(f"Δ {t}", "num") for t in tasks], ("Δ objective", "num"), ("flags", "text")])
    for name, (cells, flags) in cols.items():
        wide.add_row(name, *cells, flags)
    transposed = not fits(console, wide)
    if not transposed:
        console.print(wide)
    else:
        names = [a["name"] for a in cands["arms"]]  # the baseline's zeros go; its J is listed below
        first = table([("Δ vs baseline", "text"), ("arm", "num")])
        for t, c in zip(tasks + ["objective"], cols[names[0]][0] if names else cols["baseline"][0]):
            first.add_row(t, c)
        per_arm = max(1, width_of(console, first) - width_of(console, table([("Δ vs baseline", "text")])))
        n = max(1, (console.width - (width_of(console, first) - per_arm)) // per_arm)
        for i in range(0, len(names), n):
            chunk = names[i:i + n]
            t_ = table([("Δ vs baseline", "text"), *[(a, "num") for a in chunk]])
            for q, t in enumerate(tasks + ["objective"]):
                t_.add_row(t, *[cols[a][0][q] for a in chunk])
            console.print(t_)
    for arm in [*cands["arms"], cands["baseline"]]:
        params = " ".join(f"{k_}={v:.4g}" for k_, v in arm["params"].items())
        flags = f" · flags: {cols[arm['name']][1]}" if transposed else ""
        if transposed and arm is cands["baseline"]:
            flags = f" · objective J={arm['objective']:.4f} (control)"
        console.print(escape(f"{arm['name']}: {params}{flags}"))
    if cands.get("honesty"):
        console.print(escape(f"roles: {cands['honesty']}"))
    dropped = cands.get("dropped") or []
    if dropped:
        counts = ", ".join(f"{v} {k}" for k, v in (cands.get("dropped_counts") or {}).items())
        console.print(f"dropped {len(dropped)} candidate(s) ({counts}):")
        shown = sorted(dropped, key=lambda d: (not d.get("is_search_best"), -d.get("objective_in_sample", 0)))
        for d in shown[:max_dropped]:
            star = " (the search's best)" if d.get("is_search_best") else ""
            console.print(escape(f"  trial {d.get('trial')}{star}: {d['reason']}: {d['detail']}"))
        if len(shown) > max_dropped:
            console.print(f"  and {len(shown) - max_dropped} more, each with its reason in candidates.json")
    sb = cands.get("search_best") or {}
    if sb.get("status") == "dropped" and not any(d.get("is_search_best") for d in dropped):
        console.print(escape(f"the search's best (trial {sb.get('trial')}) was dropped: {sb.get('detail')}"))
    elif str(sb.get("status", "")).startswith("arm-"):
        console.print(f"the search's best (trial {sb.get('trial')}) is {sb['status']}")
    for n in cands.get("notes") or ([cands["note"]] if cands.get("note") else []):
        console.print(escape(f"note: {n}"))
