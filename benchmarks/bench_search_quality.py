"""Search quality at realistic dimension: every method on feed6 (issue 11, item 4).

    python benchmarks/bench_search_quality.py                 # the full table: ~40-50 min CPU (see below)
    python benchmarks/bench_search_quality.py --quick         # a smoke run: ~2-3 min CPU
    python benchmarks/bench_search_quality.py --screening     # what multi-fidelity screening saves and costs

Options: ``--study`` (default studies/feed6.toml), ``--budgets 300,1000``, ``--seeds 5``,
``--methods ...``, ``--ref-evals 3000``, ``--ref-runs 3``, ``--cache FILE``, ``--gp``,
``--first-seed`` (split a run over processes).

For each budget and seed, runs every fusiontune method (grad, cma, cem, neighborhood, tpe,
random, grid, and the warm-started variants ``cma+grad``, ``cem+grad``,
``neighborhood+grad``: the method started at the surrogate optimum, ``warm_start =
"grad"``) with the study's settings, and two *plain Optuna* loops a user would write
today: ``TPESampler(seed=s)`` and ``CmaEsSampler(seed=s)`` with default settings, one
trial at a time, each trial scored by the same exact objective (penalised for guardrail
violations, as our methods see it) and the best *feasible* trial reported.

**Attainable gain**: the best feasible in-sample gain over the baseline found by
``--ref-runs`` long CMA-ES runs (``--ref-evals`` evaluations each, seeds 100..) *or by any
run of the table* (so a method can score 100%, never more).  Per method and budget the
table shows the mean and worst-seed share of it, the mean holdout gain, the CPU seconds per
run and the kernel seconds per run (time inside the exact objective; grad's surrogate phase
is the difference).  Targets (issue 11): the best method reaches >= 99% of the attainable
gain at budget 300 on every seed, and every tuned method (everything but random and the
refused grid) beats plain Optuna TPE at equal budget (mean in-sample gain).

``--screening``: cma and cem (``--screened-methods``) with multi-fidelity screening (``[search] screening =
[0.25, 0.5]``, ``screening_keep = 0.5``, the documented default shape) beside the same
method without, (a) at equal budget (screening spends the same full-evaluation
equivalents on more candidates) and (b) at equal candidates (the screening run's budget cut
to what screening the unscreened run's candidates costs: 0.75 of it), with the kernel
seconds of each.  ``--screening-study`` runs the same on another study (e.g. a larger
simulated log, see ``--simulate-rows``).

**Run time knob**: ``--quick`` (2 seeds, budget 300, grad / cma / cem / optuna-tpe, one
reference run) takes ~2-3 minutes of CPU.  The full default (5 seeds, budgets 300 and 1000,
every method, 3 reference runs) is ~40-50 minutes of CPU on one core of a 2-core AMD EPYC,
estimated from the per-run CPU seconds the table prints (grad ~100 s a run, the sampling
methods ~3.5 s at 300 and ~11 s at 1000; grad's surrogate phase and Optuna TPE at 1000
trials dominate).  Wall time is longer on a shared machine.  ``--first-seed`` /
``--methods`` with one ``--cache`` file per process split a run over processes, and
``--cached-only --cache a.json,b.json`` prints their joined tables.

Quality numbers are deterministic for given seeds (grad: torch runs on one thread);
seconds are noisy, the more so on a shared machine.  Each run's result is cached in
``--cache`` (JSON, keyed by study, method, budget, seed): re-running re-prints the table
without re-running the searches; delete the file to measure afresh.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusiontune.errors import FusiontuneError  # noqa: E402
from fusiontune.pipeline import prepare, search  # noqa: E402
from fusiontune.study import load_study  # noqa: E402

METHODS = ["grad", "cma+grad", "cem+grad", "neighborhood+grad", "cma", "cem", "neighborhood", "tpe",
           "random", "grid"]
QUICK = ["grad", "cma", "cem", "optuna-tpe"]
SCREENED = ["cma", "cem"]
SCREENING = [0.25, 0.5]
PLAIN = ["optuna-tpe", "optuna-cmaes"]


class KernelClock:
    """Seconds spent inside the exact objective (every Objective's metrics, screening levels too)."""

    seconds = 0.0

    @classmethod
    def install(cls) -> None:
        from fusiontune.objective import Objective

        inner = Objective.metrics

        def timed(self, theta):
            t = time.process_time()
            try:
                return inner(self, theta)
            finally:
                cls.seconds += time.process_time() - t

        Objective.metrics = timed


def _timed(fn):
    """Run fn(); returns (its result, CPU seconds, kernel CPU seconds)."""
    k0, t0 = KernelClock.seconds, time.process_time()
    out = fn()
    return out, time.process_time() - t0, KernelClock.seconds - k0


def plain_optuna(prep, sampler: str, budget: int, seed: int) -> dict:
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

    def go():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            smp = (optuna.samplers.TPESampler(seed=seed) if sampler == "optuna-tpe"
                   else optuna.samplers.CmaEsSampler(seed=seed))
            study = optuna.create_study(direction="maximize", sampler=smp)
            study.optimize(objective, n_trials=budget)

    _, cpu, kernel = _timed(go)
    base_j = float(obj.baseline_per_task @ obj.w)
    j = best["j"] if np.isfinite(best["j"]) else base_j
    return {"gain": j - base_j, "holdout": _holdout_gain(prep, best["theta"]), "seconds": cpu,
            "kernel_seconds": kernel, "evaluations": budget}


def _holdout_gain(prep, theta) -> float:
    h = prep.holdout_objective
    if h is None:
        return float("nan")
    return float(h.metrics(np.asarray(theta)[None, :])[0] @ h.w - h.baseline_per_task @ h.w)


def ours(prep, method: str, budget: int, seed: int, population: int, screening: list | None = None) -> dict:
    base, _, warm = method.partition("+")
    opts = dict(prep.study.method_options.get(base, {}))
    try:
        (r, trials), cpu, kernel = _timed(lambda: search(prep, base, budget, seed, population, options=opts,
                                                         show_progress=False, warm_start=warm or "none",
                                                         screening=screening or []))
    except FusiontuneError as exc:
        return {"refused": str(exc)}
    theta = np.array([r["best"]["params"][k] for k in prep.space.all_names])
    out = {"gain": r["lift"]["in_sample"], "holdout": _holdout_gain(prep, theta),
           "seconds": cpu, "kernel_seconds": kernel, "evaluations": r["evaluations"],
           "on_bounds": [b["param"] for b in r.get("on_bounds", [])]}
    if r.get("screening"):
        out["screening"] = r["screening"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", type=Path, default=ROOT / "studies" / "feed6.toml")
    ap.add_argument("--budgets", default="300,1000")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed..seeds-1 only (to split a "
                    "long benchmark over processes sharing one --cache file set; merge the caches to print)")
    ap.add_argument("--methods", default=",".join(METHODS + PLAIN))
    ap.add_argument("--ref-evals", type=int, default=3000)
    ap.add_argument("--ref-runs", type=int, default=3)
    ap.add_argument("--cache", default=str(ROOT / "benchmarks" / ".search_quality_cache.json"))
    ap.add_argument("--gp", action="store_true", help="include Optuna's GP sampler (slow: ~0.5 s a trial)")
    ap.add_argument("--quick", action="store_true", help="2 seeds, budget 300, grad/cma/cem/optuna-tpe, one "
                    "reference run: ~5 minutes")
    ap.add_argument("--screening", action="store_true", help="the screening table instead of the methods table")
    ap.add_argument("--cached-only", action="store_true", help="print the tables from --cache (one file, or "
                    "several joined with commas, e.g. the caches of a split run) without running anything; "
                    "runs not in them show as 'not run'")
    ap.add_argument("--screened-methods", default=",".join(SCREENED))
    ap.add_argument("--simulate-rows", type=int, default=0, help="with --screening: also a simulated feed6 log "
                    "of this many rows (e.g. 400000), written to a temporary directory")
    ap.add_argument("--known-best", type=float, default=0.0, help="the best in-sample gain any earlier run found "
                    "(e.g. 0.08098 on feed6): the attainable gain is at least this")
    ap.add_argument("--share-surrogate", action="store_true", help="compute the warm starts' surrogate phase "
                    "once per seed and share it between cma+grad, cem+grad, neighborhood+grad and both budgets "
                    "(their CPU s/run then holds it only in the first run of a seed)")
    args = ap.parse_args()
    if args.share_surrogate:
        import fusiontune.search.grad as grad_mod

        inner, memo = grad_mod.surrogate_starts, {}

        def shared(objective, space, x0, seed=0, options=None, where="[search.grad]"):
            key = (id(objective), int(seed), json.dumps(options or {}, sort_keys=True))
            if key not in memo:
                memo[key] = inner(objective, space, x0, seed, options, where)
            return memo[key]

        grad_mod.surrogate_starts = shared
    if args.quick:
        args.seeds, args.budgets, args.methods, args.ref_runs = 2, "300", ",".join(QUICK), 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    KernelClock.install()
    study = load_study(args.study)
    prep = prepare(study)
    population = study.search["population"]
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = [m for m in args.methods.split(",") if m] + (["gp"] if args.gp else [])
    caches = [Path(c) for c in args.cache.split(",") if c]
    cache = {}
    for c in caches:
        if c.exists():
            cache.update(json.loads(c.read_text()))
    args.cache = caches[0]

    def run(prep, method, budget, seed, screening=None):
        key = f"{prep.study.name}|{prep.objective.n_rows}|{method}|{budget}|{seed}|{population}"
        if screening:
            key += f"|screen{screening}"
        if key not in cache and args.cached_only:
            return {"not_run": True}
        if key not in cache:
            if method in PLAIN:
                cache[key] = plain_optuna(prep, method, budget, seed)
            elif method == "reference":
                cache[key] = ours(prep, "cma", budget, seed, population)
            else:
                cache[key] = ours(prep, method, budget, seed, population, screening)
            tmp = args.cache.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            tmp.replace(args.cache)
            r = cache[key]
            print(f"  {method:<18} budget {budget:>5} seed {seed}{' screened' if screening else ''}: "
                  + (f"gain {r['gain']:+.5f} in {r['seconds']:.0f}s CPU" if "gain" in r else r["refused"]),
                  file=sys.stderr, flush=True)
        return cache[key]

    import platform
    import subprocess

    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.split(":")
    cpu = cpu[-1].strip() if len(cpu) > 1 else platform.processor()
    t0, c0 = time.perf_counter(), time.process_time()
    if args.screening:
        preps = [prep]
        if args.simulate_rows:
            preps.append(_simulated(study, args.simulate_rows))
        for p in preps:
            _screening_table(p, run, budgets, args, population, cpu)
        print(f"\n{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU this invocation "
              f"(results cached in {args.cache})")
        return 0

    ref = [run(prep, "reference", args.ref_evals, 100 + i) for i in range(args.ref_runs)]
    res = {(m, b): [run(prep, m, b, s) for s in range(args.first_seed, args.seeds)] for b in budgets for m in methods}
    ref = [r for r in ref if "gain" in r]
    ref_gain = max((r["gain"] for r in ref), default=float("-inf"))
    attainable = max([ref_gain, args.known_best] + [r["gain"] for rs in res.values() for r in rs if "gain" in r])
    o = prep.objective
    print(f"study {study.name}: {prep.space.dim} free parameters, {o.n_rows} search rows, population {population}; "
          f"seeds {args.first_seed}..{args.seeds - 1}; CPU {cpu}")
    print(f"attainable in-sample gain {attainable:+.5f}: the best of {args.ref_runs} long CMA-ES runs "
          f"({args.ref_evals} evaluations each; best {ref_gain:+.5f} = {100 * ref_gain / attainable:.1f}%) and of "
          f"every run below" + (f" (at least --known-best {args.known_best:+.5f})" if args.known_best else ""))
    print()
    print("| method | budget | mean % of attainable | worst seed % | mean holdout gain | CPU s/run | kernel s/run |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ok = True
    for b in budgets:
        shares = {}
        for m in methods:
            rs = [r for r in res[(m, b)] if not r.get("not_run")]
            if not rs:
                print(f"| {m} | {b} | not run | | | | |")
                continue
            if len(rs) < len(res[(m, b)]):
                m_label = f"{m} ({len(rs)} of {len(res[(m, b)])} seeds)"
            else:
                m_label = m
            if any("refused" in r for r in rs):
                print(f"| {m_label} | {b} | refused: {rs[0]['refused'][:70]}... | | | | |")
                continue
            g = np.array([r["gain"] for r in rs]) / attainable * 100
            h = np.array([r["holdout"] for r in rs])
            sec = np.array([r["seconds"] for r in rs])
            ker = np.array([r.get("kernel_seconds", np.nan) for r in rs])
            shares[m] = g
            print(f"| {m_label} | {b} | {g.mean():.1f} | {g.min():.1f} | {h.mean():+.5f} | {sec.mean():.1f} | "
                  f"{np.nanmean(ker):.1f} |")
        tuned = [m for m in shares if m not in PLAIN]
        if tuned:  # the 99% target is graded whether or not the Optuna comparison ran
            best_m = max(tuned, key=lambda m: shares[m].min())
            worst = shares[best_m].min()
            line = f"budget {b}: best method {best_m} (worst seed {worst:.1f}%)"
            if b == 300:
                ok &= worst >= 99.0
            if "optuna-tpe" in shares:
                tpe = shares["optuna-tpe"].mean()
                losers = [m for m in tuned if m != "random" and shares[m].mean() <= tpe]
                line += (f"; tuned methods not beating plain Optuna TPE ({tpe:.1f}%): "
                         f"{', '.join(losers) or 'none'}")
                ok &= not losers
            else:
                line += "; plain Optuna TPE not run at this budget (that target is not graded)"
            print(f"\n{line}")
    print(f"\n{'targets met' if ok else 'targets NOT all met'}; {time.perf_counter() - t0:.0f} s wall, "
          f"{time.process_time() - c0:.0f} s CPU of runs this invocation (cached runs cost nothing)")
    return 0


def _simulated(study, rows: int):
    """feed6's study on a fresh simulated feed6 log of about ``rows`` rows (20 rows a request)."""
    import tempfile
    import tomllib

    from fusiontune.simulate import simulate_feed6, write_table
    from fusiontune.study import parse_study

    tmp = Path(tempfile.mkdtemp(prefix="bench-screening-"))
    log = tmp / "feed6_big.parquet"
    write_table(simulate_feed6(requests=max(1, rows // 20), seed=4242), log)
    data = tomllib.loads(study.path.read_text())
    data["log"] = str(log)
    data["name"] = f"{study.name}-{rows // 1000}k"
    return prepare(parse_study(data, tmp / "study.toml"))


def _screening_table(prep, run, budgets, args, population, cpu) -> None:
    """Each screened method with and without screening: equal budget, and equal candidates."""
    o = prep.objective
    SCREENED = [m for m in args.screened_methods.split(",") if m]
    seeds = range(args.first_seed, args.seeds)
    plain = {(m, b): [run(prep, m, b, s) for s in seeds] for b in budgets for m in SCREENED}
    screened = {(m, b): [run(prep, m, b, s, SCREENING) for s in seeds] for b in budgets for m in SCREENED}
    # equal candidates: screening a generation of P costs P * (0.25 + 0.5 * 0.5) + P/4 = 0.75 P
    share = 0.25 + 0.5 * 0.5 + 0.25
    fewer = {(m, b): [run(prep, m, int(round(b * share)), s, SCREENING) for s in seeds] for b in budgets
             for m in SCREENED}
    everything = [r["gain"] for d in (plain, screened, fewer) for rs in d.values() for r in rs if "gain" in r]
    attainable = max(everything)
    print(f"\nscreening on {prep.study.name}: {o.n_rows} search rows, {prep.space.dim} free parameters, population "
          f"{population}, screening {SCREENING} keep 0.5, seeds {args.first_seed}..{args.seeds - 1}; CPU {cpu}; "
          f"% of the best gain any run here found ({attainable:+.5f})")
    print()
    print("| method | budget | screening | candidates scored (exactly) | mean % | worst % | kernel s/run | "
          "CPU s/run |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for b in budgets:
        for m in SCREENED:
            for label, rs, bud in (("none", plain[(m, b)], b), ("equal budget", screened[(m, b)], b),
                                   ("equal candidates", fewer[(m, b)], int(round(b * share)))):
                rs = [r for r in rs if "gain" in r]
                if not rs:
                    print(f"| {m} | {bud} | {label} | not run | | | | |")
                    continue
                g = np.array([r["gain"] for r in rs]) / attainable * 100
                cand = np.mean([(r.get("screening") or {}).get("screened", 0) + r["evaluations"] for r in rs])
                exact = np.mean([r["evaluations"] for r in rs])
                print(f"| {m} | {bud} | {label} | {cand:.0f} ({exact:.0f}) | {g.mean():.1f} | {g.min():.1f} | "
                      f"{np.mean([r['kernel_seconds'] for r in rs]):.2f} | {np.mean([r['seconds'] for r in rs]):.1f} |")


if __name__ == "__main__":
    sys.exit(main())
