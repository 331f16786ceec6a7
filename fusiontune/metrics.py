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
matrices, as a search does.  Both take ``label_codes=`` instead of ``labels`` (the uint8
codes of :class:`fusiontune.log.PredictionLog`), and both are called with ``parallel=``:
``None`` (default) runs a batch of candidates (and GAUC's groups) on every numba thread
and a single AUC candidate on one; ``True``/``False`` force it.  Nothing global (numba's
thread count) is ever changed.

How it is fast
--------------
One sort serves all K tasks.  Each row's float32 score is mapped to an order-preserving
``uint32`` and packed into the high half of a ``uint64`` key.  The low half holds either
the row's label code (2 bits per task: observed, positive), so that the sorted keys alone
carry everything the Mann-Whitney sum needs and the scan reads memory sequentially, or,
when there are sample weights or more than 16 tasks, the row index used to gather them.

The keys are sorted either by ``np.sort`` or by a numba LSD radix sort on their 32 score
bits (3 stable passes of 11 bits; a pass whose digit is the same for every key is
skipped).  Which one is faster depends on the CPU (numpy's AVX-512 sorts), so it is
measured once per machine and size class at first use (:func:`sort_choice`), cached in
the process and under the user cache directory (``$XDG_CACHE_HOME/fusiontune``, never
the repository); ``FUSIONTUNE_SORT=radix|numpy`` forces one.
With sample weights (and at most 16 tasks) the low half keeps the label code and each
row's weight rides along in the radix sort's scatter passes, so the weighted scan is as
sequential as the unweighted one; only more than 16 tasks gathers labels by row index.

The scan is sequential and branch-light, with no per-block loop: per row and task only
the running counts of positives and negatives move; when the score changes, the closed tie
block (``bp`` positives, ``bn`` negatives, ``s`` negatives strictly below it) adds
``bp * s`` to ``A`` and ``bp * bn`` to ``D``, and ``2 U = 2 A + D`` (ties count one half),
in exact integer arithmetic.  Four tasks per pass keep every counter in a register.

float64 scores whose values do not survive a round trip to float32 are ranked through an
exact ``np.argsort`` path instead, so exactness never depends on the input dtype.

GAUC: the group index is one counting pass over integer group codes (no sort when the
rows are already grouped, as a log written request by request is).  Every group's rows
are sorted separately (insertion sort for small groups) and scanned the same way, in
parallel over (candidate, block of groups) pairs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np

from .io import atomic_write_text

__all__ = ["auc", "gauc", "AucPlan", "GaucPlan", "GroupIndex", "encode_labels", "pack_label_codes",
           "sort_keys", "sort_choice", "WEIGHTINGS"]

WEIGHTINGS = ("rows", "positives", "uniform")
_TASKS_PER_WORD = 16
_LOW32 = np.uint64(0xFFFFFFFF)
_RADIX_BITS = 11
_RADIX_PASSES = 3  # 11 + 11 + 10 bits = the 32 score bits
_RADIX_SIZE = 1 << _RADIX_BITS


# --------------------------------------------------------------------------- encoding
@nb.njit(cache=True)
def _label_bits(u, one, absmask, inf, c2):
    """2-bit code of every label (bits u of one float type); returns nonzero if any label
    is not 0, 1 or NaN.  Integer compares only, so the loop vectorises."""
    zero = absmask ^ absmask
    bad = np.uint32(0)
    for j in range(u.shape[0]):
        x = u[j]
        a = x & absmask
        pos = np.uint32(x == one)
        obs = pos | np.uint32(a == zero)
        bad |= (obs ^ np.uint32(1)) & np.uint32(a <= inf)  # not 0/1 and not NaN
        c2[j] = obs | (pos << np.uint32(1))
    return bad


@nb.njit(cache=True)
def _encode(u, n, k, one, absmask, inf, codes):
    """Float labels as raw bits ``u`` (N*K,) (float32 or float64, with that type's bit
    patterns of 1.0, the |x| mask and +inf) -> words (N, W), in one pass over row blocks.
    Returns the first block's start row holding a bad label, or -1."""
    words = codes.shape[1]
    block = 8192
    c2 = np.empty(block * k, dtype=np.uint32)
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        if _label_bits(u[r0 * k:r1 * k], one, absmask, inf, c2):
            return r0
        if words == 1:
            for i in range(r1 - r0):
                code = np.uint32(0)
                for t in range(k):
                    code |= c2[i * k + t] << np.uint32(2 * t)
                codes[r0 + i, 0] = code
            continue
        for i in range(r1 - r0):
            for w in range(words):
                code = np.uint32(0)
                t1 = min(k, 16 * (w + 1))
                for t in range(16 * w, t1):
                    code |= c2[i * k + t] << np.uint32(2 * (t - 16 * w))
                codes[r0 + i, w] = code
    return -1


@nb.njit(cache=True)
def _bad_codes(flat):
    bad = np.uint8(0)
    for j in range(flat.shape[0]):
        c = flat[j]
        bad |= np.uint8(c == np.uint8(2)) | np.uint8(c > np.uint8(3))
    return bad


@nb.njit(cache=True)
def _pack_words(c8, codes):
    n, k = c8.shape
    words = codes.shape[1]
    if words == 1:
        for i in range(n):
            code = np.uint32(0)
            for t in range(k):
                code |= np.uint32(c8[i, t]) << np.uint32(2 * t)
            codes[i, 0] = code
        return
    for i in range(n):
        for w in range(words):
            code = np.uint32(0)
            for t in range(16 * w, min(k, 16 * (w + 1))):
                code |= np.uint32(c8[i, t]) << np.uint32(2 * (t - 16 * w))
            codes[i, w] = code


def _pack_codes(c8, codes):
    """uint8 codes (N, K) in {0, 1, 3} -> words (N, W); returns the first bad row or -1."""
    if _bad_codes(c8.reshape(-1)):
        return int(np.flatnonzero(((c8 == 2) | (c8 > 3)).any(axis=1))[0])
    _pack_words(c8, codes)
    return -1


def _n_words(k: int) -> int:
    return max(1, -(-k // _TASKS_PER_WORD))


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
    codes = np.empty((n, _n_words(k)), dtype=np.uint32)
    lab = np.ascontiguousarray(lab)
    if lab.dtype == np.float32:
        r = _encode(lab.reshape(-1).view(np.uint32), n, k, np.uint32(0x3F800000), np.uint32(0x7FFFFFFF),
                    np.uint32(0x7F800000), codes)
    else:
        r = _encode(lab.reshape(-1).view(np.uint64), n, k, np.uint64(0x3FF0000000000000),
                    np.uint64(0x7FFFFFFFFFFFFFFF), np.uint64(0x7FF0000000000000), codes)
    if r >= 0:
        blk = lab[r:r + 8192]
        rr, c = (int(x[0]) for x in np.nonzero(~np.isnan(blk) & (blk != 0) & (blk != 1)))
        r += rr
        raise ValueError(f"label must be 0, 1 or NaN; task {c} row {r} has {float(lab[r, c])!r}")
    return codes


def pack_label_codes(label_codes: np.ndarray) -> np.ndarray:
    """Pack (N, K) uint8 label codes (0 not observed, 1 negative, 3 positive; the
    in-memory log's ``label_codes``) into the words of :func:`encode_labels`."""
    c8 = np.asarray(label_codes)
    if c8.ndim == 1:
        c8 = c8[:, None]
    if c8.ndim != 2 or c8.dtype != np.uint8:
        raise ValueError(f"label_codes must be (N, K) uint8, got {c8.dtype} {c8.shape}")
    codes = np.empty((c8.shape[0], _n_words(c8.shape[1])), dtype=np.uint32)
    r = _pack_codes(np.ascontiguousarray(c8), codes)
    if r >= 0:
        raise ValueError(f"label code must be 0, 1 or 3; row {r} has {c8[r].tolist()}")
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


# --------------------------------------------------------------------------- keys
@nb.njit(cache=True, inline="always")
def _ordered_u32(b):
    # float32 bits -> uint32 whose unsigned order is the float order (-0.0 ties +0.0).
    b = np.uint32(b)
    b = np.uint32(0) if b == np.uint32(0x80000000) else b
    flip = np.uint32(np.int32(b) >> np.int32(31)) | np.uint32(0x80000000)
    return b ^ flip


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
def _keys_one(bits, low, packed, keys, hist):
    """keys[i] = ordered(bits[i]) << 32 | (low[i] if packed else i); radix histograms of
    the three score digits in the same pass (hist (3, 2048), zeroed here)."""
    n = bits.shape[0]
    hist[:] = 0
    for i in range(n):
        hi = _ordered_u32(bits[i])
        lo = np.uint32(low[i]) if packed else np.uint32(i)
        keys[i] = (np.uint64(hi) << np.uint64(32)) | np.uint64(lo)
        hist[0, hi & np.uint32(2047)] += 1
        hist[1, (hi >> np.uint32(11)) & np.uint32(2047)] += 1
        hist[2, hi >> np.uint32(22)] += 1


@nb.njit(cache=True, nogil=True)
def _radix_hist(keys, hist):
    hist[:] = 0
    for i in range(keys.shape[0]):
        hi = np.uint32(keys[i] >> np.uint64(32))
        hist[0, hi & np.uint32(2047)] += 1
        hist[1, (hi >> np.uint32(11)) & np.uint32(2047)] += 1
        hist[2, hi >> np.uint32(22)] += 1


@nb.njit(cache=True, nogil=True)
def _radix_sort(keys, tmp, hist):
    """Stable LSD radix sort of uint64 keys on their high 32 bits, ``hist`` from
    :func:`_keys_one` / :func:`_radix_hist`.  Passes whose digit is constant are skipped.
    Returns True when the sorted keys are in ``tmp`` (an odd number of passes ran)."""
    n = keys.shape[0]
    src = keys
    dst = tmp
    swapped = False
    for p in range(3):
        if n == 0:
            break
        shift = np.uint64(32 + 11 * p)
        h = hist[p]
        if h[np.int64((src[0] >> shift) & np.uint64(2047))] == n:
            continue  # every key has this digit: the pass would not move anything
        s = 0
        for d in range(2048):
            c = h[d]
            h[d] = s
            s += c
        for i in range(n):
            k = src[i]
            d = np.int64((k >> shift) & np.uint64(2047))
            dst[h[d]] = k
            h[d] += 1
        t = src
        src = dst
        dst = t
        swapped = not swapped
    return swapped


@nb.njit(cache=True)
def _radix_from_bits(bits, low, packed, keys, tmp, hist):
    """Keys ``ordered(bits) << 32 | (low or row)`` radix-sorted in one go: a histogram
    pass over the scores, then the first non-constant digit's pass builds each key as it
    scatters it (the unsorted keys are never written).  Returns True when the sorted keys
    are in ``tmp``, False when in ``keys``."""
    n = bits.shape[0]
    hist[:] = 0
    for i in range(n):
        hi = _ordered_u32(bits[i])
        hist[0, hi & np.uint32(2047)] += 1
        hist[1, (hi >> np.uint32(11)) & np.uint32(2047)] += 1
        hist[2, hi >> np.uint32(22)] += 1
    first = -1
    if n > 0:
        h0 = _ordered_u32(bits[0])
        for p in range(3):
            d = np.int64((h0 >> np.uint32(11 * p)) & np.uint32(2047))
            if hist[p, d] != n:
                first = p
                break
    if first < 0:  # every score equal: any order is sorted
        for i in range(n):
            lo = np.uint32(low[i]) if packed else np.uint32(i)
            keys[i] = (np.uint64(_ordered_u32(bits[i])) << np.uint64(32)) | np.uint64(lo)
        return False
    h = hist[first]
    s = 0
    for d in range(2048):
        c = h[d]
        h[d] = s
        s += c
    shift = np.uint32(11 * first)
    for i in range(n):
        hi = _ordered_u32(bits[i])
        lo = np.uint32(low[i]) if packed else np.uint32(i)
        d = np.int64((hi >> shift) & np.uint32(2047))
        tmp[h[d]] = (np.uint64(hi) << np.uint64(32)) | np.uint64(lo)
        h[d] += 1
    src = tmp
    dst = keys
    swapped = True
    for p in range(first + 1, 3):
        shift64 = np.uint64(32 + 11 * p)
        hp = hist[p]
        if hp[np.int64((src[0] >> shift64) & np.uint64(2047))] == n:
            continue
        s = 0
        for d in range(2048):
            c = hp[d]
            hp[d] = s
            s += c
        for i in range(n):
            k = src[i]
            d = np.int64((k >> shift64) & np.uint64(2047))
            dst[hp[d]] = k
            hp[d] += 1
        t = src
        src = dst
        dst = t
        swapped = not swapped
    return swapped


@nb.njit(cache=True)
def _radix_payload(bits, low, w, keys, tmp, wk, wtmp, hist):
    """:func:`_radix_from_bits` with a float64 payload (the row weight) moved along with
    each key, so the weighted scan reads both sequentially instead of gathering.  Returns
    True when the sorted keys / weights are in ``tmp`` / ``wtmp``."""
    n = bits.shape[0]
    hist[:] = 0
    for i in range(n):
        hi = _ordered_u32(bits[i])
        hist[0, hi & np.uint32(2047)] += 1
        hist[1, (hi >> np.uint32(11)) & np.uint32(2047)] += 1
        hist[2, hi >> np.uint32(22)] += 1
    first = -1
    if n > 0:
        h0 = _ordered_u32(bits[0])
        for p in range(3):
            d = np.int64((h0 >> np.uint32(11 * p)) & np.uint32(2047))
            if hist[p, d] != n:
                first = p
                break
    if first < 0:
        for i in range(n):
            keys[i] = (np.uint64(_ordered_u32(bits[i])) << np.uint64(32)) | np.uint64(low[i])
            wk[i] = w[i]
        return False
    h = hist[first]
    s = 0
    for d in range(2048):
        c = h[d]
        h[d] = s
        s += c
    shift = np.uint32(11 * first)
    for i in range(n):
        hi = _ordered_u32(bits[i])
        d = np.int64((hi >> shift) & np.uint32(2047))
        j = h[d]
        tmp[j] = (np.uint64(hi) << np.uint64(32)) | np.uint64(low[i])
        wtmp[j] = w[i]
        h[d] = j + 1
    src, dst, ws, wd = tmp, keys, wtmp, wk
    swapped = True
    for p in range(first + 1, 3):
        shift64 = np.uint64(32 + 11 * p)
        hp = hist[p]
        if hp[np.int64((src[0] >> shift64) & np.uint64(2047))] == n:
            continue
        s = 0
        for d in range(2048):
            c = hp[d]
            hp[d] = s
            s += c
        for i in range(n):
            k = src[i]
            d = np.int64((k >> shift64) & np.uint64(2047))
            j = hp[d]
            dst[j] = k
            wd[j] = ws[i]
            hp[d] = j + 1
        src, dst = dst, src
        ws, wd = wd, ws
        swapped = not swapped
    return swapped


# --------------------------------------------------------------------------- scans
@nb.njit(cache=True, nogil=True)
def _scan_packed(keys, k_tasks, out, hshift, raw=None):
    """Sorted packed keys (label code in the low bits, the score from bit ``hshift`` up:
    32 for AUC keys, the code width for GAUC's (group, score, code) keys, whose group
    bits are the same within a call) -> AUC of every task into out (K,).

    Sequential, one pass over the keys per 4 tasks, every counter a scalar (register).
    Per row and task only two counts move (positives and negatives so far); the pairs are
    counted once per tie block, at its end: a block with ``bp`` positives and ``bn``
    negatives adds ``bp * s`` (``s`` negatives strictly below it) to ``A`` and ``bp * bn``
    to the tie count ``D``, so ``2 U = 2 A + D`` in exact integer arithmetic.  The only
    branch is the end of a tie block (taken on every row when scores are distinct, rarely
    under heavy ties: predictable either way).  With ``raw`` (K, 4) int64 the exact sums
    (A, D, negatives, positives) of every task go there instead of the AUC."""
    n = keys.shape[0]
    for q in range((k_tasks + 3) // 4):
        sh = np.uint64(8 * q)
        n0 = n1 = n2 = n3 = 0
        p0 = p1 = p2 = p3 = 0
        s0 = s1 = s2 = s3 = 0
        t0 = t1 = t2 = t3 = 0
        a0 = a1 = a2 = a3 = 0
        d0 = d1 = d2 = d3 = 0
        prev = keys[0] >> hshift if n > 0 else np.uint64(0)
        for i in range(n):
            key = keys[i]
            hi = key >> hshift
            if hi != prev:  # close the tie block [.., i)
                bp = p0 - t0
                a0 += bp * s0
                d0 += bp * (n0 - s0)
                s0 = n0
                t0 = p0
                bp = p1 - t1
                a1 += bp * s1
                d1 += bp * (n1 - s1)
                s1 = n1
                t1 = p1
                bp = p2 - t2
                a2 += bp * s2
                d2 += bp * (n2 - s2)
                s2 = n2
                t2 = p2
                bp = p3 - t3
                a3 += bp * s3
                d3 += bp * (n3 - s3)
                s3 = n3
                t3 = p3
                prev = hi
            c = np.int64((key >> sh) & np.uint64(0xFF))
            x = c ^ (c >> 1)  # bit 2k: task k observed and negative (code 1 = 0b01)
            p0 += (c >> 1) & 1
            n0 += x & 1
            p1 += (c >> 3) & 1
            n1 += (x >> 2) & 1
            p2 += (c >> 5) & 1
            n2 += (x >> 4) & 1
            p3 += (c >> 7) & 1
            n3 += (x >> 6) & 1
        bp = p0 - t0
        a0 += bp * s0
        d0 += bp * (n0 - s0)
        bp = p1 - t1
        a1 += bp * s1
        d1 += bp * (n1 - s1)
        bp = p2 - t2
        a2 += bp * s2
        d2 += bp * (n2 - s2)
        bp = p3 - t3
        a3 += bp * s3
        d3 += bp * (n3 - s3)
        res = ((a0, d0, n0, p0), (a1, d1, n1, p1), (a2, d2, n2, p2), (a3, d3, n3, p3))
        for j in range(4):
            k = 4 * q + j
            if k < k_tasks:
                a, d, nn, pp = res[j]
                if raw is not None:
                    raw[k, 0] = a
                    raw[k, 1] = d
                    raw[k, 2] = nn
                    raw[k, 3] = pp
                else:
                    den = pp * nn
                    out[k] = (2 * a + d) / (2.0 * den) if den > 0 else np.nan


@nb.njit(cache=True, nogil=True)
def _scan_gather(keys, rows_off, codes, weights, weighted, k_tasks, out):
    """Sorted keys (row index in the low half, plus ``rows_off``): labels and weights are
    gathered.  Any number of tasks, 4 per pass; float accumulators (exact integers when
    unweighted)."""
    n = keys.shape[0]
    for q in range((k_tasks + 3) // 4):
        word = q // 4
        sh = np.uint32(8 * (q % 4))
        n0 = n1 = n2 = n3 = 0.0
        p0 = p1 = p2 = p3 = 0.0
        s0 = s1 = s2 = s3 = 0.0
        t0 = t1 = t2 = t3 = 0.0
        a0 = a1 = a2 = a3 = 0.0
        b0 = b1 = b2 = b3 = 0.0
        prev = np.uint64(0xFFFFFFFFFFFFFFFF)
        for i in range(n):
            key = keys[i]
            hi = key >> np.uint64(32)
            if hi != prev:
                s0 = n0
                s1 = n1
                s2 = n2
                s3 = n3
                t0 = p0
                t1 = p1
                t2 = p2
                t3 = p3
                prev = hi
            row = rows_off + np.int64(key & np.uint64(0xFFFFFFFF))
            w = weights[row] if weighted else 1.0
            c = np.int64((codes[row, word] >> sh) & np.uint32(0xFF))
            p = w * ((c >> 1) & 1)
            m = w * (c & 1) - p
            a0 += p * s0
            b0 += m * t0
            n0 += m
            p0 += p
            p = w * ((c >> 3) & 1)
            m = w * ((c >> 2) & 1) - p
            a1 += p * s1
            b1 += m * t1
            n1 += m
            p1 += p
            p = w * ((c >> 5) & 1)
            m = w * ((c >> 4) & 1) - p
            a2 += p * s2
            b2 += m * t2
            n2 += m
            p2 += p
            p = w * ((c >> 7) & 1)
            m = w * ((c >> 6) & 1) - p
            a3 += p * s3
            b3 += m * t3
            n3 += m
            p3 += p
        res = ((a0, b0, n0, p0), (a1, b1, n1, p1), (a2, b2, n2, p2), (a3, b3, n3, p3))
        for j in range(4):
            k = 4 * q + j
            if k < k_tasks:
                a, b, nn, pp = res[j]
                den = pp * nn
                out[k] = (a + (den - b)) / (2.0 * den) if den > 0 else np.nan


@nb.njit(cache=True, nogil=True)
def _scan_packed_w(keys, ws, k_tasks, out):
    """:func:`_scan_packed` with per-row weights ``ws`` in the same (sorted) order."""
    n = keys.shape[0]
    for q in range((k_tasks + 3) // 4):
        sh = np.uint64(8 * q)
        n0 = n1 = n2 = n3 = 0.0
        p0 = p1 = p2 = p3 = 0.0
        s0 = s1 = s2 = s3 = 0.0
        t0 = t1 = t2 = t3 = 0.0
        a0 = a1 = a2 = a3 = 0.0
        b0 = b1 = b2 = b3 = 0.0
        prev = np.uint64(0xFFFFFFFFFFFFFFFF)
        for i in range(n):
            key = keys[i]
            hi = key >> np.uint64(32)
            if hi != prev:
                s0 = n0
                s1 = n1
                s2 = n2
                s3 = n3
                t0 = p0
                t1 = p1
                t2 = p2
                t3 = p3
                prev = hi
            w = ws[i]
            c = np.int64((key >> sh) & np.uint64(0xFF))
            p = w * ((c >> 1) & 1)
            m = w * (c & 1) - p
            a0 += p * s0
            b0 += m * t0
            n0 += m
            p0 += p
            p = w * ((c >> 3) & 1)
            m = w * ((c >> 2) & 1) - p
            a1 += p * s1
            b1 += m * t1
            n1 += m
            p1 += p
            p = w * ((c >> 5) & 1)
            m = w * ((c >> 4) & 1) - p
            a2 += p * s2
            b2 += m * t2
            n2 += m
            p2 += p
            p = w * ((c >> 7) & 1)
            m = w * ((c >> 6) & 1) - p
            a3 += p * s3
            b3 += m * t3
            n3 += m
            p3 += p
        res = ((a0, b0, n0, p0), (a1, b1, n1, p1), (a2, b2, n2, p2), (a3, b3, n3, p3))
        for j in range(4):
            k = 4 * q + j
            if k < k_tasks:
                a, b, nn, pp = res[j]
                den = pp * nn
                out[k] = (a + (den - b)) / (2.0 * den) if den > 0 else np.nan


@nb.njit(cache=True, inline="always")
def _label_of(codes, row, k):
    w = k // 16
    b = k - 16 * w
    return (codes[row, w] >> np.uint32(2 * b)) & np.uint32(3)


@nb.njit(cache=True)
def _scan_sorted(ties, rows, m, offset, codes, weights, weighted, k_tasks, out):
    """Mann-Whitney sum over a sorted sequence (float64 path): ``ties[i]`` equal means
    tied scores, ``offset + rows[i]`` is the row whose labels and weight are gathered."""
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
            w = weights[row] if weighted else 1.0
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


# --------------------------------------------------------------------------- batch AUC
# Every kernel a call runs on its threads is a serial numba function that releases the GIL
# (``nogil``), run on the kernel's thread pool (:func:`_spread`) next to numpy's sort
# (which releases it too): a thread takes a candidate from its keys through the sort to
# its scan with no barrier between the steps, and no OpenMP team is left spinning.
@nb.njit(cache=True, nogil=True)
def _auc_one(bits, low, codes, weights, weighted, packed, k_tasks, keys, tmp, hist, out):
    """One candidate end to end: keys + histograms, radix sort, scan."""
    s = tmp if _radix_from_bits(bits, low, packed, keys, tmp, hist) else keys
    if packed:
        _scan_packed(s, k_tasks, out, np.uint64(32))
    else:
        _scan_gather(s, 0, codes, weights, weighted, k_tasks, out)


@nb.njit(cache=True, nogil=True)
def _auc_one_w(bits, low, weights, k_tasks, keys, tmp, wk, wtmp, hist, out):
    """One weighted candidate (K <= 16): keys + weights radix-sorted together, scanned."""
    if _radix_payload(bits, low, weights, keys, tmp, wk, wtmp, hist):
        _scan_packed_w(tmp, wtmp, k_tasks, out)
    else:
        _scan_packed_w(keys, wk, k_tasks, out)


@nb.njit(cache=True, nogil=True)
def _keys_one_np(bits, low, packed, keys):
    """keys[i] = ordered(bits[i]) << 32 | (low[i] if packed else i), for numpy's sort."""
    for i in range(bits.shape[0]):
        lo = np.uint32(low[i]) if packed else np.uint32(i)
        keys[i] = (np.uint64(_ordered_u32(bits[i])) << np.uint64(32)) | np.uint64(lo)


@nb.njit(cache=True, nogil=True)
def _scan_one(keys, codes, weights, weighted, packed, k_tasks, out):
    if packed:
        _scan_packed(keys, k_tasks, out, np.uint64(32))
    else:
        _scan_gather(keys, 0, codes, weights, weighted, k_tasks, out)


@nb.njit(cache=True)
def _keys_rows_ser(bits, low, packed, keys):
    for p in range(bits.shape[0]):
        _keys_one_np(bits[p], low, packed, keys[p])


# One candidate on every thread (a search on a large log): its rows are split by score
# into one bucket per thread (a sample sort).  Pivots are ordered score bits read from a
# sample of the rows; a bucket holds the rows with pivot[b-1] <= score < pivot[b], so a
# tie block never straddles two buckets.  Each thread counts its row chunk's rows per
# bucket, then writes their keys into the bucket's slots; each bucket is then sorted and
# scanned on its own, and the exact sums are joined: a positive in bucket b sits above
# every negative of the buckets below, so 2U = sum_b (2 A_b + D_b + 2 P_b N_{<b}).
@nb.njit(cache=True, nogil=True)
def _ordered_sample(bits, rows, out):
    for j in range(rows.shape[0]):
        out[j] = _ordered_u32(bits[rows[j]])


@nb.njit(cache=True, inline="always")
def _bucket_of(hi, pivots):
    b = 0
    for j in range(pivots.shape[0]):
        b += hi >= pivots[j]
    return b


@nb.njit(cache=True, nogil=True)
def _bucket_counts(bits, a, b, pivots, cnt):
    """Rows of [a, b) per bucket: for each pivot a count of the rows at or above it (a
    reduction the compiler vectorises: over a slice, not range(a, b), which it does not),
    the buckets by differences."""
    x = bits[a:b]
    above = np.zeros(pivots.shape[0] + 2, dtype=np.int64)
    above[0] = x.shape[0]
    for j in range(pivots.shape[0]):
        pv = pivots[j]
        c = 0
        for i in range(x.shape[0]):
            c += _ordered_u32(x[i]) >= pv
        above[j + 1] = c
    for j in range(pivots.shape[0] + 1):
        cnt[j] = above[j] - above[j + 1]


@nb.njit(cache=True, nogil=True)
def _bucket_write(bits, low, a, b, pivots, slot, keys):
    """Keys of rows [a, b) to their bucket's next slot; with one pivot (two threads) both
    slots stay in registers."""
    x = bits[a:b]
    lw = low[a:b]
    if pivots.shape[0] == 1:
        pv = pivots[0]
        s0 = slot[0]
        s1 = slot[1]
        for i in range(x.shape[0]):
            hi = _ordered_u32(x[i])
            up = hi >= pv
            keys[s1 if up else s0] = (np.uint64(hi) << np.uint64(32)) | np.uint64(lw[i])
            s1 += up
            s0 += 1 - up
        slot[0] = s0
        slot[1] = s1
        return
    for i in range(x.shape[0]):
        hi = _ordered_u32(x[i])
        j = _bucket_of(hi, pivots)
        keys[slot[j]] = (np.uint64(hi) << np.uint64(32)) | np.uint64(lw[i])
        slot[j] += 1


@nb.njit(cache=True)
def _join_buckets(raw, out):
    """raw (B, K, 4) exact sums of the buckets in score order -> AUC per task."""
    for k in range(raw.shape[1]):
        two_u = 0
        neg = 0
        pos = 0
        for b in range(raw.shape[0]):
            two_u += 2 * raw[b, k, 0] + raw[b, k, 1] + 2 * raw[b, k, 3] * neg
            neg += raw[b, k, 2]
            pos += raw[b, k, 3]
        den = pos * neg
        out[k] = two_u / (2.0 * den) if den > 0 else np.nan


@nb.njit(cache=True, parallel=True)
def _scan_order(order, bits, codes, weights, weighted, k_tasks, out):
    """float64 path: ``order`` is an argsort of each row of the scores, ``bits`` their
    float64 bit patterns."""
    p_n, n = order.shape
    for p in nb.prange(p_n):
        ties = np.empty(n, dtype=np.uint64)
        for i in range(n):
            ties[i] = _ordered_u64(bits[p, order[p, i]])
        _scan_sorted(ties, order[p], n, 0, codes, weights, weighted, k_tasks, out[p])


# kept for callers that build (score, row) keys themselves (the bootstrap)
@nb.njit(cache=True, parallel=True)
def _keys_indexed(bits, out):
    p_n, n = bits.shape
    for p in nb.prange(p_n):
        for i in range(n):
            out[p, i] = (np.uint64(_ordered_u32(bits[p, i])) << np.uint64(32)) | np.uint64(i)


@nb.njit(cache=True, parallel=True)
def _radix_rows(keys, tmp):
    for p in nb.prange(keys.shape[0]):
        hist = np.empty((3, 2048), dtype=np.int64)
        _radix_hist(keys[p], hist)
        if _radix_sort(keys[p], tmp[p], hist):
            keys[p, :] = tmp[p]


# --------------------------------------------------------------------------- sort choice
_POOL: ThreadPoolExecutor | None = None
_CHOICE: dict[int, str] = {}
_CHOICE_LOCK = threading.Lock()
_POOL_LOCK = threading.Lock()
_MIN_MEASURED = 1 << 14  # below this the sorts cost microseconds: numpy's, no measuring
_SPLIT_MIN_ROWS = 1 << 18  # a single candidate is split over the threads from this many rows
_CHUNK_MIN_ROWS = 1 << 18  # the GAUC plan is built over row chunks from this many rows
# Row chunks, pieces of groups, ... per thread: items small enough that when the machine's
# cores are busy, the caller finishes most of them while a pool thread waits for a core.
_ITEMS_PER_THREAD = 4
_BUCKETS_PER_THREAD = 1  # score buckets of one candidate split over the threads


def _threads() -> int:
    return max(1, int(nb.get_num_threads()))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:  # two first callers at once must not make two pools
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="ft-sort")
    return _POOL


def _spread(fn, n_items: int, slots: int | None = None) -> None:
    """Run ``fn(i)`` for i in range(n_items) on the calling thread and the kernel's thread
    pool at once (``fn(i, w)`` with ``slots``: ``w`` < ``slots`` is the running thread's
    scratch slot, never two threads on one slot).  The kernels ``fn`` calls release the
    GIL (numba ``nogil``, numpy's sort).  Unlike a numba parallel region this leaves no
    OpenMP worker spinning after it (libgomp's default spin-wait burns a core for
    milliseconds, which on 2 cores is the other thread's core).

    Items are claimed one at a time by whichever thread is free, the caller included, and
    the caller stops waiting for a pool thread that has not started by the time every
    item is claimed: on a machine whose cores are busy with other work the call costs
    what one thread costs instead of waiting for a core."""
    workers = min(n_items, _threads() if slots is None else slots)
    if workers <= 1 or threading.current_thread().name.startswith("ft-sort"):
        for i in range(n_items):  # called from a pool thread: never wait on the pool
            fn(i) if slots is None else fn(i, 0)
        return
    lock = threading.Lock()
    nxt = [0]

    def run(w: int) -> None:
        while True:
            with lock:
                i = nxt[0]
                nxt[0] = i + 1
            if i >= n_items:
                return
            fn(i) if slots is None else fn(i, w)

    pool = _pool()
    futures = [pool.submit(run, w) for w in range(1, workers)]
    try:
        run(0)
    finally:
        for f in futures:
            if not f.cancel():  # started: it holds a claimed item (or is about to see none left)
                f.result()


def _np_sort_rows(keys: np.ndarray, parallel: bool) -> None:
    """Sort each row of a (P, N) uint64 array in place; numpy's sort releases the GIL."""
    if keys.shape[0] <= 1 or not parallel:
        keys.sort(axis=1)
    else:
        list(_pool().map(lambda i: keys[i].sort(), range(keys.shape[0])))


def _size_class(n: int) -> int:
    return min(24, max(14, int(n).bit_length()))


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fusiontune" / "sort-choice.json"


def _machine_key() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        import platform

        model = platform.processor() or platform.machine()
    return f"{model}|numpy {np.__version__}|numba {nb.__version__}"


def _measure(cls: int) -> str:
    """Median time of np.sort vs the radix sort on 2**cls random packed keys."""
    n = 1 << min(cls, 21)
    rng = np.random.default_rng(12345)
    s = rng.standard_normal(n).astype(np.float32)
    keys = np.empty(n, dtype=np.uint64)
    tmp = np.empty(n, dtype=np.uint64)
    hist = np.empty((3, 2048), dtype=np.int64)
    low = rng.integers(0, 256, n).astype(np.uint32)
    bits = s.view(np.uint32)
    _keys_one(bits, low, True, keys, hist)
    base = keys.copy()

    def radix():
        keys[:] = base
        _radix_hist(keys, hist)
        _radix_sort(keys, tmp, hist)

    def numpy_():
        keys[:] = base
        keys.sort()

    t = {"radix": [], "numpy": []}
    radix(), numpy_()  # compile / warm
    for _ in range(5):  # CPU time of this thread: robust to other processes on a shared machine
        for name, fn in (("radix", radix), ("numpy", numpy_)):
            t0 = time.thread_time()
            fn()
            t[name].append(time.thread_time() - t0)
    return "radix" if np.median(t["radix"]) < np.median(t["numpy"]) else "numpy"


def sort_choice(n: int) -> str:
    """``"radix"`` or ``"numpy"``: the faster sort of ``n`` packed keys on this machine.

    Measured once per size class (powers of two) at first use, remembered in the process
    and in ``$XDG_CACHE_HOME/fusiontune/sort-choice.json`` (keyed by CPU model, numpy and
    numba versions).  ``FUSIONTUNE_SORT=radix|numpy`` overrides it."""
    forced = os.environ.get("FUSIONTUNE_SORT", "").strip().lower()
    if forced in ("radix", "numpy"):
        return forced
    if n < _MIN_MEASURED:
        return "numpy"
    cls = _size_class(n)
    got = _CHOICE.get(cls)
    if got is not None:
        return got
    with _CHOICE_LOCK:
        if cls in _CHOICE:
            return _CHOICE[cls]
        path, mkey = _cache_file(), _machine_key()
        disk: dict = {}
        try:
            disk = json.loads(path.read_text())
            got = disk.get(mkey, {}).get(str(cls))
        except (OSError, ValueError, AttributeError):
            disk = {}
        if got not in ("radix", "numpy"):
            got = _measure(cls)
            try:
                disk = disk if isinstance(disk, dict) else {}
                disk.setdefault(mkey, {})[str(cls)] = got
                atomic_write_text(path, json.dumps(disk, indent=1, sort_keys=True))
            except OSError:
                pass  # a read-only home only costs the measurement next time
        _CHOICE[cls] = got
        return got


def sort_keys(keys: np.ndarray, method: str = "auto", parallel: bool = True) -> None:
    """Sort each row of (P, N) uint64 keys in place by their high 32 bits (stable for the
    radix sort, a full sort for numpy's; both give the same order of the high halves)."""
    if method == "auto":
        method = sort_choice(keys.shape[1])
    if method == "radix":
        _radix_rows(keys, np.empty_like(keys))
    elif method == "numpy":
        _np_sort_rows(keys, parallel)
    else:
        raise ValueError(f"sort method must be 'auto', 'radix' or 'numpy', got {method!r}")


def _sort_rows(keys: np.ndarray) -> None:
    """Sort each row of a (P, N) uint64 array in place (the bootstrap's entry point)."""
    sort_keys(keys, "auto", True)


# --------------------------------------------------------------------------- public API
def _want_parallel(parallel: bool | None, p: int) -> bool:
    return p > 1 if parallel is None else bool(parallel)


def _prepare(labels, weights, label_codes=None):
    if label_codes is not None:
        c8 = np.asarray(label_codes)
        if c8.ndim == 1:
            c8 = c8[:, None]
        codes = pack_label_codes(c8)
        n, k = c8.shape
    else:
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


class _Scratch:
    """Per-thread key buffers reused across calls (a search calls a plan thousands of
    times); a concurrent caller gets fresh buffers instead of waiting."""

    def __init__(self):
        self.lock = threading.Lock()
        self.arrays: tuple | None = None

    def get(self, slots: int, n: int, payload: bool = False, radix: bool = True):
        """(keys, tmp, hist, weights) buffers; ``tmp`` only for the radix sort (numpy's
        sorts in place), the weight pair only with ``payload``."""
        a = self.arrays
        if (a is None or a[0].shape[0] < slots or a[0].shape[1] != n or (payload and a[3] is None)
                or (radix and a[1].shape[1] != n)):
            a = (np.empty((slots, n), dtype=np.uint64),
                 np.empty((slots, n if radix else 0), dtype=np.uint64),
                 np.empty((slots, 3, 2048), dtype=np.int64),
                 np.empty((2, slots, n), dtype=np.float64) if payload else None)
            self.arrays = a
        return a[0][:slots], a[1][:slots], a[2][:slots], (a[3][:, :slots] if payload else None)

    def release(self):
        self.arrays = None


class AucPlan:
    """Labels (and weights) encoded once; call it with many score matrices.

    ``sort``: ``"auto"`` (the faster on this machine, :func:`sort_choice`), ``"radix"`` or
    ``"numpy"``."""

    def __init__(self, labels=None, weights=None, *, label_codes=None, sort: str = "auto"):
        if sort not in ("auto", "radix", "numpy"):
            raise ValueError(f"sort must be 'auto', 'radix' or 'numpy', got {sort!r}")
        self.codes, self.n, self.k, self.weights = _prepare(labels, weights, label_codes)
        if self.k <= 4:  # one byte a row holds the codes of up to 4 tasks
            self.codes = self.codes.astype(np.uint8)
        if self.n >= 2**32:
            raise ValueError("more than 2**32 rows is not supported")
        self.sort = sort
        self.packed = self.weights is None and self.codes.shape[1] == 1
        self.payload = self.weights is not None and self.codes.shape[1] == 1  # weights ride the sort
        self._low = self.codes[:, 0] if self.codes.shape[1] == 1 else np.zeros(1, dtype=np.uint32)
        self._w = self.weights if self.weights is not None else np.ones(1)
        self._scratch = _Scratch()

    def __call__(self, scores, parallel: bool | None = None) -> np.ndarray:
        s, one, exact32 = _as_score_matrix(scores, self.n)
        p = s.shape[0]
        out = np.empty((p, self.k))
        par = _want_parallel(parallel, p)  # one candidate: one thread unless asked (a search on a large log asks)
        if not exact32:
            order = np.argsort(s, axis=1, kind="stable")
            _scan_order(order, s.view(np.uint64), self.codes, self._w, self.weights is not None, self.k, out)
            return out[0] if one else out
        method = self.sort if self.sort != "auto" else sort_choice(self.n)
        threads = _threads() if par else 1
        bits = s.view(np.uint32)
        if p == 1 and threads > 1 and self.packed and self.n >= _SPLIT_MIN_ROWS:
            self._split_one(bits[0], out[0], method, threads)
            return out[0] if one else out
        slots = min(p, threads)
        if not self._scratch.lock.acquire(blocking=False):
            scratch = _Scratch()
        else:
            scratch = self._scratch
        try:
            radix = self.payload or method == "radix"
            keys, tmp, hist, wbuf = scratch.get(slots, self.n, self.payload, radix)
            weighted = self.weights is not None
            low, codes, w, k, packed = self._low, self.codes, self._w, self.k, self.packed

            def one_candidate(q, t):  # candidate q end to end on the thread owning scratch slot t
                if self.payload:  # weighted, <= 16 tasks: (key, weight) pairs radix-sorted, any machine
                    _auc_one_w(bits[q], low, self.weights, k, keys[t], tmp[t], wbuf[0][t], wbuf[1][t],
                               hist[t], out[q])
                elif radix:
                    _auc_one(bits[q], low, codes, w, weighted, packed, k, keys[t], tmp[t], hist[t], out[q])
                else:
                    _keys_one_np(bits[q], low, packed, keys[t])
                    keys[t].sort()
                    _scan_one(keys[t], codes, w, weighted, packed, k, out[q])

            _spread(one_candidate, p, slots)
        finally:
            if scratch is self._scratch:
                self._scratch.lock.release()
        return out[0] if one else out

    def _split_one(self, bits: np.ndarray, out: np.ndarray, method: str, threads: int) -> None:
        """One candidate on ``threads`` threads: a bucket of scores per thread (see
        :func:`_join_buckets`), each sorted by ``method`` and scanned on its own."""
        n = self.n
        rows = np.linspace(0, n - 1, min(n, 1024 * threads)).astype(np.int64)
        sample = np.empty(rows.shape[0], dtype=np.uint32)
        _ordered_sample(bits, rows, sample)
        sample.sort()
        pivots = []
        n_want = _BUCKETS_PER_THREAD * threads
        for j in range(1, n_want):  # the boundary nearest the j-th quantile between distinct values
            r = (j * sample.shape[0]) // n_want
            lo = int(np.searchsorted(sample, sample[r], side="left"))
            hi = int(np.searchsorted(sample, sample[r], side="right"))
            cut = lo if r - lo <= hi - r else hi
            if 0 < cut < sample.shape[0]:
                pivots.append(sample[cut])
        pivots = np.unique(np.array(pivots, dtype=np.uint32))
        n_b = pivots.shape[0] + 1
        chunks = _ITEMS_PER_THREAD * threads
        cuts = np.linspace(0, n, chunks + 1).astype(np.int64)
        cnt = np.empty((chunks, n_b), dtype=np.int64)
        _spread(lambda t: _bucket_counts(bits, cuts[t], cuts[t + 1], pivots, cnt[t]), chunks)
        sizes = cnt.sum(axis=0)
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        slot = bounds[:-1][None, :] + np.cumsum(cnt, axis=0) - cnt  # each chunk's first slot per bucket
        if not self._scratch.lock.acquire(blocking=False):
            scratch = _Scratch()
        else:
            scratch = self._scratch
        try:
            keys, tmp, _, _ = scratch.get(1, n, radix=method == "radix")
            keys, tmp = keys[0], tmp[0]
            _spread(lambda t: _bucket_write(bits, self._low, cuts[t], cuts[t + 1], pivots, slot[t], keys), chunks)
            raw = np.zeros((n_b, self.k, 4), dtype=np.int64)

            def sort_scan(b):
                a, z = bounds[b], bounds[b + 1]
                if z == a:
                    return
                part = keys[a:z]
                if method == "radix":
                    hist = np.empty((3, 2048), dtype=np.int64)
                    _radix_hist(part, hist)
                    if _radix_sort(part, tmp[a:z], hist):
                        part = tmp[a:z]
                else:
                    part.sort()
                _scan_packed(part, self.k, out, np.uint64(32), raw[b])

            _spread(sort_scan, n_b)
        finally:
            if scratch is self._scratch:
                self._scratch.lock.release()
        _join_buckets(raw, out)

    def release(self) -> None:
        """Drop the reused key buffers (per thread and row: 8 bytes with numpy's sort, 16
        with the radix sort, 32 with weights)."""
        self._scratch.release()


def auc(scores, labels, weights=None) -> np.ndarray:
    """Exact per-task AUC of one or many score vectors.  See the module docstring."""
    plan = AucPlan(labels, weights)
    return plan(scores)


# --------------------------------------------------------------------------- groups
@nb.njit(cache=True)
def _group_runs(g):
    """One pass over the group ids (any integer type): the starts of the runs of equal ids
    (plus n), and whether the ids never decrease (then every id forms a single run)."""
    n = g.shape[0]
    starts = np.empty(n + 1, dtype=np.int64)  # only the first m + 1 pages are touched
    m = 0
    ordered = True
    if n > 0:
        starts[0] = 0
        m = 1
        prev = g[0]
        for i in range(1, n):
            v = g[i]
            if v != prev:
                ordered &= v > prev
                starts[m] = i
                m += 1
                prev = v
    starts[m] = n
    return starts[:m + 1].copy(), ordered


@nb.njit(cache=True)
def _max_gap(offsets):
    best = 0
    for j in range(offsets.shape[0] - 1):
        best = max(best, offsets[j + 1] - offsets[j])
    return best


@nb.njit(cache=True)
def _runs_unique(g, starts, n_ids):
    """Whether no id of ``g`` (codes in [0, n_ids)) starts two runs: rows grouped."""
    seen = np.zeros(n_ids, dtype=np.bool_)
    for j in range(starts.shape[0] - 1):
        v = g[starts[j]]
        if seen[v]:
            return False
        seen[v] = True
    return True


@nb.njit(cache=True)
def _group_perm(g, n_ids):
    """Stable counting sort of rows by integer code: (perm, offsets over present ids)."""
    n = g.shape[0]
    cnt = np.zeros(n_ids + 1, dtype=np.int64)
    for i in range(n):
        cnt[g[i] + 1] += 1
    m = 0
    for v in range(n_ids):
        if cnt[v + 1] > 0:
            m += 1
    offsets = np.empty(m + 1, dtype=np.int64)
    offsets[0] = 0
    j = 0
    for v in range(n_ids):
        if cnt[v + 1] > 0:
            offsets[j + 1] = offsets[j] + cnt[v + 1]
            j += 1
        cnt[v + 1] += cnt[v]
    perm = np.empty(n, dtype=np.int64)
    for i in range(n):
        v = g[i]
        perm[cnt[v]] = i
        cnt[v] += 1
    return perm, offsets


def pd_factorize(g: np.ndarray) -> np.ndarray:
    """Codes 0..m-1 of any ids in the order of their values (a hash pass; only the m
    distinct ids are sorted)."""
    import pandas as pd

    return pd.factorize(np.asarray(g), sort=True)[0].astype(np.int64)


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
        """One pass over the ids when they never decrease (a log written request by
        request, or the log's group codes); otherwise a check that each id forms one run
        (then still no permutation), else a stable counting sort (two passes)."""
        g = np.asarray(groups)
        if g.ndim != 1:
            raise ValueError("groups must be 1-D")
        n = g.shape[0]
        if n == 0:
            return cls(None, np.zeros(1, dtype=np.int64), 0)
        if g.dtype.kind not in "iub":
            g = pd_factorize(g)
        g = np.ascontiguousarray(g)
        starts, ordered = _group_runs(g)
        if ordered:
            return cls(None, starts, n)
        lo, hi = int(g.min()), int(g.max())
        if lo >= 0 and hi < max(2 * n, 1 << 16):
            codes, n_ids = g, hi + 1  # small non-negative integers: codes already
        else:
            codes = pd_factorize(g)
            n_ids = int(codes.max()) + 1
        if _runs_unique(codes, starts, n_ids):
            return cls(None, starts, n)
        perm, offsets = _group_perm(codes, n_ids)
        return cls(perm, offsets, n)

    @property
    def n_groups(self) -> int:
        return self.offsets.shape[0] - 1

    def take(self, a: np.ndarray, axis: int = 0) -> np.ndarray:
        return a if self.perm is None else np.take(a, self.perm, axis=axis)


def _lane_tables():
    """For a code byte (4 tasks, 2 bits each): the task's observed and positive bits
    spread into four 16-bit lanes of a uint64, so one add counts all four tasks."""
    c = np.arange(256, dtype=np.uint64)
    obs = np.zeros(256, dtype=np.uint64)
    pos = np.zeros(256, dtype=np.uint64)
    for k in range(4):
        obs |= ((c >> np.uint64(2 * k)) & np.uint64(1)) << np.uint64(16 * k)
        pos |= ((c >> np.uint64(2 * k + 1)) & np.uint64(1)) << np.uint64(16 * k)
    return obs, pos


_LANE_OBS, _LANE_POS = _lane_tables()


@nb.njit(cache=True)
def _group_counts4(offsets, codes, k_tasks, npos, nobs):
    """Unweighted, <= 4 tasks: per group and task the positive and observed counts, one
    pass over the code words with all four tasks counted by one add in 16-bit lanes."""
    lo = _LANE_OBS
    lp = _LANE_POS
    for g in range(offsets.shape[0] - 1):
        r0 = offsets[g]
        r1 = offsets[g + 1]
        for k in range(k_tasks):
            npos[g, k] = 0
            nobs[g, k] = 0
        while r0 < r1:
            r2 = min(r1, r0 + 65535)  # a lane holds at most 65535
            o = np.uint64(0)
            p = np.uint64(0)
            for row in range(r0, r2):
                c = codes[row, 0] & np.uint32(0xFF)
                o += lo[c]
                p += lp[c]
            for k in range(k_tasks):
                nobs[g, k] += np.int64((o >> np.uint64(16 * k)) & np.uint64(0xFFFF))
                npos[g, k] += np.int64((p >> np.uint64(16 * k)) & np.uint64(0xFFFF))
            r0 = r2


# The GAUC plan of a log (the log's uint8 codes of <= 4 tasks read four to a row as one
# uint32, no weights, integer ids), built over T row chunks, each on its own thread
# (nogil kernels on the kernel's thread pool, _spread).  A row's four 2-bit codes become
# one byte by a multiply (byte j's two bits land at bits 2j, 2j+1 of the top byte, the
# other partial products fall on disjoint lower bits, so nothing carries into it), and a
# group's four tasks' observed / positive counts are one add each in 16-bit lanes of a
# uint64.  Bad codes are OR-ed together and looked for only when one was seen.
@nb.njit(cache=True, inline="always")
def _code_byte(u):
    return np.uint8(((u & np.uint32(0x03030303)) * np.uint32(0x01041040)) >> np.uint32(24))


@nb.njit(cache=True, inline="always")
def _code_bad(u):
    # a byte outside {0, 1, 3}: a bit above bit 1, or bit 1 without bit 0 (a 2)
    return (u & np.uint32(0xFCFCFCFC)) | ((u >> np.uint32(1)) & ~u & np.uint32(0x01010101))


@nb.njit(cache=True, nogil=True)
def _runs_chunk(g, c32, words, a, b, starts, lane_obs, lane_pos, info):
    """Rows [a, b): each row's code byte, the runs of equal ids (their starts and lane
    counts written from index ``a`` on), and into ``info``: [runs, ids never decrease,
    OR of bad code bits, gave up].  Gives up (info[3] = 1) once the ids went down and
    runs are short (a quarter of the rows or more start one): the rows of a group are
    scattered, and the counting sort will do.  Two loops: the code bytes first (no
    branch: the compiler vectorises it), then the runs; inside the run loop the code
    bytes are not vectorised."""
    cx = c32[a:b]
    wx = words[a:b]
    gx = g[a:b]
    bad = np.uint32(0)
    for i in range(cx.shape[0]):
        u = cx[i]
        bad |= _code_bad(u)
        wx[i] = _code_byte(u)
    lo_t = _LANE_OBS
    lp_t = _LANE_POS
    o = np.uint64(0)
    p = np.uint64(0)
    prev = gx[0]
    m = 0
    ordered = True
    gave_up = False
    starts[a] = a
    for i in range(gx.shape[0]):
        v = gx[i]
        if v != prev:
            lane_obs[a + m] = o
            lane_pos[a + m] = p
            o = np.uint64(0)
            p = np.uint64(0)
            if v < prev:
                ordered = False
            m += 1
            starts[a + m] = a + i
            prev = v
            if not ordered and m > 4096 and 4 * m > i:
                gave_up = True
                break
        w = wx[i]
        o += lo_t[w]
        p += lp_t[w]
    lane_obs[a + m] = o
    lane_pos[a + m] = p
    m += 1
    starts[a + m] = b
    info[0] = m
    info[1] = ordered
    info[2] = bad
    info[3] = gave_up


@nb.njit(cache=True)
def _stitch_runs(g, cuts, starts, lane_obs, lane_pos, info, out_starts, out_obs, out_pos):
    """The chunks' runs as one list (a run cut by a chunk border is joined): (runs,
    ids never decrease, longest run)."""
    m = 0
    ordered = True
    for t in range(cuts.shape[0] - 1):
        a = cuts[t]
        ordered = ordered and info[t, 1] != 0
        j0 = 0
        if t > 0:
            if g[a] == g[a - 1]:
                out_obs[m - 1] += lane_obs[a]  # no carry: the joined run is checked below
                out_pos[m - 1] += lane_pos[a]
                j0 = 1
            elif g[a] < g[a - 1]:
                ordered = False
        for j in range(j0, info[t, 0]):
            out_starts[m] = starts[a + j]
            out_obs[m] = lane_obs[a + j]
            out_pos[m] = lane_pos[a + j]
            m += 1
    out_starts[m] = cuts[cuts.shape[0] - 1]
    longest = 0
    for j in range(m):
        longest = max(longest, out_starts[j + 1] - out_starts[j])
    return m, ordered, longest


@nb.njit(cache=True)
def _runs_distinct(g, starts, vmin, n_ids):
    """Whether no id (in [vmin, vmin + n_ids)) starts two runs: each group's rows together."""
    seen = np.zeros(n_ids, dtype=np.bool_)
    for j in range(starts.shape[0] - 1):
        v = g[starts[j]] - vmin
        if seen[v]:
            return False
        seen[v] = True
    return True


@nb.njit(cache=True, nogil=True)
def _hist_chunk(g, a, b, vmin, cnt_t):
    cnt_t[:] = 0
    for i in range(a, b):
        cnt_t[g[i] - vmin] += 1


@nb.njit(cache=True)
def _count_slots(cnt, offsets):
    """Counting sort's prefix: cnt (T, R) rows per (chunk, id) becomes each (chunk, id)'s
    first slot (ids in order, chunks in order within an id: stable); the present ids'
    offsets go to ``offsets``.  Returns (groups, largest group)."""
    t_n, r = cnt.shape
    s = 0
    m = 0
    largest = 0
    offsets[0] = 0
    for v in range(r):
        s0 = s
        for t in range(t_n):
            c = cnt[t, v]
            cnt[t, v] = s
            s += c
        if s > s0:
            m += 1
            offsets[m] = s
            largest = max(largest, s - s0)
    return m, largest


@nb.njit(cache=True, nogil=True)
def _scatter_chunk(g, words, a, b, vmin, slot_t, perm, grouped):
    """Counting sort's scatter of rows [a, b): row index and code byte to their slot."""
    for i in range(a, b):
        v = g[i] - vmin
        j = slot_t[v]
        slot_t[v] = j + 1
        perm[j] = i
        grouped[j] = words[i]


@nb.njit(cache=True, nogil=True)
def _lanes_chunk(offsets, words, j0, j1, lane_obs, lane_pos):
    lo_t = _LANE_OBS
    lp_t = _LANE_POS
    for j in range(j0, j1):
        o = np.uint64(0)
        p = np.uint64(0)
        for i in range(offsets[j], offsets[j + 1]):
            w = words[i]
            o += lo_t[w]
            p += lp_t[w]
        lane_obs[j] = o
        lane_pos[j] = p


@nb.njit(cache=True)
def _lane_weights(lane_obs, lane_pos, k_tasks, weighting, out, tot):
    """GAUC weight of every (run, task) from the lane counts (0 when the run lacks a
    class) into ``out``, and their sums per task into ``tot`` (the caller normalises)."""
    m = out.shape[0]
    for k in range(k_tasks):
        tot[k] = 0.0
    for j in range(m):
        o = lane_obs[j]
        p = lane_pos[j]
        for k in range(k_tasks):
            sh = np.uint64(16 * k)
            ob = np.int64((o >> sh) & np.uint64(0xFFFF))
            ps = np.int64((p >> sh) & np.uint64(0xFFFF))
            w = 0.0
            if ps > 0 and ob > ps:
                w = float(ob) if weighting == 0 else (float(ps) if weighting == 1 else 1.0)
            out[j, k] = w
            tot[k] += w


@nb.njit(cache=True)
def _group_stats(offsets, codes, weights, weighted, k_tasks, weighting, out):
    """out[g, k] = GAUC weight of group g for task k, 0 when it lacks a class.  One pass
    over the rows; all four tasks counted at once when unweighted with <= 4 tasks."""
    g_n = offsets.shape[0] - 1
    pos = np.zeros(k_tasks)
    neg = np.zeros(k_tasks)
    npos = np.zeros(k_tasks, dtype=np.int64)
    nneg = np.zeros(k_tasks, dtype=np.int64)
    fast = not weighted and codes.shape[1] == 1 and k_tasks <= 4
    if fast:
        cp = np.empty((g_n, k_tasks), dtype=np.int64)
        co = np.empty((g_n, k_tasks), dtype=np.int64)
        _group_counts4(offsets, codes, k_tasks, cp, co)
    for g in range(g_n):
        if fast:
            for k in range(k_tasks):
                npos[k] = cp[g, k]
                nneg[k] = co[g, k] - cp[g, k]
                pos[k] = npos[k]
                neg[k] = nneg[k]
        else:
            pos[:] = 0.0
            neg[:] = 0.0
            npos[:] = 0
            nneg[:] = 0
            for row in range(offsets[g], offsets[g + 1]):
                w = weights[row] if weighted else 1.0
                for k in range(k_tasks):
                    c = _label_of(codes, row, k)
                    p = c >> np.uint32(1)
                    o = c & np.uint32(1)
                    pos[k] += w * p
                    neg[k] += w * (o - p)
                    npos[k] += p
                    nneg[k] += o - p
        for k in range(k_tasks):
            if npos[k] == 0 or nneg[k] == 0 or pos[k] <= 0 or neg[k] <= 0:
                out[g, k] = 0.0
            elif weighting == 0:
                out[g, k] = pos[k] + neg[k]
            elif weighting == 1:
                out[g, k] = pos[k]
            else:
                out[g, k] = 1.0


@nb.njit(cache=True)
def _group_auc_one(bits_p, start, stop, codes, weights, weighted, packed, k_tasks, keys, tmp, use_keys, out_g):
    """AUC of every task inside rows [start, stop) for one candidate (NaN if one class)."""
    m = stop - start
    if use_keys:  # float32 scores: (score, code) or (score, local row) keys
        for i in range(m):
            lo = np.uint32(codes[start + i, 0]) if packed else np.uint32(i)
            keys[i] = (np.uint64(_ordered_u32(bits_p[start + i])) << np.uint64(32)) | np.uint64(lo)
        if m <= 48:  # insertion sort: groups are usually small
            for i in range(1, m):
                x = keys[i]
                j = i - 1
                while j >= 0 and keys[j] > x:
                    keys[j + 1] = keys[j]
                    j -= 1
                keys[j + 1] = x
            s = keys[:m]
        else:
            hist = np.empty((3, 2048), dtype=np.int64)
            _radix_hist(keys[:m], hist)
            s = tmp[:m] if _radix_sort(keys[:m], tmp[:m], hist) else keys[:m]
        if packed:
            _scan_packed(s, k_tasks, out_g, np.uint64(32))
        else:
            _scan_gather(s, start, codes, weights, weighted, k_tasks, out_g)
    else:  # float64 scores that float32 cannot hold exactly
        ties = np.empty(m, dtype=np.uint64)
        for i in range(m):
            ties[i] = _ordered_u64(bits_p[start + i])
        rows = np.argsort(ties, kind="mergesort").astype(np.int64)
        ties = ties[rows]
        _scan_sorted(ties, rows, m, start, codes, weights, weighted, k_tasks, out_g)


_GROUP_CHUNK = 512


# GAUC through one sort of (group, score, code) keys.  The group index is the key's top
# field, so each group's rows stay in its own range [offsets[g], offsets[g+1]) and any
# range of whole groups can be sorted on its own (a candidate's rows sort in pieces, in
# parallel); numpy's SIMD sort then orders every group at once, and one sequential scan
# reads the groups' AUCs.  Used with numpy's sort (sort_choice), unweighted float32 scores,
# codes of <= 16 tasks and group bits + 32 + code bits <= 64.
@nb.njit(cache=True, inline="always")
def _gkeys_range(bits_p, offsets, codes, g0, g1, gshift, cshift, keys_p):
    for g in range(g0, g1):
        top = np.uint64(g) << gshift
        for i in range(offsets[g], offsets[g + 1]):
            keys_p[i] = top | (np.uint64(_ordered_u32(bits_p[i])) << cshift) | np.uint64(codes[i, 0])


@nb.njit(cache=True, nogil=True)
def _gkeys_one(bits_p, offsets, codes, g0, g1, gshift, cshift, keys_p):
    _gkeys_range(bits_p, offsets, codes, g0, g1, gshift, cshift, keys_p)


@nb.njit(cache=True, inline="always")
def _gscan_chunk(keys_p, offsets, group_w, k_tasks, cshift, c, auc_g, out_pc):
    g_n = offsets.shape[0] - 1
    for k in range(k_tasks):
        out_pc[k] = 0.0
    for g in range(c * _GROUP_CHUNK, min(g_n, (c + 1) * _GROUP_CHUNK)):
        has = False
        for k in range(k_tasks):
            if group_w[g, k] > 0:
                has = True
        if not has:
            continue
        _scan_packed(keys_p[offsets[g]:offsets[g + 1]], k_tasks, auc_g, cshift)
        for k in range(k_tasks):
            if group_w[g, k] > 0:
                out_pc[k] += group_w[g, k] * auc_g[k]


@nb.njit(cache=True, nogil=True)
def _gscan_one(keys_p, offsets, group_w, k_tasks, cshift, c0, c1, out_p):
    """Group-weighted AUC sums of the blocks of _GROUP_CHUNK groups [c0, c1) of one
    candidate's sorted keys, into out_p[c]."""
    auc_g = np.empty(k_tasks)
    for c in range(c0, c1):
        _gscan_chunk(keys_p, offsets, group_w, k_tasks, cshift, c, auc_g, out_p[c])


@nb.njit(cache=True)
def _group_chunk(bits, offsets, codes, weights, weighted, packed, group_w, k_tasks, use_keys, reduce,
                 p, c, keys, tmp, auc_g, out):
    g_n = offsets.shape[0] - 1
    g1 = min(g_n, (c + 1) * _GROUP_CHUNK)
    for g in range(c * _GROUP_CHUNK, g1):
        has = False
        for k in range(k_tasks):
            if group_w[g, k] > 0:
                has = True
        if not reduce:
            for k in range(k_tasks):
                out[p, g, k] = 0.0
        if not has:
            continue
        _group_auc_one(bits[p], offsets[g], offsets[g + 1], codes, weights, weighted, packed, k_tasks, keys,
                       tmp, use_keys, auc_g)
        for k in range(k_tasks):
            if group_w[g, k] > 0:
                if reduce:
                    out[p, c, k] += group_w[g, k] * auc_g[k]
                else:
                    out[p, g, k] = auc_g[k]


@nb.njit(cache=True, nogil=True)
def _group_aucs_part(bits, offsets, codes, weights, weighted, packed, group_w, k_tasks, max_group, use_keys,
                     reduce, first, step, out):
    """Per-group AUCs, out (P, G, K) (0 where a group does not count), or with ``reduce``
    the group-weighted partial sums per block of groups, out (P, n_blocks, K), of the
    (candidate, block of groups) pairs first, first + step, ...: one thread's share."""
    p_n = bits.shape[0]
    g_n = offsets.shape[0] - 1
    n_chunks = (g_n + _GROUP_CHUNK - 1) // _GROUP_CHUNK
    keys = np.empty(max_group, dtype=np.uint64)
    tmp = np.empty(max_group, dtype=np.uint64)
    auc_g = np.empty(k_tasks)
    for t in range(first, p_n * n_chunks, step):
        p = t // n_chunks
        c = t - p * n_chunks
        _group_chunk(bits, offsets, codes, weights, weighted, packed, group_w, k_tasks, use_keys, reduce,
                     p, c, keys, tmp, auc_g, out)


def _raise_bad_code(c8: np.ndarray, k: int) -> None:
    c = c8[:, :k]
    row = int(np.flatnonzero(((c == 2) | (c > 3)).any(axis=1))[0])
    raise ValueError(f"label code must be 0, 1 or 3; row {row} has {c8[row, :k].tolist()}")


class GaucPlan:
    """Everything about labels and groups that does not depend on the scores."""

    def __init__(self, labels=None, groups=None, weights=None, weighting: str = "rows", *, label_codes=None):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if groups is None:
            raise ValueError("GAUC needs groups")
        fast = self._one_pass(label_codes, groups, weights, WEIGHTINGS.index(weighting))
        if fast is not None:
            index, self.codes, self.group_w, tot = fast
            self.index, self.n, self.k = index, index.n, self.group_w.shape[1]
            self.weighted, self._w, self.packed = False, np.ones(1), True
        else:
            codes, n, k, weights = _prepare(labels, weights, label_codes)
            index = groups if isinstance(groups, GroupIndex) else GroupIndex.build(groups)
            if index.n != n:
                raise ValueError(f"groups has {index.n} rows, labels {n}")
            self.index, self.n, self.k = index, n, k
            self.codes = np.ascontiguousarray(index.take(codes))
            self.weighted = weights is not None
            self._w = index.take(weights) if weights is not None else np.ones(1)
            self.packed = not self.weighted and self.codes.shape[1] == 1
            gw = np.zeros((index.n_groups, k))
            _group_stats(index.offsets, self.codes, self._w, self.weighted, k, WEIGHTINGS.index(weighting), gw)
            tot = gw.sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                self.group_w = np.where(tot > 0, gw / np.where(tot > 0, tot, 1), 0.0)
        self.valid = tot > 0
        self.max_group = _max_gap(self.index.offsets)
        # one sort of (group, score, code) keys when they fit 64 bits (see _gkeys_range)
        g_bits = max(1, int(self.index.n_groups - 1).bit_length())
        self._cshift = 2 * self.k
        self._global = self.packed and self.codes.shape[1] == 1 and g_bits + 32 + self._cshift <= 64
        self._scratch = _Scratch()

    @staticmethod
    def _one_pass(label_codes, groups, weights, weighting):
        """The log's case: its uint8 codes of at most 4 tasks, no weights, integer group
        ids.  One pass over row chunks (a thread each) reads codes, runs and per-run
        counts; when the ids never decrease, or each id is one run, that is the plan.
        Otherwise (a group's rows apart) a stable counting sort: a histogram pass and a
        scatter pass over the chunks, then the counts per group.  Returns None (the
        general path) for other inputs, ids spread over more than max(2N, 65536) values
        with groups apart, or a group of more than 65535 rows."""
        if label_codes is None or weights is not None or isinstance(groups, GroupIndex):
            return None
        c8, g = np.asarray(label_codes), np.asarray(groups)
        if c8.ndim == 1:
            c8 = c8[:, None]
        if (c8.ndim != 2 or c8.dtype != np.uint8 or not 1 <= c8.shape[1] <= 4 or g.ndim != 1
                or g.dtype.kind not in "iu" or g.dtype == np.uint64 or g.shape[0] != c8.shape[0]
                or g.shape[0] == 0):
            return None
        n, k = c8.shape
        if k < 4:  # four bytes a row (the extra tasks are never observed)
            c8 = np.concatenate([c8, np.zeros((n, 4 - k), dtype=np.uint8)], axis=1)
        c32 = np.ascontiguousarray(c8).view(np.uint32).reshape(n)
        g = np.ascontiguousarray(g)
        t_n = _ITEMS_PER_THREAD * _threads() if n >= _CHUNK_MIN_ROWS and _threads() > 1 else 1
        cuts = np.linspace(0, n, t_n + 1).astype(np.int64)
        words = np.empty((n, 1), dtype=np.uint8)
        w1 = words[:, 0]
        # fresh pages cost a fault each: only the first entries of each chunk's range are touched
        starts = np.empty(n + 1, dtype=np.int64)
        lane_obs = np.empty(n, dtype=np.uint64)
        lane_pos = np.empty(n, dtype=np.uint64)
        info = np.zeros((t_n, 4), dtype=np.int64)
        _spread(lambda t: _runs_chunk(g, c32, w1, cuts[t], cuts[t + 1], starts, lane_obs, lane_pos, info[t]), t_n)
        if info[:, 2].any():  # every row's code was checked, given up or not
            _raise_bad_code(c8, k)
        perm = None
        offsets = None
        if not info[:, 3].any():
            m_all = int(info[:, 0].sum())
            offsets = np.empty(m_all + 1, dtype=np.int64)
            obs, pos = np.empty(m_all, dtype=np.uint64), np.empty(m_all, dtype=np.uint64)
            m, ordered, longest = _stitch_runs(g, cuts, starts, lane_obs, lane_pos, info, offsets, obs, pos)
            if longest > 65535:
                return None  # a 16-bit lane cannot count it: the general path does
            offsets, lane_obs, lane_pos = offsets[:m + 1], obs[:m], pos[:m]
            if not ordered:
                vmin, vmax = int(g.min()), int(g.max())
                if vmax - vmin < max(2 * n, 1 << 16):
                    apart = not _runs_distinct(g, offsets, vmin, vmax - vmin + 1)
                else:
                    apart = np.unique(g[offsets[:-1]]).size < m
                if apart:
                    offsets = None
        if offsets is None:  # a group's rows are apart: stable counting sort by id
            vmin, vmax = int(g.min()), int(g.max())
            if vmax - vmin >= max(2 * n, 1 << 16):
                return None
            n_ids = vmax - vmin + 1
            # a count row per chunk: at most as many bytes as the permutation itself
            t_cs = max(1, min(t_n, n // n_ids))
            ccuts = np.linspace(0, n, t_cs + 1).astype(np.int64)
            cnt = np.empty((t_cs, n_ids), dtype=np.int64)
            _spread(lambda t: _hist_chunk(g, ccuts[t], ccuts[t + 1], vmin, cnt[t]), t_cs)
            offsets = np.empty(n_ids + 1, dtype=np.int64)
            m, largest = _count_slots(cnt, offsets)
            if largest > 65535:
                return None
            perm = np.empty(n, dtype=np.int64)
            in_rows, words = w1, np.empty((n, 1), dtype=np.uint8)  # code bytes in row order -> grouped
            w1 = words[:, 0]
            _spread(lambda t: _scatter_chunk(g, in_rows, ccuts[t], ccuts[t + 1], vmin, cnt[t], perm, w1), t_cs)
            offsets = offsets[:m + 1].copy()
            lane_obs, lane_pos = np.empty(m, dtype=np.uint64), np.empty(m, dtype=np.uint64)
            gcuts = np.linspace(0, m, t_n + 1).astype(np.int64)
            _spread(lambda t: _lanes_chunk(offsets, w1, gcuts[t], gcuts[t + 1], lane_obs, lane_pos), t_n)
        group_w, tot = np.empty((offsets.shape[0] - 1, k)), np.empty(k)
        _lane_weights(lane_obs, lane_pos, k, weighting, group_w, tot)
        group_w /= np.where(tot > 0, tot, 1.0)  # numpy's vector division, same rounding
        return GroupIndex(perm, offsets, n), words, group_w, tot

    @property
    def weights(self) -> np.ndarray:
        """Row weights in grouped order (ones when the plan is unweighted)."""
        return self._w if self.weighted else np.ones(self.n)

    def _run(self, scores, grouped, reduce, parallel):
        s, _, exact32 = _as_score_matrix(scores, self.n)
        if not grouped:
            s = self.index.take(s, axis=1)
        bits = np.ascontiguousarray(s).view(np.uint32 if exact32 else np.uint64)
        p = s.shape[0]
        g_n = self.index.n_groups
        n_chunks = (g_n + _GROUP_CHUNK - 1) // _GROUP_CHUNK
        out = np.zeros((p, n_chunks, self.k)) if reduce else np.empty((p, g_n, self.k))
        par = (p > 1 or self.n >= 1 << 15) if parallel is None else bool(parallel)
        if reduce and exact32 and self._global and self.n > 0 and sort_choice(self.n) == "numpy":
            self._run_sorted(bits, par, out)
            return out
        threads = max(1, min(_threads(), p * n_chunks)) if par else 1
        _spread(lambda t: _group_aucs_part(bits, self.index.offsets, self.codes, self._w, self.weighted, self.packed,
                                           self.group_w, self.k, max(self.max_group, 1), exact32, reduce, t,
                                           threads, out), threads)
        return out

    def _run_sorted(self, bits, par, out):
        """GAUC sums per block of groups through one numpy sort of (group, score, code)
        keys per candidate: a candidate per thread, each from its keys through the sort to
        its scan; with fewer candidates than threads each candidate's rows are cut at
        block-of-groups boundaries into pieces, one per thread, each keyed, sorted and
        scanned on its own."""
        p_n, n = bits.shape
        offsets = self.index.offsets
        gshift = np.uint64(32 + self._cshift)
        cshift = np.uint64(self._cshift)
        threads = _threads() if par else 1
        slots = min(p_n, threads)
        n_chunks = out.shape[1]
        g_n = offsets.shape[0] - 1
        pieces = max(1, _ITEMS_PER_THREAD * threads // p_n) if p_n < threads else 1
        if pieces > 1:  # block boundaries nearest to equal row counts
            first_rows = offsets[np.arange(n_chunks) * _GROUP_CHUNK]
            ccut = np.unique(np.searchsorted(first_rows, np.linspace(0, n, pieces + 1), side="left"))
            ccut[0], ccut[-1] = 0, n_chunks
        else:
            ccut = np.array([0, n_chunks])
        items = [(q, int(a), int(b)) for q in range(p_n) for a, b in zip(ccut[:-1], ccut[1:])] if pieces > 1 else []
        if not self._scratch.lock.acquire(blocking=False):
            scratch = _Scratch()
        else:
            scratch = self._scratch
        try:
            keys = scratch.get(slots, n, radix=False)[0]
            codes, group_w, k = self.codes, self.group_w, self.k
            if items:
                def piece(i):
                    q, c0, c1 = items[i]
                    g0, g1 = c0 * _GROUP_CHUNK, min(g_n, c1 * _GROUP_CHUNK)
                    _gkeys_one(bits[q], offsets, codes, g0, g1, gshift, cshift, keys[q])
                    keys[q, offsets[g0]:offsets[g1]].sort()
                    _gscan_one(keys[q], offsets, group_w, k, cshift, c0, c1, out[q])

                _spread(piece, len(items))
            else:
                def one_candidate(q, t):
                    _gkeys_one(bits[q], offsets, codes, 0, g_n, gshift, cshift, keys[t])
                    keys[t].sort()
                    _gscan_one(keys[t], offsets, group_w, k, cshift, 0, n_chunks, out[q])

                _spread(one_candidate, p_n, slots)
        finally:
            if scratch is self._scratch:
                self._scratch.lock.release()

    def release(self) -> None:
        """Drop the reused key buffers (8 bytes per row and thread)."""
        self._scratch.release()

    def group_aucs(self, scores, grouped: bool = False, parallel: bool | None = None) -> np.ndarray:
        """Per-group AUCs (P, G, K), 0 for the (group, task) pairs GAUC skips."""
        return self._run(np.atleast_2d(scores), grouped, False, parallel)

    def __call__(self, scores, grouped: bool = False, parallel: bool | None = None) -> np.ndarray:
        """GAUC per task; ``grouped=True`` means the scores are already in grouped order."""
        one = np.ndim(scores) == 1
        out = self._run(scores, grouped, True, parallel).sum(axis=1)
        out[:, ~self.valid] = np.nan
        return out[0] if one else out


def gauc(scores, labels, groups, weights=None, weighting: str = "rows") -> np.ndarray:
    """Exact per-task group AUC.  See the module docstring."""
    return GaucPlan(labels, groups, weights, weighting)(scores)
