"""Coverage of the objective-gain intervals over seeds, against the true (population) gain.

    python benchmarks/bench_ci_coverage.py [--seeds 40] [--requests 2000] [--budget 160] [--level 0.9]

Each seed simulates a fresh feed6 log (``studies/feed6.toml``: 6 tasks, power formula, 11 free
parameters, 2 guardrails), cuts it three ways by group hash (search 50%, select 20%, holdout
30%), runs the study's search on the search rows, picks A/B arms with ``select_arms`` on the
select rows and judges them on the holdout, exactly as ``fusiontune select`` does.  The *true*
gain of a weight set is its gain on one large independent log from the same simulator
(``--truth-requests``, default 40,000 requests = 800k rows, same world, another seed).

Printed per interval kind, the share of intervals that contain the true gain, and how the
misses split (true gain above the interval: pessimistic; below: optimistic):

* ``holdout, search's best``  the report's headline interval for the best (holdout rows,
  nothing chose on them);
* ``holdout, arms``           every arm's interval in candidates.json (holdout rows);
* ``in-sample, search's best`` the same weights' interval on the rows the search chose them
  on (what a report without an independent holdout shows; winner's curse);
* ``pick rows, arms``         the arms' intervals on the rows they were picked on (what
  ``select`` reported before the three-way split, when arms were picked and reported on the
  same holdout rows).

Target: the holdout kinds at the nominal level (90% at ``--level 0.9``).  With S seeds a
coverage estimate has a binomial standard error of about sqrt(0.09 / n_intervals).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusiontune.bootstrap import paired_bootstrap  # noqa: E402
from fusiontune.pipeline import prepare, search  # noqa: E402
from fusiontune.select import select_arms  # noqa: E402
from fusiontune.simulate import simulate_feed6, write_table  # noqa: E402
from fusiontune.study import parse_study  # noqa: E402


def study_for(log: Path, split: dict | None, tmp: Path):
    data = tomllib.loads((ROOT / "studies" / "feed6.toml").read_text())
    data["log"] = str(log)
    data.pop("split", None)
    if split:
        data["split"] = split
    return parse_study(data, tmp / "feed6.toml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--requests", type=int, default=2000, help="requests per simulated log (20 rows each)")
    ap.add_argument("--truth-requests", type=int, default=40_000)
    ap.add_argument("--budget", type=int, default=160)
    ap.add_argument("--method", default=None, help="search method (default: the study's)")
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--holdout", type=float, default=0.3)
    ap.add_argument("--select", type=float, default=0.2)
    args = ap.parse_args()

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ci-coverage-"))
    truth_log = tmp / "truth.parquet"
    write_table(simulate_feed6(requests=args.truth_requests, seed=987_654), truth_log)
    truth = prepare(study_for(truth_log, None, tmp)).objective

    def true_gain(theta: np.ndarray) -> np.ndarray:
        m = truth.metrics(np.atleast_2d(theta))
        return (m - truth.baseline_per_task[None]) @ truth.w

    kinds = ("holdout, search's best", "holdout, arms", "in-sample, search's best", "pick rows, arms")
    hits = {k: [] for k in kinds}  # per interval: -1 optimistic miss, 0 hit, +1 pessimistic miss
    widths = {k: [] for k in kinds}
    for s in range(args.seeds):
        log = tmp / f"log{s}.parquet"
        write_table(simulate_feed6(requests=args.requests, seed=10_000 + s), log)
        study = study_for(log, {"by": "group", "holdout": args.holdout, "select": args.select, "seed": s}, tmp)
        prep = prepare(study)
        method = args.method or study.search["method"]
        result, trials = search(prep, method, args.budget, s, study.search["population"],
                                options=dict(study.method_options.get(method, {})), show_progress=False)
        names = prep.space.all_names
        best = np.array([result["best"]["params"][n] for n in names])

        def record(kind, lo, hi, theta):
            g = float(true_gain(theta)[0])
            hits[kind].append(0 if lo <= g <= hi else (-1 if g < lo else 1))
            widths[kind].append(hi - lo)

        for kind, obj in (("holdout, search's best", prep.holdout_objective),
                          ("in-sample, search's best", prep.objective)):
            bs = paired_bootstrap(obj, best[None], prep.space.baseline, args.resamples, args.level, seed=s)
            record(kind, bs.gain_lo[0], bs.gain_hi[0], best)
        c = select_arms(loaded=(result, trials, prep), k=args.k, resamples=args.resamples, level=args.level,
                        seed=s, show_progress=False)
        for a in c["arms"]:
            theta = np.array([a["params"][n] for n in names])
            record("holdout, arms", a["gain"]["lo"], a["gain"]["hi"], theta)
            record("pick rows, arms", a["pick"]["gain"]["lo"], a["pick"]["gain"]["hi"], theta)
        done = {k: f"{np.mean(np.array(v) == 0):.2f}" for k, v in hits.items() if v}
        print(f"seed {s}: {len(c['arms'])} arm(s), lift in-sample {result['lift']['in_sample']:+.5f}, "
              f"holdout {result['lift'].get('holdout', float('nan')):+.5f}; running coverage {done}", flush=True)

    print()
    print(f"coverage of {args.level:.0%} objective-gain intervals over {args.seeds} seeds (feed6, "
          f"{args.requests} requests x 20 rows, split search/select/holdout "
          f"{1 - args.holdout - args.select:.2f}/{args.select:.2f}/{args.holdout:.2f} by group, "
          f"{args.budget} evaluations, {args.resamples} resamples; truth on {args.truth_requests * 20} rows)")
    print(f"{'interval':<26} {'n':>4} {'coverage':>9} {'± s.e.':>7} {'optimistic':>11} {'pessimistic':>12} "
          f"{'mean width':>11}")
    for k in kinds:
        h = np.array(hits[k])
        if not h.size:
            continue
        cov = float(np.mean(h == 0))
        se = float(np.sqrt(cov * (1 - cov) / h.size))
        print(f"{k:<26} {h.size:>4} {cov:>9.3f} {se:>7.3f} {np.mean(h == -1):>11.3f} {np.mean(h == 1):>12.3f} "
              f"{np.mean(widths[k]):>11.5f}")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
