"""LTR fusers vs the best searched formula on the demo study, side by side in one run.

Prints, for CEM search and for every fuser (GBDT / DNN, combined / lambdarank): wall
seconds, in-sample and holdout objective, holdout lift over the baseline, holdout
feasibility, and the ratio of its time to CEM's.  Also one bare fit per fuser
(``guardrail_rounds = 0``) to show what a single fit on the 200k-row demo costs.

    python benchmarks/bench_ltr.py [--study studies/demo.toml] [--seed 0]

The machine is shared: absolute seconds are noisy, compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import time

from fusiontune.ltr import run_ltr
from fusiontune.pipeline import prepare, search
from fusiontune.study import load_study


def row(name, r, secs, cem_secs, cem_hold):
    h = r["holdout"]
    lift = h["best"]["objective"] - h["baseline"]["objective"]
    vs = h["best"]["objective"] - cem_hold if cem_hold is not None else float("nan")
    print(f"{name:<26} {secs:8.2f} {secs / cem_secs:7.2f} {r['best']['objective']:10.5f} "
          f"{h['best']['objective']:10.5f} {lift:+9.5f} {vs:+9.5f} {str(h['best'].get('feasible', True)):>9}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="studies/demo.toml")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    study = load_study(args.study)
    prep = prepare(study)
    print(f"{study.name}: {prep.search_log.n} search rows, {prep.holdout_log.n if prep.holdout_log else 0} holdout rows")
    s = study.search
    t0 = time.perf_counter()
    cem, _ = search(prep, "cem", s["budget"], args.seed, s["population"], s["patience"], s["min_delta"],
                    study.method_options.get("cem", {}), show_progress=False)
    cem_secs = time.perf_counter() - t0
    cem_hold = cem["holdout"]["best"]["objective"]
    print(f"{'method':<26} {'seconds':>8} {'x cem':>7} {'in-sample':>10} {'holdout':>10} {'lift':>9} "
          f"{'vs cem':>9} {'feasible':>9}")
    row(f"cem (budget {s['budget']})", cem, cem_secs, cem_secs, None)
    for model, target, opts, label in [
        ("gbdt", "combined", {"guardrail_rounds": 0}, "gbdt 1 fit, no guardrail"),
        ("dnn", "combined", {"guardrail_rounds": 0}, "dnn 1 fit, no guardrail"),
        ("gbdt", "combined", None, "ltr-gbdt combined"),
        ("dnn", "combined", None, "ltr-dnn combined"),
        ("gbdt", "lambdarank", None, "ltr-gbdt lambdarank"),
        ("dnn", "lambdarank", None, "ltr-dnn lambdarank"),
    ]:
        t0 = time.perf_counter()
        r = run_ltr(prep, model, target, args.seed, opts)
        secs = time.perf_counter() - t0
        row(label, r, secs, cem_secs, cem_hold)
        g = r["ltr"]["guardrails"]
        print(f"{'':<26} fit {r['ltr']['fit_seconds']:.2f}s in {g['fits']} fit(s), "
              f"{r['ltr']['iterations']} iterations, importance {r['importance_seconds']:.2f}s")


if __name__ == "__main__":
    main()
