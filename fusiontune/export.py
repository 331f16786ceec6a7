"""Export a weight set in a flat, serving-friendly form, read it back, re-score it on a log.

The exported document (JSON or YAML, same keys)::

    format: fusiontune-weights        version: 1
    formula: multiplicative           # additive | multiplicative | power | rank
    expression: "score = prod_k p_k ** a_k  (served as sum_k a_k * log(max(p_k, eps)))"
    normalisation: "a_click is pinned at its online value 1.0; ..."
    reference: click                  # the task whose weight fixes the scale
    params: {a_click: 1.0, a_like: 0.19, ...}            # exactly the formula's parameters
    tasks:                                               # the same numbers, per task
      - {name: click, score_column: p_click, score_scale: prob, a: 1.0}          # + b: for power
    eps: 1.0e-06                      # probability clip used by multiplicative / power
    buckets: 0, rank_scope: group     # rank formula only
    source: {run, run_id, study, study_file, arm, method, seed, trial, objective, holdout_objective}

``params`` is what ``fusiontune eval --params`` reads back (a flat ``{name: value}`` mapping
is accepted too); ``tasks`` is the per-task view a serving config usually wants.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from .errors import InputError, RunError

__all__ = ["EXPRESSIONS", "weights_document", "resolve_arm", "write_weights", "read_weights",
           "params_row", "evaluate_params"]

EXPRESSIONS = {
    "additive": "score = sum_k a_k * p_k",
    "multiplicative": "score = prod_k p_k ** a_k  (served as its log: sum_k a_k * log(max(p_k, eps)); same ranking)",
    "power": "score = prod_k (b_k + p_k) ** a_k  (served as its log: sum_k a_k * log(max(b_k + p_k, eps)))",
    "rank": ("score = sum_k a_k * r_k, r_k = percentile rank of p_k (average ties) within the request "
             "group (rank_scope = group) or the whole list (global), ceil(r_k * buckets) / buckets when "
             "buckets > 0"),
}
SUFFIXES = (".json", ".yaml", ".yml")


def resolve_arm(run_dir: Path, result: dict, arm: str | None) -> tuple[str, dict, dict]:
    """(arm name, params, extra source info) for ``--arm`` (best | baseline | arm-N from candidates.json)."""
    name = arm or "best"
    if name in ("best", "baseline"):
        block = result.get(name)
        if not isinstance(block, dict) or "params" not in block:
            raise InputError(f"{Path(run_dir) / 'result.json'}: no {name!r} params")
        extra = {"objective": block.get("objective")}
        if name == "best":
            extra["trial"] = result.get("best_trial")
        hold = (result.get("holdout") or {}).get(name)
        if hold:
            extra["holdout_objective"] = hold.get("objective")
        return name, dict(block["params"]), extra
    cpath = Path(run_dir) / "candidates.json"
    if not cpath.exists():
        raise RunError(f"{cpath}: not found; arm {name!r} needs the A/B arms selected from {run_dir} first "
                       f"(or use arm 'best' / 'baseline')", param="arm")
    try:
        cands = json.loads(cpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{cpath}: invalid JSON: {exc}") from None
    from .rundir import check_derived

    check_derived(cpath, cands, run_dir, "arms", "select the arms for this run again (fusiontune select)")
    arms = {a.get("name"): a for a in cands.get("arms", [])}
    if name not in arms:
        have = ", ".join(["best", "baseline", *arms]) or "none"
        raise InputError(f"{cpath}: no arm named {name!r} (available: {have})")
    a = arms[name]
    extra = {"trial": a.get("trial"), "objective": a.get("objective_in_sample"),
             "holdout_objective": a.get("objective"), "gain": a.get("gain"), "flags": a.get("flags")}
    return name, dict(a["params"]), extra


def weights_document(formula, space, study, params: dict, source: dict) -> dict:
    """The flat export dict (see the module docstring); per-segment weights for a segmented study."""
    if getattr(formula, "layout", None) is not None:
        from .segments import weights_document as segment_document

        return segment_document(formula, space, study, params, source)
    row = space.from_dict(params)
    p = space.as_dict(row)
    ref_name, ref_val = next(iter(space.pinned.items()))
    tasks = []
    for t in study.tasks:
        entry = {"name": t.name, "score_column": t.score, "score_scale": t.score_scale, "a": p[f"a_{t.name}"]}
        if formula.name == "power":
            entry["b"] = p[f"b_{t.name}"]
        tasks.append(entry)
    doc = {
        "format": "fusiontune-weights", "version": 1,
        "formula": formula.name,
        "expression": EXPRESSIONS[formula.name],
        "normalisation": (f"{ref_name} is pinned at its online value {ref_val}; the ranking is unchanged when "
                          f"every a_k is multiplied by the same positive number, so only ratios to it matter"),
        "reference": ref_name[2:],
        "params": p,
        "tasks": tasks,
        "eps": formula.eps,
    }
    return finish_document(doc, formula, source)


def finish_document(doc: dict, formula, source: dict) -> dict:
    """The keys every weights document ends with: the rank formula's options and the source."""
    if formula.name == "rank":
        doc["buckets"] = formula.buckets
        doc["rank_scope"] = formula.rank_scope
    doc["source"] = {k: v for k, v in source.items() if v is not None}
    return doc


