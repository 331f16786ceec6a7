"""Re-score a saved or exported fuser on a study's log (the `eval` command with a model).

The result has the shape of :func:`fusiontune.export.evaluate_params`: per part (search,
holdout, whole log) the fuser's per-task metrics and objective against the study's baseline
formula, and whether it keeps every guardrail there.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from ..objective import Objective
from .fit import Fuser, ensure_features, fused_metrics

__all__ = ["evaluate_fuser"]


def _block(obj: Objective, fuser: Fuser, tasks: list[str]) -> dict:
    pt = fused_metrics(obj, fuser.predict(obj.log))
    ev = obj.judge(pt[None, :])
    base = obj.baseline_per_task
    return {"rows": int(obj.n_rows), "objective": float(ev.objective[0]),
            "baseline_objective": float(base @ obj.w), "gain": float((pt - base) @ obj.w),
            "per_task": {t: float(v) for t, v in zip(tasks, pt)},
            "baseline_per_task": {t: float(v) for t, v in zip(tasks, base)},
            "feasible": bool(ev.feasible[0])}


def evaluate_fuser(study, fuser: Fuser, src: str, log_path: Path | None = None) -> dict:
    """Per-part metrics of ``fuser`` vs the study's baseline (``log_path`` replaces the study's log)."""
    from ..pipeline import prepare

    if log_path is not None:
        log_path = Path(log_path)
        if not log_path.exists():
            raise InputError(f"{log_path}: log file not found")
        study = replace(study, log=log_path)
    have = {t.name: t.score for t in study.tasks}
    if list(have) != list(fuser.spec.tasks):
        raise InputError(f"{src}: the fuser's tasks ({', '.join(fuser.spec.tasks)}) are not the study's "
                         f"({', '.join(have)})")
    prep = ensure_features(prepare(study), fuser.spec.context)
    tasks = study.task_names
    out = {"study": study.name, "log": str(study.log), "formula": fuser.name, "model": src,
           "params": {}, "parts": {}}
    out["parts"]["search"] = _block(prep.objective, fuser, tasks)
    if prep.holdout_objective is not None:
        out["parts"]["holdout"] = _block(prep.holdout_objective, fuser, tasks)
        whole = Objective(study.tasks, prep.log, prep.formula, study.gauc_weighting)
        whole.set_baseline(prep.space.baseline)
        out["parts"]["whole"] = _block(whole, fuser, tasks)
    else:
        out["parts"]["whole"] = out["parts"]["search"]
    return out
