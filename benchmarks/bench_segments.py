"""Per-segment weights: what they buy over one global weight set, and what they cost.

    python benchmarks/bench_segments.py [--segments 1 3 10] [--requests 6000] [--budget 600 [2400 ...]]
                                        [--method cem] [--seeds 2] [--resamples 500]

For each number of segments S and each seed, ``simulate_segments`` makes a demo-style log
(``--requests`` requests x 20 candidates, a ``user_segment`` column; the segments' models
differ in quality per task, so their best weights differ; S = 1 is the control where
segment weights can only equal global ones).  The study is ``studies/segments.toml``
(4 tasks, multiplicative formula, click guardrail, last 30% of time held out) with
``min_rows = 0``.  Side by side on the same rows, with the same method, budget and seed:

* the joint search of S weight sets (3 + 4 (S - 1) free parameters: one reference weight
  pinned, see docs/segments.md), and
* the search of one global weight set (3 free parameters).

Printed per S: free parameters, wall seconds of each search and their ratio, seconds per
evaluation (the segment kernel's cost per candidate against the plain formula's), and the
holdout objective gain of the segment weights over the global weights with a paired 95%
bootstrap interval (requests resampled; both weight sets scored on the same resamples).
Several ``--budget`` values show the other cost of more segments: the joint space has more
dimensions, so a fixed budget finds less of the attainable gain (the in-sample gain column).
The machine is shared with other jobs when this runs: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusiontune.bootstrap import paired_bootstrap  # noqa: E402
from fusiontune.pipeline import prepare, search  # noqa: E402
from fusiontune.segments import global_prepared, joint_of_global  # noqa: E402
from fusiontune.simulate import simulate_segments  # noqa: E402
from fusiontune.study import parse_study  # noqa: E402
from machine import cpu_model as cpu_name  # noqa: E402  (benchmarks/machine.py)


def one(segments: int, seed: int, budget: int, args) -> dict:
    df = simulate_segments(args.requests, 20, seed, segments)
    data = tomllib.loads((ROOT / "studies" / "segments.toml").read_text())
    data["log"] = "<DataFrame>"
    data["segments"] = {"column": "user_segment", "min_rows": 0, "compare_global": False}
    study = parse_study(data)
    study.log_data = df
    prep = prepare(study)
    gprep = global_prepared(prep)
    t0 = time.perf_counter()
    seg, _ = search(prep, args.method, budget, seed, args.population, show_progress=False)
    t1 = time.perf_counter()
    glo, _ = search(gprep, args.method, budget, seed, args.population, show_progress=False)
    t2 = time.perf_counter()
    best = prep.space.from_dict(seg["best"]["params"])
    grow = joint_of_global(prep.layout, glo["best"]["params"])
    bs = paired_bootstrap(prep.holdout_objective, best[None, :], grow, args.resamples, 0.95, seed,
                          show_progress=False)
    return {"dim": prep.space.dim, "gdim": gprep.space.dim, "seg_s": t1 - t0, "glo_s": t2 - t1,
            "seg_eval": seg["evaluations"], "glo_eval": glo["evaluations"],
            "gain": float(bs.gain[0]), "lo": float(bs.gain_lo[0]), "hi": float(bs.gain_hi[0]),
            "in_sample": seg["best"]["objective"] - glo["best"]["objective"],
            "holdout_seg": seg["lift"]["holdout"], "holdout_glo": glo["lift"]["holdout"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, nargs="+", default=[1, 3, 10])
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--budget", type=int, nargs="+", default=[600])
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--method", default="cem")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--resamples", type=int, default=500)
    args = ap.parse_args()
    import numba

    print(f"# {cpu_name()}, {numba.get_num_threads()} numba threads; {args.requests} requests x 20 rows, "
          f"method {args.method}, budgets {args.budget}, {args.seeds} seed(s); machine load "
          f"{' '.join(f'{x:.1f}' for x in __import__('os').getloadavg())}")
    print("| segments | budget | free params (seg / global) | seed | seg search s | global search s | time ratio | "
          "s/eval ratio | holdout gain over global [95% CI] | in-sample gain |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---|---:|")
    for s in args.segments:
        for budget in args.budget:
            rows = []
            for seed in range(args.seeds):
                r = one(s, seed, budget, args)
                rows.append(r)
                ratio = r["seg_s"] / r["glo_s"]
                per_eval = (r["seg_s"] / r["seg_eval"]) / (r["glo_s"] / r["glo_eval"])
                print(f"| {s} | {budget} | {r['dim']} / {r['gdim']} | {seed} | {r['seg_s']:.1f} | {r['glo_s']:.1f} | "
                      f"{ratio:.2f}x | {per_eval:.2f}x | {r['gain']:+.5f} [{r['lo']:+.5f}, {r['hi']:+.5f}] | "
                      f"{r['in_sample']:+.5f} |", flush=True)
            if len(rows) > 1:
                g = np.array([r["gain"] for r in rows])
                wins = sum(r["lo"] > 0 for r in rows)
                print(f"| {s} | {budget} | mean | | | | {np.mean([r['seg_s'] / r['glo_s'] for r in rows]):.2f}x | | "
                      f"{g.mean():+.5f} (CI above 0 on {wins} of {len(rows)} seeds) | "
                      f"{np.mean([r['in_sample'] for r in rows]):+.5f} |", flush=True)


if __name__ == "__main__":
    main()