def write_weights(path: Path, doc: dict) -> None:
    from .results import _jsonable, atomic_write_text

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: unknown weights file type {path.suffix!r} (use .json, .yaml or .yml)")
    if suffix == ".json":
        text = json.dumps(doc, indent=2, default=_jsonable) + "\n"
    else:
        import yaml

        header = ("# fusiontune weights: see 'expression' for how to compute the score from the task\n"
                  "# probabilities; 'params' is the weight set `fusiontune eval` reads back.\n")
        text = header + yaml.safe_dump(json.loads(json.dumps(doc, default=_jsonable)), sort_keys=False,
                                       allow_unicode=True)
    atomic_write_text(path, text)


def read_weights(path: Path) -> dict:
    """The weight set in a .json / .yaml weights file (or flat mapping, or run directory):
    :func:`fusiontune.io.read_weights`, the one reader."""
    from .io import read_weights as _read

    return _read(path)


def params_row(doc: dict, formula, space, src: str) -> np.ndarray:
    """A full parameter row from a weights document, checked against the study's formula."""
    if doc.get("formula") is not None and doc["formula"] != formula.name:
        raise InputError(f"{src}: formula {doc['formula']!r} does not match the study's {formula.name!r}")
    if getattr(formula, "layout", None) is not None:
        from .segments import params_row as segment_row

        return segment_row(doc, formula, src)
    if doc.get("segments") is not None:
        raise InputError(f"{src}: holds per-segment weights but the study has no [segments] table")
    params = doc.get("params")
    if not isinstance(params, dict):
        raise InputError(f"{src}: key 'params' must be a mapping of parameter -> number, e.g. "
                         f"{{\"{space.all_names[0]}\": 1.0}}")
    params = {k: v for k, v in params.items()}
    for k, v in params.items():
        if k not in space.all_names:
            raise InputError(f"{src}: params: {k!r} is not a parameter of the {formula.name} formula "
                             f"(parameters: {', '.join(space.all_names)})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise InputError(f"{src}: params: {k} must be a finite number, got {v!r}")
    if formula.name == "power":
        for k, v in params.items():
            if k.startswith("b_") and v < 0:
                raise InputError(f"{src}: params: {k} must be >= 0 (power bias), got {v!r}")
    return space.from_dict(params, src)


def _block(obj, row: np.ndarray, tasks: list[str]) -> dict:
    pt = obj.metrics(row[None, :])[0]
    ev = obj.judge(pt[None, :])
    base = obj.baseline_per_task
    return {"rows": int(obj.n_rows),
            "objective": float(ev.objective[0]), "baseline_objective": float(obj.judge(base[None, :]).objective[0]),
            "gain": float((pt - base) @ obj.w),
            "per_task": {t: float(v) for t, v in zip(tasks, pt)},
            "baseline_per_task": {t: float(v) for t, v in zip(tasks, base)},
            "feasible": bool(ev.feasible[0]),
            "guardrails_broken": {t: {"delta": float(d), "max_drop": float(m)}
                                  for t, d, m in zip(tasks, pt - base, obj.max_drop) if d < -m}}


def evaluate_params(study, doc: dict, src: str, log_path: Path | None = None) -> dict:
    """Per-task metrics and objective of a weight set vs the study's baseline on the search
    part, the holdout and the whole log (``log_path`` replaces the study's log)."""
    from .pipeline import prepare

    if log_path is not None:
        log_path = Path(log_path)
        if not log_path.exists():
            raise InputError(f"{log_path}: log file not found")
        study = replace(study, log=log_path)
    prep = prepare(study)
    row = params_row(doc, prep.formula, prep.space, src)
    tasks = study.task_names
    out = {"study": study.name, "log": str(study.log), "formula": prep.formula.name,
           "params": prep.space.as_dict(row), "parts": {}}
    out["parts"]["search"] = _block(prep.objective, row, tasks)
    if prep.holdout_objective is not None:
        out["parts"]["holdout"] = _block(prep.holdout_objective, row, tasks)
        whole = prep.objective_on(prep.log)
        whole.set_baseline(prep.space.baseline)
        out["parts"]["whole"] = _block(whole, row, tasks)
    else:
        out["parts"]["whole"] = out["parts"]["search"]
    if prep.layout is not None:  # each segment's metrics, weights applied row by row
        from .segments import eval_segments

        out["segments"] = eval_segments(prep, row)
    return out
