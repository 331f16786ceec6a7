"""Coverage of the objective-gain intervals over seeds, against the true (population) gain.

    python benchmarks/bench_ci_coverage.py [--seeds 40] [--requests 2000] [--method cem] [--budget 300]

A population of requests is simulated once with the feed6 simulator (``studies/feed6.toml``:
6 tasks, power formula, 11 free parameters, 2 guardrails; ``--population`` requests of 20
rows).  Each seed draws a log of ``--requests`` requests from it at random (without
replacement), cuts it three ways by group hash (search 50%, select 20%, holdout 30%), runs
the study's search on the search rows, picks A/B arms with ``select_arms`` on the select rows
and judges them on the holdout, exactly as ``fusiontune select`` does.  The *true* gain of a
weight set is its gain on the whole population.

(Logs are drawn from one population rather than simulated afresh per seed because the
simulator re-centres each log's scores on that log's own mean logit: a log-level effect that
no resampling of one log can see.  Simulated afresh, the holdout intervals covered 0.82-0.85;
drawn from a population, the same intervals cover at their nominal level.)

Printed per interval kind, the share of intervals that contain the true gain, and how the
misses split (true gain above the interval: pessimistic; below: optimistic):

* ``holdout, search's best``  the report's headline interval for the best (holdout rows,
  nothing chose on them);
* ``holdout, arms``           every arm's interval in candidates.json (holdout rows);
* ``in-sample, search's best`` the same weights' interval on the rows the search chose them
  on (what a report without an independent holdout shows; winner's curse);
* ``in-sample, corrected``    the same weights on the same rows, with the selection-corrected
  interval (:func:`fusiontune.bootstrap.selection_corrected_gain`: the pick-the-best step
  repeated on every resample over the run's ``--candidates`` best distinct feasible trials);
  the report's in-sample objective interval;
* ``pick rows, arms``         the arms' intervals on the rows they were picked on (what
  ``select`` reported before the three-way split, when arms were picked and reported on the
  same holdout rows).

Target: the holdout kinds and the corrected in-sample kind at the nominal level (90% at ``--level 0.9``).  With S seeds a
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

from fusiontune.bootstrap import paired_bootstrap, selection_corrected_gain  # noqa: E402
from fusiontune.pipeline import prepare, search  # noqa: E402
from fusiontune.select import distinct_feasible, select_arms  # noqa: E402
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
    ap.add_argument("--population", type=int, default=60_000, help="requests in the simulated population")
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--method", default="cem", help="search method (default cem)")
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=50,
                    help="pool the selection-corrected interval repeats the pick-the-best step over")
    ap.add_argument("--holdout", type=float, default=0.3)
    ap.add_argument("--select", type=float, default=0.2)
    args = ap.parse_args()

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ci-coverage-"))
    population = simulate_feed6(requests=args.population, seed=987_654)
    truth_log = tmp / "population.parquet"
    write_table(population, truth_log)
    truth = prepare(study_for(truth_log, None, tmp)).objective
    request_ids = population["request_id"].unique()
    draw = np.random.default_rng(2024)

    def true_gain(theta: np.ndarray) -> np.ndarray:
        m = truth.metrics(np.atleast_2d(theta))
        return (m - truth.baseline_per_task[None]) @ truth.w

    kinds = ("holdout, search's best", "holdout, arms", "in-sample, search's best", "in-sample, corrected",
             "pick rows, arms")
    hits = {k: [] for k in kinds}  # per interval: -1 optimistic miss, 0 hit, +1 pessimistic miss
    widths = {k: [] for k in kinds}
    skipped = 0  # seeds whose best is the baseline itself
    for s in range(args.seeds):
        log = tmp / f"log{s}.parquet"
        chosen = draw.choice(request_ids, args.requests, replace=False)
        write_table(population[population["request_id"].isin(chosen)].reset_index(drop=True), log)
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

        if np.allclose(best, prep.space.baseline):  # the baseline vs itself: [0, 0] covers 0 trivially
            skipped += 1
        for kind, obj in (() if np.allclose(best, prep.space.baseline) else
                          (("holdout, search's best", prep.holdout_objective),
                           ("in-sample, search's best", prep.objective))):
            bs = paired_bootstrap(obj, best[None], prep.space.baseline, args.resamples, args.level, seed=s)
            record(kind, bs.gain_lo[0], bs.gain_hi[0], best)
        if not np.allclose(best, prep.space.baseline):
            pool = distinct_feasible(trials, names, args.candidates)[names].to_numpy(dtype=float)
            chosen = int(np.flatnonzero(np.isclose(pool, best[None], rtol=0, atol=1e-9).all(axis=1))[0])
            sc = selection_corrected_gain(prep.objective, pool, chosen, prep.space.baseline, args.resamples,
                                          args.level, seed=s)
            record("in-sample, corrected", sc.lo, sc.hi, best)
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
          f"{args.method or 'study method'}, {args.budget} evaluations, {args.resamples} resamples; "
          f"logs drawn from a population of {args.population * 20} rows)")
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
    if skipped:
        print(f"({skipped} seed(s) left out of the best's rows: the best was the baseline itself)")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
