"""Run directories: result.json + trials.csv, written atomically; the terminal summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError, RunError
from .io import atomic_write_json, atomic_write_text, check_fingerprint, jsonable, log_fingerprint

__all__ = ["write_run", "read_run", "atomic_write_text", "print_summary", "default_run_dir"]


def default_run_dir(study: str, method: str, seed: int) -> Path:
    return Path("runs") / f"{study}-{method}-{seed}"


_jsonable = jsonable  # older name


#: version of the result.json contract (docs/results.md); bump when a key changes meaning
RESULT_VERSION = 1


def _block(study, per_task, w) -> dict:
    per_task = np.asarray(per_task, dtype=float)
    return {"objective": float(per_task @ np.asarray(w, dtype=float)),
            "per_task": {t.name: float(v) for t, v in zip(study.tasks, per_task)}}


def log_label(study) -> str:
    """The log as result.json names it: the resolved path, or ``<DataFrame>`` / ``<Table>``."""
    from .log import in_memory_name

    name = in_memory_name(getattr(study, "log_data", None))
    return name or str(Path(study.log).resolve())


def _split_summary(prep):
    from .pipeline import split_summary

    return split_summary(prep)


def result_document(prep, *, method: str, formula: str, seed: int, budget: int, evaluations: int,
                    seconds: float, best_params: dict, best_per_task, best_feasible: bool,
                    holdout_best=None, best_trial, stop_reason: str, normalisation: str,
                    rows: dict | None = None, split=None, extra: dict | None = None) -> dict:
    """The result.json dict of a search or an LTR fit: built here, in one place.

    ``best_per_task`` are the best candidate's in-sample metrics; ``holdout_best`` is
    ``(per_task, feasible)`` on the holdout (``None`` without one).  Objectives are the
    business-weighted sums; the baseline comes from ``prep``.  The keys are documented in
    docs/results.md (``version`` = :data:`RESULT_VERSION`).
    """
    study, obj = prep.study, prep.objective
    base_pt = obj.baseline_per_task
    best = _block(study, best_per_task, obj.w)
    base = _block(study, base_pt, obj.w)
    result = {
        "version": RESULT_VERSION,
        "study": study.name, "method": method, "seed": int(seed), "budget": int(budget),
        "evaluations": int(evaluations), "seconds": round(float(seconds), 4), "formula": formula,
        "best": {"params": best_params, **best, "feasible": bool(best_feasible)},
        "baseline": {"params": prep.space.as_dict(prep.space.baseline), **base},
    }
    hobj = prep.holdout_objective
    if hobj is not None and holdout_best is not None:
        hb, hfeas = holdout_best
        result["holdout"] = {"best": {**_block(study, hb, hobj.w), "feasible": bool(hfeas)},
                             "baseline": _block(study, hobj.baseline_per_task, hobj.w)}
    result["lift"] = {"in_sample": best["objective"] - base["objective"]}
    if "holdout" in result:
        result["lift"]["holdout"] = result["holdout"]["best"]["objective"] - result["holdout"]["baseline"]["objective"]
    result.update({
        "best_trial": best_trial,
        "stop_reason": stop_reason,
        "normalisation": normalisation,
        "tasks": [{"name": t.name, "metric": t.metric, "weight": t.weight, "max_drop": t.max_drop,
                   "score": t.score, "label": t.label, "sign": t.sign} for t in study.tasks],
        "rows": rows if rows is not None else {"search": prep.search_log.n,
                                               "holdout": prep.holdout_log.n if prep.holdout_log else 0},
        "split": split if split is not None else _split_summary(prep),  # with the true holdout share
        "study_file": str(study.path.resolve()) if study.path else None,
        "log": log_label(study),
        "gauc_weighting": study.gauc_weighting,
        "log_fingerprint": log_fingerprint(study.log_source, prep.n_rows),
    })
    if extra:
        result.update(extra)
    return result


def write_run(out: Path, result: dict, trials: pd.DataFrame, study=None) -> None:
    """trials.csv and study.json (the resolved study, when given) first, result.json last: a
    run dir with result.json is complete and self-contained."""
    out = Path(out)
    atomic_write_text(out / "trials.csv", trials.to_csv(index=False, float_format="%.10g"))
    if study is not None:
        atomic_write_json(out / "study.json", study.to_dict())
    atomic_write_text(out / "result.json", json.dumps(result, indent=2, default=jsonable) + "\n")


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    run_dir = Path(run_dir)
    rj = run_dir / "result.json"
    if not rj.exists():
        raise InputError(f"{rj}: not found (is {run_dir} a finished run directory?)")
    try:
        result = json.loads(rj.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{rj}: invalid JSON: {exc}") from None
    tc = run_dir / "trials.csv"
    trials = pd.read_csv(tc) if tc.exists() else pd.DataFrame()
    return result, trials


def run_study(run_dir: Path, check_log: bool = True):
    """The :class:`~fusiontune.study.Study` a run was made with, or ``None`` when the run
    records none.  The run's own study.json comes first (the run works after the study file
    moved), else the study file named in result.json.  With ``check_log``, a log file whose
    fingerprint changed since the run is refused (:class:`~fusiontune.errors.LogError`)."""
    from .study import load_study, parse_study

    run_dir = Path(run_dir)
    rj = run_dir / "result.json"
    if not rj.exists():
        return None
    try:
        result = json.loads(rj.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # read_run reports it
    if check_log:
        check_fingerprint(result.get("log_fingerprint"), str(run_dir))
    sj = run_dir / "study.json"
    if sj.exists():
        try:
            data = json.loads(sj.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunError(f"{sj}: invalid JSON: {exc}") from None
        study = parse_study(data, sj)
        study.path = Path(result["study_file"]) if result.get("study_file") else None
        return study
    sf = result.get("study_file")
    if sf and Path(sf).exists():
        return load_study(sf)
    return None


def _fmt_delta(d: float) -> str:
    return f"{d:+.5f}"


def print_summary(result: dict, out_dir: Path | None = None, console=None) -> None:
    """One screen: best vs baseline per task, in-sample and on the holdout.

    On a terminal too narrow for the nine columns (80 columns is), the in-sample and
    holdout parts print as two stacked tables; numbers are never cut."""
    from .tables import fits, stdout_console, table

    console = console or stdout_console()
    hold = result.get("holdout")
    title = (f"{result['study']} · {result['method']} · seed {result['seed']} · {result['formula']} · "
             f"{result['evaluations']} evaluations in {result['seconds']:.1f}s ({result.get('stop_reason', '')})")
    tasks = {t["name"]: t for t in result.get("tasks", [])}
    rows_in, rows_hold = [], []
    for name, b in result["baseline"]["per_task"].items():
        t = tasks.get(name, {})
        best = result["best"]["per_task"][name]
        rows_in.append([name, t.get("metric", ""), f"{t.get('weight', 0):g}", f"{b:.5f}", f"{best:.5f}",
                        _fmt_delta(best - b)])
        if hold:
            hb, hv = hold["baseline"]["per_task"][name], hold["best"]["per_task"][name]
            rows_hold.append([f"{hb:.5f}", f"{hv:.5f}", _fmt_delta(hv - hb)])
    jb, jv = result["baseline"]["objective"], result["best"]["objective"]
    rows_in.append(["objective", "", "", f"{jb:.5f}", f"{jv:.5f}", _fmt_delta(jv - jb)])
    if hold:
        hb, hv = hold["baseline"]["objective"], hold["best"]["objective"]
        rows_hold.append([f"{hb:.5f}", f"{hv:.5f}", _fmt_delta(hv - hb)])
    cols_in = [("task", "text"), ("metric", "text"), ("weight", "num"), ("baseline", "num"), ("best", "num"),
               ("delta", "num")]
    cols_hold = [("holdout base", "num"), ("holdout best", "num"), ("holdout delta", "num")]

    def build(cols, rows, title_):
        t = table(cols, title_)
        for i, r in enumerate(rows):
            t.add_row(*r, style="bold" if i == len(rows) - 1 else None)
        return t

    wide = build(cols_in + (cols_hold if hold else []),
                 [a + b for a, b in zip(rows_in, rows_hold)] if hold else rows_in, None)
    console.print(title)
    if not hold or fits(console, wide):
        console.print(wide)
    else:  # stack: in-sample table, then the holdout table
        console.print(build(cols_in, rows_in, "in-sample"))
        console.print(build([("task", "text")] + [(c.replace("holdout ", ""), k) for c, k in cols_hold],
                            [[r[0]] + h for r, h in zip(rows_in, rows_hold)], "holdout"))
    params = ", ".join(f"{k}={v:.4g}" for k, v in result["best"]["params"].items())
    console.print(f"best params: {params}")
    if result.get("on_bounds"):
        at = ", ".join(f"{b['param']}={b['value']:.4g} ({b['bound']})" for b in result["on_bounds"])
        console.print(f"on a bound: {at} -- the optimum may lie beyond; widen [fusion.bounds] to check")
    if result.get("note"):
        console.print(f"note: {result['note']}")
    if hold:
        lift = hold["best"]["objective"] - hold["baseline"]["objective"]
        verdict = "win" if lift > 0 else "do NOT beat the baseline"
        feas = "" if hold["best"].get("feasible", True) else " but break a guardrail there"
        console.print(f"holdout lift {lift:+.5f}: the best weights {verdict} on held-out data{feas}")
    if result.get("segments"):
        _print_segments(result["segments"], console)
    if out_dir is not None:
        console.print(f"wrote {Path(out_dir) / 'result.json'} and trials.csv")


def _print_segments(seg: dict, console) -> None:
    """The per-segment part of the summary: each segment's weights and objective gain over its
    baseline (in-sample, holdout), and the gain over the best global weight set."""
    from .tables import table

    names = list(next(iter(seg["params"].values())))
    cols = [("segment", "text"), ("search rows", "num"), *[(k, "num") for k in names],
            ("gain in-sample", "num"), ("gain holdout", "num")]
    t = table(cols, "per-segment weights (gain: the segment's objective on its own rows vs its baseline)")
    for s, w in seg["params"].items():
        ps = seg["per_segment"].get(s, {})
        rows = sum(seg["search_rows"].get(v, 0) for v in seg["fallback"]) if s == "default" else \
            seg["search_rows"].get(s, 0)
        gains = [_fmt_delta(ps[p]["gain"]) if "gain" in ps.get(p, {}) else "–" for p in ("in_sample", "holdout")]
        t.add_row(s, str(rows), *[f"{w[k]:.4g}" for k in names], *gains)
    console.print(t)
    if not seg.get("default_used"):
        console.print("default: no search row falls back to it, so it stays today's weights (for unseen segments)")
    vg = seg.get("versus_global")
    if vg:
        parts = ", ".join(f"{k.replace('_', '-')} {_fmt_delta(v)}" for k, v in vg.items())
        console.print(f"per-segment weights vs the best global weights (same method and budget): {parts}")
