"""Paired bootstrap of per-task metrics, vectorised on the metric kernel.

Why it is fast
--------------
A bootstrap resample draws ``U`` resampling units (groups when the log has a group column,
rows otherwise) with replacement.  Drawing a unit ``c`` times is the same as giving each of
its rows the integer weight ``c``, so every resample is just a *weight vector* over the
rows, and the metric under a resample is the kernel's weighted metric:

* **AUC**: a candidate's fused scores are sorted **once**; one scan of the sorted rows then
  updates the Mann-Whitney sums of all ``B`` resamples at once (inner loop over resamples,
  contiguous in memory).  Cost: one sort + ``O(N * B)`` additions per candidate, instead of
  ``B`` sorts.
* **GAUC**: under group resampling a group's rows are all scaled by the same count, so every
  per-group AUC is unchanged; only the group weights change.  Per-group AUCs are computed once
  per candidate and each resample is ``sum_g c_bg w_g auc_g / sum_g c_bg w_g``: a matrix
  product ``(B, G) @ (G, K)``.

**Paired**: the baseline is scored under the very same resamples (same count vectors) as
every candidate, so the delta's interval reflects the variance of the *difference*, which
is far smaller than that of either metric when the two rankings are correlated.

Intervals are percentile intervals of the bootstrap deltas around the exact point estimate
on the full data.  Resamples where a task has only one class (NaN metric) are ignored for
that task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from .metrics import _LOW32, GaucPlan, GroupIndex, _keys_indexed, _label_of, _sort_rows, encode_labels

__all__ = ["BootstrapResult", "SelectionCorrected", "selection_corrected_gain", "unit_counts", "resample_metrics", "resample_fused",
           "paired_bootstrap", "auc_resampled",
           "gauc_resampled", "group_aucs", "units_of_rows"]

_COUNT_BYTES = 96 * 2**20  # memory budget of one chunk of resample count vectors


# --------------------------------------------------------------------------- kernels
@nb.njit(cache=True, parallel=True)
def _auc_boot(keys, unit, codes, base_w, counts_t, k_tasks, b_chunk, out):
    """keys (P, N): sorted (score, row) keys; unit (N,) resampling unit of each row;
    counts_t (U, B): multiplicity of each unit in each resample; out (P, B, K)."""
    p_n, n = keys.shape
    b_n = counts_t.shape[1]
    n_chunks = (b_n + b_chunk - 1) // b_chunk
    for t in nb.prange(p_n * n_chunks):
        p = t // n_chunks
        c = t - p * n_chunks
        b0 = c * b_chunk
        m = min(b_n, b0 + b_chunk) - b0
        pos_b = np.zeros((k_tasks, m))
        neg_b = np.zeros((k_tasks, m))
        neg_below = np.zeros((k_tasks, m))
        pos_tot = np.zeros((k_tasks, m))
        acc = np.zeros((k_tasks, m))
        i = 0
        while i < n:
            hi = keys[p, i] >> np.uint64(32)
            j = i + 1
            while j < n and (keys[p, j] >> np.uint64(32)) == hi:
                j += 1
            if j == i + 1:  # no tie (the usual case): update the running sums directly
                row = np.int64(keys[p, i] & _LOW32)
                u = unit[row]
                w0 = base_w[row]
                for k in range(k_tasks):
                    code = _label_of(codes, row, k)
                    if code == 3:
                        for bb in range(m):
                            w = w0 * counts_t[u, b0 + bb]
                            acc[k, bb] += w * neg_below[k, bb]
                            pos_tot[k, bb] += w
                    elif code == 1:
                        for bb in range(m):
                            neg_below[k, bb] += w0 * counts_t[u, b0 + bb]
            else:  # a block of tied scores: half credit inside the block
                for q in range(i, j):
                    row = np.int64(keys[p, q] & _LOW32)
                    u = unit[row]
                    w0 = base_w[row]
                    for k in range(k_tasks):
                        code = _label_of(codes, row, k)
                        if code == 3:
                            for bb in range(m):
                                pos_b[k, bb] += w0 * counts_t[u, b0 + bb]
                        elif code == 1:
                            for bb in range(m):
                                neg_b[k, bb] += w0 * counts_t[u, b0 + bb]
                for k in range(k_tasks):
                    for bb in range(m):
                        acc[k, bb] += pos_b[k, bb] * (neg_below[k, bb] + 0.5 * neg_b[k, bb])
                        neg_below[k, bb] += neg_b[k, bb]
                        pos_tot[k, bb] += pos_b[k, bb]
                        pos_b[k, bb] = 0.0
                        neg_b[k, bb] = 0.0
            i = j
        for k in range(k_tasks):
            for bb in range(m):
                den = pos_tot[k, bb] * neg_below[k, bb]
                out[p, b0 + bb, k] = acc[k, bb] / den if den > 0 else np.nan


def unit_counts(n_units: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, U) float64: how often each unit is drawn in each of B resamples of U draws."""
    idx = rng.integers(0, n_units, size=(resamples, n_units))
    idx += (np.arange(resamples) * n_units)[:, None]
    return np.bincount(idx.ravel(), minlength=resamples * n_units).reshape(resamples, n_units).astype(np.float64)


