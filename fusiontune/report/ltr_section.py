"""The report's learned-fuser section: the fuser against the baseline and the best formula.

``collect_versus(result)`` copies the ``versus`` block of an LTR ``result.json`` (see
:mod:`fusiontune.ltr.versus`) and the residual DNN's "keep the formula" recommendation into
the report data; ``versus_section(rep)`` renders them as one section whose warnings flag a
fuser that loses to either opponent.  Kept apart from the rest of the report on purpose.
"""

from __future__ import annotations

__all__ = ["collect_versus", "versus_section"]


def collect_versus(result: dict) -> dict | None:
    v = result.get("versus")
    if not isinstance(v, dict):
        return None
    hold = result.get("holdout") or {}
    return {"versus": v, "fuser_holdout": (hold.get("best") or {}).get("objective"),
            "fuser_in_sample": result["best"]["objective"],
            "recommendation": (result.get("ltr") or {}).get("recommendation")}


def versus_section(rep: dict):
    from .render import Section, _f

    d = (rep.get("ltr") or {}).get("vs")
    if not d:
        return None
    v = d["versus"]
    sec = Section("Learned fuser vs the formulas it would replace")
    b = v["baseline"]
    rows = [["baseline formula (online today)", _f(b.get("holdout")), _f(b.get("holdout_delta"), sign=True),
             _f(b.get("in_sample_delta"), sign=True)]]
    f = v.get("best_formula")
    if f:
        rows.append([f"best formula: {f.get('method')} ({f.get('run')})", _f(f.get("holdout")),
                     _f(f.get("holdout_delta"), sign=True), _f(f.get("in_sample_delta"), sign=True)])
    else:
        sec.text.append("No formula search run of this study was found to compare with (the ltr command can name one).")
    sec.tables.append((["opponent", "its holdout objective", "fuser Δ holdout", "fuser Δ in-sample"], rows))
    guard = v.get("guardrails") or {}
    if guard:  # each guarded task's holdout delta vs the baseline: the fuser's beside the best formula's
        grows = [[task, _f(g.get("max_drop")), _f(g.get("fuser_delta"), sign=True),
                  _f(g.get("best_formula_delta"), sign=True), _f(g.get("vs_best_formula"), sign=True),
                  ("crossed" if not g.get("fuser_kept") else "kept")
                  + (" (pays vs the best formula)" if (g.get("vs_best_formula") or 0.0) < -1e-6 else "")]
                 for task, g in guard.items()]
        sec.tables.append((["guardrail", "max_drop", "fuser Δ vs baseline (holdout)",
                            "best formula Δ vs baseline (holdout)", "fuser − best formula", "fuser"], grows))
    sec.text.append(f"Fuser holdout objective {_f(d.get('fuser_holdout'))}. The best formula is the search run "
                    f"with the best in-sample objective, re-scored on this study's holdout. {v.get('verdict', '')}")
    sec.warn += [f"The fuser {flag}." for flag in v.get("flags", [])]
    if d.get("recommendation"):
        sec.warn.append(d["recommendation"])
    return sec
