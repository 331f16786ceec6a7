"""The report's per-segment section (studies with ``[segments]``, docs/segments.md).

``collect_segments(result, prep, ...)`` computes, on the holdout (the search rows without
one), each segment's per-task deltas of the best per-segment weights against that segment's
baseline, with paired bootstrap intervals (requests resampled inside the segment), and what
the segmentation buys over one global weight set: the paired bootstrap of the segmented best
against the best global weights (``result.json`` ``segments.global``, found by the same
method and budget) on the whole holdout.  ``segments_section(rep)`` renders it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["collect_segments", "segments_section"]


def _ci(v, lo, hi) -> dict:
    return {"value": float(v), "lo": None if not np.isfinite(lo) else float(lo),
            "hi": None if not np.isfinite(hi) else float(hi)}


def collect_segments(result: dict, prep, resamples: int, level: float, seed: int) -> dict | None:
    from ..bootstrap import paired_bootstrap
    from ..objective import Objective
    from ..segments import joint_of_global, segment_rows

    seg = result.get("segments")
    if not seg or prep.layout is None:
        return None
    layout, space = prep.layout, prep.space
    log, part = (prep.holdout_log, "holdout") if prep.holdout_log is not None else (prep.search_log, "search")
    best = space.from_dict(result["best"]["params"])
    tasks = prep.study.task_names
    out = {"part": part, "columns": seg["columns"], "normalisation": result.get("normalisation"),
           "weights": seg["params"], "baseline": seg["baseline"], "rows": {}, "segments": {}, "notes": []}
    for s, rows in segment_rows(layout, log).items():
        if rows.size == 0:
            continue
        try:
            o = Objective(prep.study.tasks, log.take(rows), prep.formula, prep.study.gauc_weighting)
            o.set_baseline(space.baseline)
            bs = paired_bootstrap(o, best[None, :], space.baseline, resamples, level, seed, show_progress=False)
        except ValueError as exc:  # e.g. a fallback segment with one class for a task
            out["notes"].append(f"{s}: no per-segment intervals ({str(exc).splitlines()[0]})")
            continue
        out["segments"][s] = {
            "rows": int(rows.size),
            "tasks": {t: _ci(bs.delta[0, j], bs.delta_lo[0, j], bs.delta_hi[0, j]) for j, t in enumerate(tasks)},
            "gain": _ci(bs.gain[0], bs.gain_lo[0], bs.gain_hi[0])}
    g = seg.get("global")
    if g:
        obj = prep.holdout_objective if prep.holdout_log is not None else prep.objective
        grow = joint_of_global(layout, g["params"])
        bs = paired_bootstrap(obj, best[None, :], grow, resamples, level, seed, show_progress=False)
        out["versus_global"] = {
            "global_params": g["params"], "global_objective": float(bs.baseline @ obj.w),
            "segmented_objective": float(bs.per_task[0] @ obj.w),
            "gain": _ci(bs.gain[0], bs.gain_lo[0], bs.gain_hi[0]),
            "tasks": {t: _ci(bs.delta[0, j], bs.delta_lo[0, j], bs.delta_hi[0, j]) for j, t in enumerate(tasks)},
            "search_cost": {"segmented": result.get("evaluations"), "global": g.get("evaluations")}}
    return out


def segments_section(rep: dict):
    from .render import Section, _ci, _f

    d = rep.get("segments")
    if not d:
        return None
    pct = int(round(rep.get("level", 0.95) * 100))
    sec = Section("Per-segment weights")
    cols = list(d["columns"])
    sec.text.append(f"One weight set per value of {' + '.join(cols)}, searched jointly against the study's one "
                    f"objective on the whole log. {d.get('normalisation') or ''}")
    names = list(next(iter(d["weights"].values())))
    sec.tables.append((["segment", *names],
                       [[s, *[f"{w[k]:.4g}" for k in names]] for s, w in d["weights"].items()]))
    tasks = list(next(iter(d["segments"].values()))["tasks"]) if d["segments"] else []
    rows = [[s, str(v["rows"]), *[_ci(v["tasks"][t]) for t in tasks], _ci(v["gain"])]
            for s, v in d["segments"].items()]
    if rows:
        sec.tables.append((["segment", f"{d['part']} rows", *[f"Δ {t} ({pct}% CI)" for t in tasks],
                            f"objective gain ({pct}% CI)"], rows))
        sec.text.append(f"Each segment's best weights against its own baseline on its {d['part']} rows (paired "
                        f"bootstrap over its requests). The objective is judged on the whole log; a segment's "
                        f"gain is the same weighted sum on its rows alone.")
        for s, v in d["segments"].items():
            if v["gain"].get("hi") is not None and v["gain"]["hi"] < 0:
                sec.warn.append(f"segment {s!r}: its weights lose to its baseline on its {d['part']} rows "
                                f"(objective gain {_ci(v['gain'])})")
    sec.text += d.get("notes", [])
    vg = d.get("versus_global")
    if vg:
        g = vg["gain"]
        sec.tables.append((["on the whole " + d["part"], "objective"],
                           [["best global weights (same method and budget)", _f(vg["global_objective"])],
                            ["best per-segment weights", _f(vg["segmented_objective"])],
                            [f"what segmentation buys ({pct}% CI)", _ci(g)]]))
        verdict = ("segmentation wins" if g.get("lo") is not None and g["lo"] > 0 else
                   "segmentation loses" if g.get("hi") is not None and g["hi"] < 0 else
                   "no significant difference: one global weight set does as well")
        sec.text.append(f"Per-segment weights vs the best single weight set on the {d['part']}: {verdict}.")
        if g.get("hi") is not None and g["hi"] < 0:
            sec.warn.append("the per-segment weights do worse than one global weight set on the " + d["part"])
    else:
        sec.text.append("No global weight set was searched for comparison ([segments] compare_global = false).")
    return sec
