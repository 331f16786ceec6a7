"""Training targets of the learn-to-rank fusers, built from the task labels.

Both targets use the *oriented* label of every task: ``y_k`` for a positive task and
``1 - y_k`` for a negative one (``sign = -1`` in the study, e.g. dislike), so that "good"
is always 1.  A missing label (NaN: not observed on that row) contributes nothing.

**combined** (pointwise).  The business-weighted log-loss summed over the observed tasks,

    L = sum_rows r_i * sum_{k observed} w_k * logloss(y_ik, sigma(f_i)),

is, because all tasks share the one output ``f``, *exactly* the log-loss of one soft label
per row with one sample weight per row:

    W_i = sum_{k observed} w_k,      ybar_i = sum_{k observed} w_k y_ik / W_i,
    L   = sum_rows r_i * W_i * logloss(ybar_i, sigma(f_i))

(``r_i``: the log's row weight, 1 without one).  So the N*K "one binary row per (row,
task)" formulation and the N-row soft label are the same loss; the soft label is K times
smaller.  Rows with no observed task (W = 0) drop out.  A learner that wants hard 0/1
labels (scikit-learn's classifier) gets each row twice, as a positive with weight
``r W ybar`` and as a negative with weight ``r W (1 - ybar)``: the same loss again.
A task observed on few rows (e.g. conversion, only after a click) therefore weighs in
proportion to its business weight *and* to how often it is observed, which is also how
its AUC term sees the data.

**Task balance.**  The objective gives task k the weight w_k whatever its base rate and
however rarely its label is observed (an AUC does not care), whereas a summed log-loss
gives a task with rare positives or few observed rows little say.  ``[ltr] balance``
therefore turns the business weights into training weights ``w_k * c_k`` first:
``"variance"`` (default) ``c_k = 1 / (observed share_k * q_k (1 - q_k))`` with ``q_k`` the
task's positive rate, ``"observed"`` only the first factor, ``"none"`` ``c_k = 1``; the
``c_k`` are rescaled so the average row weight does not change.  On the demo, "variance"
gives the best held-out objective of the three.  The construction above then uses
``w_k * c_k`` in place of ``w_k``.

**Guardrails.**  The fuser knows nothing of guardrails while it fits; ``fit.py`` checks
them on the validation part and, while a guarded task drops too far, refits with that
task's training weight multiplied up (see ``_fit_with_guardrails``).

**lambdarank** (listwise, per group).  Graded relevance ``rel_i = sum_{k observed} w_k
y_ik``: the business value the row delivered.  LightGBM wants integer grades: the distinct
values become grades 0..G-1 (at most 31, quantised evenly when there are more) and its
``label_gain`` is set to the relevance values themselves (a linear gain, so two likes are
worth what the business weights say, not ``2^grade - 1``).  The DNN uses the relevance
directly in a per-group softmax cross-entropy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["task_balance", "oriented_labels", "combined_target", "relevance", "relevance_grades"]

MAX_GRADES = 31  # LightGBM's default label_gain table covers grades 0..30


def oriented_labels(labels: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """``y`` for positive tasks, ``1 - y`` for negative ones; NaN stays NaN."""
    signs = np.asarray(signs)
    return np.where(signs[None, :] < 0, 1.0 - labels, labels)


def combined_target(labels: np.ndarray, weights: np.ndarray, signs: np.ndarray,
                    row_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(soft label ybar (N,), sample weight (N,)) of the combined target (module docstring)."""
    y = oriented_labels(labels.astype(np.float64), signs)
    obs = ~np.isnan(y)
    w = np.asarray(weights, dtype=np.float64)[None, :] * obs
    total = w.sum(axis=1)
    num = (np.where(obs, y, 0.0) * w).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ybar = np.where(total > 0, num / np.where(total > 0, total, 1.0), 0.0)
    sw = total if row_weights is None else total * row_weights
    return ybar, sw


def relevance(labels: np.ndarray, weights: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Graded relevance ``sum_{k observed} w_k * oriented y_k`` (N,)."""
    y = oriented_labels(labels.astype(np.float64), signs)
    return np.nansum(y * np.asarray(weights, dtype=np.float64)[None, :], axis=1)


def relevance_grades(rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer grades (N,) and the gain of each grade (G,) for LightGBM's lambdarank."""
    levels = np.unique(rel)
    if levels.size > MAX_GRADES:
        levels = np.linspace(0.0, float(rel.max()), MAX_GRADES)
        grades = np.clip(np.rint(rel / levels[1]), 0, MAX_GRADES - 1).astype(np.int32)
        return grades, levels
    grades = np.searchsorted(levels, rel).astype(np.int32)
    gains = levels - levels[0]  # the lowest grade gains nothing
    return grades, gains


def task_balance(labels: np.ndarray, weights: np.ndarray, how: str = "observed") -> np.ndarray:
    """Per-task training weights ``w_k * c_k`` from the business weights (module docstring).

    ``"none"``: ``c_k = 1``.  ``"observed"``: ``c_k = 1 / (share of rows where task k is
    observed)``, so every task's total weight in the loss is proportional to its business
    weight, as its AUC term is in the objective, however rarely it is observed.
    ``"variance"``: additionally ``/ (q_k (1 - q_k))`` with ``q_k`` the task's positive rate,
    so a rare label's log-loss counts as much as a common one's.  Rescaled so that the
    average row weight is the same as with ``"none"``.
    """
    w = np.asarray(weights, dtype=np.float64)
    obs = ~np.isnan(labels)
    frac = obs.mean(axis=0)
    if how == "none":
        return w.copy()
    c = np.where(frac > 0, 1.0 / np.where(frac > 0, frac, 1.0), 0.0)
    if how == "variance":
        with np.errstate(invalid="ignore"):
            q = np.nanmean(np.where(obs, labels, np.nan), axis=0)
        v = q * (1.0 - q)
        c = c / np.where(v > 0, v, 1.0)
    out = w * c
    scale = float((w * frac).sum()) / max(float((out * frac).sum()), 1e-300)
    return out * scale
