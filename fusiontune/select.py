"""Offline A/B candidate selection: which 2-4 weight sets deserve an online test.

Steps (``fusiontune select``):

1. keep the run's **feasible** trials (guardrails met in-sample), drop duplicates, take the
   ``candidates`` best by in-sample objective;
2. score them **on the holdout** (the search part when the study has no split, flagged) and
   compute each one's per-task metric deltas vs the baseline with **paired bootstrap**
   intervals (groups resampled when the log has a group column; :mod:`fusiontune.bootstrap`);
3. drop candidates that break a guardrail on the holdout, keep the **Pareto front** over the
   per-task holdout deltas (the baseline, all deltas 0, takes part: a candidate it dominates
   is no arm);
4. pick ``k`` arms **far apart** by farthest-point sampling, starting from the front's best
   holdout objective gain.  Distance (``diversity``):

   * ``"rank"`` (default): ranking disagreement, ``1 - Spearman`` correlation between the
     candidates' fused scores over the holdout rows.  Two weight sets that look different
     but rank items alike would teach an A/B test nothing; this measures what users see.
   * ``"weights"``: Euclidean distance in the normalised weight space (each free
     parameter scaled to [0, 1] by its search bounds).

5. flag arms whose objective-gain interval includes zero (``gain-ci-includes-zero``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError, RunError

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
    from .results import read_run
    from .study import load_study

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: run directory not found (write a search run there first)")
    result, trials = read_run(run_dir)
    sf = result.get("study_file")
    if not sf:
        raise InputError(f"{run_dir / 'result.json'}: key 'study_file' is missing (written by fusiontune search)")
    study = load_study(sf)
    prep = prepare(study)
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


def select_arms(run_dir: Path, k: int = 3, resamples: int = 1000, level: float = 0.95, candidates: int = 50,
                diversity: str = "rank", seed: int = 0, show_progress: bool | None = None,
                loaded=None) -> dict:
    """The candidates.json dict for a finished run (see the module docstring)."""
    from .bootstrap import paired_bootstrap

    if diversity not in DIVERSITY:
        raise InputError(f"diversity must be one of {', '.join(DIVERSITY)}, got {diversity!r}", param="diversity")
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), e.g. 0.95; got {level}", param="level")
    t0 = time.perf_counter()
    result, trials, prep = loaded or load_run(run_dir)
    names = prep.space.all_names
    free = prep.space.free
    tasks = [t.name for t in prep.study.tasks]
    pool = distinct_feasible(trials, names, candidates)
    hold = prep.holdout_objective
    obj = hold if hold is not None else prep.objective
    out = {
        "run": str(Path(run_dir)), "study": result.get("study"), "formula": prep.formula.name,
        "evaluated_on": "holdout" if hold is not None else "search (no holdout in the study: in-sample only)",
        "rows": int(obj.n_rows), "resamples": int(resamples), "level": float(level), "seed": int(seed),
        "diversity": diversity,
        "diversity_doc": ("1 - Spearman correlation of the arms' fused scores on the evaluation rows"
                          if diversity == "rank" else
                          "Euclidean distance of the free parameters scaled to [0, 1] by their bounds"),
        "baseline": {"name": "baseline", "params": prep.space.as_dict(prep.space.baseline),
                     "per_task": {t: float(v) for t, v in zip(tasks, obj.baseline_per_task)},
                     "objective": float(obj.baseline_per_task @ obj.w)},
        "candidates_considered": int(len(pool)), "arms": [],
    }
    if not len(pool):
        out["note"] = "no feasible candidate in the run: keep the baseline (no A/B arm to test)"
        out["seconds"] = round(time.perf_counter() - t0, 3)
        return out
    theta = pool[names].to_numpy(dtype=float)
    bs = paired_bootstrap(obj, theta, prep.space.baseline, resamples, level, seed, show_progress)
    out["units"] = bs.units
    out["n_units"] = int(bs.n_units)
    ok = obj.judge(bs.per_task).feasible
    elig = np.flatnonzero(ok)
    if not elig.size:
        out["note"] = "every feasible candidate breaks a guardrail on the holdout: keep the baseline"
        elig = np.arange(len(pool))
    vals = np.vstack([bs.delta[elig], np.zeros((1, len(tasks)))])  # the baseline competes too
    front_mask = pareto_front(np.nan_to_num(vals, nan=-np.inf))[:-1]
    front = elig[front_mask]
    out["pareto_size"] = int(front.size)
    if not front.size:
        out["note"] = "the baseline dominates every candidate on the holdout: keep the baseline"
        out["seconds"] = round(time.perf_counter() - t0, 3)
        return out
    if diversity == "rank":
        fused = obj.formula.scores(obj.prepared, theta[front])
        dist = rank_distance(fused)
    else:
        free_idx = [names.index(f) for f in free]
        dist = weight_distance(prep.space.to_unit(theta[front][:, free_idx]))
    start = int(np.argmax(bs.gain[front]))
    picks = farthest_point(dist, k, start)
    for rank, j in enumerate(picks):
        i = int(front[j])
        flags = []
        if bs.gain_lo[i] <= 0 <= bs.gain_hi[i]:
            flags.append("gain-ci-includes-zero")
        if bs.gain[i] <= 0:
            flags.append("no-gain")
        if not ok[i]:
            flags.append("holdout-guardrail")
        elif np.any(bs.delta_lo[i] < -obj.max_drop):
            flags.append("guardrail-within-ci")  # the interval reaches past a task's max_drop
        if hold is None:
            flags.append("in-sample-only")
        row = pool.iloc[i]
        arm = {
            "name": f"arm-{rank + 1}",
            "params": {n_: float(row[n_]) for n_ in names},
            "trial": int(row["trial"]) if "trial" in row else None,
            "objective_in_sample": float(row["objective"]),
            "per_task": {t: float(v) for t, v in zip(tasks, bs.per_task[i])},
            "objective": float(bs.per_task[i] @ obj.w),
            "delta": {t: _ci(bs.delta[i, q], bs.delta_lo[i, q], bs.delta_hi[i, q]) for q, t in enumerate(tasks)},
            "gain": _ci(bs.gain[i], bs.gain_lo[i], bs.gain_hi[i]),
            "distance_to_previous_arms": (None if rank == 0 else
                                          float(min(dist[j, p] for p in picks[:rank]))),
            "flags": flags,
        }
        out["arms"].append(arm)
    if len(picks) < k:
        out["note"] = (f"the Pareto front has only {front.size} candidate(s): {len(picks)} arm(s) instead of {k}")
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def arms_table(cands: dict, console=None) -> None:
    """Print the arms with their per-task deltas and intervals."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    pct = int(round(cands["level"] * 100))
    title = (f"A/B arms on the {cands['evaluated_on'].split(' ')[0]} ({cands['rows']} rows, "
             f"{cands.get('resamples')} {cands.get('units', '')} resamples, {pct}% CI, diversity: "
             f"{cands['diversity']})")
    table = Table(title=title, title_justify="left")
    table.add_column("arm")
    table.add_column("params")
    tasks = list(cands["baseline"]["per_task"])
    for t in tasks:
        table.add_column(f"Δ {t}", justify="right")
    table.add_column("Δ objective", justify="right")
    table.add_column("flags")
    base = cands["baseline"]["params"]
    for arm in cands["arms"]:
        params = " ".join(f"{k_}={v:.3g}" for k_, v in arm["params"].items())
        cells = [f"{d['value']:+.4f}\n[{d['lo']:+.4f}, {d['hi']:+.4f}]" for d in arm["delta"].values()]
        g = arm["gain"]
        table.add_row(arm["name"], params, *cells, f"{g['value']:+.4f}\n[{g['lo']:+.4f}, {g['hi']:+.4f}]",
                      ", ".join(arm["flags"]) or "-")
    bp = " ".join(f"{k_}={v:.3g}" for k_, v in base.items())
    table.add_row("baseline", bp, *["0" for _ in tasks], f"J={cands['baseline']['objective']:.4f}", "control")
    console.print(table)
    if cands.get("note"):
        console.print(f"note: {cands['note']}")
