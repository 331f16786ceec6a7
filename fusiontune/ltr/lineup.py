"""The standard line-up of learned fusers: one list for ``compare``, ``bench_ltr`` and the README.

Each entry is a fuser as a user would run it to replace a formula: residual (it starts from a
formula and is never below it on the validation part) and judged against the best formula.
``start`` is that formula's weights (e.g. the best search run's ``best.params``); without one
the fusers start from the study's baseline.  The study's ``[ltr]`` table still applies; an
entry's options only override the keys it names.

=====================  =========================================================================
name                   fuser
=====================  =========================================================================
``ltr-gbdt``           LightGBM GBDT, ``combined`` target, residual trees on the start formula
``ltr-gbdt-lambdarank``  LightGBM GBDT, ``lambdarank`` target (per request), residual
``ltr-dnn``            residual DNN, ``combined`` target, no fine-tune
``ltr-dnn-ft``         residual DNN, then the surrogate fine-tune (:mod:`fusiontune.surrogate`)
=====================  =========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import _merge

__all__ = ["LineupFuser", "LINEUP", "fit_lineup", "FINETUNE_EPOCHS"]

FINETUNE_EPOCHS = 40


@dataclass(frozen=True)
class LineupFuser:
    name: str
    model: str  # "gbdt" | "dnn"
    target: str  # "combined" | "lambdarank"
    label: str  # what a table calls it
    options: dict = field(default_factory=dict)  # over the study's [ltr] table
    needs_groups: bool = False


LINEUP: dict[str, LineupFuser] = {f.name: f for f in (
    LineupFuser("ltr-gbdt", "gbdt", "combined", "GBDT combined (LightGBM, residual)", {"backend": "lightgbm"}),
    LineupFuser("ltr-gbdt-lambdarank", "gbdt", "lambdarank", "GBDT lambdarank (LightGBM, residual)",
                {"backend": "lightgbm"}, needs_groups=True),
    LineupFuser("ltr-dnn", "dnn", "combined", "DNN residual", {"dnn": {"finetune": 0}}),
    LineupFuser("ltr-dnn-ft", "dnn", "combined", "DNN residual + surrogate fine-tune",
                {"dnn": {"finetune": FINETUNE_EPOCHS}}),
)}


def fit_lineup(prep, name: str, seed: int = 0, start: dict | None = None, options: dict | None = None,
               show_progress: bool | None = False):
    """Fit the line-up fuser ``name`` (``fit_ltr``'s ``(result, trials, Fuser)``); ``options`` win
    over the entry's, which win over the study's ``[ltr]`` table."""
    from .fit import fit_ltr

    f = LINEUP[name]
    opts = _merge(f.options, options)  # fit_ltr lays these over the study's [ltr] table
    result, trials, fuser = fit_ltr(prep, f.model, f.target, seed, opts, show_progress=show_progress, start=start)
    result["method"] = name
    return result, trials, fuser
