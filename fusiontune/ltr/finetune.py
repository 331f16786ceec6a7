"""The DNN fuser's fine-tune loss: the smooth AUC surrogate of the business objective.

The same surrogate as the ``grad`` search method (:mod:`fusiontune.surrogate`): per task,
weighted (positive, negative) pairs within the task's AUC scope (whole part, or request
group for GAUC, weighted as the study's ``gauc_weighting``), a sigmoid in place of the step,
the business weights, and the guardrails as a penalty against the *smoothed* baseline
formula (both sides carry the same smoothing bias), tightened by ``[ltr] guardrail_margin``; or,
started from a formula with ``[ltr] guardrail_bar = "start"``, no drop below that formula's
smoothed metric at all.
Pairs are drawn once per fit (seeded) from the training part.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SurrogateLoss"]


class SurrogateLoss:
    """``loss(scores over rows) -> torch scalar`` to minimise (minus the penalised smooth objective).

    ``rows``: the training rows any pair touches; the network scores only those."""

    def __init__(self, study, train_log, margin: float, seed: int, n_pairs: int = 100_000,
                 temperature: float | None = None, bar: str = "limit"):
        from ..surrogate import DEFAULT_TEMPERATURE, PairSet

        self.pairs = PairSet.from_labels(train_log.labels, [t.metric for t in study.tasks],
                                         groups=train_log.groups, weights=train_log.weights,
                                         gauc_weighting=study.gauc_weighting,
                                         signs=[t.sign for t in study.tasks], n_pairs=n_pairs, seed=seed)
        self.rows = self.pairs.rows
        self.w = np.array([t.weight for t in study.tasks], dtype=np.float64)
        md = np.array([np.inf if t.max_drop is None else t.max_drop for t in study.tasks], dtype=np.float64)
        #: "limit": guarded tasks may drop (1 - margin) * max_drop below the baseline; "start": not
        #: at all below the start formula (the fit's reference is then that formula, see fit_dnn)
        self.bar = bar
        self.max_drop = np.where(np.isfinite(md), 0.0, np.inf) if bar == "start" else md * (1.0 - float(margin))
        self.penalty = 100.0 * float(self.w.sum())
        self.temperature = DEFAULT_TEMPERATURE if temperature is None else float(temperature)
        self.baseline = None

    def set_baseline(self, scores) -> None:
        """Smoothed metrics of the baseline formula's scores over ``rows`` (the guardrails' reference)."""
        import torch

        from ..surrogate import smooth_metrics

        with torch.no_grad():
            self.baseline = smooth_metrics(scores, self.pairs, self.temperature, rows_only=True).cpu().numpy()

    def __call__(self, scores):
        from ..surrogate import smooth_objective

        use = self.baseline is not None and np.isfinite(self.max_drop).any()
        value = smooth_objective(scores, self.pairs, self.w, self.temperature,
                                 baseline=self.baseline if use else None, max_drop=self.max_drop if use else None,
                                 penalty=self.penalty, rows_only=True)
        return -value
