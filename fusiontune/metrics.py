"""Exact, batched AUC and GAUC kernels: the hot path of every search.

Public API
----------
``auc(scores, labels, weights=None)``
    scores ``(N,)`` or ``(P, N)`` (P candidates), labels ``(N, K)`` float with NaN = not
    observed.  Returns ``(K,)`` or ``(P, K)``: the Mann-Whitney AUC of every task, with
    average ranks for ties, on the rows where that task is observed.  Identical (to
    float rounding) to ``sklearn.metrics.roc_auc_score(y, s, sample_weight=w)`` on those
    rows.  A task with no observed positive or no observed negative gives NaN.

``gauc(scores, labels, groups, weights=None, weighting="rows")``
    Same shapes.  Per-group AUC, averaged over the groups that have both classes for that
    task.  ``weighting``:

    * ``"rows"``       (default) a group weighs its number of observed rows for the task
                       (the sum of their sample weights when ``weights`` is given);
    * ``"positives"``  its number (or weight sum) of observed positives;
    * ``"uniform"``    every qualifying group weighs 1.

    ``groups`` is an array of group ids or a prepared :class:`GroupIndex`.

``AucPlan(labels, weights)`` and ``GaucPlan(labels, groups, weights, weighting)`` do the
score-independent work (label encoding, grouping) once; call them with many score
matrices, as a search does.

How it is fast
--------------
One sort serves all K tasks.  Each row's float32 score is mapped to an order-preserving
``uint32`` and packed into the high half of a ``uint64`` key.  The low half holds either
the row's label code (2 bits per task: observed, positive), so that the sorted keys alone
carry everything the Mann-Whitney sum needs and the scan reads memory sequentially, or,
when there are sample weights or more than 16 tasks, the row index used to gather them.
``np.sort`` on ``uint64`` is several times faster than ``np.argsort`` on floats.  Ties are
blocks of equal high halves; each block adds ``pos_block * (neg_below + neg_block / 2)``.

float64 scores whose values do not survive a round trip to float32 are ranked through an
exact ``np.argsort`` path instead, so exactness never depends on the input dtype.

GAUC sorts every group's rows separately (insertion sort for small groups), in parallel
over (candidate, group) pairs with numba.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import os

import numba as nb
import numpy as np

__all__ = ["auc", "gauc", "AucPlan", "GaucPlan", "GroupIndex", "encode_labels", "WEIGHTINGS"]

WEIGHTINGS = ("rows", "positives", "uniform")
_TASKS_PER_WORD = 16
_LOW32 = np.uint64(0xFFFFFFFF)


# --------------------------------------------------------------------------- encoding
@nb.njit(cache=True)
def _encode(lab, codes, bad_rows):
    n, k = lab.shape
    words = codes.shape[1]
    for i in range(n):
        for w in range(words):
            code = np.uint32(0)
            for t in range(16 * w, min(k, 16 * (w + 1))):
                v = lab[i, t]
                if v != v:  # NaN: not observed
                    continue
                if v == 1.0:
                    code |= np.uint32(3) << np.uint32(2 * (t - 16 * w))
                elif v == 0.0:
                    code |= np.uint32(1) << np.uint32(2 * (t - 16 * w))
                else:
                    bad_rows[i] = True
            codes[i, w] = code


def encode_labels(labels: np.ndarray) -> np.ndarray:
    """Pack a (N, K) label matrix (1, 0 or NaN) into (N, ceil(K/16)) uint32 words.

    Bit ``2k`` of a word says task k is observed on that row, bit ``2k+1`` that it is
    positive.  Any label other than 0, 1 or NaN raises ``ValueError``.
    """
    lab = np.asarray(labels)
    if lab.ndim == 1:
        lab = lab[:, None]
    if lab.ndim != 2:
        raise ValueError(f"labels must be (N, K), got shape {np.shape(labels)}")
    if lab.dtype not in (np.float32, np.float64):
        lab = lab.astype(np.float64)
    n, k = lab.shape
    codes = np.empty((n, max(1, -(-k // _TASKS_PER_WORD))), dtype=np.uint32)
    bad_rows = np.zeros(n, dtype=np.bool_)
    _encode(np.ascontiguousarray(lab), codes, bad_rows)
    if bad_rows.any():
        r = int(np.flatnonzero(bad_rows)[0])
        c = int(np.flatnonzero(~np.isnan(lab[r]) & (lab[r] != 0) & (lab[r] != 1))[0])
        raise ValueError(f"label must be 0, 1 or NaN; task {c} row {r} has {float(lab[r, c])!r}")
    return codes


def _as_score_matrix(scores: np.ndarray, n: int) -> tuple[np.ndarray, bool, bool]:
    """Return (scores as (P, N) float32 or float64, was_1d, is_float32_exact)."""
    s = np.asarray(scores)
    one = s.ndim == 1
    if one:
        s = s[None, :]
    if s.ndim != 2 or s.shape[1] != n:
        raise ValueError(f"scores must be (N,) or (P, N) with N={n}, got shape {np.shape(scores)}")
    if s.dtype == np.float32:
        exact32 = True
    elif s.dtype.kind in "iub" or s.dtype == np.float16:
        s = s.astype(np.float64)
        f = s.astype(np.float32)
        exact32 = bool(np.array_equal(f, s))
        if exact32:
            s = f
    else:
        s = s.astype(np.float64, copy=False)
        f = s.astype(np.float32)
        exact32 = bool(np.array_equal(f, s, equal_nan=True))
        if exact32:
            s = f
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return np.ascontiguousarray(s), one, exact32


# --------------------------------------------------------------------------- kernels
@nb.njit(cache=True, inline="always")
def _ordered_u32(b):
    # float32 bits -> uint32 whose unsigned order is the float order (-0.0 ties +0.0).
    b = np.uint32(b)
    if b == np.uint32(0x80000000):
        b = np.uint32(0)
    if b >> np.uint32(31):
        return ~b
    return b | np.uint32(0x80000000)


@nb.njit(cache=True, parallel=True)
def _keys_packed(bits, codes, out):
    p_n, n = bits.shape
    for p in nb.prange(p_n):
        for i in range(n):
            out[p, i] = (np.uint64(_ordered_u32(bits[p, i])) << np.uint64(32)) | np.uint64(codes[i])


@nb.njit(cache=True, parallel=True)
def _keys_indexed(bits, out):
    p_n, n = bits.shape
    for p in nb.prange(p_n):
        for i in range(n):
            out[p, i] = (np.uint64(_ordered_u32(bits[p, i])) << np.uint64(32)) | np.uint64(i)


@nb.njit(cache=True)
def _scan_packed_range(keys_p, lo, hi, k_tasks, acc, pos_tot, neg_tot):
    """Mann-Whitney sums over sorted packed keys[lo:hi]; branch-free over the label bits."""
    pos_b = np.zeros(k_tasks, dtype=np.int64)
    neg_b = np.zeros(k_tasks, dtype=np.int64)
    i = lo
    while i < hi:
        top = keys_p[i] >> np.uint64(32)
        pos_b[:] = 0
        neg_b[:] = 0
        j = i
        while j < hi and (keys_p[j] >> np.uint64(32)) == top:
            code = np.int64(keys_p[j] & np.uint64(0xFFFFFFFF))
            for k in range(k_tasks):
                obs = (code >> (2 * k)) & 1
                pos = (code >> (2 * k + 1)) & 1
                pos_b[k] += pos
                neg_b[k] += obs - pos
            j += 1
        for k in range(k_tasks):
            acc[k] += pos_b[k] * (neg_tot[k] + 0.5 * neg_b[k])
            neg_tot[k] += neg_b[k]
            pos_tot[k] += pos_b[k]
        i = j


@nb.njit(cache=True, parallel=True)
def _scan_packed(keys, k_tasks, out):
    """Sorted keys carry the label code in their low 32 bits (K <= 16, no weights)."""
    p_n, n = keys.shape
    for p in nb.prange(p_n):
        acc = np.zeros(k_tasks)
        pos = np.zeros(k_tasks)
        neg = np.zeros(k_tasks)
        _scan_packed_range(keys[p], 0, n, k_tasks, acc, pos, neg)
        for k in range(k_tasks):
            den = pos[k] * neg[k]
            out[p, k] = acc[k] / den if den > 0 else np.nan


@nb.njit(cache=True, inline="always")
def _label_of(codes, row, k):
    w = k // 16
    b = k - 16 * w
    return (codes[row, w] >> np.uint32(2 * b)) & np.uint32(3)


@nb.njit(cache=True, inline="always")
def _ordered_u64(b):
    # float64 bits -> uint64 whose unsigned order is the float order (-0.0 ties +0.0).
    b = np.uint64(b)
    if b == np.uint64(0x8000000000000000):
        b = np.uint64(0)
    if b >> np.uint64(63):
        return ~b
    return b | np.uint64(0x8000000000000000)


@nb.njit(cache=True)
def _scan_sorted(ties, rows, m, offset, codes, weights, k_tasks, out):
    """Mann-Whitney sum over a sorted sequence: ``ties[i]`` equal means tied scores,
    ``offset + rows[i]`` is the row whose labels and weight are gathered."""
    pos_b = np.zeros(k_tasks)
    neg_b = np.zeros(k_tasks)
    neg_below = np.zeros(k_tasks)
    pos_tot = np.zeros(k_tasks)
    acc = np.zeros(k_tasks)
    i = 0
    while i < m:
        hi = ties[i]
        for k in range(k_tasks):
            pos_b[k] = 0.0
            neg_b[k] = 0.0
        j = i
        while j < m and ties[j] == hi:
            row = offset + rows[j]
            w = weights[row]
            for k in range(k_tasks):
                c = _label_of(codes, row, k)
                if c == 3:
                    pos_b[k] += w
                elif c == 1:
                    neg_b[k] += w
            j += 1
        for k in range(k_tasks):
            acc[k] += pos_b[k] * (neg_below[k] + 0.5 * neg_b[k])
            neg_below[k] += neg_b[k]
            pos_tot[k] += pos_b[k]
        i = j
    for k in range(k_tasks):
        den = pos_tot[k] * neg_below[k]
        out[k] = acc[k] / den if den > 0 else np.nan


@nb.njit(cache=True, parallel=True)
def _scan_indexed(keys, codes, weights, k_tasks, out):
    """Sorted keys carry the row index in their low half; labels and weights are gathered."""
    p_n, n = keys.shape
    for p in nb.prange(p_n):
        ties = keys[p] >> np.uint64(32)
        rows = (keys[p] & np.uint64(0xFFFFFFFF)).astype(np.int64)
        _scan_sorted(ties, rows, n, 0, codes, weights, k_tasks, out[p])


@nb.njit(cache=True, parallel=True)
def _scan_order(order, bits, codes, weights, k_tasks, out):
    """float64 path: ``order`` is an argsort of each row of the scores, ``bits`` their
    float64 bit patterns."""
    p_n, n = order.shape
    for p in nb.prange(p_n):
        ties = np.empty(n, dtype=np.uint64)
        for i in range(n):
            ties[i] = _ordered_u64(bits[p, order[p, i]])
        _scan_sorted(ties, order[p], n, 0, codes, weights, k_tasks, out[p])


@nb.njit(cache=True)
def _group_auc_one(bits_p, start, stop, codes, weights, k_tasks, keys, use_keys, out_g):
    """AUC of every task inside rows [start, stop) for one candidate (NaN if one class)."""
    m = stop - start
    if use_keys:  # float32 scores: packed (score, local row) keys
        for i in range(m):
            keys[i] = (np.uint64(_ordered_u32(bits_p[start + i])) << np.uint64(32)) | np.uint64(i)
        if m <= 32:  # insertion sort: groups are usually small
            for i in range(1, m):
                x = keys[i]
                j = i - 1
                while j >= 0 and keys[j] > x:
                    keys[j + 1] = keys[j]
                    j -= 1
                keys[j + 1] = x
        else:
            keys[:m] = np.sort(keys[:m])
        ties = keys[:m] >> np.uint64(32)
        rows = (keys[:m] & np.uint64(0xFFFFFFFF)).astype(np.int64)
    else:  # float64 scores that float32 cannot hold exactly
        ties = np.empty(m, dtype=np.uint64)
        for i in range(m):
            ties[i] = _ordered_u64(bits_p[start + i])
        rows = np.argsort(ties, kind="mergesort").astype(np.int64)
        ties = ties[rows]
    _scan_sorted(ties, rows, m, start, codes, weights, k_tasks, out_g)


@nb.njit(cache=True, parallel=True)
def _group_aucs(bits, offsets, codes, weights, group_w, k_tasks, max_group, use_keys, out):
    """Per-group AUC of every task, out (P, G, K), 0 where the group does not count
    (group_w == 0).  bits (P, N): float32 (use_keys) or float64 score bits in grouped row
    order.  Work is split over (candidate, block of 256 groups) pairs."""
    p_n = bits.shape[0]
    g_n = offsets.shape[0] - 1
    chunk = 256
    n_chunks = (g_n + chunk - 1) // chunk
    for t in nb.prange(p_n * n_chunks):
        p = t // n_chunks
        c = t - p * n_chunks
        keys = np.empty(max_group, dtype=np.uint64)
        auc_g = np.empty(k_tasks)
        for g in range(c * chunk, min(g_n, (c + 1) * chunk)):
            has = False
            for k in range(k_tasks):
                out[p, g, k] = 0.0
                if group_w[g, k] > 0:
                    has = True
            if not has:
                continue
            _group_auc_one(bits[p], offsets[g], offsets[g + 1], codes, weights, k_tasks, keys, use_keys, auc_g)
            for k in range(k_tasks):
                if group_w[g, k] > 0:
                    out[p, g, k] = auc_g[k]


# --------------------------------------------------------------------------- sorting
_POOL: ThreadPoolExecutor | None = None


def _sort_rows(keys: np.ndarray) -> None:
    """Sort each row of a (P, N) uint64 array in place; numpy's sort releases the GIL."""
    global _POOL
    p = keys.shape[0]
    workers = min(p, os.cpu_count() or 1)
    if workers <= 1:
        keys.sort(axis=1)
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="ft-sort")
    list(_POOL.map(lambda i: keys[i].sort(), range(p)))


