"""How the search's evaluation cost grows with the log, local engine against Ray (1 and 2 actors).

For each size (rows = requests x 20 candidates, the four demo tasks: click and finish GAUC,
like and convert AUC, multiplicative formula) a Hive-partitioned Parquet dataset is written
once (``fusiontune simulate --partition-by day``'s writer, cached under --dir), then each
engine runs in its own child process (so peak RSS is that engine's alone):

* load: wall time of ``prepare(study, engine=...)`` (for ray: starting the local Ray instance,
  the actors reading their shards, the split and the minority-row exchange);
* eval: wall time of one population of --population candidates (16) through
  ``objective.metrics``, the best of --repeats, divided by the population (seconds per candidate);
* RSS: peak resident memory (``VmHWM``) of the driver process (for local: the whole process, load and
  prepare included, also per row of the log) and of each actor;
* |ray - local|: the largest difference of any per-task metric from the local engine's on the
  same candidates (the engine is exact; this is rounding).

Then a least-squares line through (rows, seconds per candidate) per engine states the cost per
row.  Default sizes 1M and 4M rows; ``--sizes 1,10,20`` for the issue's sizes, ``--sizes 100
--population 4 --repeats 1`` if memory allows (100M x 4 tasks: a 2.4 GB compact log).

``--bucket B`` also rewrites each log once with ``fusiontune bucket`` (B buckets by request_id,
cached) and runs the Ray engines on it: a second table gives the actors' read time (all actors
ready: each reads its shard, splits it, exchanges minority rows) on the plain dataset, where every
actor scans the whole log, against the bucketed one, where each opens only its buckets' files.

Run:  PYTHONPATH=. python benchmarks/bench_scale.py [--sizes 1,4] [--actors 1,2] [--bucket 16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

POP = 16


def write_log(path: Path, rows: int) -> None:
    """The log as ``fusiontune simulate --partition-by day`` writes it: a Hive-partitioned dataset
    (day=YYYYMMDD/part-*.parquet, 2^20-row chunks), written once and cached."""
    from fusiontune.simulate import simulate_dataset

    t0 = time.perf_counter()
    simulate_dataset(path, rows // 20, 20, seed=1000, partition_by="day", days=7,
                     progress=lambda done: print(f"  writing {path.name}: {done:,}/{rows:,} rows "
                                                 f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True))


def study_for(path: Path):
    from fusiontune.study import parse_study

    return parse_study({
        "name": "scale", "log": str(path), "group": "request_id", "time": "ts",
        "tasks": [{"name": "click", "score": "p_click", "label": "click", "metric": "gauc", "max_drop": 0.01},
                  {"name": "like", "score": "p_like", "label": "like", "weight": 0.6},
                  {"name": "finish", "score": "p_finish", "label": "finish", "metric": "gauc"},
                  {"name": "convert", "score": "p_convert", "label": "convert", "weight": 0.8}],
        "fusion": {"formula": "multiplicative", "reference": "click",
                   "baseline": {"a_click": 1.0, "a_like": 0.2, "a_finish": 0.2, "a_convert": 0.1},
                   "bounds": {"a": [0.0, 3.0]}}})


def vm_hwm() -> int:
    """This process's peak resident bytes (``VmHWM``).  Not ``ru_maxrss``: that one starts a child
    at its parent's peak (Linux carries it over fork and exec), and this script's parent process
    simulates the logs, which made every child's peak look at least as large as the writing."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(path: Path, engine: str, actors: int, repeats: int, pop: int) -> dict:
    """One engine on one log, in this (fresh) process."""
    from fusiontune.pipeline import prepare

    study = study_for(path)
    t0 = time.perf_counter()
    spec = "local" if engine == "local" else {"name": "ray", "actors": actors}
    prep = prepare(study, engine=spec)
    load = time.perf_counter() - t0
    try:
        theta = np.random.default_rng(0).uniform(0.0, 3.0, (pop, 4))
        theta[:, 0] = 1.0
        obj = prep.objective
        times, values = [], None
        for _ in range(repeats):
            t = time.perf_counter()
            values = obj.metrics(theta)
            times.append(time.perf_counter() - t)
        out = {"load": load, "eval": min(times) / pop, "rows": prep.n_rows, "values": values.tolist(),
               "driver_rss": vm_hwm()}
        if prep.engine is None:
            out["compact"] = prep.search_log.nbytes  # no split: the search holds the whole compact log
        if prep.engine is not None:
            out["actor_rss"] = [w["peak_rss"] for w in prep.engine.workers()]
            out["read"] = prep.engine.load_seconds
        return out
    finally:
        prep.close()


