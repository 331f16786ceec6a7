"""fusiontune: multi-task score fusion for recommender ranking.

The pipeline, one module a step::

    log.py (load, validate, split) -> fusion.py (formulas) -> metrics.py (AUC/GAUC kernel)
      -> objective.py (weighted sum + guardrails) -> search/ (ask/tell methods)
      -> pipeline.py (a study end to end) -> results.py (result.json, trials.csv)

Public API: ``auc``, ``gauc`` (exact batched kernels), ``load_study``, ``prepare``,
``search``.
"""

__version__ = "0.1.0"

from .metrics import auc, gauc  # noqa: E402,F401