# --------------------------------------------------------------------------- public API
class _threads_for:
    """Run numba kernels on one thread for a single candidate, on all for a batch.

    Splitting one candidate's scan across threads gains little (the sort dominates) and
    loses badly when the cores are busy: OpenMP regions wait for the slowest thread.  A
    batch parallelises over whole candidates instead.
    """

    def __init__(self, n_candidates: int):
        self.serial = n_candidates <= 1

    def __enter__(self):
        if self.serial:
            self.before = nb.get_num_threads()
            nb.set_num_threads(1)

    def __exit__(self, *exc):
        if self.serial:
            nb.set_num_threads(self.before)


def _prepare(labels, weights):
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    codes = encode_labels(labels)
    n, k = labels.shape
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (n,):
            raise ValueError(f"weights must be ({n},), got {weights.shape}")
        if (weights < 0).any() or not np.isfinite(weights).all():
            raise ValueError("weights must be finite and >= 0")
    return codes, n, k, weights


class AucPlan:
    """Labels (and weights) encoded once; call it with many score matrices."""

    def __init__(self, labels, weights=None):
        self.codes, self.n, self.k, self.weights = _prepare(labels, weights)
        if self.n >= 2**32:
            raise ValueError("more than 2**32 rows is not supported")
        self._w = self.weights if self.weights is not None else np.ones(self.n)

    def __call__(self, scores) -> np.ndarray:
        s, one, exact32 = _as_score_matrix(scores, self.n)
        out = np.empty((s.shape[0], self.k))
        with _threads_for(s.shape[0]):
            if exact32:
                keys = np.empty(s.shape, dtype=np.uint64)
                if self.weights is None and self.codes.shape[1] == 1:
                    _keys_packed(s.view(np.uint32), self.codes[:, 0], keys)
                    _sort_rows(keys)
                    _scan_packed(keys, self.k, out)
                else:
                    _keys_indexed(s.view(np.uint32), keys)
                    _sort_rows(keys)
                    _scan_indexed(keys, self.codes, self._w, self.k, out)
            else:
                order = np.argsort(s, axis=1, kind="stable")
                _scan_order(order, s.view(np.uint64), self.codes, self._w, self.k, out)
        return out[0] if one else out


