"""Stacked per-task posteriors learned from the 0/1 labels vs the best formula, on feed6 logs of any size.

The headroom study (``bench_ltr_headroom.py``) found that per-task posteriors learned from the
simulator's *hidden truth* beat the best power formula on feed6's holdout, while the same
posteriors learned from the labels lose.  This script asks whether more rows close that gap.
For each log size (``--requests``, feed6 logs simulated as in ``bench_ltr.py --requests``):

1. the best formula (``grad`` at the study's budget; read back from ``bench_ltr.py``'s cache
   beside the log when that run made it, else searched and cached);
2. per task, a LightGBM classifier of the task's label on the six score logits (rows where the
   label is observed), cross-fitted over two halves of the search requests, so no search row is
   scored by a model that saw it; the holdout gets the mean of the two models;
3. the fused score ``sum_k c_k posterior_k``, ``c`` tuned by CMA-ES on the exact penalised
   objective of the search part, against two bars for the guarded tasks: the guardrail's limit
   (``limit``, what the study allows) and the best formula's own search-part metric (``start``,
   the Pareto bar of ``[ltr] guardrail_bar = "start"``: no guarded task below the formula).

Holdout deltas vs the best formula with paired 95% group-bootstrap intervals, and the guarded
tasks' deltas vs the formula's.  Nothing on the holdout chooses anything.

    python benchmarks/bench_ltr_stacked.py --requests 20000,50000   # ~5 min per 50k requests, shared machine
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench_ltr import best_formula, bigger_feed6  # noqa: E402  (benchmarks/bench_ltr.py)
from machine import cpu_model, loadavg  # noqa: E402


def logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def posteriors(obj, hobj, seed: int):
    """Cross-fitted per-task P(y_k = 1 | scores) on the search part, fold-averaged on the holdout."""
    import lightgbm as lgb

    xs, xh = logit(obj.log.scores), logit(hobj.log.scores)
    ys = obj.log.labels
    fold = np.asarray(obj.log.groups) % 2
    ps, ph = np.zeros(xs.shape), np.zeros(xh.shape)
    for j in range(xs.shape[1]):
        for f in (0, 1):
            fit = (fold != f) & ~np.isnan(ys[:, j])
            m = lgb.LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=200,
                                   verbose=-1, n_jobs=1, random_state=seed)
            m.fit(xs[fit], ys[fit, j])
            ps[fold == f, j] = m.predict_proba(xs[fold == f])[:, 1]
            ph[:, j] += m.predict_proba(xh)[:, 1] / 2
    return ps, ph


def tune(obj, ps: np.ndarray, bars: np.ndarray, evals: int, seed: int) -> np.ndarray:
    """Weights c > 0 maximising the exact objective of ``ps @ c`` penalised below the guardrail
    limit and below ``bars`` (per task; -inf: none)."""
    import cma

    from fusiontune.ltr.fit import fused_metrics

    def loss(logc):
        pt = fused_metrics(obj, (ps @ np.exp(logc)).astype(np.float32))
        below = float(np.clip(bars - pt, 0.0, None).sum())
        return -float(obj.judge(pt[None, :]).penalised[0]) + obj.penalty * below

    pi = ps.mean(axis=0)
    es = cma.CMAEvolutionStrategy(np.log(obj.w / (pi * (1 - pi))), 0.5,
                                  {"seed": seed + 1, "maxfevals": evals, "verbose": -9, "popsize": 16})
    es.optimize(loss)
    return np.exp(es.result.xbest)


def run(requests: int, args) -> None:
    from fusiontune.bootstrap import resample_fused
    from fusiontune.ltr.fit import fused_metrics
    from fusiontune.pipeline import prepare
    from fusiontune.study import load_study

    t0 = time.perf_counter()
    prep = prepare(load_study(bigger_feed6(requests, args.data_dir, args.data_seed)))
    obj, hobj = prep.objective, prep.holdout_objective
    print(f"\n## feed6, {requests} requests: {obj.n_rows} search rows, {hobj.n_rows} holdout rows", flush=True)
    res, secs, _ = best_formula(prep, ["grad"], args.seed, None, Path(args.data_dir))
    theta = prep.space.from_dict(res["best"]["params"])
    f_in = obj.formula.scores(obj.prepared, theta[None])[0]
    f_h = hobj.formula.scores(hobj.prepared, theta[None])[0]
    m_in = fused_metrics(obj, f_in)
    t1 = time.perf_counter()
    ps, ph = posteriors(obj, hobj, args.seed)
    print(f"  posteriors: {time.perf_counter() - t1:.0f}s", flush=True)
    guarded = np.isfinite(obj.max_drop)
    rows = [("best formula (grad)", f_in, f_h, secs)]
    for bar in ("limit", "start"):
        t1 = time.perf_counter()
        bars = np.where(guarded, m_in, -np.inf) if bar == "start" else np.full(len(m_in), -np.inf)
        c = tune(obj, ps, bars, args.cma_evals, args.seed)
        rows.append((f"stacked posteriors, bar {bar}", ps @ c, ph @ c, time.perf_counter() - t1))
        print(f"  {rows[-1][0]}: {rows[-1][3]:.0f}s", flush=True)
    fused = np.vstack([np.asarray(r[2], dtype=np.float64) for r in rows])
    met, kind, n_units = resample_fused(hobj, fused, args.resamples, args.seed)
    boot = np.nansum(met * hobj.w[None, None, :], axis=2)
    full = hobj.score_metrics(fused)
    names = [t.name for t in prep.study.tasks]
    print(f"holdout: 95% paired intervals over {args.resamples} resamples of the {n_units} holdout {kind}")
    print("| ranking | in-sample | holdout | Δ vs best formula [95% CI] | guarded tasks − formula's (holdout) [95% CI] "
          "| s |")
    print("|---|---:|---:|---|---|---:|")
    for i, (name, s_in, _, s) in enumerate(rows):
        pin = fused_metrics(obj, np.asarray(s_in, dtype=np.float32))
        d = "—"
        g = "—"
        if i:
            lo, hi = np.quantile(boot[i] - boot[0], [0.025, 0.975])
            d = f"{float(full[i] @ hobj.w - full[0] @ hobj.w):+.4f} [{lo:+.4f}, {hi:+.4f}]"
            g = ", ".join(f"{names[j]} {full[i, j] - full[0, j]:+.4f} "
                          f"[{np.quantile(met[i, :, j] - met[0, :, j], 0.025):+.4f}, "
                          f"{np.quantile(met[i, :, j] - met[0, :, j], 0.975):+.4f}]" for j in np.flatnonzero(guarded))
        print(f"| {name} | {float(pin @ obj.w):.5f} | {float(full[i] @ hobj.w):.5f} | {d} | {g} | {s:.0f} |")
    print(f"({time.perf_counter() - t0:.0f}s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", default="20000", help="comma-separated request counts of the feed6 logs")
    ap.add_argument("--data-dir", default="/tmp/fusiontune-bench-ltr", help="where the logs (and bench_ltr's "
                                                                            "search cache) live")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cma-evals", type=int, default=1500)
    ap.add_argument("--resamples", type=int, default=200)
    args = ap.parse_args()
    counts = [int(x) for x in args.requests.split(",") if x.strip()]
    if not counts or min(counts) < 100:
        raise SystemExit(f"bench_ltr_stacked: --requests must be request counts >= 100, got {args.requests!r}")
    print(f"# bench_ltr_stacked: CPU {cpu_model()}, load average {loadavg()}")
    for n in counts:
        run(n, args)


if __name__ == "__main__":
    main()
