"""Equal-budget comparison of search methods (``fusiontune compare``).

The study is prepared ONCE (log, split, objectives) and every method runs with every seed
at the same evaluation budget on the same objective.  Per method the table reports:

* ``best in-sample``: the best feasible objective found on the search part (mean +- std
  over seeds);
* ``holdout``: the objective of that best candidate on the holdout part (mean +- std);
* ``holdout lift``: holdout objective minus the baseline's holdout objective (mean);
* ``holdout wins``: share of seeds whose best beats the baseline on the holdout AND keeps
  every guardrail there (a guardrail broken on the holdout counts as a loss);
* ``holdout guardrail breaks``: seeds whose best breaks a guardrail on the holdout (its
  metric falls more than ``max_drop`` below the baseline's there), and which tasks;
* ``evals to 99%``: evaluations a run needed before its best-so-far reached 99% of the
  best in-sample gain (over the baseline) found by ANY search method and seed in this
  comparison; mean over the seeds that got there, with how many did (``n/a`` for LTR
  fusers, which do not search weights; their in-sample gain does not set the target
  either, since a fitted model's in-sample objective is not comparable to an evaluated
  candidate's);
* ``seconds``: wall time per run (mean).

LTR rows are the fusers of :data:`fusiontune.ltr.lineup.LINEUP` (``ltr-gbdt``,
``ltr-gbdt-lambdarank``, ``ltr-dnn``, ``ltr-dnn-ft``; the same fusers as
``benchmarks/bench_ltr.py``).  They run after every search method, start from the **best
formula** of this comparison (the search run, over all methods and seeds, with the best
in-sample objective; the holdout does not choose it) and are judged against it:
``vs_best_formula`` is the fuser's holdout objective minus that run's, and ``loses`` flags a
fuser at or below it or the baseline on the holdout; ``guardrails_vs_best_formula`` puts each
guarded task's holdout delta (vs the baseline) of the fuser beside the best formula's, and
``pays_in_guardrails`` flags a fuser below the formula on one.  Without a search method in the
comparison they start from the baseline and have no formula to be judged against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import DependencyError, InputError

__all__ = ["compare", "CompareResult", "markdown_table", "LTR_METHODS"]

def _lineup_names() -> tuple[str, ...]:
    from .ltr.lineup import LINEUP

    return tuple(LINEUP)


LTR_METHODS = _lineup_names()


@dataclass
class CompareResult:
    runs: pd.DataFrame  # one row per (method, seed)
    table: pd.DataFrame  # one row per method
    target_gain: float | None
    best_formula: dict | None = None  # the search run the LTR fusers start from and are judged against


def _check_methods(prep, methods: list[str], population: int, budget: int, method_options: dict) -> None:
    from .search.base import METHODS, make_searcher, method_population

    if not methods:
        raise InputError("methods: name at least one method, e.g. ['cem', 'cma', 'tpe']", param="methods")
    make_searcher("cem", dim=prep.space.dim, x0=prep.space.baseline_unit, population=population)  # registers all
    for m in methods:
        if m in LTR_METHODS:
            continue
        if m not in METHODS:
            raise InputError(f"methods: unknown method {m!r} (methods: "
                             f"{', '.join(sorted(METHODS) + sorted(LTR_METHODS))})", param="methods")
        # unknown / bad options fail now, not after an hour of other methods
        pop, opts = method_population(population, method_options.get(m, {}))
        make_searcher(m, dim=prep.space.dim, x0=prep.space.baseline_unit, seed=0, population=pop,
                      options=opts, budget=budget)
    if len(set(methods)) != len(methods):
        raise InputError(f"methods: {','.join(methods)} names a method twice", param="methods")


def _broken_guardrails(prep, hold: dict) -> list[str]:
    """Tasks whose metric for the best weights falls more than ``max_drop`` below the
    baseline's on the holdout."""
    out = []
    for t in prep.study.tasks:
        if t.max_drop is None:
            continue
        d = float(hold["best"]["per_task"][t.name]) - float(hold["baseline"]["per_task"][t.name])
        if d < -t.max_drop:
            out.append(t.name)
    return out


def _guard_deltas(prep, hold: dict) -> dict[str, float]:
    """Each guarded task's holdout metric minus the baseline's there."""
    return {t.name: float(hold["best"]["per_task"][t.name]) - float(hold["baseline"]["per_task"][t.name])
            for t in prep.study.tasks if t.max_drop is not None}


def _run_ltr(prep, method: str, seed: int, start: dict | None):
    try:
        from .ltr.lineup import fit_lineup
    except ImportError:
        raise DependencyError(f"methods: {method!r} needs the ltr fusers, which cannot be imported") from None
    return fit_lineup(prep, method, seed, start=start)[0]


