"""Paired group bootstrap speed on the demo holdout (60k rows, 3000 request groups).

Side by side in one run (the machine is shared: read the ratios, not the seconds):
  kernel  fusiontune.bootstrap: each candidate sorted once, B weight vectors scanned,
          GAUC from per-group AUCs times group counts (one matrix product);
  resort  the obvious vectorised alternative: per resample, fusiontune's exact kernel
          (metrics.auc / GaucPlan) with row weights = group multiplicities (re-sorts every time);
  sklearn per resample and task, sklearn.metrics.roc_auc_score on the resampled rows
          (GAUC: per group) -- timed on a few resamples and extrapolated.

usage: python benchmarks/bootstrap_speed.py [--candidates 20] [--resamples 1000]
"""

import argparse
import time

import numpy as np
import pandas as pd

from fusiontune.bootstrap import paired_bootstrap, unit_counts, units_of_rows
from fusiontune.metrics import GaucPlan, auc
from fusiontune.pipeline import prepare
from fusiontune.study import load_study


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()
    prep = prepare(load_study("studies/demo.toml"))
    obj = prep.holdout_objective
    rng = np.random.default_rng(0)
    # candidates around the baseline
    base = prep.space.baseline
    theta = np.repeat(base[None], args.candidates, axis=0)
    free = [prep.space.all_names.index(f) for f in prep.space.free]
    theta[:, free] *= rng.uniform(0.5, 2.0, size=(args.candidates, len(free)))
    paired_bootstrap(obj, theta[:2], base, 20)  # warm up numba
    t = time.perf_counter()
    bs = paired_bootstrap(obj, theta, base, args.resamples, show_progress=False)
    t_kernel = time.perf_counter() - t
    P, B = args.candidates + 1, args.resamples
    print(f"demo holdout: {obj.n_rows} rows, {bs.n_units} {bs.units}; {args.candidates} candidates + baseline, "
          f"{B} resamples")
    print(f"kernel : {t_kernel:8.2f} s   ({t_kernel / (P * B) * 1e6:.1f} us per candidate-resample)")

    # resort: the exact kernel once per resample with count weights
    plan = obj._plan
    unit = units_of_rows(plan.index)
    fused = obj.formula.scores(obj.prepared, np.vstack([theta, base[None]]))
    nb_ = 10
    counts = unit_counts(plan.index.n_groups, nb_, rng)
    t = time.perf_counter()
    for b in range(nb_):
        w = counts[b, unit]
        auc(fused, obj._auc_labels, w)
        GaucPlan(obj.log.labels[:, obj.gauc_idx], plan.index, w)(fused, grouped=True)
    t_resort = (time.perf_counter() - t) / nb_ * B
    print(f"resort : {t_resort:8.2f} s   (extrapolated from {nb_} resamples)  -> kernel is "
          f"{t_resort / t_kernel:.1f}x faster")

    from sklearn.metrics import roc_auc_score

    labels = obj.log.labels
    ns = 2
    t = time.perf_counter()
    for b in range(ns):
        gi = rng.integers(0, plan.index.n_groups, plan.index.n_groups)
        rows = np.concatenate([np.arange(plan.index.offsets[g], plan.index.offsets[g + 1]) for g in gi])
        for p in range(2):
            s = fused[p, rows]
            for k in obj.auc_idx:
                y = labels[rows, k]
                m = ~np.isnan(y)
                roc_auc_score(y[m], s[m])
            for k in obj.gauc_idx:
                df = pd.DataFrame({"g": np.repeat(np.arange(gi.size), np.diff(plan.index.offsets)[gi]),
                                   "y": labels[rows, k], "s": s})
                for _, d in df.groupby("g"):
                    if d["y"].nunique() == 2:
                        roc_auc_score(d["y"], d["s"])
    t_sk = (time.perf_counter() - t) / (ns * 2) * P * B
    print(f"sklearn: {t_sk:8.0f} s   (extrapolated from {ns} resamples x 2 candidates) -> kernel is "
          f"{t_sk / t_kernel:.0f}x faster")


if __name__ == "__main__":
    main()
