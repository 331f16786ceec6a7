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
     "guardrails": {task: {"max_drop", "fuser_delta", "best_formula_delta", "vs_best_formula",
                           "fuser_kept", "best_formula_kept"}},   # holdout deltas vs the baseline
     "flags": ["..."],       # one sentence per opponent the fuser loses to on the holdout, per
                             # guardrail the fuser pays in (its holdout delta below the best
                             # formula's) and per guardrail it crosses on the holdout
     "verdict": "..."}

A fuser that beats the best formula's objective by lowering a guarded task further than the
formula does has not beaten it: it bought the objective with the guardrail.  So every guarded
task's holdout delta against the baseline is shown for both side by side, and a fuser below
the formula on any of them (by more than :data:`GUARD_TOL`) is flagged as paying in guardrails.

Without a holdout the deltas are in-sample only and the verdict says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import RunError

__all__ = ["best_formula_run", "versus", "versus_block", "summary_lines", "read_start", "resolve_start",
           "formula_block", "GUARD_TOL"]

#: where a residual fuser can start: ``auto`` (the best formula run when one is known and the
#: fuser is residual, else the baseline), ``baseline``, ``best``, or a search run directory
START_CHOICES = ("auto", "baseline", "best")

#: a guarded metric this much below the best formula's is "paying in guardrails" (float noise below)
GUARD_TOL = 1e-6


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
        out["holdout_per_task"] = {t.name: float(v) for t, v in zip(prep.study.tasks, hp)}
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


def resolve_start(prep, how: "str | Path", best_run: "str | Path | None", residual: bool,
                  where: str = "runs") -> "tuple[dict | None, Path | None]":
    """``(start weights, start run)`` of a fuser; ``(None, None)`` is the study's baseline.

    ``how``: ``"auto"`` starts a residual fuser (``residual``, see
    :func:`fusiontune.ltr.fit.starts_from_formula`) from ``best_run`` when there is one, else
    from the baseline: a fuser that starts from the baseline is judged against the best formula
    anyway, and the early stopping ends long before it reaches that formula's weights (docs/ltr.md).
    ``"baseline"``; ``"best"`` (``best_run``, an error without one); or a search run directory.
    ``where`` names the folder searched for ``best_run``, for the error message."""
    how = str(how)
    if how == "baseline" or (how == "auto" and (best_run is None or not residual)):
        return None, None
    if how not in ("auto", "best"):
        return read_start(prep, how), Path(how)
    if best_run is None:
        raise RunError(f"{where}: no formula search run of study {prep.study.name!r} found to start from "
                       f"(start = best); run a search of this study first or name the run to judge against")
    return read_start(prep, best_run), Path(best_run)


def versus(prep, result: dict, formula_run: "str | Path | dict | None") -> dict:
    """The ``versus`` block of an LTR ``result`` (module docstring).  ``formula_run``: a formula
    search run directory, or a :func:`formula_block` (a formula held in memory, e.g. the best run
    of a comparison), or None."""
    hold = result.get("holdout")
    return versus_block(prep, float(result["best"]["objective"]), float(result["baseline"]["objective"]),
                        float(hold["best"]["objective"]) if hold else None,
                        float(hold["baseline"]["objective"]) if hold else None, formula_run,
                        hold["best"].get("per_task") if hold else None,
                        hold["baseline"].get("per_task") if hold else None)


def versus_block(prep, fuser_in: float, base_in: float, fuser_h: float | None, base_h: float | None,
                 formula_run: "str | Path | dict | None", fuser_h_pt: dict | None = None,
                 base_h_pt: dict | None = None) -> dict:
    """:func:`versus` from the objectives: the fuser's and the baseline's, in-sample and on the
    holdout (None without one); ``fuser_h_pt`` / ``base_h_pt``: their holdout metrics per task
    (``{task: value}``), for the guardrail comparison."""
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
    if hold and fuser_h_pt and base_h_pt:
        out["guardrails"] = _guardrails(prep, fuser_h_pt, base_h_pt, out["best_formula"], out["flags"])
    if out["flags"]:
        out["verdict"] = "keep the formula: the fuser " + "; ".join(out["flags"])
    elif out["best_formula"] is not None:
        out["verdict"] = f"the fuser beats the baseline and the best formula {where}"
    else:
        out["verdict"] = (f"the fuser beats the baseline {where}; no formula search run of this study was found "
                          f"to compare with")
    return out


def _guardrails(prep, fuser_pt: dict, base_pt: dict, formula: dict | None, flags: list[str]) -> dict:
    """Per guarded task: the fuser's and the best formula's holdout delta vs the baseline, side
    by side; appends a flag per guardrail the fuser pays in or crosses."""
    out = {}
    fpt = (formula or {}).get("holdout_per_task")
    for t in prep.study.tasks:
        if t.max_drop is None or t.name not in fuser_pt or t.name not in base_pt:
            continue
        d = float(fuser_pt[t.name]) - float(base_pt[t.name])
        g = {"max_drop": float(t.max_drop), "fuser_delta": d, "fuser_kept": bool(d >= -t.max_drop)}
        if fpt and t.name in fpt:
            fd = float(fpt[t.name]) - float(base_pt[t.name])
            g.update({"best_formula_delta": fd, "vs_best_formula": d - fd, "best_formula_kept": bool(fd >= -t.max_drop)})
            if d - fd < -GUARD_TOL:
                flags.append(f"pays in the {t.name} guardrail on the holdout: {t.name} {d:+.5f} vs the baseline, "
                             f"the best formula's {fd:+.5f} ({d - fd:+.5f})")
        if not g["fuser_kept"]:
            flags.append(f"crosses the {t.name} guardrail on the holdout ({d:+.5f} < -{t.max_drop:g})"
                         + ("" if not fpt or t.name not in fpt or g["best_formula_kept"] else
                            ", as the best formula does"))
        out[t.name] = g
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
    for task, g in (v.get("guardrails") or {}).items():
        line = f"guardrail {task} (max_drop {g['max_drop']:g}), holdout vs baseline: fuser {g['fuser_delta']:+.5f}"
        if "best_formula_delta" in g:
            line += (f", best formula {g['best_formula_delta']:+.5f}"
                     + (" -> PAYS IN GUARDRAIL" if g["vs_best_formula"] < -GUARD_TOL else ""))
        lines.append(line)
    lines.append(("WARNING: " if v["flags"] else "") + v["verdict"])
    return lines
