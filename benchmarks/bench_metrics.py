"""Metric-kernel speed, measured side by side in one run (not part of the test suite).

    python benchmarks/bench_metrics.py [--rows 1000000] [--groups 50000] [--repeats 5]

1. Exact 4-task AUC on 1M rows with ties and NaN labels: ``fusiontune.metrics.auc`` vs
   calling ``sklearn.metrics.roc_auc_score`` once per task on that task's observed rows
   (target: >= 20x faster).  Also the weighted path and a batch of 16 candidates.
2. GAUC on 1M rows / 50k groups / 4 tasks vs one ``np.argsort`` of 1M float64 keys
   (target: <= 6x).  "one-shot" includes grouping the rows and preparing the labels;
   "prepared" is what a search pays per candidate (plan built once).

Every timing is the median of ``--repeats`` runs after one warm-up (numba compiles on
first use).  Results are checked against sklearn before anything is timed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from fusiontune.metrics import GaucPlan, auc, gauc


def median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--groups", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n, k = args.rows, 4
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(n), 4).astype(np.float32)  # 10^4 levels: heavy ties
    rates = np.array([0.1, 0.02, 0.3, 0.08])
    labels = (rng.random((n, k)) < rates * (0.5 + scores[:, None])).astype(np.float32)
    labels[rng.random((n, k)) < np.array([0.0, 0.2, 0.1, 0.9])] = np.nan  # convert: mostly unobserved
    weights = rng.random(n) + 0.5
    groups = np.sort(rng.integers(0, args.groups, n))

    def sk_loop(w=None):
        out = []
        for j in range(k):
            m = ~np.isnan(labels[:, j])
            out.append(roc_auc_score(labels[m, j], scores[m], sample_weight=None if w is None else w[m]))
        return np.array(out)

    # exactness first
    np.testing.assert_allclose(auc(scores, labels), sk_loop(), atol=1e-12)
    np.testing.assert_allclose(auc(scores, labels, weights), sk_loop(weights), atol=1e-12)

    print(f"rows={n:,} tasks={k} distinct scores={np.unique(scores).size:,} groups={np.unique(groups).size:,}"
          f" repeats={args.repeats} (median)")
    t_sk = median_time(sk_loop, max(1, args.repeats // 2))
    t_ft = median_time(lambda: auc(scores, labels), args.repeats)
    t_skw = median_time(lambda: sk_loop(weights), max(1, args.repeats // 2))
    t_ftw = median_time(lambda: auc(scores, labels, weights), args.repeats)
    batch = np.stack([np.round(rng.random(n), 4).astype(np.float32) for _ in range(16)])
    t_batch = median_time(lambda: auc(batch, labels), max(1, args.repeats // 2)) / 16
    print("\n1) exact 4-task AUC")
    print(f"   sklearn roc_auc_score x4            {t_sk * 1e3:9.1f} ms")
    print(f"   fusiontune auc                      {t_ft * 1e3:9.1f} ms   ratio {t_sk / t_ft:6.1f}x "
          f"(target >= 20x: {'PASS' if t_sk / t_ft >= 20 else 'FAIL'})")
    print(f"   sklearn x4, sample_weight           {t_skw * 1e3:9.1f} ms")
    print(f"   fusiontune auc, weights             {t_ftw * 1e3:9.1f} ms   ratio {t_skw / t_ftw:6.1f}x")
    print(f"   fusiontune auc, batch of 16 / cand  {t_batch * 1e3:9.1f} ms   ratio {t_sk / t_batch:6.1f}x")

    keys = rng.random(n)
    t_sort = median_time(lambda: np.argsort(keys), args.repeats)
    t_g1 = median_time(lambda: gauc(scores, labels, groups), args.repeats)
    plan = GaucPlan(labels, groups)
    t_g2 = median_time(lambda: plan(scores), args.repeats)
    t_g16 = median_time(lambda: plan(batch), max(1, args.repeats // 2)) / 16
    print("\n2) GAUC, 4 tasks")
    print(f"   np.argsort 1M float64               {t_sort * 1e3:9.1f} ms")
    print(f"   fusiontune gauc one-shot            {t_g1 * 1e3:9.1f} ms   = {t_g1 / t_sort:4.2f}x argsort "
          f"(target <= 6x: {'PASS' if t_g1 / t_sort <= 6 else 'FAIL'})")
    print(f"   fusiontune gauc prepared            {t_g2 * 1e3:9.1f} ms   = {t_g2 / t_sort:4.2f}x argsort")
    print(f"   fusiontune gauc batch of 16 / cand  {t_g16 * 1e3:9.1f} ms   = {t_g16 / t_sort:4.2f}x argsort")


if __name__ == "__main__":
    main()
