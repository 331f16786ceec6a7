"""How much can ANY fuser of feed6's logged scores gain over the best power formula?

feed6 (``fusiontune/simulate.py``, ``simulate_feed6``) draws each label from a hidden true
probability q_k and logs a noisy, re-tempered estimate p_k of it.  A fuser sees only the p's;
the best ranking it could produce is built on the posteriors E[q_k | p_1..p_6] (plus, with
within-request context, the request's mean scores).  This script measures, with the study's
exact objective, guardrails (against the same baseline) and holdout:

1. the best power formula on the logged scores (``grad``, the study's budget);
2. the **fuser bound**: per-task posteriors learned from the simulator's hidden truth (a
   LightGBM regression of logit q_k on the six score logits, cross-fitted over two halves of
   the search requests so no row is predicted by a model that saw it), fused by
   ``sum_k c_k q^_k`` with the weights c tuned by CMA-ES on the penalised exact objective
   (the linearised optimum of a weighted sum of AUCs ranks by ``sum_k c_k q_k``).  A real
   fuser has only the labels to learn from, so it does no better than this;
3. the same with within-request context (each task's mean score logit over the request);
4. the **noise-free ceiling**: the hidden q_k themselves fused the same way (no fuser can
   see them).

The hidden truth is replayed from the simulator's seeded random stream; the script checks the
replay against ``data/feed6_log.parquet`` (scores and labels) before using it.

    python benchmarks/bench_ltr_headroom.py [--cma-evals 1500] [--resamples 500]   # ~3 min quiet, 7 loaded
    python benchmarks/bench_ltr_headroom.py --requests 50000 --no-context            # a bigger feed6 log

``--study mtlfeed5`` asks the same of a log written by a multi-task model that ``fusiontune
train`` fitted (``bench_ltr.py --studies mtlfeed5``: made, or reused, under ``--data-dir``): the
hidden truth is ``feed5_table(..., truth=True)``'s ``q_<task>`` of the logged rows (checked
against the log's labels), and the context row uses the study's ``[ltr] features`` (the request
context the fusers see) instead of the mean score logits.

``--requests N`` replays a feed6 log of N requests (the log ``bench_ltr.py --requests N`` runs on;
the replay is checked against a fresh ``simulate_feed6`` call instead of the bundled file) and
takes the best formula from ``bench_ltr.py``'s search cache in ``--data-dir`` when it is there.
"""

from __future__ import annotations

