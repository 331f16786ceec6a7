"""A smooth, differentiable stand-in for the business-weighted AUC / GAUC objective.

AUC is a step function of the scores: ``AUC = sum_{pairs (i pos, j neg)} v_ij * 1[s_i > s_j]``
(ties count 1/2), with pair weights ``v_ij`` summing to 1.  GAUC is the same sum over the
pairs *within* each group, each group's pairs weighted by the group's GAUC weight (the
study's ``gauc_weighting``: rows, positives or uniform, as :mod:`fusiontune.metrics`
defines them).  The surrogate replaces the step by a sigmoid,

    M~_k(s) = sum_{pairs of task k} v_ij * sigmoid((s_i - s_j) / (temperature * scale(s)))

where ``scale(s)`` is the standard deviation of the scores over the rows the pairs touch
(so the surrogate does not depend on the scores' scale, as AUC does not; pass
``scale=False`` to use ``temperature`` in score units).  At ``temperature = 0`` it is the
step itself (ties 1/2): with every pair enumerated it then *equals* the exact AUC / GAUC,
which is how the tests check the pair weights.

Pairs (:class:`PairSet`): for each task every (positive, negative) pair is enumerated when
there are at most ``n_pairs`` of them; otherwise ``n_pairs`` pairs are drawn with
replacement from the same distribution (a group with probability proportional to its
GAUC weight, then a positive and a negative inside it with probability proportional to
their row weights), so ``M~_k`` is an unbiased estimate of the smoothed metric.  A task
with ``sign = -1`` swaps its positives and negatives (``M_k = 1 - AUC``).

torch is imported lazily (inside the functions that need it), so importing this module
costs nothing.

API
---
Over arbitrary fused scores (e.g. a torch model, as the LTR DNN fuser uses it)::

    from fusiontune.surrogate import PairSet, smooth_metrics, smooth_objective
    pairs = PairSet.from_labels(labels, metrics=["gauc", "auc"], groups=request_ids,
                                n_pairs=200_000, seed=0)           # or PairSet.from_objective(obj)
    s = model(features)                                               # torch (N,) or (P, N)
    m = smooth_metrics(s, pairs, temperature=0.05)                    # (K,) or (P, K), in [0, 1]
    loss = -smooth_objective(s, pairs, business_weights)              # maximise the weighted sum
    loss.backward()

``scores`` are indexed by row in the order of the ``labels`` the pairs were built from
(for :meth:`PairSet.from_objective`: the objective's log, grouped by request, the order
:meth:`fusiontune.objective.Objective.score_metrics` expects).  ``pairs.rows`` lists the
rows any pair touches: a caller may score only those rows and pass ``rows_only=True``.

Over the parameters of a fusion formula (what ``--method grad`` optimises)::

    from fusiontune.surrogate import FormulaSurrogate
    fs = FormulaSurrogate(objective, n_pairs=200_000, seed=0)   # objective: fusiontune Objective
    theta = torch.tensor(space.baseline, requires_grad=True)    # full parameter row(s)
    value, per_task = fs(theta)       # penalised smooth objective (guardrails as penalties)
    value.backward()                  # d value / d theta

All four formulas (additive, multiplicative, power, rank) are differentiable in their
parameters; :meth:`FormulaSurrogate.scores` is the torch twin of
:meth:`fusiontune.fusion.Formula.scores`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["PairSet", "smooth_metrics", "smooth_objective", "FormulaSurrogate", "DEFAULT_TEMPERATURE",
           "SurrogateSample", "surrogate_sample", "DEFAULT_SAMPLE_ROWS"]

#: sigmoid width as a fraction of the scores' standard deviation
DEFAULT_TEMPERATURE = 0.05

#: rows a :class:`FormulaSurrogate` is built from at most (``[search.grad] sample_rows``)
DEFAULT_SAMPLE_ROWS = 300_000

_WEIGHTINGS = ("rows", "positives", "uniform")


@dataclass
class PairSet:
    """Weighted (positive, negative) row pairs of K tasks.

    ``pos``, ``neg``: (M,) row indices into the *compact* row set ``rows`` (so a score
    vector restricted to ``rows`` can be used directly); ``task``: (M,) task index;
    ``weight``: (M,) pair weights, summing to 1 per task (0 for a task without pairs);
    ``rows``: (R,) original row indices touched by any pair; ``n``: rows of the log;
    ``valid``: (K,) whether the task has at least one pair; ``exact``: (K,) whether every
    pair was enumerated (rather than sampled).
    """

    pos: np.ndarray
    neg: np.ndarray
    task: np.ndarray
    weight: np.ndarray
    rows: np.ndarray
    n: int
    k: int
    valid: np.ndarray
    exact: np.ndarray

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_labels(cls, labels: np.ndarray, metrics: Sequence[str], groups: np.ndarray | None = None,
                    weights: np.ndarray | None = None, gauc_weighting: str = "rows",
                    signs: Sequence[int] | None = None, n_pairs: int = 200_000, seed: int = 0) -> "PairSet":
        """Pairs of every task from ``labels`` (N, K) (1 / 0, NaN = not observed).

        ``metrics[k]`` is ``"auc"`` or ``"gauc"`` (GAUC needs ``groups``, (N,) ids);
        ``weights`` (N,) row weights; ``signs[k] = -1`` swaps a task's classes;
        ``n_pairs``: enumerate a task's pairs when it has at most this many, else sample
        this many.
        """
        labels = np.asarray(labels, dtype=np.float64)
        if labels.ndim == 1:
            labels = labels[:, None]
        n, k = labels.shape
        if len(metrics) != k:
            raise ValueError(f"metrics has {len(metrics)} entries for {k} label columns")
        if gauc_weighting not in _WEIGHTINGS:
            raise ValueError(f"gauc_weighting must be one of {_WEIGHTINGS}, got {gauc_weighting!r}")
        if n_pairs < 1:
            raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
        signs = [1] * k if signs is None else list(signs)
        rng = np.random.default_rng(seed)
        codes = None
        if groups is not None:
            _, codes = np.unique(np.asarray(groups), return_inverse=True)
        parts, valid, exact = [], np.zeros(k, dtype=bool), np.zeros(k, dtype=bool)
        for j in range(k):
            lab = labels[:, j]
            obs = ~np.isnan(lab) & (w > 0)
            pos_mask, neg_mask = obs & (lab == 1), obs & (lab == 0)
            if signs[j] < 0:
                pos_mask, neg_mask = neg_mask, pos_mask
            if metrics[j] == "gauc":
                if codes is None:
                    raise ValueError(f"task {j} uses gauc but no groups were given")
                g = codes
            elif metrics[j] == "auc":
                g = np.zeros(n, dtype=np.int64)
            else:
                raise ValueError(f"metrics[{j}] must be 'auc' or 'gauc', got {metrics[j]!r}")
            got = _task_pairs(np.flatnonzero(pos_mask), np.flatnonzero(neg_mask), g, w,
                              gauc_weighting if metrics[j] == "gauc" else "uniform", n_pairs, rng,
                              flipped=signs[j] < 0)
            if got is None:
                continue
            p, q, v, ex = got
            valid[j], exact[j] = True, ex
            parts.append((p, q, np.full(len(p), j), v))
        if parts:
            p = np.concatenate([a[0] for a in parts])
            q = np.concatenate([a[1] for a in parts])
            t = np.concatenate([a[2] for a in parts])
            v = np.concatenate([a[3] for a in parts])
        else:
            p = q = t = np.empty(0, dtype=np.int64)
            v = np.empty(0)
        rows, inv = np.unique(np.concatenate([p, q]), return_inverse=True)
        m = len(p)
        return cls(inv[:m].astype(np.int64), inv[m:].astype(np.int64), t.astype(np.int64), v, rows, n, k,
                   valid, exact)

    @classmethod
    def from_objective(cls, objective, n_pairs: int = 200_000, seed: int = 0, sample=None) -> "PairSet":
        """The pairs of a :class:`fusiontune.objective.Objective`: its tasks' metrics, signs,
        GAUC weighting and row weights, rows in the order of ``objective.log``, or of
        ``sample`` (a :class:`SurrogateSample` of it) when given."""
        rows = objective.log if sample is None else sample
        return cls.from_labels(rows.labels, [t.metric for t in objective.tasks], groups=rows.groups,
                               weights=rows.weights, gauc_weighting=objective.gauc_weighting,
                               signs=[t.sign for t in objective.tasks], n_pairs=n_pairs, seed=seed)

    def subset(self, tasks: Sequence[int]) -> "PairSet":
        """Only the pairs of the given task indices (task numbering is kept)."""
        keep = np.isin(self.task, np.asarray(tasks))
        return PairSet(self.pos[keep], self.neg[keep], self.task[keep], self.weight[keep], self.rows, self.n,
                       self.k, self.valid & np.isin(np.arange(self.k), tasks), self.exact)


def _task_pairs(pos: np.ndarray, neg: np.ndarray, g: np.ndarray, w: np.ndarray, weighting: str,
                n_pairs: int, rng: np.random.Generator, flipped: bool = False):
    """(pos rows, neg rows, pair weights, enumerated?) of one task, or None without pairs."""
    if pos.size == 0 or neg.size == 0:
        return None
    # group by group code (stable), per-group weight sums
    pos = pos[np.argsort(g[pos], kind="stable")]
    neg = neg[np.argsort(g[neg], kind="stable")]
    gp, gn = g[pos], g[neg]
    ng = int(max(gp.max(), gn.max())) + 1
    wp = np.bincount(gp, w[pos], ng)
    wn = np.bincount(gn, w[neg], ng)
    cp = np.bincount(gp, minlength=ng)
    cn = np.bincount(gn, minlength=ng)
    ok = (wp > 0) & (wn > 0)
    if not ok.any():
        return None
    if weighting == "rows":
        gw = np.where(ok, wp + wn, 0.0)
    elif weighting == "positives":
        # "positives" counts the task's observed positive labels (before a sign flip swapped them)
        gw = np.where(ok, wn if flipped else wp, 0.0)
    else:
        gw = ok.astype(np.float64)
    gw = gw / gw.sum()
    sp = np.concatenate([[0], np.cumsum(cp)])  # start of each group in pos / neg
    sn = np.concatenate([[0], np.cumsum(cn)])
    total = int((cp[ok] * cn[ok]).sum())
    if total <= n_pairs:  # enumerate every pair inside every qualifying group
        keep = ok[gp]
        pi = np.flatnonzero(keep)
        reps = cn[gp[pi]]
        p_idx = np.repeat(pi, reps)
        off = np.arange(len(p_idx)) - np.repeat(np.cumsum(reps) - reps, reps)
        q_idx = sn[gp[p_idx]] + off
        gg = gp[p_idx]
        v = gw[gg] * w[pos[p_idx]] * w[neg[q_idx]] / (wp[gg] * wn[gg])
        return pos[p_idx], neg[q_idx], v / v.sum(), True
    # sample: a group by its GAUC weight, then a positive and a negative by row weight
    gg = rng.choice(ng, size=n_pairs, p=gw)
    cwp = np.concatenate([[0.0], np.cumsum(w[pos])])
    cwn = np.concatenate([[0.0], np.cumsum(w[neg])])
    up = cwp[sp[gg]] + rng.random(n_pairs) * (cwp[sp[gg + 1]] - cwp[sp[gg]])
    un = cwn[sn[gg]] + rng.random(n_pairs) * (cwn[sn[gg + 1]] - cwn[sn[gg]])
    pi = np.clip(np.searchsorted(cwp, up, side="right") - 1, sp[gg], sp[gg + 1] - 1)
    qi = np.clip(np.searchsorted(cwn, un, side="right") - 1, sn[gg], sn[gg + 1] - 1)
    return pos[pi], neg[qi], np.full(n_pairs, 1.0 / n_pairs), False


# ---------------------------------------------------------------------- smooth metrics
def smooth_metrics(scores, pairs: PairSet, temperature: float = DEFAULT_TEMPERATURE, scale: bool = True,
                   rows_only: bool = False):
    """Smoothed per-task AUC / GAUC (torch, differentiable).

    ``scores``: torch tensor (N,) or (P, N) of fused scores in the row order of the labels
    (or (R,) / (P, R) over ``pairs.rows`` with ``rows_only=True``).  Returns (K,) or
    (P, K); a task without pairs gives NaN.  ``temperature = 0`` is the exact step (ties 1/2).
    """
    import torch

    s = scores if rows_only else scores[..., torch.as_tensor(pairs.rows, device=scores.device)]
    dev, dt = s.device, s.dtype
    pos = torch.as_tensor(pairs.pos, device=dev)
    neg = torch.as_tensor(pairs.neg, device=dev)
    diff = s[..., pos] - s[..., neg]
    if temperature > 0:
        width = temperature
        if scale:
            width = temperature * s.std(dim=-1, keepdim=True).clamp_min(1e-12)
        ind = torch.sigmoid(diff / width)
    else:
        ind = (diff > 0).to(dt) + 0.5 * (diff == 0).to(dt)
    v = torch.as_tensor(pairs.weight, dtype=dt, device=dev)
    out = torch.zeros(s.shape[:-1] + (pairs.k,), dtype=dt, device=dev)
    out = out.index_add(-1, torch.as_tensor(pairs.task, device=dev), ind * v)
    nan = torch.as_tensor(~pairs.valid, device=dev)
    return torch.where(nan, torch.full_like(out, float("nan")), out)


def smooth_objective(scores, pairs: PairSet, business_weights, temperature: float = DEFAULT_TEMPERATURE,
                     baseline=None, max_drop=None, penalty: float | None = None, scale: bool = True,
                     rows_only: bool = False, per_task: bool = False, squared: bool = False):
    """``sum_k w_k M~_k - penalty * sum_k relu(baseline_k - M~_k - max_drop_k)`` (torch).

    ``squared=True`` squares each violation (``penalty * relu(...)**2``): a penalty with a
    continuous gradient, which quasi-Newton optimisers (L-BFGS) need; the kinked linear
    penalty stalls their line search at the guardrail.

    ``business_weights`` (K,); tasks without pairs count 0.  ``baseline`` (K,) and
    ``max_drop`` (K,, inf = no guardrail) turn the guardrails into a penalty of slope
    ``penalty`` (default ``100 * sum w``, the exact objective's); compare the smoothed
    metrics with a *smoothed* baseline so both sides carry the same bias.  Returns (...,)
    or, with ``per_task=True``, ``(value, metrics)``.
    """
    import torch

    m = smooth_metrics(scores, pairs, temperature, scale, rows_only)
    dt, dev = m.dtype, m.device
    w = torch.as_tensor(np.asarray(business_weights, dtype=np.float64), dtype=dt, device=dev)
    mz = torch.nan_to_num(m, nan=0.0)
    value = (mz * w).sum(-1)
    if baseline is not None and max_drop is not None:
        md = np.asarray(max_drop, dtype=np.float64)
        g = np.isfinite(md) & pairs.valid
        if g.any():
            pen = 100.0 * float(np.sum(business_weights)) if penalty is None else float(penalty)
            b = torch.as_tensor(np.asarray(baseline, dtype=np.float64)[g], dtype=dt, device=dev)
            drop = b - mz[..., torch.as_tensor(np.flatnonzero(g), device=dev)]
            viol = torch.relu(drop - torch.as_tensor(md[g], dtype=dt, device=dev))
            viol = (viol * viol if squared else viol).sum(-1)
            value = value - pen * viol
    return (value, m) if per_task else value


# ------------------------------------------------------------------- the rows it is built from
@dataclass
class SurrogateSample:
    """The search rows a :class:`FormulaSurrogate` is built from, in the order one process holds
    them (the objective's log, grouped by request): the formula inputs (``prepared``, what
    :meth:`fusiontune.fusion.Formula.prepare` gives), label codes, dense group codes and row
    weights.  ``n_rows``: rows of the whole search part; ``fraction``: the unit share kept."""

    prepared: np.ndarray
    label_codes: np.ndarray
    groups: np.ndarray | None
    weights: np.ndarray | None
    n_rows: int
    fraction: float

    @property
    def n(self) -> int:
        return int(self.label_codes.shape[0])

    @property
    def labels(self) -> np.ndarray:
        """(R, K) float 0 / 1 / NaN, decoded as :attr:`fusiontune.log.PredictionLog.labels` is."""
        from .log import _DECODE

        return _DECODE[self.label_codes]


def sample_fraction(n_rows: int, sample_rows: int) -> float:
    """The share of units the sample keeps: 1 (every row) for a search part of at most
    ``sample_rows`` rows, else ``sample_rows / n_rows`` (about ``sample_rows`` rows are kept)."""
    if isinstance(sample_rows, bool) or not isinstance(sample_rows, (int, np.integer)) or sample_rows < 1:
        raise ValueError(f"sample_rows must be a whole number >= 1, got {sample_rows!r}")
    return 1.0 if n_rows <= sample_rows else float(sample_rows) / float(n_rows)


def sample_mask(log, fraction: float) -> np.ndarray | None:
    """Rows of ``log`` in the sample (None: every row): the units (whole groups; rows without a
    group column) whose seeded hash of the raw id (:func:`fusiontune.log.seeded_units`, seed 0)
    lies below ``fraction``.  A function of the unit only, so a shard keeps exactly its part of
    the sample one process keeps."""
    if fraction >= 1.0:
        return None
    from .log import SALT_SURROGATE, seeded_units, unit_hashes

    return seeded_units(unit_hashes(log), 0, SALT_SURROGATE) < fraction


def surrogate_sample(objective, sample_rows: int = DEFAULT_SAMPLE_ROWS) -> SurrogateSample:
    """The rows the surrogate of ``objective`` is built from (kept on the objective for reuse).

    A search part of at most ``sample_rows`` rows is taken whole, in the objective's row order,
    so the surrogate is exactly the one built from the whole log.  A larger one keeps the
    groups of :func:`sample_mask` (about ``sample_rows`` rows).  The Ray engine's objective
    (``sharded``) gathers the same rows from its actors and puts them in the same order
    (:meth:`fusiontune.engine.ray_engine.RayEngine.surrogate_sample`), so both engines build the
    very same surrogate."""
    cached = getattr(objective, "_surrogate_sample", None)
    if cached is not None and cached[0] == sample_rows:
        return cached[1]
    frac = sample_fraction(objective.n_rows, sample_rows)
    if getattr(objective, "sharded", False):
        out = objective.engine.surrogate_sample(objective.role, frac)
    else:
        log = objective.log
        prepared = objective.formula.prepare(log)
        mask = sample_mask(log, frac)
        if mask is not None:
            log, prepared = log.take(mask), prepared[mask]
        out = SurrogateSample(prepared, log.label_codes, log.groups, log.weights, objective.n_rows, frac)
    objective._surrogate_sample = (sample_rows, out)
    return out


# ------------------------------------------------------------------- formula params
class FormulaSurrogate:
    """The smoothed objective of a :class:`fusiontune.objective.Objective` as a torch function
    of the formula's full parameter rows.

    ``fs(theta)`` with ``theta`` a torch tensor (n_params,) or (P, n_params) in the order of
    ``objective.formula.param_names`` returns ``(value, per_task)``: the penalised smoothed
    objective (guardrails against the *smoothed* baseline, slope ``objective.penalty``)
    and the smoothed metrics.  Only the rows some pair touches are scored.
    ``baseline_row`` (defaults to none: no guardrails) is the online parameter row.
    The pairs come from :func:`surrogate_sample` (at most about ``sample_rows`` search rows,
    whole groups), on either engine.
    """

    def __init__(self, objective, n_pairs: int = 200_000, seed: int = 0,
                 temperature: float = DEFAULT_TEMPERATURE, baseline_row: np.ndarray | None = None,
                 margin: float = 0.0, dtype=None, sample_rows: int = DEFAULT_SAMPLE_ROWS):
        import torch

        self.objective = objective
        self.formula = objective.formula
        self.temperature = float(temperature)
        sample = surrogate_sample(objective, sample_rows)
        self.sample_fraction = sample.fraction
        self.pairs = PairSet.from_objective(objective, n_pairs=n_pairs, seed=seed, sample=sample)
        self.dtype = dtype or torch.float64
        prepared = sample.prepared[self.pairs.rows]
        self.x = torch.as_tensor(np.ascontiguousarray(prepared), dtype=self.dtype)
        self.k = len(self.formula.tasks)
        self.w = np.asarray(objective.w, dtype=np.float64)
        md = np.asarray(objective.max_drop, dtype=np.float64)
        #: guardrails are tightened by ``margin`` (a share of max_drop): the surrogate's
        #: estimate of a drop is not exact, and the exact kernel judges in the end
        self.max_drop = md * (1.0 - float(margin))
        self.penalty = float(objective.penalty)
        self.baseline = None
        if baseline_row is not None and np.isfinite(md).any():
            with torch.no_grad():
                _, m = self(torch.as_tensor(np.asarray(baseline_row, dtype=np.float64), dtype=self.dtype),
                            guardrails=False)
            self.baseline = m.detach().cpu().numpy()

    def scores(self, theta):
        """Fused scores (R,) or (P, R) over ``pairs.rows`` for full parameter rows (torch)."""
        import torch

        own = getattr(self.formula, "torch_scores", None)
        if own is not None:  # a formula with its own torch twin (per-segment weights, segments.py)
            return own(self.x, theta)
        a = theta[..., :self.k]
        if self.formula.name == "power":
            b = theta[..., self.k:]
            z = torch.log(torch.clamp(self.x + b.unsqueeze(-2), min=self.formula.eps))
            return (z * a.unsqueeze(-2)).sum(-1)
        return self.x @ a if a.dim() == 1 else torch.einsum("rk,pk->pr", self.x, a)

    def __call__(self, theta, guardrails: bool = True, temperature: float | None = None):
        s = self.scores(theta)
        t = self.temperature if temperature is None else temperature
        use = guardrails and self.baseline is not None
        return smooth_objective(s, self.pairs, self.w, t, baseline=self.baseline if use else None,
                                max_drop=self.max_drop if use else None, penalty=self.penalty,
                                rows_only=True, per_task=True)