def compare(prep, methods: list[str], budget: int, seeds: int, population: int, patience: int = 0,
            min_delta: float = 1e-6, method_options: dict | None = None, seed0: int = 0,
            on_run=None) -> CompareResult:
    """Run every method with seeds ``seed0 .. seed0+seeds-1`` at ``budget`` evaluations."""
    from .pipeline import search

    method_options = method_options or {}
    _check_methods(prep, methods, population, budget, method_options)
    base_j = float(prep.objective.baseline_per_task @ prep.objective.w)
    rows, curves = [], {}
    best = None  # (in-sample objective, method, seed, params, holdout objective) of the best search run
    order = [m for m in methods if m not in LTR_METHODS] + [m for m in methods if m in LTR_METHODS]
    for m in order:
        for seed in range(seed0, seed0 + seeds):
            t0 = time.perf_counter()
            if m in LTR_METHODS:
                result = _run_ltr(prep, m, seed, None if best is None else best["params"])
                curve = None
            else:
                result, trials = search(prep, m, budget, seed, population, patience, min_delta,
                                        method_options.get(m, {}), show_progress=False)
                obj = np.where(trials["feasible"].to_numpy(bool), trials["objective"].to_numpy(float), -np.inf)
                curve = np.maximum.accumulate(obj) if len(obj) else obj
                if result["best"]["feasible"] and (best is None or result["best"]["objective"] > best["in_sample"]):
                    best = {"method": m, "seed": seed, "params": result["best"]["params"],
                            "in_sample": float(result["best"]["objective"]),
                            "holdout": float(result["holdout"]["best"]["objective"])
                            if result.get("holdout") else np.nan,
                            "guardrails": _guard_deltas(prep, result["holdout"]) if result.get("holdout") else {}}
            seconds = time.perf_counter() - t0
            hold = result.get("holdout")
            row = {"method": m, "seed": seed, "best_in_sample": float(result["best"]["objective"]),
                   "gain_in_sample": float(result["best"]["objective"]) - base_j,
                   "evaluations": result.get("evaluations") if curve is not None else None,
                   "stop_reason": result.get("stop_reason", ""), "seconds": seconds}
            if m in LTR_METHODS:  # which formula the fuser started from
                row["start"] = "baseline" if best is None else f"{best['method']} seed {best['seed']}"
            if hold:
                row["holdout"] = float(hold["best"]["objective"])
                row["holdout_lift"] = float(hold["best"]["objective"]) - float(hold["baseline"]["objective"])
                broken = _broken_guardrails(prep, hold)
                row["holdout_feasible"] = not broken
                row["holdout_broken"] = ",".join(broken)
                for t, d in _guard_deltas(prep, hold).items():
                    row[f"holdout_delta_{t}"] = d
            rows.append(row)
            curves[(m, seed)] = curve
            if on_run is not None:
                on_run(row)
    runs = pd.DataFrame(rows)
    search_gains = [r["gain_in_sample"] for r in rows if curves[(r["method"], r["seed"])] is not None]
    target = max(search_gains) if search_gains else None
    evals = []
    for r in rows:
        c = curves[(r["method"], r["seed"])]
        if c is None or target is None or target <= 0:
            evals.append(np.nan)
            continue
        hit = np.flatnonzero(c - base_j >= 0.99 * target)
        evals.append(float(hit[0] + 1) if hit.size else np.inf)
    runs["evals_to_99"] = evals
    table = []
    for m in methods:
        g = runs[runs["method"] == m]
        e = g["evals_to_99"].to_numpy(float)
        reached = e[np.isfinite(e)]
        t = {"method": m, "runs": len(g),
             "best_mean": g["best_in_sample"].mean(), "best_std": g["best_in_sample"].std(ddof=0),
             "holdout_mean": g["holdout"].mean() if "holdout" in g else np.nan,
             "holdout_std": g["holdout"].std(ddof=0) if "holdout" in g else np.nan,
             "holdout_lift_mean": g["holdout_lift"].mean() if "holdout_lift" in g else np.nan,
             "holdout_win_share": ((g["holdout_lift"] > 0) & g["holdout_feasible"].astype(bool)).mean()
             if "holdout_lift" in g else np.nan,
             "holdout_guardrail_breaks": int((~g["holdout_feasible"].astype(bool)).sum())
             if "holdout_feasible" in g else np.nan,
             "holdout_broken_tasks": ",".join(sorted({t for s in g["holdout_broken"] for t in s.split(",") if t}))
             if "holdout_broken" in g else "",
             "evals_to_99_mean": reached.mean() if reached.size else np.nan,
             "reached_99": int(reached.size) if m not in LTR_METHODS else np.nan,
             "seconds_mean": g["seconds"].mean()}
        for c in [c for c in runs.columns if c.startswith("holdout_delta_")]:
            t[c] = g[c].mean()
        table.append(t)
    return CompareResult(runs, _vs_best_formula(pd.DataFrame(table), best), target, best)


