"""fusiontune: multi-task score fusion for recommender ranking.

Python API (``import fusiontune as ft``)::

    study = ft.Study(log=df, tasks=[...], fusion={...}, split={...})   # or ft.Study.from_toml(path)
    res = ft.optimize(study, seed=0)          # a SearchResult: best_params, per_task, holdout, trials
    arms = ft.select_arms(res, k=3)           # A/B arms with paired bootstrap CIs
    rep = ft.build_report(res, out="report.html")
    doc = ft.export_weights(res, "weights.json")
    ft.evaluate(study, doc)                   # re-score a weight set
    ft.fit_ltr(study, model="gbdt")           # a learned fuser, same result contract
    ft.train(data=..., tasks=..., out=...)    # multi-task model -> prediction log (torch)

The pipeline, one module a step (docs/architecture.md)::

    log.py (load, validate, split) -> fusion.py (formulas) -> metrics.py (AUC/GAUC kernel)
      -> objective.py (weighted sum + guardrails) -> search/ (ask/tell methods)
      -> pipeline.py (a study end to end) -> results.py (result.json, trials.csv)
      -> select.py / report/ / export.py

Errors are :class:`FusiontuneError` (a ``ValueError``) subclasses naming the parameter or
study key; nothing here changes process-wide state.
"""

__version__ = "0.1.0"

from .api import (SearchResult, Study, build_report, evaluate, export_weights, fit_ltr,  # noqa: E402
                  optimize, search_settings, select_arms, train)
from .errors import DependencyError, FusiontuneError, LogError, RunError, StudyError  # noqa: E402
from .metrics import auc, gauc  # noqa: E402

__all__ = ["Study", "SearchResult", "optimize", "search_settings", "select_arms", "build_report",
           "export_weights", "evaluate", "fit_ltr", "train", "auc", "gauc", "FusiontuneError", "LogError",
           "StudyError", "RunError", "DependencyError", "__version__"]
