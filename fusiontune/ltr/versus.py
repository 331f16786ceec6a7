"""Judge a fuser against the best formula, not only against the baseline.

A learned fuser replaces a formula, so the question a user asks is whether it beats the
*best* formula a search found on the same study, on rows neither of them chose on.
:func:`best_formula_run` finds that run in a runs folder: among the search runs of the same
study (same name, same study file when both record one) and the same formula, the one with
the highest **in-sample** objective (picking by the holdout would let the holdout choose).
:func:`versus` re-scores that run's best weights on the current study's split with the
exact kernel (so both sides are judged on the very same holdout rows, even if the run was
made with another split) and returns the ``result["versus"]`` block:

    {"baseline":     {"holdout": J, "holdout_delta": fuser - baseline, "in_sample_delta": ...},
     "best_formula": {"run", "method", "seed", "params", "holdout": J, "holdout_feasible",
                      "in_sample": J, "holdout_delta": fuser - formula, "in_sample_delta": ...} | None,
     "flags": ["..."],       # one sentence per opponent the fuser loses to on the holdout
     "verdict": "..."}

Without a holdout the deltas are in-sample only and the verdict says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import RunError

__all__ = ["best_formula_run", "versus", "versus_block", "summary_lines", "read_start", "formula_block"]


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _same_study(result: dict, prep) -> bool:
    if result.get("study") != prep.study.name or result.get("formula") != prep.formula.name:
        return False
    sf, mine = result.get("study_file"), prep.study.path
    if sf and mine:
        try:
            return Path(sf).resolve() == Path(mine).resolve()
        except OSError:
            return False
    return True


def best_formula_run(runs_dir: str | Path, prep) -> Path | None:
    """The search run of this study with the best in-sample objective under ``runs_dir``
    (run folders one level down), or None."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return None
    best, best_j = None, -np.inf
    for rj in sorted(runs_dir.glob("*/result.json")):
        r = _read(rj)
        if not r or str(r.get("formula", "")).startswith("ltr-") or not _same_study(r, prep):
            continue
        b = r.get("best") or {}
        if not isinstance(b.get("params"), dict) or not b.get("feasible", True):
            continue
        j = float(b.get("objective", -np.inf))
        if j > best_j:
            best, best_j = rj.parent, j
    return best


def formula_block(prep, params: dict, method: str | None = None, run: str | None = None,
                  seed: int | None = None) -> dict:
    """A formula's weights ``params`` scored on ``prep``'s search part and holdout (exact kernel)."""
    theta = prep.space.from_dict(params, run or "best formula")
    obj = prep.objective
    pt = obj.metrics(theta[None, :])[0]
    out = {"run": run, "method": method, "seed": seed, "params": prep.space.as_dict(theta),
           "in_sample": float(pt @ obj.w)}
    h = prep.holdout_objective
    if h is not None:
        hp = h.metrics(theta[None, :])[0]
        out["holdout"] = float(hp @ h.w)
        out["holdout_feasible"] = bool(h.judge(hp[None, :]).feasible[0])
    return out


def _formula_block(prep, run: Path) -> dict:
    r = _read(run / "result.json")
    if r is None:
        raise RunError(f"{run / 'result.json'}: not found or not valid JSON (the formula run to compare with)")
    if str(r.get("formula", "")).startswith("ltr-"):
        raise RunError(f"{run / 'result.json'}: is an LTR run ({r['formula']}); compare with a formula search run")
    if r.get("formula") != prep.formula.name:
        raise RunError(f"{run / 'result.json'}: formula {r.get('formula')!r} is not the study's "
                       f"{prep.formula.name!r}")
    params = (r.get("best") or {}).get("params")
    if not isinstance(params, dict):
        raise RunError(f"{run / 'result.json'}: has no best.params")
    return formula_block(prep, params, r.get("method"), str(run), r.get("seed"))


def read_start(prep, run: str | Path) -> dict:
    """The best weights of a formula search run of this study, to start a residual fuser from."""
    return _formula_block(prep, Path(run))["params"]


def versus(prep, result: dict, formula_run: "str | Path | dict | None") -> dict:
    """The ``versus`` block of an LTR ``result`` (module docstring).  ``formula_run``: a formula
    search run directory, or a :func:`formula_block` (a formula held in memory, e.g. the best run
    of a comparison), or None."""
    hold = result.get("holdout")
    return versus_block(prep, float(result["best"]["objective"]), float(result["baseline"]["objective"]),
                        float(hold["best"]["objective"]) if hold else None,
                        float(hold["baseline"]["objective"]) if hold else None, formula_run)


def versus_block(prep, fuser_in: float, base_in: float, fuser_h: float | None, base_h: float | None,
                 formula_run: "str | Path | dict | None") -> dict:
    """:func:`versus` from the objectives: the fuser's and the baseline's, in-sample and on the
    holdout (None without one)."""
    hold = fuser_h is not None
    base = {"in_sample_delta": fuser_in - base_in}
    if hold:
        base["holdout"] = base_h
        base["holdout_delta"] = fuser_h - base_h
    out = {"baseline": base, "best_formula": None, "flags": []}
    key = "holdout_delta" if hold else "in_sample_delta"
    where = "on the holdout" if hold else "in-sample (no holdout split)"
    if base[key] <= 0:
        out["flags"].append(f"loses to the baseline formula {where} ({base[key]:+.5f})")
    if formula_run is not None:
        f = dict(formula_run) if isinstance(formula_run, dict) else _formula_block(prep, Path(formula_run))
        f["in_sample_delta"] = fuser_in - f["in_sample"]
        if hold:
            f["holdout_delta"] = fuser_h - f["holdout"]
        out["best_formula"] = f
        if f[key] <= 0:
            out["flags"].append(f"loses to the best formula ({_name(f)}) {where} ({f[key]:+.5f})")
    if out["flags"]:
        out["verdict"] = "keep the formula: the fuser " + "; ".join(out["flags"])
    elif out["best_formula"] is not None:
        out["verdict"] = f"the fuser beats the baseline and the best formula {where}"
    else:
        out["verdict"] = (f"the fuser beats the baseline {where}; no formula search run of this study was found "
                          f"to compare with")
    return out


def _name(f: dict) -> str:
    return ", ".join(str(x) for x in (f.get("method"), f.get("run") or (None if f.get("seed") is None
                                                                       else f"seed {f['seed']}")) if x)


def summary_lines(v: dict) -> list[str]:
    """Two or three plain lines for the terminal summary."""
    b = v["baseline"]
    lines = []
    if "holdout_delta" in b:
        lines.append(f"vs baseline formula: holdout {b['holdout_delta']:+.5f}")
    else:
        lines.append(f"vs baseline formula: in-sample {b['in_sample_delta']:+.5f} (no holdout)")
    f = v.get("best_formula")
    if f:
        d = f"holdout {f['holdout_delta']:+.5f}" if "holdout_delta" in f else f"in-sample {f['in_sample_delta']:+.5f}"
        lines.append(f"vs best formula ({_name(f)}): {d}")
    lines.append(("WARNING: " if v["flags"] else "") + v["verdict"])
    return lines