def _vs_best_formula(table: pd.DataFrame, best: dict | None) -> pd.DataFrame:
    """LTR rows judged against the best formula of this comparison (``best``: the search run
    with the best in-sample objective, which the fusers started from).  ``vs_best_formula`` =
    the LTR holdout mean minus that run's holdout objective; ``loses`` flags an LTR row at or
    below the baseline or that run on the holdout."""
    table = table.copy()
    is_ltr = table["method"].isin(list(LTR_METHODS))
    name = f"{best['method']} seed {best['seed']}" if best is not None else ""
    table["best_formula"] = np.where(is_ltr, name, "")
    ref = best["holdout"] if best is not None else np.nan
    table["vs_best_formula"] = np.where(is_ltr, table["holdout_mean"] - ref, np.nan)
    table["loses"] = is_ltr & ((table["holdout_lift_mean"] <= 0) | (table["vs_best_formula"] <= 0))
    # paying in guardrails: a guarded task's holdout delta (vs the baseline) below the best formula's
    from .ltr.versus import GUARD_TOL

    pays, side = [], []
    for t in table.to_dict("records"):
        if not t["method"] in LTR_METHODS or best is None or not best.get("guardrails"):
            pays.append(False)
            side.append("")
            continue
        worse = [g for g, fd in best["guardrails"].items()
                 if np.isfinite(t.get(f"holdout_delta_{g}", np.nan)) and t[f"holdout_delta_{g}"] - fd < -GUARD_TOL]
        pays.append(bool(worse))
        side.append(", ".join(f"{g} {t.get(f'holdout_delta_{g}', np.nan):+.4f} vs {fd:+.4f}"
                              for g, fd in best["guardrails"].items()))
    table["pays_in_guardrails"] = pays
    table["guardrails_vs_best_formula"] = side
    return table


def markdown_table(res: CompareResult, budget: int, seeds: int, baseline_holdout: float | None) -> str:
    def pm(m, s, d=5):
        return "n/a" if not np.isfinite(m) else f"{m:.{d}f} ± {s:.{d}f}"

    has_ltr = bool(res.table["method"].isin(list(LTR_METHODS)).any())
    vs_head = " vs best formula |" if has_ltr else ""  # only when LTR fusers are compared
    lines = [f"| method | best in-sample | holdout | holdout lift | holdout wins | holdout guardrail breaks "
             f"|{vs_head} evals to 99% | seconds/run |",
             "|---|---|---|---|---|---|" + ("---|" if has_ltr else "") + "---|---|"]
    for t in res.table.to_dict("records"):
        if t["method"] in LTR_METHODS:
            ev = "n/a"
        elif np.isfinite(t["evals_to_99_mean"]):
            ev = f"{t['evals_to_99_mean']:.0f} ({int(t['reached_99'])}/{t['runs']})"
        else:
            ev = f"> {budget} (0/{t['runs']})"
        lift = "n/a" if not np.isfinite(t["holdout_lift_mean"]) else f"{t['holdout_lift_mean']:+.5f}"
        wins = "n/a" if not np.isfinite(t["holdout_win_share"]) else f"{t['holdout_win_share']:.0%}"
        vs = t.get("vs_best_formula", np.nan)
        vs = "" if not np.isfinite(vs) else (f"{vs:+.5f}" + (" LOSES" if t.get("loses") else "")
                                             + (f"; guardrails {t['guardrails_vs_best_formula']}"
                                                if t.get("guardrails_vs_best_formula") else "")
                                             + (" PAYS IN GUARDRAILS" if t.get("pays_in_guardrails") else ""))
        vs = f" {vs} |" if has_ltr else ""
        brk = t.get("holdout_guardrail_breaks", np.nan)
        if brk is None or not np.isfinite(brk):
            breaks = "n/a"
        else:
            breaks = f"{int(brk)}/{t['runs']}" + (f" ({t['holdout_broken_tasks']})" if brk else "")
        lines.append(f"| {t['method']} | {pm(t['best_mean'], t['best_std'])} | {pm(t['holdout_mean'], t['holdout_std'])} "
                     f"| {lift} | {wins} | {breaks} |{vs} {ev} | {t['seconds_mean']:.1f} |")
    notes = [f"budget {budget} evaluations, {seeds} seed(s) per method; mean ± std over seeds."]
    if res.target_gain is not None:
        notes.append(f"99% target: best in-sample gain over the baseline found by any search method = "
                     f"{res.target_gain:+.5f}.")
    if baseline_holdout is not None:
        notes.append(f"baseline holdout objective {baseline_holdout:.5f}; a win beats it on the holdout and "
                     f"keeps every guardrail there.")
    bf = [b for b in res.table.get("best_formula", pd.Series(dtype=str)) if b]
    if bf:
        notes.append(f"vs best formula: an LTR fuser's holdout minus that of {bf[0]} (the search run with the "
                     f"best in-sample objective, which the fusers start from); LOSES: at or below it or the "
                     f"baseline; guardrails: each guarded task's holdout delta vs the baseline, the fuser's vs "
                     f"the best formula's; PAYS IN GUARDRAILS: the fuser's is lower on one.")
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"