def auc(scores, labels, weights=None) -> np.ndarray:
    """Exact per-task AUC of one or many score vectors.  See the module docstring."""
    return AucPlan(labels, weights)(scores)


@dataclass(frozen=True)
class GroupIndex:
    """Rows grouped once: ``perm`` puts equal group ids next to each other.

    ``perm`` is None when the rows are already contiguous by group (the usual layout of a
    log written request by request); ``offsets[g]:offsets[g+1]`` are group g's rows in
    the grouped order.
    """

    perm: np.ndarray | None
    offsets: np.ndarray
    n: int

    @classmethod
    def build(cls, groups) -> "GroupIndex":
        g = np.asarray(groups)
        if g.ndim != 1:
            raise ValueError("groups must be 1-D")
        n = g.shape[0]
        if n == 0:
            return cls(None, np.zeros(1, dtype=np.int64), 0)
        change = np.flatnonzero(g[1:] != g[:-1]) + 1
        starts = np.concatenate([[0], change])
        run_vals = g[starts]
        if np.unique(run_vals).shape[0] == run_vals.shape[0]:  # already contiguous
            return cls(None, np.concatenate([starts, [n]]).astype(np.int64), n)
        perm = np.argsort(g, kind="stable")
        sg = g[perm]
        change = np.flatnonzero(sg[1:] != sg[:-1]) + 1
        offsets = np.concatenate([[0], change, [n]]).astype(np.int64)
        return cls(perm.astype(np.int64), offsets, n)

    @property
    def n_groups(self) -> int:
        return self.offsets.shape[0] - 1

    def take(self, a: np.ndarray, axis: int = 0) -> np.ndarray:
        return a if self.perm is None else np.take(a, self.perm, axis=axis)


