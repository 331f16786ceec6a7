"""Search quality at an equal budget on the demo study (issue 3, target (a)).

    python benchmarks/bench_search_quality.py [--budget 300] [--seeds 5] [--gp]

Runs cem, cma, neighborhood, our batched tpe, random and grid (and gp with --gp: Optuna's
GP sampler spends ~0.5 s per trial, minutes per seed) with several seeds at the same
budget on ``studies/demo.toml`` (prepared once), plus *plain Optuna TPE*: the loop a user
writes today, ``TPESampler(seed=s)`` with default settings, one trial at a time, scoring
each trial with the same objective (penalised for guardrail violations, as our methods
see it).  Prints per method: mean in-sample gain over the baseline, its share of the
best gain found by any method (target: >= 99% for cem, cma, neighborhood), mean holdout
objective (target: cem, cma, neighborhood > plain TPE).  Quality numbers are
deterministic for given seeds; only the seconds column is noisy.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusiontune.compare import compare  # noqa: E402
from fusiontune.pipeline import prepare  # noqa: E402
from fusiontune.study import load_study  # noqa: E402


def plain_tpe(prep, budget: int, seed: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space, obj = prep.space, prep.objective
    best = {"j": -np.inf, "theta": space.baseline}

    def objective(trial):
        u = np.array([(trial.suggest_float(k, lo, hi) - lo) / (hi - lo)
                      for k, lo, hi in zip(space.free, space.low, space.high)])
        theta = space.full(u[None, :])
        ev = obj.evaluate(theta)
        if ev.feasible[0] and ev.objective[0] > best["j"]:
            best["j"], best["theta"] = float(ev.objective[0]), theta[0]
        return float(ev.penalised[0])

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(objective, n_trials=budget)
    seconds = time.perf_counter() - t0
    base_j = float(obj.baseline_per_task @ obj.w)
    if not np.isfinite(best["j"]):
        best["j"] = base_j
    h = prep.holdout_objective
    hj = float(h.metrics(best["theta"][None, :])[0] @ h.w)
    return {"gain": best["j"] - base_j, "holdout": hj, "seconds": seconds}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--population", type=int, default=None,
                    help="one population for every method (default: the study's, incl. per-method overrides)")
    ap.add_argument("--gp", action="store_true", help="include the GP sampler (slow)")
    args = ap.parse_args()
    study = load_study(ROOT / "studies" / "demo.toml")
    prep = prepare(study)
    methods = ["cem", "cma", "neighborhood", "tpe", "random", "grid"] + (["gp"] if args.gp else [])
    options = {m: dict(o) for m, o in study.method_options.items()}
    if args.population is not None:
        for o in options.values():
            o.pop("population", None)
    population = args.population or study.search["population"]
    res = compare(prep, methods, args.budget, args.seeds, population, method_options=options)
    base_j = float(prep.objective.baseline_per_task @ prep.objective.w)
    hb = prep.holdout_objective
    base_h = float(hb.baseline_per_task @ hb.w)
    rows = {}
    for m in methods:
        g = res.runs[res.runs["method"] == m]
        rows[m] = {"gain": g["gain_in_sample"].to_numpy(), "holdout": g["holdout"].to_numpy(),
                   "seconds": g["seconds"].to_numpy()}
    plain = [plain_tpe(prep, args.budget, s) for s in range(args.seeds)]
    rows["optuna-tpe (plain)"] = {k: np.array([p[k] for p in plain]) for k in ("gain", "holdout", "seconds")}
    best_gain = max(float(r["gain"].max()) for r in rows.values())
    print(f"demo study, budget {args.budget}, seeds 0..{args.seeds - 1}, population {population} "
          f"(per-method overrides: {dict((m, o['population']) for m, o in options.items() if 'population' in o)}); "
          f"baseline objective {base_j:.5f} (holdout {base_h:.5f}); best in-sample gain by any method "
          f"{best_gain:+.5f}")
    print(f"{'method':<20} {'gain mean':>10} {'% of best':>9} {'worst seed %':>12} {'holdout mean':>12} "
          f"{'vs plain TPE':>12} {'s/run':>7}")
    plain_h = rows["optuna-tpe (plain)"]["holdout"].mean()
    for m, r in rows.items():
        print(f"{m:<20} {r['gain'].mean():>+10.5f} {100 * r['gain'].mean() / best_gain:>8.1f}% "
              f"{100 * r['gain'].min() / best_gain:>11.1f}% {r['holdout'].mean():>12.5f} "
              f"{r['holdout'].mean() - plain_h:>+12.5f} {r['seconds'].mean():>7.1f}")
    ok = True
    for m in ("cem", "cma", "neighborhood"):
        share = rows[m]["gain"].mean() / best_gain
        beats = rows[m]["holdout"].mean() > plain_h
        ok &= share >= 0.99 and beats
        print(f"{m}: mean gain {100 * share:.1f}% of best ({'ok' if share >= 0.99 else 'MISS'}), "
              f"mean holdout {'beats' if beats else 'does NOT beat'} plain Optuna TPE "
              f"({rows[m]['holdout'].mean() - plain_h:+.5f})")
    print("targets met" if ok else "targets NOT all met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
