"""Metric-kernel speed, measured side by side in one run (not part of the test suite).

    python benchmarks/bench_metrics.py [--rows 1000000] [--groups 50000] [--repeats 7]

Targets of issue #10 (1M rows, 4 tasks, 10^4 distinct scores so heavy ties, NaN labels):

1. AUC one-shot (``fusiontune.metrics.auc``: label encoding + plan + call) vs calling
   ``sklearn.metrics.roc_auc_score`` once per task on its observed rows: >= 40x.
   A planned call (``AucPlan``) vs ``np.sort`` of the same packed uint64 keys: <= 1.5x.
2. GAUC, 50k groups: building ``GaucPlan`` vs one ``np.argsort`` of the group ids (<= 1x),
   shown for both id layouts: sorted ids (a log written request by request; the build is
   one pass) against argsort of those sorted ids, and shuffled ids (a counting sort)
   against argsort of the shuffled ids; built from the log's uint8 codes (as a search
   does) and from float labels (the one-shot ``gauc`` path, which also encodes them);
   a planned call vs one ``np.argsort`` of the float32 scores (<= 1x); one-shot (<= 2x).
3. Batch throughput of 16 candidates on all kernel threads vs on one (``parallel=True`` vs
   ``parallel=False``, the same compiled kernels): >= 1.7x on 2 cores.  Also one candidate
   per call (what a search on a log over ~2.8M rows does: the threads work inside the
   candidate; AUC splits its rows by score into a bucket per thread), and the CPU time
   of the process (all threads) next to the one-thread CPU time: on a shared machine the
   wall-time ratio needs free cores, the CPU ratio shows what the threads waste.

Every pair of timings is taken alternately (A, B, A, B, ...) and the medians compared, so
load from other processes on a shared machine hits both sides alike.  The load average
(/proc/loadavg) is printed before and after: read the ratios, not the milliseconds.
Results are checked against sklearn before anything is timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402

from fusiontune import metrics as M  # noqa: E402
from fusiontune.metrics import AucPlan, GaucPlan, auc, gauc, sort_choice  # noqa: E402
from machine import cpu_model, loadavg  # noqa: E402  (benchmarks/machine.py)
CPU: dict = {}


# The previous way of running a batch on 2 threads, kept here only to compare with: numba
# parallel regions (OpenMP) for the keys and the scan, numpy's sort on Python threads in
# between.  libgomp's workers spin after each region, on the core the sort wants.
@numba.njit(parallel=True)
def _omp_keys(bits, low, keys):
    for p in numba.prange(bits.shape[0]):
        M._keys_one_np(bits[p], low, True, keys[p])


@numba.njit(parallel=True)
def _omp_scan(keys, k, out):
    for p in numba.prange(keys.shape[0]):
        M._scan_packed(keys[p], k, out[p], np.uint64(32))


def omp_batch(plan, batch):
    t = numba.get_num_threads()
    bits = batch.view(np.uint32)
    out = np.empty((batch.shape[0], plan.k))
    keys = np.empty((t, batch.shape[1]), dtype=np.uint64)
    for c in range(0, batch.shape[0], t):
        kk = keys[:min(t, batch.shape[0] - c)]
        _omp_keys(bits[c:c + t], plan._low, kk)
        M._np_sort_rows(kk, True)
        _omp_scan(kk, plan.k, out[c:c + t])
    return out


def medians(fns, repeats):
    """Median wall time of each function, run alternately after one warm-up each.  The
    median CPU time of the process (all threads) is kept in ``CPU[fn]``: for the one-thread
    timings it is what the work costs whatever else the machine runs."""
    for f in fns:
        f()
    times = [[] for _ in fns]
    cpu = [[] for _ in fns]
    for _ in range(repeats):
        for j, f in enumerate(fns):
            c0 = time.process_time()
            t0 = time.perf_counter()
            f()
            times[j].append(time.perf_counter() - t0)
            cpu[j].append(time.process_time() - c0)
    for f, c in zip(fns, cpu):
        CPU[f] = float(np.median(c))
    return [float(np.median(t)) for t in times]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--groups", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    n, k, r = args.rows, 4, args.repeats
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(n), 4).astype(np.float32)  # 10^4 levels: heavy ties
    rates = np.array([0.1, 0.02, 0.3, 0.08])
    labels = (rng.random((n, k)) < rates * (0.5 + scores[:, None])).astype(np.float32)
    labels[rng.random((n, k)) < np.array([0.0, 0.2, 0.1, 0.9])] = np.nan  # convert: mostly unobserved
    weights = rng.random(n) + 0.5
    groups = np.sort(rng.integers(0, args.groups, n))
    batch = np.stack([np.round(rng.random(n), 4).astype(np.float32) for _ in range(args.batch)])

    def sk_loop(s=scores, w=None):
        out = []
        for j in range(k):
            m = ~np.isnan(labels[:, j])
            out.append(roc_auc_score(labels[m, j], s[m], sample_weight=None if w is None else w[m]))
        return np.array(out)

    # exactness first
    np.testing.assert_allclose(auc(scores, labels), sk_loop(), atol=1e-12)
    np.testing.assert_allclose(auc(scores, labels, weights), sk_loop(w=weights), atol=1e-12)
    for method in ("radix", "numpy"):
        np.testing.assert_allclose(AucPlan(labels, sort=method)(scores), sk_loop(), atol=1e-12)

    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, numba threads {numba.get_num_threads()}; "
          f"numpy {np.__version__}, numba {numba.__version__}, Python {platform.python_version()}")
    print(f"load average before: {loadavg()}")
    print(f"rows={n:,} tasks={k} distinct scores={np.unique(scores).size:,} groups={np.unique(groups).size:,} "
          f"repeats={r} (median, alternating)")
    print(f"sort chosen for this machine and size: {sort_choice(n)}")

    # ---------------------------------------------------------------- AUC
    plan = AucPlan(labels)
    plan_r = AucPlan(labels, sort="radix")
    plan_n = AucPlan(labels, sort="numpy")
    keys = np.empty((1, n), dtype=np.uint64)
    M._keys_rows_ser(scores[None].view(np.uint32), plan.codes[:, 0], True, keys)
    packed = keys[0].copy()
    f_sk, f_one = sk_loop, lambda: auc(scores, labels)
    t_sk, t_one = medians([f_sk, f_one], max(3, r // 2))
    f_sort, f_plan = lambda: np.sort(packed), lambda: plan(scores)
    t_sort, t_plan, t_pr, t_pn, t_enc = medians(
        [f_sort, f_plan, lambda: plan_r(scores), lambda: plan_n(scores), lambda: M.encode_labels(labels)], r)
    t_skw, t_onew = medians([lambda: sk_loop(w=weights), lambda: auc(scores, labels, weights)], max(3, r // 2))
    planw = AucPlan(labels, weights)
    t_planw, = medians([lambda: planw(scores)], r)
    print("\n1) exact 4-task AUC, 1M rows")
    print(f"   sklearn roc_auc_score x4 (loop)        {t_sk * 1e3:8.1f} ms")
    print(f"   fusiontune auc one-shot                {t_one * 1e3:8.1f} ms   sklearn/ours {t_sk / t_one:6.1f}x "
          f"(target >= 40x: {verdict(t_sk / t_one >= 40)})")
    print(f"     of which encode_labels               {t_enc * 1e3:8.1f} ms")
    print(f"   np.sort of the packed uint64 keys      {t_sort * 1e3:8.1f} ms")
    print(f"   AucPlan call (sort={sort_choice(n):5s})            {t_plan * 1e3:8.1f} ms   = {t_plan / t_sort:4.2f}x "
          f"np.sort (target <= 1.5x: {verdict(t_plan / t_sort <= 1.5)})")
    print(f"     forced radix / forced numpy sort     {t_pr * 1e3:8.1f} / {t_pn * 1e3:.1f} ms")
    print(f"   sklearn x4, sample_weight              {t_skw * 1e3:8.1f} ms")
    print(f"   fusiontune auc one-shot, weights       {t_onew * 1e3:8.1f} ms   sklearn/ours {t_skw / t_onew:6.1f}x")
    print(f"   AucPlan call, weights                  {t_planw * 1e3:8.1f} ms")
    print(f"   CPU time (one thread, load-proof): sklearn/ours one-shot {CPU[f_sk] / CPU[f_one]:5.1f}x, "
          f"AucPlan call / np.sort {CPU[f_plan] / CPU[f_sort]:4.2f}x "
          f"({CPU[f_one] * 1e3:.1f}, {CPU[f_plan] * 1e3:.1f}, {CPU[f_sort] * 1e3:.1f} ms)")

    # ---------------------------------------------------------------- GAUC
    from fusiontune.log import encode_label_codes

    c8 = encode_label_codes(labels)  # the in-memory log's uint8 codes (what a search builds from)
    shuffled = rng.permutation(groups)
    f_sorted, f_shuf = lambda: np.argsort(groups), lambda: np.argsort(shuffled)
    f_bcodes, f_blab = lambda: GaucPlan(label_codes=c8, groups=groups), lambda: GaucPlan(labels, groups)
    f_bshuf = lambda: GaucPlan(label_codes=c8, groups=shuffled)  # noqa: E731
    t_gsort, t_gshuf, t_bcodes, t_blab, t_bshuf = medians([f_sorted, f_shuf, f_bcodes, f_blab, f_bshuf], r)
    gplan = GaucPlan(labels, groups)
    t_ssort, t_gcall, t_gone = medians([lambda: np.argsort(scores), lambda: gplan(scores),
                                        lambda: gauc(scores, labels, groups)], r)
    f_gser, f_ssort = lambda: gplan(scores, parallel=False), lambda: np.argsort(scores)
    t_gser, _ = medians([f_gser, f_ssort], r)
    print("\n2) GAUC, 4 tasks, 1M rows, group ids int64")
    print("   plan build, ids SORTED (rows of a request together, as a log written request by request):")
    print(f"     np.argsort of the sorted group ids     {t_gsort * 1e3:8.1f} ms")
    print(f"     GaucPlan build from the log's codes    {t_bcodes * 1e3:8.1f} ms   = {t_bcodes / t_gsort:4.2f}x "
          f"(target <= 1x: {verdict(t_bcodes <= t_gsort)})  [one pass: codes, runs, counts]")
    print(f"     GaucPlan build from float labels       {t_blab * 1e3:8.1f} ms   = {t_blab / t_gsort:4.2f}x "
          f"(the plan-build target is the line above: this adds encode_labels, its own pass, "
          f"which a log's codes have already paid)")
    print("   plan build, ids SHUFFLED (a request's rows scattered):")
    print(f"     np.argsort of the shuffled group ids   {t_gshuf * 1e3:8.1f} ms")
    print(f"     GaucPlan build from the log's codes    {t_bshuf * 1e3:8.1f} ms   = {t_bshuf / t_gshuf:4.2f}x "
          f"(target <= 1x: {verdict(t_bshuf <= t_gshuf)})  [counting sort: count + scatter]")
    print(f"   CPU time, one thread: build from codes / argsort(sorted ids) {CPU[f_bcodes] / CPU[f_sorted]:4.2f}x, "
          f"shuffled {CPU[f_bshuf] / CPU[f_shuf]:4.2f}x")
    print(f"   np.argsort of the float32 scores       {t_ssort * 1e3:8.1f} ms")
    print(f"   GaucPlan call                          {t_gcall * 1e3:8.1f} ms   = {t_gcall / t_ssort:4.2f}x "
          f"(target <= 1x: {verdict(t_gcall <= t_ssort)})   [one thread: {t_gser * 1e3:.1f} ms]")
    print(f"   gauc one-shot                          {t_gone * 1e3:8.1f} ms   = {t_gone / t_ssort:4.2f}x "
          f"(target <= 2x: {verdict(t_gone <= 2 * t_ssort)})")
    print(f"   CPU time, one thread: GaucPlan call / argsort(scores) {CPU[f_gser] / CPU[f_ssort]:4.2f}x "
          f"({CPU[f_gser] * 1e3:.1f}, {CPU[f_ssort] * 1e3:.1f} ms)")

    # ---------------------------------------------------------------- batches: 1 thread vs all
    p = batch.shape[0]
    fns = [lambda: plan(batch, parallel=False), lambda: plan(batch, parallel=True),
           lambda: gplan(batch, parallel=False), lambda: gplan(batch, parallel=True)]
    ta1, taN, tg1, tgN = medians(fns, max(3, r // 2))
    cpu = [CPU[f] for f in fns]
    th = numba.get_num_threads()
    print(f"\n3) batch of {p} candidates: one thread vs {th} threads (same kernels, parallel=False / True)")
    print(f"   AUC   {ta1 / p * 1e3:7.2f} -> {taN / p * 1e3:6.2f} ms/candidate   speed-up {ta1 / taN:4.2f}x "
          f"(target >= 1.7x: {verdict(ta1 / taN >= 1.7)})   CPU time {th} threads / 1: {cpu[1] / cpu[0]:4.2f}x")
    print(f"   GAUC  {tg1 / p * 1e3:7.2f} -> {tgN / p * 1e3:6.2f} ms/candidate   speed-up {tg1 / tgN:4.2f}x "
          f"(target >= 1.7x: {verdict(tg1 / tgN >= 1.7)})   CPU time {th} threads / 1: {cpu[3] / cpu[2]:4.2f}x")
    np.testing.assert_array_equal(omp_batch(plan, batch), plan(batch, parallel=False))
    f_omp, f_pool = lambda: omp_batch(plan, batch), lambda: plan(batch, parallel=True)
    t_omp, t_pool = medians([f_omp, f_pool], max(3, r // 2))
    print(f"   AUC batch through OpenMP regions (the previous kernel): {t_omp / p * 1e3:6.2f} ms/candidate, CPU time "
          f"{CPU[f_omp] / cpu[0]:4.2f}x one thread; on the pool {t_pool / p * 1e3:6.2f} ms/candidate, "
          f"CPU {CPU[f_pool] / cpu[0]:4.2f}x")
    one = batch[0]
    fns = [lambda: plan(one, parallel=False), lambda: plan(one, parallel=True),
           lambda: gplan(one, parallel=False), lambda: gplan(one, parallel=True)]
    sa1, saN, sg1, sgN = medians(fns, r)
    cpu = [CPU[f] for f in fns]
    print("   one candidate per call (a search on a large log), threads inside it:")
    print(f"   AUC   {sa1 * 1e3:7.2f} -> {saN * 1e3:6.2f} ms   speed-up {sa1 / saN:4.2f}x "
          f"(target >= 1.7x: {verdict(sa1 / saN >= 1.7)})   CPU time {th} threads / 1: {cpu[1] / cpu[0]:4.2f}x")
    print(f"   GAUC  {sg1 * 1e3:7.2f} -> {sgN * 1e3:6.2f} ms   speed-up {sg1 / sgN:4.2f}x "
          f"(target >= 1.7x: {verdict(sg1 / sgN >= 1.7)})   CPU time {th} threads / 1: {cpu[3] / cpu[2]:4.2f}x")
    print(f"\nload average after: {loadavg()}")


if __name__ == "__main__":
    main()