def units_of_rows(index: GroupIndex) -> np.ndarray:
    """Group number (in ``index`` order) of every row in the original row order."""
    sizes = np.diff(index.offsets)
    g_sorted = np.repeat(np.arange(index.n_groups, dtype=np.int64), sizes)
    if index.perm is None:
        return g_sorted
    unit = np.empty(index.n, dtype=np.int64)
    unit[index.perm] = g_sorted
    return unit


def auc_resampled(scores: np.ndarray, labels: np.ndarray, unit: np.ndarray, counts: np.ndarray,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """AUC of every (candidate, resample, task): scores (P, N) float32, labels (N, K),
    unit (N,) unit index of each row, counts (B, U) -> (P, B, K).

    Equal to :func:`fusiontune.metrics.auc` with ``weights * counts[b, unit]``."""
    s = np.ascontiguousarray(np.atleast_2d(scores), dtype=np.float32)
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    n, k = labels.shape
    codes = encode_labels(labels)
    keys = np.empty(s.shape, dtype=np.uint64)
    _keys_indexed(s.view(np.uint32), keys)
    _sort_rows(keys)
    base_w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    # float32 holds the small integer counts exactly and halves the memory the scan streams
    counts_t = np.ascontiguousarray(np.asarray(counts, dtype=np.float32).T)
    b = counts_t.shape[1]
    out = np.empty((s.shape[0], b, k))
    _auc_boot(keys, np.ascontiguousarray(unit, dtype=np.int64), codes, base_w, counts_t, k,
              max(1, min(b, 128)), out)
    return out


def group_aucs(plan: GaucPlan, scores: np.ndarray, grouped: bool = False) -> np.ndarray:
    """Per-group AUCs (P, G, K) of fused scores under a prepared :class:`GaucPlan`."""
    return plan.group_aucs(np.atleast_2d(scores), grouped)


def gauc_resampled(group_auc: np.ndarray, group_w: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """GAUC under group resamples: group_auc (P, G, K), group_w (G, K), counts (B, G) -> (P, B, K)."""
    den = counts @ group_w  # (B, K)
    p_n, g_n, k_n = group_auc.shape
    wa = (group_auc * group_w[None]).transpose(1, 0, 2).reshape(g_n, p_n * k_n)
    num = (counts @ wa).reshape(-1, p_n, k_n).transpose(1, 0, 2)  # one BLAS product
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den[None] > 0, num / np.where(den > 0, den, 1.0)[None], np.nan)


# --------------------------------------------------------------------------- on an Objective
class _Resampling:
    """Everything about one Objective's rows that does not depend on the candidates."""

    def __init__(self, objective):
        self.obj = objective
        log = objective.log
        plan = objective._plan
        if log.groups is not None:
            self.index = plan.index if plan is not None else GroupIndex.build(log.groups)
            self.unit = units_of_rows(self.index)
            self.n_units = self.index.n_groups
            self.kind = "groups"
        else:
            self.index = None
            self.unit = np.arange(log.n, dtype=np.int64)
            self.n_units = log.n
            self.kind = "rows"
        self.auc_labels = objective._auc_labels
        self.weights = log.weights

    def metrics(self, theta: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(P, B, K) metrics of full parameter rows under resample counts (B, U)."""
        obj = self.obj
        theta = np.atleast_2d(theta)
        out = np.empty((theta.shape[0], counts.shape[0], len(obj.tasks)))
        # a few candidates at a time keeps the fused scores and keys small
        step = max(1, (256 * 2**20) // (16 * max(obj.n_rows, 1)))
        for s in range(0, theta.shape[0], step):
            out[s:s + step] = self.fused_metrics(obj.formula.scores(obj.prepared, theta[s:s + step]), counts)
        return out

    def fused_metrics(self, fused: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(P, B, K) oriented metrics of fused scores (P, N) in the objective's row order."""
        obj = self.obj
        fused = np.ascontiguousarray(np.atleast_2d(fused), dtype=np.float32)
        out = np.empty((fused.shape[0], counts.shape[0], len(obj.tasks)))
        if obj.auc_idx.size:
            out[:, :, obj.auc_idx] = auc_resampled(fused, self.auc_labels, self.unit, counts, self.weights)
        if obj._plan is not None:
            ga = group_aucs(obj._plan, fused, grouped=obj._plan.index.perm is None)
            out[:, :, obj.gauc_idx] = gauc_resampled(ga, obj._plan.group_w, counts)
        return obj.orient(out)


def _resampled(objective, p: int, metrics, resamples: int, seed: int, show_progress: bool | None):
    from .progress import progress

    r = _Resampling(objective)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _COUNT_BYTES // (8 * max(r.n_units, 1))))
    out = np.empty((p, resamples, len(objective.tasks)))
    with progress(resamples, "bootstrap", show_progress, unit="resamples") as bar:
        for b0 in range(0, resamples, chunk):
            m = min(chunk, resamples - b0)
            out[:, b0:b0 + m] = metrics(r, unit_counts(r.n_units, m, rng))
            bar.update(advance=m)
    return out, r.kind, r.n_units


def resample_metrics(objective, theta: np.ndarray, resamples: int, seed: int = 0,
                     show_progress: bool | None = None) -> tuple[np.ndarray, str, int]:
    """Metrics (P, B, K) of full parameter rows on ``resamples`` bootstrap resamples of the
    objective's rows (groups if it has groups).  Returns (metrics, unit kind, number of units)."""
    theta = np.atleast_2d(theta)
    return _resampled(objective, theta.shape[0], lambda r, c: r.metrics(theta, c), resamples, seed, show_progress)


def resample_fused(objective, fused: np.ndarray, resamples: int, seed: int = 0,
                   show_progress: bool | None = None) -> tuple[np.ndarray, str, int]:
    """Like :func:`resample_metrics` for fused scores (P, N) already in the objective's row
    order (any fuser's output, e.g. an LTR model's): metrics (P, B, K) on the same resamples
    for every row of ``fused``, so differences between rows are paired."""
    fused = np.atleast_2d(np.asarray(fused))
    if fused.shape[1] != objective.n_rows:
        raise ValueError(f"fused has {fused.shape[1]} columns, the objective {objective.n_rows} rows")
    return _resampled(objective, fused.shape[0], lambda r, c: r.fused_metrics(fused, c), resamples, seed,
                      show_progress)


@dataclass
class BootstrapResult:
    """Paired bootstrap of P candidates against the baseline on one objective's rows."""

    per_task: np.ndarray  # (P, K) exact metrics on the full rows
    baseline: np.ndarray  # (K,)
    delta: np.ndarray  # (P, K) exact per-task deltas vs the baseline
    delta_lo: np.ndarray  # (P, K)
    delta_hi: np.ndarray  # (P, K)
    gain: np.ndarray  # (P,) exact objective gain sum_k w_k delta_k
    gain_lo: np.ndarray  # (P,)
    gain_hi: np.ndarray  # (P,)
    samples: np.ndarray  # (P, B, K) bootstrap deltas
    gain_samples: np.ndarray  # (P, B)
    level: float
    resamples: int
    units: str  # "groups" | "rows"
    n_units: int

    @property
    def gain_ci_includes_zero(self) -> np.ndarray:
        return (self.gain_lo <= 0) & (self.gain_hi >= 0)


def paired_bootstrap(objective, theta: np.ndarray, baseline_row: np.ndarray, resamples: int = 1000,
                     level: float = 0.95, seed: int = 0, show_progress: bool | None = None) -> BootstrapResult:
    """Per-task metric deltas of candidates ``theta`` (P, n_params) vs ``baseline_row`` with
    paired percentile bootstrap intervals at ``level`` (groups resampled when the log has them)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
    both = np.vstack([theta, np.asarray(baseline_row, dtype=np.float64)[None, :]])
    exact = objective.metrics(both)
    boot, kind, n_units = resample_metrics(objective, both, resamples, seed, show_progress)
    d_samples = boot[:-1] - boot[-1][None]  # (P, B, K): same resamples for both -> paired
    w = objective.w
    g_samples = np.nansum(d_samples * w[None, None, :], axis=2)
    a = (1 - level) / 2
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanquantile(d_samples, [a, 1 - a], axis=1)
            glo, ghi = np.quantile(g_samples, [a, 1 - a], axis=1)
    delta = exact[:-1] - exact[-1][None]
    return BootstrapResult(per_task=exact[:-1], baseline=exact[-1], delta=delta, delta_lo=lo, delta_hi=hi,
                           gain=delta @ w, gain_lo=glo, gain_hi=ghi, samples=d_samples, gain_samples=g_samples,
                           level=level, resamples=resamples, units=kind, n_units=n_units)


@dataclass
class SelectionCorrected:
    """The objective-gain interval of a candidate that was *chosen* as the best of a pool on the
    same rows (see :func:`selection_corrected_gain`)."""

    gain: float  # exact gain of the chosen candidate on the rows
    lo: float
    hi: float
    optimism: float  # mean of the resampled winners' optimism: what choosing on these rows adds
    naive_lo: float  # the plain paired percentile interval, which ignores the choice
    naive_hi: float
    candidates: int  # the pool the choice was repeated over
    resamples: int
    level: float


def selection_corrected_gain(objective, pool: np.ndarray, chosen: int, baseline_row: np.ndarray,
                             resamples: int = 1000, level: float = 0.95, seed: int = 0,
                             show_progress: bool | None = None) -> SelectionCorrected:
    """A gain interval for ``pool[chosen]``, the best of ``pool`` (P, n_params) on the
    objective's rows, that accounts for the choice: the pick-the-best step is repeated on
    every bootstrap resample.

    On resample b the winner ``w_b`` is the pool's best *feasible* candidate on that resample
    (guardrails judged on the resample, as the search judged them on the rows).  Its error
    ``e_b = gain_b(w_b) - gain(w_b)`` is what the resampled choice adds to the resampled
    winner's gain, noise and winner's curse together; its distribution stands in for that of
    ``gain(chosen) - true gain(chosen)``.  The interval is ``[gain - q_hi(e), gain - q_lo(e)]``
    (the basic, pivotal bootstrap).  With a pool of one it is the plain basic bootstrap
    interval; with many close candidates it moves down by the optimism the choice carries.
    The pool should be the candidates the choice was made among (e.g. a run's distinct
    feasible trials); a pool that leaves out close competitors under-corrects."""
    pool = np.atleast_2d(np.asarray(pool, dtype=np.float64))
    bs = paired_bootstrap(objective, pool, baseline_row, resamples, level, seed, show_progress)
    md = np.asarray(objective.max_drop, dtype=np.float64)
    guard = np.isfinite(md)
    if guard.any():
        feas = ~(np.nan_to_num(bs.samples[:, :, guard], nan=0.0) < -md[guard][None, None, :] - 1e-12).any(axis=2)
    else:
        feas = np.ones(bs.gain_samples.shape, dtype=bool)
    g = np.where(feas, bs.gain_samples, -np.inf)  # (P, B)
    ok = np.isfinite(g.max(axis=0))
    win = np.argmax(g, axis=0)
    # a resample with no feasible candidate: the chosen one stands (nothing else could have been)
    win = np.where(ok, win, chosen)
    cols = np.arange(g.shape[1])
    err = bs.gain_samples[win, cols] - bs.gain[win]
    a = (1 - level) / 2
    q_lo, q_hi = np.quantile(err, [a, 1 - a])
    gain = float(bs.gain[chosen])
    return SelectionCorrected(gain=gain, lo=gain - float(q_hi), hi=gain - float(q_lo), optimism=float(err.mean()),
                              naive_lo=float(bs.gain_lo[chosen]), naive_hi=float(bs.gain_hi[chosen]),
                              candidates=int(len(pool)), resamples=int(resamples), level=float(level))