@nb.njit(cache=True)
def _group_stats(offsets, codes, weights, k_tasks, weighting, out):
    """out[g, k] = GAUC weight of group g for task k, 0 when it lacks a class."""
    g_n = offsets.shape[0] - 1
    for g in range(g_n):
        for k in range(k_tasks):
            pos = 0.0
            neg = 0.0
            npos = 0
            nneg = 0
            for row in range(offsets[g], offsets[g + 1]):
                c = _label_of(codes, row, k)
                if c == 3:
                    pos += weights[row]
                    npos += 1
                elif c == 1:
                    neg += weights[row]
                    nneg += 1
            if npos == 0 or nneg == 0 or pos <= 0 or neg <= 0:
                out[g, k] = 0.0
            elif weighting == 0:
                out[g, k] = pos + neg
            elif weighting == 1:
                out[g, k] = pos
            else:
                out[g, k] = 1.0


class GaucPlan:
    """Everything about labels and groups that does not depend on the scores."""

    def __init__(self, labels, groups, weights=None, weighting: str = "rows"):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        codes, n, k, weights = _prepare(labels, weights)
        index = groups if isinstance(groups, GroupIndex) else GroupIndex.build(groups)
        if index.n != n:
            raise ValueError(f"groups has {index.n} rows, labels {n}")
        self.index, self.n, self.k = index, n, k
        self.codes = np.ascontiguousarray(index.take(codes))
        self.weights = index.take(weights) if weights is not None else np.ones(n)
        gw = np.zeros((index.n_groups, k))
        _group_stats(index.offsets, self.codes, self.weights, k, WEIGHTINGS.index(weighting), gw)
        tot = gw.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.group_w = np.where(tot > 0, gw / np.where(tot > 0, tot, 1), 0.0)
        self.valid = tot > 0
        sizes = np.diff(index.offsets)
        self.max_group = int(sizes.max()) if sizes.size else 0

    def group_aucs(self, scores, grouped: bool = False) -> np.ndarray:
        """Per-group AUCs (P, G, K), 0 for the (group, task) pairs GAUC skips."""
        s, _, exact32 = _as_score_matrix(scores, self.n)
        if not grouped:
            s = self.index.take(s, axis=1)
        bits = np.ascontiguousarray(s).view(np.uint32 if exact32 else np.uint64)
        out = np.empty((s.shape[0], self.index.n_groups, self.k))
        with _threads_for(s.shape[0]):
            _group_aucs(bits, self.index.offsets, self.codes, self.weights, self.group_w, self.k,
                        max(self.max_group, 1), exact32, out)
        return out

    def __call__(self, scores, grouped: bool = False) -> np.ndarray:
        """GAUC per task; ``grouped=True`` means the scores are already in grouped order."""
        one = np.ndim(scores) == 1
        out = np.einsum("pgk,gk->pk", self.group_aucs(scores, grouped), self.group_w)
        out[:, ~self.valid] = np.nan
        return out[0] if one else out


def gauc(scores, labels, groups, weights=None, weighting: str = "rows") -> np.ndarray:
    """Exact per-task group AUC.  See the module docstring."""
    return GaucPlan(labels, groups, weights, weighting)(scores)