def run_child(path: Path, engine: str, actors: int, repeats: int, pop: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), engine, str(actors), str(repeats), str(pop)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    if res.returncode != 0:
        raise SystemExit(f"child {engine}/{actors} on {path.name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bucket_log(path: Path, out: Path, buckets: int) -> None:
    """``fusiontune bucket --log path --group request_id --buckets B --out out``, timed."""
    from fusiontune.bucket import write_buckets

    t0 = time.perf_counter()
    meta = write_buckets(path, "request_id", buckets, out)
    print(f"  bucketed {path.name} into {meta['buckets']} buckets in {time.perf_counter() - t0:.1f}s",
          file=sys.stderr, flush=True)


def print_bucketed(rows: list, buckets: int) -> None:
    """The Ray engines' read time on the plain dataset (each actor scans the whole log) against
    the bucketed one (each opens only its buckets), side by side per size and actor count."""
    print()
    print(f"Ray actors' read time (all actors ready), plain dataset vs bucketed into {buckets} buckets:")
    head = (f"{'rows':>6} {'actors':>6} {'read s plain':>12} {'read s bucketed':>15} {'plain/bucketed':>14} "
            f"{'eval s/cand plain':>17} {'bucketed':>9} {'|bucketed-local|':>16}")
    print(head)
    print("-" * len(head))
    for n, a, plain, buck, local_values in rows:
        diff = np.abs(np.array(buck["values"]) - np.array(local_values)).max()
        print(f"{n / 1e6:>5.0f}M {a:>6} {plain['read']:>12.2f} {buck['read']:>15.2f} "
              f"{plain['read'] / buck['read']:>13.2f}x {plain['eval']:>17.4f} {buck['eval']:>9.4f} {diff:>16.1e}")


def gib(b: float) -> str:
    return f"{b / 2**30:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,4", help="millions of rows, comma-separated (default 1,4)")
    ap.add_argument("--actors", default="1,2", help="Ray actor counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=3, help="populations timed per engine (best is kept)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/fusiontune-scale"), help="where the logs are cached")
    ap.add_argument("--population", type=int, default=POP, help="candidates per timed call (default 16)")
    ap.add_argument("--bucket", type=int, default=0, metavar="B",
                    help="also bucket each log into B buckets and compare the Ray actors' read time (default off)")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        path, engine, actors, repeats, pop = args.child
        print(json.dumps(child(Path(path), engine, int(actors), int(repeats), int(pop))))
        return
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.1f} "
          f"(a shared machine: other jobs run meanwhile, compare within a row)")
    sizes = [float(s) for s in args.sizes.split(",")]
    actor_counts = [int(a) for a in args.actors.split(",")]
    args.dir.mkdir(parents=True, exist_ok=True)
    engines = [("local", 0)] + [("ray", a) for a in actor_counts]
    rows_of, per = {}, {e: [] for e in engines}
    bucketed = []  # (rows, actors, plain result, bucketed result, local values)
    header = (f"{'rows':>6} {'engine':>7} {'load s':>7} {'eval s/cand':>11} {'ns/row':>7} {'vs local':>8} "
              f"{'driver GiB':>10} {'B/row':>6} {'actors GiB':>14} {'|ray-local|':>11}")
    print(header)
    print("-" * len(header))
    for size in sizes:
        rows = int(size * 1_000_000) // 20 * 20
        path = args.dir / f"scale_{rows}"
        if not path.exists():
            write_log(path, rows)
        rows_of[size] = rows
        res = {e: run_child(path, e[0], e[1], args.repeats, args.population) for e in engines}
        base = res[("local", 0)]
        for e in engines:
            r = res[e]
            per[e].append((rows, r["eval"]))
            diff = np.abs(np.array(r["values"]) - np.array(base["values"])).max()
            name = "local" if e[0] == "local" else f"ray x{e[1]}"
            actors = ",".join(gib(b) for b in r.get("actor_rss", [])) or "-"
            per_row = f"{r['driver_rss'] / rows:.0f}" if e[0] == "local" else "-"
            print(f"{rows / 1e6:>5.0f}M {name:>7} {r['load']:>7.1f} {r['eval']:>11.4f} "
                  f"{r['eval'] / rows * 1e9:>7.1f} {base['eval'] / r['eval']:>7.2f}x {gib(r['driver_rss']):>10} "
                  f"{per_row:>6} {actors:>14} {diff if e[0] != 'local' else 0.0:>11.1e}", flush=True)
        if args.bucket:
            bpath = args.dir / f"scale_{rows}_b{args.bucket}"
            if not bpath.exists():
                bucket_log(path, bpath, args.bucket)
            for a in actor_counts:
                bucketed.append((rows, a, res[("ray", a)], run_child(bpath, "ray", a, args.repeats, args.population),
                                 base["values"]))
    if bucketed:
        print_bucketed(bucketed, args.bucket)
    print()
    print("local driver: the whole process's peak (load, prepare, the timed calls); the compact log is "
          f"{base['compact'] / rows:.0f} bytes a row (float32 scores, uint8 label codes, int32 group codes)")
    print("cost per candidate ~ a + b * rows (least squares over the sizes):")
    for e in engines:
        xs = np.array([p[0] for p in per[e]], dtype=float)
        ys = np.array([p[1] for p in per[e]])
        name = "local" if e[0] == "local" else f"ray x{e[1]}"
        if len(xs) >= 2:
            b, a = np.polyfit(xs, ys, 1)
            print(f"  {name:>7}: b = {b * 1e9:.1f} ns per row per candidate, a = {a * 1e3:.1f} ms")
        else:
            print(f"  {name:>7}: {ys[0] / xs[0] * 1e9:.1f} ns per row per candidate (one size)")


if __name__ == "__main__":
    main()
