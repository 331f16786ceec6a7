"""Search overhead at 1M rows (issue 3, target (b)).

    python benchmarks/bench_search_overhead.py [--budget 1000] [--plain-trials 20]

A simulated 1M-row, 4-task log (``simulate_log(50_000, 20)``, the demo's tasks, metrics
and guardrail, no holdout so all 1M rows are searched).  Measured side by side in one run:

1. ``fusiontune search`` with CEM for ``--budget`` evaluations, the Optuna SQLite storage
   ON (every generation written to ``study.db``): total wall time of ``pipeline.search``;
2. the metric kernel alone on the SAME candidates: ``Objective.metrics`` on the thetas of
   the run's trials, in the same batches; target: (1) / (2) <= 1.5;
3. the loop a user writes today: ``optuna`` TPE (default settings), one trial at a time,
   fused score in numpy and one ``sklearn.metrics.roc_auc_score`` per task.  It costs
   ~1 s per trial at 1M rows, so it runs ``--plain-trials`` trials and the PER-TRIAL
   cost is compared with (1)'s per-evaluation cost; target >= 40x (issue #10).  (The plain loop
   computes plain AUC even for the GAUC tasks, which flatters it.)

(2') the same batches with the kernel on one thread vs on every kernel thread
   (``Objective.parallel = False / True``; the same compiled kernels, nothing global is
   changed), alternately batch by batch: target >= 1.7x on 2 cores.  (1) must take < 20 s.
(2'') the same for the large-log mode (a log over ~2.8M rows scores one candidate per
   kernel call with the threads inside it), forced on this 1M-row log for its first 256
   candidates.

CEM runs with ``restarts = 1000`` so it spends the whole budget instead of stopping when
it converges.  Timings are noisy on a shared machine; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusiontune.pipeline import prepare, search  # noqa: E402
from fusiontune.simulate import simulate_log, write_table  # noqa: E402
from fusiontune.study import load_study  # noqa: E402
from machine import cpu_model, loadavg  # noqa: E402  (benchmarks/machine.py)
def study_text(log: Path) -> str:
    demo = (ROOT / "studies" / "demo.toml").read_text()
    head, _, _ = demo.partition("[split]")
    head = head.replace('log = "../data/demo_log.parquet"', f'log = "{log}"')
    return head + "\n[search]\nmethod = \"cem\"\n"


def plain_optuna_loop(prep, trials: int) -> tuple[float, float]:
    """Seconds per trial (wall, CPU) of TPE + numpy fusion + one roc_auc_score per task."""
    import optuna
    from sklearn.metrics import roc_auc_score

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    log = prep.search_log
    logp = np.log(np.clip(log.scores.astype(np.float64), 1e-6, 1.0))
    masks = [~np.isnan(log.labels[:, k]) for k in range(len(prep.study.tasks))]
    w = np.array([t.weight for t in prep.study.tasks])
    names = prep.formula.param_names
    space = prep.space

    def objective(trial):
        a = np.array([space.pinned[n] if n in space.pinned else
                      trial.suggest_float(n, space.low[space.free.index(n)], space.high[space.free.index(n)])
                      for n in names])
        s = logp @ a  # multiplicative fusion
        return float(sum(wk * roc_auc_score(log.labels[m, k], s[m]) for k, (wk, m) in enumerate(zip(w, masks))))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
        t0, c0 = time.perf_counter(), time.process_time()
        study.optimize(objective, n_trials=trials)
        return (time.perf_counter() - t0) / trials, (time.process_time() - c0) / trials


def one_vs_all_threads(obj, theta, population: int) -> tuple[float, float]:
    """Seconds of ``obj.metrics`` on one thread and on every kernel thread, batch by batch
    alternately (``Objective.parallel = False / True``)."""
    one = many = 0.0
    for s in range(0, len(theta), population):
        for par in (False, True):
            obj.parallel = par
            k0 = time.perf_counter()
            obj.metrics(theta[s:s + population])
            if par:
                many += time.perf_counter() - k0
            else:
                one += time.perf_counter() - k0
    obj.parallel = None
    return one, many


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--plain-trials", type=int, default=20)
    ap.add_argument("--population", type=int, default=32)
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}, numba threads {numba.get_num_threads()}; load average before: {loadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_table(simulate_log(50_000, 20, seed=7), tmp / "log.parquet")
        (tmp / "s.toml").write_text(study_text(tmp / "log.parquet"))
        prep = prepare(load_study(tmp / "s.toml"))
        print(f"log: {prep.search_log.n:,} rows, {len(prep.study.tasks)} tasks "
              f"({', '.join(t.metric + ':' + t.name for t in prep.study.tasks)}); "
              f"simulate + prepare {time.perf_counter() - t0:.1f}s")

        url = f"sqlite:///{tmp / 'study.db'}"
        t0, c0 = time.perf_counter(), time.process_time()
        result, trials = search(prep, "cem", args.budget, 0, args.population, options={"restarts": 1000},
                                show_progress=False, storage=url)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        n = result["evaluations"]

        theta = trials[prep.space.all_names].to_numpy()
        k0 = time.perf_counter()
        for s in range(0, len(theta), args.population):
            prep.objective.metrics(theta[s:s + args.population])
        kernel = time.perf_counter() - k0

        # the same batches on one thread vs on every kernel thread, alternately
        obj = prep.objective
        one, many = one_vs_all_threads(obj, theta, args.population)

        # the large-log mode (logs over ~2.8M rows: one candidate per kernel call, the
        # threads inside it) forced on this log, first 256 candidates, alternately
        from fusiontune import objective as objective_module

        saved = objective_module._MAX_SCRATCH_BYTES
        objective_module._MAX_SCRATCH_BYTES = 0
        head = theta[:256]
        one_l, many_l = one_vs_all_threads(obj, head, args.population)
        objective_module._MAX_SCRATCH_BYTES = saved

        import sqlite3

        stored = sqlite3.connect(tmp / "study.db").execute("select count(*) from trials").fetchone()[0]
        print(f"(1) fusiontune search cem, {n} evaluations, SQLite storage on ({stored} trials stored): "
              f"{wall:.1f}s wall ({1000 * wall / n:.1f} ms/evaluation; kernel inside the run "
              f"{result['kernel_seconds']:.1f}s)")
        print(f"(2) metric kernel alone on the same {n} candidates:                         {kernel:.1f}s")
        print(f"    overhead ratio (1)/(2) = {wall / kernel:.2f}x   (target <= 1.5x)")
        print(f"(2') the same batches on 1 thread: {one:.1f}s, on {numba.get_num_threads()} threads: {many:.1f}s; "
              f"throughput ratio {one / many:.2f}x   (target >= 1.7x on 2 cores: "
              f"{'PASS' if one / many >= 1.7 else 'FAIL'})")
        print(f"(2'') large-log mode (one candidate per call, threads inside; forced on this log), "
              f"{len(head)} candidates: 1 thread {one_l:.1f}s, {numba.get_num_threads()} threads {many_l:.1f}s; "
              f"ratio {one_l / many_l:.2f}x   (target >= 1.7x: {'PASS' if one_l / many_l >= 1.7 else 'FAIL'})")
        print(f"    CEM wall {wall:.1f}s   (target < 20 s: {'PASS' if wall < 20 else 'FAIL'})")

        per_trial, per_trial_cpu = plain_optuna_loop(prep, args.plain_trials)
        ours = wall / n
        print(f"(3) plain Optuna TPE + roc_auc_score per task, {args.plain_trials} trials: "
              f"{per_trial:.2f} s/trial")
        print(f"    per-trial speed ratio (3)/(1) = {per_trial / ours:.1f}x   (target >= 40x: "
              f"{'PASS' if per_trial / ours >= 40 else 'FAIL'})")
        print(f"    CPU time (all threads; robust to other processes on a shared machine): search {cpu:.1f}s "
              f"= {1000 * cpu / n:.1f} ms/evaluation, plain loop {per_trial_cpu:.2f} s/trial; "
              f"ratio {per_trial_cpu / (cpu / n):.1f}x")
        print(f"load average after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