import argparse
import atexit
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def hidden_truth(requests: int = 4000, candidates: int = 20, seed: int = 0,
                 check: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """feed6's log and its hidden true probabilities (N, 6), replayed from the seeded stream."""
    from fusiontune import simulate as sim

    df = sim.simulate_feed6(requests, candidates, seed)
    rng = np.random.default_rng(seed)  # the same draws, in the same order, as simulate_feed6
    n, k = requests * candidates, len(sim.FEED6_TASKS)
    chol = np.linalg.cholesky(sim._F6_CORR)
    user = (rng.standard_normal((requests, 1)) * 0.7 + rng.standard_normal((requests, k)) * 0.7) * sim._F6_USER
    item = rng.standard_normal((n, k)) @ chol.T * sim._F6_UTIL
    q = sim._sigmoid(sim._F6_BIAS + np.repeat(user, candidates, axis=0) + item)
    y = (rng.random((n, k)) < q).astype(np.float32)
    y[y[:, 0] == 0, 5] = np.nan
    logged = pd.read_parquet(ROOT / "data" / "feed6_log.parquet") if check else df
    for j, t in enumerate(sim.FEED6_TASKS):
        if not (np.array_equal(logged[f"p_{t}"].to_numpy(), df[f"p_{t}"].to_numpy())
                and np.array_equal(logged[t].to_numpy(), y[:, j], equal_nan=True)):
            raise SystemExit(f"replay does not reproduce data/feed6_log.parquet (task {t}); simulate_feed6 changed?")
    return df, q


def mtl_truth(args):
    """mtlfeed5's log (bench_ltr.py's, made or reused under --data-dir) with the hidden true
    probabilities of its rows: (frame, tasks, study text, context columns, search cache name)."""
    from bench_ltr import trained_log

    from fusiontune.ltr.config import parse_config
    from fusiontune.mtl.synthetic import FEED5_TASKS, feed5_table

    path = Path(trained_log("mtlfeed5", args.data_dir, args.mtl_rows, args.data_seed))
    text = path.read_text()
    log_path = re.search(r'(?m)^log\s*=\s*"(.*)"$', text).group(1)
    df = pd.read_parquet(log_path)
    table = feed5_table(args.mtl_rows, args.data_seed, truth=True)
    truth = table[table["request_id"].isin(set(df["request_id"]))].reset_index(drop=True)  # the log's row order
    for t in FEED5_TASKS:  # the replay must be the logged rows: same requests, same labels
        if len(truth) != len(df) or not np.array_equal(truth[t].to_numpy(), df[t].to_numpy(), equal_nan=True):
            raise SystemExit(f"bench_ltr_headroom: the replayed table does not match {log_path} (task {t})")
        df[f"q_{t}"] = truth[f"q_{t}"].to_numpy()
    import tomllib

    ctx = parse_config(tomllib.loads(text).get("ltr"), None, str(path)).features
    return df, FEED5_TASKS, text, ctx, path.parent / (path.stem + ".grad-b{budget}-s{seed}.json")


def logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def tune_weights(obj, p_search: np.ndarray, evals: int, seed: int) -> np.ndarray:
    """log c maximising the penalised exact objective of sum_k c_k p_k on the search part."""
    import cma

    from fusiontune.ltr.fit import fused_metrics

    def loss(logc):
        pt = fused_metrics(obj, (p_search @ np.exp(logc)).astype(np.float32))
        return -float(obj.judge(pt[None, :]).penalised[0])

    pi = p_search.mean(axis=0)
    x0 = np.log(obj.w / (pi * (1 - pi)))  # the unconstrained linearised optimum
    es = cma.CMAEvolutionStrategy(x0, 0.5, {"seed": seed + 1, "maxfevals": evals, "verbose": -9, "popsize": 16})
    es.optimize(loss)
    return es.result.xbest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cma-evals", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--requests", type=int, default=4000, help="feed6 log size (4000: data/feed6_log.parquet)")
    ap.add_argument("--data-dir", default="/tmp/fusiontune-bench-ltr", help="bench_ltr.py's search cache")
    ap.add_argument("--no-context", action="store_true", help="skip the request-context row")
    ap.add_argument("--study", choices=["feed6", "mtlfeed5"], default="feed6",
                    help="feed6 (the simulator's log) or mtlfeed5 (a log written by a trained MMoE)")
    ap.add_argument("--mtl-rows", type=int, default=400_000, help="mtlfeed5: rows of the training table")
    ap.add_argument("--data-seed", type=int, default=0, help="mtlfeed5: seed of the training table")
    args = ap.parse_args()
    import json

    import lightgbm as lgb

    from fusiontune.ltr.fit import fused_metrics
    from fusiontune.pipeline import load_study_log, prepare, search
    from fusiontune.study import load_study

    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="bench_ltr_headroom-")  # the log must stay while runs fingerprint it
    atexit.register(shutil.rmtree, tmp, True)
    if args.study == "mtlfeed5":
        df, T, text, ctx_cols, cached = mtl_truth(args)
    else:
        from fusiontune.simulate import FEED6_TASKS as T

        df, q = hidden_truth(args.requests, check=args.requests == 4000)
        for j, t in enumerate(T):
            df[f"q_{t}"] = q[:, j]
            df[f"gm_{t}"] = pd.Series(logit(df[f"p_{t}"])).groupby(df["request_id"]).transform("mean")
        text = (ROOT / "studies" / "feed6.toml").read_text()
        ctx_cols = [f"gm_{t}" for t in T]
        cached = None
    df.to_parquet(Path(tmp) / "truth.parquet")
    text = re.sub(r'(?m)^log\s*=.*$', 'log = "truth.parquet"', text, count=1)
    (Path(tmp) / "study.toml").write_text(text)
    study = load_study(Path(tmp) / "study.toml")
    prep = prepare(study, load_study_log(study, True, extra=list(dict.fromkeys([*(f"q_{t}" for t in T), *ctx_cols]))))
    obj, hobj = prep.objective, prep.holdout_objective
    rows, held = [], []

    def judge(name, s_in, s_h):
        pi, ph = fused_metrics(obj, s_in), fused_metrics(hobj, s_h)
        rows.append((name, float(pi @ obj.w), bool(obj.judge(pi[None]).feasible[0]), float(ph @ hobj.w),
                     bool(hobj.judge(ph[None]).feasible[0]), float(ph[0] - hobj.baseline_per_task[0])))
        held.append(np.asarray(s_h, dtype=np.float32))
        print(f"  {name}: done ({time.perf_counter() - t0:.0f}s)", flush=True)

    judge("baseline formula", obj.formula.scores(obj.prepared, prep.space.baseline[None])[0],
          hobj.formula.scores(hobj.prepared, prep.space.baseline[None])[0])
    s = study.search
    if cached is None and args.requests != 4000:
        cached = Path(args.data_dir) / f"feed6_{args.requests}r_seed0.grad-b{s['budget']}-s{args.seed}.json"
    cached = cached.with_name(cached.name.format(budget=s["budget"], seed=args.seed)) if cached else None
    if cached is not None and cached.exists():  # the same log, split and study: bench_ltr's best formula
        res = json.loads(cached.read_text())
        print(f"  best formula read back from {cached}", flush=True)
    else:
        res, _ = search(prep, "grad", s["budget"], args.seed, s["population"], 0, 1e-6, {}, show_progress=False)
    theta = prep.space.from_dict(res["best"]["params"])
    judge(f"best power formula on the logged scores (grad, budget {s['budget']})",
          obj.formula.scores(obj.prepared, theta[None])[0], hobj.formula.scores(hobj.prepared, theta[None])[0])

    def cols(log, prefix, f=lambda v: v):
        return np.column_stack([f(log.extra[f"{prefix}_{t}"]) for t in T])

    truth_s, truth_h = cols(obj.log, "q").astype(np.float64), cols(hobj.log, "q").astype(np.float64)
    groups = obj.log.groups if obj.log.groups is not None else np.arange(obj.log.n)
    fold = np.asarray(groups) % 2
    for ctx in (False,) if args.no_context else (False, True):
        xs, xh = logit(obj.log.scores), logit(hobj.log.scores)
        if ctx:
            xs = np.hstack([xs, np.column_stack([obj.log.extra[c].astype(np.float64) for c in ctx_cols])])
            xh = np.hstack([xh, np.column_stack([hobj.log.extra[c].astype(np.float64) for c in ctx_cols])])
        ps, ph = np.empty_like(truth_s), np.zeros_like(truth_h)
        for j in range(len(T)):
            for f in (0, 1):
                m = lgb.LGBMRegressor(n_estimators=300, learning_rate=0.05, num_leaves=31, min_child_samples=100,
                                      verbose=-1, n_jobs=1, random_state=args.seed)
                m.fit(xs[fold != f], logit(truth_s[fold != f, j]))
                ps[fold == f, j] = m.predict(xs[fold == f])
                ph[:, j] += m.predict(xh) / 2
        ps, ph = 1 / (1 + np.exp(-ps)), 1 / (1 + np.exp(-ph))
        c = np.exp(tune_weights(obj, ps, args.cma_evals, args.seed))
        judge("fuser bound: posteriors learned from the hidden truth" + (" + request context" if ctx else ""),
              (ps @ c).astype(np.float32), (ph @ c).astype(np.float32))
    c = np.exp(tune_weights(obj, truth_s, args.cma_evals, args.seed))
    judge("noise-free ceiling: the hidden true probabilities", (truth_s @ c).astype(np.float32),
          (truth_h @ c).astype(np.float32))

    j0, h0 = rows[0][1], rows[0][3]
    jf, hf = rows[1][1], rows[1][3]
    print(f"\n{study.name}: {obj.n_rows} search rows, {hobj.n_rows} holdout rows; guardrails "
          + ", ".join(f"{t.name} (max_drop {t.max_drop})" for t in study.tasks if t.max_drop is not None)
          + f" against the baseline formula; context: {', '.join(ctx_cols)}")
    from fusiontune.bootstrap import resample_fused

    m, kind, n_units = resample_fused(hobj, np.vstack(held), args.resamples, args.seed)
    boot = np.nansum(m * hobj.w[None, None, :], axis=2)
    print(f"holdout deltas with 95% paired bootstrap intervals ({args.resamples} resamples of {n_units} {kind})")
    print("| ranking | in-sample | Δ vs best formula | search-part guardrails | holdout | Δ vs best formula [95% CI] "
          "| holdout guardrails (click Δ) |")
    print("|---|---:|---:|---|---:|---|---|")
    for i, (name, ji, fi, jh, fh, dc) in enumerate(rows):
        lo, hi = np.quantile(boot[i] - boot[1], [0.025, 0.975])
        print(f"| {name} | {ji:.5f} | {ji - jf:+.4f} | {'kept' if fi else 'crossed'} | {jh:.5f} | "
              f"{jh - hf:+.4f} [{lo:+.4f}, {hi:+.4f}] | {'kept' if fh else 'crossed'} ({dc:+.4f}) |")
    print(f"\n(baseline in-sample {j0:.5f}, holdout {h0:.5f}; total {time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
